"""SnapKV: the last few queries (an observation window) vote for the entries worth keeping.

Li, Huang, Yang, Venkitesh, Locatelli, Ye, Cai, Lewis, Chen (2024), "SnapKV: LLM Knows What You are
Looking for Before Generation", NeurIPS 2024, arXiv:2404.14469. Per KV head, sum the attention
that the last ``window`` queries (and the query heads of the group) give each entry before the
window, then average-pool over neighbouring entries so that a kept token keeps its neighbours (a
number keeps its digits):

    vote(j)  = sum_{t in window} sum_{h in group} a_h(t, j),     j before the window
    score(j) = (1 / kernel) sum_{|i - j| <= kernel // 2} vote(i), vote = 0 past either end
    score(j) = +inf                                               j in the window

This is the paper's code (``F.avg_pool1d`` with ``padding=kernel // 2``, which counts the padding:
an edge entry's score is divided by ``kernel`` too) and NVIDIA kvpress's ``SnapKVPress``; the
paper's code also offers max-pooling, here ``pooling="max"``:
score(j) = max_{|i - j| <= kernel // 2} vote(i).

Where this departs from them:

- kvpress averages over the window's queries and the group's query heads where we sum: a constant
  factor, so the same entries are kept. The paper's code selects per query head, without GQA.
- They compress once, after the prompt, with the prompt's last queries as the window. The reader
  (:mod:`minidecode.infinipot`) compresses at every distillation with the last chunk's last
  queries, and the neighbours that the pooling reads are neighbours *in the cache*, which after
  earlier distillations may be tokens far apart in the document.
- Defaults: ``window=16`` (kvpress: 64), because the reader's chunks are short and the course's
  model reads 512 positions; ``kernel=5`` as in both.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from minidecode.cache import KVCache
from minidecode.cache_policies.base import CachePolicy, Observation, per_kv_head

POOLINGS = ("avg", "max")


def pool_votes(votes: Tensor, kernel: int, pooling: str = "avg") -> Tensor:
    """Pool (batch, kv_heads, length) votes over ``kernel`` neighbours, stride 1, zero padding of
    ``kernel // 2`` each side (counted in the average); returns the same shape."""
    batch, kv_heads, length = votes.shape
    flat = votes.reshape(batch * kv_heads, 1, length)                     # (batch * kv, 1, L)
    pool = F.avg_pool1d if pooling == "avg" else F.max_pool1d
    return pool(flat, kernel, stride=1, padding=kernel // 2).reshape(batch, kv_heads, length)


@dataclass
class SnapKV(CachePolicy):
    """window: observation-window queries (>= 1); kernel: odd pooling width (>= 1);
    pooling: "avg" (default, the paper's code and kvpress) or "max"."""

    window: int = 16
    kernel: int = 5
    pooling: str = "avg"
    name: str = "SnapKV"
    needs_attentions: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.window, int) or self.window < 1:
            raise ValueError(f"window must be an int >= 1, got {self.window!r}")
        if not isinstance(self.kernel, int) or self.kernel < 1 or self.kernel % 2 == 0:
            raise ValueError(f"kernel must be an odd int >= 1, got {self.kernel!r}")
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {self.pooling!r}")

    def score(self, model, cache: KVCache, layer: int, observation: Observation) -> Tensor:
        """Pooled votes of the entries before the window, +inf for the window's own entries (the
        cache's last ``w`` entries: the chunk just read is appended last, in stream order)."""
        weights = observation.attentions[layer][:, :, -self.window:, :]  # (batch, heads, w, K)
        w = weights.shape[2]
        votes = per_kv_head(weights.sum(dim=2), cache.fingerprint.num_kv_heads)  # (batch, kv, K)
        before = votes[..., :votes.shape[-1] - w]                        # (batch, kv, K - w)
        if before.shape[-1] > 0:
            before = pool_votes(before, self.kernel, self.pooling)
        return F.pad(before, (0, w), value=torch.inf)                    # (batch, kv, K)
