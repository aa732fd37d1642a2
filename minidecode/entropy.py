"""Entropy and varentropy of a next-token distribution, computed once, stably, for every processor.

For logits ``z`` (batch, vocab) with ``p = softmax(z)`` and surprisal ``s_i = -log p_i``:

    entropy     H = sum_i p_i s_i                    (nats; the mean surprisal)
    varentropy  V = sum_i p_i (s_i - H)^2            (nats^2; the variance of the surprisal)

Entropy says how spread the distribution is; varentropy says how *uneven* that spread is: a few
strong candidates and a long tail (high V) or many equally likely ones (low V). entropix (Xjdr and
Doomslide, 2024) uses the pair to choose a sampling strategy; EDT, llama.cpp's dynamic temperature,
eta sampling and typical sampling use H alone.

Why a shared helper: the textbook ``-sum(p * log(p + 1e-10))`` has two bugs that bite in practice.
In float16 the ``1e-10`` rounds to 0, so a token masked to ``-inf`` gives ``0 * log(0) = 0 * -inf
= nan``; and the ``+1e-10`` biases every term. Here ``log_softmax`` gives ``log p`` exactly
(``-inf`` for masked tokens), the products are taken only where ``p > 0`` (the limit of
``p log p`` as ``p -> 0`` is 0), and the arithmetic is float32 whatever the input dtype.
"""

from __future__ import annotations

import torch
from torch import Tensor

from minidecode.kernels import dispatch

__all__ = ["check_scores", "entropy", "entropy_varentropy", "varentropy"]


def check_scores(scores: Tensor, name: str = "scores") -> None:
    """Raise ``ValueError`` unless ``scores`` (..., vocab) is a float tensor a softmax can read.

    NaN anywhere, or a row whose logits are all ``-inf`` (nothing left to sample), is an error.
    """
    if not isinstance(scores, Tensor) or not scores.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor (..., vocab), got "
                         f"{getattr(scores, 'dtype', type(scores).__name__)}")
    if scores.dim() == 0 or scores.shape[-1] == 0:
        raise ValueError(f"{name} must have a non-empty last (vocab) dimension, got shape "
                         f"{tuple(scores.shape)}")
    if torch.isnan(scores).any():
        raise ValueError(f"{name} contains NaN: logits must be finite numbers or -inf "
                         "(the model or an earlier processor produced NaN)")
    if (scores == float("-inf")).all(dim=-1).any():
        raise ValueError(f"{name} has a row whose logits are all -inf: at least one token must "
                         "keep a finite logit")


def entropy_varentropy(scores: Tensor) -> tuple[Tensor, Tensor]:
    """Entropy H and varentropy V (in nats) of ``softmax(scores)`` over the last dimension.

    Args:
        scores: logits (..., vocab), float16/bfloat16/float32/float64; ``-inf`` marks removed
            tokens.

    Returns:
        ``(entropy, varentropy)``, each of shape (...), float32 (float64 for float64 input).

    float32 scores on a CUDA device with CuPy installed go through chapter 10's one-pass kernel
    (:mod:`minidecode.kernels.softmax_entropy`): the same numbers within float32 rounding.

    Example:
        >>> entropy_varentropy(torch.tensor([0.0, 0.0, float("-inf")]))
        (tensor(0.6931), tensor(0.))
    """
    on_gpu = dispatch.entropy_varentropy(scores)  # chapter 10's one-pass kernel, on CUDA only
    if on_gpu is not None:
        return on_gpu
    work_dtype = torch.float64 if scores.dtype == torch.float64 else torch.float32
    log_probs = torch.log_softmax(scores.to(work_dtype), dim=-1)
    probs = log_probs.exp()
    present = probs > 0
    surprisal = torch.where(present, -log_probs, torch.zeros_like(log_probs))
    entropy_ = (probs * surprisal).sum(dim=-1)
    deviation = torch.where(present, surprisal - entropy_.unsqueeze(-1), torch.zeros_like(probs))
    varentropy_ = (probs * deviation.square()).sum(dim=-1)
    return entropy_, varentropy_


def entropy(scores: Tensor) -> Tensor:
    """Entropy ``H = -sum_i p_i log p_i`` (nats) of ``softmax(scores)``.

    See :func:`entropy_varentropy`.
    """
    return entropy_varentropy(scores)[0]


def varentropy(scores: Tensor) -> Tensor:
    """Varentropy ``sum_i p_i (log p_i + H)^2`` (nats^2); see :func:`entropy_varentropy`."""
    return entropy_varentropy(scores)[1]
