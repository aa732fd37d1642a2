"""KV-cache compression (chapter 09): needle accuracy, peak cache memory and prefill speed of every
cache policy, side by side, on TinyWorld needle documents longer than the model's trained context.

Three parts:

- ``--part speed``: one document of ``--length`` tokens (default 4,096 = 8x the trained 512) read by
  every policy in turn, ``--repeats`` rounds interleaved so a slow spell of the shared machine hits
  all of them alike; prefill tokens/s and peak cache bytes relative to the full cache, in one run.
- ``--part grid``: the headline grid, a lone needle and a generic catalyst, every policy on the same
  document families (one haystack, the needle at each of ``--depths``), lengths to 32K.
- ``--part needle``: exact match of the needle's code over a grid of lengths x depths,
  ``--n`` documents a cell (held-out seed), for the full cache (positions past 512 allowed, to
  show the failure), StreamingLLM, H2O, TOVA, SnapKV, SirLLM and InfiniPot (full, CaP only,
  NuC only, without CR-RoPE). Pot M = 512, kept C = 256 unless told otherwise.

    python benchmarks/bench_infinipot.py --part speed --write-results
    python benchmarks/bench_infinipot.py --part needle --lengths 4096 --depths 0.5 --n 30 \
        --held-out-keys --n-facts 2 3 4 [--question-known] --out results/infinipot_main_multi.json
    python benchmarks/bench_infinipot.py --equal-terms LONE.json MULTI.json QK.json  # RESULTS.md
    python benchmarks/bench_infinipot.py --part grid --lengths 2048 4096 --n 30 \
        --out results/infinipot_grid_short.json     # + 8192 16384 32768 --exit-when no-whole-code
    python benchmarks/bench_infinipot.py --grid-results results/infinipot_grid_*.json
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
import shlex
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
    ChunkReader,
    answer_after_reading,
    answer_from,
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


GRID_POLICIES = ["StreamingLLM", "H2O", "TOVA", "SnapKV", "SirLLM", "InfiniPot, NuC only",
                 "InfiniPot"]


def code_left(cache, code_positions: list[int]) -> bool:
    """Whether any token of the needle's code is still in any (layer, KV head) cache."""
    wanted = torch.tensor(code_positions)
    return any(bool(torch.isin(wanted, cache.token_index[layer]).any())
               for layer in range(cache.num_layers))


def read_family(model, tokenizer, policy_name: str, family: dict[float, object],
                catalyst: list[int], args, early_exit: bool) -> dict[float, dict]:
    """Read one document family (the same haystack, the needle at each depth) with one policy.

    The documents agree token for token up to their needle, so the deepest one is read once and
    the reader is forked (``ChunkReader.fork``) at the last chunk boundary before each other
    needle: every document is read exactly as a fresh ``answer_after_reading`` would read it.
    early_exit: stop a document once its code is lost (``args.exit_when``: "code-gone", no token
    of the code left in any head - evicted entries never return; "no-whole-code", no head holds
    every token of it) and score it a miss; documents up to ``--read-to-end-up-to`` tokens are
    read to the end and record when each condition first held, to check the rule against the
    answers. Returns {depth: outcome}.
    """
    depths = sorted(family)
    ref = family[depths[-1]]
    forks: dict[int, list[float]] = {}
    for depth in depths[:-1]:
        doc = family[depth].document_ids
        shared = next(i for i, (a, b) in enumerate(zip(doc, ref.document_ids)) if a != b)
        forks.setdefault(shared // args.chunk * args.chunk, []).append(depth)

    pending: dict[float, tuple] = {}   # depth -> (the reader forked for it, where it resumes)

    def fresh():
        policy, reset = policies(catalyst)[policy_name]
        return ChunkReader(model, policy, args.pot, args.keep, args.chunk, reset)

    def finish(reader, ex, start: int) -> dict:
        ids = torch.tensor([ex.document_ids + ex.question_ids])
        length, last = ids.shape[1], max(ex.code_positions)
        gone_at = split_at = None   # first distillation after which no token / no head's whole code
        for begin in range(start, length, args.chunk):
            if begin in forks and ex is ref:
                for depth in forks[begin]:
                    pending[depth] = (reader.fork(), begin)
            distillations = reader.result.distillations
            is_last = begin + args.chunk >= length
            reader.read(ids[:, begin:begin + args.chunk], 3 if is_last else 0)
            if reader.tokens_read > last and reader.result.distillations > distillations:
                cache = reader.result.cache
                if split_at is None and needle_kept(cache, ex.code_positions) == 0.0:
                    split_at = reader.tokens_read
                if gone_at is None and not code_left(cache, ex.code_positions):
                    gone_at = reader.tokens_read
                if early_exit and (gone_at if args.exit_when == "code-gone" else split_at):
                    return {"hit": False, "gone_at": gone_at, "split_at": split_at,
                            "stopped_at": reader.tokens_read, "kept": 0.0, "length": length}
        result = reader.finish()
        generated = answer_from(model, result, max_new_tokens=3)
        return {"hit": needle_found(tokenizer, generated, ex.code), "gone_at": gone_at,
                "split_at": split_at, "stopped_at": None,
                "kept": needle_kept(result.cache, ex.code_positions), "length": length}

    outcomes = {depths[-1]: finish(fresh(), ref, 0)}
    for depth, (reader, start) in pending.items():
        outcomes[depth] = finish(reader, family[depth], start)
    return outcomes


def grid(args, model, tokenizer) -> dict:
    """The headline grid: a lone needle, InfiniPot's catalyst generic, every length x depth, the
    same ``--n`` document families (one haystack, the needle at each depth) for every policy."""
    from tqdm.auto import tqdm

    rng = random.Random(HELD_OUT_SEED)
    catalyst = tokenizer.encode(GENERIC_CATALYSTS[args.style]).ids
    names = args.policies or GRID_POLICIES
    out = getattr(args, "out", None)
    cells = json.loads(out.read_text())["cells"] if out is not None and out.exists() else []
    done = {(c["policy"], c["length"]) for c in cells}  # a stopped run resumes after these

    def result() -> dict:
        return {"model": args.model, "policies": list(names), "n_facts": [1],
                "question_known": False, "style": args.style, "lengths": args.lengths,
                "depths": args.depths, "pot": args.pot, "keep": args.keep, "chunk": args.chunk,
                "question_catalyst": False, "held_out_keys": True,
                "read_to_end_up_to": args.read_to_end_up_to, "exit_when": args.exit_when,
                "machine": machine(), "date": time.strftime("%Y-%m-%d"), "cells": cells}

    for n_tokens in args.lengths:
        families = []
        for _ in range(args.n):
            state = rng.getstate()
            family = {}
            for depth in args.depths:
                rng.setstate(state)
                family[depth] = needle_example(tokenizer, n_tokens, depth, rng,
                                               keys=tw.HELD_OUT_KEYS, style=args.style)
            families.append(family)
        early_exit = n_tokens > args.read_to_end_up_to
        for name in names:
            if (name, n_tokens) in done:
                continue
            start = time.perf_counter()
            outcomes = [read_family(model, tokenizer, name, family, catalyst, args,
                                    early_exit)
                        for family in tqdm(families, desc=f"{name} @ {n_tokens}", leave=False,
                                           disable=None)]
            seconds = time.perf_counter() - start
            for depth in args.depths:
                mine = [o[depth] for o in outcomes]
                hits = sum(o["hit"] for o in mine)
                low, high = wilson_interval(hits, args.n)
                cells.append({
                    "policy": name, "length": n_tokens, "depth": depth, "n": args.n,
                    "hits": hits, "accuracy": hits / args.n, "interval": [low, high],
                    "kept": sum(o["kept"] for o in mine) / args.n,
                    "gone": sum(o["gone_at"] is not None for o in mine),
                    "gone_and_hit": sum(o["gone_at"] is not None and o["hit"] for o in mine),
                    "split": sum(o["split_at"] is not None for o in mine),
                    "split_and_hit": sum(o["split_at"] is not None and o["hit"] for o in mine),
                    "tokens_read": sum(o["stopped_at"] or o["length"] for o in mine),
                    "stopped_early": sum(o["stopped_at"] is not None for o in mine),
                    "read_to_end": not early_exit, "seconds_for_all_depths": seconds})
                print(f"{name:20s} len {n_tokens:6d} depth {depth:.2f}: {hits:2d}/{args.n} "
                      f"[{low:.2f}, {high:.2f}], code gone {cells[-1]['gone']} (hit "
                      f"{cells[-1]['gone_and_hit']}), no whole code {cells[-1]['split']} (hit "
                      f"{cells[-1]['split_and_hit']})", flush=True)
            if out is not None:
                out.write_text(json.dumps(result(), indent=1))
    return result()


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


GRID_SECTION = "## KV-cache compression: the generic grid to 32K tokens"


def grid_section(runs: list[dict]) -> list[str]:
    """RESULTS.md lines for the headline grid, from one or more ``--part grid`` results files
    (the same settings; a (policy, length) measured twice keeps its first file)."""
    cells, seen = [], set()
    for run in runs:
        for cell in run["cells"]:
            if (cell["policy"], cell["length"], cell["depth"]) not in seen:
                seen.add((cell["policy"], cell["length"], cell["depth"]))
                cells.append(cell)
    first = runs[0]
    depths = sorted({c["depth"] for c in cells})
    lengths = sorted({c["length"] for c in cells})
    names = [p for p in GRID_POLICIES if any(c["policy"] == p for c in cells)]
    checked = [c for c in cells if c["read_to_end"]]
    split, split_hit = sum(c["split"] for c in checked), sum(c["split_and_hit"] for c in checked)
    low, high = wilson_interval(split_hit, split) if split else (0.0, 1.0)
    longest_checked = max((c["length"] for c in checked), default=0)
    exit_rule = next((run["exit_when"] for run in runs
                      if any(not c["read_to_end"] for c in run["cells"])), "not used")
    lines = [GRID_SECTION, "",
             f"Model `{first['model']}`, a lone needle (held-out keys, facts worded "
             f"`{first['style']}`), InfiniPot's catalyst generic "
             f"({GENERIC_CATALYSTS[first['style']]!r}), the baselines compressing before the "
             f"question is read. Pot M = {first['pot']}, kept C = {first['keep']}, chunks of "
             f"{first['chunk']}. Each length has {cells[0]['n']} "
             "document families: one haystack with the needle at each depth, the same families "
             "for every policy; exact match of the greedy answer with a Wilson 95% interval. "
             "The deepest needle's document is read once and the reader forked before each other "
             "needle (the same answers as reading each document from scratch: "
             "`tests/test_bench_infinipot.py`).", "",
             f"**Stopping early.** Up to {longest_checked:,} tokens every document was read to the "
             f"end, and {split} documents came to a distillation after which no (layer, KV head) "
             f"held every token of the code; {split_hit} of them were answered right "
             f"(Wilson 95% upper bound {high:.3f}). Longer documents therefore stop at that "
             f"point and count as misses (`--exit-when {exit_rule}`), which is what makes a 32K "
             "grid of every policy fit in hours on a CPU.", "",
             "| policy | length | " + " | ".join(f"depth {d:g}" for d in depths)
             + " | mean over depths |",
             "|---|---|" + "---|" * (len(depths) + 1)]
    for name in names:
        for n_tokens in lengths:
            row = {c["depth"]: c for c in cells
                   if c["policy"] == name and c["length"] == n_tokens}
            if not row:
                continue
            shown = []
            for depth in depths:
                cell = row.get(depth)
                if cell is None:
                    shown.append("-")
                    continue
                lo, hi = wilson_interval(cell["hits"], cell["n"])
                shown.append(f"{cell['accuracy']:.2f} [{lo:.2f}, {hi:.2f}]")
            mean = sum(c["accuracy"] for c in row.values()) / len(row)
            lines.append(f"| {name} | {n_tokens} | " + " | ".join(shown) + f" | {mean:.2f} |")
    pot = [c for c in cells if c["policy"] == "InfiniPot"]
    if pot:
        bad = [c for c in pot if c["accuracy"] < 0.9]
        lines += ["", "Bar (InfiniPot >= 0.90 at every depth to 32,768 tokens): "
                  + ("met in every cell" if not bad else
                     f"NOT met in {len(bad)} of {len(pot)} cells (lowest "
                     f"{min(c['accuracy'] for c in bad):.2f})") + "."]
    lines += ["", "Machine: " + first["machine"] + f"; {first['date']}. Commands:", ""]
    lines += [f"- `{run.get('command', '(still running)')}`" for run in runs]
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
    parser.add_argument("--part", choices=("speed", "needle", "grid"), default=None,
                        help="what to run (not needed to render RESULTS.md from files)")
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
    parser.add_argument("--read-to-end-up-to", type=int, default=4096,
                        help="grid: read every document to the end up to this length (and count "
                             "documents whose code left every head yet were answered); longer "
                             "documents stop once their code is gone")
    parser.add_argument("--exit-when", choices=("code-gone", "no-whole-code"),
                        default="code-gone", help="grid: when a longer document stops early")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--write-results", action="store_true")
    parser.add_argument("--from-json", type=Path, default=None,
                        help="re-render RESULTS.md from a needle JSON instead of running")
    parser.add_argument("--out", type=Path, default=None, help="results file (default in results/)")
    parser.add_argument("--equal-terms", type=Path, nargs=3, default=None,
                        metavar=("LONE", "MULTI", "QK"),
                        help="render RESULTS.md's needle table from these three results files")
    parser.add_argument("--grid-results", type=Path, nargs="+", default=None,
                        help="render RESULTS.md's generic-grid table from these grid files")
    parser.add_argument("--merge", type=Path, nargs="+", default=None,
                        help="join needle results files run in parts into infinipot_needle.json")
    args = parser.parse_args()
    if args.equal_terms:
        replace_section(NEEDLE_SECTION, equal_terms_section(dict(zip(SETTINGS, args.equal_terms))))
        return
    if args.grid_results:
        replace_section(GRID_SECTION, grid_section([json.loads(p.read_text())
                                                    for p in args.grid_results]))
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
    if args.part is None:
        parser.error("--part is required unless rendering from results files")
    torch.set_num_threads(args.threads)
    model, tokenizer = minidecode.load(args.model)
    command = "python benchmarks/bench_infinipot.py " + shlex.join(os.sys.argv[1:])
    if args.part == "speed":
        result = speed(args, model, tokenizer)
        out = args.out or HERE / "results" / "infinipot_speed.json"
        for line in speed_section(result, command)[4:]:
            print(line)
    elif args.part == "grid":
        result = grid(args, model, tokenizer)
        out = args.out or HERE / "results" / "infinipot_grid.json"
    else:
        result = needle(args, model, tokenizer)
        out = args.out or HERE / "results" / "infinipot_needle.json"
    result["command"] = command
    out.write_text(json.dumps(result, indent=1))
    print(f"wrote {out}")
    if args.write_results and args.part == "speed":
        replace_section(SECTION, speed_section(result, command))
    elif args.write_results and args.part == "needle":
        replace_section(NEEDLE_SECTION, needle_section(result))


if __name__ == "__main__":
    main()
