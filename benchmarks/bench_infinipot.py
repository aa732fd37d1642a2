"""KV-cache compression (chapter 09): needle accuracy, peak cache memory and prefill speed of every
cache policy, side by side, on TinyWorld needle documents longer than the model's trained context.

Two parts:

- ``--part speed``: one document of ``--length`` tokens (default 4,096 = 8x the trained 512) read by
  every policy in turn, ``--repeats`` rounds interleaved so a slow spell of the shared machine hits
  all of them alike; prefill tokens/s and peak cache bytes relative to the full cache, in one run.
- ``--part needle``: exact match of the needle's code over a grid of lengths x depths,
  ``--n`` documents a cell (held-out seed), for the full cache (positions past 512 allowed, to
  show the failure), StreamingLLM, H2O, TOVA, SnapKV, SirLLM and InfiniPot (full, CaP only,
  NuC only, without CR-RoPE). Pot M = 512, kept C = 256 unless told otherwise.

    python benchmarks/bench_infinipot.py --part speed --write-results
    python benchmarks/bench_infinipot.py --part needle --lengths 4096 --depths 0.5 --n 30 \
        --held-out-keys --n-facts 2 3 4 [--question-known] --out results/infinipot_main_multi.json
    python benchmarks/bench_infinipot.py --equal-terms LONE.json MULTI.json QK.json  # RESULTS.md
    python benchmarks/bench_infinipot.py --merge part1.json part2.json --write-results

``--n-facts``: the needle among distractors of the same shape; ``--question-known``: every policy
that can use the question gets it (``QuestionProbe``; InfiniPot's catalyst is the question), else
InfiniPot's catalyst is generic (the question without its key) and the baselines compress before
the question is read, as they would in a stream.

Results go to benchmarks/results/ (notebook 09 plots infinipot_speed.json and
infinipot_main_*.json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import time
from pathlib import Path

import torch
from results_md import replace_section  # benchmarks/results_md.py, beside this script

import minidecode
from minidecode import tinyworld as tw
from minidecode.cache_policies import (
    H2O,
    TOVA,
    InfiniPot,
    QuestionProbe,
    SirLLM,
    SnapKV,
    StreamingLLM,
)
from minidecode.course.capstone import wilson_interval
from minidecode.infinipot import (
    answer_after_reading,
    extend_positions,
    needle_example,
    needle_found,
    needle_kept,
    read_document,
)
from minidecode.tinyworld.evaluate import HELD_OUT_SEED

HERE = Path(__file__).parent
SECTION = "## KV-cache compression: InfiniPot and baselines"
# A generic catalyst: the task's question without its key, in the wording the model was trained on
# (never the document's own question). ``--question-known`` gives every policy the real question.
GENERIC_CATALYSTS = {"has_code": "\nQ: What code does the",
                     "code_of": "\nQ: What is the code of the"}


def policies(catalyst_ids: list[int], question_ids: list[int] | None = None
             ) -> dict[str, tuple[object, bool]]:
    """name -> (policy or None for the full cache, CR-RoPE on?).

    question_ids: the "question known" setting: the policies that score by attention read the
    question before every compression (``QuestionProbe``), InfiniPot's catalyst is the question;
    StreamingLLM and SirLLM cannot use it and are unchanged.
    """
    if question_ids is not None:
        return {
            "StreamingLLM": (StreamingLLM(), True),
            "H2O": (QuestionProbe(H2O(), question_ids), True),
            "TOVA": (QuestionProbe(TOVA(), question_ids), True),
            "SnapKV": (QuestionProbe(SnapKV(), question_ids), True),
            "SirLLM": (SirLLM(), True),
            "InfiniPot": (InfiniPot(catalyst_ids=question_ids), True),
            "InfiniPot, NuC only": (InfiniPot(catalyst_ids=question_ids, use_cap=False), True),
        }
    return {
        "full cache": (None, False),
        "StreamingLLM": (StreamingLLM(), True),
        "H2O": (H2O(), True),
        "TOVA": (TOVA(), True),
        "SnapKV": (SnapKV(), True),
        "SirLLM": (SirLLM(), True),
        "InfiniPot, no CR-RoPE": (InfiniPot(catalyst_ids=catalyst_ids), False),
        "InfiniPot, CaP only": (InfiniPot(catalyst_ids=catalyst_ids, use_nuc=False), True),
        "InfiniPot, NuC only": (InfiniPot(catalyst_ids=catalyst_ids, use_cap=False), True),
        "InfiniPot": (InfiniPot(catalyst_ids=catalyst_ids), True),
        # InfiniPot's rule for the rest of the budget after the sinks and recent window that
        # StreamingLLM and SirLLM keep (the reader's chunk boundaries otherwise cut sentences).
        "InfiniPot, sinks + recent": (InfiniPot(catalyst_ids=catalyst_ids, n_sinks=4,
                                                n_recent=32), True),
    }


def machine() -> str:
    return (f"{platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads")


def speed(args, model, tokenizer) -> dict:
    needle = needle_example(tokenizer, args.length, 0.5, random.Random(HELD_OUT_SEED),
                            style=args.style)
    ids = torch.tensor([needle.document_ids])
    catalyst = tokenizer.encode(GENERIC_CATALYSTS[args.style]).ids
    long_model = extend_positions(model, args.length + 64)
    table = {name: {"seconds": 0.0} for name in policies(catalyst)}
    for _ in range(args.repeats):
        for name, (policy, reset) in policies(catalyst).items():
            reader = long_model if (policy is None or not reset) else model
            start = time.perf_counter()
            result = read_document(reader, ids, policy, pot_size=args.pot, keep_size=args.keep,
                                   chunk_size=args.chunk, reset=reset)
            table[name]["seconds"] += time.perf_counter() - start
            table[name].update(peak_entries=result.peak_entries, peak_bytes=result.peak_bytes,
                               distillations=result.distillations)
    full = table["full cache"]
    for row in table.values():
        row["tokens_per_s"] = args.repeats * ids.shape[1] / row["seconds"]
        row["speed_vs_full"] = row["tokens_per_s"] / full["tokens_per_s"]
        row["memory_vs_full"] = row["peak_bytes"] / full["peak_bytes"]
    return {"length": ids.shape[1], "pot": args.pot, "keep": args.keep, "chunk": args.chunk,
            "repeats": args.repeats, "machine": machine(), "date": time.strftime("%Y-%m-%d"),
            "policies": table}


def needle(args, model, tokenizer) -> dict:
    from tqdm.auto import tqdm

    rng = random.Random(HELD_OUT_SEED)
    long_model = extend_positions(model, max(args.lengths) + 64)
    cells = []
    jobs = [(n, d) for n in args.lengths for d in args.depths]
    for n_tokens, depth in tqdm(jobs, desc="cells"):
        examples = [needle_example(tokenizer, n_tokens, depth, rng, keys=tw.HELD_OUT_KEYS
                                   if args.held_out_keys else None, style=args.style,
                                   n_facts=rng.choice(args.n_facts))
                    for _ in range(args.n)]
        for name in args.policies or policies([0], [0] if args.question_known else None):
            hits, kept = 0, 0.0
            for ex in examples:
                catalyst = ex.question_ids if args.question_catalyst else \
                    tokenizer.encode(GENERIC_CATALYSTS[args.style]).ids
                question = ex.question_ids if args.question_known else None
                policy, reset = policies(catalyst, question)[name]
                reader = long_model if (policy is None or not reset) else model
                generated, result = answer_after_reading(
                    reader, ex.document_ids, ex.question_ids, policy, max_new_tokens=3,
                    pot_size=args.pot, keep_size=args.keep, chunk_size=args.chunk, reset=reset)
                hits += needle_found(tokenizer, generated, ex.code)
                kept += needle_kept(result.cache, ex.code_positions)
            low, high = wilson_interval(hits, args.n)
            cells.append({"policy": name, "length": n_tokens, "depth": depth, "n": args.n,
                          "hits": hits, "accuracy": hits / args.n, "interval": [low, high],
                          "kept": kept / args.n})
            print(f"{name:24s} len {n_tokens:6d} depth {depth:.2f}: answer {hits / args.n:.2f}, "
                  f"needle kept {kept / args.n:.2f}", flush=True)
    return {"model": args.model,
            "policies": list(args.policies or policies([0], [0] if args.question_known else None)),
            "n_facts": args.n_facts, "question_known": args.question_known, "style": args.style,
            "lengths": args.lengths, "depths": args.depths, "pot": args.pot, "keep": args.keep,
            "chunk": args.chunk,
            "question_catalyst": args.question_catalyst, "held_out_keys": args.held_out_keys,
            "machine": machine(),
            "date": time.strftime("%Y-%m-%d"), "cells": cells}


def speed_section(result: dict, command: str) -> list[str]:
    lines = [SECTION, "",
             f"Prefill of one {result['length']}-token needle document (8x the trained context), "
             f"pot M = {result['pot']}, kept C = {result['keep']}, chunks of {result['chunk']}, "
             f"{result['repeats']} interleaved rounds. Machine: {result['machine']}; "
             f"{result['date']}. Command: `{command}`.", "",
             "| policy | tokens/s | speed vs full cache | peak cache entries | peak cache KiB | "
             "memory vs full cache | distillations |", "|---|---|---|---|---|---|---|"]
    for name, row in result["policies"].items():
        lines.append(f"| {name} | {row['tokens_per_s']:.0f} | {row['speed_vs_full']:.2f}x | "
                     f"{row['peak_entries']} | {row['peak_bytes'] / 1024:.0f} | "
                     f"{row['memory_vs_full']:.3f} | {row['distillations']} |")
    return lines


NEEDLE_SECTION = "## KV-cache compression: needle survival and answers"


def needle_section(result: dict) -> list[str]:
    cells = result["cells"]
    lengths = sorted({c["length"] for c in cells})
    depths = sorted({c["depth"] for c in cells})
    lines = [NEEDLE_SECTION, "",
             f"Model `{result['model']}`. TinyWorld needle documents (one fact, held-out keys: "
             f"{result.get('held_out_keys')}), depths {depths}, lengths {lengths}. Pot M = "
             f"{result['pot']}, kept C = {result['keep']}, chunks of {result['chunk']}; "
             f"InfiniPot's catalyst is "
             f"{'the question' if result['question_catalyst'] else 'a generic prompt'}. "
             f"*Answer*: exact match of the greedy answer, mean over depths. *Kept*: share of "
             f"(layer, KV head) caches holding every token of the code when the question is read. "
             f"Machine: {result['machine']}; {result['date']}. Command: `{result['command']}`.", "",
             "| policy | documents a cell | " + " | ".join(f"answer @ {n}" for n in lengths)
             + " | " + " | ".join(f"kept @ {n}" for n in lengths) + " | worst cell |",
             "|---|---|" + "---|" * (2 * len(lengths) + 1)]
    for name in result["policies"]:
        mine = [c for c in cells if c["policy"] == name]
        found = [_mean(c["accuracy"] for c in mine if c["length"] == n) for n in lengths]
        kept = [_mean(c["kept"] for c in mine if c["length"] == n) for n in lengths]
        worst = min(mine, key=lambda c: c["accuracy"])
        counts = ", ".join(
            f"{n} @ {min(c['length'] for c in mine if c['n'] == n)}-"
            f"{max(c['length'] for c in mine if c['n'] == n)}"
            for n in sorted({c["n"] for c in mine}, reverse=True))
        lines.append(f"| {name} | {counts} | " + " | ".join(_fmt(a) for a in found) + " | "
                     + " | ".join(_fmt(k) for k in kept)
                     + f" | {worst['accuracy']:.2f} ({worst['length']}, depth {worst['depth']}) |")
    pot = [c for c in cells if c["policy"] == "InfiniPot"]
    if pot:
        bad = [c for c in pot if c["accuracy"] < 0.9]
        lines += ["", "Goal (InfiniPot >= 90% in every cell up to 32,768 tokens): "
                  + ("met in every measured cell" if not bad else
                     f"NOT met in {len(bad)} of {len(pot)} measured cells (lowest "
                     f"{min(c['accuracy'] for c in bad):.2f})")
                  + f"; longest length measured {max(c['length'] for c in pot)}."]
    lines += ["", "How to read it: the needle must survive every distillation, and there are many "
              "(the speed table above: 28 for InfiniPot, whose catalyst leaves room for one chunk "
              "a round, and 14 for the others, on a 4,083-token document; eight times as many at "
              "32,768). *Kept* falls with length for every policy, and the answer follows it. "
              "Cells with fewer than 50 documents (the lengths above 4,096) were cut to keep the "
              "run to hours on a CPU: a cell of 50 documents of 32,768 tokens is 1.6M tokens, "
              "about ten minutes of one core per policy; the full cache is not run past 4,096 "
              "(its cost grows with the square of the length, and it already fails at 1,024)."]
    return lines + [""]


SETTINGS = {"one fact, generic catalyst": "lone", "2-4 facts, generic catalyst": "multi",
            "2-4 facts, question known": "qk"}


def equal_terms_section(paths: dict[str, Path]) -> list[str]:
    """The needle table on equal terms: {setting: results file} -> RESULTS.md lines, one row a
    policy, one column a setting, exact match with a Wilson 95% interval."""
    runs = {setting: json.loads(path.read_text()) for setting, path in paths.items()}
    first = next(iter(runs.values()))
    names = []
    for run in runs.values():
        names += [p for p in run["policies"] if p not in names]
    lines = [NEEDLE_SECTION, "",
             f"Model `{first['model']}` (facts worded `{first.get('style')}`), held-out keys, "
             f"documents of {first['lengths'][0]} tokens (8x the trained context) with the needle "
             f"at depth {first['depths'][0]} and, with 2-4 facts, the distractors anywhere; "
             f"pot M = {first['pot']}, kept C = {first['keep']}, chunks of {first['chunk']}. "
             "*Generic catalyst*: InfiniPot's probe is the task's question without its key "
             f"({GENERIC_CATALYSTS[first.get('style', 'code_of')]!r}); the baselines compress "
             "before the question is read. *Question known*: H2O, TOVA and SnapKV read the "
             "question before every compression (`QuestionProbe`) and InfiniPot's catalyst is the "
             "question; StreamingLLM, SirLLM and NuC-only InfiniPot cannot use it (their rows are "
             "the generic ones). Exact match of the greedy answer, Wilson 95% interval, n "
             f"documents a cell. Machine: {first['machine']}, shared with other jobs; "
             f"{first['date']}.", "",
             "| policy | " + " | ".join(runs) + " |", "|---|" + "---|" * len(runs)]
    for name in names:
        row = []
        for run in runs.values():
            cell = next((c for c in run["cells"] if c["policy"] == name), None)
            if cell is None:
                row.append("(cannot use it)")
                continue
            low, high = wilson_interval(cell["hits"], cell["n"])
            row.append(f"{cell['accuracy']:.2f} [{low:.2f}, {high:.2f}], n = {cell['n']}")
        lines.append(f"| {name} | " + " | ".join(row) + " |")
    lines += ["", "Commands:", ""]
    lines += [f"- {setting}: `{run['command']}`" for setting, run in runs.items()]
    return lines + [""]


def _mean(values) -> float | None:
    values = list(values)
    return sum(values) / len(values) if values else None


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def merge(paths: list[Path]) -> dict:
    """Join needle results run in parts (other policies or lengths, same settings) into one."""
    parts = [json.loads(p.read_text()) for p in paths]
    result = dict(parts[0])
    keys = {(c["policy"], c["length"], c["depth"]) for c in result["cells"]}
    result["cells"] = list(result["cells"])
    for part in parts[1:]:
        for key in ("pot", "keep", "chunk", "question_catalyst", "held_out_keys", "model",
                    "n_facts", "question_known"):
            if part.get(key) != result.get(key):
                raise ValueError(f"cannot merge {key}={part[key]!r} with {result[key]!r}")
        for cell in part["cells"]:
            key = (cell["policy"], cell["length"], cell["depth"])
            if key not in keys:  # the first file that measured a cell wins
                keys.add(key)
                result["cells"].append(cell)
        result["policies"] = result["policies"] + [p for p in part["policies"]
                                                   if p not in result["policies"]]
        result["lengths"] = sorted(set(result["lengths"]) | set(part["lengths"]))
        result["command"] += " ; " + part["command"]
    order = list(policies([0], [0] if result.get("question_known") else None))
    result["policies"] = sorted(result["policies"], key=order.index)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=("speed", "needle"), required=True)
    parser.add_argument("--model", default="main")
    parser.add_argument("--length", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--lengths", type=int, nargs="+", default=[512, 1024, 2048, 4096])
    parser.add_argument("--depths", type=float, nargs="+", default=[0.0, 0.25, 0.5, 0.75, 1.0])
    parser.add_argument("--policies", nargs="*", default=None)
    parser.add_argument("--n", type=int, default=50)
    parser.add_argument("--pot", type=int, default=512)
    parser.add_argument("--keep", type=int, default=256)
    parser.add_argument("--chunk", type=int, default=128)
    parser.add_argument("--question-catalyst", action="store_true",
                        help="InfiniPot's catalyst is the actual question (else a generic prompt)")
    parser.add_argument("--held-out-keys", action="store_true")
    parser.add_argument("--n-facts", type=int, nargs="+", default=[1],
                        help="facts a document (the needle + distractors), drawn from this list")
    parser.add_argument("--question-known", action="store_true",
                        help="every policy that can use the question gets it (QuestionProbe)")
    parser.add_argument("--style", choices=tw.FACT_STYLES, default="code_of",
                        help="the facts' wording: the one the model was trained on")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--write-results", action="store_true")
    parser.add_argument("--from-json", type=Path, default=None,
                        help="re-render RESULTS.md from a needle JSON instead of running")
    parser.add_argument("--out", type=Path, default=None, help="results file (default in results/)")
    parser.add_argument("--equal-terms", type=Path, nargs=3, default=None,
                        metavar=("LONE", "MULTI", "QK"),
                        help="render RESULTS.md's needle table from these three results files")
    parser.add_argument("--merge", type=Path, nargs="+", default=None,
                        help="join needle results files run in parts into infinipot_needle.json")
    args = parser.parse_args()
    if args.equal_terms:
        replace_section(NEEDLE_SECTION, equal_terms_section(dict(zip(SETTINGS, args.equal_terms))))
        return
    if args.merge:
        result = merge(args.merge)
        out = args.out or HERE / "results" / "infinipot_needle.json"
        out.write_text(json.dumps(result, indent=1))
        print(f"wrote {out}")
        if args.write_results:
            replace_section(NEEDLE_SECTION, needle_section(result))
        return
    if args.from_json is not None:
        result = json.loads(args.from_json.read_text())
        replace_section(NEEDLE_SECTION, needle_section(result))
        return
    torch.set_num_threads(args.threads)
    model, tokenizer = minidecode.load(args.model)
    command = "python benchmarks/bench_infinipot.py " + " ".join(os.sys.argv[1:])
    if args.part == "speed":
        result = speed(args, model, tokenizer)
        out = args.out or HERE / "results" / "infinipot_speed.json"
        for line in speed_section(result, command)[4:]:
            print(line)
    else:
        result = needle(args, model, tokenizer)
        out = args.out or HERE / "results" / "infinipot_needle.json"
    result["command"] = command
    out.write_text(json.dumps(result, indent=1))
    print(f"wrote {out}")
    if args.write_results and args.part == "speed":
        replace_section(SECTION, speed_section(result, command))
    elif args.write_results:
        replace_section(NEEDLE_SECTION, needle_section(result))


if __name__ == "__main__":
    main()
