"""Semantic uncertainty (chapter 06) on the main model: which score predicts a wrong answer, as
AUROC, on a question set the model gets right about half the time; semantic entropy under several
decoding methods; and a decoder that switches to CoT decoding or abstains when SE is high.

The questions (``minidecode.semantic_uncertainty.mixed_questions``, seeded from
``HELD_OUT_SEED``, which training never used) come in five parts of equal size: "Where is X?"
answerable (main: nearly always right) and unanswerable (always wrong: the context never says), and
word problems of 1, 2 and 3 steps asked without the trigger (main answers directly: mostly right on
1 step, one time in three or four on 2-3). For each question the main model answers greedily (the
answer whose correctness is predicted) and samples N = 10 answers at temperature 1 (Kuhn et al.) in
one batch; ``analyse`` computes every score. A wrong answer is the positive class: AUROC 1 = the
score ranks every wrong answer above every right one, 0.5 = chance. Right or wrong is judged by
the TinyWorld answer parser (the place named, the final number); the no-oracle clusterer
(``EntityEmbeddingClusterer``: MiniLM + the numbers and entities the answers name, threshold 0.85
fixed before this set existed) never sees the parser.

Per question also: 10 answers sampled with top-p 0.9 and with min-p 0.1 (temperature 1), and CoT
decoding's 10 paths (Wang & Zhou 2024, chapter 04); the SE of each method's answers.

The decoder (``switch_or_abstain``): SE <= t1 -> the greedy answer; else CoT decoding's answer,
or abstain when the SE of CoT decoding's paths is > t2. Thresholds and the CoT selection rule are
chosen on the even-numbered questions (the tuning half) and reported on the odd-numbered ones.

    python benchmarks/bench_uncertainty.py                        # print, write the JSON
    python benchmarks/bench_uncertainty.py --shard 0/2 --out /tmp/u0.json   # two processes ...
    python benchmarks/bench_uncertainty.py --merge /tmp/u0.json /tmp/u1.json  # ... then merge
    python benchmarks/bench_uncertainty.py --from-json benchmarks/results/uncertainty.json \\
        --write-results                                           # re-render, runs nothing

The JSON (``benchmarks/results/uncertainty.json``) is what notebooks/06 plots.
"""

from __future__ import annotations

import argparse
import json
import math
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
    save_and_report,
)
from tqdm.auto import tqdm

import minidecode
from minidecode.course.capstone import wilson_interval
from minidecode.sampling import MinP, TopP
from minidecode.semantic_uncertainty import (
    DEFAULT_THRESHOLD,
    ENTITY_THRESHOLD,
    MIXED_PARTS,
    EmbeddingClusterer,
    EntityEmbeddingClusterer,
    analyse,
    auroc,
    auroc_interval,
    cluster_greedy,
    cot_fallback,
    discrete_semantic_entropy,
    is_correct,
    mixed_questions,
    sample_answers,
    semantic_entropy,
    switch_or_abstain,
)
from minidecode.tinyworld.corpus import encode_prompt

HERE = Path(__file__).parent
OUT = HERE / "results" / "uncertainty.json"
SECTION = "## Semantic uncertainty"
MODEL = "main"
DATE = "2026-12-02"
THRESHOLDS = [0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.93, 0.95, 0.97, 0.98, 0.99]
MEASURES = {
    "se_weighted_entities": "SE weighted, MiniLM + named entities/numbers "
                            f"({ENTITY_THRESHOLD}), no oracle",
    "se_discrete_entities": "SE discrete, MiniLM + named entities/numbers "
                            f"({ENTITY_THRESHOLD}), no oracle",
    "se_weighted_entities_total": "SE weighted by total likelihood, MiniLM + entities",
    "se_weighted_minilm": f"SE weighted, MiniLM alone ({DEFAULT_THRESHOLD})",
    "se_discrete_minilm": f"SE discrete, MiniLM alone ({DEFAULT_THRESHOLD})",
    "se_weighted_exact": "SE weighted, exact normalised match",
    "se_discrete_exact": "SE discrete, exact normalised match",
    "se_weighted_parsed": "SE weighted, answer parser (an oracle)",
    "se_discrete_parsed": "SE discrete, answer parser (an oracle)",
    "naive_entropy": "naive entropy (samples' mean surprisal per token)",
    "neg_loglik_per_token": "greedy answer: -log-likelihood per token",
    "neg_loglik": "greedy answer: -log-likelihood",
    "mean_entropy": "greedy answer: mean per-step entropy",
    "max_entropy": "greedy answer: max per-step entropy",
    "windowed": "windowed measure, fixed (mean over the answer)",
}
SUBSETS = ("all", "qa", "arithmetic", *MIXED_PARTS)
METHODS = {"temperature 1": [], "top-p 0.9": [TopP(0.9)], "min-p 0.1": [MinP(0.1)]}
FRACTIONS = [round(f, 2) for f in np.arange(0, 1, 0.05)]
SE_GRID = [round(x, 2) for x in np.arange(0, 2.35, 0.05)]
BOOTSTRAP = 2000


# ------------------------------------------------------------------------------ running
def run_question(model, tokenizer, minilm, entities, question, seed: int, samples: int,
                 temperature: float) -> dict:
    result = analyse(model, tokenizer, question, samples, temperature, seed=seed)
    sims = minilm.similarities(question.question, result.samples.texts)
    loglik_total = result.samples.log_likelihoods()
    scores = dict(result.scores)
    for name, ids in result.clusters.items():
        scores[f"se_weighted_{name}_total"] = semantic_entropy(ids, loglik_total)
    row = {"part": question.part, "family": question.family, "answerable": question.answerable,
           "truth": question.truth, "greedy": result.greedy.texts[0], "correct": result.correct,
           "samples": result.samples.texts,
           "loglik_per_token": [round(float(v), 5) for v in
                                result.samples.log_likelihoods(length_normalised=True)],
           "minilm_sims": [[round(float(v), 4) for v in r] for r in sims],
           "clusters": result.clusters, "scores": scores, "methods": {}}
    prompt_ids = encode_prompt(tokenizer, question.prompt)
    max_new = 72 if question.family == "arithmetic" else 16
    for method, processors in METHODS.items():
        if method == "temperature 1":
            texts, ids = result.samples.texts, result.clusters["entities"]
        else:
            drawn = sample_answers(model, tokenizer, prompt_ids, samples, temperature, max_new,
                                   seed, processors=processors)
            texts, ids = drawn.texts, entities(question.question, drawn.texts)
        row["methods"][method] = {"texts": texts, "clusters": ids,
                                  "se": discrete_semantic_entropy(ids),
                                  "correct": is_correct(question, texts[0])}
    cot_text, cot_se, cot = cot_fallback(model, tokenizer, question, k=samples,
                                         clusterer=entities)
    from minidecode.cot import select_path

    texts = [p.text.strip() or "(no answer)" for p in cot.paths]
    chosen = {sel: select_path(cot.paths, sel) for sel in ("max", "aggregate")}
    row["methods"]["CoT decoding"] = {
        "texts": texts, "se": cot_se, "deltas": [round(p.delta, 4) for p in cot.paths],
        "chosen": chosen, "correct": is_correct(question, texts[chosen["aggregate"]]),
        "correct_by_selection": {sel: is_correct(question, texts[i]) for sel, i in chosen.items()}}
    assert cot_text == texts[chosen["aggregate"]]
    return row


# ------------------------------------------------------------------------------ summarising
def _subset(rows: list[dict], subset: str) -> list[dict]:
    if subset == "all":
        return rows
    key = "family" if subset in ("qa", "arithmetic") else "part"
    return [r for r in rows if r[key] == subset]


def _accuracy(correct: list) -> dict:
    n, right = len(correct), int(sum(bool(c) for c in correct))
    low, high = wilson_interval(right, n) if n else (math.nan, math.nan)
    return {"accuracy": right / n if n else math.nan, "n": n, "right": right, "low": low,
            "high": high}


def paired_difference(a: list, b: list, wrong: list, seed: int = 0) -> list[float]:
    """AUROC(a) - AUROC(b) and its stratified bootstrap 95% interval (the same resampled
    questions for both scores)."""
    a, b, wrong = np.asarray(a), np.asarray(b), np.asarray(wrong)
    pos, neg = np.flatnonzero(wrong == 1), np.flatnonzero(wrong == 0)
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(BOOTSTRAP):
        idx = np.concatenate([rng.choice(pos, len(pos)), rng.choice(neg, len(neg))])
        diffs.append(auroc(a[idx], wrong[idx]) - auroc(b[idx], wrong[idx]))
    low, high = np.quantile(diffs, [0.025, 0.975])
    return [auroc(a, wrong) - auroc(b, wrong), float(low), float(high)]


def _policy(row: dict, switch: float, abstain: float, selection: str) -> tuple[bool, bool]:
    """(answered, right) of switch_or_abstain on a stored row (the CoT run is already there)."""
    cot = row["methods"]["CoT decoding"]
    decision = switch_or_abstain(row["scores"]["se_discrete_entities"], row["greedy"], switch,
                                 lambda: (cot["texts"][cot["chosen"][selection]], cot["se"]),
                                 abstain)
    if decision.abstained:
        return False, False
    if decision.method == "greedy":
        return True, bool(row["correct"])
    return True, bool(cot["correct_by_selection"][selection])


def _policy_stats(rows: list[dict], switch: float, abstain: float, selection: str) -> dict:
    outcomes = [_policy(r, switch, abstain, selection) for r in rows]
    answered = [right for ok, right in outcomes if ok]
    stats = _accuracy(answered)
    stats.update(rejection_rate=1 - len(answered) / len(rows), switch=switch, abstain=abstain,
                 selection=selection,
                 switched=sum(r["scores"]["se_discrete_entities"] > switch for r in rows))
    return stats


def decoder_summary(rows: list[dict]) -> dict:
    """Choose on the tuning half (even indices): the switch threshold and CoT selection by
    accuracy with no abstention; the abstain thresholds (abstain only, and after switching) by
    right answers minus wrong answers (a wrong answer costs what a right one earns, abstaining
    0). Report on the other half: greedy always, CoT decoding always, switch only, abstain only,
    switch then abstain, and the curves over the abstain threshold."""
    tune, report = rows[0::2], rows[1::2]
    candidates = [(t, sel) for t in SE_GRID for sel in ("max", "aggregate")]
    best = max(candidates, key=lambda c: (_policy_stats(tune, c[0], math.inf, c[1])["accuracy"],
                                          c[0]))
    switch, selection = best

    def score(stats: dict, n: int) -> float:
        """Right answers minus wrong ones, per question (abstaining scores 0)."""
        return (2 * stats["right"] - stats["n"]) / n

    abstain_only = max(SE_GRID, key=lambda t: (score(_abstain_stats(tune, t), len(tune)), t))
    abstain_after = max(SE_GRID, key=lambda t: (
        score(_policy_stats(tune, switch, t, selection), len(tune)), t))
    out = {"tune_n": len(tune), "report_n": len(report), "switch_threshold": switch,
           "selection": selection,
           "greedy": _accuracy([r["correct"] for r in report]),
           "cot_always": _accuracy([r["methods"]["CoT decoding"]["correct_by_selection"]
                                    [selection] for r in report]),
           "switch": _policy_stats(report, switch, math.inf, selection),
           "switch_tune": _policy_stats(tune, switch, math.inf, selection),
           "abstain_threshold": abstain_only, "abstain_after_switch_threshold": abstain_after,
           "abstain": _abstain_stats(report, abstain_only),
           "switch_abstain": _policy_stats(report, switch, abstain_after, selection),
           "switch_abstain_curve": [_policy_stats(report, switch, t, selection)
                                    for t in SE_GRID],
           "abstain_curve": []}
    out["abstain_curve"] = [_abstain_stats(report, t) for t in SE_GRID]
    for key in ("greedy", "cot_always", "switch", "abstain", "switch_abstain"):
        out[key]["score"] = score(out[key], len(report))
    return out


def _abstain_stats(rows: list[dict], threshold: float) -> dict:
    """Abstain only (no fallback): answer greedily when SE <= threshold, else abstain."""
    kept = [r for r in rows if r["scores"]["se_discrete_entities"] <= threshold]
    stats = _accuracy([r["correct"] for r in kept])
    stats.update(threshold=threshold, rejection_rate=1 - len(kept) / len(rows))
    return stats


def summarise(rows: list[dict]) -> dict:
    summary: dict = {"accuracy": {}, "auroc": {}, "auroc_interval": {}, "sweep": {},
                     "methods": {}, "fractions": FRACTIONS}
    for subset in SUBSETS:
        chosen = _subset(rows, subset)
        wrong = [int(not r["correct"]) for r in chosen]
        summary["accuracy"][subset] = _accuracy([r["correct"] for r in chosen])
        both = 0 < sum(wrong) < len(wrong)
        summary["auroc"][subset], summary["auroc_interval"][subset] = {}, {}
        for m in MEASURES:
            scores = [r["scores"][m] for r in chosen]
            point = auroc_interval(scores, wrong, BOOTSTRAP) if both else None
            summary["auroc"][subset][m] = point[0] if point else None
            summary["auroc_interval"][subset][m] = list(point[1:]) if point else None
        summary["methods"][subset] = {}
        for method in (*METHODS, "CoT decoding"):
            ses = [r["methods"][method]["se"] for r in chosen]
            own_wrong = [int(not r["methods"][method]["correct"]) for r in chosen]
            ok = 0 < sum(own_wrong) < len(own_wrong)
            interval = auroc_interval(ses, own_wrong, BOOTSTRAP) if ok else None
            summary["methods"][subset][method] = {
                **_accuracy([r["methods"][method]["correct"] for r in chosen]),
                "mean_se": float(np.mean(ses)),
                "auroc": list(interval) if interval else None}
        if subset in ("all", "qa", "arithmetic"):
            sweep = {}
            for threshold in THRESHOLDS:
                discrete, weighted = [], []
                for r in chosen:
                    sims = np.asarray(r["minilm_sims"])
                    ids = cluster_greedy(list(range(len(sims))),
                                         lambda a, b, s=sims, t=threshold: bool(s[a, b] >= t))
                    discrete.append(discrete_semantic_entropy(ids))
                    weighted.append(semantic_entropy(ids, r["loglik_per_token"]))
                sweep[str(threshold)] = {"discrete": auroc(discrete, wrong) if both else None,
                                         "weighted": auroc(weighted, wrong) if both else None}
            summary["sweep"][subset] = sweep
    wrong = [int(not r["correct"]) for r in rows]
    summary["difference"] = {
        m: paired_difference([r["scores"][m] for r in rows],
                             [r["scores"]["naive_entropy"] for r in rows], wrong)
        for m in ("se_weighted_entities", "se_discrete_entities", "se_weighted_parsed")}
    half = rows[1::2]
    half_wrong = [int(not r["correct"]) for r in half]
    summary["report_half"] = {
        m: list(auroc_interval([r["scores"][m] for r in half], half_wrong, BOOTSTRAP))
        for m in ("se_weighted_entities", "se_discrete_entities", "naive_entropy")}
    summary["decoder"] = decoder_summary(rows)
    return summary


# ------------------------------------------------------------------------------ reporting
def _fmt(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def _acc(stats: dict) -> str:
    return (f"{stats['accuracy']:.2f} [{stats['low']:.2f}, {stats['high']:.2f}] "
            f"(n = {stats['n']})")


def summary_lines(result: dict) -> list[str]:
    s = result["summary"]
    acc = s["accuracy"]
    lines = [
        f"- {result['model']}; {acc['all']['n']} held-out questions, {result['per_part']} in each "
        "of five parts; per question the greedy answer (its correctness is what is predicted) "
        f"and N = {result['samples']} samples at temperature {result['temperature']} in one "
        f"batch, plus {result['samples']} with top-p 0.9, {result['samples']} with min-p 0.1 "
        f"and CoT decoding's {result['samples']} paths; {result['seconds']:.0f} s, "
        f"{result['processes']} process(es) of {result['threads']} thread, "
        f"torch {result['torch']}",
        "- greedy accuracy (Wilson 95% interval): " + "; ".join(
            f"{p} {_acc(acc[p])}" for p in SUBSETS),
        "",
        "AUROC for predicting a wrong greedy answer (higher is better, 0.5 = chance; [stratified "
        "bootstrap 95% interval]; '-' where a part has only right or only wrong answers):",
        "",
        "| measure | mixed (all) | short-answer | arithmetic | arithmetic-1 | arithmetic-2 | "
        "arithmetic-3 |",
        "|---|---|---|---|---|---|---|",
    ]
    shown = ("all", "qa", "arithmetic", "arithmetic-1", "arithmetic-2", "arithmetic-3")
    for measure, label in MEASURES.items():
        cells = []
        for f in shown:
            interval = s["auroc_interval"][f][measure]
            cells.append(_fmt(s["auroc"][f][measure]) + (
                f" [{interval[0]:.2f}, {interval[1]:.2f}]" if interval else ""))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", "Paired bootstrap (same resampled questions), mixed set, AUROC minus naive "
              "entropy's:", ""]
    for m, (d, low, high) in s["difference"].items():
        lines.append(f"- {MEASURES[m]}: {d:+.3f} [{low:+.3f}, {high:+.3f}]")
    half = s["report_half"]
    short = {"se_weighted_entities": "SE weighted, no oracle",
             "se_discrete_entities": "SE discrete, no oracle", "naive_entropy": "naive entropy"}
    lines += ["", f"On the odd-numbered half alone (n = {s['decoder']['report_n']}): " + "; ".join(
        f"{short[m]} {v[0]:.3f} [{v[1]:.2f}, {v[2]:.2f}]" for m, v in half.items())]
    lines += ["", "Semantic entropy under each decoding method (MiniLM + entities clusters, "
              "discrete; for CoT decoding over its paths): accuracy of the method's answer (a "
              "sampler's first sample; CoT decoding's aggregated choice), mean SE, and AUROC of "
              "that SE for the method's own answer being wrong, mixed set:", "",
              "| method | accuracy | mean SE | AUROC |", "|---|---|---|---|"]
    lines.append(f"| greedy | {_acc(acc['all'])} | 0 (one answer) | - |")
    for method, m in s["methods"]["all"].items():
        au = m["auroc"]
        lines.append(f"| {method} | {_acc(m)} | {m['mean_se']:.2f} | "
                     + (f"{au[0]:.3f} [{au[1]:.2f}, {au[2]:.2f}]" if au else "-") + " |")
    lines += ["", "Mean SE by part: " + "; ".join(
        f"{p}: " + ", ".join(f"{k} {v['mean_se']:.2f}" for k, v in s["methods"][p].items())
        for p in MIXED_PARTS)]
    dec = s["decoder"]
    sw = dec["switch"]
    lines += ["", f"The decoder (switch to CoT decoding when SE > t1, abstain when CoT's own SE "
              f"> t2): t1 = {dec['switch_threshold']} nats and CoT selection "
              f"'{dec['selection']}' chosen on the even-numbered half (n = {dec['tune_n']}); "
              f"reported on the odd-numbered half (n = {dec['report_n']}):", "",
              f"- greedy always: {_acc(dec['greedy'])}",
              f"- CoT decoding always: {_acc(dec['cot_always'])}",
              f"- switch when SE > {dec['switch_threshold']} ({sw['switched']} switched), no "
              f"abstention: {_acc(sw)}",
              f"- abstain when SE > {dec['abstain_threshold']} (chosen on the tuning half by "
              f"right minus wrong answers): rejection {dec['abstain']['rejection_rate']:.2f}, "
              f"answered {_acc(dec['abstain'])}",
              f"- switch when SE > {dec['switch_threshold']}, then abstain when CoT's SE > "
              f"{dec['abstain_after_switch_threshold']}: rejection "
              f"{dec['switch_abstain']['rejection_rate']:.2f}, answered "
              f"{_acc(dec['switch_abstain'])}",
              "- right minus wrong answers per question (abstaining 0): " + ", ".join(
                  f"{k.replace('_', ' ')} {dec[k]['score']:+.2f}"
                  for k in ("greedy", "cot_always", "switch", "abstain", "switch_abstain")),
              "", "Curves over the abstain threshold (report half):"]
    for name, curve in (("abstain when SE > t", dec["abstain_curve"]),
                             ("switch, then abstain when CoT's SE > t2",
                              dec["switch_abstain_curve"])):
        points = [p for p in curve if p["n"]]
        picks = []
        for target in (0.1, 0.2, 0.3, 0.5):
            near = min(points, key=lambda p: abs(p["rejection_rate"] - target))
            picks.append(f"rejection {near['rejection_rate']:.2f}: {_acc(near)}")
        lines.append(f"- {name}: " + "; ".join(dict.fromkeys(picks)))
    auc = s["auroc"]["all"]
    naive = auc["naive_entropy"]
    best_key = max(("se_weighted_entities", "se_discrete_entities"), key=lambda m: auc[m])
    interval = s["auroc_interval"]["all"][best_key]
    diff = s["difference"][best_key]
    met = auc[best_key] >= 0.75 and auc[best_key] >= naive + 0.03
    lines += ["", "Bar: SE with the no-oracle clusterer AUROC >= 0.75 and >= naive entropy + 0.03 "
              f"on the mixed set: {MEASURES[best_key]} {auc[best_key]:.3f} "
              f"[{interval[0]:.3f}, {interval[1]:.3f}] vs naive entropy {naive:.3f} "
              f"(difference {diff[0]:+.3f} [{diff[1]:+.3f}, {diff[2]:+.3f}]): "
              + ("met" if met else "NOT met") + "."]
    return lines


def write_results(result: dict, lines: list[str]) -> None:
    """Replace this benchmark's section of RESULTS.md (other sections stay as they are)."""
    body = [SECTION, "",
            f"Command: `{result['command']}`; machine: {result['machine']}; "
            f"date: {result['date']}. Per-question answers, clusters and scores: "
            "`benchmarks/results/uncertainty.json`, plotted by "
            "`notebooks/06_semantic_uncertainty.ipynb`.", "", *lines, "", *WHAT_IT_SHOWS, ""]
    replace_section(SECTION, body)


WHAT_IT_SHOWS = """Reading. (1) The parts differ in kind: answerable "Where is X?" questions are
right and their samples agree up to phrasing; unanswerable ones are wrong and scatter over the
places; on 2-3 step problems the model answers "The answer is N." with confident tokens whatever
N is. Naive entropy measures doubt about words, so it is raised by the phrasing of right answers
and stays low on the confident wrong Ns; semantic entropy forgives the first and counts the
second. (2) MiniLM alone is number-blind on arithmetic; the named numbers of the no-oracle
clusterer fix that and get most of the way to the oracle parser. (3) Much of the pooled AUROC is
between parts: within the 2- and 3-step parts semantic entropy is at chance (about 0.5; the
oracle parser 0.60 / 0.71, the greedy answer's likelihood 0.51 / 0.72, all with wide intervals),
so SE tells which kinds of question the model cannot do better than which of its answers to a
hard question are wrong. (4) The greedy answer's total -log-likelihood (0.875) is as good as SE
here, from one answer instead of eleven: the answers are one short sentence whose doubt sits in
one or two tokens. (5) CoT decoding's paths start from 10 different first tokens, so their SE
does not rank its answers (its own signal is the answer margin, chapter 04), and abstaining on
it after switching adds nothing. Switching to CoT decoding on high SE helps arithmetic (the
model is right when it writes the steps) and is within the interval of running CoT decoding on
every question, at 65% of its calls; on an unanswerable question only abstaining is right.
Before, on tiny-target (400 questions of another set, the model right 0.23 of the time), the no-
oracle clusterer only tied naive entropy (0.837 vs 0.850): a model that mostly guesses gives
little to rank.""".split("\n")


def _run_info(args, start: float) -> dict:
    return {"command": "python " + " ".join(["benchmarks/bench_uncertainty.py", *sys.argv[1:]]),
            "machine": f"2-core CPU shared with other jobs, no GPU ({platform.machine()})",
            "date": DATE, "model": MODEL, "torch": torch.__version__, "threads": args.threads,
            "processes": 1, "samples": args.samples, "temperature": args.temperature,
            "per_part": args.per_part, "threshold": DEFAULT_THRESHOLD,
            "entity_threshold": ENTITY_THRESHOLD, "shard": args.shard,
            "seconds": round(time.perf_counter() - start, 1),
            "load_average": os.getloadavg()[0]}


def _save_shard(path: Path, rows: list[dict], args, start: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(_plain({**_run_info(args, start), "rows": rows})) + "\n")
    tmp.replace(path)


def _plain(value):
    """numpy scalars (np.int64, np.float64, np.bool_) inside ``value`` as Python ones, for JSON."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value.item() if isinstance(value, np.generic) else value


# ------------------------------------------------------------------------------ main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-part", type=int, default=40, help="questions in each part")
    parser.add_argument("--samples", type=int, default=10)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--shard", default="0/1", help="i/k: run every k-th question from i")
    parser.add_argument("--merge", type=Path, nargs="+", default=None,
                        help="merge shard files (rows in question order), summarise, write")
    add_results_arguments(parser, OUT)
    args = parser.parse_args()
    if args.from_json:
        result = json.loads(args.from_json.read_text())
        result["summary"] = summarise(result["rows"])
        save_and_report(argparse.Namespace(**{**vars(args), "out": args.from_json}), _plain(result),
                        summary_lines, write_results)
        return
    if args.merge:
        # Rows in question order; a shard stopped early leaves its later questions out, so keep
        # the longest prefix of questions that every shard reached (the parts stay balanced).
        shards = [json.loads(p.read_text()) for p in args.merge]
        k = len(shards)
        by_index = {row["index"]: row for shard in shards for row in shard["rows"]}
        prefix = 0
        while prefix in by_index:
            prefix += 1
        prefix -= prefix % len(MIXED_PARTS)
        rows = [by_index[i] for i in range(prefix)]
        result = {**shards[0], "rows": rows, "shard": f"merged {k}",
                  "seconds": max(s["seconds"] for s in shards), "processes": k,
                  "questions": prefix,
                  "command": "python " + " ".join(
                      ["benchmarks/bench_uncertainty.py",
                       f"--per-part {shards[0]['per_part']}", f"--shard i/{k} (i < {k})",
                       "then --merge"])}
        result["summary"] = summarise(rows)
        save_and_report(args, _plain(result), summary_lines, write_results)
        return
    index, count = (int(x) for x in args.shard.split("/"))
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    model, tokenizer = minidecode.load(MODEL)
    model.eval()
    minilm, entities = EmbeddingClusterer(), EntityEmbeddingClusterer()
    questions = mixed_questions(args.per_part)
    rows = []
    for i in tqdm(range(index, len(questions), count), desc="questions", disable=None):
        rows.append({"index": i, **run_question(model, tokenizer, minilm, entities, questions[i],
                                                 i, args.samples, args.temperature)})
        if count > 1:                     # a shard saves as it goes: --merge can use a prefix
            _save_shard(args.out, rows, args, start)
    result = {**_run_info(args, start), "rows": rows}
    if count > 1:                         # a shard: rows only; --merge summarises
        print(f"wrote {args.out} ({len(rows)} rows)")
        return
    result["summary"] = summarise(rows)
    save_and_report(args, _plain(result), summary_lines, write_results)


if __name__ == "__main__":
    main()
