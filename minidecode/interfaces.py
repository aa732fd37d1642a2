"""The interfaces where the parts of minidecode meet, in one place.

- a **language model** maps token ids plus a cache to logits (:class:`LanguageModel`), returning a
  :class:`ModelOutput`;
- a **cache** remembers how many tokens it has consumed and can forget the tail
  (:class:`Cache`: speculative decoding's rollback);
- a **logits processor** maps ``(input_ids, scores) -> scores`` (:data:`LogitsProcessor`), the
  convention of transformers' ``LogitsProcessor``; one that remembers what it saw declares it
  (:class:`StatefulProcessor`), so that a loop which takes tokens back can tell it;
- an **attention pattern** says which keys each head may attend to (:class:`AttentionPattern`).

minidecode's own :class:`~minidecode.model.Transformer` with :class:`~minidecode.cache.KVCache`
satisfies the first two directly; :class:`~minidecode.hf_adapter.HFModel` makes any transformers
causal LM satisfy them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from torch import Tensor

LogitsProcessor = Callable[[Tensor, Tensor], Tensor]
"""``processor(input_ids (batch, t) long, scores (batch, vocab) float) -> scores``."""


@dataclass
class ModelOutput:
    """logits: (batch, seq, vocab); cache: the (updated) cache or None;
    attentions: {layer: (batch, heads, q, k) softmax weights} for the requested layers."""

    logits: Tensor
    cache: Any = None
    attentions: dict[int, Tensor] = field(default_factory=dict)


@runtime_checkable
class Cache(Protocol):
    """What decoding loops may do with any cache."""

    seen_tokens: int

    def crop(self, length: int) -> None: ...

    def __len__(self) -> int: ...


@runtime_checkable
class LanguageModel(Protocol):
    """Token ids plus a cache in, logits and the updated cache out.

    ``input_ids``: (batch, seq) long, the tokens *not yet* in the cache. The model appends them to
    the cache in place and returns logits for each of them.
    """

    @property
    def vocab_size(self) -> int: ...

    def new_cache(self) -> Any: ...

    def __call__(self, input_ids: Tensor, cache: Any = None) -> ModelOutput: ...


@runtime_checkable
class StatefulProcessor(Protocol):
    """A logits processor that remembers what it has seen (a counter, a history of entropies).

    ``stateful = True`` says so. ``state()`` returns a snapshot and ``restore(snapshot)`` puts it
    back; ``reset()`` forgets everything. A loop that calls the processor on tokens it may later
    reject (speculative decoding's drafts) snapshots before and restores after a rejection, so the
    processor ends as if it had seen only the kept tokens.
    """

    stateful: bool

    def __call__(self, input_ids: Tensor, scores: Tensor) -> Tensor: ...

    def state(self) -> Any: ...

    def restore(self, snapshot: Any) -> None: ...

    def reset(self) -> None: ...


def is_stateful(processor: Any) -> bool:
    """True when ``processor`` declares state (``stateful = True``)."""
    return bool(getattr(processor, "stateful", False))


class AttentionPattern(Protocol):
    """Per-head attention mask provider (the hook; concrete patterns come in a later chapter).

    Called once per layer as ``pattern(layer, q_positions, k_positions)`` with
    q_positions: (batch, heads, q) and k_positions: (batch, heads, k) long RoPE positions (KV-head
    positions repeated for the query heads that share them). Returns a bool tensor broadcastable to
    (batch, heads, q, k), True = may attend. It is AND-ed with the causal rule of ``KVCache``; every
    query must keep at least one key, or its softmax is undefined (NaN).
    """

    def __call__(self, layer: int, q_positions: Tensor, k_positions: Tensor) -> Tensor: ...
