"""Rotary position embedding (RoPE; Su et al. 2021, "RoFormer", arXiv:2104.09864).

A key or query vector is cut into pairs (x_i, x_{i + d/2}); pair i is turned by the angle
``position * theta^(-2i/d)``. The score q . k then depends on the two positions only through their
difference, which is what lets a cache move its entries (Context-Reset RoPE, chapter 9): turning a
stored key by ``R(p_new - p_old)`` is the same as having computed it at ``p_new``.

Used by the model (:mod:`minidecode.model`) and the cache (:mod:`minidecode.cache`); it imports
neither.
"""

from __future__ import annotations

import torch
from torch import Tensor


def rotary_cos_sin(positions: Tensor, head_dim: int, theta: float, dtype: torch.dtype
                   ) -> tuple[Tensor, Tensor]:
    """cos, sin tables of rotary position embedding (Su et al., 2021, RoFormer, arXiv:2104.09864).

    theta_i = theta^(-2i / head_dim) for i in [0, head_dim/2); angle = position * theta_i.
    positions: (...) long or float  ->  cos, sin: (..., head_dim), each half repeated
    ([a_0..a_{d/2-1}, a_0..a_{d/2-1}]), the "rotate_half" layout of transformers' Llama.
    Computed in float32 whatever the model dtype, as transformers does, then cast to ``dtype``.
    """
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32,
                                             device=positions.device) / head_dim))
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
