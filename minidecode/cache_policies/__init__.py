"""Cache policies: which KV-cache entries to keep when the cache must shrink (chapter 09).

One policy a file, each a small class whose ``score`` rates every cached entry (see ``base.py``):

- :class:`StreamingLLM`: attention sinks + the most recent tokens (Xiao et al. 2024);
- :class:`H2O`: accumulated attention, "heavy hitters", + recent (Zhang et al. 2023);
- :class:`TOVA`: the newest query's attention averaged over heads (Oren et al. 2024);
- :class:`SnapKV`: an observation window of the last queries votes, pooled (Li et al. 2024);
- :class:`SirLLM`: token negative log-likelihood ("token entropy") + sinks (Yao et al. 2024);
- :class:`InfiniPot`: catalyst-prompt attention (CaP) + novelty under compression (NuC)
  (Kim et al. 2024);
- :class:`QuestionProbe`: any attention-scoring policy above, handed the question before it
  compresses (the "question known" comparison).

The reader that streams a long document through a policy is :mod:`minidecode.infinipot`.
"""

from minidecode.cache_policies.base import CachePolicy, Observation, top_entries
from minidecode.cache_policies.cap_nuc import InfiniPot
from minidecode.cache_policies.h2o import H2O
from minidecode.cache_policies.question_probe import QuestionProbe
from minidecode.cache_policies.sirllm import SirLLM
from minidecode.cache_policies.snapkv import SnapKV
from minidecode.cache_policies.streaming_llm import StreamingLLM
from minidecode.cache_policies.tova import TOVA

__all__ = ["H2O", "TOVA", "CachePolicy", "InfiniPot", "Observation", "QuestionProbe", "SirLLM",
           "SnapKV", "StreamingLLM", "top_entries"]
