"""GPU kernels (chapter 10): each CuPy kernel against its PyTorch eager equivalent and against the
device's measured copy bandwidth, at decode-realistic sizes, in one run.

For every kernel and size: median time of many runs (CUDA events, after warm-up), the bytes the
operation must move (inputs read once, outputs written once), the achieved GB/s, that as a fraction
of a measured device-to-device copy (``dst.copy_(src)`` of 1 GiB: 2 GiB moved), and the speed-up
over the same computation as PyTorch eager ops (minidecode's own code with the kernels switched off,
``MINIDECODE_KERNELS=0``). Every kernel's output is checked against its reference first.

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
SECTION = "## Chapter 10: GPU kernels (issue 11)"
COMMAND = "python benchmarks/bench_kernels.py --write-results"


@contextlib.contextmanager
def kernels_off():
    """minidecode's own PyTorch code, with the chapter 10 dispatch switched off."""
    old = os.environ.get("MINIDECODE_KERNELS")
    os.environ["MINIDECODE_KERNELS"] = "0"
    try:
        yield
    finally:
        if old is None:
            del os.environ["MINIDECODE_KERNELS"]
        else:
            os.environ["MINIDECODE_KERNELS"] = old


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


def copy_bandwidth(warmup: int, repeats: int, gib: float = 1.0) -> float:
    """GB/s of a device-to-device copy: bytes read + bytes written over the median time."""
    n = int(gib * 2**30) // 4
    src = torch.randn(n, device="cuda")
    dst = torch.empty_like(src)
    ms = median_ms(lambda: dst.copy_(src), warmup, repeats)
    return 2 * n * 4 / (ms * 1e-3) / 1e9


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
             f"(median of {result['repeats']}, 1 GiB device-to-device); {result['date']}",
             "",
             "| kernel | sizes | kernel (us) | eager (us) | speed-up | MB moved | GB/s | "
             "of copy |",
             "|---|---|---|---|---|---|---|---|"]
    for row in result["rows"]:
        sizes = ", ".join(f"{k}={v}" for k, v in row["sizes"].items())
        lines.append(f"| {row['kernel']} | {sizes} | {row['kernel_ms'] * 1e3:.1f} | "
                     f"{row['eager_ms'] * 1e3:.1f} | {row['speedup']:.1f}x | "
                     f"{row['bytes'] / 1e6:.1f} | {row['GBps']:.0f} | "
                     f"{row['fraction_of_copy']:.0%} |")
    return lines


def write_results(result: dict, lines: list[str]) -> None:
    body = [SECTION, "",
            "Each CuPy kernel of `minidecode/kernels/` against the same computation as PyTorch "
            "eager ops (minidecode's code with `MINIDECODE_KERNELS=0`), and against a measured "
            "device-to-device copy. Time: median of many runs, CUDA events, after warm-up. "
            "Bytes: what the operation must read and write once (the roofline's count; a kernel "
            "that reads a row twice, from L2, gets no credit for it). Goals (issue 11): softmax-"
            "entropy and sampling at >= 70% of copy bandwidth and >= 2x eager; every kernel "
            "faster than eager.", "", *lines, "",
            f"Command: `{result['command']}`. Machine: {result['device']}, torch "
            f"{result['torch']}, CuPy {result['cupy']}; date {result['date']}.", ""]
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
    rows = []
    for name, make, size in cases(args.quick):
        kernel, eager, moved = make(**size, gen=gen)
        kernel_ms = median_ms(kernel, args.warmup, args.repeats)
        eager_ms = median_ms(eager, args.warmup, args.repeats)
        gbps = moved / (kernel_ms * 1e-3) / 1e9
        row = dict(kernel=name, sizes=size, kernel_ms=kernel_ms, eager_ms=eager_ms,
                   speedup=eager_ms / kernel_ms, bytes=moved, GBps=gbps,
                   fraction_of_copy=gbps / copy_gbps)
        rows.append(row)
        print(f"{name:20s} {size}: kernel {kernel_ms * 1e3:8.1f} us, eager {eager_ms * 1e3:8.1f} "
              f"us ({row['speedup']:.1f}x), {gbps:6.0f} GB/s = {row['fraction_of_copy']:.0%} "
              "of copy")
        if not math.isfinite(kernel_ms):
            raise RuntimeError(f"{name}: no timing")
    command = " ".join(["python", "benchmarks/bench_kernels.py", *sys.argv[1:]])
    result = dict(device=torch.cuda.get_device_name(), torch=torch.__version__,
                  cupy=cupy.__version__, date=datetime.date.today().isoformat(),
                  copy_GBps=copy_gbps, warmup=args.warmup, repeats=args.repeats,
                  command=command, rows=rows)
    save_and_report(args, result, summary_lines, write_results)


if __name__ == "__main__":
    main()
