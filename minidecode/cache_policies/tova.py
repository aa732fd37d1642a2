"""TOVA (Token Omission Via Attention): keep what the newest query attends to, averaged over heads.

Oren, Hassid, Yarden, Adi, Schwartz (2024), "Transformers are Multi-State RNNs", arXiv:2401.06104.
At each compression, the attention of the most recent token t, averaged over all query heads of the
layer, scores every entry; one choice per layer (all KV heads keep the same tokens):

    score(j) = (1 / H) sum_h a_h(t, j)

Where this departs from the paper's code: TOVA evicts *one* entry per generated token, the one
with the lowest score, as soon as the cache exceeds its budget. Here the reader drops everything
above the budget at once, at each distillation of the pot, with the scores of the chunk's last
query. That is also what NVIDIA kvpress's ``TOVAPress`` does after the prompt, except that it
always keeps the last token, which the paper's TOVA and this one keep only if its score earns it
(nearly always on the course's model: ``benchmarks/RESULTS.md``, "Chapter 9: parity with kvpress").
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from minidecode.cache import KVCache
from minidecode.cache_policies.base import CachePolicy, Observation


@dataclass
class TOVA(CachePolicy):
    """The last query's attention, averaged over heads, the same for every KV head of a layer."""

    name: str = "TOVA"
    needs_attentions: bool = True

    def score(self, model, cache: KVCache, layer: int, observation: Observation) -> Tensor:
        last_query = observation.attentions[layer][:, :, -1, :]          # (batch, heads, K)
        averaged = last_query.mean(dim=1, keepdim=True)                  # (batch, 1, K)
        return averaged.expand_as(cache.token_index[layer]).contiguous()
