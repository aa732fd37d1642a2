"""Launch configurations of kernels 1 and 2 (chapter 10), swept on a GPU: the evidence behind
``softmax_entropy.default_launch`` (threads a block, blocks a row) and min-p/top-p's 1,024 threads.

For each decode size, GPU time of every (threads, blocks per multiprocessor) pair, with the calls
queued behind a busy GPU (``bench_kernels.gpu_only_ms``), and the fraction of a measured copy.

    python benchmarks/sweep_kernel_launch.py > benchmarks/results/kernel_launch_sweep.txt

Needs an NVIDIA GPU, CUDA torch and CuPy.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from bench_kernels import gpu_only_ms  # noqa: E402

from minidecode.kernels import _cuda, min_p_top_p, softmax_entropy  # noqa: E402

SIZES = [(64, 32000), (64, 128256), (256, 32000), (256, 128256)]


def copy_gbps() -> float:
    src = torch.randn(1 << 28, device="cuda")
    dst = torch.empty_like(src)
    ms, _ = gpu_only_ms(lambda: dst.copy_(src), 5)
    return 2 * src.numel() * 4 / ms / 1e6


def main() -> None:
    if not torch.cuda.is_available() or not _cuda.cupy_available():
        sys.exit("needs an NVIDIA GPU with CUDA torch and CuPy")
    sms = _cuda.multiprocessor_count(0)
    copy = copy_gbps()
    print(f"{torch.cuda.get_device_name()}: {sms} multiprocessors, copy {copy:.0f} GB/s")
    gen = torch.Generator(device="cuda").manual_seed(0)
    for rows, vocab in SIZES:
        logits = torch.randn(rows, vocab, device="cuda", generator=gen) * 3
        fraction = lambda ms: 4 * rows * vocab / ms / 1e6 / copy  # noqa: E731, B023
        best = None
        for threads in (128, 256, 512, 1024):
            for per_sm in (1, 2, 4, 8, 16, 32):
                splits = max(1, min(math.ceil(per_sm * sms / rows), vocab // 1024))
                ms, _ = gpu_only_ms(lambda: softmax_entropy.launch_kernel(  # noqa: B023
                    logits, threads=threads, splits=splits), 3)  # noqa: B023
                print(f"softmax {rows}x{vocab} threads {threads:4d} per_sm {per_sm:2d} splits "
                      f"{splits:3d}: {ms * 1e3:7.1f} us {fraction(ms):5.0%}")
                if best is None or ms < best[0]:
                    best = (ms, threads, splits)
        chosen = softmax_entropy.default_launch(rows, vocab, logits.device)
        ms, _ = gpu_only_ms(lambda: softmax_entropy.launch_kernel(logits), 3)  # noqa: B023
        print(f"softmax {rows}x{vocab}: best threads {best[1]}, splits {best[2]}, "
              f"{best[0] * 1e3:.1f} us ({fraction(best[0]):.0%}); default threads {chosen[0]}, "
              f"splits {chosen[1]}, {ms * 1e3:.1f} us ({fraction(ms):.0%})")
        uniforms = torch.rand(rows, device="cuda", generator=gen)
        for threads in (256, 512, 1024):
            ms, _ = gpu_only_ms(lambda: min_p_top_p.launch_kernel(  # noqa: B023
                logits, uniforms, 0.05, 0.9, threads=threads), 3)  # noqa: B023
            print(f"min_p_top_p {rows}x{vocab} threads {threads:4d}: {ms * 1e3:7.1f} us "
                  f"{fraction(ms):5.0%}")


if __name__ == "__main__":
    main()
