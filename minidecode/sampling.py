"""Truncation samplers and temperature: logits processors that reshape the next-token distribution.

Every processor is a callable ``(input_ids (batch, t), scores (batch, vocab)) -> scores``, the
convention of transformers' ``LogitsProcessor``. So they compose in minidecode's own loop,

    generate(model, ids, 40, do_sample=True, temperature=0.8, logits_processors=[TopP(0.9)])

(temperature first, then the truncation, as transformers orders its warpers; as a list of
processors that is ``[Temperature(0.8), TopP(0.9)]``), and drop into ``transformers``'
``model.generate(logits_processor=LogitsProcessorList([...]))``.

A *truncation* sampler keeps a set of tokens and sets the others' logits to ``-inf``; the softmax
of what remains is the renormalised distribution ``p'_i = p_i / sum_{j kept} p_j``. Each class below
states its keep rule; the base class :class:`Truncation` does the masking and the input checks.
Each rule also exists as a plain function of the logits (``top_p_filter`` ...) for the exercises.

Ties: a rule that sorts (top-k, top-p) keeps every token whose logit equals the smallest kept one,
so the kept set never depends on how ``torch.sort`` happens to order equal values.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Real

import torch
from torch import Tensor

from minidecode.entropy import check_scores, entropy
from minidecode.generate import draw

__all__ = [
    "Epsilon",
    "Eta",
    "MinP",
    "Temperature",
    "TopK",
    "TopP",
    "Truncation",
    "Typical",
    "apply_processors",
    "min_p_filter",
    "sample_next_token",
    "top_k_filter",
    "top_p_filter",
]

NEG_INF = float("-inf")


def _number(value: object) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)


def _check_min_tokens(min_tokens_to_keep: object) -> None:
    if not isinstance(min_tokens_to_keep, int) or min_tokens_to_keep < 1:
        raise ValueError(f"min_tokens_to_keep must be an int >= 1, got {min_tokens_to_keep!r}")


def _keep_at_least(keep: Tensor, scores: Tensor, min_tokens_to_keep: int) -> Tensor:
    """``keep`` or-ed with the ``min_tokens_to_keep`` highest logits (ties included)."""
    count = min(min_tokens_to_keep, scores.shape[-1])
    floor = torch.topk(scores, count, dim=-1).values[..., -1:]
    return keep | (scores >= floor)


# ---------------------------------------------------------------------------- plain functions


def top_k_filter(logits: Tensor, k: int) -> Tensor:
    """Keep the ``k`` highest logits (and any tied with the k-th); the rest become ``-inf``.

    Fan, Lewis & Dauphin 2018, "Hierarchical Neural Story Generation", arXiv:1805.04833.
    logits: (..., vocab); returns the same shape and dtype.
    """
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"k must be an int >= 1, got {k!r}")
    kth = torch.topk(logits, min(k, logits.shape[-1]), dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, NEG_INF)


def top_p_filter(logits: Tensor, top_p: float, min_tokens_to_keep: int = 1) -> Tensor:
    """Nucleus filtering: keep the most probable tokens until their mass reaches ``top_p``.

    Holtzman et al. 2020, "The Curious Case of Neural Text Degeneration", arXiv:1904.09751.
    A token is kept when the tokens strictly more probable than it hold less than ``top_p`` of the
    mass; equivalently (the form computed here, the same arithmetic as transformers) it is dropped
    when it and everything less probable fit inside the ``1 - top_p`` tail. Then every token tied
    with the least probable kept one is kept too (a tie-safe threshold).

    logits: (..., vocab); top_p in (0, 1]; returns the same shape and dtype.
    """
    if not _number(top_p) or not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p!r} (1 keeps every token)")
    _check_min_tokens(min_tokens_to_keep)
    ascending, _ = torch.sort(logits, dim=-1)
    tail_mass = ascending.softmax(dim=-1).cumsum(dim=-1)        # mass of this token and all below
    drop_sorted = tail_mass <= 1 - top_p
    drop_sorted[..., -min_tokens_to_keep:] = False
    # The smallest kept logit: the first position (ascending) that is not dropped.
    first_kept = (~drop_sorted).to(torch.int64).argmax(dim=-1, keepdim=True)
    threshold = ascending.gather(-1, first_kept)
    return logits.masked_fill(logits < threshold, NEG_INF)


def min_p_filter(logits: Tensor, min_p: float) -> Tensor:
    """Min-p: keep tokens whose probability is at least ``min_p`` times the top probability.

    Nguyen et al. 2024, "Turning Up the Heat: Min-p Sampling for Creative and Coherent LLM
    Outputs", arXiv:2407.01082. Keep i iff ``p_i >= min_p * max_j p_j``; the top token always
    survives. logits: (..., vocab); min_p in [0, 1]; returns the same shape and dtype.
    """
    if not _number(min_p) or not 0 <= min_p <= 1:
        raise ValueError(f"min_p must be in [0, 1], got {min_p!r} (0 keeps every token)")
    probs = torch.softmax(logits, dim=-1)
    top_prob = probs.amax(dim=-1, keepdim=True)
    return logits.masked_fill(probs < min_p * top_prob, NEG_INF)


# ---------------------------------------------------------------------------- processors


class Truncation:
    """Base class: subclasses say which tokens to keep; this masks the rest to ``-inf``.

    ``keep(scores) -> bool (batch, vocab)``; ``__call__`` checks the scores (no NaN, no all -inf
    row), ors in the ``min_tokens_to_keep`` best tokens, and fills the rest with ``-inf``.
    """

    min_tokens_to_keep: int = 1
    keeps_most_probable = True  # False: the rule itself decides which tokens are always kept

    def keep(self, scores: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def __call__(self, input_ids: Tensor, scores: Tensor) -> Tensor:
        check_scores(scores)
        keep = self.keep(scores)
        if self.keeps_most_probable:
            keep = _keep_at_least(keep, scores, self.min_tokens_to_keep)
        return scores.masked_fill(~keep, NEG_INF)


@dataclass
class Temperature:
    """Divide the logits by ``temperature``: ``p_i ∝ exp(z_i / T)``.

    ``T < 1`` sharpens, ``T > 1`` flattens; ``T -> 0`` is greedy decoding, which is why ``T = 0``
    is rejected: call greedy decoding instead. Ackley, Hinton & Sejnowski 1985; Hinton, Vinyals &
    Dean 2015, arXiv:1503.02531. Same as transformers' ``TemperatureLogitsWarper``.

    Args:
        temperature: a finite number > 0.
    """

    temperature: float

    def __post_init__(self) -> None:
        if not _number(self.temperature) or self.temperature <= 0:
            raise ValueError(
                f"temperature must be a finite number > 0, got {self.temperature!r}; for "
                "temperature 0 use greedy decoding (minidecode.generate.greedy, do_sample=False)"
            )

    def __call__(self, input_ids: Tensor, scores: Tensor) -> Tensor:
        check_scores(scores)
        return scores / self.temperature


@dataclass
class TopK(Truncation):
    """Keep the ``k`` most probable tokens (ties with the k-th included). Fan et al. 2018,
    arXiv:1805.04833; transformers' ``TopKLogitsWarper``.

    Args:
        k: an int >= 1 (larger than the vocabulary keeps everything).
    """

    k: int
    min_tokens_to_keep: int = 1

    def __post_init__(self) -> None:
        if not isinstance(self.k, int) or isinstance(self.k, bool) or self.k < 1:
            raise ValueError(f"k must be an int >= 1, got {self.k!r}")
        _check_min_tokens(self.min_tokens_to_keep)

    def keep(self, scores: Tensor) -> Tensor:
        return top_k_filter(scores, self.k) > NEG_INF


@dataclass
class TopP(Truncation):
    """Nucleus sampling: the smallest set of most probable tokens with mass >= ``top_p``.

    Holtzman et al. 2020, arXiv:1904.09751; transformers' ``TopPLogitsWarper``, except that a tie
    at the boundary keeps the whole tied group (see :func:`top_p_filter`).

    Args:
        top_p: in (0, 1]; 1 keeps every token with non-zero probability.
    """

    top_p: float
    min_tokens_to_keep: int = 1

    def __post_init__(self) -> None:
        if not _number(self.top_p) or not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p!r}")
        _check_min_tokens(self.min_tokens_to_keep)

    def keep(self, scores: Tensor) -> Tensor:
        return top_p_filter(scores, self.top_p, self.min_tokens_to_keep) > NEG_INF


@dataclass
class MinP(Truncation):
    """Keep tokens with ``p_i >= min_p * p_max``: the cut-off scales with the model's confidence.

    Nguyen et al. 2024, arXiv:2407.01082; transformers' ``MinPLogitsWarper``.

    Args:
        min_p: in [0, 1]; 0 keeps everything, 1 keeps only the top token (and its ties).
    """

    min_p: float
    min_tokens_to_keep: int = 1

    def __post_init__(self) -> None:
        if not _number(self.min_p) or not 0 <= self.min_p <= 1:
            raise ValueError(f"min_p must be in [0, 1], got {self.min_p!r}")
        _check_min_tokens(self.min_tokens_to_keep)

    def keep(self, scores: Tensor) -> Tensor:
        return min_p_filter(scores, self.min_p) > NEG_INF


@dataclass
class Typical(Truncation):
    """Locally typical sampling: keep the tokens whose surprisal is closest to the entropy.

    Meister, Pimentel, Wiher & Cotterell 2023, "Locally Typical Sampling", TACL, arXiv:2202.00666.
    Sort tokens by ``|-log p_i - H|`` ascending and keep the shortest prefix whose probability mass
    reaches ``mass``. transformers' ``TypicalLogitsWarper``. The most probable token is not
    always kept: when it is much less surprising than average, it is atypical and dropped, and
    ``min_tokens_to_keep`` counts the most *typical* tokens.

    Args:
        mass: in (0, 1).
    """

    mass: float = 0.9
    min_tokens_to_keep: int = 1
    keeps_most_probable = False

    def __post_init__(self) -> None:
        if not _number(self.mass) or not 0 < self.mass < 1:
            raise ValueError(f"mass must be in (0, 1), got {self.mass!r}")
        _check_min_tokens(self.min_tokens_to_keep)

    def keep(self, scores: Tensor) -> Tensor:
        log_probs = torch.log_softmax(scores, dim=-1)
        distance = (-log_probs - entropy(scores).to(log_probs.dtype).unsqueeze(-1)).abs()
        sorted_distance, order = torch.sort(distance, dim=-1)
        mass_so_far = scores.gather(-1, order).softmax(dim=-1).cumsum(dim=-1)
        last = (mass_so_far < self.mass).sum(dim=-1, keepdim=True).clamp(max=scores.shape[-1] - 1)
        cutoff = sorted_distance.gather(-1, last)
        keep_sorted = sorted_distance <= cutoff
        keep_sorted[..., : self.min_tokens_to_keep] = True
        return keep_sorted.scatter(-1, order, keep_sorted)


@dataclass
class Epsilon(Truncation):
    """Epsilon sampling: keep tokens with ``p_i >= epsilon``.

    Hewitt, Manning & Liang 2022, "Truncation Sampling as Language Model Desmoothing",
    arXiv:2210.15191; transformers' ``EpsilonLogitsWarper``.

    Args:
        epsilon: in (0, 1); typical values 3e-4 to 9e-4 for large vocabularies.
    """

    epsilon: float
    min_tokens_to_keep: int = 1

    def __post_init__(self) -> None:
        if not _number(self.epsilon) or not 0 < self.epsilon < 1:
            raise ValueError(f"epsilon must be in (0, 1), got {self.epsilon!r}")
        _check_min_tokens(self.min_tokens_to_keep)

    def keep(self, scores: Tensor) -> Tensor:
        return scores.softmax(dim=-1) >= self.epsilon


@dataclass
class Eta(Truncation):
    """Eta sampling: an epsilon cut-off that relaxes when the distribution is flat.

    Hewitt, Manning & Liang 2022, arXiv:2210.15191: keep ``p_i >= eta`` with
    ``eta = min(epsilon, sqrt(epsilon) * exp(-H))``, H the entropy in nats.
    transformers' ``EtaLogitsWarper``.

    Args:
        epsilon: in (0, 1).
    """

    epsilon: float
    min_tokens_to_keep: int = 1

    def __post_init__(self) -> None:
        if not _number(self.epsilon) or not 0 < self.epsilon < 1:
            raise ValueError(f"epsilon must be in (0, 1), got {self.epsilon!r}")
        _check_min_tokens(self.min_tokens_to_keep)

    def keep(self, scores: Tensor) -> Tensor:
        entropy_ = entropy(scores).unsqueeze(-1)
        eta = torch.clamp(math.sqrt(self.epsilon) * torch.exp(-entropy_), max=self.epsilon)
        return scores.softmax(dim=-1) >= eta.to(scores.dtype)


# ---------------------------------------------------------------------------- helpers


def apply_processors(processors: Sequence, scores: Tensor, input_ids: Tensor | None = None
                     ) -> Tensor:
    """Run ``processors`` in order on ``scores`` (batch, vocab), as the decode loop does."""
    if input_ids is None:
        input_ids = torch.zeros(scores.shape[0], 0, dtype=torch.long, device=scores.device)
    for processor in processors:
        scores = processor(input_ids, scores)
    return scores


def sample_next_token(scores: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Draw one token per row from ``softmax(scores)``: (batch, vocab) -> (batch,) long.

    The decode loop's own draw (:func:`minidecode.generate.draw`), with the scores checked first.
    """
    check_scores(scores)
    return draw(scores, do_sample=True, generator=generator)
