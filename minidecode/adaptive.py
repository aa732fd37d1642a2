"""Adaptive decoding: let the model's own uncertainty choose how many candidates to sample from.

Three rules, from the paper to the heuristics, all logits processors
``(input_ids, scores) -> scores``:

:class:`AdaptiveDecoding` (Zhu, Hao, He, Ai & Wang, "Improving Open-Ended Text Generation via
Adaptive Decoding", ICML 2024, arXiv:2402.18223). Sort the probabilities ``p_1 >= ... >= p_V``.
Describe a candidate set of the top ``k`` tokens by the distribution that keeps their probabilities
and spreads the remaining mass ``R_k = 1 - sum_{i<=k} p_i`` uniformly over the other ``V - k``:

    H_k = -sum_{i<=k} p_i log p_i  -  R_k log(R_k / (V - k)),      H_0 = log V

and its confidence ``Conf_k = 1 - H_k / log V``. Adding token ``k`` raises the confidence by

    Delta_k = Conf_k - Conf_{k-1} = (H_{k-1} - H_k) / log V   (>= 0)

The set grows from ``k = 1`` while ``Delta_k > epsilon``: a token joins only if knowing its
probability tells us noticeably more than "somewhere in the uniform rest". Peaked distributions stop
after one or two tokens, flat ones with a distinct head keep many.

:class:`ConfidenceRule`: a common first attempt, with its bugs fixed: the entropy of
each row gives a confidence ``1 / (1 + H)``; very confident rows are greedy, confident rows sample
from a small top-k, the rest from a large top-k. Two thresholds and two set sizes, fixed in advance.

:class:`Entropix` (in the style of entropix, Xjdr and Doomslide, 2024,
github.com/xjdr-alt/entropix):
entropy and varentropy (see :mod:`minidecode.entropy`) place each step in one of four regions, and
each region has its own action: argmax, sampling, or sampling at a raised temperature.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from minidecode.entropy import check_scores, entropy, entropy_varentropy
from minidecode.generate import apply_temperature
from minidecode.sampling import NEG_INF, _number

__all__ = [
    "REGIONS",
    "AdaptiveDecoding",
    "ConfidenceRule",
    "Entropix",
    "adaptive_candidate_count",
    "adaptive_filter",
    "confidence_gains",
    "entropix_region",
]


def confidence_gains(logits: Tensor) -> tuple[Tensor, Tensor]:
    """The confidence gain ``Delta_k`` of each token, most probable first.

    Args:
        logits: (..., vocab) with vocab V >= 2.

    Returns:
        ``(gains, sorted_logits)``: gains (..., V) float64, ``gains[..., k-1] = Delta_k``;
        sorted_logits (..., V) the logits in descending order.
    """
    vocab = logits.shape[-1]
    sorted_logits, _ = torch.sort(logits, dim=-1, descending=True)
    probs = torch.softmax(sorted_logits.double(), dim=-1)
    # R_k, the mass outside the top k, as a suffix sum: exact where 1 - cumsum would cancel.
    outside = torch.flip(torch.cumsum(torch.flip(probs, [-1]), dim=-1), [-1])[..., 1:]
    outside = torch.cat([outside, torch.zeros_like(outside[..., :1])], dim=-1)   # R_1 .. R_V
    others = torch.arange(vocab - 1, -1, -1, dtype=probs.dtype, device=probs.device)  # V - k
    head = -torch.cumsum(torch.special.xlogy(probs, probs), dim=-1)
    tail = -torch.special.xlogy(outside, outside / others.clamp(min=1))
    entropies = head + tail                                                         # H_1 .. H_V
    previous = torch.cat([torch.full_like(entropies[..., :1], math.log(vocab)),
                          entropies[..., :-1]], dim=-1)                     # H_0 .. H_{V-1}
    return (previous - entropies) / math.log(vocab), sorted_logits


def adaptive_candidate_count(logits: Tensor, epsilon: float) -> Tensor:
    """How many tokens adaptive decoding keeps: ``1 + #{leading k >= 2 with Delta_k > epsilon}``.

    logits: (..., vocab); returns (...) int64, before ties are added (see :func:`adaptive_filter`).
    """
    if not _number(epsilon) or not 0 < epsilon < 1:
        raise ValueError(f"epsilon must be in (0, 1), got {epsilon!r}")
    if logits.shape[-1] < 2:
        return torch.ones(logits.shape[:-1], dtype=torch.long, device=logits.device)
    gains, _ = confidence_gains(logits)
    still_growing = torch.cumprod((gains[..., 1:] > epsilon).long(), dim=-1)
    return 1 + still_growing.sum(dim=-1)


def adaptive_filter(logits: Tensor, epsilon: float) -> Tensor:
    """Adaptive decoding's candidate set; every other logit becomes ``-inf``.

    The top ``adaptive_candidate_count`` tokens are kept, plus any token tied with the last of
    them: tied tokens are interchangeable, and on a uniform distribution (every gain 0) this keeps
    the whole vocabulary instead of one arbitrary token. logits: (..., vocab).
    """
    count = adaptive_candidate_count(logits, epsilon)
    sorted_logits, _ = torch.sort(logits, dim=-1, descending=True)
    threshold = sorted_logits.gather(-1, (count - 1).unsqueeze(-1))
    return logits.masked_fill(logits < threshold, NEG_INF)


@dataclass
class AdaptiveDecoding:
    """Zhu et al. ICML 2024 (arXiv:2402.18223): grow the candidate set while the confidence gain
    ``(H_{k-1} - H_k) / log V`` exceeds ``epsilon``; see the module docstring.

    Args:
        epsilon: in (0, 1); smaller keeps more. Here both entropies are in nats and the gain is
            divided by ``ln V``. The authors' code (github.com/zwhong714/adaptive_decoding,
            ``adaptive.py``) takes the entropies in nats but divides by ``log2 V``, so its gain
            is ``ln 2`` times ours and a threshold ``e`` there is ``e / ln 2`` here:
            the paper's 1e-3 and 1e-4 (32k-50k vocabularies) are 1.44e-3 and 1.44e-4 on this
            scale. :meth:`from_paper` converts.

    Example:
        >>> AdaptiveDecoding(0.001)(ids, torch.tensor([[5.0, 0.0, 0.0, 0.0]]))
        tensor([[5., -inf, -inf, -inf]])
    """

    epsilon: float = 1e-3

    def __post_init__(self) -> None:
        if not _number(self.epsilon) or not 0 < self.epsilon < 1:
            raise ValueError(f"epsilon must be in (0, 1), got {self.epsilon!r}")

    @classmethod
    def from_paper(cls, epsilon: float) -> AdaptiveDecoding:
        """The processor that keeps what the authors' code keeps at threshold ``epsilon``."""
        return cls(epsilon / math.log(2))

    def __call__(self, input_ids: Tensor, scores: Tensor) -> Tensor:
        check_scores(scores)
        return adaptive_filter(scores, self.epsilon)


@dataclass
class ConfidenceRule:
    """A common first attempt, fixed: confidence ``c = 1 / (1 + H)`` (H in nats) picks the set.

    ``c > greedy_above``: keep only the top token; ``c > small_above``: the top ``small_k``;
    otherwise the top ``large_k``. Each row of the batch gets its own decision, and set sizes
    larger than the vocabulary keep the whole vocabulary.

    Args:
        small_above, greedy_above: thresholds in (0, 1], ``small_above <= greedy_above``.
        small_k, large_k: ints >= 1.
    """

    small_above: float = 0.8
    greedy_above: float = 0.9
    small_k: int = 10
    large_k: int = 50

    def __post_init__(self) -> None:
        for name in ("small_above", "greedy_above"):
            value = getattr(self, name)
            if not _number(value) or not 0 < value <= 1:
                raise ValueError(f"{name} must be in (0, 1], got {value!r}")
        if self.small_above > self.greedy_above:
            raise ValueError(f"small_above ({self.small_above}) must be <= greedy_above "
                             f"({self.greedy_above})")
        for name in ("small_k", "large_k"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")

    def candidate_count(self, scores: Tensor) -> Tensor:
        """(batch,) int64: the set size the rule picks for each row."""
        confidence = 1.0 / (1.0 + entropy(scores))
        count = torch.where(confidence > self.small_above, self.small_k, self.large_k)
        count = torch.where(confidence > self.greedy_above, 1, count)
        return count.clamp(max=scores.shape[-1])

    def __call__(self, input_ids: Tensor, scores: Tensor) -> Tensor:
        check_scores(scores)
        count = self.candidate_count(scores)
        sorted_scores, _ = torch.sort(scores, dim=-1, descending=True)
        threshold = sorted_scores.gather(-1, (count - 1).unsqueeze(-1))
        return scores.masked_fill(scores < threshold, NEG_INF)


REGIONS = ("confident", "forking", "uncertain", "lost")
"""Entropix-style regions, indexed by ``2 * (H >= h) + (V >= v)``:
confident (low H, low V): one clear choice -> argmax;
forking (low H, high V): a few strong candidates and a tail -> sample;
uncertain (high H, low V): many similar candidates -> sample;
lost (high H, high V): no structure -> sample hotter, to leave the state rather than commit to
it."""


def entropix_region(scores: Tensor, entropy_threshold: float, varentropy_threshold: float
                    ) -> Tensor:
    """(...) int64 index into :data:`REGIONS` for logits ``scores`` (..., vocab)."""
    entropy_, varentropy_ = entropy_varentropy(scores)
    return 2 * (entropy_ >= entropy_threshold).long() + (varentropy_ >= varentropy_threshold).long()


@dataclass
class Entropix:
    """Entropy/varentropy-adaptive sampling in the style of entropix.

    Each row is put in a region of :data:`REGIONS` by its entropy H (nats) and varentropy V
    (nats^2); ``temperatures[region]`` is then applied, where 0 means argmax (only the top token
    and its ties stay). entropix itself also inserts a "pause and think" token in the uncertain
    region and adapts top-k/top-p from attention statistics; a logits processor cannot add
    tokens, so here every region is a temperature.

    Args:
        entropy_threshold: H at or above which a step is "high entropy" (> 0).
        varentropy_threshold: V at or above which a step is "high varentropy" (> 0).
        temperatures: four numbers >= 0 for confident, forking, uncertain, lost.
    """

    entropy_threshold: float = 1.0
    varentropy_threshold: float = 1.5
    temperatures: tuple[float, float, float, float] = (0.0, 1.0, 1.0, 1.5)

    def __post_init__(self) -> None:
        for name in ("entropy_threshold", "varentropy_threshold"):
            value = getattr(self, name)
            if not _number(value) or value <= 0:
                raise ValueError(f"{name} must be a number > 0, got {value!r}")
        temperatures = tuple(self.temperatures)
        if len(temperatures) != 4 or not all(_number(t) and t >= 0 for t in temperatures):
            raise ValueError("temperatures must be four numbers >= 0 (0 = argmax), got "
                             f"{self.temperatures!r}")
        self.temperatures = temperatures

    def region(self, scores: Tensor) -> Tensor:
        """(batch,) index into :data:`REGIONS`."""
        return entropix_region(scores, self.entropy_threshold, self.varentropy_threshold)

    def __call__(self, input_ids: Tensor, scores: Tensor) -> Tensor:
        check_scores(scores)
        table = torch.tensor(self.temperatures, dtype=torch.float32, device=scores.device)
        return apply_temperature(scores, table[self.region(scores)])
