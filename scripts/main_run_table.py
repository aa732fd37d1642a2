"""The main model's learning curves as RESULTS.md's table: each quick evaluation with its 95%
Wilson interval (the trainer evaluates ``eval_n`` fresh documents a cell, 24 for ``--preset main``).

    python scripts/main_run_table.py benchmarks/results/main_training_metrics.csv [--n 24]
"""

from __future__ import annotations

import argparse
import csv
import math


def wilson(successes: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval for a binomial proportion (Wilson 1927)."""
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def cell(value: str, n: int) -> str:
    p = float(value)
    lo, hi = wilson(round(p * n), n)
    return f"{p:.2f} [{lo:.2f}, {hi:.2f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("metrics")
    parser.add_argument("--n", type=int, default=24)
    args = parser.parse_args()
    print("| step | tokens | lookup 2-8 facts, seen keys | held-out keys | QA (answerable) | "
          "arithmetic 2-step, trigger | greedy | greedy in direct style |")
    print("|---|---|---|---|---|---|---|---|")
    with open(args.metrics) as f:
        for row in csv.DictReader(f):
            print(f"| {row['step']} | {int(row['tokens']) / 1e6:.1f}M | "
                  + " | ".join(cell(row[k], args.n) for k in (
                      "retrieval_seen", "retrieval_heldout", "qa", "arith2_trigger",
                      "arith2_greedy"))
                  + f" | {float(row['direct_share']):.2f} |")


if __name__ == "__main__":
    main()
