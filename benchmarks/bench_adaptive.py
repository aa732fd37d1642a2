"""Adaptive decoding against top-p at the same mean candidate-set size (chapter 02).

A fair comparison of two truncation rules fixes how much each keeps. For every ``epsilon`` of
adaptive decoding (Zhu et al. 2024, arXiv:2402.18223) and each temperature:

1. sample with ``AdaptiveDecoding(epsilon)`` and record, at every step of every unfinished
   sample, the candidate-set size and the distribution it was cut from;
2. tune top-p's ``p`` (bisection) so that its mean set size on those same distributions equals
   adaptive decoding's mean set size;
3. sample with ``TopP(p)`` (same prompts, same seeds) and record its own set sizes;
4. judge both with :mod:`minidecode.tinyworld.judge` (validity, loops) and measure diversity
   (distinct-2 among one prompt's samples), with 95% bootstrap intervals over prompts, and the
   paired difference adaptive - top-p with its interval (prompts resampled).

``--prompts`` TinyWorld story openings x ``--per-prompt`` samples of up to ``--new-tokens`` tokens
from ``minidecode.load("main")``, stopping at ``<|endoftext|>``; the prompts and seeds of
``bench_sampling.py`` (prompts of one token length form one batch, seed ``seed + length``).

    python benchmarks/bench_adaptive.py                   # print; write results/adaptive.json
    python benchmarks/bench_adaptive.py --write-results   # also update benchmarks/RESULTS.md
    python benchmarks/bench_adaptive.py --from-json benchmarks/results/adaptive.json --write-results
"""

from __future__ import annotations

import argparse
import datetime
import math
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
from minidecode.adaptive import AdaptiveDecoding
from minidecode.diversity import distinct_n, story_prompts, trim_at_eos
from minidecode.generate import generate
from minidecode.sampling import NEG_INF, TopP, top_p_filter
from minidecode.tinyworld.evaluate import encode_prompt
from minidecode.tinyworld.judge import bootstrap_ci, judge_story

OUT = Path(__file__).resolve().parent / "results" / "adaptive.json"
SECTION = "## Adaptive decoding against top-p at the same mean set size"
EPSILONS = (3e-2, 1e-2, 3e-3, 1e-3)
TEMPERATURES = (1.0, 1.6)


class SetSizeRecorder:
    """Runs ``processor`` and records, for every row not yet finished (no end-of-text token after
    its first ``prompt_length`` tokens), the number of tokens kept and (optionally) the
    log-probabilities it was cut from. Set ``prompt_length`` before each call of ``generate``."""

    def __init__(self, processor, eos_token_id: int, keep_logits: bool = False) -> None:
        self.processor, self.eos = processor, eos_token_id
        self.prompt_length = 0
        self.keep_logits = keep_logits
        self.sizes: list[int] = []
        self.logits: list[torch.Tensor] = []

    def __call__(self, input_ids, scores):
        out = self.processor(input_ids, scores)
        active = ~(input_ids[:, self.prompt_length:] == self.eos).any(dim=1)
        self.sizes += (out[active] > NEG_INF).sum(dim=-1).tolist()
        if self.keep_logits:
            self.logits.append(scores[active].log_softmax(-1))
        return out


def top_p_sizes(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    return (top_p_filter(logits, top_p) > NEG_INF).sum(dim=-1).double()


def match_top_p(logits: torch.Tensor, mean_size: float, iterations: int = 40) -> float:
    """The ``p`` whose mean top-p set size over ``logits`` (steps, vocab) is ``mean_size``."""
    low, high = 1e-6, 1.0
    for _ in range(iterations):
        middle = (low + high) / 2
        if float(top_p_sizes(logits, middle).mean()) < mean_size:
            low = middle
        else:
            high = middle
    return (low + high) / 2


def sample_and_judge(model, tokenizer, prompts, per_prompt, new_tokens, seed, temperature,
                     processor, eos) -> dict:
    """Samples of every prompt under one processor; per-prompt validity and distinct-2.

    Prompts of one token length run as one batch (seed ``seed + length``), as in
    ``bench_sampling.py``; the recorder's ``prompt_length`` is set for each batch."""
    by_length: dict[int, list[int]] = {}
    for index, prompt in enumerate(prompts):
        by_length.setdefault(len(encode_prompt(tokenizer, prompt)), []).append(index)
    samples_of: dict[int, list[list[int]]] = {}
    for length, indices in by_length.items():
        ids = torch.tensor([encode_prompt(tokenizer, prompts[i]) for i in indices
                            for _ in range(per_prompt)])
        processor.prompt_length = length
        tokens = generate(model, ids, new_tokens, do_sample=True, temperature=temperature,
                          logits_processors=[processor], eos_token_id=eos,
                          generator=torch.Generator().manual_seed(seed + length))
        samples = trim_at_eos(tokens, length, eos)
        for row, index in enumerate(indices):
            samples_of[index] = samples[row * per_prompt:(row + 1) * per_prompt]
    validity, loops, distinct, groups = [], [], [], []
    for index, prompt in enumerate(prompts):
        samples = samples_of[index]
        distinct.append(distinct_n(samples, 2))
        for sample in samples:
            verdict = judge_story(tokenizer.decode([t for t in sample if t != eos]),
                                  prompt=prompt)
            validity.append(verdict.validity)
            loops.append(float(verdict.loops))
            groups.append(index)
    return {"validity": validity, "loops": loops, "distinct_2": distinct, "groups": groups}


def per_prompt_means(values: list[float], groups: list[int]) -> list[float]:
    by: dict[int, list[float]] = {}
    for value, group in zip(values, groups):
        if not math.isnan(value):
            by.setdefault(group, []).append(value)
    return [sum(by[g]) / len(by[g]) if g in by else math.nan for g in sorted(set(groups))]


def summarise(raw: dict, sizes: list[int]) -> dict:
    sizes_t = torch.tensor(sizes, dtype=torch.float64)
    return {"validity": bootstrap_ci(raw["validity"], raw["groups"]),
            "loops": bootstrap_ci(raw["loops"], raw["groups"]),
            "distinct_2": bootstrap_ci(raw["distinct_2"]),
            "mean_set_size": float(sizes_t.mean()), "median_set_size": float(sizes_t.median()),
            "single_candidate_steps": float((sizes_t == 1).double().mean()),
            "steps": len(sizes), "samples": len(raw["validity"])}


def difference(a: dict, b: dict, metric: str) -> list[float]:
    """Paired (by prompt) difference a - b of a per-prompt mean, with a bootstrap interval."""
    if metric == "distinct_2":
        pairs = zip(a[metric], b[metric])
    else:
        pairs = zip(per_prompt_means(a[metric], a["groups"]),
                    per_prompt_means(b[metric], b["groups"]))
    return list(bootstrap_ci([x - y for x, y in pairs if not (math.isnan(x) or math.isnan(y))]))


def run(args) -> dict:
    torch.set_num_threads(args.threads)
    model, tokenizer = minidecode.load("main")
    model.eval()
    eos = tokenizer.token_to_id(tinyworld.EOS)
    prompts = story_prompts(args.prompts, seed=args.seed)
    rows = []
    for temperature in args.temperatures:
        for epsilon in args.epsilons:
            start = time.perf_counter()
            adaptive = SetSizeRecorder(AdaptiveDecoding(epsilon), eos, keep_logits=True)
            raw_a = sample_and_judge(model, tokenizer, prompts, args.per_prompt, args.new_tokens,
                                     args.seed, temperature, adaptive, eos)
            target_size = sum(adaptive.sizes) / len(adaptive.sizes)
            top_p = match_top_p(torch.cat(adaptive.logits), target_size)
            nucleus = SetSizeRecorder(TopP(top_p), eos)
            raw_p = sample_and_judge(model, tokenizer, prompts, args.per_prompt, args.new_tokens,
                                     args.seed, temperature, nucleus, eos)
            row = {"temperature": temperature, "epsilon": epsilon, "top_p": top_p,
                   "adaptive": summarise(raw_a, adaptive.sizes),
                   "top_p_rule": summarise(raw_p, nucleus.sizes),
                   "difference": {m: difference(raw_a, raw_p, m)
                                  for m in ("validity", "loops", "distinct_2")}}
            rows.append(row)
            print(f"T {temperature} eps {epsilon:g}: mean set {target_size:.2f} -> top-p "
                  f"{top_p:.4f} (its own mean set {row['top_p_rule']['mean_set_size']:.2f}); "
                  f"validity {fmt(row['adaptive']['validity'])} vs "
                  f"{fmt(row['top_p_rule']['validity'])}; distinct-2 "
                  f"{fmt(row['adaptive']['distinct_2'])} vs "
                  f"{fmt(row['top_p_rule']['distinct_2'])} "
                  f"({time.perf_counter() - start:.0f} s)", flush=True)
    return {
        "command": " ".join(["python benchmarks/bench_adaptive.py", *sys.argv[1:]]),
        "machine": "2-core CPU, no GPU, shared with other jobs",
        "date": datetime.date.today().isoformat(), "torch": torch.__version__,
        "model": "main", "vocab": model.config.vocab_size if hasattr(model, "config")
        else None,
        "n_prompts": len(prompts), "per_prompt": args.per_prompt, "new_tokens": args.new_tokens,
        "bootstrap": "percentile, 1000 resamples of the prompts, seed 0; [estimate, low, high]",
        "rows": rows,
    }


def fmt(triple, digits: int = 3) -> str:
    estimate, low, high = triple
    return f"{estimate:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def verdict(diff_validity, diff_distinct) -> str:
    """'win', 'loss' or 'tie' for adaptive decoding, from the two paired intervals."""
    better = diff_validity[1] > 0 or diff_distinct[1] > 0
    worse = diff_validity[2] < 0 or diff_distinct[2] < 0
    if better and not worse:
        return "win"
    if worse and not better:
        return "loss"
    return "mixed" if better and worse else "tie"


def summary_lines(result: dict) -> list[str]:
    n = result["n_prompts"] * result["per_prompt"]
    lines = [
        SECTION, "",
        f"Command: `{result['command']}`; machine: {result['machine']}; date: {result['date']}; "
        f"torch {result['torch']}; model: {result['model']}.", "",
        f"{result['n_prompts']} TinyWorld story openings x {result['per_prompt']} samples = {n} "
        f"texts per row (up to {result['new_tokens']} tokens, stopping at end-of-text), the same "
        "prompts and seeds for both rules. For each epsilon, top-p's p is tuned (bisection) so "
        "that its mean candidate-set size on adaptive decoding's own steps equals adaptive "
        "decoding's; the set sizes below are each rule's mean on its own samples. Validity: "
        "the TinyWorld judge; distinct-2 among one prompt's samples; 95% bootstrap intervals "
        "over prompts; the difference is adaptive - top-p, paired by prompt.", "",
        "| T | epsilon | mean set (adaptive / top-p) | top-p p | validity adaptive | "
        "validity top-p | validity diff | distinct-2 adaptive | distinct-2 top-p | "
        "distinct-2 diff | verdict |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        a, p, d = row["adaptive"], row["top_p_rule"], row["difference"]
        lines.append(
            f"| {row['temperature']:g} | {row['epsilon']:g} | {a['mean_set_size']:.2f} / "
            f"{p['mean_set_size']:.2f} | {row['top_p']:.3f} | {fmt(a['validity'])} | "
            f"{fmt(p['validity'])} | {fmt(d['validity'])} | {fmt(a['distinct_2'])} | "
            f"{fmt(p['distinct_2'])} | {fmt(d['distinct_2'])} | "
            f"{verdict(d['validity'], d['distinct_2'])} |")
    counts = {}
    for row in result["rows"]:
        v = verdict(row["difference"]["validity"], row["difference"]["distinct_2"])
        counts[v] = counts.get(v, 0) + 1
    lines += ["", "Verdict per row (win: one paired interval above 0 and none below; loss: the "
              "reverse; tie: every interval covers 0): "
              + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) + ".", "",
              "Raw numbers: `benchmarks/results/adaptive.json`.", ""]
    return lines


def write_results(result: dict, lines: list[str]) -> None:
    replace_section(SECTION, lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=24)
    parser.add_argument("--per-prompt", type=int, default=4)
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--epsilons", type=float, nargs="+", default=list(EPSILONS))
    parser.add_argument("--temperatures", type=float, nargs="+", default=list(TEMPERATURES))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    add_results_arguments(parser, OUT)
    args = parser.parse_args()
    if rerender_from_json(args, summary_lines, write_results):
        return
    save_and_report(args, run(args), summary_lines, write_results)


if __name__ == "__main__":
    main()
