"""Chapters 01-03 measured with the TinyWorld judge: quality against diversity, and cost per step.

Quality and diversity: every decoding rule of chapters 01-03, each swept over its parameter
(where it really changes what is kept), samples ``--per-prompt`` continuations of up to
``--new-tokens`` tokens from each of ``--prompts`` TinyWorld story openings with
``minidecode.load("main")``, stopping at ``<|endoftext|>``; the same prompts and seeds for
every rule. Prompts of one token length run as one batch. Each sample is judged by
:mod:`minidecode.tinyworld.judge` (validity, loops, repeated 4-grams, perplexity without the
end-of-text token); diversity is distinct-2 and self-similarity among one prompt's samples.
Every aggregate has a 95% bootstrap interval over prompts.

Cost: the time of one sampling step (processors, softmax, multinomial) on the model's real logits
(batch 20), relative to plain softmax sampling, samplers interleaved (median of ``--repeats``).

    python benchmarks/bench_sampling.py                   # print; write results/sampling.json
    python benchmarks/bench_sampling.py --write-results   # also update benchmarks/RESULTS.md
    python benchmarks/bench_sampling.py --only min-p --prompts 4   # a quick look, writes nothing
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from results_md import replace_section  # benchmarks/results_md.py, beside this script

import minidecode
from minidecode import tinyworld
from minidecode.adaptive import AdaptiveDecoding, ConfidenceRule, Entropix
from minidecode.diversity import (
    distinct_n,
    perplexity,
    plot_tradeoff,
    sample_batch,
    self_similarity,
    story_prompts,
    trim_at_eos,
)
from minidecode.generate import generate
from minidecode.sampling import (
    Epsilon,
    Eta,
    MinP,
    TopK,
    TopP,
    Typical,
    apply_processors,
    sample_next_token,
)
from minidecode.temperature import EDT, DynamicTemperature, ThreeFactorScheduler
from minidecode.tinyworld.evaluate import encode_prompt
from minidecode.tinyworld.judge import bootstrap_ci, judge_story, perplexity_without_eos

MODEL = "main"
SECTION = "## Samplers: diversity, quality and cost per step"
HERE = Path(__file__).parent
JSON_PATH = HERE / "results" / "sampling.json"
FIGURE_PATHS = {chapter: HERE / "results" / f"sampling_tradeoff_ch{chapter}.png"
                for chapter in (1, 2, 3)}

# sweep -> (chapter, parameter, values, factory(value) -> (temperature, processors)).
# Each sweep spans the range where its rule really changes the kept set on main (V = 1117);
# the decode loop applies the temperature first, then the processors.
HOT = 1.6   # the "high temperature" of the min-p comparison (Nguyen et al. 2024)
SWEEPS: dict[str, tuple[int, str, list, Callable]] = {
    "greedy": (1, "k", [1], lambda v: (1.0, [TopK(1)])),
    "temperature": (1, "T", [0.5, 0.7, 1.0, 1.3, HOT], lambda v: (v, [])),
    "top-k": (1, "k", [2, 5, 20], lambda v: (1.0, [TopK(v)])),
    "top-p": (1, "p", [0.5, 0.7, 0.9], lambda v: (1.0, [TopP(v)])),
    "min-p": (1, "p_min", [0.3, 0.1, 0.02], lambda v: (1.0, [MinP(v)])),
    "typical": (1, "tau", [0.5, 0.8, 0.95], lambda v: (1.0, [Typical(v)])),
    "epsilon": (1, "epsilon", [3e-2, 3e-3, 3e-4], lambda v: (1.0, [Epsilon(v)])),
    "eta": (1, "eta", [3e-2, 3e-3, 3e-4], lambda v: (1.0, [Eta(v)])),
    f"min-p at T {HOT}": (1, "p_min", [0.3, 0.1, 0.05], lambda v: (HOT, [MinP(v)])),
    f"top-p at T {HOT}": (1, "p", [0.7, 0.9], lambda v: (HOT, [TopP(v)])),
    "adaptive": (2, "epsilon", [3e-2, 1e-2, 1e-3], lambda v: (1.0, [AdaptiveDecoding(v)])),
    "confidence rule (fixed)": (2, "-", [0], lambda v: (1.0, [ConfidenceRule()])),
    "entropix": (2, "H threshold", [0.5, 1.0, 2.0],
                 lambda v: (1.0, [Entropix(entropy_threshold=v)])),
    "EDT": (3, "theta", [4.0, 1.0, 0.25], lambda v: (1.0, [EDT(t0=1.0, n=0.8, theta=v)])),
    "dynamic temperature": (3, "exponent", [2.0, 1.0, 0.5],
                            lambda v: (1.0, [DynamicTemperature(0.5, 1.5, v)])),
    "three-factor scheduler (fixed)": (3, "-", [0], lambda v: (1.0, [ThreeFactorScheduler()])),
}
# Which sweeps each chapter's figure shows (its own, plus references from earlier chapters).
CHAPTER_SWEEPS = {
    1: ["greedy", "temperature", "top-k", "top-p", "min-p", "typical", "epsilon", "eta",
        f"min-p at T {HOT}", f"top-p at T {HOT}"],
    2: ["greedy", "temperature", "top-p", "min-p", "adaptive", "confidence rule (fixed)",
        "entropix"],
    3: ["greedy", "temperature", "min-p", "EDT", "dynamic temperature",
        "three-factor scheduler (fixed)"],
}
METRICS = ("validity", "valid_texts", "loops", "repeated_4grams", "judge_perplexity",
           "perplexity_with_eos", "distinct_2", "self_similarity", "stopped", "location_clashes")


COST_SAMPLERS: dict[str, Callable[[], list]] = {
    "greedy": lambda: [TopK(1)], "top-k 20": lambda: [TopK(20)], "top-p 0.9": lambda: [TopP(0.9)],
    "min-p 0.1": lambda: [MinP(0.1)], "typical 0.9": lambda: [Typical(0.9)],
    "epsilon 3e-4": lambda: [Epsilon(3e-4)], "eta 3e-4": lambda: [Eta(3e-4)],
    "adaptive 1e-3": lambda: [AdaptiveDecoding(1e-3)],
    "confidence rule": lambda: [ConfidenceRule()],
    "entropix": lambda: [Entropix()], "EDT": lambda: [EDT()],
    "dynamic temperature": lambda: [DynamicTemperature(0.5, 1.5, 1.0)],
    "three-factor scheduler": lambda: [ThreeFactorScheduler()],
}


def group_prompts(tokenizer, prompts: list[str]) -> dict[int, list[int]]:
    """Prompt indices by token length: prompts of one length run as one batch."""
    groups: dict[int, list[int]] = {}
    for index, prompt in enumerate(prompts):
        groups.setdefault(len(encode_prompt(tokenizer, prompt)), []).append(index)
    return groups


def measure(model, tokenizer, make, prompts, per_prompt, new_tokens, seed) -> dict:
    """Samples of every prompt under one decoding rule, judged; aggregates with 95% intervals."""
    eos = tokenizer.token_to_id(tinyworld.EOS)
    rows: list[dict] = []
    per_prompt_tokens: dict[int, list[list[int]]] = {}
    for length, indices in group_prompts(tokenizer, prompts).items():
        temperature, processors = make()
        for processor in processors:
            if hasattr(processor, "reset"):
                processor.reset()
        ids = torch.tensor([encode_prompt(tokenizer, prompts[i]) for i in indices
                            for _ in range(per_prompt)])
        tokens = generate(model, ids, new_tokens, do_sample=True, temperature=temperature,
                          logits_processors=processors, eos_token_id=eos,
                          generator=torch.Generator().manual_seed(seed + length))
        judged_ppl = perplexity_without_eos(model, tokens, length, eos).tolist()
        old_ppl = perplexity(model, tokens, length, eos).tolist()
        samples = trim_at_eos(tokens, length, eos)
        for row, sample in enumerate(samples):
            index = indices[row // per_prompt]
            per_prompt_tokens.setdefault(index, []).append(sample)
            stopped = bool(sample) and sample[-1] == eos
            verdict = judge_story(tokenizer.decode([t for t in sample if t != eos]),
                                  prompt=prompts[index])
            rows.append({"prompt": index, "validity": verdict.validity,
                         "valid_texts": float(verdict.validity == 1.0),
                         "loops": float(verdict.loops),
                         "repeated_4grams": verdict.repeated_4grams,
                         "location_clashes": float(verdict.location_clashes),
                         "log_judge_perplexity": math.log(judged_ppl[row]),
                         "log_perplexity_with_eos": math.log(old_ppl[row]),
                         "stopped": float(stopped)})
    groups = [r["prompt"] for r in rows]
    out = {}
    for metric in ("validity", "valid_texts", "loops", "repeated_4grams", "stopped",
                   "location_clashes"):
        out[metric] = bootstrap_ci([r[metric] for r in rows], groups)
    for metric in ("judge_perplexity", "perplexity_with_eos"):
        out[metric] = bootstrap_ci([r[f"log_{metric}"] for r in rows], groups, geometric_mean)
    order = sorted(per_prompt_tokens)
    out["distinct_2"] = bootstrap_ci([distinct_n(per_prompt_tokens[i], 2) for i in order])
    out["self_similarity"] = bootstrap_ci([self_similarity(per_prompt_tokens[i], 2)
                                           for i in order])
    out["samples"] = len(rows)
    return out


def geometric_mean(logs: list[float]) -> float:
    return math.exp(sum(logs) / len(logs))


def generator_baseline(prompts: list[str], seed: int) -> dict:
    """The judge on TinyWorld's own continuations of the same openings (the reference)."""
    import random

    rng = random.Random(seed)
    rows = []
    for index, prompt in enumerate(prompts):
        text = tinyworld.story(rng).text
        assert text.startswith(prompt)
        verdict = judge_story(text[len(prompt):], prompt=prompt)
        rows.append((index, verdict))
    return {"validity": bootstrap_ci([v.validity for _, v in rows]),
            "repeated_4grams": bootstrap_ci([v.repeated_4grams for _, v in rows]),
            "location_clashes": bootstrap_ci([float(v.location_clashes) for _, v in rows]),
            "loops": bootstrap_ci([float(v.loops) for _, v in rows])}


def step_costs(model, tokenizer, repeats: int) -> dict[str, float]:
    """Seconds per sampling step for each sampler and for plain softmax sampling (median)."""
    prompt_ids = encode_prompt(tokenizer, story_prompts(1, seed=99)[0])
    tokens = sample_batch(model, prompt_ids, [], 20, 24, seed=0)
    with torch.no_grad():
        scores = model(tokens).logits[:, -1].float()                     # (20, vocab)
    generator = torch.Generator().manual_seed(0)
    input_ids = tokens
    candidates = {"plain softmax sampling": list} | COST_SAMPLERS
    timings: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, factory in candidates.items():
            processors = factory()
            start = time.perf_counter()
            for _ in range(20):
                sample_next_token(apply_processors(processors, scores, input_ids), generator)
            timings[name].append((time.perf_counter() - start) / 20)
    with torch.no_grad():
        cache = model.new_cache()
        model(tokens, cache)
        forward = []
        for _ in range(repeats):
            start = time.perf_counter()
            model(tokens[:, -1:], cache)
            forward.append(time.perf_counter() - start)
    result = {name: statistics.median(values) for name, values in timings.items()}
    result["model forward (decode step, batch 20)"] = statistics.median(forward)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=24)
    parser.add_argument("--per-prompt", type=int, default=4)
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", nargs="*", help="measure only these sweeps (a quick check)")
    parser.add_argument("--write-results", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    model, tokenizer = minidecode.load(MODEL)
    prompts = story_prompts(args.prompts, seed=args.seed)
    configs, sweeps = {}, {}
    for name, (chapter, parameter, values, make) in SWEEPS.items():
        if args.only and name not in args.only:
            continue
        names = []
        for value in values:
            config = name if len(values) == 1 else f"{name} {parameter} {value}"
            start = time.perf_counter()
            row = measure(model, tokenizer, lambda make=make, value=value: make(value), prompts,
                          args.per_prompt, args.new_tokens, args.seed)
            configs[config] = {"sweep": name, "value": value, **row}
            names.append(config)
            print(f"{config:34s} validity {row['validity'][0]:.3f} "
                  f"[{row['validity'][1]:.3f}, {row['validity'][2]:.3f}]  loops "
                  f"{row['loops'][0]:.2f}  judge ppl {row['judge_perplexity'][0]:.2f}  "
                  f"(with eos {row['perplexity_with_eos'][0]:.2f})  distinct-2 "
                  f"{row['distinct_2'][0]:.3f}  ({time.perf_counter() - start:.0f} s)",
                  flush=True)
        sweeps[name] = {"chapter": chapter, "parameter": parameter, "configs": names}
    costs = step_costs(model, tokenizer, args.repeats)
    plain = costs["plain softmax sampling"]
    results = {
        "command": " ".join(["python benchmarks/bench_sampling.py", *sys.argv[1:]]),
        "machine": "2-core CPU, no GPU, shared with a training run and other jobs",
        "date": datetime.date.today().isoformat(),
        "torch": torch.__version__,
        "model": MODEL,
        "n_prompts": len(prompts),
        "per_prompt": args.per_prompt,
        "new_tokens": args.new_tokens,
        "bootstrap": "percentile, 1000 resamples of the prompts, seed 0; [estimate, low, high]",
        "prompts": prompts,
        "generator_baseline": generator_baseline(prompts, args.seed),
        "configs": configs,
        "sweeps": sweeps,
        "step_cost_seconds": costs,
        "step_cost_ratio": {name: seconds / plain for name, seconds in costs.items()},
    }
    if args.only:
        print(json.dumps(results["generator_baseline"]))
        return
    JSON_PATH.parent.mkdir(parents=True, exist_ok=True)
    JSON_PATH.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {JSON_PATH}")
    import matplotlib

    matplotlib.use("Agg")
    for chapter, path in FIGURE_PATHS.items():
        plot_tradeoff(results, CHAPTER_SWEEPS[chapter]).savefig(path, dpi=100)
        print(f"wrote {path}")
    if args.write_results:
        write_results(results)


def fmt(triple: list[float], digits: int = 3) -> str:
    estimate, low, high = triple
    return f"{estimate:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def write_results(results: dict) -> None:
    """Replace this benchmark's section of RESULTS.md (other sections stay as they are)."""
    n = results["n_prompts"] * results["per_prompt"]
    base = results["generator_baseline"]
    lines = [
        SECTION, "",
        f"Command: `{results['command']}`; machine: {results['machine']}; date: "
        f"{results['date']}; torch {results['torch']}, 1 thread; model: {results['model']}.", "",
        f"{results['n_prompts']} TinyWorld story openings x {results['per_prompt']} samples = "
        f"n = {n} samples per row, up to {results['new_tokens']} new tokens, stopped at "
        "`<|endoftext|>`, the same seeds for every row. Every figure is an estimate with its 95% "
        "percentile bootstrap interval over prompts (1000 resamples, seed 0). Quality comes "
        "from the TinyWorld judge (`minidecode/tinyworld/judge.py`): *validity* = share of "
        "sentences the story grammar can produce without contradicting the story so far "
        "(protagonist, pronouns, nothing after the ending); *loops* = share of texts with a "
        "block repeated 3 times back to back; *judge ppl* = "
        f"{results['model']}'s perplexity of the "
        "generated tokens without the end-of-text token (geometric mean over samples); "
        "*ppl with eos* = the old measure that counts it. distinct-2: distinct bigrams / "
        "bigrams among one prompt's samples, averaged over prompts.", "",
        f"TinyWorld's own continuations of the same openings: validity "
        f"{fmt(base['validity'])}, repeated 4-grams {fmt(base['repeated_4grams'])}, location "
        f"clashes per text {fmt(base['location_clashes'], 2)} (the judge reports, does not "
        "score, those).", "",
        "![chapter 1](results/sampling_tradeoff_ch1.png)", "",
        "![chapter 2](results/sampling_tradeoff_ch2.png)", "",
        "![chapter 3](results/sampling_tradeoff_ch3.png)", "",
        "| ch | rule | validity | loops | judge ppl | ppl with eos | distinct-2 | "
        "self-similarity |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for config, row in results["configs"].items():
        chapter = results["sweeps"][row["sweep"]]["chapter"]
        lines.append(
            f"| {chapter} | {config} | {fmt(row['validity'])} | {fmt(row['loops'], 2)} | "
            f"{fmt(row['judge_perplexity'], 2)} | {fmt(row['perplexity_with_eos'], 2)} | "
            f"{fmt(row['distinct_2'])} | {fmt(row['self_similarity'])} |")
    plain_us = results["step_cost_seconds"]["plain softmax sampling"] * 1e6
    forward_us = results["step_cost_seconds"]["model forward (decode step, batch 20)"] * 1e6
    lines += ["", "Cost of one sampling step (processors + softmax + multinomial) on real logits, "
              f"batch 20, relative to plain softmax sampling ({plain_us:.0f} us; the model's "
              f"decode step takes {forward_us:.0f} us): " + ", ".join(
                  f"{name} {ratio:.2f}x" for name, ratio in results["step_cost_ratio"].items()
                  if "forward" not in name and name != "plain softmax sampling") + ".", ""]
    lines += notes(results)
    replace_section(SECTION, lines)


def compare(a: list[float], b: list[float]) -> str:
    """'higher' / 'lower' when the 95% intervals are disjoint, else 'indistinguishable'."""
    if a[1] > b[2]:
        return "higher"
    if a[2] < b[1]:
        return "lower"
    return "indistinguishable (intervals overlap)"


def notes(results: dict) -> list[str]:
    """What the numbers say about the chapters' and the papers' claims, worded from the data."""
    c = results["configs"]
    greedy, t1 = c["greedy"], c["temperature T 1.0"]
    hot = f"temperature T {HOT}"
    minp_hot, topp_hot = c[f"min-p at T {HOT} p_min 0.1"], c[f"top-p at T {HOT} p 0.9"]
    versus = compare(minp_hot["validity"], topp_hot["validity"])
    versus = ("min-p's validity is higher than top-p's" if versus == "higher" else
              "min-p's validity is lower than top-p's" if versus == "lower" else
              "min-p's and top-p's validity are indistinguishable (intervals overlap)")
    out = [
        f"**Greedy.** Under the old perplexity (end-of-text counted) greedy scores "
        f"{fmt(greedy['perplexity_with_eos'], 2)} against {fmt(t1['perplexity_with_eos'], 2)} "
        f"for sampling at T = 1; without the end-of-text token {fmt(greedy['judge_perplexity'], 2)}"
        f" against {fmt(t1['judge_perplexity'], 2)}. Its validity is "
        f"{fmt(greedy['validity'])}, but {greedy['loops'][0]:.0%} of its texts loop (sampling at "
        f"T = 1: {t1['loops'][0]:.0%}) and its distinct-2 is {greedy['distinct_2'][0]:.3f}: every "
        "sentence is grammatical, the story just repeats it. Greedy is not the most fluent rule "
        "here, it is the most repetitive.",
        "",
        f"**Min-p at high temperature (Nguyen et al. 2024, arXiv:2407.01082).** The claim: min-p "
        f"keeps text coherent at temperatures where top-p falls apart. At T = {HOT} (applied "
        f"before truncation), validity is {fmt(c[hot]['validity'])} with no truncation, "
        f"{fmt(topp_hot['validity'])} with top-p 0.9 and {fmt(minp_hot['validity'])} with min-p "
        f"0.1; {versus}, at distinct-2 {minp_hot['distinct_2'][0]:.3f} against "
        f"{topp_hot['distinct_2'][0]:.3f}. "
        + ("This reproduces the claim on TinyWorld." if compare(
            minp_hot['validity'], topp_hot['validity']) == "higher" else
           "At this n the claim is not reproduced: the two are not separated."),
        "",
    ]
    adaptive = [c[n] for n in results["sweeps"]["adaptive"]["configs"]]
    out += [
        "**Adaptive decoding (Zhu et al. 2024).** epsilon (this package's scale; the authors' "
        "code's threshold is ln 2 times it) " + ", ".join(
            f"{row['value']:g}: validity {row['validity'][0]:.3f}, distinct-2 "
            f"{row['distinct_2'][0]:.3f}" for row in adaptive)
        + f"; top-p 0.9: validity {c['top-p p 0.9']['validity'][0]:.3f}, distinct-2 "
        f"{c['top-p p 0.9']['distinct_2'][0]:.3f}.",
        "",
    ]
    edt = [c[n] for n in results["sweeps"]["EDT"]["configs"]]
    out += [
        "**Temperature schedules.** EDT theta " + ", ".join(
            f"{row['value']:g}: validity {row['validity'][0]:.3f}, judge ppl "
            f"{row['judge_perplexity'][0]:.2f}, distinct-2 {row['distinct_2'][0]:.3f}"
            for row in edt)
        + f"; plain T = 0.7: validity {c['temperature T 0.7']['validity'][0]:.3f}, distinct-2 "
        f"{c['temperature T 0.7']['distinct_2'][0]:.3f}. Three-factor scheduler (fixed): validity "
        f"{fmt(c['three-factor scheduler (fixed)']['validity'])}, judge ppl "
        f"{fmt(c['three-factor scheduler (fixed)']['judge_perplexity'], 2)}.",
        "",
        "Raw numbers: `benchmarks/results/sampling.json`.", "",
    ]
    return out


if __name__ == "__main__":
    main()
