"""Speculative decoding speed (chapter 07): speculative vs the target alone, side by side.

Greedy, batch 1, ``--new-tokens`` new tokens after the first ``--prompt-tokens`` tokens of held-out
TinyWorld stories and structured documents
(``minidecode.tinyworld.evaluate.held_out_docs``). For every
prompt the target alone runs first, then speculative decoding with the draft model and with prompt
lookup at each gamma, so a slow spell of the (shared) machine hits all of them alike; tokens/s are
totals over the prompts and every ratio is measured in this one run. Each speculative output is
compared token for token with the target's own greedy output.

Beside each measured speedup: alpha (acceptance rate), tokens per target call, and the theoretical
speedup (1 - alpha^(g+1)) / ((1 - alpha)(g c + 1)), with c = (seconds per token of the draft model
decoding alone) / (seconds per token of the target decoding alone), measured here too.

transformers' assisted generation (``generate(assistant_model=..., do_sample=False)``) runs on the
same pair, loaded from the same folders, at the best gamma of minidecode's draft-model runs.

    python benchmarks/bench_speculative.py                    # print, write the JSON
    python benchmarks/bench_speculative.py --write-results    # also update benchmarks/RESULTS.md

The JSON (``benchmarks/results/speculative_main.json``) is what notebooks/07 plots.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import os
import platform
import statistics
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
from transformers import AutoModelForCausalLM

import minidecode
from minidecode.checkpoint import MODELS_DIR
from minidecode.generate import generate
from minidecode.prompt_lookup import PromptLookupDrafter
from minidecode.speculative import ModelDrafter, speculative_generate, theoretical_speedup
from minidecode.tinyworld.evaluate import encode_prompt, held_out_docs

HERE = Path(__file__).parent
OUT = HERE / "results" / "speculative_main.json"
SECTION = "## Speculative decoding"
FAMILIES = ("stories", "structured")


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def verify_cost(model, ids: torch.Tensor, gammas: list[int], repeats: int = 30) -> dict[int, float]:
    """v(gamma) = T(call on gamma + 1 tokens) / T(call on 1 token), both through a KV cache
    holding ``ids``, medians of ``repeats`` interleaved calls (the cache cropped back after
    each, so every call sees the same length)."""
    cache = model.new_cache()
    with torch.no_grad():
        model(ids, cache)
        length = len(cache)
        times: dict[int, list[float]] = {g: [] for g in [0, *gammas]}
        for _ in range(repeats):
            for g in times:
                chunk = ids[:, -(g + 1):]
                start = time.perf_counter()
                model(chunk, cache)
                times[g].append(time.perf_counter() - start)
                cache.crop(length)
    one = statistics.median(times[0])
    return {g: max(1.0, statistics.median(times[g]) / one) for g in gammas}


def model_dir(name_or_path: str) -> Path:
    """A shipped model's folder, or the checkpoint folder given as a path."""
    path = Path(name_or_path)
    return path if (path / "config.json").is_file() else MODELS_DIR / name_or_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--prompt-tokens", type=int, default=32)
    parser.add_argument("--prompts", type=int, default=3, help="held-out documents per family")
    parser.add_argument("--gammas", type=int, nargs="+", default=list(range(1, 9)))
    parser.add_argument("--max-ngram", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--target", default="main",
                        help="shipped model (or checkpoint folder) that verifies")
    parser.add_argument("--draft", default="main-draft",
                        help="shipped model (or checkpoint folder) that drafts")
    add_results_arguments(parser, OUT)
    args = parser.parse_args()
    if rerender_from_json(args, summary_lines, write_results):
        return
    torch.set_num_threads(args.threads)

    target, tokenizer = minidecode.load(args.target)
    draft, _ = minidecode.load(args.draft)
    hf_target = AutoModelForCausalLM.from_pretrained(model_dir(args.target),
                                                     dtype=torch.float32).eval()
    hf_draft = AutoModelForCausalLM.from_pretrained(model_dir(args.draft),
                                                    dtype=torch.float32).eval()
    hf_config = copy.deepcopy(hf_target.generation_config)
    # No early stop anywhere: exactly --new-tokens tokens. transformers fills a generation
    # config's unset fields from the model's own, so the model's eos must go too.
    hf_config.eos_token_id = None
    hf_target.generation_config.eos_token_id = None
    hf_config.do_sample = False
    hf_config.max_new_tokens = args.new_tokens
    hf_draft.generation_config.eos_token_id = None
    n = args.new_tokens

    prompts = {family: [torch.tensor([encode_prompt(tokenizer, doc.text)[: args.prompt_tokens]])
                        for doc in held_out_docs(family, args.prompts)] for family in FAMILIES}
    generate(target, prompts["stories"][0], 8)                         # warm up
    speculative_generate(target, draft, prompts["stories"][0], 8)

    # c: the draft's cost per token relative to the target's, both decoding alone.
    target_s = draft_s = 0.0
    for ids in prompts["stories"]:
        target_s += timed(lambda ids=ids: generate(target, ids, n))[1]
        draft_s += timed(lambda ids=ids: generate(draft, ids, n))[1]
    cost_ratio = draft_s / target_s
    # v(gamma): what one verify call on gamma + 1 tokens costs, in target calls on one token.
    verify_costs = verify_cost(target, prompts["stories"][0], args.gammas)

    rows = []
    for family in FAMILIES:
        totals: dict[tuple[str, int], dict] = {}
        baseline_s = 0.0
        for ids in prompts[family]:
            expected, seconds = timed(lambda ids=ids: generate(target, ids, n))
            baseline_s += seconds
            for name in ("draft model", "prompt lookup"):
                for gamma in args.gammas:
                    drafter = ModelDrafter(draft) if name == "draft model" else \
                        PromptLookupDrafter(args.max_ngram)
                    out = speculative_generate(target, drafter, ids, n, gamma=gamma)
                    entry = totals.setdefault((name, gamma), dict(
                        seconds=0.0, accepted=0, rejected=0, target_calls=0, draft_calls=0,
                        identical=True))
                    entry["seconds"] += out.stats.wall_time_s
                    entry["accepted"] += out.stats.accepted
                    entry["rejected"] += out.stats.rejected
                    entry["target_calls"] += out.stats.target_calls
                    entry["draft_calls"] += out.stats.draft_calls
                    entry["identical"] &= torch.equal(out.tokens, expected)
        tokens = n * len(prompts[family])
        base_speed = tokens / baseline_s
        rows.append(dict(family=family, method="target alone", gamma=0,
                         tokens_per_s=base_speed, speedup=1.0, identical=True))
        for (name, gamma), entry in totals.items():
            tested = entry["accepted"] + entry["rejected"]
            alpha = entry["accepted"] / tested if tested else 0.0
            c = cost_ratio if name == "draft model" else 0.0
            speed = tokens / entry["seconds"]
            rows.append(dict(
                family=family, method=name, gamma=gamma, tokens_per_s=speed,
                speedup=speed / base_speed, alpha=alpha,
                tokens_per_call=tokens / entry["target_calls"],
                theoretical_speedup=theoretical_speedup(min(alpha, 1.0), gamma, c),
                verify_cost=verify_costs[gamma],
                theory_with_verify_cost=theoretical_speedup(min(alpha, 1.0), gamma, c,
                                                            verify_cost=verify_costs[gamma]),
                cost_ratio=c, identical=entry["identical"]))

        # transformers' assisted generation on the same pair, at our best draft-model gamma.
        ours = [r for r in rows if r["family"] == family and r["method"] == "draft model"]
        best = max(ours, key=lambda r: r["speedup"])
        hf_draft.generation_config.num_assistant_tokens = best["gamma"]
        hf_draft.generation_config.num_assistant_tokens_schedule = "constant"
        hf_s = ours_s = hf_alone_s = 0.0
        same = True
        for ids in prompts[family]:
            mask = torch.ones_like(ids)
            with torch.no_grad():
                assisted, seconds = timed(lambda ids=ids, mask=mask: hf_target.generate(
                    ids, attention_mask=mask, assistant_model=hf_draft,
                    generation_config=hf_config))
                hf_s += seconds
                hf_alone_s += timed(lambda ids=ids, mask=mask: hf_target.generate(
                    ids, attention_mask=mask, generation_config=hf_config))[1]
            out = speculative_generate(target, draft, ids, n, gamma=best["gamma"])
            ours_s += out.stats.wall_time_s
            same &= assisted.shape == out.tokens.shape and torch.equal(assisted, out.tokens)
        rows.append(dict(family=family, method="transformers assisted", gamma=best["gamma"],
                         tokens_per_s=tokens / hf_s, speedup=(tokens / hf_s) / base_speed,
                         minidecode_over_transformers=hf_s / ours_s,
                         transformers_alone_tokens_per_s=tokens / hf_alone_s, identical=same))

    import transformers

    result = dict(
        date=datetime.date.today().isoformat(),
        machine=f"2-core CPU, no GPU ({platform.machine()})",
        command=" ".join(["python benchmarks/bench_speculative.py", *sys.argv[1:]]),
        torch=torch.__version__, transformers=transformers.__version__,
        threads=torch.get_num_threads(), new_tokens=n, prompt_tokens=args.prompt_tokens,
        prompts_per_family=args.prompts, cost_ratio=cost_ratio, verify_costs=verify_costs,
        target=args.target, draft=args.draft,
        target_layers=target.config.num_hidden_layers, target_width=target.config.hidden_size,
        draft_layers=draft.config.num_hidden_layers, draft_width=draft.config.hidden_size,
        load_average=os.getloadavg()[0], rows=rows,
        json=str(args.out.resolve().relative_to(HERE.resolve().parent))
        if args.out.resolve().is_relative_to(HERE.resolve().parent) else str(args.out))
    save_and_report(args, result, summary_lines, write_results)


def summary_lines(result: dict) -> list[str]:
    target = (f"{result['target']} ({result['target_layers']} layers, "
              f"width {result['target_width']})")
    layers = result["draft_layers"]
    draft = (f"{result['draft']} ({layers} layer{'s' if layers != 1 else ''}, "
             f"width {result['draft_width']})")
    lines = [
        f"- models: {target} verifies, {draft} drafts; greedy, batch 1, "
        f"{result['new_tokens']} new tokens after "
        f"{result['prompt_tokens']}-token prompts, {result['prompts_per_family']} held-out "
        f"documents per family, float32, torch {result['torch']}, transformers "
        f"{result['transformers']}, {result['threads']} thread(s)",
        f"- c (draft / target seconds per token, each decoding alone): {result['cost_ratio']:.2f}",
        "",
        "| text | method | gamma | tokens/s | speedup | alpha | tokens / target call | "
        "theory | same output |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for family in FAMILIES:
        rows = [r for r in result["rows"] if r["family"] == family]
        base = rows[0]
        lines.append(f"| {family} | target alone | - | {base['tokens_per_s']:.0f} | 1.00x | - | 1 "
                     "| - | - |")
        for method in ("draft model", "prompt lookup"):
            best = max((r for r in rows if r["method"] == method), key=lambda r: r["speedup"])
            lines.append(
                f"| {family} | {method} (best gamma) | {best['gamma']} | "
                f"{best['tokens_per_s']:.0f} | {best['speedup']:.2f}x | {best['alpha']:.2f} | "
                f"{best['tokens_per_call']:.2f} | {best['theoretical_speedup']:.2f}x | "
                f"{best['identical']} |")
        hf = next(r for r in rows if r["method"] == "transformers assisted")
        lines.append(
            f"| {family} | transformers assisted | {hf['gamma']} | {hf['tokens_per_s']:.0f} | "
            f"{hf['speedup']:.2f}x | - | - | - | {hf['identical']} |")
    if "verify_costs" in result:
        lines += ["", "Every gamma, draft model: the measured speedup beside Leviathan et al.'s "
                  "theory with v = 1 and with v = T(gamma + 1) / T(1) measured on the target "
                  "through its KV cache (cost-aware).", "",
                  "| text | gamma | alpha | v | speedup | theory (v = 1) | theory (v measured) "
                  "| measured / cost-aware |", "|---|---|---|---|---|---|---|---|"]
        for family in FAMILIES:
            for r in (r for r in result["rows"]
                      if r["family"] == family and r["method"] == "draft model"):
                lines.append(
                    f"| {family} | {r['gamma']} | {r['alpha']:.2f} | {r['verify_cost']:.2f} | "
                    f"{r['speedup']:.2f}x | {r['theoretical_speedup']:.2f}x | "
                    f"{r['theory_with_verify_cost']:.2f}x | "
                    f"{r['speedup'] / r['theory_with_verify_cost']:.2f} |")
        lines.append("")
    for family in FAMILIES:
        hf = next(r for r in result["rows"]
                  if r["family"] == family and r["method"] == "transformers assisted")
        lines.append(f"- {family}: minidecode speculative / transformers assisted, same gamma: "
                     f"{hf['minidecode_over_transformers']:.2f}x (transformers' target alone: "
                     f"{hf['transformers_alone_tokens_per_s']:.0f} tokens/s)")
    lines.append(f"- load average (1 min) when the run ended: {result['load_average']:.1f} (on a "
                 "shared machine absolute tokens/s drop; the ratios are measured side by side)")
    lines += ["", "Goals: >= 2.0x on structured text and >= 1.5x on stories with the "
              "draft model; at least as fast as transformers' assisted generation."]
    for family, goal in (("stories", 1.5), ("structured", 2.0)):
        rows = [r for r in result["rows"] if r["family"] == family]
        for method in ("draft model", "prompt lookup"):
            best = max((r for r in rows if r["method"] == method), key=lambda r: r["speedup"])
            verdict = "met" if best["speedup"] >= goal else "NOT met"
            lines.append(
                f"- {family}, {method}: {best['speedup']:.2f}x at gamma {best['gamma']} "
                f"(goal {goal}x: {verdict}); theory {best['theoretical_speedup']:.2f}x from "
                f"alpha {best['alpha']:.2f}, c {best['cost_ratio']:.2f}; measured/theory "
                f"{best['speedup'] / best['theoretical_speedup']:.2f}")
    return lines


def write_results(result: dict, lines: list[str]) -> None:
    """Replace this benchmark's section of RESULTS.md (other sections stay as they are): one
    section a (target, draft) pair; the chapter's pair is (main, main-draft)."""
    pair = (result["target"], result["draft"])
    default = pair == ("main", "main-draft")
    section = f"{SECTION}: {pair[0]} and {pair[1]}"
    where = result.get("json", "benchmarks/results/speculative_main.json")
    body = [section, "",
            f"Command: `{result['command']}`; machine: {result['machine']}; "
            f"date: {result['date']}. Full sweep (every gamma): `{where}`"
            + (", plotted by `notebooks/07_speculative_decoding.ipynb`." if default else "."), "",
            *lines, ""]
    replace_section(section, body)


if __name__ == "__main__":
    main()
