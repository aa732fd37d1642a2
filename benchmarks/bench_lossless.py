"""Speculative sampling is lossless (chapter 07): the p-values of many seeded tests, not one.

From notebook 07's context ("One sunny day,"), gamma = 1: for each seed, ``--runs`` drafts go
through the real ``verify_draft`` at once and the first emitted tokens are compared with the
target's distribution by a chi-square test (``minidecode.speculative.lossless_p_values``). Under a
correct rule the ``--seeds`` p-values are uniform on [0, 1] (KS test); the common wrong rule (after
a rejection, draw from p instead of the residual) piles them up at 0. Both models sample with
top-k ``--top-k`` so that only the tokens the target can emit need a column (exact; see the
helper's docstring). Also: the chi-square test's power against moving 0.01 of probability from the
most likely token to the second, at 20,000 draws.

    python benchmarks/bench_lossless.py            # writes benchmarks/results/lossless.json

The JSON holds every p-value, for a histogram in notebook 07.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import kstest
from transformers import TopKLogitsWarper

import minidecode
from minidecode.speculative import (
    chi_square_power,
    lossless_p_values,
    processed_probs,
    verify_draft,
)
from minidecode.tinyworld.evaluate import encode_prompt

OUT = Path(__file__).parent / "results" / "lossless.json"


def resample_from_p(target_probs, draft_probs, draft_tokens, generator):
    """The common first attempt: after a rejection, draw from p, not from max(0, p - q)."""
    accepted_len, next_token = verify_draft(target_probs, draft_probs, draft_tokens, generator)
    from_p = torch.multinomial(target_probs[:, 0], 1, generator=generator)[:, 0]
    return accepted_len, torch.where(accepted_len < 1, from_p, next_token)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=200)
    parser.add_argument("--wrong-seeds", type=int, default=20)
    parser.add_argument("--runs", type=int, default=20_000)
    parser.add_argument("--top-k", type=int, default=50)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    torch.set_num_threads(1)
    start = time.perf_counter()
    target, tokenizer = minidecode.load("main")
    draft, _ = minidecode.load("main-draft")
    context = torch.tensor([encode_prompt(tokenizer, "One sunny day,")])
    with torch.no_grad():
        p_logits = target(context).logits[0, -1:].float()
        q_logits = draft(context).logits[0, -1:].float()
    processors = [TopKLogitsWarper(args.top_k)]
    p = processed_probs(context, p_logits, processors)[0]
    q = processed_probs(context, q_logits, processors)[0]
    uniform = torch.full_like(q, 1 / q.numel())
    rows = {}
    for name, draft_q, seeds, verify in (
            ("draft model", q, args.seeds, None),
            ("uniform draft", uniform, args.seeds, None),
            ("draft model, wrong rule", q, args.wrong_seeds, resample_from_p)):
        values = lossless_p_values(p, draft_q, args.runs, range(seeds), verify=verify)
        rows[name] = {"seeds": seeds, "p_values": values,
                      "ks_p": float(kstest(values, "uniform").pvalue),
                      "below_005": float(np.mean(np.array(values) < 0.05)),
                      "median": float(np.median(values))}
        print(f"{name}: {seeds} seeds x {args.runs} rounds, KS p {rows[name]['ks_p']:.3f}, "
              f"share < 0.05 {rows[name]['below_005']:.3f}, median {rows[name]['median']:.2g}")
    shifted = p.clone()
    top2 = p.topk(2).indices
    shifted[top2[0]] -= 0.01
    shifted[top2[1]] += 0.01
    power = chi_square_power(p, shifted, 20_000)
    print(f"power at 20,000 draws against a 0.01 shift (top token p = {float(p.max()):.3f}): "
          f"{power:.4f}")
    result = {"command": "python " + " ".join(["benchmarks/bench_lossless.py", *sys.argv[1:]]),
              "machine": f"2-core CPU, no GPU ({platform.machine()}), shared with other jobs",
              "date": "2026-12-02",
              "load_average": os.getloadavg()[0], "runs": args.runs, "top_k": args.top_k,
              "context": "One sunny day,", "rows": rows, "power_20000_shift_001": power,
              "seconds": round(time.perf_counter() - start, 1)}
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out} in {result['seconds']:.0f} s")


if __name__ == "__main__":
    main()
