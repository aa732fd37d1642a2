"""Kernel 5: the attention each cached entry receives, summed over queries and grouped heads.

What H2O, SnapKV and InfiniPot's catalyst prompt (CaP) score with (see
:mod:`minidecode.cache_policies`). With queries q (batch, heads, Q, D) and the keys they see
k (batch, kv_heads, K, D), query head h reading KV head g = h // (heads / kv_heads):

    a_h(t, j) = softmax_j(q_{h,t} . k_{g,j} / sqrt(D))       over the keys visible to query t
    received(g, j) = sum_{h in group g} sum_t a_h(t, j)        -> (batch, kv_heads, K)

Visibility is the cache's rule (:mod:`minidecode.cache`): the Q queries are the newest Q entries of
the K keys, every older entry is visible to all of them, and inside the chunk the order is causal:
query t sees keys j <= K - Q + t. H2O's ``observe`` is ``received`` of a chunk's queries; CaP is
``received(...)[..., :context_length]`` of the catalyst's queries; SnapKV's vote is ``received`` of
the last ``window`` queries (pass only those; they are still the newest entries).

Done in PyTorch, the (batch, heads, Q, K) weight tensor is written to memory, read back by the
softmax, written again, and read by the sum. Here it never exists:

- ``attention_row_stats``: one block per (batch, head, query): each warp takes keys j = warp,
  warp + 8, ...; the 32 lanes split the D dims of one dot product and add it with shuffles; an
  online max and sum (the softmax's normaliser, as in FlashAttention, Dao et al. 2022,
  arXiv:2205.14135) runs per warp, and the 8 warps merge theirs. Writes max and sum per row.
- ``attention_received``: one warp per cached key: it loads the key once into registers, then for
  each (head of the group, query) recomputes the dot product and adds exp(s - max) / sum. Each
  output element is written by exactly one warp, so no atomics and a deterministic sum.

Both recompute q . k (2 x Q x heads x K x D multiply-adds): cheap next to the memory it saves.
Bytes that must move: keys 4 * B * H_kv * K * D (read twice, the second time mostly from L2),
queries 4 * B * H * Q * D, output 4 * B * H_kv * K.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from minidecode.kernels import _cuda

MAX_HEAD_DIM = 256   # each lane holds head_dim / 32 elements of a key in registers
WARPS = 8

CUDA_SOURCE = r"""
// ---------------------------------------------------------------- kernel 5: received attention
#define MAX_DIMS_PER_LANE 8      // head_dim <= 256

// grid = (batch * heads * n_queries,), block = (256,). queries (batch, heads, Q, D),
// keys (batch, kv_heads, K, D). row_max, row_sum: (batch * heads * Q,) softmax statistics of
// the scaled scores over the keys visible to each query.
extern "C" __global__ void attention_row_stats(const float* __restrict__ queries,
                                               const float* __restrict__ keys,
                                               float* __restrict__ row_max,
                                               float* __restrict__ row_sum,
                                               int heads, int kv_heads, int n_queries,
                                               int n_keys, int head_dim, float scale) {
    __shared__ float warp_max_[32], warp_sum_[32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warps = blockDim.x >> 5;
    const i64 row = blockIdx.x;                            // (b * heads + h) * Q + t
    const int t = (int)(row % n_queries);
    const i64 bh = row / n_queries;
    const int h = (int)(bh % heads);
    const i64 b = bh / heads;
    const int g = h / (heads / kv_heads);
    const float* q = queries + row * head_dim;
    const float* k = keys + (b * kv_heads + g) * (i64)n_keys * head_dim;
    const int visible = n_keys - n_queries + t + 1;        // keys 0 .. visible - 1

    float q_reg[MAX_DIMS_PER_LANE];
    for (int i = 0; i < MAX_DIMS_PER_LANE; ++i) {
        const int d = lane + 32 * i;
        q_reg[i] = d < head_dim ? q[d] : 0.0f;
    }
    float m = MD_NEG_INF, s = 0.0f;                        // the same in every lane of a warp
    for (int j = warp; j < visible; j += n_warps) {
        const float* kj = k + (i64)j * head_dim;
        float dot = 0.0f;
        for (int i = 0; i < MAX_DIMS_PER_LANE; ++i) {
            const int d = lane + 32 * i;
            if (d < head_dim) dot += q_reg[i] * kj[d];
        }
        const float score = warp_sum(dot) * scale;
        if (score > m) { s = s * expf(m - score) + 1.0f; m = score; }
        else s += expf(score - m);
    }
    if (lane == 0) { warp_max_[warp] = m; warp_sum_[warp] = s; }
    __syncthreads();
    if (threadIdx.x == 0) {
        float big = MD_NEG_INF;
        for (int w = 0; w < n_warps; ++w) big = fmaxf(big, warp_max_[w]);
        float total = 0.0f;
        for (int w = 0; w < n_warps; ++w)
            if (warp_sum_[w] > 0.0f) total += warp_sum_[w] * expf(warp_max_[w] - big);
        row_max[row] = big;
        row_sum[row] = total;
    }
}

// grid = (ceil(K / warps), batch * kv_heads), block = (32 * warps,). out: (batch, kv_heads, K).
extern "C" __global__ void attention_received(const float* __restrict__ queries,
                                              const float* __restrict__ keys,
                                              const float* __restrict__ row_max,
                                              const float* __restrict__ row_sum,
                                              float* __restrict__ out,
                                              int heads, int kv_heads, int n_queries,
                                              int n_keys, int head_dim, float scale) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warps = blockDim.x >> 5;
    const int j = blockIdx.x * n_warps + warp;            // this warp's key
    if (j >= n_keys) return;                              // whole warps leave together
    const i64 bg = blockIdx.y;                            // b * kv_heads + g
    const i64 b = bg / kv_heads;
    const int g = (int)(bg % kv_heads);
    const int group = heads / kv_heads;
    const float* kj = keys + (bg * n_keys + j) * (i64)head_dim;

    float k_reg[MAX_DIMS_PER_LANE];
    for (int i = 0; i < MAX_DIMS_PER_LANE; ++i) {
        const int d = lane + 32 * i;
        k_reg[i] = d < head_dim ? kj[d] : 0.0f;
    }
    const int first_seeing = j - (n_keys - n_queries);    // queries t >= this see key j
    float received = 0.0f;
    for (int r = 0; r < group; ++r) {
        const i64 row0 = (b * heads + (i64)g * group + r) * n_queries;
        for (int t = first_seeing > 0 ? first_seeing : 0; t < n_queries; ++t) {
            const float* q = queries + (row0 + t) * head_dim;
            float dot = 0.0f;
            for (int i = 0; i < MAX_DIMS_PER_LANE; ++i) {
                const int d = lane + 32 * i;
                if (d < head_dim) dot += q[d] * k_reg[i];
            }
            const float score = warp_sum(dot) * scale;
            received += expf(score - row_max[row0 + t]) / row_sum[row0 + t];
        }
    }
    if (lane == 0) out[bg * n_keys + j] = received;
}
"""


def validate(queries: Tensor, keys: Tensor, *, for_kernel: bool = False) -> None:
    """queries (batch, heads, Q, D), keys (batch, kv_heads, K, D), heads a multiple of kv_heads,
    Q <= K (the queries' own keys are the newest Q)."""
    dtypes = _cuda.FLOAT32 if for_kernel else _cuda.FLOATS
    _cuda.check_tensor(queries, "queries", dtypes=dtypes, dim=4, contiguous=for_kernel)
    _cuda.check_tensor(keys, "keys", dtypes=(queries.dtype,), dim=4, contiguous=for_kernel)
    batch, heads, n_queries, head_dim = queries.shape
    k_batch, kv_heads, n_keys, k_dim = keys.shape
    if k_batch != batch or k_dim != head_dim:
        raise ValueError(f"queries {tuple(queries.shape)} and keys {tuple(keys.shape)} must agree "
                         "on batch (dim 0) and head_dim (dim 3)")
    if heads % kv_heads:
        raise ValueError(f"heads ({heads}) must be a multiple of kv_heads ({kv_heads})")
    if n_queries > n_keys:
        raise ValueError(f"the {n_queries} queries must be the newest of the {n_keys} keys "
                         f"(their own keys included), so Q <= K; got Q = {n_queries}")
    _cuda.check_same_device(queries=queries, keys=keys)
    if for_kernel:
        if head_dim > MAX_HEAD_DIM:
            raise ValueError(f"head_dim must be <= {MAX_HEAD_DIM} for the kernel, got {head_dim}")
        if batch * kv_heads > 65535:
            raise ValueError(f"batch * kv_heads must be <= 65535 (the grid's y size), got "
                             f"{batch * kv_heads}")
        _cuda.check_cuda(queries, "queries")


def attention_weights(queries: Tensor, keys: Tensor) -> Tensor:
    """(batch, heads, Q, K) float32 softmax weights under the cache's visibility rule, computed
    the way :class:`minidecode.model.Attention` does with ``need_weights``."""
    batch, heads, n_queries, head_dim = queries.shape
    kv_heads, n_keys = keys.shape[1], keys.shape[2]
    group = heads // kv_heads
    grouped = queries.float().reshape(batch, kv_heads, group, n_queries, head_dim)
    scores = grouped @ keys.float().unsqueeze(2).transpose(-1, -2) / math.sqrt(head_dim)
    scores = scores.reshape(batch, heads, n_queries, n_keys)
    key_index = torch.arange(n_keys, device=queries.device)
    query_index = torch.arange(n_queries, device=queries.device) + n_keys - n_queries
    visible = key_index[None, :] <= query_index[:, None]
    return torch.softmax(scores.masked_fill(~visible, float("-inf")), dim=-1)


def reference(queries: Tensor, keys: Tensor) -> Tensor:
    """The CPU path: (batch, kv_heads, K) float32, the weights summed over queries and group."""
    validate(queries, keys)
    weights = attention_weights(queries, keys).sum(dim=2)               # (batch, heads, K)
    batch, heads = weights.shape[:2]
    kv_heads = keys.shape[1]
    return weights.reshape(batch, kv_heads, heads // kv_heads, -1).sum(dim=2)


def launch_kernel(queries: Tensor, keys: Tensor, *, out: Tensor | None = None,
                  check: bool = True) -> Tensor:
    """The CuPy path: two launches (row statistics, then the per-key sums)."""
    import numpy as np

    if check:
        validate(queries, keys, for_kernel=True)
    batch, heads, n_queries, head_dim = queries.shape
    kv_heads, n_keys = keys.shape[1], keys.shape[2]
    rows = batch * heads * n_queries
    stats = torch.empty(2, rows, dtype=torch.float32, device=queries.device)
    if out is None:
        out = torch.empty(batch, kv_heads, n_keys, dtype=torch.float32, device=queries.device)
    sizes = (np.int32(heads), np.int32(kv_heads), np.int32(n_queries), np.int32(n_keys),
             np.int32(head_dim), np.float32(1.0 / math.sqrt(head_dim)))
    _cuda.launch(CUDA_SOURCE, "attention_row_stats", (rows,), (32 * WARPS,),
                 (queries, keys, stats[0], stats[1], *sizes), queries.device)
    _cuda.launch(CUDA_SOURCE, "attention_received", (-(-n_keys // WARPS), batch * kv_heads),
                 (32 * WARPS,), (queries, keys, stats[0], stats[1], out, *sizes), queries.device)
    return out


def received_attention(queries: Tensor, keys: Tensor) -> Tensor:
    """Dispatch: (batch, kv_heads, K) attention received per cached key, summed over queries and
    the query heads of each KV head. CuPy kernel for float32 CUDA tensors, else the reference."""
    validate(queries, keys)
    if _cuda.use_kernel(queries, keys):
        return launch_kernel(queries.contiguous(), keys.contiguous(), check=False)
    return reference(queries, keys)
