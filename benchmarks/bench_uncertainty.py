"""Semantic uncertainty (chapter 06): which score predicts a wrong answer, as AUROC.

Held-out TinyWorld questions (``minidecode.semantic_uncertainty.held_out_questions``, seeded from
``HELD_OUT_SEED``, a seed training never used): "Where is X?" short-answer questions (about 30%
unanswerable) and 1-3 step word problems asked without the trigger. For each question tiny-target
answers greedily (the answer whose correctness is predicted, as a deployed model would answer) and
samples N = 10 more answers at temperature 1.0 in one batch; ``analyse`` computes every score.
A wrong answer is the positive class: AUROC 1 = the score ranks every wrong answer above every
right one, 0.5 = chance.

Beside the per-measure table: AUROC per family, the MiniLM threshold sweep (the similarity matrix
is computed once per question, then clustered at each threshold), and the accuracy-rejection
curves.

    python benchmarks/bench_uncertainty.py                    # print, write the JSON
    python benchmarks/bench_uncertainty.py --write-results    # also update benchmarks/RESULTS.md
    python benchmarks/bench_uncertainty.py --from-json benchmarks/results/uncertainty.json

The JSON (``benchmarks/results/uncertainty.json``) is what notebooks/06 plots.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from results_md import (  # benchmarks/results_md.py, beside this script
    add_results_arguments,
    replace_section,
    rerender_from_json,
    save_and_report,
)
from tqdm.auto import tqdm

import minidecode
from minidecode.semantic_uncertainty import (
    DEFAULT_THRESHOLD,
    ENTITY_THRESHOLD,
    EmbeddingClusterer,
    accuracy_rejection_curve,
    analyse,
    auroc,
    auroc_interval,
    cluster_greedy,
    discrete_semantic_entropy,
    held_out_questions,
    semantic_entropy,
)

HERE = Path(__file__).parent
OUT = HERE / "results" / "uncertainty.json"
SECTION = "## Semantic uncertainty"
THRESHOLDS = [0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.93, 0.95, 0.97, 0.98, 0.99]
MEASURES = {
    "se_weighted_parsed": "semantic entropy, weighted, answer-parser clusters",
    "se_discrete_parsed": "semantic entropy, discrete, answer-parser clusters",
    "se_weighted_minilm": f"semantic entropy, weighted, MiniLM clusters ({DEFAULT_THRESHOLD})",
    "se_discrete_minilm": f"semantic entropy, discrete, MiniLM clusters ({DEFAULT_THRESHOLD})",
    "se_weighted_entities": "semantic entropy, weighted, MiniLM + named entities/numbers "
                            f"({ENTITY_THRESHOLD})",
    "se_discrete_entities": "semantic entropy, discrete, MiniLM + named entities/numbers "
                            f"({ENTITY_THRESHOLD})",
    "se_weighted_exact": "semantic entropy, weighted, exact normalised match",
    "se_discrete_exact": "semantic entropy, discrete, exact normalised match",
    "naive_entropy": "naive entropy (samples' mean surprisal per token)",
    "neg_loglik_per_token": "greedy answer: -log-likelihood per token",
    "neg_loglik": "greedy answer: -log-likelihood",
    "mean_entropy": "greedy answer: mean per-step entropy",
    "max_entropy": "greedy answer: max per-step entropy",
    "windowed": "windowed measure, fixed (mean over the answer)",
}
FRACTIONS = [round(f, 2) for f in np.arange(0, 1, 0.05)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--qa", type=int, default=200, help="short-answer questions")
    parser.add_argument("--arithmetic", type=int, default=200, help="word problems")
    parser.add_argument("--samples", type=int, default=10)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--threads", type=int, default=1)
    add_results_arguments(parser, OUT)
    args = parser.parse_args()
    if rerender_from_json(args, summary_lines, write_results):
        return
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    model, tokenizer = minidecode.load("tiny-target")
    model.eval()
    minilm = EmbeddingClusterer()
    rows, sweep_sims = [], []
    questions = held_out_questions(args.qa, args.arithmetic)
    for i, question in enumerate(tqdm(questions, desc="questions", disable=None)):
        result = analyse(model, tokenizer, question, args.samples, args.temperature, seed=i)
        sims = minilm.similarities(question.question, result.samples.texts)
        sweep_sims.append((sims, result.samples.log_likelihoods(length_normalised=True)))
        rows.append({"family": question.family, "answerable": question.answerable,
                     "truth": question.truth, "greedy": result.greedy.texts[0],
                     "correct": result.correct, "samples": result.samples.texts,
                     "clusters": result.clusters, "scores": result.scores})
    result = {
        "command": "python " + " ".join(["benchmarks/bench_uncertainty.py", *sys.argv[1:]]),
        "machine": f"2-core CPU, no GPU ({platform.machine()})", "date": "2026-11-23",
        "torch": torch.__version__, "threads": args.threads, "samples": args.samples,
        "temperature": args.temperature, "threshold": DEFAULT_THRESHOLD,
        "seconds": round(time.perf_counter() - start, 1),
        "load_average": os.getloadavg()[0], "rows": rows,
    }
    result["summary"] = summarise(rows, sweep_sims)
    save_and_report(args, result, summary_lines, write_results)


def _family_rows(rows: list[dict], family: str) -> list[dict]:
    return rows if family == "all" else [r for r in rows if r["family"] == family]


def summarise(rows: list[dict], sweep_sims: list) -> dict:
    """AUROC per measure and family, the threshold sweep, and accuracy-rejection curves."""
    summary: dict = {"auroc": {}, "accuracy": {}, "n": {}, "sweep": {}, "rejection": {},
                     "fractions": FRACTIONS}
    for family in ("all", "qa", "arithmetic"):
        chosen = _family_rows(rows, family)
        wrong = [int(not r["correct"]) for r in chosen]
        summary["n"][family] = len(chosen)
        summary["accuracy"][family] = 1 - float(np.mean(wrong))
        summary["auroc"][family] = {
            m: (auroc([r["scores"][m] for r in chosen], wrong) if 0 < sum(wrong) < len(wrong)
                else None) for m in MEASURES}
        summary.setdefault("auroc_interval", {})[family] = {
            m: (list(auroc_interval([r["scores"][m] for r in chosen], wrong)[1:])
                if 0 < sum(wrong) < len(wrong) else None) for m in MEASURES}
        summary["rejection"][family] = {
            m: accuracy_rejection_curve([r["scores"][m] for r in chosen],
                                        [r["correct"] for r in chosen], FRACTIONS).tolist()
            for m in MEASURES}
        indices = [i for i, r in enumerate(rows) if family in ("all", r["family"])]
        sweep = {}
        for threshold in THRESHOLDS:
            discrete, weighted = [], []
            for i in indices:
                sims, loglik = sweep_sims[i]
                ids = cluster_greedy(list(range(len(sims))),
                                     lambda a, b, s=sims, t=threshold: bool(s[a, b] >= t))
                discrete.append(discrete_semantic_entropy(ids))
                weighted.append(semantic_entropy(ids, loglik))
            ok = 0 < sum(wrong) < len(wrong)
            sweep[str(threshold)] = {"discrete": auroc(discrete, wrong) if ok else None,
                                     "weighted": auroc(weighted, wrong) if ok else None}
        summary["sweep"][family] = sweep
    return summary


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def summary_lines(result: dict) -> list[str]:
    s = result["summary"]
    rows = result["rows"]
    qa_rows = _family_rows(rows, "qa")
    answerable = [r for r in qa_rows if r["answerable"]]
    lines = [
        f"- tiny-target; per question: the greedy answer (its correctness is what is predicted) "
        f"and N = {result['samples']} samples at temperature {result['temperature']} in one "
        f"batch; {s['n']['all']} held-out questions ({s['n']['qa']} short-answer \"Where is X?\", "
        f"{len(qa_rows) - len(answerable)} of them unanswerable; {s['n']['arithmetic']} word "
        f"problems, 1-3 steps, no trigger); {result['seconds']:.0f} s, {result['threads']} "
        f"thread(s), torch {result['torch']}",
        f"- greedy accuracy: all {s['accuracy']['all']:.2f}, short-answer "
        f"{s['accuracy']['qa']:.2f} (answerable only: "
        f"{np.mean([r['correct'] for r in answerable]) if answerable else 0:.2f}), "
        f"arithmetic {s['accuracy']['arithmetic']:.2f}",
        "",
        "AUROC for predicting a wrong answer (higher is better, 0.5 = chance; [stratified "
        "bootstrap 95% interval] where the run kept them):",
        "",
        "| measure | all | short-answer | arithmetic |",
        "|---|---|---|---|",
    ]
    intervals = s.get("auroc_interval", {})
    for measure, label in MEASURES.items():
        if measure not in s["auroc"]["all"]:
            continue                                   # a run from before the measure existed
        cells = []
        for f in ("all", "qa", "arithmetic"):
            interval = intervals.get(f, {}).get(measure)
            cells.append(_fmt(s["auroc"][f][measure]) + (
                f" [{interval[0]:.3f}, {interval[1]:.3f}]" if interval else ""))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", "MiniLM threshold sweep (AUROC of discrete / weighted SE):", "",
              "| threshold | all | short-answer | arithmetic |", "|---|---|---|---|"]
    for threshold in THRESHOLDS:
        cells = [f"{_fmt(s['sweep'][f][str(threshold)]['discrete'])} / "
                 f"{_fmt(s['sweep'][f][str(threshold)]['weighted'])}"
                 for f in ("all", "qa", "arithmetic")]
        lines.append(f"| {threshold} | " + " | ".join(cells) + " |")
    frac = s["fractions"]
    at = {f: frac.index(f) for f in (0.0, 0.2, 0.5)}
    lines += ["", "Accuracy-rejection (all questions): accuracy of the answers kept after refusing "
              "the most uncertain 0% / 20% / 50%:", ""]
    for measure in ("se_discrete_parsed", "se_discrete_minilm", "naive_entropy",
                    "neg_loglik_per_token", "windowed"):
        curve = s["rejection"]["all"][measure]
        lines.append(f"- {MEASURES[measure]}: " + " / ".join(f"{curve[i]:.2f}"
                                                             for i in at.values()))
    auc = s["auroc"]
    naive = auc["all"]["naive_entropy"]
    lines += ["", "Goal: semantic entropy AUROC >= 0.75 and above naive entropy's."]
    for key, label in (("parsed", "answer-parser clusters (an oracle equivalence)"),
                       ("minilm", f"MiniLM clusters (threshold {result['threshold']})"),
                       ("entities", "MiniLM + named entities/numbers (no oracle)"),
                       ("exact", "exact normalised match")):
        if f"se_discrete_{key}" not in auc["all"]:
            continue
        best = max(auc["all"][f"se_discrete_{key}"], auc["all"][f"se_weighted_{key}"])
        arith = max(auc["arithmetic"][f"se_discrete_{key}"],
                    auc["arithmetic"][f"se_weighted_{key}"])
        verdict = "met" if best >= 0.75 and best > naive else "NOT met"
        lines.append(f"- {label}: best SE AUROC {best:.3f} (all questions) vs naive entropy "
                     f"{naive:.3f}: {verdict}; arithmetic alone {arith:.3f} vs "
                     f"{auc['arithmetic']['naive_entropy']:.3f}")
    return lines


def write_results(result: dict, lines: list[str]) -> None:
    """Replace this benchmark's section of RESULTS.md (other sections stay as they are)."""
    body = [SECTION, "",
            f"Command: `{result['command']}`; machine: {result['machine']}; "
            f"date: {result['date']}. Per-question answers, clusters and scores: "
            "`benchmarks/results/uncertainty.json`, plotted by "
            "`notebooks/06_semantic_uncertainty.ipynb`.", "",
            *lines, "", *WHAT_IT_SHOWS, ""]
    replace_section(SECTION, body)


WHAT_IT_SHOWS = """What the tiny model shows, and why. (1) The pooled goal is met only with an
equivalence that is right by construction: the TinyWorld answer parser (the place named, the final
number), a stand-in for the papers' NLI entailment. With the real sentence-embedding model MiniLM,
SE clears 0.75 pooled but stays below naive entropy, and on arithmetic it is at chance: MiniLM is
number-blind ("The answer is 11." and "The answer is 14." embed almost identically with the
question, so different answers merge and SE reads "confident"). No threshold fixes that (sweep
above). (2) Short-answer questions are beyond this 3M-parameter model: it names a place nearly at
random whether or not the context says (greedy accuracy 0.07 on answerable questions, the same
failure as needle retrieval on its model card), so the ~10 right answers out of 200 are lucky
guesses whose samples are as scattered as the wrong ones; every score is near chance there. (3) On
arithmetic, where the model sometimes knows, parser SE (0.85) beats naive entropy (0.77) and exact-
match SE (0.69-0.75: exact match splits the chains of thought the model sometimes samples, one per
friend's name) as the papers report, but it only ties the greedy answer's own likelihood (0.86):
answers here are one short sentence whose uncertainty sits in a single number token, so there is no
paraphrase for the clustering to forgive. The windowed measure, fixed, does well on
arithmetic (0.88, its entropy term sits on that number token) and poorly on short answers. (4)
Pooled AUROCs are inflated by the family effect (short-answer questions are both mostly wrong and
high-entropy); compare within a family.""".split("\n")


if __name__ == "__main__":
    main()
