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
- CoT-decoding again with the branches decoded one after another (same paths, for timing), on
  the first ``--sequential-n`` problems of each step count (all by default);
- a common first attempt: greedy with the trigger phrase inserted every 3 tokens (at the next
  sentence end), and every 16 tokens, on the first ``--insertion-n`` problems (all by default).

Wall times are totals over the problems where every method was timed, so every ratio comes from
this one run and the same problems. Every branch's Delta, answer and correctness is kept in the
JSON for the notebook's separation plot. Accuracies are printed with Wilson 95% intervals.

    python benchmarks/bench_cot.py --n 100 --sequential-n 10 --insertion-n 25   # print, JSON
    python benchmarks/bench_cot.py --n 100 --sequential-n 10 --insertion-n 25 --write-results
    python benchmarks/bench_cot.py --from-json benchmarks/results/cot.json --write-results

On a shared machine, parts can run side by side and be joined (how results/cot.json was made):

    python benchmarks/bench_cot.py --n 100 --sequential-n 10 --insertion-n 25 --steps 3 \
        --shard 0/4 --out part_3_0.json        # ... and the other step counts and shards
    python benchmarks/bench_cot.py --merge part_*.json --write-results
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
from minidecode.course.capstone import wilson_interval

OUT = Path(__file__).resolve().parent / "results" / "cot.json"
SECTION = "## Chain-of-thought decoding"
METHODS = ("greedy", "trigger prompt", "CoT max Delta", "CoT aggregated Delta",
           "trigger every 3 steps", "trigger every 16 steps",
           "extension: Delta x p(first)", "oracle (any branch right)")


def _right(answer: str | int | None, truth: int) -> bool:
    return answer is not None and str(answer) == str(truth)


MODEL = "main"


INSERTION = ("trigger every 3 steps", "trigger every 16 steps")


def run(n: int, k: int, sequential_n: int | None = None, insertion_n: int | None = None,
        steps: tuple[int, ...] = (1, 2, 3), shard: tuple[int, int] = (0, 1)) -> dict:
    """``sequential_n``: decode the branches one after another (for timing only) on the first
    ``sequential_n`` problems of each step count; the ratios use those problems' times only.
    ``insertion_n``: run the trigger-insertion variant on the first ``insertion_n`` problems of
    each step count (its rows then have that n). Default for both: all ``n``. ``shard``
    (i, m): only the problems whose index is i modulo m (parts are joined with :func:`merge`)."""
    sequential_n = n if sequential_n is None else min(sequential_n, n)
    insertion_n = n if insertion_n is None else min(insertion_n, n)
    model, tokenizer = minidecode.load(MODEL)
    model.eval()
    rows, branches = [], []
    times = {"greedy": 0.0, "cot_batched": 0.0, "cot_sequential": 0.0}
    timed = {"greedy": 0.0, "cot_batched": 0.0, "cot_sequential": 0.0}
    same_sequential = sequential_count = 0
    for n_steps in steps:
        hits = dict.fromkeys(METHODS, 0)
        n_of = dict.fromkeys(METHODS, 0)
        direct = done = 0
        for index, problem in enumerate(held_out_arithmetic(n_steps, n)):
            if index % shard[1] != shard[0]:
                continue
            done += 1
            for method in METHODS:
                n_of[method] += method not in INSERTION or index < insertion_n
            prompt = tw.arithmetic_prompt(problem)
            greedy = cot_decode(model, tokenizer, prompt, k=1)
            times["greedy"] += greedy.wall_time_s
            hits["greedy"] += _right(greedy.answer, problem.answer)
            direct += greedy.path.text.strip().startswith("The answer is")
            trigger = cot_decode(model, tokenizer, tw.arithmetic_prompt(problem, trigger=True), k=1)
            hits["trigger prompt"] += tw.parse_number_answer(trigger.path.text) == problem.answer
            batched = cot_decode(model, tokenizer, prompt, k=k, batched=True)
            times["cot_batched"] += batched.wall_time_s
            if index < sequential_n:
                sequential = cot_decode(model, tokenizer, prompt, k=k, batched=False)
                times["cot_sequential"] += sequential.wall_time_s
                timed["greedy"] += greedy.wall_time_s
                timed["cot_batched"] += batched.wall_time_s
                timed["cot_sequential"] += sequential.wall_time_s
                same_sequential += [p.tokens for p in batched.paths] == [
                    p.tokens for p in sequential.paths]
                sequential_count += 1
            paths = batched.paths
            for method, selection in (("CoT max Delta", "max"),
                                      ("CoT aggregated Delta", "aggregate"),
                                      ("extension: Delta x p(first)", "delta_x_prob")):
                hits[method] += _right(paths[select_path(paths, selection)].answer, problem.answer)
            hits["oracle (any branch right)"] += any(_right(p.answer, problem.answer)
                                                     for p in paths)
            if index < insertion_n:
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
        row = _row(n_steps, done, direct, hits, n_of)
        rows.append(row)
        print(f"{n_steps} steps: " + ", ".join(f"{m} {row[m]:.2f}" for m in METHODS), flush=True)
    return {
        "model": MODEL, "n_per_step": n, "k": k, "rows": rows, "branches": branches,
        "times_s": times, "sequential_n_per_step": sequential_n, "insertion_n_per_step":
        insertion_n, "times_timed_problems_s": timed, "same_sequential": same_sequential,
        "sequential_count": sequential_count, "ratios": _ratios(timed),
        "sequential_paths_identical": same_sequential / max(sequential_count, 1),
        "machine": f"2-core CPU, shared with other jobs, no GPU ({platform.machine()})",
        "torch": torch.__version__, "threads": torch.get_num_threads(),
        "load_average_1min": os.getloadavg()[0],
    }


def _row(n_steps: int, n: int, direct: int, hits: dict, n_of: dict) -> dict:
    """One step count's accuracies; ``hits`` and ``n_of`` (problems each method ran on) kept so
    that parts can be summed and every accuracy printed with its n and interval."""
    row = {"steps": n_steps, "n": n, "direct": direct, "greedy_direct_share": direct / n}
    row.update({m: hits[m] / n_of[m] if n_of[m] else float("nan") for m in METHODS})
    row["hits"], row["n_of"] = dict(hits), dict(n_of)
    return row


def _ratios(timed: dict) -> dict:
    if not (timed["greedy"] and timed["cot_batched"]):        # a shard with no timed problem
        return dict.fromkeys(("cot_batched_over_greedy", "cot_sequential_over_greedy",
                              "sequential_over_batched"), float("nan"))
    return {"cot_batched_over_greedy": timed["cot_batched"] / timed["greedy"],
            "cot_sequential_over_greedy": timed["cot_sequential"] / timed["greedy"],
            "sequential_over_batched": timed["cot_sequential"] / timed["cot_batched"]}


def merge(parts: list[dict]) -> dict:
    """One result from runs over disjoint step counts or shards (same n, k): rows of the same
    step count summed, branches joined, times summed, ratios recomputed from the summed times."""
    first = parts[0]
    for part in parts[1:]:
        for key in ("n_per_step", "k", "sequential_n_per_step", "insertion_n_per_step", "model"):
            if part[key] != first[key]:
                raise ValueError(f"cannot merge runs with different {key}")
    timed = {key: sum(part["times_timed_problems_s"][key] for part in parts)
             for key in first["times_timed_problems_s"]}
    same = sum(part["same_sequential"] for part in parts)
    count = sum(part["sequential_count"] for part in parts)
    rows = []
    for n_steps in sorted({row["steps"] for part in parts for row in part["rows"]}):
        mine = [row for part in parts for row in part["rows"] if row["steps"] == n_steps]
        rows.append(_row(n_steps, sum(r["n"] for r in mine), sum(r["direct"] for r in mine),
                         {m: sum(r["hits"][m] for r in mine) for m in METHODS},
                         {m: sum(r["n_of"][m] for r in mine) for m in METHODS}))
    branches = sorted((b for part in parts for b in part["branches"]),
                      key=lambda b: (b["steps"], b["problem"], b["rank"]))
    return {**first, "rows": rows, "branches": branches,
            "times_s": {key: sum(part["times_s"][key] for part in parts)
                        for key in first["times_s"]},
            "times_timed_problems_s": timed, "same_sequential": same, "sequential_count": count,
            "ratios": _ratios(timed), "sequential_paths_identical": same / max(count, 1),
            "load_average_1min": max(part["load_average_1min"] for part in parts),
            "bench_seconds": max(part.get("bench_seconds", 0) for part in parts)}


def delta_auc(branches: list[dict]) -> float:
    """Probability that a random right branch has a larger Delta than a random wrong one (ties
    count half): the area under the ROC curve of Delta as a right/wrong detector."""
    right = [b["delta"] for b in branches if b["answer_found"] and b["correct"]]
    wrong = [b["delta"] for b in branches if b["answer_found"] and not b["correct"]]
    if not right or not wrong:
        return float("nan")
    wins = sum((r > w) + 0.5 * (r == w) for r in right for w in wrong)
    return wins / (len(right) * len(wrong))


def _n_of(row: dict, method: str) -> int:
    return row.get("n_of", {}).get(method, row["n"])


def _with_interval(row: dict, method: str) -> str:
    """Accuracy with its Wilson 95% interval, e.g. '0.30 [0.22, 0.40]'."""
    n = _n_of(row, method)
    hits = row["hits"][method] if "hits" in row else round(row[method] * n)
    low, high = wilson_interval(hits, n)
    return f"{hits / n:.2f} [{low:.2f}, {high:.2f}]"


def summary_lines(result: dict) -> list[str]:
    rows = result["rows"]
    heads = " | ".join(f"{r['steps']} step(s), n = {r['n']}" for r in rows)
    lines = [f"| decoding | {heads} |",
             "|---|" + "---|" * len(rows)]
    for method in METHODS:
        counts = {_n_of(r, method) for r in rows}
        label = method if counts == {r["n"] for r in rows} else (
            f"{method} (first {min(counts)} problems)")
        lines.append(f"| {label} | " + " | ".join(_with_interval(r, method) for r in rows)
                     + " |")
    lines.append("| (greedy answers in the direct style) | "
                 + " | ".join(f"{r['greedy_direct_share']:.2f}" for r in rows) + " |")
    ratios = result["ratios"]
    timed = result.get("sequential_count", len(rows) * result["n_per_step"])
    chains = [b for b in result["branches"] if b["first_token"].strip() != "The"]
    lines += [
        "",
        "Accuracies with Wilson 95% intervals.",
        "",
        f"- wall time, totals over the {timed} problems on which every decoding was timed, in "
        f"this one run: CoT-decoding (k = {result['k']}) batched = "
        f"{ratios['cot_batched_over_greedy']:.2f}x greedy, sequential branches = "
        f"{ratios['cot_sequential_over_greedy']:.2f}x greedy; sequential / batched = "
        f"{ratios['sequential_over_batched']:.2f}x (identical paths either way in "
        f"{result['sequential_paths_identical']:.0%} of them)",
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
    command = result.get("command", f"python benchmarks/bench_cot.py --n {result['n_per_step']} "
                                    "--write-results")
    body = [SECTION, "",
            f"Command: `{command}`; model: {result.get('model', MODEL)}; machine: "
            f"{result['machine']}; date: 2026-12-02. Per-branch Deltas: "
            "`benchmarks/results/cot.json`, plotted by `notebooks/04_cot_decoding.ipynb`.",
            "",
            f"Held-out TinyWorld arithmetic (seed HELD_OUT_SEED), {result.get('model', MODEL)}, "
            f"{result['n_per_step']} problems per step count, accuracy (exact final number):", "",
            *lines, "",
            "Reading it. Greedy answers in the direct style ('The answer is N.') every time: "
            "right on almost every 1-step problem, on fewer than half of the 2- and 3-step ones. "
            "Among the top-10 first tokens there is always a branch that is right (the oracle "
            "row), and the trigger prompt gets every problem right. On 2- and 3-step problems "
            "CoT-decoding with the paper's rules beats greedy, with intervals that do not "
            "overlap greedy's, and meets the +15-point bar with both rules; it stays well below "
            "the trigger prompt. On 1-step problems it is worse than greedy, by 31 points (max "
            "Delta) and 15 points (aggregated). The direct branch is not the problem: Delta "
            "rejects it where it is wrong (its mean Delta is 0.83 on 1-step problems, where it "
            "is right 94% of the time, and 0.09 / 0.05 on 2- and 3-step ones). The problem is "
            "the low-ranked branches that start with a name (' Adam', ' Sam', ' Jack', "
            "' Anna', ...): they invent a step of their own (\"Adam, so 16 - 9 = 7. The answer "
            "is 7.\") and copy its result with Delta near 1. Max Delta picks such a branch in 37, "
            "35 and 55 of the 100 problems at 1, 2 and 3 steps: all of its wrong answers at 1 "
            "step, 35 of 36 at 2 and 55 of 58 at 3. The name branches often write the same "
            "invented line word for word, so they agree with each other, and their summed Delta "
            "outvotes the three or four right chains (' Let', ' He', ' She'): aggregated Delta's "
            "wrong answers (21, 23, 35) were won by off-topic branches alone in 19, 22 and 35 "
            "of them. The extension Delta x p(first token) weights each branch by its first "
            "token's probability (below 0.001 for the names) and is right on 299 of the 300 "
            "problems. The trigger-insertion variant restarts its chain after every insertion "
            "and almost never reaches the right final number.",
            "",
            "Cost. The wall-time ratio has two factors: k = 10 paths instead of one, and paths "
            "that are several times longer (a chain restates every step; a direct answer is "
            "\"The answer is N.\"). Batching the branches makes the ten paths cost about a "
            "third of decoding them one after another; the prompt is prefilled once either way.",
            "",
            "Before: the old 4-layer model gave greedy 0.88 / 0.24 / 0.08, max Delta 0.82 / "
            "0.68 / 0.66 and aggregated Delta 1.00 / 1.00 / 0.96 (n = 50 per step count); main "
            "is a better direct answerer, and its name branches agree more often.",
            "",
            f"Run time: {result.get('bench_seconds', 0) / 60:.0f} minutes on the shared machine "
            "(the longest part; the load average above includes other jobs).", ""]
    replace_section(SECTION, body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100, help="problems per step count")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--sequential-n", type=int, default=None,
                        help="time the sequential branches on this many problems per step count "
                             "(default: all)")
    parser.add_argument("--insertion-n", type=int, default=None,
                        help="run the trigger-insertion variant on this many problems per step "
                             "count (default: all)")
    parser.add_argument("--steps", type=int, nargs="+", default=[1, 2, 3], choices=[1, 2, 3],
                        help="step counts to run (separate runs can be joined with --merge)")
    parser.add_argument("--shard", default="0/1",
                        help="i/m: only problems whose index is i modulo m (join with --merge)")
    parser.add_argument("--merge", type=Path, nargs="+", default=None,
                        help="join results files of runs over different step counts into --out")
    parser.add_argument("--threads", type=int, default=1)
    add_results_arguments(parser, OUT)
    args = parser.parse_args()
    if rerender_from_json(args, summary_lines, write_results):
        return
    if args.merge:
        import json

        result = merge([json.loads(path.read_text()) for path in args.merge])
        save_and_report(args, result, summary_lines, write_results)
        return
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    start = time.perf_counter()
    shard = tuple(int(x) for x in args.shard.split("/"))
    if len(shard) != 2 or not 0 <= shard[0] < shard[1]:
        raise ValueError(f"--shard must be i/m with 0 <= i < m, got {args.shard!r}")
    result = run(args.n, args.k, args.sequential_n, args.insertion_n, tuple(args.steps), shard)
    result["bench_seconds"] = time.perf_counter() - start
    save_and_report(args, result, summary_lines, write_results)


if __name__ == "__main__":
    main()
