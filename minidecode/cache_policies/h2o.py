"""H2O (Heavy-Hitter Oracle): keep the entries that have received the most attention so far.

Zhang, Sheng, Zhou, Chen, Zheng, Cai, Song, Tian, Re, Barrett, Wang, Chen (2023), "H2O:
Heavy-Hitter Oracle for Efficient Generative Inference of Large Language Models", NeurIPS 2023,
arXiv:2306.14048. For every KV head and cached entry j, accumulate the attention it received from
every query that has read it (summed over the query heads sharing the KV head):

    score(j) = sum_{queries t >= j} sum_{h in group} a_h(t, j),   the n_recent newest: +inf

Old entries have been read by more queries, so the score favours them; the recent window is what
stops the policy from dropping the tokens the next words depend on.

Where this departs from the paper's code and from NVIDIA kvpress:

- The paper evicts one entry per generated token, with a budget split between heavy hitters and
  recent tokens; here the reader drops many entries at each distillation, and the recent window
  is a fixed ``n_recent`` tokens.
- kvpress's closest press, ``ObservedAttentionPress``, divides each entry's sum by the number of
  queries that could read it (its *average* attention), averages over the group's query heads,
  has no recent window, and sees only the prompt's queries. Dividing removes the bias towards old
  entries, so the two keep different sets, the more so the harder the compression (on the
  course's model, Jaccard 0.84 keeping 3/4 of the entries, 0.53 keeping 1/4;
  ``benchmarks/RESULTS.md``, "Chapter 9: parity with kvpress").
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from minidecode.cache import KVCache
from minidecode.cache_policies.base import CachePolicy, Observation, per_kv_head


@dataclass
class H2O(CachePolicy):
    """Accumulated attention + a recent window of ``n_recent`` tokens (>= 0)."""

    n_recent: int = 32
    name: str = "H2O"
    needs_attentions: bool = True
    _accumulated: dict[int, Tensor] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.n_recent, int) or self.n_recent < 0:
            raise ValueError(f"n_recent must be an int >= 0, got {self.n_recent!r}")

    def reset(self) -> None:
        self._accumulated = {}

    def observe(self, cache: KVCache, observation: Observation) -> None:
        for layer, weights in observation.attentions.items():            # (batch, heads, q, K)
            received = per_kv_head(weights.sum(dim=2), cache.fingerprint.num_kv_heads)
            old = self._accumulated.get(layer)                           # (batch, kv, K - q)
            if old is not None:
                received = received + F.pad(old, (0, received.shape[-1] - old.shape[-1]))
            self._accumulated[layer] = received                          # (batch, kv, K)

    def on_keep(self, layer: int, indices: Tensor) -> None:
        self._accumulated[layer] = self._accumulated[layer].gather(-1, indices)

    def score(self, model, cache: KVCache, layer: int, observation: Observation) -> Tensor:
        token_index = cache.token_index[layer]
        recent = token_index >= cache.seen_tokens - self.n_recent
        return torch.where(recent, torch.inf, self._accumulated[layer])
