"""Kernel 1: softmax, entropy and varentropy of every row of logits, in one pass over memory.

For a row of logits z (vocab,), with y_i = z_i - max(z), S = sum_i exp(y_i), p_i = exp(y_i) / S:

    log Z = max(z) + log S                           (the softmax's normaliser)
    H     = -sum_i p_i log p_i = log S - E_p[y]      (entropy, nats)
    V     = sum_i p_i (log p_i + H)^2 = Var_p[y]     (varentropy, nats^2)

because log p_i = y_i - log S. So one read of the row is enough if every thread keeps, for the
entries it read, the *weighted moments* (running max m, mass S, mean of y, variance of y) and the
threads then merge their moments. The merge of two parts a, b (Chan, Golub & LeVeque 1979, the
parallel form of Welford's update) with weights w = S * exp(m - M), M = max(m_a, m_b):

    mean = (w_a mean_a' + w_b mean_b') / W,    mean' = mean shifted to the common max M
    var  = (w_a var_a + w_b var_b) / W + w_a w_b (mean_a' - mean_b')^2 / W^2,    W = w_a + w_b

is exact algebra, and (unlike E[y^2] - E[y]^2 over the whole row) it does not cancel.
The formulas are those of :mod:`minidecode.entropy`; the reference below computes them the same way.
:func:`blocked_moments` replays the kernel's thread layout and merge tree on CPU, in PyTorch, so
the algorithm can be checked without a GPU.

Layout: one block of ``threads`` threads per row, or, when there are fewer rows than
multiprocessors, ``splits`` blocks per row, each on one contiguous part, whose moments a second,
tiny launch merges (the same merge again). Thread t of a block reads entries t, t + threads, ... of
its part (float4 loads, four of them in flight, when the row is 16-byte aligned), so neighbouring
threads read neighbouring addresses (coalesced). Bytes moved: 4 * rows * vocab read, 12 * rows
written (plus 4 * rows * vocab more read and written if the probabilities are asked for).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from minidecode.kernels import _cuda

CUDA_SOURCE = r"""
// ---------------------------------------------------------------- kernel 1: softmax + entropy
// Weighted moments of y = z - m over the entries a thread (or a group of threads) has read:
// m = their max logit, mass = sum exp(z - m), mean and var of y under the weights exp(z - m).
struct Moments { float m, mass, mean, var; };

// Chan's merge of two parts' moments (see the Python docstring). An empty part (mass 0) is neutral.
__device__ __forceinline__ Moments merge_moments(Moments a, Moments b) {
    if (b.mass == 0.0f) return a;
    if (a.mass == 0.0f) return b;
    const float m = fmaxf(a.m, b.m);
    const float wa = a.mass * expf(a.m - m), wb = b.mass * expf(b.m - m);
    const float mean_a = a.mean + (a.m - m), mean_b = b.mean + (b.m - m);  // y relative to m
    const float w = wa + wb;
    const float delta = mean_a - mean_b;
    Moments r;
    r.m = m;
    r.mass = w;
    r.mean = (wa * mean_a + wb * mean_b) / w;
    r.var = (wa * a.var + wb * b.var) / w + (wa / w) * (wb / w) * delta * delta;
    return r;
}

// Per-thread running sums: mass = sum e, first = sum e*y, second = sum e*y^2, with y = z - m for
// the thread's current max m. A new max rescales them (rare after the first few entries).
struct Running { float m, mass, first, second; };

__device__ __forceinline__ void rescale(Running& r, float new_max) {
    if (r.mass > 0.0f) {
        const float d = r.m - new_max;                // < 0: every old y shifts by d
        const float c = __expf(d);
        r.second = c * (r.second + 2.0f * d * r.first + d * d * r.mass);
        r.first = c * (r.first + d * r.mass);
        r.mass = c * r.mass;
    }
    r.m = new_max;
}

// Add one logit z <= r.m. A masked token (-inf) gives e = 0 and must add nothing, not 0 * inf.
__device__ __forceinline__ void add_shifted(Running& r, float z) {
    const float y = z - r.m;
    const float e = __expf(y);                        // the fast exp: one ex2.approx instruction
    const float y0 = e > 0.0f ? y : 0.0f;
    r.mass += e;
    r.first += e * y0;
    r.second += e * y0 * y0;
}

__device__ __forceinline__ void running_add(Running& r, float z) {
    if (z == MD_NEG_INF) return;
    if (z > r.m) rescale(r, z);
    add_shifted(r, z);
}

// Four logits at once: one max test for the four, then four branch-free updates.
__device__ __forceinline__ void running_add4(Running& r, float4 v) {
    const float m4 = fmaxf(fmaxf(v.x, v.y), fmaxf(v.z, v.w));
    if (m4 == MD_NEG_INF) return;
    if (m4 > r.m) rescale(r, m4);
    add_shifted(r, v.x); add_shifted(r, v.y); add_shifted(r, v.z); add_shifted(r, v.w);
}

__device__ __forceinline__ Moments warp_merge(Moments v) {
    for (int offset = 16; offset > 0; offset >>= 1) {
        Moments other;
        other.m = __shfl_xor_sync(MD_FULL_MASK, v.m, offset);
        other.mass = __shfl_xor_sync(MD_FULL_MASK, v.mass, offset);
        other.mean = __shfl_xor_sync(MD_FULL_MASK, v.mean, offset);
        other.var = __shfl_xor_sync(MD_FULL_MASK, v.var, offset);
        v = merge_moments(v, other);
    }
    return v;
}

// The row's statistics from its merged moments; returns log Z (NaN if every logit is -inf).
__device__ float write_stats(Moments v, i64 row, float* entropy, float* varentropy,
                             float* log_norm) {
    float lz = MD_NAN;
    if (v.mass > 0.0f) {
        const float log_mass = logf(v.mass);
        entropy[row] = log_mass - v.mean;             // H = log S - E[y]
        varentropy[row] = v.var;                      // V = Var[y]
        lz = v.m + log_mass;
    } else {                                          // every logit -inf: no distribution
        entropy[row] = MD_NAN;
        varentropy[row] = MD_NAN;
    }
    log_norm[row] = lz;
    return lz;
}

// grid = (rows, splits), block = (threads,), threads a multiple of 32 and <= 1024; no dynamic
// shared memory. Block (row, s) reads entries [s * chunk, (s + 1) * chunk) of its row (chunk a
// multiple of 4). With one split it writes entropy[row], varentropy[row], log_norm[row] and, if
// write_probs, probs[row, :]. With several it writes its moments to partial[row, s, 0:4] and
// softmax_entropy_merge finishes the row. vectorized != 0 promises vocab % 4 == 0 and a 16-byte
// aligned logits pointer (float4 loads).
extern "C" __global__ void softmax_entropy(const float* __restrict__ logits,
                                           float* __restrict__ entropy,
                                           float* __restrict__ varentropy,
                                           float* __restrict__ log_norm,
                                           float* __restrict__ probs,
                                           float* __restrict__ partial,
                                           int vocab, int chunk, int write_probs,
                                           int vectorized) {
    __shared__ Moments warp_moments[32];
    __shared__ float row_log_norm;
    const i64 row = blockIdx.x;
    const float* z = logits + row * (i64)vocab;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warps = blockDim.x >> 5;
    const int begin = blockIdx.y * chunk, end = min(vocab, begin + chunk);

    Running r = {MD_NEG_INF, 0.0f, 0.0f, 0.0f};
    if (vectorized) {
        // Four float4 loads issued before any is used: 64 bytes in flight per thread.
        const float4* z4 = reinterpret_cast<const float4*>(z);
        const float4 none = make_float4(MD_NEG_INF, MD_NEG_INF, MD_NEG_INF, MD_NEG_INF);
        for (int i = begin / 4 + threadIdx.x; i < end / 4; i += 4 * blockDim.x) {
            float4 v[4];
            #pragma unroll
            for (int u = 0; u < 4; ++u) {
                const int k = i + u * blockDim.x;
                v[u] = k < end / 4 ? z4[k] : none;
            }
            #pragma unroll
            for (int u = 0; u < 4; ++u) running_add4(r, v[u]);
        }
    } else {
        for (int i = begin + threadIdx.x; i < end; i += blockDim.x) running_add(r, z[i]);
    }
    Moments mine;
    mine.m = r.m;
    mine.mass = r.mass;
    mine.mean = r.mass > 0.0f ? r.first / r.mass : 0.0f;
    mine.var = r.mass > 0.0f ? fmaxf(r.second / r.mass - mine.mean * mine.mean, 0.0f) : 0.0f;

    mine = warp_merge(mine);                          // 32 threads -> lane values all equal
    if (lane == 0) warp_moments[warp] = mine;
    __syncthreads();
    if (warp == 0) {
        Moments v = lane < n_warps ? warp_moments[lane] : Moments{MD_NEG_INF, 0.0f, 0.0f, 0.0f};
        v = warp_merge(v);
        if (lane == 0) {
            if (gridDim.y > 1) {                      // one part of the row: leave the moments
                float* out = partial + (row * gridDim.y + blockIdx.y) * 4;
                out[0] = v.m; out[1] = v.mass; out[2] = v.mean; out[3] = v.var;
            } else {
                row_log_norm = write_stats(v, row, entropy, varentropy, log_norm);
            }
        }
    }
    if (!write_probs || gridDim.y > 1) return;        // uniform across the block
    __syncthreads();
    const float lz = row_log_norm;
    float* p = probs + row * (i64)vocab;
    for (int i = threadIdx.x; i < vocab; i += blockDim.x) p[i] = expf(z[i] - lz);
}

// grid = (rows,), block = (32,): merge a row's parts, left by softmax_entropy with splits > 1.
extern "C" __global__ void softmax_entropy_merge(const float* __restrict__ partial,
                                                 float* __restrict__ entropy,
                                                 float* __restrict__ varentropy,
                                                 float* __restrict__ log_norm, int splits) {
    const i64 row = blockIdx.x;
    Moments v = {MD_NEG_INF, 0.0f, 0.0f, 0.0f};
    for (int s = threadIdx.x; s < splits; s += 32) {
        const float* in = partial + (row * splits + s) * 4;
        v = merge_moments(v, Moments{in[0], in[1], in[2], in[3]});
    }
    v = warp_merge(v);
    if (threadIdx.x == 0) write_stats(v, row, entropy, varentropy, log_norm);
}
"""

KERNEL_NAME = "softmax_entropy"


class SoftmaxEntropy(NamedTuple):
    """entropy, varentropy, log_norm: (rows,) float32; probs: (rows, vocab) or None."""

    entropy: Tensor
    varentropy: Tensor
    log_norm: Tensor
    probs: Tensor | None


def validate(logits: Tensor, *, for_kernel: bool = False) -> None:
    """logits: (rows, vocab) float; for the kernel also float32 and contiguous."""
    _cuda.check_tensor(logits, "logits", dtypes=_cuda.FLOAT32 if for_kernel else _cuda.FLOATS,
                       dim=2, contiguous=for_kernel)
    if for_kernel:
        _cuda.check_cuda(logits, "logits")


def reference(logits: Tensor, *, return_probs: bool = False) -> SoftmaxEntropy:
    """The CPU path: entropy H = -sum p log p, varentropy sum p (log p + H)^2 and ``logsumexp``,
    the numbers of :func:`minidecode.entropy.entropy_varentropy` (the tests compare the two)."""
    validate(logits)
    work = logits.double() if logits.dtype == torch.float64 else logits.float()
    log_probs = torch.log_softmax(work, dim=-1)
    p = log_probs.exp()
    surprisal = torch.where(p > 0, -log_probs, torch.zeros_like(log_probs))
    entropy = (p * surprisal).sum(dim=-1)
    deviation = torch.where(p > 0, surprisal - entropy.unsqueeze(-1), torch.zeros_like(p))
    varentropy = (p * deviation.square()).sum(dim=-1)
    log_norm = torch.logsumexp(work, dim=-1)
    probs = torch.softmax(work, dim=-1) if return_probs else None
    return SoftmaxEntropy(entropy, varentropy, log_norm, probs)


def default_launch(rows: int, vocab: int, device: torch.device) -> tuple[int, int]:
    """(threads, splits): 512 threads a block for rows of 64K logits or more, else 256, and rows
    split across blocks only as far as needed for one block on every multiprocessor. Chosen by a
    sweep on an H200 (benchmarks/RESULTS.md): more, shorter blocks lost time to their fixed cost,
    e.g. 256 x 128,256 logits took 37 us as 256 blocks of 512 threads and 52 us as 1,280 of 256."""
    index = device.index if device.index is not None else torch.cuda.current_device()
    splits = -(-_cuda.multiprocessor_count(index) // rows)
    return (512 if vocab >= 65536 else 256), max(1, min(splits, vocab // 2048))


def launch_kernel(logits: Tensor, *, return_probs: bool = False, threads: int | None = None,
                  splits: int | None = None, out: SoftmaxEntropy | None = None
                  ) -> SoftmaxEntropy:
    """The CuPy path: one launch with one block per row, or (``splits`` > 1) ``splits`` blocks per
    row and a second launch that merges their moments. ``return_probs`` needs one block per row
    (the probabilities need the whole row's normaliser). ``out`` lets a test pass pre-filled
    outputs."""
    validate(logits, for_kernel=True)
    rows, vocab = logits.shape
    default_threads, default_splits = default_launch(rows, vocab, logits.device)
    threads = threads or default_threads
    if return_probs:
        splits = 1
    elif splits is None:
        splits = default_splits
    if not 1 <= splits <= vocab:
        raise ValueError(f"splits must be in [1, vocab = {vocab}], got {splits}")
    chunk = -(-vocab // (4 * splits)) * 4            # a multiple of 4: float4 loads stay aligned
    splits = -(-vocab // chunk)
    if out is None:
        empty = lambda *shape: torch.empty(*shape, dtype=torch.float32, device=logits.device)
        out = SoftmaxEntropy(empty(rows), empty(rows), empty(rows),
                             empty(rows, vocab) if return_probs else None)
    probs = out.probs if return_probs else out.entropy    # a valid pointer the kernel never writes
    partial = (torch.empty(rows, splits, 4, dtype=torch.float32, device=logits.device)
               if splits > 1 else out.entropy)
    vectorized = int(vocab % 4 == 0 and logits.data_ptr() % 16 == 0)
    _cuda.launch(CUDA_SOURCE, KERNEL_NAME, (rows, splits), (threads,),
                 (logits, out.entropy, out.varentropy, out.log_norm, probs, partial, _i32(vocab),
                  _i32(chunk), _i32(int(return_probs)), _i32(vectorized)), logits.device)
    if splits > 1:
        _cuda.launch(CUDA_SOURCE, "softmax_entropy_merge", (rows,), (32,),
                     (partial, out.entropy, out.varentropy, out.log_norm, _i32(splits)),
                     logits.device)
    return out if return_probs else out._replace(probs=None)


def softmax_entropy(logits: Tensor, *, return_probs: bool = False) -> SoftmaxEntropy:
    """Dispatch: the CuPy kernel for float32 CUDA logits (made contiguous), else the reference.

    logits: (rows, vocab); ``-inf`` marks removed tokens. Returns :class:`SoftmaxEntropy`.
    """
    validate(logits)
    if _cuda.use_kernel(logits):
        return launch_kernel(logits.contiguous(), return_probs=return_probs)
    return reference(logits, return_probs=return_probs)


# ------------------------------------------------------------------------------ the layout on CPU
def merge_moments(a: tuple[Tensor, ...], b: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """Chan's merge of (max, mass, mean, var) moments, elementwise; the kernel's merge_moments."""
    m_a, mass_a, mean_a, var_a = a
    m_b, mass_b, mean_b, var_b = b
    m = torch.maximum(m_a, m_b)
    finite_m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    w_a = torch.where(mass_a > 0, mass_a * torch.exp(m_a - finite_m), torch.zeros_like(mass_a))
    w_b = torch.where(mass_b > 0, mass_b * torch.exp(m_b - finite_m), torch.zeros_like(mass_b))
    shifted_a = torch.where(mass_a > 0, mean_a + (m_a - finite_m), torch.zeros_like(mean_a))
    shifted_b = torch.where(mass_b > 0, mean_b + (m_b - finite_m), torch.zeros_like(mean_b))
    w = w_a + w_b
    safe_w = torch.where(w > 0, w, torch.ones_like(w))
    mean = (w_a * shifted_a + w_b * shifted_b) / safe_w
    var = ((w_a * var_a + w_b * var_b) / safe_w
           + (w_a / safe_w) * (w_b / safe_w) * (shifted_a - shifted_b) ** 2)
    return m, w, mean, var


def blocked_moments(logits: Tensor, threads: int = 32) -> tuple[Tensor, Tensor]:
    """The kernel's algorithm on CPU: thread t of ``threads`` takes entries t, t + threads, ...;
    each computes its (max, mass, mean, var); a binary tree of Chan merges combines them, as the
    warp shuffles do. Returns (entropy, varentropy) per row, float64. ``threads`` a power of 2."""
    if threads < 1 or threads & (threads - 1):
        raise ValueError(f"threads must be a power of 2, got {threads}")
    rows, vocab = logits.shape
    padded = torch.full((rows, -(-vocab // threads) * threads), float("-inf"), dtype=torch.float64)
    padded[:, :vocab] = logits.double()
    per_thread = padded.view(rows, -1, threads).transpose(1, 2)     # (rows, threads, per thread)
    m = per_thread.amax(dim=-1)
    finite_m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    y = per_thread - finite_m[..., None]
    e = torch.exp(y)
    mass = e.sum(dim=-1)
    safe = torch.where(mass > 0, mass, torch.ones_like(mass))
    y0 = torch.where(e > 0, y, torch.zeros_like(y))
    mean = (e * y0).sum(dim=-1) / safe
    var = (e * (y0 - mean[..., None]) ** 2).sum(dim=-1) / safe
    moments = (m, mass, mean, var)
    while moments[0].shape[1] > 1:                                     # the shuffle tree
        half = moments[0].shape[1] // 2
        moments = merge_moments(tuple(t[:, :half] for t in moments),
                                tuple(t[:, half:] for t in moments))
    _, mass, mean, var = (t[:, 0] for t in moments)
    return torch.log(mass) - mean, var


def _i32(value: int):
    import numpy as np

    return np.int32(value)
