"""GPU kernels (chapter 10): each CuPy kernel against its PyTorch eager equivalent and against the
device's measured copy bandwidth, at decode-realistic sizes, in one run.

For every kernel and size: median time per call (CUDA events, after warm-up, launch overhead
included) and the GPU's own time (calls queued behind a busy GPU, launch overhead hidden), the
bytes the operation must move (inputs read once, outputs written once), the achieved GB/s, that
as a fraction of a measured device-to-device copy (``dst.copy_(src)`` of 1 GiB: 2 GiB moved), and
the speed-up over the same computation as PyTorch eager ops (minidecode's own code with the
kernels switched off, ``MINIDECODE_KERNELS=0``). Every kernel's output is checked against its
reference first.

    python benchmarks/bench_kernels.py --write-results      # on a machine with a GPU and CuPy
    python benchmarks/bench_kernels.py --from-json benchmarks/results/kernels.json --write-results

Needs an NVIDIA GPU, CUDA torch and CuPy; without them it says so, exits with status 2 and writes
nothing. Results: benchmarks/results/kernels.json (notebook 10 shows them) and the "Chapter 10"
section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import math
import os
import statistics
import sys
import traceback
from pathlib import Path

import torch
from results_md import (  # benchmarks/results_md.py, beside this script
    add_results_arguments,
    replace_section,
    rerender_from_json,
    save_and_report,
)

from minidecode import kernels
from minidecode.kernels import (
    attention_scores,
    kv_compaction,
    min_p_top_p,
    softmax_entropy,
    speculative_verify,
)

HERE = Path(__file__).parent
OUT = HERE / "results" / "kernels.json"
SECTION = "## Chapter 10: GPU kernels"


@contextlib.contextmanager
def environment(name: str, value: str):
    """Set the environment variable ``name`` to ``value`` inside the block, then restore it."""
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            del os.environ[name]
        else:
            os.environ[name] = old


def kernels_off():
    """minidecode's own PyTorch code, with the chapter 10 dispatch switched off."""
    return environment("MINIDECODE_KERNELS", "0")


def median_ms(fn, warmup: int, repeats: int) -> float:
    """Median wall time of ``fn()`` on the GPU, from a pair of CUDA events around each run."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def gpu_only_ms(fn, warmup: int, calls: int = 8, trials: int = 7) -> tuple[float, bool]:
    """GPU time of one ``fn()`` with the CPU's launch overhead hidden: a ``torch.cuda._sleep``
    keeps the GPU busy while the CPU queues ``calls`` back-to-back calls, so the events time the
    GPU's work alone (few calls: the driver's queue holds only some hundreds of launches, and an
    eager function makes a dozen a call). Returns the median over ``trials`` of (time of the
    calls) / ``calls``, and whether every trial was really queued: if the GPU had already woken
    up (the start event had passed) when the last call was queued, the sleep is doubled and the
    trial run again; a function that waits for the GPU (a host sync) can never be queued, and
    after a few doublings its time is returned with False: it then includes launch overhead."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    per_call, cycles, queued = [], 20_000_000, True
    while len(per_call) < trials:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda._sleep(cycles)              # ~10 ms of GPU cycles at 2 GHz, doubled as needed
        start.record()
        for _ in range(calls):
            fn()
        woke_early = start.query()             # the GPU reached the calls before they were queued
        end.record()
        end.synchronize()
        if woke_early and cycles < 16 * 20_000_000:
            cycles *= 2
            continue
        queued &= not woke_early
        per_call.append(start.elapsed_time(end) / calls)
    return statistics.median(per_call), queued


def copy_bandwidth(warmup: int, repeats: int, gib: float = 1.0) -> float:
    """GB/s of a device-to-device copy: bytes read + bytes written over the median time."""
    n = int(gib * 2**30) // 4
    src = torch.randn(n, device="cuda")
    dst = torch.empty_like(src)
    ms = median_ms(lambda: dst.copy_(src), warmup, repeats)
    return 2 * n * 4 / (ms * 1e-3) / 1e9


NOOP_SOURCE = r"""
extern "C" __global__ void noop(const float* a, const float* b, const float* c, const float* d,
                                float* e) {}
"""


def launch_overhead_us(n: int = 2000) -> dict[str, float]:
    """CPU microseconds per call of the pieces of a launch (no GPU wait: launches are async)."""
    import time

    import cupy
    import numpy as np

    from minidecode.kernels import _cuda

    tensors = [torch.zeros(8, device="cuda") for _ in range(5)]
    device = tensors[0].device

    def per_call(fn) -> float:
        fn()
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(n):
            fn()
        elapsed = time.perf_counter() - start
        torch.cuda.synchronize()
        return elapsed / n * 1e6

    timings = {"torch.empty(8)": per_call(lambda: torch.empty(8, device="cuda")),
               "torch add (one eager op)": per_call(lambda: torch.add(tensors[0], tensors[1])),
               "cupy.from_dlpack(tensor)": per_call(lambda: cupy.from_dlpack(tensors[0])),
               "np.uint64(tensor.data_ptr())": per_call(lambda: np.uint64(tensors[0].data_ptr()))}
    for mode in ("dlpack", "pointer"):
        with environment("MINIDECODE_KERNEL_ARGS", mode):
            timings[f"empty kernel, 5 tensors, {mode}"] = per_call(
                lambda: _cuda.launch(NOOP_SOURCE, "noop", (1,), (32,), tensors, device))
    return timings


# ------------------------------------------------------------------------------ one case a kernel
def case_softmax_entropy(rows: int, vocab: int, gen: torch.Generator):
    logits = torch.randn(rows, vocab, device="cuda", generator=gen) * 3
    with kernels_off():
        want = softmax_entropy.reference(logits)
    got = softmax_entropy.launch_kernel(logits)
    torch.testing.assert_close(got.entropy, want.entropy, rtol=2e-4, atol=2e-5)
    torch.testing.assert_close(got.varentropy, want.varentropy, rtol=2e-4, atol=2e-5)

    def eager():
        with kernels_off():
            softmax_entropy.reference(logits)
    return (lambda: softmax_entropy.launch_kernel(logits)), eager, 4 * rows * vocab + 12 * rows


def case_min_p_top_p(rows: int, vocab: int, gen: torch.Generator, min_p=0.05, top_p=0.9):
    from minidecode.sampling import min_p_filter, top_p_filter

    logits = torch.randn(rows, vocab, device="cuda", generator=gen) * 3
    uniforms = torch.rand(rows, device="cuda", generator=gen)
    got = min_p_top_p.launch_kernel(logits, uniforms, min_p, top_p)
    kept = min_p_top_p.keep_mask(logits, min_p, top_p)
    assert kept[torch.arange(rows, device="cuda"), got].all()

    def eager():
        scores = top_p_filter(min_p_filter(logits, min_p), top_p)
        torch.multinomial(torch.softmax(scores, dim=-1), 1, generator=gen)
    return ((lambda: min_p_top_p.launch_kernel(logits, uniforms, min_p, top_p)), eager,
            4 * rows * vocab + 12 * rows)


def case_speculative(batch: int, gamma: int, vocab: int, gen: torch.Generator):
    from minidecode.speculative import verify_draft

    target = torch.softmax(torch.randn(batch, gamma + 1, vocab, device="cuda", generator=gen) * 2,
                           dim=-1)
    draft = torch.softmax(torch.randn(batch, gamma, vocab, device="cuda", generator=gen) * 2,
                          dim=-1)
    tokens = torch.multinomial(draft.reshape(-1, vocab), 1, generator=gen).reshape(batch, gamma)
    accept = torch.rand(batch, gamma, device="cuda", generator=gen)
    sample = torch.rand(batch, device="cuda", generator=gen)
    got_len, _ = speculative_verify.launch_kernel(target, draft, tokens, accept, sample)
    want_len, _ = speculative_verify.reference(target, draft, tokens, accept, sample)
    assert torch.equal(got_len, want_len)

    def eager():
        with kernels_off():
            verify_draft(target, draft, tokens, generator=gen)
    kernel = lambda: speculative_verify.launch_kernel(target, draft, tokens, accept, sample,
                                                      check=False)
    # At most two vocab rows (p_a, q_a) per batch row must be read, plus the drafted entries.
    return kernel, eager, batch * (2 * 4 * vocab + gamma * (8 + 8 + 4) + 4 + 16)


def case_kv_compaction(batch: int, kv_heads: int, length: int, head_dim: int, n_keep: int,
                       gen: torch.Generator):
    keys = torch.randn(batch, kv_heads, length, head_dim, device="cuda", generator=gen)
    values = torch.randn_like(keys)
    positions = torch.arange(length, device="cuda").expand(batch, kv_heads, -1).contiguous()
    token_index = positions.clone()
    scores = torch.rand(batch, kv_heads, length, device="cuda", generator=gen)
    indices = scores.topk(n_keep, dim=-1).indices.sort(dim=-1).values
    new_positions = torch.arange(n_keep, device="cuda").expand(batch, kv_heads, -1).contiguous()
    args = (keys, values, positions, token_index, indices, new_positions)
    got = kv_compaction.launch_kernel(*args)
    want = kv_compaction.reference(*args)
    for got_t, want_t in zip(got, want):
        torch.testing.assert_close(got_t, want_t, rtol=1e-4, atol=1e-4)
    entries = batch * kv_heads * n_keep
    moved = 2 * 2 * 4 * entries * head_dim + 8 * entries * 6
    return ((lambda: kv_compaction.launch_kernel(*args, check=False)),
            (lambda: kv_compaction.reference(*args)), moved)


def case_attention(batch: int, heads: int, kv_heads: int, n_queries: int, n_keys: int,
                   head_dim: int, gen: torch.Generator):
    queries = torch.randn(batch, heads, n_queries, head_dim, device="cuda", generator=gen)
    keys = torch.randn(batch, kv_heads, n_keys, head_dim, device="cuda", generator=gen)
    got = attention_scores.launch_kernel(queries, keys)
    torch.testing.assert_close(got, attention_scores.reference(queries, keys), rtol=1e-4,
                               atol=1e-6)
    moved = 4 * (keys.numel() + queries.numel() + batch * kv_heads * n_keys)
    return ((lambda: attention_scores.launch_kernel(queries, keys, check=False)),
            (lambda: attention_scores.reference(queries, keys)), moved)


def cases(quick: bool):
    """(kernel name, sizes) in the order of the chapter; --quick keeps one size a kernel."""
    grid = [
        ("softmax_entropy", case_softmax_entropy, [dict(rows=r, vocab=v) for r in (64, 256)
                                                   for v in (32000, 128256)]),
        ("min_p_top_p", case_min_p_top_p, [dict(rows=r, vocab=v) for r in (64, 256)
                                           for v in (32000, 128256)]),
        ("speculative_verify", case_speculative, [dict(batch=b, gamma=g, vocab=v)
                                                  for b in (64, 256) for g in (4, 8)
                                                  for v in (32000,)]
         + [dict(batch=64, gamma=4, vocab=128256)]),
        ("kv_compaction", case_kv_compaction, [dict(batch=b, kv_heads=32, length=4096,
                                                    head_dim=128, n_keep=2048) for b in (1, 8)]),
        ("attention_scores", case_attention, [dict(batch=b, heads=32, kv_heads=kv, n_queries=16,
                                                   n_keys=4096, head_dim=128)
                                              for b in (1, 4) for kv in (8, 32)]),
    ]
    for name, make, sizes in grid:
        for size in (sizes[:1] if quick else sizes):
            yield name, make, size


# ------------------------------------------------------------------------------ report
def summary_lines(result: dict) -> list[str]:
    lines = [f"device: {result['device']}; copy bandwidth {result['copy_GBps']:.0f} GB/s "
             f"(median of {result['repeats']}, 1 GiB device-to-device); {result['date']}; "
             f"tensors passed to kernels as {result.get('kernel_args', 'dlpack')}",
             ""]
    if result.get("launch_overhead_us"):
        lines += ["CPU time per call (microseconds, mean of 2,000; launches are asynchronous): "
                  + "; ".join(f"{piece} {us:.1f}"
                              for piece, us in result["launch_overhead_us"].items()), ""]
    lines += ["| kernel | sizes | per call: kernel (us) | eager (us) | speed-up | GPU only: "
              "kernel (us) | eager (us) | speed-up | MB moved | GB/s | of copy |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in result["rows"]:
        sizes = ", ".join(f"{k}={v}" for k, v in row["sizes"].items())
        lines.append(f"| {row['kernel']} | {sizes} | {row['kernel_ms'] * 1e3:.1f} | "
                     f"{row['eager_ms'] * 1e3:.1f} | {row['speedup']:.1f}x | "
                     f"{row['kernel_gpu_ms'] * 1e3:.1f}{_mark(row, 'kernel')} | "
                     f"{row['eager_gpu_ms'] * 1e3:.1f}{_mark(row, 'eager')} | "
                     f"{row['gpu_speedup']:.1f}x | {row['bytes'] / 1e6:.1f} | "
                     f"{row['GBps']:.0f} | {row['fraction_of_copy']:.0%} |")
    for failure in result.get("failures", []):
        lines.append(f"| {failure['kernel']} | {failure['sizes']} | FAILED: {failure['error']} "
                     "| | | | | | | | |")
    if any(_mark(row, side) for row in result["rows"] for side in ("kernel", "eager")):
        lines += ["", "\\* could not be queued behind the busy GPU (it waits for the GPU, or "
                  "its CPU side takes longer than the sleep, 10-160 ms, for 8 calls): the time "
                  "includes launch overhead."]
    return lines + ["", *goal_lines(result["rows"])]


def _mark(row: dict, side: str) -> str:
    return "" if row.get(f"{side}_queued", True) else "\\*"


def goal_lines(rows: list[dict]) -> list[str]:
    """Issue 11's goals, counted over the measured sizes (GPU-only times)."""
    fused = [r for r in rows if r["kernel"] in ("softmax_entropy", "min_p_top_p")]
    lines = []
    for name in ("softmax_entropy", "min_p_top_p"):
        mine = [r for r in fused if r["kernel"] == name]
        bandwidth = sum(r["fraction_of_copy"] >= 0.7 for r in mine)
        twice = sum(r["gpu_speedup"] >= 2 for r in mine)
        lines.append(f"- {name}: >= 70% of copy bandwidth at {bandwidth} of {len(mine)} sizes "
                     f"(best {max((r['fraction_of_copy'] for r in mine), default=0):.0%}); "
                     f">= 2x eager (GPU only) at {twice} of {len(mine)} sizes.")
    faster = sum(r["gpu_speedup"] > 1 for r in rows)
    per_call = sum(r["speedup"] > 1 for r in rows)
    lines.append(f"- every kernel faster than eager: {faster} of {len(rows)} rows on GPU time, "
                 f"{per_call} of {len(rows)} per call.")
    return lines


def write_results(result: dict, lines: list[str]) -> None:
    body = [SECTION, "",
            "Each CuPy kernel of `minidecode/kernels/` against the same computation as PyTorch "
            "eager ops (minidecode's code with `MINIDECODE_KERNELS=0`), and against a measured "
            "device-to-device copy. Two times, both medians from CUDA events after warm-up: "
            "per call (one call between two events, the CPU's launch overhead included, as a "
            "decoding loop pays it) and GPU only (8 calls queued behind a `torch.cuda._sleep`, "
            "so the events time the GPU's work alone; GB/s and the fraction of copy use this one). "
            "Bytes: what the operation must read and write once (the roofline's count; a kernel "
            "that reads a row twice, from L2, gets no credit for it). Goals: softmax-"
            "entropy and sampling at >= 70% of copy bandwidth and >= 2x eager; every kernel "
            "faster than eager.", "", *lines, "",
            f"Command: `{result['command']}`. Machine: {result['device']}, torch "
            f"{result['torch']}, CuPy {result['cupy']}; date {result['date']}.", "",
            *(f"- {note}" for note in result.get("notes", [])), ""]
    replace_section(SECTION, body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_results_arguments(parser, OUT)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--quick", action="store_true", help="one size a kernel")
    args = parser.parse_args()
    if rerender_from_json(args, summary_lines, write_results):
        return
    if not torch.cuda.is_available() or not kernels.cupy_available():
        print("bench_kernels.py needs an NVIDIA GPU with CUDA torch and CuPy (pip install -e "
              "'.[gpu-cuda12]'); none found here, so nothing was measured or written.",
              file=sys.stderr)
        sys.exit(2)
    import cupy

    gen = torch.Generator(device="cuda").manual_seed(0)
    copy_gbps = copy_bandwidth(args.warmup, args.repeats)
    print(f"copy bandwidth: {copy_gbps:.0f} GB/s")
    overhead = launch_overhead_us()
    for piece, us in overhead.items():
        print(f"CPU per call: {piece:36s} {us:7.1f} us")
    rows, failures = [], []
    for name, make, size in cases(args.quick):
        try:  # a kernel that disagrees with its reference is reported, and the others still run
            kernel, eager, moved = make(**size, gen=gen)
        except (AssertionError, RuntimeError, ValueError, TypeError) as error:
            failures.append(dict(kernel=name, sizes=size, error=f"{type(error).__name__}: {error}"))
            traceback.print_exc()
            print(f"{name:20s} {size}: FAILED the check against its reference; not timed")
            continue
        # Per call, as a decoding loop pays it (CPU launch overhead included) ...
        kernel_ms = median_ms(kernel, args.warmup, args.repeats)
        eager_ms = median_ms(eager, args.warmup, args.repeats)
        # ... and the GPU's own time (launch overhead hidden): the roofline's numerator.
        kernel_gpu_ms, kernel_queued = gpu_only_ms(kernel, args.warmup)
        eager_gpu_ms, eager_queued = gpu_only_ms(eager, args.warmup)
        gbps = moved / (kernel_gpu_ms * 1e-3) / 1e9
        row = dict(kernel=name, sizes=size, kernel_ms=kernel_ms, eager_ms=eager_ms,
                   speedup=eager_ms / kernel_ms, kernel_gpu_ms=kernel_gpu_ms,
                   eager_gpu_ms=eager_gpu_ms, gpu_speedup=eager_gpu_ms / kernel_gpu_ms,
                   kernel_queued=kernel_queued, eager_queued=eager_queued,
                   bytes=moved, GBps=gbps, fraction_of_copy=gbps / copy_gbps)
        rows.append(row)
        print(f"{name:20s} {size}: per call kernel {kernel_ms * 1e3:7.1f} us, eager "
              f"{eager_ms * 1e3:7.1f} us ({row['speedup']:.1f}x); GPU only kernel "
              f"{kernel_gpu_ms * 1e3:7.1f} us, eager {eager_gpu_ms * 1e3:7.1f} us "
              f"({row['gpu_speedup']:.1f}x); {gbps:6.0f} GB/s = {row['fraction_of_copy']:.0%} "
              "of copy")
        if not math.isfinite(kernel_ms):
            raise RuntimeError(f"{name}: no timing")
    command = " ".join(["python", "benchmarks/bench_kernels.py", *sys.argv[1:]])
    result = dict(device=torch.cuda.get_device_name(), torch=torch.__version__,
                  cupy=cupy.__version__, date=datetime.date.today().isoformat(),
                  copy_GBps=copy_gbps, warmup=args.warmup, repeats=args.repeats,
                  command=command, launch_overhead_us=overhead,
                  kernel_args=os.environ.get("MINIDECODE_KERNEL_ARGS", "pointer"), rows=rows,
                  failures=failures)
    if failures:  # keep the evidence, but write no RESULTS.md section from a failing run
        args.write_results = False
    save_and_report(args, result, summary_lines, write_results)
    if failures:
        sys.exit(f"{len(failures)} case(s) disagreed with the reference: see 'failures' in "
                 f"{args.out}")


if __name__ == "__main__":
    main()
