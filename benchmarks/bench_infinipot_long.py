"""InfiniPot's headline shape: read one needle document far past the trained context (up to a
million tokens) in a fixed pot, and watch the cache stay flat.

    python benchmarks/bench_infinipot_long.py --tokens 1000000 --depth 0.5 \
        --out benchmarks/results/infinipot_long.json

One document a run (reading a million tokens takes a while on a CPU); the JSON holds the answer,
whether the needle's code was still in the cache, the peak cache (entries and bytes), the time,
and a thinned trace of (tokens read, cache entries, process memory) for chapter 9's plot.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import resource
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent))

from bench_infinipot import GENERIC_CATALYSTS  # noqa: E402  (beside this script)

import minidecode  # noqa: E402
from minidecode import tinyworld as tw  # noqa: E402
from minidecode.cache_policies import InfiniPot  # noqa: E402
from minidecode.infinipot import (  # noqa: E402
    answer_after_reading,
    needle_example,
    needle_found,
    needle_kept,
)
from minidecode.tinyworld.evaluate import HELD_OUT_SEED  # noqa: E402

GENERIC_CATALYST = GENERIC_CATALYSTS["code_of"]     # the main model's question, without a key


def rss_mib() -> float:
    """The process's peak resident memory so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="main")
    parser.add_argument("--tokens", type=int, default=1_000_000)
    parser.add_argument("--depth", type=float, default=0.5)
    parser.add_argument("--pot", type=int, default=512)
    parser.add_argument("--keep", type=int, default=256)
    parser.add_argument("--chunk", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, tokenizer = minidecode.load(args.model)
    rng = random.Random(HELD_OUT_SEED + args.seed)
    t0 = time.perf_counter()
    ex = needle_example(tokenizer, args.tokens, args.depth, rng, keys=tw.HELD_OUT_KEYS,
                        style="code_of")
    built = time.perf_counter() - t0
    print(f"document: {len(ex.document_ids)} tokens, needle at token {ex.code_positions[0]} "
          f"(built in {built:.0f} s)", flush=True)
    rss_before = rss_mib()
    policy = InfiniPot(catalyst_ids=tokenizer.encode(GENERIC_CATALYST).ids)
    t0 = time.perf_counter()
    generated, result = answer_after_reading(
        model, ex.document_ids, ex.question_ids, policy, max_new_tokens=3, pot_size=args.pot,
        keep_size=args.keep, chunk_size=args.chunk)
    seconds = time.perf_counter() - t0
    step = max(1, len(result.trace) // 400)
    record = {
        "model": args.model, "tokens": len(ex.document_ids) + len(ex.question_ids),
        "depth": args.depth, "pot": args.pot, "keep": args.keep, "chunk": args.chunk,
        "catalyst": GENERIC_CATALYST, "policy": repr(policy)[:200],
        "answer": tokenizer.decode(generated), "code": ex.code,
        "found": needle_found(tokenizer, generated, ex.code),
        "needle_kept": needle_kept(result.cache, ex.code_positions),
        "peak_entries": result.peak_entries, "peak_cache_bytes": result.peak_bytes,
        "distillations": result.distillations, "seconds": round(seconds, 1),
        "tokens_per_second": round((len(ex.document_ids) + len(ex.question_ids)) / seconds, 1),
        "rss_mib_before_reading": round(rss_before, 1), "rss_mib_peak": round(rss_mib(), 1),
        "trace": result.trace[::step] + [result.trace[-1]],
        "machine": f"{platform.processor() or platform.machine()}, {args.threads} thread(s)",
        "date": time.strftime("%Y-%m-%d"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1))
    print({k: v for k, v in record.items() if k != "trace"})


if __name__ == "__main__":
    main()
