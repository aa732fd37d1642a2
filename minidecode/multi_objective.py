"""Multi-objective decoding: generate candidates, score them on several objectives, choose.

Two levels, both in this module:

**Sequence level** (a common first design, with its dominance rule fixed). Generate N candidates
(sampling with different settings), score each on m objectives, all oriented "higher is better":

    quality    mean log p_target(y_t | x, y_<t) over the candidate's tokens
    diversity  mean Jaccard distance of its bigram set to the other candidates' (1 = shares none)
    speed      - wall time (s) spent generating it
    length     - number of generated tokens (shorter is cheaper; negate it if longer is wanted)

a dominates b  iff  f_i(a) >= f_i(b) for every objective i  AND  f_i(a) > f_i(b) for at least one.

The Pareto front is the set of candidates no other candidate dominates. Two candidates with equal
scores do not dominate each other, so both stay on the front. (A common first attempt drops b as
soon as another candidate is >= on every objective, so equal candidates knock each other out and a
set of identical candidates has an empty front.) One candidate is then picked with user weights
w >= 0, not all zero, on min-max normalised scores f~ in [0, 1]:

    weighted sum   argmax_a  sum_i w_i f~_i(a)
    Chebyshev      argmin_a  max_i w_i (1 - f~_i(a)) + rho * sum_i (1 - f~_i(a))   (ideal point = 1)

A weighted sum can only reach the convex hull of the front; Chebyshev scalarisation reaches every
point of it (Miettinen 1999, "Nonlinear Multiobjective Optimization"); the small rho = 1e-6 term
(augmented Chebyshev) breaks ties towards a non-dominated point.

**Token level**: MOD, Shi, Chen, Hu, Liu, Hajishirzi, Smith & Du (NeurIPS 2024, "Decoding-Time
Language Model Alignment with Multiple Objectives", arXiv:2406.18853). With models (or prompts)
p_1 .. p_M and weights w (sum 1), the next-token scores are the weighted sum of log-probabilities,

    scores(v) = sum_j w_j log p_j(v | x, y_<t),

then sampled or argmaxed as usual (the closed form the paper derives for the reverse-KL
regularised case). :class:`MODProcessor` is a logits processor that mixes the decoding model with a
second one (the draft, or the target reading another prompt), with one weight in [0, 1];
:func:`mod_sample` samples from the blend of two prompts of one model, and
:func:`location_statement_rate` is one of the two objectives chapter 05 measures along the weight.

Shapes: ``scores`` (n_candidates, n_objectives) float; ``weights`` (n_objectives,).
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from minidecode.generate import generate
from minidecode.sampling import TopP
from minidecode.tinyworld.corpus import NAMES, PLACES

__all__ = [
    "OBJECTIVES",
    "Candidate",
    "LOCATION_STATEMENT",
    "MODProcessor",
    "chebyshev_select",
    "dominates",
    "generate_candidates",
    "location_statement_rate",
    "mod_sample",
    "mean_log_prob",
    "mod_scores",
    "normalise_scores",
    "pareto_front",
    "score_candidates",
    "weighted_sum_select",
]

OBJECTIVES = ("quality", "diversity", "speed", "length")
CHEBYSHEV_RHO = 1e-6


# ------------------------------------------------------------------------- dominance
def _as_scores(scores: Tensor | Sequence[Sequence[float]]) -> Tensor:
    scores = torch.as_tensor(scores, dtype=torch.float64)
    if scores.dim() != 2 or scores.shape[1] == 0:
        raise ValueError(f"scores must be 2-d (n_candidates, n_objectives) with at least one "
                         f"objective, got shape {tuple(scores.shape)}")
    if not bool(torch.isfinite(scores).all()):
        raise ValueError("scores must be finite (no NaN or inf)")
    return scores


def dominates(a: Tensor | Sequence[float], b: Tensor | Sequence[float]) -> bool:
    """True iff a >= b on every objective and a > b on at least one (higher is better)."""
    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    if a.shape != b.shape or a.dim() != 1:
        raise ValueError(f"a and b must be 1-d of the same length, got {tuple(a.shape)} and "
                         f"{tuple(b.shape)}")
    return bool((a >= b).all() and (a > b).any())


def pareto_front(scores: Tensor | Sequence[Sequence[float]]) -> list[int]:
    """Indices (ascending) of the candidates no other candidate dominates.

    scores: (n, m), higher is better on every objective. Duplicated rows are all kept (equal
    points do not dominate each other). O(n^2 m), fine for the tens of candidates decoded here.
    """
    scores = _as_scores(scores)
    at_least = (scores[:, None, :] >= scores[None, :, :]).all(dim=-1)      # [j, i]: j >= i
    better = (scores[:, None, :] > scores[None, :, :]).any(dim=-1)         # [j, i]: j > i once
    dominated = (at_least & better).any(dim=0)                             # some j dominates i
    return [i for i in range(scores.shape[0]) if not bool(dominated[i])]


# ------------------------------------------------------------------------- scalarisation
def _check_weights(weights: Tensor | Sequence[float], n_objectives: int) -> Tensor:
    weights = torch.as_tensor(weights, dtype=torch.float64)
    if weights.dim() != 1 or weights.shape[0] != n_objectives:
        raise ValueError(f"weights must have one entry per objective ({n_objectives}), got shape "
                         f"{tuple(weights.shape)}")
    if not bool(torch.isfinite(weights).all()) or bool((weights < 0).any()):
        raise ValueError(f"weights must be finite and >= 0, got {weights.tolist()}")
    if float(weights.sum()) == 0.0:
        raise ValueError(f"weights must not all be zero, got {weights.tolist()}")
    return weights


def normalise_scores(scores: Tensor | Sequence[Sequence[float]]) -> Tensor:
    """Min-max scale each objective to [0, 1] over the candidates (a constant objective -> 0),
    so weights compare like with like: (n, m) -> (n, m) float64."""
    scores = _as_scores(scores)
    low, high = scores.min(dim=0).values, scores.max(dim=0).values
    span = high - low
    return torch.where(span > 0, (scores - low) / torch.where(span > 0, span, 1.0),
                       torch.zeros_like(scores))


def weighted_sum_select(scores: Tensor | Sequence[Sequence[float]],
                        weights: Tensor | Sequence[float], normalise: bool = True) -> int:
    """argmax_a sum_i w_i f~_i(a); ties go to the candidate that is on the Pareto front, then the
    lowest index. weights: (m,), >= 0, not all zero."""
    scores = _as_scores(scores)
    weights = _check_weights(weights, scores.shape[1])
    values = (normalise_scores(scores) if normalise else scores) @ weights
    return _best_on_front(scores, values)


def chebyshev_select(scores: Tensor | Sequence[Sequence[float]],
                     weights: Tensor | Sequence[float]) -> int:
    """argmin_a max_i w_i (1 - f~_i(a)) + rho sum_i (1 - f~_i(a)), the augmented weighted
    Chebyshev distance to the ideal point (1, ..., 1) of the normalised scores. weights: (m,),
    >= 0, not all zero. A weight at a corner (one objective only) picks that objective's best."""
    scores = _as_scores(scores)
    weights = _check_weights(weights, scores.shape[1])
    gap = 1.0 - normalise_scores(scores)                                     # (n, m), 0 = ideal
    distance = (weights * gap).max(dim=1).values + CHEBYSHEV_RHO * gap.sum(dim=1)
    return _best_on_front(scores, -distance)


def _best_on_front(scores: Tensor, values: Tensor) -> int:
    front = set(pareto_front(scores))
    best = float(values.max())
    tied = [i for i in range(len(values)) if float(values[i]) >= best - 1e-12]
    on_front = [i for i in tied if i in front]
    return (on_front or tied)[0]


# ------------------------------------------------------------------------- candidates
@dataclass
class Candidate:
    """One generated continuation: its tokens (prompt excluded, cut after the end token), text,
    the sampling setting that made it, and the wall time its generation took."""

    tokens: list[int]
    text: str
    setting: dict
    wall_time_s: float


@torch.no_grad()
def generate_candidates(model: Any, tokenizer: Any, prompt_ids: Sequence[int],
                        settings: Sequence[dict], max_new_tokens: int, seed: int = 0,
                        eos_token_id: int | None = None) -> list[Candidate]:
    """One candidate per setting, each sampled alone so its wall time is its own.

    settings: dicts with "temperature" (> 0) and optional "top_p" in (0, 1] and
    "max_new_tokens" (<= ``max_new_tokens``), e.g. ``{"temperature": 0.7, "top_p": 0.9}``: the
    top-0.9 nucleus of the T = 0.7 distribution (temperature first, as ``generate`` applies it).
    Candidate i uses the generator seeded with ``seed + i``.
    """
    if not settings:
        raise ValueError("settings must hold at least one sampling setting, got none")
    candidates = []
    for i, setting in enumerate(settings):
        temperature = setting.get("temperature") if isinstance(setting, dict) else None
        if not isinstance(temperature, (int, float)) or not temperature > 0:
            raise ValueError(f"settings[{i}] must be a dict with a 'temperature' > 0, got "
                             f"{setting!r}")
        processors = [TopP(setting["top_p"])] if setting.get("top_p", 1.0) < 1.0 else []
        generator = torch.Generator().manual_seed(seed + i)
        budget = min(int(setting.get("max_new_tokens", max_new_tokens)), max_new_tokens)
        start = time.perf_counter()
        out = generate(model, torch.tensor([list(prompt_ids)]), budget, do_sample=True,
                       temperature=float(setting["temperature"]), logits_processors=processors,
                       generator=generator, eos_token_id=eos_token_id)
        elapsed = time.perf_counter() - start
        tokens = out[0, len(prompt_ids):].tolist()
        if eos_token_id is not None and eos_token_id in tokens:
            tokens = tokens[: tokens.index(eos_token_id) + 1]
        candidates.append(Candidate(tokens, tokenizer.decode(tokens), dict(setting), elapsed))
    return candidates


def _bigrams(tokens: Sequence[int]) -> set[tuple[int, int]]:
    return {(tokens[i], tokens[i + 1]) for i in range(len(tokens) - 1)}


@torch.no_grad()
def mean_log_prob(model: Any, prompt_ids: Sequence[int], tokens: Sequence[int]) -> float:
    """Mean log p_model(y_t | x, y_<t) over the candidate's tokens (higher = more fluent)."""
    if not tokens:
        return float("-inf")
    ids = torch.tensor([list(prompt_ids) + list(tokens)])
    log_probs = F.log_softmax(model(ids[:, :-1]).logits[0].float(), dim=-1)
    picked = log_probs[len(prompt_ids) - 1:].gather(-1, ids[0, len(prompt_ids):, None])
    return float(picked.mean())


def score_candidates(model: Any, prompt_ids: Sequence[int], candidates: Sequence[Candidate],
                     objectives: Sequence[str] = OBJECTIVES) -> Tensor:
    """(n, len(objectives)) float64 scores, every column oriented higher-is-better (see the module
    docstring). Empty candidates get the worst quality seen minus 1 instead of -inf."""
    unknown = [o for o in objectives if o not in OBJECTIVES]
    if unknown or not objectives:
        raise ValueError(f"objectives must be a non-empty subset of {OBJECTIVES}, got "
                         f"{list(objectives)}")
    n = len(candidates)
    if n == 0:
        raise ValueError("candidates must not be empty")
    columns = {}
    if "quality" in objectives:
        quality = [mean_log_prob(model, prompt_ids, c.tokens) for c in candidates]
        finite = [q for q in quality if q != float("-inf")] or [0.0]
        columns["quality"] = [q if q != float("-inf") else min(finite) - 1.0 for q in quality]
    if "diversity" in objectives:
        grams = [_bigrams(c.tokens) for c in candidates]
        distance = torch.zeros(n, n, dtype=torch.float64)
        for i, j in combinations(range(n), 2):
            union = grams[i] | grams[j]
            d = 1.0 - len(grams[i] & grams[j]) / len(union) if union else 0.0
            distance[i, j] = distance[j, i] = d
        columns["diversity"] = (distance.sum(dim=1) / max(n - 1, 1)).tolist()
    if "speed" in objectives:
        columns["speed"] = [-c.wall_time_s for c in candidates]
    if "length" in objectives:
        columns["length"] = [-float(len(c.tokens)) for c in candidates]
    return torch.tensor([columns[o] for o in objectives], dtype=torch.float64).T


# ------------------------------------------------------------------------- MOD (token level)
def mod_scores(log_probs: Sequence[Tensor], weights: Sequence[float]) -> Tensor:
    """MOD's next-token scores sum_j w_j log p_j (Shi et al. 2024).

    log_probs: M tensors (batch, vocab) of log-probabilities (or raw logits: each is
    log-softmaxed here); weights: M numbers >= 0, not all zero, normalised to sum 1.
    Returns (batch, vocab).
    """
    if len(log_probs) == 0 or len(log_probs) != len(weights):
        raise ValueError(f"need one weight per model and at least one model, got "
                         f"{len(log_probs)} log-prob tensors and {len(weights)} weights")
    w = _check_weights(weights, len(log_probs))
    w = w / w.sum()
    # a zero weight drops the model (0 * -inf would be NaN where a processor masked a token)
    return sum(float(wj) * F.log_softmax(lp.float(), dim=-1)
               for wj, lp in zip(w, log_probs) if float(wj) > 0)


class MODProcessor:
    """Logits processor: scores <- (1 - weight) log softmax(scores) + weight log p_other.

    other_model: the second model (e.g. the draft), run with its own KV cache on the same text;
    weight in [0, 1]: 0 = the decoding model alone, 1 = the other model alone;
    prompt_length: length of the prompt in ``input_ids`` (known when generating);
    other_prompt_ids: if given, the other model reads THIS prompt instead, followed by the tokens
    generated so far (the same model with two prompts is MOD over two "objectives").
    Call ``reset()`` (``generate`` users: build a new processor) before decoding another prompt.

    Stateful (:class:`minidecode.interfaces.StatefulProcessor`): the other model's cache and the
    count ``fed`` of tokens it has read. ``state()`` / ``restore()`` roll both back (the cache is
    cropped), so speculative decoding can take rejected draft tokens back.
    """

    stateful = True

    def __init__(self, other_model: Any, weight: float, prompt_length: int,
                 other_prompt_ids: Sequence[int] | None = None) -> None:
        if not isinstance(weight, (int, float)) or not 0.0 <= float(weight) <= 1.0:
            raise ValueError(f"weight must be a number in [0, 1], got {weight!r}")
        if not isinstance(prompt_length, int) or prompt_length < 1:
            raise ValueError(f"prompt_length must be an int >= 1, got {prompt_length!r}")
        self.other_model = other_model
        self.weight = float(weight)
        self.prompt_length = prompt_length
        self.other_prompt_ids = None if other_prompt_ids is None else list(other_prompt_ids)
        self.reset()

    def reset(self) -> None:
        self.cache = self.other_model.new_cache()
        self.fed = 0                 # tokens of input_ids the other model has read

    def state(self) -> int:
        """A snapshot: how many tokens of the other model's context it has read."""
        return self.fed

    def restore(self, snapshot: int) -> None:
        """Forget every token after the first ``snapshot`` ones (crop the other model's cache)."""
        if snapshot < self.fed:
            self.cache.crop(snapshot)
            self.fed = snapshot

    def _other_context(self, input_ids: Tensor) -> Tensor:
        if self.other_prompt_ids is None:
            return input_ids
        prefix = torch.tensor([self.other_prompt_ids], device=input_ids.device)
        return torch.cat([prefix.expand(input_ids.shape[0], -1),
                          input_ids[:, self.prompt_length:]], dim=1)

    @torch.no_grad()
    def __call__(self, input_ids: Tensor, scores: Tensor) -> Tensor:
        context = self._other_context(input_ids)
        new = context[:, self.fed:]
        other_logits = self.other_model(new, self.cache).logits[:, -1].float()
        self.fed = context.shape[1]
        return mod_scores([scores, other_logits], [1.0 - self.weight, self.weight])


# ------------------------------------------------------------------------- a MOD sweep's parts
_WHO = "|".join([name for name, _ in NAMES] + ["He", "She", "he", "she"])
LOCATION_STATEMENT = re.compile(
    rf"\b(?:{_WHO}) (?:is in|walked to) the (?:{'|'.join(PLACES)})\.")
"""A location statement of TinyWorld's question-answering documents ("Ella is in the forest.",
"Hugo walked to the beach."): sentences the story grammar never uses."""
_SENTENCE_END = re.compile(r'[.?!]"?(?=\s|$)')


def location_statement_rate(text: str) -> float:
    """Location statements (:data:`LOCATION_STATEMENT`) per complete sentence of ``text``; 0.0
    for a text with no complete sentence. A rate, so a longer text does not score higher."""
    sentences = len(_SENTENCE_END.findall(text))
    return len(LOCATION_STATEMENT.findall(text)) / sentences if sentences else 0.0


def mod_sample(model: Any, prompt_ids: Sequence[int], other_prompt_ids: Sequence[int],
               weight: float, n: int, max_new_tokens: int, seed: int,
               eos_token_id: int | None = None, temperature: float = 1.0) -> list[list[int]]:
    """``n`` sampled continuations of ``prompt_ids`` from MOD's blend of two conditionings of one
    model: ``(1 - weight) log p(. | prompt) + weight log p(. | other prompt)``, reproducible by
    ``seed``. Returns the new tokens of each sample, up to and including its first
    ``eos_token_id``."""
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an int >= 1, got {n!r}")
    processor = MODProcessor(model, weight, len(prompt_ids), other_prompt_ids=other_prompt_ids)
    ids = torch.tensor([list(prompt_ids)] * n)
    tokens = generate(model, ids, max_new_tokens, do_sample=True, temperature=temperature,
                      logits_processors=[processor], eos_token_id=eos_token_id,
                      generator=torch.Generator().manual_seed(seed))
    rows = tokens[:, len(prompt_ids):].tolist()
    if eos_token_id is not None:
        rows = [row[: row.index(eos_token_id) + 1] if eos_token_id in row else row
                for row in rows]
    return rows
