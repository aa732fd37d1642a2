"""Kernel 2: min-p and top-p filtering and sampling, fused, from one uniform number per row.

The kept set is that of ``[MinP(min_p), TopP(top_p)]`` in :mod:`minidecode.sampling` (min-p first,
then top-p on the renormalised rest), written with thresholds so that no sort is needed. With
e_i = exp(z_i - max z) (so e = 1 for the top token):

    min-p  (Nguyen et al. 2024, arXiv:2407.01082):   keep i iff e_i >= min_p
    top-p  (Holtzman et al. 2020, arXiv:1904.09751): keep i iff above(z_i) < top_p * M

where M = sum of e over the min-p survivors and above(v) = sum of e_j over survivors with
z_j > v, the mass *strictly* more probable than the token. (``top_p_filter`` drops a token when it
and everything less probable fit in the 1 - top_p tail, then keeps every tie of the smallest kept
logit; that is the same set.) The kept tokens are exactly those with z >= v*, the smallest logit
whose ``above`` is still under the budget, and v* is found by a *radix select* on the logits' bits:
four passes, each building a 256-bin histogram of mass over the next 8 bits of the key and walking
the bins from the top until the budget is crossed. Then one token is drawn by the inverse CDF, in
vocabulary order: the first i with sum_{j <= i} w_j > u * sum_j w_j, w = e on kept tokens, 0 else.

Layout: one block of 1024 threads per row, each thread with eight loads in flight. Reads of the
row: 1 (max) + 4 (radix, skipped when top_p = 1) + 1 (kept mass) + 1 (sampling) = 7 or 3; a row
of 128K float32 is 512 KB, so the later passes hit L2 while few rows are in flight. Bytes that
must move (the roofline's count): 4 * rows * vocab + 12 * rows.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from minidecode.kernels import _cuda

CUDA_SOURCE = r"""
// ---------------------------------------------------------------- kernel 2: min-p / top-p sampling
// Logit -> unsigned key with the same order (negative floats: flip all bits; positive: flip sign).
__device__ __forceinline__ unsigned int order_key(float z) {
    const unsigned int u = __float_as_uint(z);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

struct KeptWeight {                  // w_i = e_i on kept tokens, 0 elsewhere
    const float* z; float row_max; float min_p; unsigned int threshold_key;
    __device__ float of(float v) const {
        const float e = expf(v - row_max);
        return (e >= min_p && e > 0.0f && order_key(v) >= threshold_key) ? e : 0.0f;
    }
    __device__ float operator()(int i) const { return of(z[i]); }
};

// Run BODY for every logit v of the row, each thread taking entries t, t + blockDim.x, ... Eight
// loads are issued before any is used, so eight are in flight per thread: a pass over the row is
// bound by memory latency unless many bytes are on their way at once. Entries past the end read
// as -inf, which every BODY below ignores (no mass, never the max).
#define UNROLL 8
#define FOR_EACH_LOGIT(z, vocab, v, BODY)                                                 \
    for (int base_ = threadIdx.x; base_ < (vocab); base_ += UNROLL * blockDim.x) {         \
        float loaded_[UNROLL];                                                            \
        _Pragma("unroll") for (int u_ = 0; u_ < UNROLL; ++u_) {                           \
            const int j_ = base_ + u_ * blockDim.x;                                       \
            loaded_[u_] = j_ < (vocab) ? (z)[j_] : MD_NEG_INF;                           \
        }                                                                                 \
        _Pragma("unroll") for (int u_ = 0; u_ < UNROLL; ++u_) {                           \
            const float v = loaded_[u_];                                                  \
            BODY;                                                                         \
        }                                                                                 \
    }

// grid = (rows,), block = (threads,), threads a multiple of 32, 256 <= threads <= 1024.
extern "C" __global__ void min_p_top_p_sample(const float* __restrict__ logits,
                                              const float* __restrict__ uniforms,
                                              i64* __restrict__ tokens,
                                              int vocab, float min_p, float top_p) {
    __shared__ float scratch[32];
    __shared__ int shared_ints[2];
    __shared__ float histogram[256];
    __shared__ unsigned int chosen_prefix;
    __shared__ float chosen_above;
    const i64 row = blockIdx.x;
    const float* z = logits + row * (i64)vocab;
    const int lane = threadIdx.x & 31;

    // Pass 1: the row's max logit; e_i = exp(z_i - max) lies in [0, 1], the top token has e = 1.
    float m = MD_NEG_INF;
    FOR_EACH_LOGIT(z, vocab, v, m = fmaxf(m, v));
    const float row_max = block_max(m, scratch);

    // Passes 2-5 (top_p < 1): radix select of the threshold key, 8 bits a pass, most significant
    // first. `prefix` holds the bits fixed so far; `above` the kept mass with a larger key.
    unsigned int prefix = 0u;
    if (top_p < 1.0f) {
        float above = 0.0f, budget = 0.0f;
        for (int shift = 24; shift >= 0; shift -= 8) {
            const unsigned int fixed_mask = (shift == 24) ? 0u : (0xffffffffu << (shift + 8));
            for (int b = threadIdx.x; b < 256; b += blockDim.x) histogram[b] = 0.0f;
            __syncthreads();
            FOR_EACH_LOGIT(z, vocab, v, {
                const float e = expf(v - row_max);
                if (e >= min_p && e > 0.0f) {
                    const unsigned int key = order_key(v);
                    if ((key & fixed_mask) == prefix)
                        atomicAdd(&histogram[(key >> shift) & 255u], e);
                }
            });
            __syncthreads();
            if (threadIdx.x < 32) {
                // Lane l owns bins 255-8l .. 248-8l, walked from the top (most probable) down.
                float bins[8], lane_mass = 0.0f;
                for (int j = 0; j < 8; ++j) {
                    bins[j] = histogram[255 - 8 * lane - j];
                    lane_mass += bins[j];
                }
                float inclusive = lane_mass;
                for (int offset = 1; offset < 32; offset <<= 1) {
                    const float up = __shfl_up_sync(MD_FULL_MASK, inclusive, offset);
                    if (lane >= offset) inclusive += up;
                }
                const float total = __shfl_sync(MD_FULL_MASK, inclusive, 31);
                if (shift == 24) budget = top_p * total;       // M: all min-p survivors
                budget = __shfl_sync(MD_FULL_MASK, budget, 0);
                // The first bin (from the top) whose cumulative mass reaches the budget.
                float cumulative = above + inclusive - lane_mass;
                int my_bin = -1, my_lowest = -1;
                float my_before = 0.0f, lowest_before = 0.0f;
                for (int j = 0; j < 8; ++j) {
                    if (bins[j] > 0.0f) {
                        if (my_bin < 0 && cumulative < budget && cumulative + bins[j] >= budget) {
                            my_bin = 255 - 8 * lane - j; my_before = cumulative;
                        }
                        my_lowest = 255 - 8 * lane - j; lowest_before = cumulative;
                    }
                    cumulative += bins[j];
                }
                const unsigned int crossing = __ballot_sync(MD_FULL_MASK, my_bin >= 0);
                const unsigned int nonempty = __ballot_sync(MD_FULL_MASK, my_lowest >= 0);
                // Crossing: the first lane that crosses. None (rounding, or the budget is more
                // than the candidates hold): keep them all, i.e. refine towards the lowest bin.
                const int source = crossing ? (__ffs(crossing) - 1) : (31 - __clz(nonempty));
                const int bin = crossing ? __shfl_sync(MD_FULL_MASK, my_bin, source)
                                         : __shfl_sync(MD_FULL_MASK, my_lowest, source);
                const float before = crossing ? __shfl_sync(MD_FULL_MASK, my_before, source)
                                              : __shfl_sync(MD_FULL_MASK, lowest_before, source);
                if (lane == 0) {
                    chosen_prefix = (nonempty ? prefix | ((unsigned int)bin << shift) : prefix);
                    chosen_above = nonempty ? before : above;
                }
            }
            __syncthreads();
            prefix = chosen_prefix;
            above = chosen_above;
            __syncthreads();                                    // histogram is cleared next pass
        }
    }

    // Kept mass, then the inverse-CDF draw in vocabulary order.
    const KeptWeight weight = {z, row_max, min_p, prefix};
    float mine = 0.0f;
    FOR_EACH_LOGIT(z, vocab, v, mine += weight.of(v));
    const float kept_mass = block_sum(mine, scratch);
    const float target = uniforms[row] * kept_mass;
    const int token = inverse_cdf(weight, vocab, target, scratch, shared_ints);
    if (threadIdx.x == 0) tokens[row] = (i64)token;
}
"""

KERNEL_NAME = "min_p_top_p_sample"


def _check_params(min_p: float, top_p: float) -> None:
    if not isinstance(min_p, (int, float)) or not math.isfinite(min_p) or not 0 <= min_p <= 1:
        raise ValueError(f"min_p must be in [0, 1], got {min_p!r} (0 keeps every token)")
    if not isinstance(top_p, (int, float)) or not math.isfinite(top_p) or not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p!r} (1 keeps every token)")


def validate(logits: Tensor, uniforms: Tensor, min_p: float, top_p: float, *,
             for_kernel: bool = False) -> None:
    """logits (rows, vocab) float, uniforms (rows,) float in [0, 1); float32 + contiguous for the
    kernel."""
    dtypes = _cuda.FLOAT32 if for_kernel else _cuda.FLOATS
    _cuda.check_tensor(logits, "logits", dtypes=dtypes, dim=2, contiguous=for_kernel)
    _cuda.check_tensor(uniforms, "uniforms", dtypes=dtypes, dim=1, contiguous=for_kernel)
    if uniforms.shape[0] != logits.shape[0]:
        raise ValueError(f"uniforms must have one number per row of logits: uniforms "
                         f"{tuple(uniforms.shape)}, logits {tuple(logits.shape)}")
    _check_params(min_p, top_p)
    _cuda.check_same_device(logits=logits, uniforms=uniforms)
    if for_kernel:
        _cuda.check_cuda(logits, "logits")


def keep_mask(logits: Tensor, min_p: float = 0.0, top_p: float = 1.0) -> Tensor:
    """Bool (rows, vocab): the tokens the kernel may draw, by the threshold rules above."""
    _check_params(min_p, top_p)
    work = logits.double() if logits.dtype == torch.float64 else logits.float()
    e = torch.exp(work - work.amax(dim=-1, keepdim=True))
    keep = (e >= min_p) & (e > 0)
    if top_p < 1:
        mass = torch.where(keep, e, torch.zeros_like(e))
        budget = top_p * mass.sum(dim=-1, keepdim=True)
        sorted_z, order = torch.sort(work, dim=-1, descending=True)
        sorted_mass = mass.gather(-1, order)
        above = sorted_mass.cumsum(dim=-1) - sorted_mass           # mass before each position
        # The first of a run of ties sees exactly above(v); later ties see more, and are kept
        # with it because the threshold below is a value, not a position.
        n_kept = (above < budget).sum(dim=-1, keepdim=True).clamp(min=1)
        threshold = sorted_z.gather(-1, n_kept - 1)
        keep = keep & (work >= threshold)
    return keep


def inverse_cdf(weights: Tensor, uniforms: Tensor) -> Tensor:
    """First index whose inclusive cumulative weight exceeds u * total, per row ((rows,) long);
    the last positive index if rounding leaves none."""
    cdf = weights.cumsum(dim=-1)
    target = uniforms.to(cdf.dtype)[:, None] * cdf[:, -1:]
    index = torch.searchsorted(cdf, target, right=True)[:, 0]
    positions = torch.arange(weights.shape[-1], device=weights.device)
    last_positive = torch.where(weights > 0, positions, -1).amax(dim=-1).clamp(min=0)
    return torch.minimum(index, last_positive)


def reference(logits: Tensor, uniforms: Tensor, min_p: float = 0.0, top_p: float = 1.0
              ) -> Tensor:
    """The CPU path: :func:`keep_mask`, then :func:`inverse_cdf` of e on the kept tokens."""
    validate(logits, uniforms, min_p, top_p)
    work = logits.double() if logits.dtype == torch.float64 else logits.float()
    e = torch.exp(work - work.amax(dim=-1, keepdim=True))
    weights = torch.where(keep_mask(logits, min_p, top_p), e, torch.zeros_like(e))
    return inverse_cdf(weights, uniforms)


def launch_kernel(logits: Tensor, uniforms: Tensor, min_p: float = 0.0, top_p: float = 1.0, *,
                  threads: int = 1024, out: Tensor | None = None) -> Tensor:
    """The CuPy path: one launch, one block per row; returns tokens (rows,) long."""
    import numpy as np

    validate(logits, uniforms, min_p, top_p, for_kernel=True)
    rows, vocab = logits.shape
    if out is None:
        out = torch.empty(rows, dtype=torch.int64, device=logits.device)
    _cuda.launch(CUDA_SOURCE, KERNEL_NAME, (rows,), (threads,),
                 (logits, uniforms, out, np.int32(vocab), np.float32(min_p), np.float32(top_p)),
                 logits.device)
    return out


def sample_min_p_top_p(logits: Tensor, uniforms: Tensor, min_p: float = 0.0,
                       top_p: float = 1.0) -> Tensor:
    """Dispatch: draw one token per row of ``logits`` (rows, vocab) after min-p then top-p, using
    ``uniforms`` (rows,) in [0, 1). CuPy kernel for float32 CUDA tensors, else the reference."""
    validate(logits, uniforms, min_p, top_p)
    if _cuda.use_kernel(logits, uniforms):
        return launch_kernel(logits.contiguous(), uniforms.contiguous(), min_p, top_p)
    return reference(logits, uniforms, min_p, top_p)
