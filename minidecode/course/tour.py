"""Chapter 00, the tour: softmax with temperature, the one formula every later chapter bends.

A language model's last layer gives one score (a *logit*) per vocabulary entry. Decoding turns
those scores into a probability distribution and picks a token from it. Temperature ``T`` divides
the logits before the softmax:

    p_i = exp(z_i / T) / sum_j exp(z_j / T)

``T < 1`` sharpens the distribution towards the top token (``T -> 0`` is greedy decoding), ``T > 1``
flattens it towards uniform. Ackley, Hinton and Sejnowski (1985) named it after the Boltzmann
distribution; Hinton, Vinyals and Dean (2015, arXiv:1503.02531) made it familiar in deep learning.
"""

from __future__ import annotations

import math
from numbers import Real

import torch

__all__ = ["entropy_bits", "softmax_with_temperature"]


def softmax_with_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Probabilities ``softmax(logits / temperature)`` over the last dimension.

    Numerically stable: the maximum logit is subtracted before ``exp``, which leaves the result
    unchanged (the factor ``exp(-max / T)`` cancels between numerator and denominator) but keeps
    ``exp`` from overflowing on logits such as ``[1000.0, 0.0]``.

    Args:
        logits: ``(..., vocab)`` floating-point scores.
        temperature: a finite number > 0.

    Returns:
        ``(..., vocab)`` probabilities, same dtype as ``logits``, each row summing to 1.

    Example:
        >>> softmax_with_temperature(torch.tensor([2.0, 1.0, 0.0]), 0.5)
        tensor([0.8668, 0.1173, 0.0159])
    """
    is_number = isinstance(temperature, Real) and not isinstance(temperature, bool)
    if not is_number or not math.isfinite(temperature) or temperature <= 0:
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
    scaled = logits / temperature
    shifted = scaled - scaled.max(dim=-1, keepdim=True).values
    weights = torch.exp(shifted)
    return weights / weights.sum(dim=-1, keepdim=True)


def entropy_bits(probs: torch.Tensor) -> torch.Tensor:
    """Shannon entropy ``H = -sum_i p_i log2 p_i`` of ``probs: (..., vocab)``, in bits.

    Zero-probability entries contribute nothing (the limit of ``p log p`` as ``p -> 0``).
    """
    safe_log = torch.log2(torch.where(probs > 0, probs, torch.ones_like(probs)))
    return -(probs * safe_log).sum(dim=-1)
