"""What every kernel of :mod:`minidecode.kernels` shares: the CUDA prelude, the lazy CuPy import,
the compile cache, the zero-copy hand-over from PyTorch, and the checks that run before a launch.

CuPy is optional (``pip install -e '.[gpu-cuda12]'``). Nothing here imports it at module level, so
``import minidecode.kernels`` works on a laptop without CUDA; only a launcher imports it.

The CUDA sources are compiled by NVRTC at run time (CuPy's ``RawModule``). NVRTC sees no C library
header, so the prelude spells out what the kernels need: infinity and NaN as bit patterns
(``INFINITY`` is a macro of ``math.h``, undefined under NVRTC), warp and block reductions, and one
inverse-CDF sampler that kernels 2 and 3 share.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence

import torch
from torch import Tensor

THREADS_PER_BLOCK = 1024  # the largest block CUDA allows; every kernel's block is a multiple of 32

PRELUDE = r"""
// ---------------------------------------------------------------- minidecode kernel prelude
// NVRTC compiles without math.h: INFINITY, NAN and FLT_MAX do not exist here. Spell them as bits.
#define MD_INF      __int_as_float(0x7f800000)
#define MD_NEG_INF  __int_as_float(0xff800000)
#define MD_NAN      __int_as_float(0x7fc00000)
#define MD_FULL_MASK 0xffffffffu
typedef long long i64;

// Sum / max of one value per lane over a warp; every lane receives the result (xor butterfly).
__device__ __forceinline__ float warp_sum(float v) {
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(MD_FULL_MASK, v, offset);
    return v;
}
__device__ __forceinline__ float warp_max(float v) {
    for (int offset = 16; offset > 0; offset >>= 1)
        v = fmaxf(v, __shfl_xor_sync(MD_FULL_MASK, v, offset));
    return v;
}

// Block-wide sum / max. Every thread of the block must call it (it synchronises); blockDim.x is a
// multiple of 32; scratch holds 32 floats of shared memory. Every thread receives the result.
__device__ float block_sum(float v, float* scratch) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warps = blockDim.x >> 5;
    v = warp_sum(v);
    __syncthreads();                      // scratch may still be read by a previous call
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = (lane < n_warps) ? scratch[lane] : 0.0f;
    return warp_sum(v);                   // every warp reduces the partials: no third barrier
}
__device__ float block_max(float v, float* scratch) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warps = blockDim.x >> 5;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = (lane < n_warps) ? scratch[lane] : MD_NEG_INF;
    return warp_max(v);
}

// Inverse-CDF sampling of one row: the first index i in [0, n) whose inclusive prefix sum of
// weight(i) exceeds target (target = u * total weight, u in [0, 1)). The row is walked in tiles of
// 4 * blockDim.x consecutive entries; thread t owns entries 4t .. 4t+3 of a tile, so a block-wide
// exclusive scan of the per-thread sums tells each thread the mass before its four entries, and
// only the thread whose entries cross the target walks them. If rounding leaves target >= the
// total, the last index with positive weight is returned. Every thread calls it and receives the
// index. scratch: 32 floats and 2 ints of shared memory.
template <typename Weight>
__device__ int inverse_cdf(const Weight& weight, int n, float target, float* scratch,
                           int* shared_ints) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warps = blockDim.x >> 5;
    int* found = shared_ints;             // smallest crossing index (n: not found yet)
    int* last_positive = shared_ints + 1; // fallback when rounding never crosses
    if (threadIdx.x == 0) { *found = n; *last_positive = -1; }
    __syncthreads();
    float before_tile = 0.0f;             // mass of all earlier tiles, the same in every thread
    int my_last_positive = -1;
    const int tile = 4 * blockDim.x;
    for (int base = 0; base < n; base += tile) {
        const int first = base + 4 * threadIdx.x;
        float w[4];
        float mine = 0.0f;
        for (int j = 0; j < 4; ++j) {
            const int i = first + j;
            w[j] = (i < n) ? weight(i) : 0.0f;
            mine += w[j];
            if (w[j] > 0.0f) my_last_positive = i;
        }
        // Inclusive scan inside the warp, then over the warps' totals.
        float inclusive = mine;
        for (int offset = 1; offset < 32; offset <<= 1) {
            const float up = __shfl_up_sync(MD_FULL_MASK, inclusive, offset);
            if (lane >= offset) inclusive += up;
        }
        if (lane == 31) scratch[warp] = inclusive;
        __syncthreads();
        if (warp == 0) {
            float total = (lane < n_warps) ? scratch[lane] : 0.0f;
            for (int offset = 1; offset < 32; offset <<= 1) {
                const float up = __shfl_up_sync(MD_FULL_MASK, total, offset);
                if (lane >= offset) total += up;
            }
            if (lane < n_warps) scratch[lane] = total;   // now: inclusive totals of warps 0..lane
        }
        __syncthreads();
        const float before = before_tile + (warp > 0 ? scratch[warp - 1] : 0.0f) + inclusive - mine;
        if (mine > 0.0f && before <= target && target < before + mine) {
            float running = before;
            int pick = -1;
            for (int j = 0; j < 4; ++j) {
                if (w[j] > 0.0f) pick = first + j;      // rounding guard: the last positive one
                running += w[j];
                if (w[j] > 0.0f && running > target) { pick = first + j; break; }
            }
            atomicMin(found, pick);
        }
        const float tile_total = scratch[n_warps - 1];
        __syncthreads();
        const int result = *found;
        if (result < n) return result;                 // read by every thread: no divergence
        before_tile += tile_total;
        __syncthreads();                               // scratch is rewritten by the next tile
    }
    atomicMax(last_positive, my_last_positive);
    __syncthreads();
    const int fallback = *last_positive;
    return fallback < 0 ? 0 : fallback;
}
"""


# ------------------------------------------------------------------------------ CuPy, lazily
@functools.lru_cache(maxsize=1)
def _import_cupy():
    """CuPy, or None when it is not installed or finds no usable GPU."""
    try:
        import cupy
    except Exception:  # ImportError, or a CUDA library that fails to load
        return None
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            return None
    except Exception:
        return None
    return cupy


def cupy_available() -> bool:
    """True when CuPy imports and sees at least one GPU."""
    return _import_cupy() is not None


def use_kernel(*tensors: Tensor) -> bool:
    """Dispatch rule: the CuPy kernel when every tensor lives on a CUDA device, CuPy is usable and
    the environment variable ``MINIDECODE_KERNELS`` is not ``0``; otherwise the PyTorch reference.
    Float tensors must also be float32 (the kernels' one float type)."""
    if os.environ.get("MINIDECODE_KERNELS", "1") == "0":
        return False
    if not all(isinstance(t, Tensor) and t.is_cuda for t in tensors):
        return False
    if any(t.is_floating_point() and t.dtype != torch.float32 for t in tensors):
        return False
    return cupy_available()


def require_cupy():
    cupy = _import_cupy()
    if cupy is None:
        raise RuntimeError("the CuPy kernels need CuPy and an NVIDIA GPU: pip install -e "
                           "'.[gpu-cuda12]' (or gpu-cuda13); without them, call the dispatch "
                           "function, which falls back to the PyTorch reference")
    return cupy


@functools.cache
def compiled_module(source: str):
    """The ``cupy.RawModule`` of ``PRELUDE + source``, compiled once per process by NVRTC."""
    cupy = require_cupy()
    return cupy.RawModule(code=PRELUDE + source, options=("--std=c++14",))


@functools.cache
def compiled_kernel(source: str, name: str, device_index: int):
    """Kernel ``name`` of :func:`compiled_module`, looked up once per device."""
    return compiled_module(source).get_function(name)


def full_source(source: str) -> str:
    """What NVRTC (or ``nvcc -ptx``) compiles: the prelude, then the kernel's own source."""
    return PRELUDE + source


def as_cupy(tensor: Tensor):
    """Zero-copy view of a CUDA tensor as a CuPy array (DLPack): no bytes move."""
    return require_cupy().from_dlpack(tensor)


def kernel_argument(value):
    """How a launch hands ``value`` to the kernel; both ways are zero-copy.

    A tensor goes as its bare device address (``MINIDECODE_KERNEL_ARGS=pointer``, the default: an
    8-byte integer, which is all a ``float*`` parameter is) or as a CuPy view made through DLPack
    (``=dlpack``, the standard hand-over between array libraries). On the H200 of
    benchmarks/RESULTS.md a DLPack view cost 19-35 us of CPU time a tensor, and a launch with five
    tensors 119-181 us against 19-33 us with addresses: more than most of these kernels take on
    the GPU. Numbers pass as they are."""
    if not isinstance(value, Tensor):
        return value
    if os.environ.get("MINIDECODE_KERNEL_ARGS", "pointer") == "dlpack":
        return as_cupy(value)
    import numpy as np

    return np.uint64(value.data_ptr())


@functools.lru_cache(maxsize=64)
def _external_stream(pointer: int, device_index: int):
    """CuPy's handle on a stream PyTorch owns, made once per (stream, device)."""
    return require_cupy().cuda.ExternalStream(pointer, device_index)


@functools.cache
def multiprocessor_count(device_index: int) -> int:
    """Streaming multiprocessors of a GPU: how many blocks run at once, roughly."""
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def launch(source: str, name: str, grid: tuple[int, ...], block: tuple[int, ...],
           args: Sequence, device: torch.device, shared_mem: int = 0) -> None:
    """Launch kernel ``name`` of ``source`` on PyTorch's current stream of ``device``, so it is
    ordered with the torch operations before and after it, like any torch op."""
    cupy = require_cupy()
    index = device.index if device.index is not None else torch.cuda.current_device()
    with cupy.cuda.Device(index):
        stream = _external_stream(torch.cuda.current_stream(device).cuda_stream, index)
        with stream:
            # Converted under torch's stream, so a DLPack hand-over needs no cross-stream wait.
            converted = [kernel_argument(a) for a in args]
            kernel = compiled_kernel(source, name, index)
            kernel(grid, block, tuple(converted), shared_mem=shared_mem)


# ------------------------------------------------------------------------------ checks
def check_tensor(tensor: object, name: str, *, dtypes: Sequence[torch.dtype], dim: int | None
                 = None, contiguous: bool = False) -> Tensor:
    """TypeError for a non-tensor or a wrong dtype; ValueError for a wrong rank, an empty tensor,
    or (``contiguous``) a tensor whose rows are not laid out one after the other in memory."""
    if not isinstance(tensor, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
    if tensor.dtype not in dtypes:
        allowed = ", ".join(str(d).replace("torch.", "") for d in dtypes)
        raise TypeError(f"{name} must have dtype {allowed}, got {str(tensor.dtype)[6:]}")
    if dim is not None and tensor.dim() != dim:
        raise ValueError(f"{name} must be {dim}-d, got shape {tuple(tensor.shape)}")
    if tensor.numel() == 0 and dim is not None:
        raise ValueError(f"{name} must not be empty, got shape {tuple(tensor.shape)}")
    if contiguous and not tensor.is_contiguous():
        raise ValueError(f"{name} must be contiguous (the kernel reads it row after row), got "
                         f"strides {tensor.stride()} for shape {tuple(tensor.shape)}: call "
                         ".contiguous() first")
    return tensor


def check_same_device(**tensors: Tensor) -> None:
    devices = {name: t.device for name, t in tensors.items()}
    if len(set(devices.values())) > 1:
        listed = ", ".join(f"{n} on {d}" for n, d in devices.items())
        raise ValueError(f"all inputs must be on one device, got {listed}")


def check_cuda(tensor: Tensor, name: str) -> None:
    if not tensor.is_cuda:
        raise ValueError(f"{name} is on {tensor.device}: the CuPy kernel needs CUDA tensors (the "
                         "dispatch function runs the PyTorch reference on CPU)")


FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
FLOAT32 = (torch.float32,)
LONG = (torch.int64,)
