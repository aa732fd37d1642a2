"""SirLLM: keep the tokens the model found surprising (high token entropy), plus the sinks.

Yao, Li, Zhao (2024), "SirLLM: Streaming Infinite Retentive LLM", ACL 2024, arXiv:2405.12528.
A token's "entropy" there is its negative log-likelihood, -log p(x_j | context): a predictable
token ("the", a repeated name) carries little information, a surprising one (a number, a new
name) carries much. The start tokens and a recent window are always kept:

    score(j) = -log p(x_j | x_<j),     sinks and the n_recent newest: +inf

Where this departs from the paper's code: SirLLM multiplies the stored scores by a decay ratio
(<= 1) after each round of dialogue, so that old surprising tokens gradually give way to new ones;
this version omits the decay (a ratio of 1) and scores each entry by the NLL it had when read.
NVIDIA kvpress has no SirLLM press to compare with.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from minidecode.cache import KVCache
from minidecode.cache_policies.base import CachePolicy, Observation, recent_and_sinks


@dataclass
class SirLLM(CachePolicy):
    """Token NLL with ``n_sinks`` start tokens and ``n_recent`` newest tokens always kept."""

    n_sinks: int = 4
    n_recent: int = 32
    name: str = "SirLLM"

    def __post_init__(self) -> None:
        for name in ("n_sinks", "n_recent"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an int >= 0, got {value!r}")

    def score(self, model, cache: KVCache, layer: int, observation: Observation) -> Tensor:
        token_index = cache.token_index[layer]                           # (batch, kv, length)
        batch, kv_heads, length = token_index.shape
        nll = observation.token_nll[:, None, :].expand(batch, kv_heads, -1)
        scores = nll.gather(-1, token_index)
        always = recent_and_sinks(token_index, cache.seen_tokens, self.n_sinks, self.n_recent)
        return torch.where(always, torch.inf, scores)
