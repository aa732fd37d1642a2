"""Give an attention-scoring policy the question before it compresses: the "question known" setting.

A streaming reader compresses long before the question arrives, so a policy that scores entries
by the attention of the *latest* queries (SnapKV's observation window, TOVA's last token, H2O's
accumulated attention) scores them for the text just read, not for the question. InfiniPot can
be handed the question as its catalyst prompt; to compare on equal terms, every other policy must
be able to read it too. ``QuestionProbe`` does this the way CaP does: at every compression it runs
the question over the cached context as a probe, hands the probe's attention to the wrapped policy
as its observation, and removes the probe's entries again.

    observation.attentions[l] = softmax attention of the question's queries over the L cached
                                entries (the probe's attention to itself is dropped)

So SnapKV's observation window is the question's last ``window`` tokens, TOVA scores with the
question's last token, and H2O adds the question's attention to what it has accumulated. Use it
only to measure what knowing the question is worth: in a real stream the question is not known.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from minidecode.cache import KVCache
from minidecode.cache_policies.base import CachePolicy, Observation


@dataclass
class QuestionProbe(CachePolicy):
    """policy: an attention-scoring policy (``needs_attentions``); question_ids: the question's
    token ids (1-d, non-empty), run over the cache before every compression."""

    policy: CachePolicy
    question_ids: list[int]
    _probe: Observation | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.policy, CachePolicy) or not self.policy.needs_attentions:
            raise ValueError("policy must be a CachePolicy that scores with attention weights "
                             f"(needs_attentions), got {type(self.policy).__name__}")
        if len(self.question_ids) == 0:
            raise ValueError("question_ids must hold at least one token")
        self.name = f"{getattr(self.policy, 'name', type(self.policy).__name__)} + question"

    @property
    def needs_attentions(self) -> bool:  # the wrapped policy may also observe every chunk (H2O)
        return self.policy.needs_attentions

    @property
    def reserve(self) -> int:
        return len(self.question_ids)

    def reset(self) -> None:
        self.policy.reset()

    def observe(self, cache: KVCache, observation: Observation) -> None:
        self.policy.observe(cache, observation)

    @torch.no_grad()
    def prepare(self, model, cache: KVCache, keep: int, observation: Observation) -> None:
        """Run the question over the cache, keep its attention over the context, remove it."""
        length = cache.length
        question = torch.tensor([self.question_ids], device=cache.keys[0].device)
        out = model(question.expand(cache.batch_size, -1), cache=cache, output_attentions=True)
        self.peak_entries = cache.length
        cache.crop(length)                                               # the probe leaves no trace
        attentions = {layer: w[..., :length] for layer, w in out.attentions.items()}  # (B, H, q, L)
        self._probe = Observation(attentions=attentions, token_nll=observation.token_nll)
        self.policy.observe(cache, self._probe)       # H2O: the question's votes join its sums
        self.policy.prepare(model, cache, keep, self._probe)
        self.peak_entries = max(self.peak_entries, self.policy.peak_entries)

    def score(self, model, cache: KVCache, layer: int, observation: Observation) -> Tensor:
        return self.policy.score(model, cache, layer, self._probe)

    def on_keep(self, layer: int, indices: Tensor) -> None:
        self.policy.on_keep(layer, indices)
