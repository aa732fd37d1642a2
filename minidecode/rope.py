"""Rotary position embedding (RoPE; Su et al. 2021, "RoFormer", arXiv:2104.09864).

A key or query vector is cut into pairs (x_i, x_{i + d/2}); pair i is turned by the angle
``position * theta^(-2i/d)``. The score q . k then depends on the two positions only through their
difference, which is what lets a cache move its entries (Context-Reset RoPE, chapter 9): turning a
stored key by ``R(p_new - p_old)`` is the same as having computed it at ``p_new``.

Used by the model (:mod:`minidecode.model`) and the cache (:mod:`minidecode.cache`); it imports
neither.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class Llama3RopeScaling:
    """Llama 3.1's RoPE frequency scaling (Meta, 2024, "The Llama 3 Herd of Models",
    arXiv:2407.21783; transformers' ``rope_type: "llama3"``), which stretches the context a model
    was trained on (``original_max_position_embeddings``) by ``factor``.

    With wavelength lambda_i = 2 pi / theta_i and L = original_max_position_embeddings:

        lambda_i < L / high_freq_factor   ->  theta_i             (high frequencies: unchanged)
        lambda_i > L / low_freq_factor    ->  theta_i / factor    (low frequencies: interpolated)
        otherwise                         ->  (1 - s) theta_i / factor + s theta_i,
                                              s = (L / lambda_i - low_freq_factor)
                                                  / (high_freq_factor - low_freq_factor)
    """

    factor: float
    low_freq_factor: float
    high_freq_factor: float
    original_max_position_embeddings: int

    def __post_init__(self) -> None:
        if not self.factor >= 1 or not 0 < self.low_freq_factor < self.high_freq_factor:
            raise ValueError(f"rope scaling needs factor >= 1 and 0 < low_freq_factor < "
                             f"high_freq_factor, got {self}")
        if self.original_max_position_embeddings < 1:
            raise ValueError(f"original_max_position_embeddings must be >= 1, got "
                             f"{self.original_max_position_embeddings}")

    def scale(self, inv_freq: Tensor) -> Tensor:
        """inv_freq: (head_dim/2,) theta_i -> the scaled frequencies, same shape."""
        context = self.original_max_position_embeddings
        wavelength = 2 * math.pi / inv_freq
        low = inv_freq / self.factor
        smooth = (context / wavelength - self.low_freq_factor) / \
            (self.high_freq_factor - self.low_freq_factor)
        medium = (1 - smooth) * inv_freq / self.factor + smooth * inv_freq
        scaled = torch.where(wavelength > context / self.low_freq_factor, low, medium)
        return torch.where(wavelength < context / self.high_freq_factor, inv_freq, scaled)


def rotary_cos_sin(positions: Tensor, head_dim: int, theta: float, dtype: torch.dtype,
                   scaling: Llama3RopeScaling | None = None) -> tuple[Tensor, Tensor]:
    """cos, sin tables of rotary position embedding (Su et al., 2021, RoFormer, arXiv:2104.09864).

    theta_i = theta^(-2i / head_dim) for i in [0, head_dim/2), rescaled by ``scaling`` if given;
    angle = position * theta_i.
    positions: (...) long or float  ->  cos, sin: (..., head_dim), each half repeated
    ([a_0..a_{d/2-1}, a_0..a_{d/2-1}]), the "rotate_half" layout of transformers' Llama.
    Computed in float32 whatever the model dtype, as transformers does, then cast to ``dtype``.
    """
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32,
                                             device=positions.device) / head_dim))
    if scaling is not None:
        inv_freq = scaling.scale(inv_freq)
    angles = positions[..., None].float() * inv_freq                   # (..., head_dim/2)
    angles = torch.cat((angles, angles), dim=-1)                       # (..., head_dim)
    return angles.cos().to(dtype), angles.sin().to(dtype)


def rotate_half(x: Tensor) -> Tensor:
    """[x1, x2] -> [-x2, x1] on the last dim: pairs dimension i with i + head_dim/2."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """RoPE: x' = x * cos + rotate_half(x) * sin: each pair (x_i, x_{i+d/2}) turned by angle_i.

    x: (..., head_dim); cos, sin broadcastable to x.
    """
    return (x * cos) + (rotate_half(x) * sin)


# ------------------------------------------------------------------------- blocks
