"""The capstone: a whole decoding stack for the main model, scored on held-out prompts.

A *stack* is one function that every request goes through, written against the course's
interfaces (a model maps token ids plus a cache to logits; see :mod:`minidecode.interfaces`)::

    def decode(model, prompt_ids, max_new_tokens, *, draft=None, kv_budget=None,
               task="story", stop_ids=frozenset(), generator=None) -> list[int]:
        ...

- ``model``: the main model (``minidecode.load("main")``'s Transformer); ``draft``: a smaller
  model with the same tokenizer (``"main-draft"``), to use for speculative decoding, or None;
- ``prompt_ids``: ``(1, prompt)`` long, starting with ``<|endoftext|>`` as every TinyWorld
  document does;
- ``max_new_tokens``: an upper bound; ``stop_ids``: tokens that end the answer (return the ids up
  to and including the first one);
- ``kv_budget``: the most entries the main model's KV cache may hold per layer and KV head, at
  any moment (after any forward call), or None for no limit. A prompt longer than the budget must
  be read in chunks and compressed (:func:`minidecode.infinipot.read_document` with a policy of
  :mod:`minidecode.cache_policies`);
- ``task``: ``"story"`` (continue a story opening: open-ended, judged by the TinyWorld judge),
  ``"arithmetic"`` (a word problem after "Let's think step by step.", exact answer) or
  ``"retrieval"`` (a code stated once in a document, exact answer);
- ``generator``: a seeded ``torch.Generator``; draw every random number from it.

It returns the new token ids (a list of ints, or a 1-d or ``(1, new)`` long tensor).

**The held-out prompts** (:func:`held_out_prompts`) are drawn from TinyWorld's generators with a
seed the training never used (``HELD_OUT_SEED + 500``): story openings, 1-3 step word problems
with the trigger phrase, and one-fact retrieval documents of 120-175 tokens worded as the main
model was trained ("The code of the white vault is 2786."), nearly all longer than the default
budget of 128 entries (30 of the 32 of a full run).

**What is measured** (:func:`score_stack`), for the stack and, side by side in the same run, for
the plain greedy stack (:func:`greedy_decode`) on the same prompts:

- *quality* per task: a story scores its judge validity (:func:`minidecode.tinyworld.judge.
  judge_story`: the share of its sentences the story grammar allows) if it does not loop, 0 if
  it does (a block of words repeated three times back to back); an exact task scores 1 for the
  right answer. Each task's mean comes with its n and a 95% interval (bootstrap over prompts for
  stories, Wilson for accuracies);
- *speed*, deterministically: every forward call costs ``ceil(tokens fed / 16)`` units, times the
  model's size relative to the main model (the draft: its parameters over the main model's), so
  a draft call is cheap and a call that verifies five tokens costs what a call on one token
  does, as on an accelerator. ``speedup`` = (new tokens per unit of the stack) / (new tokens per
  unit of plain greedy). The measured wall-clock ratio (tokens per second of the stack over those
  of greedy, alternating which runs first) is reported beside it, but does not enter the score:
  on a shared CPU it moves by tens of percent from run to run. The count comes from forward
  hooks, so it sees every call made as ``model(...)`` or ``draft(...)`` (calling ``.forward``
  directly would bypass it; a stack must not);
- *memory*: the peak number of entries the main model's KV caches held (per layer and KV head,
  summed over live caches and batch rows) and their bytes; the draft's peak bytes are reported.

**The score** (0-100)::

    Q = mean over tasks of the task's quality                       in [0, 1]
    S = min(speedup, 2) / 2                                          plain greedy: 0.5
    M = min(1, kv_budget / peak entries)                             1 within the budget
    score = 100 * Q * (0.6 + 0.2 * S + 0.2 * M)

Speed and memory points are earned in proportion to quality, so a stack that returns nothing
fast scores 0. The plain greedy stack's score on the same prompts is computed from the same run;
the graded exercise (``12.1``) passes when the stack keeps within the budget and closes at least
a quarter (:data:`PASS_GAP_SHARE`) of the gap between plain greedy's score and 100::

    pass bar = greedy score + 0.25 * (100 - greedy score)

(a fixed margin would be out of reach for a future model whose greedy score is already high).
"""

from __future__ import annotations

import inspect
import math
import random
import time
import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from minidecode import tinyworld as tw
from minidecode.cache_policies import InfiniPot, Observation, StreamingLLM
from minidecode.generate import decode_steps, prefill, process_scores, stop_token_ids
from minidecode.infinipot import read_document
from minidecode.sampling import MinP
from minidecode.speculative import ModelDrafter, accepted_prefix_length, verify_draft
from minidecode.tinyworld.judge import bootstrap_ci, judge_story

__all__ = [
    "CALL_TOKENS",
    "DEFAULT_N",
    "FULL_N",
    "KV_BUDGET",
    "PASS_GAP_SHARE",
    "TASKS",
    "CapstoneReport",
    "Prompt",
    "Row",
    "greedy_decode",
    "grade_stack",
    "held_out_prompts",
    "reference_decode",
    "score_formula",
    "score_stack",
    "wilson_interval",
]

TASKS = ("story", "arithmetic", "retrieval")
MAX_NEW_TOKENS = {"story": 48, "arithmetic": 64, "retrieval": 4}
DEFAULT_N = 4          # prompts per task in the default run (about a minute on a shared CPU)
FULL_N = 32            # prompts per task with full=True
KV_BUDGET = 128        # entries per layer and KV head
CALL_TOKENS = 16       # a forward call feeding more tokens than this counts as several
PASS_GAP_SHARE = 0.25  # exercise 12.1: close this share of the gap from greedy's score to 100
PROMPT_SEED = tw.HELD_OUT_SEED + 500
SPEEDUP_CAP = 2.0


# ------------------------------------------------------------------------- the prompts
@dataclass(frozen=True)
class Prompt:
    """One held-out request: its task, text, token ids, the exact answer (None for stories)."""

    task: str
    text: str
    ids: tuple[int, ...]
    answer: str | None
    max_new_tokens: int


def held_out_prompts(tokenizer: Any, n_per_task: int = DEFAULT_N,
                     seed: int = PROMPT_SEED) -> list[Prompt]:
    """``n_per_task`` prompts of every task in :data:`TASKS`, the same for the same seed: each
    task draws from its own ``random.Random(f"{seed}-{task}")``, so the first n prompts of a larger
    set are the n prompts of a smaller one."""
    _check_int("n_per_task", n_per_task, 1)
    prompts = []
    for task in TASKS:
        rng = random.Random(f"{seed}-{task}")
        for _ in range(n_per_task):
            text, answer = _draw(task, rng)
            ids = tuple(tw.encode_prompt(tokenizer, text))
            prompts.append(Prompt(task, text, ids, answer, MAX_NEW_TOKENS[task]))
    return prompts


def _draw(task: str, rng: random.Random) -> tuple[str, str | None]:
    if task == "story":
        opening = tw.story(rng).text.split(". ")[0] + "."
        return opening, None
    if task == "arithmetic":
        problem = tw.arithmetic_problem(rng)
        return tw.arithmetic_prompt(problem, trigger=True), str(problem.answer)
    doc = tw.retrieval(rng, n_filler=rng.randint(12, 16), n_facts=1, n_questions=1,
                       keys=tw.HELD_OUT_KEYS, style="code_of")
    return doc.truth["prompt"], doc.truth["code"]


def _quality(prompt: Prompt, text: str) -> float:
    """1/0 for an exact task; for a story, its judge validity, 0 if it loops or has no sentence."""
    if prompt.task == "arithmetic":
        return float(tw.parse_number_answer(text) == int(prompt.answer))
    if prompt.task == "retrieval":
        return float(text.strip().startswith(prompt.answer))
    verdict = judge_story(text.replace(tw.EOS, " ").strip(), prompt=prompt.text)
    if verdict.loops or math.isnan(verdict.validity):
        return 0.0
    return float(verdict.validity)


# ------------------------------------------------------------------------- two stacks
@torch.no_grad()
def greedy_decode(model: Any, prompt_ids: Tensor, max_new_tokens: int, *, draft: Any = None,
                  kv_budget: int | None = None, task: str = "story",
                  stop_ids: Iterable[int] = frozenset(),
                  generator: torch.Generator | None = None) -> list[int]:
    """The plain greedy stack, the baseline: argmax with a full KV cache, one token per call;
    it ignores the draft, the budget and the task."""
    cache, next_logits = prefill(model, prompt_ids)
    new_ids: list[int] = []
    for step in decode_steps(model, cache, next_logits):
        new_ids.append(int(step.token[0]))
        if new_ids[-1] in stop_ids or len(new_ids) == max_new_tokens:
            return new_ids
    return new_ids  # pragma: no cover - decode_steps never ends by itself


def reference_decode(model: Any, prompt_ids: Tensor, max_new_tokens: int, *, draft: Any = None,
                     kv_budget: int | None = None, task: str = "story",
                     stop_ids: Iterable[int] = frozenset(),
                     generator: torch.Generator | None = None) -> list[int]:
    """The course's reference stack: each part is one chapter's technique.

    - sampler (chapter 01): min-p 0.1 at temperature 1 for stories (greedy loops there), greedy
      for exact answers;
    - speculative decoding (chapter 07) with the draft model, 4 draft tokens a round: greedy
      verification (the longest agreeing prefix) or speculative sampling's accept/residual rule,
      so the output has the distribution of the sampler on the main model alone;
    - a KV budget (chapter 09): a prompt that does not fit is read in chunks into a pot of
      ``kv_budget`` entries, distilled to half of it by InfiniPot with the prompt's last 12 tokens
      (the question) as the catalyst; during decoding, StreamingLLM (4 sinks + the most recent
      entries) halves the cache whenever the next verify call would overflow the budget.
      Rejected draft tokens are removed from the end of the cache (``crop``), whatever was
      compressed before them.

    (``torch.no_grad`` is a ``with`` block rather than a decorator, so that the function is the
    course's answer itself, not a wrapper of it, for the grader's delegation rule.)
    """
    with torch.no_grad():
        stop_ids = set(stop_ids)
        do_sample = task == "story"
        processors = [MinP(0.1)] if do_sample else []
        gamma = 4 if draft is not None else 0
        drafter = ModelDrafter(draft) if draft is not None else None

        cache = _read_prompt(model, prompt_ids, kv_budget, room=gamma + 1)
        tokens = prompt_ids
        prompt_len = prompt_ids.shape[1]
        while tokens.shape[1] - prompt_len < max_new_tokens:
            remaining = max_new_tokens - (tokens.shape[1] - prompt_len)
            round_gamma = min(gamma, remaining - 1)
            draft_tokens, draft_probs = torch.zeros(0, dtype=torch.long), None
            if drafter is not None and round_gamma > 0:
                draft_tokens, draft_probs = drafter.propose(
                    tokens, round_gamma, do_sample=do_sample, processors=processors,
                    generator=generator)
            drafted = draft_tokens.shape[0]
            if kv_budget is not None and len(cache) + drafted + 1 > kv_budget:
                StreamingLLM(n_sinks=4).compress(model, cache, kv_budget // 2, Observation())
            candidate = torch.cat([tokens, draft_tokens[None]], dim=1)
            length_before = len(cache)
            logits = model(candidate[:, cache.seen_tokens:], cache).logits[0, -(drafted + 1):]
            committed = tokens.shape[1]
            scores = torch.cat([process_scores(candidate[:, : committed + i], logits[i: i + 1],
                                               processors) for i in range(drafted + 1)])
            if do_sample:
                target_probs = torch.softmax(scores, dim=-1)
                if draft_probs is None:
                    draft_probs = torch.zeros(0, target_probs.shape[-1])
                accepted, next_token = verify_draft(target_probs[None], draft_probs[None],
                                                    draft_tokens[None], generator)
                accepted, next_token = int(accepted), int(next_token)
            else:
                choices = scores.argmax(dim=-1)
                accepted = accepted_prefix_length(draft_tokens, choices)
                next_token = int(choices[accepted])
            cache.crop(length_before + 1 + accepted)     # drop the rejected drafts' entries
            if drafter is not None:
                drafter.rollback(committed + accepted)
            emitted = [*draft_tokens[:accepted].tolist(), next_token]
            tokens = torch.cat([tokens, torch.tensor([emitted])], dim=1)
            new_ids = tokens[0, prompt_len:].tolist()
            stops = [i for i, token in enumerate(new_ids) if token in stop_ids]
            if stops:
                return new_ids[: stops[0] + 1]
        return tokens[0, prompt_len: prompt_len + max_new_tokens].tolist()


def _read_prompt(model: Any, prompt_ids: Tensor, kv_budget: int | None, room: int) -> Any:
    """A cache holding every prompt token but the last, within ``kv_budget`` entries."""
    body = prompt_ids[:, :-1]
    if kv_budget is None or body.shape[1] + room + 1 <= kv_budget:
        cache, _ = prefill(model, body)
        return cache
    catalyst = prompt_ids[0, -min(12, kv_budget // 4):].tolist()
    keep = kv_budget // 2
    chunk = max(1, min(32, kv_budget - keep - len(catalyst)))
    policy = InfiniPot(catalyst_ids=catalyst)
    return read_document(model, body, policy, pot_size=kv_budget, keep_size=keep,
                         chunk_size=chunk, room_after=room + 1).cache


# ------------------------------------------------------------------------- measuring
class _Meter:
    """Forward hooks on one model: cost units of its calls and the peak of its KV caches."""

    def __init__(self, model: torch.nn.Module, weight: float):
        self.weight = weight
        self.units = 0.0
        self.calls = 0
        self.peak_entries = 0
        self.peak_bytes = 0
        self._caches: weakref.WeakValueDictionary = weakref.WeakValueDictionary()
        self._handle = model.register_forward_hook(self._hook, with_kwargs=True)

    def reset(self) -> None:
        self.units, self.calls, self.peak_entries, self.peak_bytes = 0.0, 0, 0, 0
        self._caches = weakref.WeakValueDictionary()

    def close(self) -> None:
        self._handle.remove()

    def _hook(self, module: Any, args: tuple, kwargs: dict, output: Any) -> None:
        input_ids = args[0] if args else kwargs.get("input_ids")
        cache = args[1] if len(args) > 1 else kwargs.get("cache")
        self.calls += 1
        self.units += self.weight * math.ceil(input_ids.numel() / CALL_TOKENS)
        if cache is not None:
            self._caches[id(cache)] = cache
        live = list(self._caches.values())
        entries = sum(_entries(c) for c in live)
        self.peak_entries = max(self.peak_entries, entries)
        self.peak_bytes = max(self.peak_bytes, sum(int(c.nbytes()) for c in live))


def _entries(cache: Any) -> int:
    """Entries per layer and KV head (the longest layer), times the batch rows."""
    lengths = [cache.layer_length(layer) for layer in range(cache.num_layers)]
    return max(lengths, default=0) * (cache.batch_size or 0)


@dataclass
class Row:
    """One prompt's result for the stack and for plain greedy (``base_``), side by side."""

    task: str
    text: str
    quality: float
    new_tokens: int
    units: float
    peak_entries: int
    peak_bytes: int
    draft_peak_bytes: int
    seconds: float
    base_text: str
    base_quality: float
    base_new_tokens: int
    base_units: float
    base_peak_entries: int
    base_seconds: float


def score_formula(quality: float, speedup: float, peak_entries: int,
                  kv_budget: int | None) -> float:
    """``100 * Q * (0.6 + 0.2 * S + 0.2 * M)`` with S = min(speedup, 2) / 2 and M = min(1,
    kv_budget / peak_entries) (1 without a budget or without any cache)."""
    speed = min(speedup, SPEEDUP_CAP) / SPEEDUP_CAP
    memory = 1.0 if kv_budget is None or peak_entries <= 0 else min(1.0, kv_budget / peak_entries)
    return 100.0 * quality * (0.6 + 0.2 * speed + 0.2 * memory)


@dataclass
class CapstoneReport:
    """What :func:`score_stack` measured; ``table()`` prints it."""

    rows: list[Row]
    kv_budget: int | None
    model_name: str
    draft_name: str | None
    elapsed_s: float = 0.0
    tasks: tuple[str, ...] = TASKS
    _score_ci: tuple[float, float] | None = field(default=None, repr=False)

    # -- per task
    def task_rows(self, task: str) -> list[Row]:
        return [row for row in self.rows if row.task == task]

    def task_quality(self, task: str, base: bool = False) -> tuple[float, float, float, int]:
        """(mean, low, high, n): stories with a bootstrap interval over prompts, exact tasks
        with a Wilson interval."""
        values = [row.base_quality if base else row.quality for row in self.task_rows(task)]
        if task == "story":
            mean, low, high = bootstrap_ci(values)
        else:
            mean = sum(values) / len(values)
            low, high = wilson_interval(round(sum(values)), len(values))
        return mean, low, high, len(values)

    # -- the three parts
    @staticmethod
    def _summary(rows: Sequence[Row], tasks: Sequence[str], kv_budget: int | None,
                 base: bool) -> tuple[float, float, int, float]:
        """(Q, speedup, peak entries, score) of ``rows`` (the stack's, or greedy's with base)."""
        by_task = [[r.base_quality if base else r.quality for r in rows if r.task == task]
                   for task in tasks]
        quality = sum(sum(v) / len(v) for v in by_task if v) / max(1, sum(1 for v in by_task if v))
        base_units = max(1e-9, sum(r.base_units for r in rows))
        base_rate = sum(r.base_new_tokens for r in rows) / base_units
        if base:
            speedup, peak = 1.0, max(r.base_peak_entries for r in rows)
        else:
            rate = sum(r.new_tokens for r in rows) / max(1e-9, sum(r.units for r in rows))
            speedup, peak = rate / max(1e-9, base_rate), max(r.peak_entries for r in rows)
        return quality, speedup, peak, score_formula(quality, speedup, peak, kv_budget)

    @property
    def quality(self) -> float:
        return self._summary(self.rows, self.tasks, self.kv_budget, False)[0]

    @property
    def speedup(self) -> float:
        """(new tokens per cost unit of the stack) / (the same for plain greedy)."""
        return self._summary(self.rows, self.tasks, self.kv_budget, False)[1]

    @property
    def peak_entries(self) -> int:
        return max(row.peak_entries for row in self.rows)

    @property
    def peak_bytes(self) -> int:
        return max(row.peak_bytes for row in self.rows)

    @property
    def within_budget(self) -> bool:
        return self.kv_budget is None or self.peak_entries <= self.kv_budget

    @property
    def wall_clock_ratio(self) -> float:
        """Measured tokens per second of the stack over those of plain greedy (not scored)."""
        rate = sum(r.new_tokens for r in self.rows) / max(1e-9, sum(r.seconds for r in self.rows))
        base = (sum(r.base_new_tokens for r in self.rows)
                / max(1e-9, sum(r.base_seconds for r in self.rows)))
        return rate / max(1e-9, base)

    @property
    def score(self) -> float:
        return self._summary(self.rows, self.tasks, self.kv_budget, False)[3]

    @property
    def baseline_score(self) -> float:
        """Plain greedy's score on the same prompts, in the same run."""
        return self._summary(self.rows, self.tasks, self.kv_budget, True)[3]

    def score_interval(self, n_resamples: int = 200, seed: int = 0) -> tuple[float, float]:
        """95% percentile bootstrap interval of the score, prompts resampled within each task."""
        gen = torch.Generator().manual_seed(seed)
        groups = [self.task_rows(task) for task in self.tasks]
        scores = []
        for _ in range(n_resamples):
            sample = [group[i] for group in groups
                      for i in torch.randint(len(group), (len(group),), generator=gen).tolist()]
            scores.append(self._summary(sample, self.tasks, self.kv_budget, False)[3])
        scores.sort()
        return (scores[int(0.025 * (n_resamples - 1))],
                scores[int(math.ceil(0.975 * (n_resamples - 1)))])

    @property
    def pass_bar(self) -> float:
        """greedy score + PASS_GAP_SHARE * (100 - greedy score)."""
        return self.baseline_score + PASS_GAP_SHARE * (100.0 - self.baseline_score)

    @property
    def passed(self) -> bool:
        """Exercise 12.1's bar: within the budget, and a score of at least ``pass_bar``."""
        return self.within_budget and self.score >= self.pass_bar

    def table(self) -> str:
        lines = [f"capstone: {self.model_name}" + (f" + draft {self.draft_name}"
                                                    if self.draft_name else "")
                 + (f", KV budget {self.kv_budget} entries" if self.kv_budget is not None
                    else ", no KV budget") + f", {len(self.rows)} held-out prompts",
                 f"{'task':<11} {'n':>3}  {'your stack':<22} {'plain greedy':<22}"]
        for task in self.tasks:
            mean, low, high, n = self.task_quality(task)
            b_mean, b_low, b_high, _ = self.task_quality(task, base=True)
            lines.append(f"{task:<11} {n:>3}  {mean:.2f} [{low:.2f}, {high:.2f}]"
                         f"{'':<6} {b_mean:.2f} [{b_low:.2f}, {b_high:.2f}]")
        base_peak = max(row.base_peak_entries for row in self.rows)
        low, high = self.score_interval()
        lines += [
            f"quality Q   {self.quality:.3f} (plain greedy "
            f"{self._summary(self.rows, self.tasks, self.kv_budget, True)[0]:.3f})",
            f"speedup     {self.speedup:.2f}x in cost units (wall clock, not scored: "
            f"{self.wall_clock_ratio:.2f}x)",
            f"KV peak     {self.peak_entries} entries, {self.peak_bytes / 1024:.0f} KiB "
            f"(budget {self.kv_budget if self.kv_budget is not None else 'none'}; "
            f"plain greedy {base_peak})",
            f"score       {self.score:.1f} [{low:.1f}, {high:.1f}] "
            f"(plain greedy {self.baseline_score:.1f}; "
            f"pass: within the budget and >= {self.pass_bar:.1f})",
        ]
        return "\n".join(lines)


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson's 95% score interval for a proportion ``successes / n`` (Wilson 1927)."""
    _check_int("n", n, 1)
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be in [0, {n}], got {successes!r}")
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def score_stack(decode: Callable[..., Any], *, model: Any = "main",
                draft: Any = "main-draft", tokenizer: Any = None,
                kv_budget: int | None = KV_BUDGET, n_per_task: int | None = None,
                full: bool = False, tasks: Sequence[str] = TASKS, seed: int = 0,
                progress: bool = False) -> CapstoneReport:
    """Run ``decode`` and plain greedy side by side on the held-out prompts; measure and score.

    model, draft: names or paths for :func:`minidecode.load` (or loaded Transformers, then pass
        ``tokenizer``); draft None gives the stack no draft model.
    kv_budget: entries per layer and KV head (an int >= 16), or None for no limit.
    n_per_task: prompts per task (>= 1); default :data:`DEFAULT_N`, or :data:`FULL_N` with
        ``full=True``. tasks: a subset of :data:`TASKS`. seed: request i gets a
        ``torch.Generator`` seeded with ``seed * 1000 + i``.

    Runs with one torch thread (restored afterwards), so that the two stacks' timings are taken
    under the same conditions and the numbers do not depend on the machine's core count.
    """
    if not callable(decode):
        raise ValueError(f"decode must be a function decode(model, prompt_ids, max_new_tokens, "
                         f"*, draft, kv_budget, task, stop_ids, generator), got {decode!r}")
    _check_signature(decode)
    if kv_budget is not None:
        _check_int("kv_budget", kv_budget, 16)
    if n_per_task is None:
        n_per_task = FULL_N if full else DEFAULT_N
    _check_int("n_per_task", n_per_task, 1)
    tasks = tuple(tasks)
    unknown = [task for task in tasks if task not in TASKS]
    if not tasks or unknown:
        raise ValueError(f"tasks must be a non-empty subset of {TASKS}, got {tasks!r}")
    _check_int("seed", seed, 0)
    from minidecode import load

    model_name = model if isinstance(model, str) else type(model).__name__
    draft_name = draft if isinstance(draft, str) or draft is None else type(draft).__name__
    if isinstance(model, str):
        model, tokenizer = load(model)
    if tokenizer is None:
        raise ValueError("tokenizer must be given when model is a loaded model, not a name")
    if isinstance(draft, str):
        draft = load(draft)[0]
    for role, net in (("model", model), ("draft", draft)):
        if net is not None and not isinstance(net, torch.nn.Module):
            raise ValueError(f"{role} must be a minidecode Transformer (the scorer hooks its "
                             f"forward calls), got {type(net).__name__}")
    model.eval()
    stops = frozenset(stop_token_ids(tokenizer, tw.EOS))
    prompts = [p for p in held_out_prompts(tokenizer, n_per_task) if p.task in tasks]

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    target_meter = _Meter(model, 1.0)
    draft_meter = None
    if draft is not None:
        draft.eval()
        draft_meter = _Meter(draft, draft.num_parameters() / model.num_parameters())
    rows = []
    started = time.perf_counter()
    try:
        iterator: Iterable = enumerate(prompts)
        if progress:
            from tqdm.auto import tqdm
            iterator = tqdm(iterator, total=len(prompts), desc="capstone")
        for index, prompt in iterator:
            runs = {}
            order = ("stack", "greedy") if index % 2 == 0 else ("greedy", "stack")
            for which in order:
                stack = decode if which == "stack" else greedy_decode
                target_meter.reset()
                if draft_meter is not None:
                    draft_meter.reset()
                generator = torch.Generator().manual_seed(seed * 1000 + index)
                ids = torch.tensor([prompt.ids])
                start = time.perf_counter()
                out = stack(model, ids, prompt.max_new_tokens, draft=draft, kv_budget=kv_budget,
                            task=prompt.task, stop_ids=stops, generator=generator)
                seconds = time.perf_counter() - start
                new_ids = _as_token_list(out, prompt.max_new_tokens, stops, model.vocab_size)
                text = tokenizer.decode(new_ids)
                runs[which] = (text, _quality(prompt, text), len(new_ids), target_meter.units
                               + (draft_meter.units if draft_meter else 0.0),
                               target_meter.peak_entries, target_meter.peak_bytes,
                               draft_meter.peak_bytes if draft_meter else 0, seconds)
            s, b = runs["stack"], runs["greedy"]
            rows.append(Row(prompt.task, s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7],
                            b[0], b[1], b[2], b[3], b[4], b[7]))
    finally:
        target_meter.close()
        if draft_meter is not None:
            draft_meter.close()
        torch.set_num_threads(threads)
    return CapstoneReport(rows, kv_budget, model_name, draft_name,
                          time.perf_counter() - started, tasks)


def _as_token_list(out: Any, max_new_tokens: int, stops: frozenset[int], vocab: int) -> list[int]:
    """The stack's answer as a list of ids, cut after the first stop id and at the limit."""
    if isinstance(out, Tensor):
        if out.dim() == 2 and out.shape[0] == 1:
            out = out[0]
        if out.dim() != 1 or out.dtype not in (torch.long, torch.int32, torch.int64):
            raise ValueError("decode must return the new token ids as a list of ints or a 1-d "
                             f"(or (1, new)) integer tensor, got a tensor of shape "
                             f"{tuple(out.shape)} and dtype {out.dtype}")
        out = out.tolist()
    if not isinstance(out, (list, tuple)) or not all(
            isinstance(t, int) and not isinstance(t, bool) for t in out):
        raise ValueError("decode must return the new token ids as a list of ints or a 1-d "
                         f"integer tensor, got {type(out).__name__}")
    bad = [t for t in out if not 0 <= t < vocab]
    if bad:
        raise ValueError(f"decode returned token ids outside [0, {vocab - 1}]: {bad[:5]}")
    out = list(out)[:max_new_tokens]
    for i, token in enumerate(out):
        if token in stops:
            return out[: i + 1]
    return out


def _check_signature(decode: Callable[..., Any]) -> None:
    try:
        signature = inspect.signature(decode)
    except (TypeError, ValueError):
        return
    try:
        signature.bind(None, None, 1, draft=None, kv_budget=None, task="story",
                       stop_ids=frozenset(), generator=None)
    except TypeError as err:
        raise ValueError("decode must accept decode(model, prompt_ids, max_new_tokens, *, draft, "
                         f"kv_budget, task, stop_ids, generator); yours is "
                         f"{getattr(decode, '__name__', 'decode')}{signature} ({err})") from None


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


# ------------------------------------------------------------------------- exercise 12.1
def grade_stack(decode: Callable[..., Any]) -> tuple[bool, str]:
    """Exercise 12.1's scorer: (passed, the report). Runs :func:`score_stack` with its defaults;
    passes when the stack keeps within the budget and scores at least ``pass_bar`` (plain greedy's
    score in the same run plus a quarter of its gap to 100). A stub's ``NotImplementedError``
    goes through."""
    report = score_stack(decode)
    if report.passed:
        head = f"score {report.score:.1f}, passed (bar {report.pass_bar:.1f})"
        return True, f"{head}\n{report.table()}"
    why = ("the KV peak is over the budget" if not report.within_budget
           else f"the score is under the bar of {report.pass_bar:.1f}")
    return False, "\n".join([
        f"score {report.score:.1f}, failed: {why}",
        f"  yours:    score {report.score:.1f}, KV peak {report.peak_entries} entries",
        f"  expected: score >= {report.pass_bar:.1f} (plain greedy {report.baseline_score:.1f} "
        f"+ a quarter of the gap to 100), KV peak <= {report.kv_budget} entries",
        report.table(),
    ])
