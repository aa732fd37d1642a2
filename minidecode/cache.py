"""An explicit key/value cache that the reader can inspect and later code can edit.

During decoding every layer's attention needs the keys and values of all earlier tokens. Instead of
recomputing them, the model appends each new token's key and value to this cache. The course's
techniques then *edit* the cache:

- speculative decoding rolls it back after rejected draft tokens: ``crop(length)``;
- compression methods (InfiniPot, SnapKV, ...) keep a different subset of entries in every layer
  and every KV head: ``keep(layer, indices)``;
- Context-Reset RoPE gives the kept entries new, smaller positions:
  ``set_positions(layer, positions)``.

Layout, per layer ``l``::

    keys[l]:      (batch, kv_heads, length, head_dim)   rotated by RoPE at positions[l]
    values[l]:    (batch, kv_heads, length, head_dim)
    positions[l]: (batch, kv_heads, length) long        the RoPE position of every entry
    token_index[l]: (batch, kv_heads, length) long      which token of the stream the entry holds

``token_index`` counts every token ever fed (0, 1, 2, ...); it never changes once written, so after
a compression or a position reset it still says which token each kept entry came from (the cache
policies of chapter 9 read it for recency and per-token scores; the playground highlights it).

Keys are stored *after* rotation (as in transformers' ``DynamicCache``). The alternative, storing
them before rotation and rotating the whole cache at every attention call, makes position edits free
but costs a rotation of every cached key at every decoding step, in every layer: O(length) extra
work per token for an event (a position edit) that happens once per compression. Because RoPE
rotations compose, R(p_new) k = R(p_new - p_old) R(p_old) k, ``set_positions`` re-rotates the stored
keys by the position *delta* instead; in float32 this is exact to ~1e-7 relative error. (Repeated
edits of a bfloat16 cache accumulate rounding, one bf16 rounding per edit.)

Visibility rule. Entries may be dropped per head, so the i-th cached entry of head 0 and of head 1
can be different tokens; a causal mask built from indices would be meaningless. The rule is
therefore: **every cached entry is visible to every new query, and inside the chunk of new tokens
the order is causal**. This holds as long as the cache only holds tokens from the past, which is
what append, crop and keep guarantee. Positions matter only to RoPE (and to attention patterns,
which receive them). Since attention is a softmax over a set, the order of entries inside the
cache does not matter either, except to ``crop``, which keeps the first ``length`` entries.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from minidecode.rope import Llama3RopeScaling, apply_rotary, rotary_cos_sin


@dataclass(frozen=True)
class CacheFingerprint:
    """What a cache must match to be used with a model: shapes, RoPE frequencies (theta and any
    scaling: ``set_positions`` rotates with them) and an id of the model's config."""

    num_layers: int
    num_kv_heads: int
    head_dim: int
    rope_theta: float
    config_id: str
    rope_scaling: Llama3RopeScaling | None = None


class KVCache:
    """Per-layer keys, values and positions of every cached token.

    Build one with ``model.new_cache()``; the model appends to it in place during ``forward``.

    Counters (updated by ``append`` on layer 0, by ``crop`` and by ``set_positions``):

    - ``seen_tokens``: how many tokens were fed through the model (compression does not lower it;
      a rollback does);
    - ``next_position``: the RoPE position the next token gets by default, 1 + the largest cached
      position (a ``keep`` that drops the newest entries does not lower it).
    """

    def __init__(self, fingerprint: CacheFingerprint):
        self.fingerprint = fingerprint
        n = fingerprint.num_layers
        self.keys: list[Tensor | None] = [None] * n
        self.values: list[Tensor | None] = [None] * n
        self.positions: list[Tensor | None] = [None] * n
        self.token_index: list[Tensor | None] = [None] * n
        self.seen_tokens = 0
        self.next_position = 0

    # ---------------------------------------------------------------- inspection
    @property
    def num_layers(self) -> int:
        return self.fingerprint.num_layers

    @property
    def batch_size(self) -> int | None:
        """Batch size of the cached tensors, None while the cache is empty."""
        return None if self.keys[0] is None else self.keys[0].shape[0]

    def layer_length(self, layer: int) -> int:
        """Number of cached entries per KV head in ``layer`` (layers may differ after ``keep``)."""
        self._check_layer(layer)
        keys = self.keys[layer]
        return 0 if keys is None else keys.shape[2]

    @property
    def length(self) -> int:
        """Number of cached entries per KV head in layer 0."""
        return self.layer_length(0)

    def __len__(self) -> int:
        return self.length

    def nbytes(self) -> int:
        """Bytes held by keys and values (what a KV cache costs; positions are not counted)."""
        total = 0
        for tensors in (self.keys, self.values):
            total += sum(t.numel() * t.element_size() for t in tensors if t is not None)
        return total

    def clone(self) -> KVCache:
        """A deep copy: editing the copy leaves this cache untouched."""
        other = KVCache(self.fingerprint)
        other.keys = [None if t is None else t.clone() for t in self.keys]
        other.values = [None if t is None else t.clone() for t in self.values]
        other.positions = [None if t is None else t.clone() for t in self.positions]
        other.token_index = [None if t is None else t.clone() for t in self.token_index]
        other.seen_tokens = self.seen_tokens
        other.next_position = self.next_position
        return other

    def repeat_batch(self, times: int) -> KVCache:
        """A copy with every batch row repeated ``times`` times: (batch, ...) -> (batch * times,
        ...), row b becoming rows b * times .. b * times + times - 1 (``repeat_interleave``).

        CoT decoding prefills the prompt once and then runs its k branches over ``repeat_batch(k)``.
        """
        _check_times(times)
        other = KVCache(self.fingerprint)
        for name in ("keys", "values", "positions", "token_index"):
            repeated = [None if t is None else t.repeat_interleave(times, dim=0)
                        for t in getattr(self, name)]
            setattr(other, name, repeated)
        other.seen_tokens = self.seen_tokens
        other.next_position = self.next_position
        return other

    def __repr__(self) -> str:
        lengths = [self.layer_length(i) for i in range(self.num_layers)]
        return (f"KVCache(layers={self.num_layers}, kv_heads={self.fingerprint.num_kv_heads}, "
                f"head_dim={self.fingerprint.head_dim}, lengths={lengths}, "
                f"seen_tokens={self.seen_tokens}, next_position={self.next_position})")

    # ---------------------------------------------------------------- edits
    def append(self, layer: int, keys: Tensor, values: Tensor, positions: Tensor
               ) -> tuple[Tensor, Tensor, Tensor]:
        """Append new entries to ``layer`` and return that layer's full keys, values, positions.

        keys, values: (batch, kv_heads, new, head_dim), keys already rotated at ``positions``;
        positions: (batch, kv_heads, new) long.
        """
        self._check_layer(layer)
        fp = self.fingerprint
        if keys.dim() != 4 or keys.shape[1] != fp.num_kv_heads or keys.shape[3] != fp.head_dim:
            raise ValueError(f"keys must have shape (batch, {fp.num_kv_heads}, new, "
                             f"{fp.head_dim}), got {tuple(keys.shape)}")
        if values.shape != keys.shape or positions.shape != keys.shape[:3]:
            raise ValueError(f"values {tuple(values.shape)} and positions {tuple(positions.shape)} "
                             f"must match keys {tuple(keys.shape)} (positions without head_dim)")
        # Layer 0 appends first and counts the new tokens; later layers receive the same tokens.
        first = self.seen_tokens if layer == 0 else self.seen_tokens - keys.shape[2]
        token_index = torch.arange(first, first + keys.shape[2], device=keys.device)
        token_index = token_index.expand(keys.shape[:3])                    # (batch, kv, new)
        if self.keys[layer] is None:
            self.keys[layer], self.values[layer] = keys, values
            self.positions[layer] = positions
            self.token_index[layer] = token_index
        else:
            if keys.shape[0] != self.keys[layer].shape[0]:
                raise ValueError(f"batch size {keys.shape[0]} does not match the cache's batch "
                                 f"size {self.keys[layer].shape[0]}")
            self.keys[layer] = torch.cat([self.keys[layer], keys], dim=2)
            self.values[layer] = torch.cat([self.values[layer], values], dim=2)
            self.positions[layer] = torch.cat([self.positions[layer], positions], dim=2)
            self.token_index[layer] = torch.cat([self.token_index[layer], token_index], dim=2)
        if layer == 0:
            self.seen_tokens += keys.shape[2]
            self.next_position = max(self.next_position, int(positions.max()) + 1)
        return self.keys[layer], self.values[layer], self.positions[layer]

    def crop(self, length: int) -> None:
        """Keep only the first ``length`` entries of every layer (speculative decoding's rollback).

        Layers shorter than ``length`` are left as they are. ``seen_tokens`` drops by the number of
        entries removed from layer 0, ``next_position`` becomes 1 + the largest remaining position.
        """
        if not isinstance(length, int) or length < 0 or length > self.length:
            raise ValueError(f"length must be an int in [0, {self.length}] (the cache length), "
                             f"got {length!r}")
        self.seen_tokens -= self.length - length
        for layer in range(self.num_layers):
            if self.keys[layer] is None or self.keys[layer].shape[2] <= length:
                continue
            if length == 0:
                self.keys[layer] = self.values[layer] = self.positions[layer] = None
                self.token_index[layer] = None
            else:
                self.keys[layer] = self.keys[layer][:, :, :length]
                self.values[layer] = self.values[layer][:, :, :length]
                self.positions[layer] = self.positions[layer][:, :, :length]
                self.token_index[layer] = self.token_index[layer][:, :, :length]
        self._recompute_next_position()

    def keep(self, layer: int, indices: Tensor) -> None:
        """Keep, in ``layer``, the entries at ``indices`` of each (batch row, KV head): compression.

        indices: (batch, kv_heads, n_keep) long, each in [0, layer_length). Every head keeps the
        same number of entries but may keep different ones. The new order is that of ``indices``.
        """
        self._check_layer(layer)
        if self.keys[layer] is None:
            raise ValueError(f"layer {layer} of the cache is empty: nothing to keep")
        batch, kv_heads, length, head_dim = self.keys[layer].shape
        if indices.dim() != 3 or tuple(indices.shape[:2]) != (batch, kv_heads):
            raise ValueError(f"indices must have shape ({batch}, {kv_heads}, n_keep), "
                             f"got {tuple(indices.shape)}")
        if indices.dtype != torch.long:
            raise ValueError(f"indices must be torch.long, got {indices.dtype}")
        if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= length):
            raise ValueError(f"indices must lie in [0, {length - 1}] (layer {layer}'s length), got "
                             f"values in [{int(indices.min())}, {int(indices.max())}]")
        gather_kv = indices.unsqueeze(-1).expand(batch, kv_heads, indices.shape[2], head_dim)
        self.keys[layer] = self.keys[layer].gather(2, gather_kv)
        self.values[layer] = self.values[layer].gather(2, gather_kv)
        self.positions[layer] = self.positions[layer].gather(2, indices)
        self.token_index[layer] = self.token_index[layer].gather(2, indices)

    def set_positions(self, layer: int, positions: Tensor) -> None:
        """Give the entries of ``layer`` new RoPE positions (Context-Reset RoPE).

        positions: (batch, kv_heads, length) long (or broadcastable to it). The stored keys are
        re-rotated by the delta: k <- R(p_new - p_old) k, see the module docstring.
        """
        self._check_layer(layer)
        if self.keys[layer] is None:
            raise ValueError(f"layer {layer} of the cache is empty: no positions to set")
        old = self.positions[layer]
        try:
            new = torch.as_tensor(positions, device=old.device).broadcast_to(old.shape)
        except RuntimeError as err:
            shape = tuple(torch.as_tensor(positions).shape)
            raise ValueError(f"positions {shape} cannot broadcast to the cache's "
                             f"{tuple(old.shape)} for layer {layer}") from err
        if new.dtype != torch.long:
            raise ValueError(f"positions must be integers (torch.long), got {new.dtype}")
        fp = self.fingerprint
        cos, sin = rotary_cos_sin(new - old, fp.head_dim, fp.rope_theta, self.keys[layer].dtype,
                                  fp.rope_scaling)
        self.keys[layer] = apply_rotary(self.keys[layer], cos, sin)  # (batch, kv, length, head_dim)
        self.positions[layer] = new.clone()
        self._recompute_next_position()

    # ---------------------------------------------------------------- helpers
    def _check_layer(self, layer: int) -> None:
        if not 0 <= layer < self.num_layers:
            raise ValueError(f"layer must be in [0, {self.num_layers - 1}], got {layer}")

    def _recompute_next_position(self) -> None:
        maxima = [int(p.max()) for p in self.positions if p is not None and p.numel()]
        self.next_position = max(maxima) + 1 if maxima else 0


def _check_times(times: object) -> None:
    """``repeat_batch``'s argument: an int >= 1 (shared with ``hf_adapter.HFCache``)."""
    if isinstance(times, bool) or not isinstance(times, int) or times < 1:
        raise ValueError(f"times must be an int >= 1, got {times!r}")
