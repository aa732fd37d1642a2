"""SnapKV: the last few queries (an observation window) vote for the entries worth keeping.

Li, Huang, Yang, Venkitesh, Locatelli, Ye, Cai, Lewis, Chen (2024), "SnapKV: LLM Knows What You are
Looking for Before Generation", arXiv:2404.14469. Per KV head, sum the attention that the last
``window`` queries (and the query heads of the group) give each entry, then max-pool over
neighbouring entries so that a kept token keeps its neighbours (a number keeps its digits):

    vote(j)  = sum_{t in window} sum_{h in group} a_h(t, j)
    score(j) = max_{|i - j| <= kernel // 2} vote(i),     the window's own entries: +inf
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from minidecode.cache import KVCache
from minidecode.cache_policies.base import CachePolicy, Observation, per_kv_head


@dataclass
class SnapKV(CachePolicy):
    """window: observation-window queries (>= 1); kernel: odd max-pool width (>= 1)."""

    window: int = 16
    kernel: int = 5
    name: str = "SnapKV"
    needs_attentions: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.window, int) or self.window < 1:
            raise ValueError(f"window must be an int >= 1, got {self.window!r}")
        if not isinstance(self.kernel, int) or self.kernel < 1 or self.kernel % 2 == 0:
            raise ValueError(f"kernel must be an odd int >= 1, got {self.kernel!r}")

    def score(self, model, cache: KVCache, layer: int, observation: Observation) -> Tensor:
        weights = observation.attentions[layer][:, :, -self.window:, :]  # (batch, heads, w, K)
        votes = per_kv_head(weights.sum(dim=2), cache.fingerprint.num_kv_heads)  # (batch, kv, K)
        batch, kv_heads, length = votes.shape
        pooled = F.max_pool1d(votes.reshape(batch * kv_heads, 1, length), self.kernel, stride=1,
                              padding=self.kernel // 2).reshape(batch, kv_heads, length)
        in_window = cache.token_index[layer] >= cache.seen_tokens - weights.shape[2]
        return torch.where(in_window, torch.inf, pooled)
