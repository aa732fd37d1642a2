"""Chain-of-thought decoding: branch on the first token, keep the path whose answer is confident.

Wang & Zhou (2024, "Chain-of-Thought Reasoning Without Prompting", arXiv:2402.10200). Greedy
decoding commits to the model's favourite first token, which for a question is often the start of
a direct (and often wrong) answer. Reasoning paths are still there, a little further down the
first-step distribution. CoT-decoding, for a question x:

    1. branch:   the top-k tokens t_1 .. t_k of p(. | x) at the FIRST step only (k = 10);
    2. continue: each branch greedily, x + t_j -> path_j (one batch of k rows, one KV cache);
    3. locate the answer span a_j of each path: the last number for arithmetic, otherwise append
       "The answer is" to the path and decode the answer greedily;
    4. score:    Delta_j = mean over the answer tokens t in a_j of ( p(x_t^1) - p(x_t^2) ),
                 the gap between the top-1 and top-2 probabilities where the answer is written;
    5. select:   the path with the largest Delta ("max"), or (aggregated) the answer whose paths'
                 Deltas sum highest, Delta~(a) = sum_{j : answer_j = a} Delta_j ("aggregate").

Delta is in [0, 1] and is read ONLY on the answer span, not on the reasoning before it: the paper's
observation is that paths with a chain of thought end in a more confident answer.

Extension, labelled as such (not in the paper): ``selection="delta_x_prob"`` scores a path by
Delta_j * p(t_j | x), the answer margin times the probability of the branch's first token. On a
model trained to copy its own last line (TinyWorld's restated chains) every chain branch writes
its answer with a margin near 1, right or wrong, and the first-token probability breaks the tie.

Also here, for comparison, a common first attempt: insert a trigger phrase
("Let's think step by step.") into the context every few decoding steps
(:func:`trigger_insertion_decode`); the first attempt's sketch splices a slice of logits into the
token ids, which cannot work; here the phrase's token ids are fed through the cache and kept in
the text.

Shapes: ``prompt_ids`` (1, prompt) long; per path, ``step_probs`` (path_len, vocab) float, the
distribution the model gave at each generated position (row 0 is the first-step distribution, the
same for every branch).
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from minidecode.generate import decode_steps, prefill, stop_token_ids
from minidecode.tinyworld import TRIGGER

__all__ = [
    "ANSWER_PHRASE",
    "CoTPath",
    "CoTResult",
    "SELECTIONS",
    "TriggerInsertionOutput",
    "aggregate_answers",
    "answer_delta",
    "branch_paths",
    "cot_decode",
    "expand_cache",
    "held_out_arithmetic",
    "last_number_span",
    "select_path",
    "stop_token_ids",
    "top2_margin",
    "trigger_insertion_decode",
]

ANSWER_PHRASE = " The answer is"
SELECTIONS = ("max", "aggregate", "delta_x_prob")
_NUMBER_START = re.compile(r"\s*\d+")
_DIGITS = re.compile(r"\d+")


# ------------------------------------------------------------------------- results
@dataclass
class CoTPath:
    """One branch: its first token, its greedy continuation and its answer confidence.

    tokens: generated ids, first token included, the stop token (newline / end of text) excluded;
    step_probs: (len(tokens), vocab), p(. | prefix) at each generated position;
    answer_span: (start, end) into ``answer_tokens``; ``answer_tokens`` is ``tokens`` itself when
    the answer was found in the path, or the tokens decoded after "The answer is";
    answer_found: False when no answer could be located (then delta = 0 and answer = None).
    """

    first_token: int
    first_token_prob: float
    tokens: list[int]
    text: str
    step_probs: Tensor
    answer: str | None = None
    answer_span: tuple[int, int] | None = None
    answer_tokens: list[int] = field(default_factory=list)
    delta: float = 0.0

    @property
    def answer_found(self) -> bool:
        return self.answer is not None


@dataclass
class CoTResult:
    """Every path of one question, the chosen one, and how it was chosen."""

    paths: list[CoTPath]
    chosen: int
    selection: str
    wall_time_s: float = 0.0

    @property
    def path(self) -> CoTPath:
        return self.paths[self.chosen]

    @property
    def answer(self) -> str | None:
        return self.path.answer

    @property
    def answer_found(self) -> bool:
        """False when no path had a locatable answer (``chosen`` is then the greedy path, 0)."""
        return any(p.answer_found for p in self.paths)


# ------------------------------------------------------------------------- scoring
def top2_margin(probs: Tensor) -> Tensor:
    """p(top-1) - p(top-2) over the last dim: (..., vocab) probabilities -> (...,) in [0, 1]."""
    top2 = probs.topk(2, dim=-1).values
    return top2[..., 0] - top2[..., 1]


def answer_delta(step_probs: Tensor, span: tuple[int, int]) -> float:
    """Delta = mean over positions t in [start, end) of p(x_t^1) - p(x_t^2) (Wang & Zhou, eq. 1).

    step_probs: (path_len, vocab) probabilities, one row per generated position; span: the answer
    tokens' positions, 0 <= start < end <= path_len. Only those rows are read.
    """
    start, end = span
    if not 0 <= start < end <= step_probs.shape[0]:
        raise ValueError(f"span must satisfy 0 <= start < end <= {step_probs.shape[0]} (the path "
                         f"length), got {span}")
    return float(top2_margin(step_probs[start:end].float()).mean())


def last_number_span(pieces: Sequence[str]) -> tuple[int, int] | None:
    """(start, end) of the last number written in ``pieces`` (each token's text), or None.

    A number starts with a piece like " 14" or "7" (optional leading space, then digits only) and
    goes on over pieces made of digits alone with no space ("10" + "0" is 100). Pieces such as
    "14." that mix digits with other characters are not numbers.
    """
    end = None
    for i in range(len(pieces) - 1, -1, -1):
        if _NUMBER_START.fullmatch(pieces[i]):
            end = i + 1
            break
    if end is None:
        return None
    start = end - 1
    while start > 0 and _DIGITS.fullmatch(pieces[start]) and _NUMBER_START.fullmatch(
            pieces[start - 1]):
        start -= 1
    return start, end


def aggregate_answers(paths: Sequence[CoTPath]) -> dict[str, float]:
    """Delta~(a) = sum of Delta over the paths whose answer is a (paths without one are skipped)."""
    totals: dict[str, float] = {}
    for path in paths:
        if path.answer_found:
            totals[path.answer] = totals.get(path.answer, 0.0) + path.delta
    return totals


def _path_score(path: CoTPath, selection: str) -> float:
    if selection == "delta_x_prob":
        return path.delta * path.first_token_prob
    return path.delta


def select_path(paths: Sequence[CoTPath], selection: str = "max") -> int:
    """Index of the chosen path.

    "max": the largest Delta (the paper's CoT-decoding); "aggregate": among the answers with the
    largest summed Delta, that answer's highest-Delta path; "delta_x_prob" (extension): the largest
    Delta * p(first token). Ties go to the earlier path (the likelier first token). When no path
    has an answer, returns 0: the greedy path.
    """
    _check_selection(selection)
    found = [i for i, p in enumerate(paths) if p.answer_found]
    if not found:
        return 0
    if selection == "aggregate":
        totals = aggregate_answers(paths)
        best_answer = max(totals, key=lambda a: (totals[a], -min(
            i for i in found if paths[i].answer == a)))
        found = [i for i in found if paths[i].answer == best_answer]
        selection = "max"
    return max(found, key=lambda i: (_path_score(paths[i], selection), -i))


# ------------------------------------------------------------------------- decoding
def expand_cache(cache: Any, batch: int) -> Any:
    """A copy of a batch-1 ``cache`` repeated ``batch`` times along the batch dim (k branches
    share the prompt's prefill): ``cache.repeat_batch(batch)``, which minidecode's ``KVCache``
    and ``HFModel``'s cache (a transformers ``DynamicCache``) both have."""
    return cache.repeat_batch(batch)


def _as_prompt(tokenizer: Any, prompt: str | Sequence[int] | Tensor) -> Tensor:
    from minidecode.tinyworld.corpus import encode_prompt

    if isinstance(prompt, str):
        return torch.tensor([encode_prompt(tokenizer, prompt)], dtype=torch.long)
    ids = torch.as_tensor(prompt, dtype=torch.long)
    return ids[None] if ids.dim() == 1 else ids


def _check_k(k: object, vocab_size: int) -> None:
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= vocab_size:
        raise ValueError(f"k must be an int in [1, {vocab_size}] (the vocabulary size), got {k!r}")


def _check_selection(selection: str) -> None:
    if selection not in SELECTIONS:
        raise ValueError(f"selection must be one of {SELECTIONS}, got {selection!r}")


def _trim(tokens: list[int], probs: Tensor, stops: set[int]) -> tuple[list[int], Tensor]:
    for i, t in enumerate(tokens):
        if t in stops:
            return tokens[:i], probs[:i]
    return tokens, probs


@torch.no_grad()
def branch_paths(model: Any, prompt_ids: Tensor, k: int, max_new_tokens: int,
                 stop_ids: set[int], batched: bool = True
                 ) -> tuple[Tensor, list[list[int]], list[Tensor]]:
    """Steps 1-2: the top-k first tokens and each branch's greedy continuation.

    prompt_ids: (1, prompt) long. The prompt is prefilled once; with ``batched`` the k branches
    then run as one batch of k rows over a repeated cache, otherwise one after another, each on a
    clone of the prefilled cache (same text, for timing). Returns the first-step probabilities
    (vocab,), and per branch its tokens and (len, vocab) step probabilities, cut before the first
    stop token.
    """
    _check_k(k, model.vocab_size)
    if prompt_ids.dim() != 2 or prompt_ids.shape[0] != 1:
        raise ValueError(f"prompt_ids must have shape (1, prompt), got {tuple(prompt_ids.shape)}")
    cache, first_logits = prefill(model, prompt_ids)
    first_probs = torch.softmax(first_logits[0], dim=-1)                        # (vocab,)
    first_tokens = first_probs.topk(k).indices                                  # (k,)
    rows = [first_tokens] if batched else [first_tokens[j:j + 1] for j in range(k)]
    tokens_out: list[list[int]] = []
    probs_out: list[Tensor] = []
    for firsts in rows:
        width = firsts.shape[0]
        branch_cache = expand_cache(cache, width)
        tokens = [firsts]
        step_probs = [first_probs.expand(width, -1)]
        finished = torch.tensor([int(t) in stop_ids for t in firsts])
        if max_new_tokens > 1 and not bool(finished.all()):
            # Each branch is then plain greedy decoding from its forced first token.
            next_logits = model(firsts[:, None], branch_cache).logits[:, -1].float()
            for step in decode_steps(model, branch_cache, next_logits):
                tokens.append(step.token)
                step_probs.append(step.probs)                                 # (width, vocab)
                finished |= torch.tensor([int(t) in stop_ids for t in step.token])
                if len(tokens) == max_new_tokens or bool(finished.all()):
                    break
        all_tokens = torch.stack(tokens, dim=1)                                   # (width, len)
        all_probs = torch.stack(step_probs, dim=1)                                # (width, len, V)
        for row in range(width):
            t, p = _trim(all_tokens[row].tolist(), all_probs[row], stop_ids)
            tokens_out.append(t)
            probs_out.append(p)
    return first_probs, tokens_out, probs_out


@torch.no_grad()
def _decode_after_phrase(model: Any, tokenizer: Any, context: list[int], max_tokens: int,
                         stop_ids: set[int]) -> tuple[list[int], Tensor]:
    """Append "The answer is" to ``context`` and decode greedily up to a full stop or a stop."""
    phrase = tokenizer.encode(ANSWER_PHRASE).ids
    cache, next_logits = prefill(model, torch.tensor([context + phrase]))
    tokens: list[int] = []
    probs_rows: list[Tensor] = []
    if max_tokens > 0:
        for step in decode_steps(model, cache, next_logits):
            token = int(step.token[0])
            if token in stop_ids or tokenizer.decode([token]).strip() in (".", ""):
                break
            tokens.append(token)
            probs_rows.append(step.probs[0])
            if len(tokens) == max_tokens:
                break
    vocab = model.vocab_size
    return tokens, torch.stack(probs_rows) if probs_rows else torch.zeros(0, vocab)


def _locate_answer(path: CoTPath, model: Any, tokenizer: Any, prompt: list[int], answer: str,
                   stop_ids: set[int], answer_max_tokens: int) -> None:
    if answer == "number":
        span = last_number_span([tokenizer.decode([t]) for t in path.tokens])
        tokens, probs = path.tokens, path.step_probs
    else:
        tokens, probs = _decode_after_phrase(model, tokenizer, prompt + path.tokens,
                                             answer_max_tokens, stop_ids)
        span = (0, len(tokens)) if tokens else None
    if span is None:
        return                                                  # the flag: answer stays None
    path.answer_span, path.answer_tokens = span, tokens
    path.answer = tokenizer.decode(tokens[span[0]:span[1]]).strip()
    path.delta = answer_delta(probs, span)


def cot_decode(model: Any, tokenizer: Any, prompt: str | Sequence[int] | Tensor, k: int = 10,
               max_new_tokens: int = 72, answer: str = "number", selection: str = "max",
               batched: bool = True, answer_max_tokens: int = 8) -> CoTResult:
    """CoT-decoding of one question (Wang & Zhou 2024): branch, continue, score, select.

    prompt: text (encoded with ``<|endoftext|>`` in front, as training documents are) or ids.
    k: first-step branches, in [1, vocab]; k = 1 is plain greedy decoding.
    answer: "number" (the last number in the path is the answer span; a path with no number gets
        ``answer=None`` and Delta 0) or "phrase" (append "The answer is" to every path and decode
        up to ``answer_max_tokens`` tokens; Delta is read on those tokens).
    selection: "max", "aggregate" or "delta_x_prob" (an extension), see :func:`select_path`.
    batched: decode the k branches as one batch (default) or one after another.
    """
    _check_k(k, model.vocab_size)
    _check_selection(selection)
    if answer not in ("number", "phrase"):
        raise ValueError(f"answer must be 'number' or 'phrase', got {answer!r}")
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be an int >= 1, got {max_new_tokens!r}")
    start = time.perf_counter()
    prompt_ids = _as_prompt(tokenizer, prompt)
    stops = stop_token_ids(tokenizer)
    first_probs, branch_tokens, branch_probs = branch_paths(model, prompt_ids, k, max_new_tokens,
                                                            stops, batched)
    paths = []
    first_tokens = first_probs.topk(k).indices.tolist()       # the same order branch_paths used
    for first, tokens, probs in zip(first_tokens, branch_tokens, branch_probs):
        # a branch whose first token is a stop token (newline, end of text) is an empty path
        path = CoTPath(first, float(first_probs[first]), tokens, tokenizer.decode(tokens), probs)
        _locate_answer(path, model, tokenizer, prompt_ids[0].tolist(), answer, stops,
                       answer_max_tokens)
        paths.append(path)
    chosen = select_path(paths, selection)
    return CoTResult(paths, chosen, selection, time.perf_counter() - start)


def held_out_arithmetic(n_steps: int, n: int, seed: int | None = None) -> list:
    """``n`` TinyWorld arithmetic problems with ``n_steps`` steps (1-3) from a held-out stream:
    seeded by ``HELD_OUT_SEED`` (a seed training never used) + 100 + n_steps, so the first n
    problems of a step count are the same whatever n is."""
    import random

    from minidecode.tinyworld import arithmetic_problem
    from minidecode.tinyworld.corpus import HELD_OUT_SEED

    if n_steps not in (1, 2, 3):
        raise ValueError(f"n_steps must be 1, 2 or 3, got {n_steps!r}")
    rng = random.Random((HELD_OUT_SEED if seed is None else seed) + 100 + n_steps)
    return [arithmetic_problem(rng, n_steps=n_steps) for _ in range(n)]


# ---------------------------------------------------------------- the trigger-insertion variant
@dataclass
class TriggerInsertionOutput:
    """tokens: every token after the prompt, inserted phrases included; inserted: True where a
    token came from an inserted phrase rather than from the model; text: their decoded text."""

    tokens: list[int]
    inserted: list[bool]
    text: str
    insertions: int


@torch.no_grad()
def trigger_insertion_decode(model: Any, tokenizer: Any, prompt: str | Sequence[int] | Tensor,
                             trigger: str = TRIGGER, every: int = 3, max_new_tokens: int = 72,
                             at_sentence_end: bool = True) -> TriggerInsertionOutput:
    """A common first attempt done right: greedy decoding that inserts ``trigger`` into the context
    at step 0 and again once ``every`` tokens have been generated since the last insertion.

    The phrase's TOKEN IDS are fed through the KV cache and stay in the text, and the model's
    output between insertions is real argmax tokens. With ``at_sentence_end`` an insertion due in
    the middle of a sentence waits for the next token ending in "." (a phrase in mid-sentence
    breaks the text). ``max_new_tokens`` counts the model's own tokens only.
    """
    if not isinstance(every, int) or every < 1:
        raise ValueError(f"every must be an int >= 1, got {every!r}")
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be an int >= 1, got {max_new_tokens!r}")
    stops = stop_token_ids(tokenizer)
    phrase = tokenizer.encode(" " + trigger.strip()).ids
    cache = model.new_cache()
    tokens: list[int] = []
    inserted: list[bool] = []
    pending = _as_prompt(tokenizer, prompt)
    since, insertions, generated = every, 0, 0
    while generated < max_new_tokens:
        sentence_done = not tokens or tokenizer.decode([tokens[-1]]).rstrip().endswith(".")
        if since >= every and (sentence_done or not at_sentence_end):
            pending = torch.cat([pending, torch.tensor([phrase])], dim=1)
            tokens += phrase
            inserted += [True] * len(phrase)
            since, insertions = 0, insertions + 1
        next_token = int(model(pending, cache).logits[0, -1].argmax())
        if next_token in stops:
            break
        tokens.append(next_token)
        inserted.append(False)
        since, generated = since + 1, generated + 1
        pending = torch.tensor([[next_token]])
    return TriggerInsertionOutput(tokens, inserted, tokenizer.decode(tokens), insertions)
