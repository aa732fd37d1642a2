"""Chain-of-thought decoding (chapter 04): accuracy by number of steps, and its cost.

Held-out TinyWorld arithmetic (``minidecode.cot.held_out_arithmetic``, seeded by
``minidecode.tinyworld.corpus.HELD_OUT_SEED``, a seed training never used), ``--n`` problems
per step count
(1, 2, 3). For every problem, in this order, one after another on the same machine:

- greedy: ``cot_decode(k=1)``, which is plain greedy decoding with the KV cache;
- trigger prompt: greedy after "A: Let's think step by step.";
- CoT-decoding, k = 10, branches batched: one set of paths, read three ways: max Delta (the
  paper), aggregated Delta (the paper), and Delta x p(first token) (an extension, labelled);
  plus the oracle (some branch is right);
- CoT-decoding again with the branches decoded one after another (same paths, for timing);
- a common first attempt: greedy with the trigger phrase inserted every 3 tokens (at the next
  sentence end), and every 16 tokens.

Wall times are totals over all problems, so every ratio comes from this one run. Every branch's
Delta, answer and correctness is kept in the JSON for the notebook's separation plot.

    python benchmarks/bench_cot.py --n 50                  # print, write the JSON
    python benchmarks/bench_cot.py --n 50 --write-results  # also update benchmarks/RESULTS.md
    python benchmarks/bench_cot.py --from-json benchmarks/results/cot.json --write-results
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import torch
from results_md import (  # benchmarks/results_md.py, beside this script
    add_results_arguments,
    replace_section,
    rerender_from_json,
    save_and_report,
)

import minidecode
from minidecode import tinyworld as tw
from minidecode.cot import cot_decode, held_out_arithmetic, select_path, trigger_insertion_decode

OUT = Path(__file__).resolve().parent / "results" / "cot.json"
SECTION = "## Chain-of-thought decoding"
METHODS = ("greedy", "trigger prompt", "CoT max Delta", "CoT aggregated Delta",
           "trigger every 3 steps", "trigger every 16 steps",
           "extension: Delta x p(first)", "oracle (any branch right)")


def _right(answer: str | int | None, truth: int) -> bool:
    return answer is not None and str(answer) == str(truth)


def run(n: int, k: int) -> dict:
    model, tokenizer = minidecode.load("tiny-target")
    model.eval()
    rows, branches = [], []
    times = {"greedy": 0.0, "cot_batched": 0.0, "cot_sequential": 0.0}
    same_sequential = 0
    for n_steps in (1, 2, 3):
        hits = dict.fromkeys(METHODS, 0)
        direct = 0
        for index, problem in enumerate(held_out_arithmetic(n_steps, n)):
            prompt = tw.arithmetic_prompt(problem)
            greedy = cot_decode(model, tokenizer, prompt, k=1)
            times["greedy"] += greedy.wall_time_s
            hits["greedy"] += _right(greedy.answer, problem.answer)
            direct += greedy.path.text.strip().startswith("The answer is")
            trigger = cot_decode(model, tokenizer, tw.arithmetic_prompt(problem, trigger=True), k=1)
            hits["trigger prompt"] += tw.parse_number_answer(trigger.path.text) == problem.answer
            batched = cot_decode(model, tokenizer, prompt, k=k, batched=True)
            times["cot_batched"] += batched.wall_time_s
            sequential = cot_decode(model, tokenizer, prompt, k=k, batched=False)
            times["cot_sequential"] += sequential.wall_time_s
            same_sequential += [p.tokens for p in batched.paths] == [
                p.tokens for p in sequential.paths]
            paths = batched.paths
            for method, selection in (("CoT max Delta", "max"),
                                      ("CoT aggregated Delta", "aggregate"),
                                      ("extension: Delta x p(first)", "delta_x_prob")):
                hits[method] += _right(paths[select_path(paths, selection)].answer, problem.answer)
            hits["oracle (any branch right)"] += any(_right(p.answer, problem.answer)
                                                     for p in paths)
            for every in (3, 16):
                out = trigger_insertion_decode(model, tokenizer, prompt, every=every)
                hits[f"trigger every {every} steps"] += (
                    tw.parse_number_answer(out.text) == problem.answer)
            for rank, path in enumerate(paths):
                branches.append({
                    "steps": n_steps, "problem": index, "rank": rank,
                    "first_token": tokenizer.decode([path.first_token]),
                    "first_token_prob": round(path.first_token_prob, 6),
                    "delta": round(path.delta, 6), "answer": path.answer,
                    "answer_found": path.answer_found,
                    "correct": _right(path.answer, problem.answer)})
        row = {"steps": n_steps, "n": n, "greedy_direct_share": direct / n}
        row.update({m: hits[m] / n for m in METHODS})
        rows.append(row)
        print(f"{n_steps} steps: " + ", ".join(f"{m} {row[m]:.2f}" for m in METHODS), flush=True)
    return {
        "n_per_step": n, "k": k, "rows": rows, "branches": branches,
        "times_s": times,
        "ratios": {"cot_batched_over_greedy": times["cot_batched"] / times["greedy"],
                   "cot_sequential_over_greedy": times["cot_sequential"] / times["greedy"],
                   "sequential_over_batched": times["cot_sequential"] / times["cot_batched"]},
        "sequential_paths_identical": same_sequential / (3 * n),
        "machine": f"2-core CPU, no GPU ({platform.machine()})",
        "torch": torch.__version__, "threads": torch.get_num_threads(),
        "load_average_1min": os.getloadavg()[0],
    }


def delta_auc(branches: list[dict]) -> float:
    """Probability that a random right branch has a larger Delta than a random wrong one (ties
    count half): the area under the ROC curve of Delta as a right/wrong detector."""
    right = [b["delta"] for b in branches if b["answer_found"] and b["correct"]]
    wrong = [b["delta"] for b in branches if b["answer_found"] and not b["correct"]]
    if not right or not wrong:
        return float("nan")
    wins = sum((r > w) + 0.5 * (r == w) for r in right for w in wrong)
    return wins / (len(right) * len(wrong))


def summary_lines(result: dict) -> list[str]:
    rows = result["rows"]
    heads = " | ".join(f"{r['steps']} step(s)" for r in rows)
    lines = [f"| decoding | {heads} |",
             "|---|" + "---|" * len(rows)]
    for method in METHODS:
        lines.append(f"| {method} | " + " | ".join(f"{r[method]:.2f}" for r in rows) + " |")
    lines.append("| (greedy answers in the direct style) | "
                 + " | ".join(f"{r['greedy_direct_share']:.2f}" for r in rows) + " |")
    ratios = result["ratios"]
    chains = [b for b in result["branches"] if b["first_token"].strip() != "The"]
    lines += [
        "",
        f"- wall time, totals over all {3 * result['n_per_step']} problems in this one run: "
        f"CoT-decoding (k = {result['k']}) batched = {ratios['cot_batched_over_greedy']:.2f}x "
        f"greedy, sequential branches = {ratios['cot_sequential_over_greedy']:.2f}x greedy; "
        f"sequential / batched = {ratios['sequential_over_batched']:.2f}x "
        f"(identical paths either way in {result['sequential_paths_identical']:.0%} of problems)",
        f"- Delta as a right/wrong detector over all branches with an answer: ROC AUC "
        f"{delta_auc(result['branches']):.2f}; among branches not starting 'The' (no direct "
        f"answer): {delta_auc(chains):.2f}",
        f"- load average (1 min) when the run ended: {result['load_average_1min']:.1f}; torch "
        f"{result['torch']}, {result['threads']} thread(s)",
    ]
    goal = []
    for r in rows:
        if r["steps"] in (2, 3):
            gain = 100 * (r["CoT max Delta"] - r["greedy"])
            gain_agg = 100 * (r["CoT aggregated Delta"] - r["greedy"])
            goal.append(f"- {r['steps']} steps: max Delta {gain:+.0f} points over greedy, "
                        f"aggregated {gain_agg:+.0f} points (goal +15: "
                        f"{'met' if gain >= 15 else 'NOT met'} by max Delta, "
                        f"{'met' if gain_agg >= 15 else 'NOT met'} by aggregated)")
    return lines + ["", "Goal: CoT-decoding >= 15 points above greedy on 2- and 3-step "
                    "problems."] + goal


def write_results(result: dict, lines: list[str]) -> None:
    body = [SECTION, "",
            f"Command: `python benchmarks/bench_cot.py --n {result['n_per_step']} "
            f"--write-results`; machine: {result['machine']}; date: 2026-11-23. Per-branch "
            "Deltas: `benchmarks/results/cot.json`, plotted by `notebooks/04_cot_decoding.ipynb`.",
            "",
            "Held-out TinyWorld arithmetic (seed HELD_OUT_SEED), tiny-target, "
            f"{result['n_per_step']} problems per step count, accuracy (exact final number):", "",
            *lines, "",
            "Reading it. Greedy answers in the direct style ('The answer is N.') every time and "
            "is mostly wrong past one step. Among the top-10 first tokens there is always a "
            "chain that starts ' Let's', ' He' or ' She' and is right (the oracle row). The "
            "direct branch writes its number with a small margin (mean Delta about 0.24), so "
            "Delta rejects it; but low-ranked, off-topic branches (' Then', ' That', a name) "
            "drift into a chain of their own and end on a wrong number written just as "
            "confidently (Delta near 1), and max Delta picks one of them on about a third of the "
            "multi-step problems. Summing Delta over the paths that agree (aggregated) outvotes "
            "them, and so does the extension Delta x p(first token), which the off-topic "
            "branches lose by their tiny first-token probability. The trigger-insertion variant, "
            "inserting the trigger again and again, makes the model restart its chain after "
            "every insertion, so it seldom reaches the right final number. On 1-step problems, "
            "where greedy is already right 88% of the time, max Delta is slightly worse than "
            "greedy (0.82): the same off-topic branches win there.",
            "",
            "Cost. The wall-time ratio has two factors: k = 10 paths instead of one, and paths "
            "that are several times longer (a chain restates every step; a direct answer is "
            "\"The answer is N.\"). Batching "
            "the branches makes the ten paths cost about a third of decoding them one after "
            "another; the prompt is prefilled once either way.",
            "",
            f"Run time: {result.get('bench_seconds', 0) / 60:.0f} minutes on the shared machine "
            "(the load average above includes other jobs).", ""]
    replace_section(SECTION, body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=50, help="problems per step count")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    add_results_arguments(parser, OUT)
    args = parser.parse_args()
    if rerender_from_json(args, summary_lines, write_results):
        return
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    start = time.perf_counter()
    result = run(args.n, args.k)
    result["bench_seconds"] = time.perf_counter() - start
    save_and_report(args, result, summary_lines, write_results)


if __name__ == "__main__":
    main()
