"""Temperature scheduling: a temperature for every step (and every row), chosen as we decode.

Three schedulers, each a logits processor ``(input_ids, scores) -> scores / T`` with ``T`` of shape
(batch,), recording the temperatures it used in ``history`` (one (batch,) tensor per step):

:class:`EDT`, entropy-based dynamic temperature (Zhang, Bao & Huang 2024,
"EDT: Improving Large Language Models' Generation by Entropy-based Dynamic Temperature Sampling",
arXiv:2403.14541):

    T = T0 * N^(theta / H)          0 < N < 1, theta > 0, H the step's entropy (nats)

A confident step (small H) gets a small temperature (``T -> 0`` as ``H -> 0``), an uncertain one
approaches ``T0``.

:class:`DynamicTemperature`, llama.cpp's ``--dynatemp-range`` / ``--dynatemp-exp`` (the
``llama_sampler_temp_ext`` sampler, after the "DynaTemp" proposal by kalomaze, 2023):

    T = T_min + (T_max - T_min) * (H / log n)^exponent

with ``n`` the number of tokens still in the race (the vocabulary size V unless an earlier processor
masked some), so ``H / log n`` is the entropy as a fraction of its maximum. It grows with H.

:class:`ThreeFactorScheduler`, a common first attempt at an adaptive scheduler, fixed: a step-based
base schedule times a context-quality factor times a diversity factor, clamped to [min, max].
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from minidecode.entropy import check_scores, entropy
from minidecode.generate import ARGMAX_BELOW, apply_temperature  # noqa: F401 (re-export)
from minidecode.sampling import NEG_INF, _number

__all__ = [
    "EDT",
    "DynamicTemperature",
    "ThreeFactorScheduler",
    "apply_temperature",
    "dynamic_temperature",
    "edt_temperature",
]

def edt_temperature(entropy: Tensor, t0: float, n: float, theta: float) -> Tensor:
    """EDT's ``T = t0 * n^(theta / H)`` for entropies ``entropy`` (...) in nats; ``H = 0`` gives 0.

    Zhang et al. 2024, arXiv:2403.14541. t0 > 0; 0 < n < 1; theta > 0.
    """
    if not _number(t0) or t0 <= 0:
        raise ValueError(f"t0 must be a number > 0, got {t0!r}")
    if not _number(n) or not 0 < n < 1:
        raise ValueError(f"n must be in (0, 1), got {n!r} (the paper uses 0.8)")
    if not _number(theta) or theta <= 0:
        raise ValueError(f"theta must be a number > 0, got {theta!r}")
    exponent = theta / entropy.clamp(min=0)                  # H = 0 -> inf -> n^inf = 0
    return t0 * torch.exp(exponent * math.log(n))


def dynamic_temperature(entropy: Tensor, n_candidates: Tensor, min_temperature: float,
                        max_temperature: float, exponent: float) -> Tensor:
    """llama.cpp's ``T = T_min + (T_max - T_min) * (H / log n)^exponent``.

    entropy: (...) in nats; n_candidates: (...) tokens with a finite logit (a single candidate
    gives ``H / log n = 0``). 0 <= min_temperature <= max_temperature; exponent > 0.
    """
    if not _number(min_temperature) or min_temperature < 0:
        raise ValueError(f"min_temperature must be a number >= 0, got {min_temperature!r}")
    if not _number(max_temperature) or max_temperature < min_temperature:
        raise ValueError(f"max_temperature must be a number >= min_temperature "
                         f"({min_temperature}), got {max_temperature!r}")
    if not _number(exponent) or exponent <= 0:
        raise ValueError(f"exponent must be a number > 0, got {exponent!r}")
    max_entropy = torch.log(n_candidates.to(entropy.dtype))
    fraction = torch.where(max_entropy > 0, entropy / max_entropy.clamp(min=1e-12),
                           torch.zeros_like(entropy)).clamp(0, 1)
    return min_temperature + (max_temperature - min_temperature) * fraction**exponent


@dataclass
class _Scheduled:
    """Base: subclasses give ``temperature(input_ids, scores) -> (batch,)``; this applies it.

    Stateful (:class:`minidecode.interfaces.StatefulProcessor`): ``history`` holds one (batch,)
    tensor of temperatures per call, and a scheduler may read it (``ThreeFactorScheduler`` counts
    its steps from it). ``state()`` / ``restore()`` let a loop that takes tokens back (speculative
    decoding) forget the calls made on rejected tokens.
    """

    stateful = True
    history: list[Tensor] = field(default_factory=list, init=False, repr=False)

    def temperature(self, input_ids: Tensor, scores: Tensor) -> Tensor:  # pragma: no cover
        raise NotImplementedError

    def reset(self) -> None:
        """Forget the history (and any per-generation state): call before a new generation."""
        self.history.clear()

    def state(self) -> int:
        """A snapshot: the number of steps seen."""
        return len(self.history)

    def restore(self, snapshot: int) -> None:
        """Forget every step after the first ``snapshot`` ones."""
        del self.history[snapshot:]

    def trace(self) -> Tensor:
        """(steps, batch) float32: the temperatures used so far."""
        return torch.stack(self.history) if self.history else torch.zeros(0, 0)

    def __call__(self, input_ids: Tensor, scores: Tensor) -> Tensor:
        check_scores(scores)
        temperature = self.temperature(input_ids, scores).float()
        self.history.append(temperature.detach().cpu())
        return apply_temperature(scores, temperature)


@dataclass
class EDT(_Scheduled):
    """Entropy-based dynamic temperature, ``T = t0 * n^(theta / H)`` (Zhang et al. 2024,
    arXiv:2403.14541). ``T`` never exceeds ``t0``; it falls to 0 (argmax) on confident steps.

    Args:
        t0: the temperature of a maximally uncertain step (> 0), the paper's T0.
        n: the base, in (0, 1); the paper fixes 0.8.
        theta: > 0; larger makes every step cooler.
    """

    t0: float = 1.0
    n: float = 0.8
    theta: float = 1.0

    def __post_init__(self) -> None:
        edt_temperature(torch.ones(1), self.t0, self.n, self.theta)   # validates the arguments

    def temperature(self, input_ids: Tensor, scores: Tensor) -> Tensor:
        return edt_temperature(entropy(scores), self.t0, self.n, self.theta)


@dataclass
class DynamicTemperature(_Scheduled):
    """llama.cpp's dynamic temperature: ``T = T_min + (T_max - T_min) * (H / log n)^exponent``.

    llama.cpp's flags: ``--temp T --dynatemp-range R --dynatemp-exp E`` give
    ``min_temperature = max(0, T - R)``, ``max_temperature = T + R``, ``exponent = E``.

    Args:
        min_temperature, max_temperature: 0 <= min <= max.
        exponent: > 0; 1 is linear in the normalised entropy, larger keeps most steps near min.
    """

    min_temperature: float = 0.5
    max_temperature: float = 1.5
    exponent: float = 1.0

    def __post_init__(self) -> None:
        dynamic_temperature(torch.ones(1), torch.full((1,), 2), self.min_temperature,
                            self.max_temperature, self.exponent)        # validates the arguments

    def temperature(self, input_ids: Tensor, scores: Tensor) -> Tensor:
        candidates = (scores > NEG_INF).sum(dim=-1)
        return dynamic_temperature(entropy(scores), candidates, self.min_temperature,
                                   self.max_temperature, self.exponent)


@dataclass
class ThreeFactorScheduler(_Scheduled):
    """A common first attempt at an adaptive temperature scheduler, fixed (notebook 03 shows the
    bugs).

    ``T = clamp(base(step) * quality_factor * diversity_factor, min_temperature, max_temperature)``

    - ``base(step)``: ``max_temperature`` for the first ``warm_steps`` generated tokens,
      ``base_temperature`` until ``cool_after``, then ``min_temperature``;
    - context quality ``q = 1 - H / log V`` (the step's confidence in [0, 1]): ``q > 0.8`` -> x0.7
      (stay consistent), ``q < 0.3`` -> x1.5;
    - diversity ``d`` = distinct tokens / tokens among the last ``window`` generated ones:
      ``d < 0.3`` (repeating itself) -> x1.2 to break the loop, ``d > 0.7`` -> x0.8. The first
      attempt has these two the other way round, a positive feedback loop (see the notebook).

    ``step`` counts tokens generated since the first call after :meth:`reset`; each row of the
    batch gets its own temperature.

    Args:
        base_temperature, min_temperature, max_temperature: 0 < min <= base <= max.
        warm_steps, cool_after: 0 <= warm_steps <= cool_after.
        window: >= 2 recent tokens for the diversity score.
    """

    base_temperature: float = 1.0
    min_temperature: float = 0.1
    max_temperature: float = 2.0
    warm_steps: int = 10
    cool_after: int = 50
    window: int = 16
    _prompt_length: int | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        low, base, high = self.min_temperature, self.base_temperature, self.max_temperature
        if not all(_number(t) for t in (low, base, high)) or not 0 < low <= base <= high:
            raise ValueError("temperatures must satisfy 0 < min_temperature <= base_temperature "
                             f"<= max_temperature, got {low!r}, {base!r}, {high!r}")
        if not (isinstance(self.warm_steps, int) and isinstance(self.cool_after, int)
                and 0 <= self.warm_steps <= self.cool_after):
            raise ValueError(f"need 0 <= warm_steps <= cool_after, got {self.warm_steps!r}, "
                             f"{self.cool_after!r}")
        if not isinstance(self.window, int) or self.window < 2:
            raise ValueError(f"window must be an int >= 2, got {self.window!r}")

    def reset(self) -> None:
        super().reset()
        self._prompt_length = None

    def base_schedule(self, step: int) -> float:
        if step < self.warm_steps:
            return self.max_temperature
        if step < self.cool_after:
            return self.base_temperature
        return self.min_temperature

    def diversity(self, input_ids: Tensor, step: int) -> Tensor:
        """(batch,) distinct-1 of the last ``window`` generated tokens; 0.5 (neutral) if < 2."""
        recent = input_ids[:, input_ids.shape[1] - min(step, self.window):]
        if recent.shape[1] < 2:
            return torch.full((input_ids.shape[0],), 0.5)
        distinct = [len(set(row.tolist())) for row in recent]
        return torch.tensor(distinct, dtype=torch.float32) / recent.shape[1]

    def temperature(self, input_ids: Tensor, scores: Tensor) -> Tensor:
        if self._prompt_length is None:
            self._prompt_length = input_ids.shape[1]
        step = input_ids.shape[1] - self._prompt_length
        quality = 1 - entropy(scores).float().cpu() / math.log(scores.shape[-1])
        quality_factor = torch.where(quality > 0.8, 0.7, torch.where(quality < 0.3, 1.5, 1.0))
        diversity = self.diversity(input_ids, step)
        diversity_factor = torch.where(diversity < 0.3, 1.2,
                                       torch.where(diversity > 0.7, 0.8, 1.0))
        raw = self.base_schedule(step) * quality_factor * diversity_factor
        return raw.clamp(self.min_temperature, self.max_temperature).to(scores.device)
