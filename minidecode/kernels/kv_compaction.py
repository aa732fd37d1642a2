"""Kernel 4: KV-cache compaction with Context-Reset RoPE, in one kernel.

When a cache policy keeps ``n_keep`` of a layer's ``length`` entries per (batch row, KV head), the
cache does two things (:meth:`minidecode.cache.KVCache.keep`, then
:meth:`~minidecode.cache.KVCache.set_positions` with
:func:`minidecode.infinipot.context_reset_positions`, InfiniPot's CR-RoPE, Kim et al. 2024,
arXiv:2410.01518):

    keys'[e]   = R(new_pos[e] - pos[idx[e]]) keys[idx[e]]       gather, then re-rotate by the delta
    values'[e] = values[idx[e]]
    pos'[e]    = new_pos[e],   token_index'[e] = token_index[idx[e]]

where R(d) turns every pair (x_i, x_{i + D/2}) by the angle d * theta^(-2i/D) (RoPE, Su et al.
2021, arXiv:2104.09864; the "rotate_half" layout of :func:`minidecode.model.apply_rotary`):

    x_i'       = x_i cos - x_{i+D/2} sin
    x_{i+D/2}' = x_{i+D/2} cos + x_i sin

Done as separate PyTorch ops, the kept keys are written once by the gather and read and written
again by the rotation (plus cos/sin tables). Fused, every kept element is read once and written
once. Layout: one thread per (batch row, KV head, kept entry, pair i), 256 threads a block;
consecutive threads take consecutive pairs of one entry, so their reads of keys and values are
coalesced. Bytes moved: 2 * 2 * 4 * B * H * n_keep * D (keys and values, read + written) plus
8 * B * H * n_keep * 5 (indices, new positions, gathered positions and token ids).

``new_positions`` defaults to 0 .. n_keep - 1: CR-RoPE's positions when ``indices`` list the
kept entries in stream order, as :func:`minidecode.cache_policies.base.top_entries` returns them.
"""

from __future__ import annotations

import torch
from torch import Tensor

from minidecode.kernels import _cuda

CUDA_SOURCE = r"""
// ---------------------------------------------------------------- kernel 4: KV compaction + RoPE
// grid = (ceil(total / 256),), block = (256,), total = heads_total * n_keep * (head_dim / 2), where
// heads_total = batch * kv_heads. Layouts: keys, values (heads_total, length, head_dim);
// positions, token_index (heads_total, length); indices, new_positions (heads_total, n_keep).
extern "C" __global__ void kv_compact_rope(const float* __restrict__ keys,
                                           const float* __restrict__ values,
                                           const i64* __restrict__ positions,
                                           const i64* __restrict__ token_index,
                                           const i64* __restrict__ indices,
                                           const i64* __restrict__ new_positions,
                                           float* __restrict__ keys_out,
                                           float* __restrict__ values_out,
                                           i64* __restrict__ positions_out,
                                           i64* __restrict__ token_index_out,
                                           int length, int n_keep, int head_dim,
                                           float rope_theta, i64 total) {
    const int half = head_dim / 2;
    for (i64 t = blockIdx.x * (i64)blockDim.x + threadIdx.x; t < total;
         t += (i64)gridDim.x * blockDim.x) {
        const int pair = (int)(t % half);
        const i64 entry = t / half;                   // (head, kept entry) flattened
        const i64 head = entry / n_keep;
        const i64 source = head * length + indices[entry];
        const float* k = keys + source * head_dim;
        const float* v = values + source * head_dim;
        // The same float32 arithmetic as minidecode.model.rotary_cos_sin.
        const float inv_freq = 1.0f / powf(rope_theta, (float)(2 * pair) / (float)head_dim);
        const float angle = (float)(new_positions[entry] - positions[source]) * inv_freq;
        float s, c;
        sincosf(angle, &s, &c);
        const float x1 = k[pair], x2 = k[pair + half];
        float* k_out = keys_out + entry * head_dim;
        float* v_out = values_out + entry * head_dim;
        k_out[pair] = x1 * c - x2 * s;
        k_out[pair + half] = x2 * c + x1 * s;
        v_out[pair] = v[pair];
        v_out[pair + half] = v[pair + half];
        if (pair == 0) {
            positions_out[entry] = new_positions[entry];
            token_index_out[entry] = token_index[source];
        }
    }
}
"""

KERNEL_NAME = "kv_compact_rope"
THREADS = 256


def validate(keys: Tensor, values: Tensor, positions: Tensor, token_index: Tensor,
             indices: Tensor, new_positions: Tensor, *, for_kernel: bool = False) -> None:
    """keys, values (batch, kv_heads, length, head_dim) float, head_dim even; positions and
    token_index (batch, kv_heads, length) long; indices and new_positions (batch, kv_heads,
    n_keep) long, indices in [0, length)."""
    dtypes = _cuda.FLOAT32 if for_kernel else _cuda.FLOATS
    _cuda.check_tensor(keys, "keys", dtypes=dtypes, dim=4, contiguous=for_kernel)
    _cuda.check_tensor(values, "values", dtypes=(keys.dtype,), dim=4, contiguous=for_kernel)
    for name, tensor in (("positions", positions), ("token_index", token_index),
                         ("indices", indices), ("new_positions", new_positions)):
        _cuda.check_tensor(tensor, name, dtypes=_cuda.LONG, dim=3, contiguous=for_kernel)
    batch, kv_heads, length, head_dim = keys.shape
    if head_dim % 2:
        raise ValueError(f"head_dim must be even for RoPE's pairs, got {head_dim}")
    if values.shape != keys.shape:
        raise ValueError(f"values {tuple(values.shape)} must match keys {tuple(keys.shape)}")
    for name, tensor in (("positions", positions), ("token_index", token_index)):
        if tuple(tensor.shape) != (batch, kv_heads, length):
            raise ValueError(f"{name} must have shape {(batch, kv_heads, length)} (keys without "
                             f"head_dim), got {tuple(tensor.shape)}")
    if tuple(indices.shape[:2]) != (batch, kv_heads):
        raise ValueError(f"indices must have shape ({batch}, {kv_heads}, n_keep), got "
                         f"{tuple(indices.shape)}")
    if new_positions.shape != indices.shape:
        raise ValueError(f"new_positions {tuple(new_positions.shape)} must match indices "
                         f"{tuple(indices.shape)}")
    _cuda.check_same_device(keys=keys, values=values, positions=positions,
                            token_index=token_index, indices=indices, new_positions=new_positions)
    if int(indices.min()) < 0 or int(indices.max()) >= length:
        raise ValueError(f"indices must lie in [0, {length - 1}] (the cache length), got values in "
                         f"[{int(indices.min())}, {int(indices.max())}]")
    if for_kernel:
        _cuda.check_cuda(keys, "keys")


def _default_positions(indices: Tensor) -> Tensor:
    _cuda.check_tensor(indices, "indices", dtypes=_cuda.LONG, dim=3)
    n_keep = indices.shape[-1]
    return torch.arange(n_keep, device=indices.device).expand(indices.shape).contiguous()


def reference(keys: Tensor, values: Tensor, positions: Tensor, token_index: Tensor,
              indices: Tensor, new_positions: Tensor | None = None, rope_theta: float = 10000.0
              ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The CPU path, with minidecode.model's RoPE: returns (keys, values, positions,
    token_index) of the kept entries."""
    from minidecode.rope import apply_rotary, rotary_cos_sin

    if new_positions is None:
        new_positions = _default_positions(indices)
    validate(keys, values, positions, token_index, indices, new_positions)
    head_dim = keys.shape[-1]
    gather = indices.unsqueeze(-1).expand(*indices.shape, head_dim)
    kept_keys, kept_values = keys.gather(2, gather), values.gather(2, gather)
    old = positions.gather(2, indices)
    cos, sin = rotary_cos_sin(new_positions - old, head_dim, rope_theta, dtype=keys.dtype)
    return (apply_rotary(kept_keys, cos, sin), kept_values, new_positions.clone(),
            token_index.gather(2, indices))


def launch_kernel(keys: Tensor, values: Tensor, positions: Tensor, token_index: Tensor,
                  indices: Tensor, new_positions: Tensor | None = None,
                  rope_theta: float = 10000.0, *, out: tuple[Tensor, ...] | None = None,
                  check: bool = True) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The CuPy path: one launch. ``check=False`` skips the checks (the index range check reads
    the device: a synchronisation)."""
    import numpy as np

    if new_positions is None:
        new_positions = _default_positions(indices)
    if check:
        validate(keys, values, positions, token_index, indices, new_positions, for_kernel=True)
    batch, kv_heads, length, head_dim = keys.shape
    n_keep = indices.shape[-1]
    if out is None:
        out = (keys.new_empty(batch, kv_heads, n_keep, head_dim),
               values.new_empty(batch, kv_heads, n_keep, head_dim),
               positions.new_empty(batch, kv_heads, n_keep),
               token_index.new_empty(batch, kv_heads, n_keep))
    total = batch * kv_heads * n_keep * (head_dim // 2)
    blocks = max(1, min(-(-total // THREADS), 65535 * 8))       # a grid-stride loop covers the rest
    _cuda.launch(CUDA_SOURCE, KERNEL_NAME, (blocks,), (THREADS,),
                 (keys, values, positions, token_index, indices, new_positions, *out,
                  np.int32(length), np.int32(n_keep), np.int32(head_dim),
                  np.float32(rope_theta), np.int64(total)), keys.device)
    return out


def compact_kv(keys: Tensor, values: Tensor, positions: Tensor, token_index: Tensor,
               indices: Tensor, new_positions: Tensor | None = None, rope_theta: float = 10000.0
               ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Dispatch: keep ``indices`` of every (batch row, KV head) and re-rotate the kept keys to
    ``new_positions`` (default 0 .. n_keep - 1). CuPy kernel for float32 CUDA tensors, else the
    reference. Returns (keys, values, positions, token_index), each with n_keep entries."""
    if new_positions is None:
        new_positions = _default_positions(indices)
    tensors = (keys, values, positions, token_index, indices, new_positions)
    validate(*tensors)
    if _cuda.use_kernel(*tensors):
        return launch_kernel(*(t.contiguous() for t in tensors), rope_theta=rope_theta,
                             check=False)
    return reference(*tensors, rope_theta=rope_theta)
