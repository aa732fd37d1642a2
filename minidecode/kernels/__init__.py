"""GPU kernels for a decoding step's bookkeeping (chapter 10), each beside its PyTorch reference.

One file a kernel; each holds the CUDA C source (``CUDA_SOURCE``, compiled at run time by NVRTC
through CuPy), a ``reference`` function (the CPU path, the same numbers as the rest of
minidecode), a ``launch_kernel`` function (the CuPy path) and a ``validate`` function that raises
a clear ``TypeError`` / ``ValueError`` before anything is launched:

1. :mod:`~minidecode.kernels.softmax_entropy`: softmax, entropy and varentropy in one pass;
2. :mod:`~minidecode.kernels.min_p_top_p`: min-p / top-p filtering and sampling from per-row
   uniforms;
3. :mod:`~minidecode.kernels.speculative_verify`: speculative sampling's acceptance tests,
   accepted length and residual sample for (batch, gamma, vocab), one launch;
4. :mod:`~minidecode.kernels.kv_compaction`: gather the kept KV entries and re-apply RoPE at
   their new positions (CR-RoPE);
5. :mod:`~minidecode.kernels.attention_scores`: attention received by each cached entry, summed
   over queries and grouped heads (H2O, SnapKV, InfiniPot's CaP).

The functions below dispatch: the CuPy kernel when every tensor is a float32 (or int64) CUDA
tensor and CuPy finds a GPU (the tensors are handed over zero-copy, as device addresses or, with
``MINIDECODE_KERNEL_ARGS=dlpack``, as DLPack views, and the kernel runs on PyTorch's current
stream), the reference otherwise. ``MINIDECODE_KERNELS=0`` in the
environment forces the reference everywhere (to compare, or to rule a kernel out when debugging).
"""

from minidecode.kernels import (
    attention_scores,
    kv_compaction,
    min_p_top_p,
    softmax_entropy,
    speculative_verify,
)
from minidecode.kernels._cuda import cupy_available, full_source, use_kernel
from minidecode.kernels.attention_scores import received_attention
from minidecode.kernels.kv_compaction import compact_kv
from minidecode.kernels.min_p_top_p import sample_min_p_top_p
from minidecode.kernels.softmax_entropy import SoftmaxEntropy
from minidecode.kernels.softmax_entropy import softmax_entropy as softmax_entropy_stats
from minidecode.kernels.speculative_verify import verify_speculative

KERNEL_MODULES = {
    "softmax_entropy": softmax_entropy,
    "min_p_top_p": min_p_top_p,
    "speculative_verify": speculative_verify,
    "kv_compaction": kv_compaction,
    "attention_scores": attention_scores,
}

__all__ = ["KERNEL_MODULES", "SoftmaxEntropy", "compact_kv", "cupy_available", "full_source",
           "received_attention", "sample_min_p_top_p", "softmax_entropy_stats", "use_kernel",
           "verify_speculative"]
