"""MOD over two conditionings of one model: a weight sweep, two objectives (chapter 05).

MOD (Shi, Chen, Hu, Liu, Hajishirzi, Smith & Du 2024, arXiv:2406.18853) decodes from
``(1 - w) log p(. | A) + w log p(. | B)``. Here both terms come from ``main``:

- conditioning A, the *storyteller*: a TinyWorld story opening (``story_prompts``);
- conditioning B, the *reporter*: the context of a TinyWorld question-answering document
  ("Ella is in the forest. Alice walked to the beach. ..."), the same for every prompt.

Two objectives, measured on every sampled continuation (temperature 1, up to ``--new-tokens``
tokens, stopping at end-of-text):

- story validity: the TinyWorld judge's share of valid sentences, as a continuation of A;
- location statements per sentence (``location_statement_rate``): how much of the text reports
  where people are, the way B's documents do (sentences the story grammar never uses).

Also recorded: loops and repeated 4-grams (the judge), length, how many texts stop, and
distinct-2 among one prompt's samples. Every aggregate has a 95% bootstrap interval over
prompts; the trend over the weights is a Spearman correlation (per text, and of the weights'
means). One sample per weight (the first of the first prompt) is saved for the notebook, with
the judge's loop check.

    python benchmarks/bench_mod.py                   # print; write results/mod_sweep.json
    python benchmarks/bench_mod.py --write-results   # also update benchmarks/RESULTS.md
    python benchmarks/bench_mod.py --from-json benchmarks/results/mod_sweep.json --write-results
"""

from __future__ import annotations

import argparse
import datetime
import math
import random
import sys
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
from minidecode import tinyworld
from minidecode.diversity import distinct_n, story_prompts, trim_at_eos
from minidecode.generate import generate
from minidecode.multi_objective import MODProcessor, location_statement_rate
from minidecode.tinyworld.evaluate import encode_prompt
from minidecode.tinyworld.judge import bootstrap_ci, judge_story

OUT = Path(__file__).resolve().parent / "results" / "mod_sweep.json"
SECTION = "## MOD: one model, two conditionings, two objectives"
WEIGHTS = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
OBJECTIVES = ("validity", "location_rate")


def reporter_context(seed: int = 3) -> str:
    """The sentences of a TinyWorld question-answering document, without its questions."""
    return tinyworld.qa(random.Random(seed)).text.split("\nQ:")[0]


def ranks(values: list[float]) -> list[float]:
    order = sorted(range(len(values)), key=lambda i: values[i])
    out = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            out[order[k]] = (i + j) / 2 + 1                   # ties share their mean rank
        i = j + 1
    return out


def spearman(x: list[float], y: list[float]) -> float:
    """Spearman's rank correlation (Pearson on ranks, ties averaged)."""
    pairs = [(a, b) for a, b in zip(x, y) if not (math.isnan(a) or math.isnan(b))]
    rx, ry = ranks([a for a, _ in pairs]), ranks([b for _, b in pairs])
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    var = math.sqrt(sum((a - mx) ** 2 for a in rx) * sum((b - my) ** 2 for b in ry))
    return cov / var if var else math.nan


def measure_weight(model, tokenizer, prompts, other_ids, weight, per_prompt, new_tokens, seed,
                   eos) -> list[dict]:
    """Every text of one weight, judged. Prompts of one token length run as one batch (the
    reporter context is the same for all), seeded by ``seed + length``."""
    groups: dict[int, list[int]] = {}
    for index, prompt in enumerate(prompts):
        groups.setdefault(len(encode_prompt(tokenizer, prompt)), []).append(index)
    texts = []
    for length, indices in sorted(groups.items()):
        ids = torch.tensor([encode_prompt(tokenizer, prompts[i]) for i in indices
                            for _ in range(per_prompt)])
        processor = MODProcessor(model, weight, length, other_prompt_ids=other_ids)
        tokens = generate(model, ids, new_tokens, do_sample=True, logits_processors=[processor],
                          eos_token_id=eos, generator=torch.Generator().manual_seed(seed + length))
        samples = trim_at_eos(tokens, length, eos)
        for position, index in enumerate(indices):
            mine = samples[position * per_prompt:(position + 1) * per_prompt]
            distinct = distinct_n(mine, 2)
            for sample in mine:
                text = tokenizer.decode([t for t in sample if t != eos])
                verdict = judge_story(text, prompt=prompts[index])
                texts.append({"prompt": index, "weight": weight, "text": text,
                              "validity": verdict.validity,
                              "location_rate": location_statement_rate(text),
                              "loops": float(verdict.loops),
                              "repeated_4grams": verdict.repeated_4grams,
                              "tokens": float(len(sample)),
                              "stopped": float(bool(sample) and sample[-1] == eos),
                              "distinct_2_of_prompt": distinct})
    return sorted(texts, key=lambda t: t["prompt"])


def aggregate(texts: list[dict]) -> dict:
    groups = [t["prompt"] for t in texts]
    out = {m: bootstrap_ci([t[m] for t in texts], groups)
           for m in ("validity", "location_rate", "loops", "repeated_4grams", "tokens",
                     "stopped")}
    per_prompt = {t["prompt"]: t["distinct_2_of_prompt"] for t in texts}
    out["distinct_2"] = bootstrap_ci([per_prompt[p] for p in sorted(per_prompt)])
    out["n_texts"] = len(texts)
    return out


def run(args) -> dict:
    torch.set_num_threads(args.threads)
    model, tokenizer = minidecode.load("main")
    model.eval()
    eos = tokenizer.token_to_id(tinyworld.EOS)
    prompts = story_prompts(args.prompts, seed=args.seed)
    context = reporter_context()
    other_ids = encode_prompt(tokenizer, context)
    rows, every = [], []
    for weight in args.weights:
        start = time.perf_counter()
        texts = measure_weight(model, tokenizer, prompts, other_ids, weight, args.per_prompt,
                               args.new_tokens, args.seed, eos)
        every += texts
        row = {"weight": weight, **aggregate(texts),
               "saved_sample": {"prompt": prompts[0], "text": texts[0]["text"],
                                "loops": texts[0]["loops"],
                                "validity": texts[0]["validity"],
                                "location_rate": texts[0]["location_rate"]}}
        rows.append(row)
        print(f"w {weight:.2f}: validity {fmt(row['validity'])}  location statements "
              f"{fmt(row['location_rate'])}  loops {fmt(row['loops'], 2)}  distinct-2 "
              f"{fmt(row['distinct_2'])}  tokens {row['tokens'][0]:.1f}  "
              f"({time.perf_counter() - start:.0f} s)", flush=True)
    trend = {}
    for metric in (*OBJECTIVES, "distinct_2", "tokens"):
        key = "distinct_2_of_prompt" if metric == "distinct_2" else metric
        trend[metric] = {
            "spearman_per_text": spearman([t["weight"] for t in every], [t[key] for t in every]),
            "spearman_of_means": spearman([r["weight"] for r in rows],
                                          [r[metric][0] for r in rows]),
            "monotone_means": monotone([r[metric][0] for r in rows])}
    length_check = {m: spearman([t["tokens"] for t in every], [t[m] for t in every])
                    for m in OBJECTIVES}
    return {
        "command": " ".join(["python benchmarks/bench_mod.py", *sys.argv[1:]]),
        "machine": "2-core CPU, no GPU, shared with other jobs",
        "date": datetime.date.today().isoformat(), "torch": torch.__version__,
        "model": "main", "n_prompts": len(prompts), "per_prompt": args.per_prompt,
        "new_tokens": args.new_tokens, "temperature": 1.0,
        "bootstrap": "percentile, 1000 resamples of the prompts, seed 0; [estimate, low, high]",
        "conditioning_a": "the story opening (story_prompts)",
        "conditioning_b": context, "prompts": prompts, "rows": rows, "trend": trend,
        "spearman_with_length": length_check,
    }


def monotone(values: list[float]) -> str:
    steps = [b - a for a, b in zip(values, values[1:])]
    if all(s >= 0 for s in steps):
        return "non-decreasing"
    if all(s <= 0 for s in steps):
        return "non-increasing"
    return "not monotone"


def fmt(triple, digits: int = 3) -> str:
    estimate, low, high = triple
    return f"{estimate:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def summary_lines(result: dict) -> list[str]:
    n = result["n_prompts"] * result["per_prompt"]
    trend = result["trend"]
    lines = [
        SECTION, "",
        f"Command: `{result['command']}`; machine: {result['machine']}; date: {result['date']}; "
        f"torch {result['torch']}; model: {result['model']}.", "",
        "MOD (Shi et al., NeurIPS 2024, arXiv:2406.18853) blends two conditionings of one model: "
        "(1 - w) log p(. | story opening) + w log p(. | reporter context), where the reporter "
        f"context is a question-answering document's sentences: \"{result['conditioning_b']}\". "
        f"{result['n_prompts']} story openings x {result['per_prompt']} samples = {n} texts per "
        f"weight (temperature {result['temperature']:g}, up to {result['new_tokens']} tokens, "
        "stopping at end-of-text; the same seeds at every weight). Validity: the TinyWorld "
        "judge, as a continuation of the story opening; location statements per sentence "
        "(\"Ella is in the forest.\", never used by the story grammar); 95% bootstrap intervals "
        "over prompts.", "",
        "| w | validity | location statements / sentence | loops | distinct-2 | tokens | "
        "stopped |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        lines.append(f"| {row['weight']:g} | {fmt(row['validity'])} | "
                     f"{fmt(row['location_rate'])} | {fmt(row['loops'], 2)} | "
                     f"{fmt(row['distinct_2'])} | {fmt(row['tokens'], 1)} | "
                     f"{fmt(row['stopped'], 2)} |")
    lines += [
        "",
        "Trend over w (Spearman; per text over all "
        f"{n * len(result['rows'])} texts, and of the {len(result['rows'])} means): " + "; ".join(
            f"{name} {trend[name]['spearman_per_text']:+.2f} / "
            f"{trend[name]['spearman_of_means']:+.2f} ({trend[name]['monotone_means']})"
            for name in (*OBJECTIVES, "distinct_2", "tokens")) + ".",
        "Length: Spearman of each objective with the text's length over all texts "
        + ", ".join(f"{m} {v:+.2f}" for m, v in result["spearman_with_length"].items())
        + f"; the length itself is not monotone in w (Spearman of means "
        f"{trend['tokens']['spearman_of_means']:+.2f}), so neither trend is a length effect.",
        "",
        "Saved samples (first sample of the first prompt, `" + result["prompts"][0] + "`):", "",
    ]
    for row in result["rows"]:
        sample = row["saved_sample"]
        lines.append(f"- w {row['weight']:g} (loop: {'yes' if sample['loops'] else 'no'}): "
                     f"{sample['text'].strip()!r}")
    lines += ["", "Raw numbers: `benchmarks/results/mod_sweep.json`.", ""]
    return lines


def write_results(result: dict, lines: list[str]) -> None:
    replace_section(SECTION, lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=12)
    parser.add_argument("--per-prompt", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--weights", type=float, nargs="+", default=list(WEIGHTS))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    add_results_arguments(parser, OUT)
    args = parser.parse_args()
    if rerender_from_json(args, summary_lines, write_results):
        return
    save_and_report(args, run(args), summary_lines, write_results)


if __name__ == "__main__":
    main()
