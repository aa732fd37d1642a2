"""StreamingLLM: keep the attention sinks and a window of the most recent tokens.

Xiao, Tian, Chen, Han, Lewis (2024), "Efficient Streaming Language Models with Attention Sinks",
ICLR 2024, arXiv:2309.17453. The first few tokens receive a large share of attention whatever they
say (they act as a "sink" for attention mass the softmax must put somewhere); dropping them breaks
the model, keeping them plus a recent window keeps it fluent. Nothing in the middle survives:

    score(entry) = +inf                if token_index < n_sinks
                 = token_index         otherwise (newer = better)

It keeps the same entries as the paper's code and NVIDIA kvpress's ``StreamingLLMPress``. The paper
also gives the kept entries positions *within the cache* rather than in the text; the reader's
Context-Reset RoPE (:func:`minidecode.infinipot.reset_positions`) does that, where kvpress needs
its ``KeyRerotationPress`` wrapper.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from minidecode.cache import KVCache
from minidecode.cache_policies.base import CachePolicy, Observation


@dataclass
class StreamingLLM(CachePolicy):
    """Sinks + recency. n_sinks: tokens at the start of the stream that are always kept (>= 0)."""

    n_sinks: int = 4
    name: str = "StreamingLLM"

    def __post_init__(self) -> None:
        if not isinstance(self.n_sinks, int) or self.n_sinks < 0:
            raise ValueError(f"n_sinks must be an int >= 0, got {self.n_sinks!r}")

    def score(self, model, cache: KVCache, layer: int, observation: Observation) -> Tensor:
        token_index = cache.token_index[layer]                            # (batch, kv, length)
        scores = token_index.float()
        return torch.where(token_index < self.n_sinks, torch.inf, scores)
