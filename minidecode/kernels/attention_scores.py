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

Done in PyTorch, the (batch, heads, Q, K) scores are written, masked into a new tensor, turned
into weights by a softmax that reads and writes them again, and summed. Here the scores are
written once and read once, and the weights never exist. Three launches:

- ``attention_tile_scores``: the keys are cut into tiles of 32; a block copies one tile of one
  (batch, KV head) into shared memory (rows padded to head_dim + 4 floats: 16-byte aligned, and
  the lanes of a quarter-warp land on different banks) and runs the group's G x Q query rows
  against it, lane j scoring key j, four query rows at a time from float4 loads (four independent
  sums: one shared-memory load of the key serves four rows). It writes the scores and, per
  (query row, tile), the max over the tile's visible keys and the sum of exp(score - max);
- ``attention_merge_stats``: one warp per query row merges its tiles' (max, sum) pairs into the
  softmax normaliser, sum_tiles sum_tile * exp(max_tile - max) (the online softmax's rescaling,
  as in FlashAttention, Dao et al. 2022, arXiv:2205.14135);
- ``attention_received``: lane j of a block reads the scores of key j (coalesced) for its
  warp's rows and adds exp(score - max) / normaliser over the visible ones; the block's warps add
  their partial sums in a fixed order (no atomics, a deterministic result).

Bytes that must move: keys 4 * B * H_kv * K * D, queries 4 * B * H * Q * D, output
4 * B * H_kv * K; the scores, 4 * B * H * Q * K, are written and read once more.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from minidecode.kernels import _cuda

MAX_HEAD_DIM = 256   # a tile of 32 keys x (head_dim + 4) floats must fit in 48 KB of shared memory
TILE_KEYS = 32       # one key per lane
THREADS = 128        # 4 warps a block, each taking 4 query rows at a time

CUDA_SOURCE = r"""
// ---------------------------------------------------------------- kernel 5: received attention
#define TILE_KEYS 32
#define ROWS_AT_ONCE 4

// Query row r of (batch, KV head) bg is query t = r % Q of head g * group + r / Q; it sees keys
// j <= n_keys - Q + t (the cache's rule: the queries are the newest Q entries, causal among them).
__device__ __forceinline__ bool sees(int j, int r, int n_queries, int n_keys) {
    return j < n_keys && j <= n_keys - n_queries + r % n_queries;
}

// grid = (n_tiles, batch * kv_heads), block = (128,), dynamic shared memory 32 * (head_dim + 4)
// floats (sized to the model's head_dim, not the largest allowed: smaller tiles let more blocks
// share a multiprocessor); head_dim % 4 == 0, 16-byte aligned inputs.
// scores: (batch * heads * Q, K), every entry written (visible or not). tile_max, tile_sum:
// (batch * heads * Q, n_tiles): the max visible score of the tile and sum exp(score - max), or
// (-inf, 0) when the row sees none of the tile's keys. __launch_bounds__ asks the compiler for
// ten resident blocks a multiprocessor (48 registers a thread instead of 64, without spilling):
// more warps waiting on memory at once.
extern "C" __global__ void __launch_bounds__(128, 10)
attention_tile_scores(const float* __restrict__ queries, const float* __restrict__ keys,
                      float* __restrict__ scores, float* __restrict__ tile_max,
                      float* __restrict__ tile_sum, int heads, int kv_heads, int n_queries,
                      int n_keys, int head_dim, float scale) {
    extern __shared__ __align__(16) float tile[];          // TILE_KEYS * (head_dim + 4) floats
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warps = blockDim.x >> 5;
    const i64 bg = blockIdx.y;
    const int rows = (heads / kv_heads) * n_queries;       // the group's query rows
    const int first_key = blockIdx.x * TILE_KEYS;
    const int j = first_key + lane;                        // this lane's key
    const int stride = head_dim + 4, quads = head_dim / 4;

    // The tile: warp w copies keys w, w + 4, ...; lane c copies float4 number c of a key.
    const float* k = keys + (bg * n_keys + first_key) * (i64)head_dim;
    for (int key = warp; key < TILE_KEYS; key += n_warps) {
        float4* dst = reinterpret_cast<float4*>(tile + key * stride);
        const float4* src = reinterpret_cast<const float4*>(k + (i64)key * head_dim);
        for (int c = lane; c < quads; c += 32)
            dst[c] = first_key + key < n_keys ? src[c] : make_float4(0.f, 0.f, 0.f, 0.f);
    }
    __syncthreads();

    const float4* kj = reinterpret_cast<const float4*>(tile + lane * stride);
    for (int r0 = ROWS_AT_ONCE * warp; r0 < rows; r0 += ROWS_AT_ONCE * n_warps) {
        const float4* q[ROWS_AT_ONCE];                     // rows past the end repeat the last
        float dot[ROWS_AT_ONCE];
        for (int i = 0; i < ROWS_AT_ONCE; ++i) {
            q[i] = reinterpret_cast<const float4*>(
                queries + (bg * rows + min(r0 + i, rows - 1)) * (i64)head_dim);
            dot[i] = 0.0f;
        }
        for (int c = 0; c < quads; ++c) {
            const float4 kv = kj[c];                       // one shared load serves four rows
            for (int i = 0; i < ROWS_AT_ONCE; ++i) {
                const float4 qv = q[i][c];                 // the same address in every lane
                dot[i] += qv.x * kv.x + qv.y * kv.y + qv.z * kv.z + qv.w * kv.w;
            }
        }
        for (int i = 0; i < ROWS_AT_ONCE && r0 + i < rows; ++i) {   // warp-uniform condition
            const int r = r0 + i;
            const i64 row = bg * rows + r;                 // = (b * heads + h) * Q + t
            const float score = dot[i] * scale;
            if (j < n_keys) scores[row * n_keys + j] = score;
            const bool visible = sees(j, r, n_queries, n_keys);
            const float m = warp_max(visible ? score : MD_NEG_INF);
            const float total = warp_sum(visible ? expf(score - m) : 0.0f);
            if (lane == 0) {
                tile_max[row * gridDim.x + blockIdx.x] = m;
                tile_sum[row * gridDim.x + blockIdx.x] = total;
            }
        }
    }
}

// grid = (ceil(rows / 8),), block = (256,): one warp per query row merges its n_tiles pairs.
extern "C" __global__ void attention_merge_stats(const float* __restrict__ tile_max,
                                                 const float* __restrict__ tile_sum,
                                                 float* __restrict__ row_max,
                                                 float* __restrict__ row_sum,
                                                 int total_rows, int n_tiles) {
    const int lane = threadIdx.x & 31;
    const i64 row = (i64)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (row >= total_rows) return;                         // whole warps leave together
    const float* m_t = tile_max + row * n_tiles;
    const float* s_t = tile_sum + row * n_tiles;
    float m = MD_NEG_INF;
    for (int i = lane; i < n_tiles; i += 32) if (s_t[i] > 0.0f) m = fmaxf(m, m_t[i]);
    m = warp_max(m);
    float s = 0.0f;
    for (int i = lane; i < n_tiles; i += 32) if (s_t[i] > 0.0f) s += s_t[i] * expf(m_t[i] - m);
    s = warp_sum(s);
    if (lane == 0) { row_max[row] = m; row_sum[row] = s; }
}

// grid = (n_tiles, batch * kv_heads), block = (128,). out: (batch, kv_heads, K).
extern "C" __global__ void attention_received(const float* __restrict__ scores,
                                              const float* __restrict__ row_max,
                                              const float* __restrict__ row_sum,
                                              float* __restrict__ out,
                                              int heads, int kv_heads, int n_queries,
                                              int n_keys) {
    __shared__ float partial[32][TILE_KEYS];              // [warp][key of the tile]
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warps = blockDim.x >> 5;
    const i64 bg = blockIdx.y;
    const int rows = (heads / kv_heads) * n_queries;
    const int j = blockIdx.x * TILE_KEYS + lane;
    float received = 0.0f;
    for (int r = warp; r < rows; r += n_warps) {
        const i64 row = bg * rows + r;
        if (sees(j, r, n_queries, n_keys))
            received += expf(scores[row * n_keys + j] - row_max[row]) / row_sum[row];
    }
    partial[warp][lane] = received;
    __syncthreads();
    if (warp == 0 && j < n_keys) {
        float total = 0.0f;
        for (int w = 0; w < n_warps; ++w) total += partial[w][lane];
        out[bg * n_keys + j] = total;
    }
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
        if head_dim > MAX_HEAD_DIM or head_dim % 4:
            raise ValueError(f"head_dim must be a multiple of 4 and <= {MAX_HEAD_DIM} for the "
                             f"kernel (float4 loads), got {head_dim}")
        if queries.data_ptr() % 16 or keys.data_ptr() % 16:
            raise ValueError("queries and keys must start on a 16-byte boundary for the kernel "
                             "(float4 loads): pass a fresh .contiguous() copy")
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
    """The CuPy path: three launches (tile scores and statistics, their merge per query row, the
    sums)."""
    import numpy as np

    if check:
        validate(queries, keys, for_kernel=True)
    batch, heads, n_queries, head_dim = queries.shape
    kv_heads, n_keys = keys.shape[1], keys.shape[2]
    rows = batch * heads * n_queries
    n_tiles = -(-n_keys // TILE_KEYS)
    empty = lambda *shape: torch.empty(*shape, dtype=torch.float32, device=queries.device)
    scores, tile_stats, stats = empty(rows, n_keys), empty(2, rows, n_tiles), empty(2, rows)
    if out is None:
        out = empty(batch, kv_heads, n_keys)
    sizes = (np.int32(heads), np.int32(kv_heads), np.int32(n_queries), np.int32(n_keys))
    tiles = (n_tiles, batch * kv_heads)
    _cuda.launch(CUDA_SOURCE, "attention_tile_scores", tiles, (THREADS,),
                 (queries, keys, scores, tile_stats[0], tile_stats[1], *sizes,
                  np.int32(head_dim), np.float32(1.0 / math.sqrt(head_dim))), queries.device,
                 shared_mem=4 * TILE_KEYS * (head_dim + 4))
    _cuda.launch(CUDA_SOURCE, "attention_merge_stats", (-(-rows // 8),), (256,),
                 (tile_stats[0], tile_stats[1], stats[0], stats[1], np.int32(rows),
                  np.int32(n_tiles)), queries.device)
    _cuda.launch(CUDA_SOURCE, "attention_received", tiles, (THREADS,),
                 (scores, stats[0], stats[1], out, *sizes), queries.device)
    return out


def received_attention(queries: Tensor, keys: Tensor) -> Tensor:
    """Dispatch: (batch, kv_heads, K) attention received per cached key, summed over queries and
    the query heads of each KV head. CuPy kernel for float32 CUDA tensors, else the reference."""
    validate(queries, keys)
    if _cuda.use_kernel(queries, keys) and queries.shape[-1] % 4 == 0:
        queries, keys = queries.contiguous(), keys.contiguous()
        if queries.data_ptr() % 16 == 0 and keys.data_ptr() % 16 == 0:
            return launch_kernel(queries, keys, check=False)
    return reference(queries, keys)
