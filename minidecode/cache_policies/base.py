"""What every cache policy shares: an observation of the cache, a score per entry, and the pruning.

A cache policy answers one question: *which cached entries are worth keeping?* It looks at the
cache and at what the model just computed (an :class:`Observation`), returns one score per cached
entry and KV head, and the shared :meth:`CachePolicy.compress` keeps the ``keep`` highest-scoring
entries of every (layer, KV head). A new method is therefore one small ``score`` function (the
layout follows NVIDIA kvpress, where each "press" is one file).

Scores: ``(batch, kv_heads, length)`` per layer, higher = keep. ``+inf`` marks entries a policy
always keeps (sinks, the recent window). Entries are kept in stream order (sorted by
``cache.token_index``), so the cache still reads left to right after a compression.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor

from minidecode.cache import KVCache


@dataclass
class Observation:
    """What the model computed on the chunk it just read, handed to the policy.

    attentions: {layer: (batch, heads, chunk, length)} softmax weights of the chunk's queries over
        every entry of that layer (cached ones first, then the chunk's own), if the policy asked for
        them (``needs_attentions``);
    token_nll: (batch, tokens_read) negative log-likelihood of every token of the stream so far,
        -log p(x_t | what the cache held when x_t was read); the first token gets 0 (nothing
        predicted it).
    """

    attentions: dict[int, Tensor] = field(default_factory=dict)
    token_nll: Tensor | None = None


class CachePolicy:
    """Base class: subclasses implement ``score``; ``compress`` keeps the top entries.

    Class attributes a subclass may set:

    - ``needs_attentions``: the reader must run the model with ``output_attentions`` (slower; the
      explicit softmax path) and pass the weights in the observation;
    - ``reserve``: cache entries the policy needs *temporarily* while compressing (InfiniPot's
      catalyst prompt), so the reader compresses early enough to stay within the pot.
    """

    needs_attentions: bool = False
    reserve: int = 0
    peak_entries: int = 0  # the largest cache length seen during the last compression

    def reset(self) -> None:
        """Forget any state from a previous document (called once before reading)."""

    def observe(self, cache: KVCache, observation: Observation) -> None:
        """Called after every chunk is read; stateful policies (H2O) accumulate here."""

    def score(self, model, cache: KVCache, layer: int, observation: Observation) -> Tensor:
        """(batch, kv_heads, length) scores for the entries of ``layer``; higher = keep."""
        raise NotImplementedError

    def prepare(self, model, cache: KVCache, keep: int, observation: Observation) -> None:
        """Called once before the layers are scored (InfiniPot runs its catalyst prompt here)."""
        self.peak_entries = cache.length

    def compress(self, model, cache: KVCache, keep: int, observation: Observation) -> None:
        """Keep the ``keep`` best entries of every layer and KV head (all, if fewer)."""
        self.prepare(model, cache, keep, observation)
        for layer in range(cache.num_layers):
            length = cache.layer_length(layer)
            if length <= keep:
                continue
            scores = self.score(model, cache, layer, observation)       # (batch, kv, length)
            if tuple(scores.shape) != tuple(cache.token_index[layer].shape):
                raise RuntimeError(f"{type(self).__name__}.score returned shape "
                                   f"{tuple(scores.shape)} for layer {layer}, expected "
                                   f"{tuple(cache.token_index[layer].shape)}")
            indices = top_entries(scores, cache.token_index[layer], keep)
            self.on_keep(layer, indices)
            cache.keep(layer, indices)

    def on_keep(self, layer: int, indices: Tensor) -> None:
        """Called with the kept indices of ``layer`` before the cache drops the rest."""


def top_entries(scores: Tensor, token_index: Tensor, keep: int) -> Tensor:
    """Indices of the ``keep`` highest ``scores`` per (batch, head), in stream order.

    scores, token_index: (batch, kv_heads, length); returns (batch, kv_heads, keep) long.
    Equal scores are broken towards the more recent token (a deterministic, documented choice):
    entries are first ordered newest first, then stably sorted by score.
    """
    newest_first = token_index.argsort(dim=-1, descending=True)         # (batch, kv, length)
    by_score = scores.gather(-1, newest_first).argsort(dim=-1, descending=True, stable=True)
    chosen = newest_first.gather(-1, by_score[..., :keep])              # (batch, kv, keep)
    in_stream_order = token_index.gather(-1, chosen).argsort(dim=-1)
    return chosen.gather(-1, in_stream_order)


def recent_and_sinks(token_index: Tensor, tokens_read: int, n_sinks: int, n_recent: int) -> Tensor:
    """Bool (batch, kv_heads, length): the first ``n_sinks`` and the last ``n_recent`` tokens."""
    return (token_index < n_sinks) | (token_index >= tokens_read - n_recent)


def per_kv_head(weights: Tensor, num_kv_heads: int) -> Tensor:
    """Sum attention over the query heads that share a KV head: (batch, heads, ...) ->
    (batch, kv_heads, ...). Query head h reads KV head h // (heads / kv_heads)."""
    batch, heads = weights.shape[:2]
    return weights.reshape(batch, num_kv_heads, heads // num_kv_heads, *weights.shape[2:]).sum(2)
