"""Samplers compared: diversity and quality over 200 samples, and the cost of each processor.

Quality and diversity (chapters 01-03): for each sampler, 20 samples of ``--new-tokens`` tokens
from each of 10 TinyWorld story openings (200 samples, the same prompts and seeds for every
sampler), decoded by ``minidecode.load("tiny-target")``. Reported per sampler: distinct-2 (pooled
per prompt, then averaged over prompts), self-similarity (mean pairwise Jaccard overlap of the
bigram sets of one prompt's samples, averaged), and the target's perplexity of its own samples
(geometric mean over samples). Sweeps of top-p, min-p and adaptive decoding's epsilon trace
the trade-off.

Cost: the time of one sampling step (processors, softmax, multinomial) on the model's real logits
(batch 20, the vocabulary of tiny-target), relative to plain softmax sampling, measured in the same
run with the samplers interleaved (median of ``--repeats`` rounds).

    python benchmarks/bench_sampling.py                   # print; write results/sampling.json
    python benchmarks/bench_sampling.py --write-results   # also update benchmarks/RESULTS.md
"""

from __future__ import annotations

import argparse
import json
import math
import platform
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
    sample_batch,
    self_similarity,
    story_prompts,
    trim_at_eos,
)
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
from minidecode.temperature import EDT, DynamicTemperature, SourceScheduler
from minidecode.tinyworld.evaluate import encode_prompt

SECTION = "## Samplers: diversity, quality and cost per step (issue 5)"
HERE = Path(__file__).parent
JSON_PATH = HERE / "results" / "sampling.json"
FIGURE_PATH = HERE / "results" / "sampling_tradeoff.png"

# name -> (family, factory of a fresh processor list). "greedy" is top-k 1: argmax at every step.
SAMPLERS: dict[str, tuple[str, Callable[[], list]]] = {
    "greedy": ("baseline", lambda: [TopK(1)]),
    "pure sampling": ("baseline", lambda: []),
    "top-k 20": ("truncation", lambda: [TopK(20)]),
    "top-p 0.9": ("truncation", lambda: [TopP(0.9)]),
    "min-p 0.1": ("truncation", lambda: [MinP(0.1)]),
    "typical 0.9": ("truncation", lambda: [Typical(0.9)]),
    "epsilon 3e-4": ("truncation", lambda: [Epsilon(3e-4)]),
    "eta 3e-4": ("truncation", lambda: [Eta(3e-4)]),
    "adaptive 1e-3": ("adaptive", lambda: [AdaptiveDecoding(1e-3)]),
    "confidence rule (source)": ("adaptive", lambda: [ConfidenceRule()]),
    "entropix": ("adaptive", lambda: [Entropix()]),
    "EDT": ("temperature", lambda: [EDT(t0=1.0, n=0.8, theta=1.0)]),
    "dynamic temperature": ("temperature", lambda: [DynamicTemperature(0.5, 1.5, 1.0)]),
    "source scheduler (fixed)": ("temperature", lambda: [SourceScheduler()]),
}
SWEEPS: dict[str, tuple[str, list[float], Callable[[float], list]]] = {
    "top-p": ("top_p", [0.7, 0.9, 1.0], lambda v: [TopP(v)]),
    "min-p": ("min_p", [0.3, 0.1, 0.0], lambda v: [MinP(v)]),
    "adaptive": ("epsilon", [1e-2, 1e-3], lambda v: [AdaptiveDecoding(v)]),
}
# Sweep points that are also in SAMPLERS are measured once (top-p 1 and min-p 0 keep every token).
SAME_AS = {("top-p", 0.9): "top-p 0.9", ("top-p", 1.0): "pure sampling",
           ("min-p", 0.1): "min-p 0.1", ("min-p", 0.0): "pure sampling",
           ("adaptive", 1e-3): "adaptive 1e-3"}
PARTIAL = HERE / "results" / "sampling.partial.json"


def measure(model, tokenizer, processors_factory, prompts, per_prompt, new_tokens, seed) -> dict:
    eos = tokenizer.token_to_id(tinyworld.EOS)
    distinct, similarity, log_perplexities = [], [], []
    for index, prompt in enumerate(prompts):
        prompt_ids = encode_prompt(tokenizer, prompt)
        tokens = sample_batch(model, prompt_ids, processors_factory(), per_prompt, new_tokens,
                              seed=seed + index, eos_token_id=eos)
        samples = trim_at_eos(tokens, len(prompt_ids), eos)
        distinct.append(distinct_n(samples, 2))
        similarity.append(self_similarity(samples, 2))
        log_perplexities += perplexity(model, tokens, len(prompt_ids), eos).log().tolist()
    # The geometric mean over samples: one derailed sample must not swamp the other 199.
    return {"distinct_2": statistics.fmean(distinct),
            "self_similarity": statistics.fmean(similarity),
            "perplexity": math.exp(statistics.fmean(log_perplexities)),
            "samples": len(log_perplexities)}


def step_costs(model, tokenizer, repeats: int) -> dict[str, float]:
    """Seconds per sampling step for each sampler and for plain softmax sampling (median)."""
    prompt_ids = encode_prompt(tokenizer, story_prompts(1, seed=99)[0])
    tokens = sample_batch(model, prompt_ids, [], 20, 24, seed=0)
    with torch.no_grad():
        scores = model(tokens).logits[:, -1].float()                     # (20, vocab)
    generator = torch.Generator().manual_seed(0)
    input_ids = tokens
    candidates = {"plain softmax sampling": list} | {
        name: factory for name, (_, factory) in SAMPLERS.items() if name != "pure sampling"}
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


def figure(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for name, sweep in results["sweeps"].items():
        ax.plot([p["perplexity"] for p in sweep["points"]],
                [p["distinct_2"] for p in sweep["points"]], "o-", label=f"{name} sweep")
    for name, row in results["samplers"].items():
        ax.scatter(row["perplexity"], row["distinct_2"], marker="x", color="black")
        ax.annotate(name, (row["perplexity"], row["distinct_2"]), fontsize=7,
                    xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("perplexity of the samples under tiny-target (lower = more fluent)")
    ax.set_ylabel("distinct-2 (higher = more diverse)")
    ax.set_title("200 samples per sampler, 10 story prompts")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=10)
    parser.add_argument("--per-prompt", type=int, default=20)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--write-results", action="store_true")
    parser.add_argument("--resume", action="store_true",
                        help=f"reuse the rows already in {PARTIAL.name} (same settings only)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    model, tokenizer = minidecode.load("tiny-target")
    prompts = story_prompts(args.prompts, seed=args.seed)
    config = (model, tokenizer)
    rows = json.loads(PARTIAL.read_text()) if args.resume and PARTIAL.exists() else {}
    for name, (family, factory) in SAMPLERS.items():
        if name in rows:
            continue
        start = time.perf_counter()
        rows[name] = {"family": family,
                      **measure(*config, factory, prompts, args.per_prompt, args.new_tokens,
                                args.seed)}
        print(f"{name:28s} distinct-2 {rows[name]['distinct_2']:.3f}  self-sim "
              f"{rows[name]['self_similarity']:.3f}  ppl {rows[name]['perplexity']:.3f}  "
              f"({time.perf_counter() - start:.1f} s)", flush=True)
        PARTIAL.parent.mkdir(parents=True, exist_ok=True)
        PARTIAL.write_text(json.dumps(rows, indent=1) + "\n")
    sweeps = {}
    for name, (parameter, values, make) in SWEEPS.items():
        points = []
        for value in values:
            if (name, value) in SAME_AS:
                points.append({parameter: value, **rows[SAME_AS[name, value]]})
                continue
            point = measure(*config, lambda value=value, make=make: make(value), prompts,
                            args.per_prompt,
                            args.new_tokens, args.seed)
            points.append({parameter: value, **point})
            print(f"{name} {parameter}={value}: distinct-2 {point['distinct_2']:.3f}  "
                  f"ppl {point['perplexity']:.3f}", flush=True)
        sweeps[name] = {"parameter": parameter, "points": points}
    costs = step_costs(model, tokenizer, args.repeats)
    plain = costs["plain softmax sampling"]
    for name, seconds in costs.items():
        print(f"cost {name:36s} {seconds * 1e6:8.1f} us  ({seconds / plain:.2f}x plain)")

    results = {
        "command": " ".join(["python benchmarks/bench_sampling.py", *sys.argv[1:]]),
        "machine": f"2-core CPU, no GPU ({platform.machine()})",
        "date": "2026-11-23",
        "torch": torch.__version__,
        "model": "tiny-target",
        "prompts": prompts,
        "per_prompt": args.per_prompt,
        "new_tokens": args.new_tokens,
        "samplers": rows,
        "sweeps": sweeps,
        "step_cost_seconds": costs,
        "step_cost_ratio": {name: seconds / plain for name, seconds in costs.items()},
    }
    JSON_PATH.parent.mkdir(parents=True, exist_ok=True)
    JSON_PATH.write_text(json.dumps(results, indent=1) + "\n")
    PARTIAL.unlink(missing_ok=True)
    print(f"wrote {JSON_PATH}")
    figure(results, FIGURE_PATH)
    print(f"wrote {FIGURE_PATH}")
    if args.write_results:
        write_results(results)


def write_results(results: dict) -> None:
    """Replace this benchmark's section of RESULTS.md (other sections stay as they are)."""
    lines = [
        SECTION, "",
        f"Command: `{results['command']}`; machine: {results['machine']}; date: "
        f"{results['date']}; torch {results['torch']}, 1 thread; model: {results['model']}.", "",
        f"{len(results['prompts'])} TinyWorld story openings x {results['per_prompt']} samples = "
        f"{len(results['prompts']) * results['per_prompt']} samples per sampler, up to "
        f"{results['new_tokens']} new tokens each, the same seeds for every sampler. distinct-2: "
        "distinct bigrams / bigrams among one prompt's samples (higher = more diverse); "
        "self-similarity: mean pairwise Jaccard overlap of their bigram sets (lower = more "
        "diverse); perplexity: tiny-target's perplexity of the generated tokens, geometric mean "
        "over samples (lower = more fluent). Cost: one sampling step (processors + softmax + "
        "multinomial) on real logits, "
        "batch 20, relative to plain softmax sampling in the same run (median of "
        "interleaved rounds).", "",
        "![distinct-2 against perplexity](results/sampling_tradeoff.png)", "",
        "| sampler | distinct-2 | self-similarity | perplexity | cost / plain sampling |",
        "|---|---|---|---|---|",
    ]
    ratios = results["step_cost_ratio"]
    for name, row in results["samplers"].items():
        ratio = ratios.get(name, ratios["plain softmax sampling"])
        lines.append(f"| {name} | {row['distinct_2']:.3f} | {row['self_similarity']:.3f} | "
                     f"{row['perplexity']:.2f} | {ratio:.2f}x |")
    plain_us = results["step_cost_seconds"]["plain softmax sampling"] * 1e6
    forward_us = results["step_cost_seconds"]["model forward (decode step, batch 20)"] * 1e6
    dearest = max(v for k, v in results["step_cost_seconds"].items() if "forward" not in k)
    lines += [
        "",
        f"Plain softmax sampling takes {plain_us:.0f} us a step here; the model's own decode "
        f"step (batch 20) takes {forward_us:.0f} us, so even the dearest processor adds "
        f"{dearest / (forward_us / 1e6) * 100:.0f}% "
        "at most to a decode step.",
        "",
        "Sweeps (distinct-2 / perplexity): " + "; ".join(
            f"{name}: " + ", ".join(f"{p[sweep['parameter']]} -> {p['distinct_2']:.3f}/"
                                    f"{p['perplexity']:.2f}" for p in sweep["points"])
            for name, sweep in results["sweeps"].items()),
        "", "Raw numbers: `benchmarks/results/sampling.json`. Greedy has the *highest* "
        "perplexity of all: its 200 texts are 10 texts repeated, and those fall into loops whose "
        "tokens the model, reading them, finds less likely than sampled text.", "",
    ]
    replace_section(SECTION, lines)


if __name__ == "__main__":
    main()
