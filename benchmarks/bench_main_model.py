"""The main model against its quality bars: QA, lookup among distractors, CoT arithmetic.

Every figure is greedy, on a held-out seed, with its n and a Wilson 95% interval. Two kinds of
cases:

* **generator** cases: TinyWorld's own ``qa``, ``retrieval`` (the model's "code_of" wording) and
  ``arithmetic_problem`` on the held-out seed (retrieval also with held-out keys, which never
  occur in training);
* **composed** cases, written here without TinyWorld's document generators: QA stories in which
  2-4 people make 3-6 moves among sentences that name places without a move ('Sam said, "The
  map is in the kitchen."'), asked about someone who moved more than once where possible; and
  lookup documents of about 300 tokens with 2-4 facts placed anywhere among such sentences,
  including keys that share a colour or a container ("the green box" beside "the green chest"),
  which the generator never puts in one document.

    python benchmarks/bench_main_model.py --model minidecode/models/main
    python benchmarks/bench_main_model.py --run /path/to/run --write-results
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import random
import sys
import time
from pathlib import Path

import torch

from minidecode import tinyworld as tw
from minidecode.course.capstone import wilson_interval
from minidecode.tinyworld.evaluate import (
    HELD_OUT_SEED,
    arithmetic_table,
    complete,
    qa_table,
    retrieval_by_facts,
)

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## The main model against its bars"
RESULTS_JSON = ROOT / "benchmarks" / "results" / "main_model_bars.json"


def wilson(successes: int, n: int) -> tuple[float, float]:
    """Wilson score interval (Wilson 1927); (0, 1) when there are no cases."""
    return (0.0, 1.0) if n == 0 else wilson_interval(successes, n)


# ----------------------------------------------------------------------------- composed cases
PEOPLE = [("Mia", "she"), ("Sam", "he"), ("Nora", "she"), ("Leo", "he"), ("Anna", "she"),
          ("Ben", "he"), ("Lily", "she"), ("Tom", "he")]


def _place_sentence(rng: random.Random, people: list[tuple[str, str]]) -> str:
    """A sentence that names a place but moves nobody."""
    name, pron = rng.choice(people)
    place, thing = rng.choice(tw.PLACES), rng.choice(tw.THINGS)
    animal = rng.choice(tw.ANIMALS)
    return rng.choice([f'{name} said, "The {thing} is in the {place}."',
                       f"{pron.capitalize()} saw a small {animal} near the {place}.",
                       f'"Where is my {thing}?" asked {name}.',
                       f"{name} read a book about a {animal}."])


def composed_qa(rng: random.Random) -> dict:
    people = rng.sample(PEOPLE, rng.randint(2, 4))
    n_moves = rng.randint(max(3, len(people)), 6)
    movers = [*people, *(rng.choice(people) for _ in range(n_moves - len(people)))]
    rng.shuffle(movers)
    where: dict[str, str] = {}
    moves: dict[str, int] = {}
    sentences = []
    for name, _ in movers:
        place = rng.choice([p for p in tw.PLACES if p != where.get(name)])
        where[name] = place
        moves[name] = moves.get(name, 0) + 1
        sentences.append(rng.choice([f"{name} went to the {place}.",
                                     f"{name} walked to the {place}.",
                                     f"{name} is in the {place}."]))
        if rng.random() < 0.5:
            sentences.append(_place_sentence(rng, people))
    most = max(moves.values())
    name = rng.choice(sorted(n for n, k in moves.items() if k == most))
    return {"prompt": " ".join(sentences) + f"\nQ: Where is {name}?\nA:", "place": where[name],
            "moves": moves[name]}


def composed_lookup(rng: random.Random, keys: list[str], shared_word: bool) -> dict:
    """About 300 tokens: 2-4 facts in the "code_of" wording among place sentences. With
    ``shared_word`` the asked key shares its colour or container with another fact's key."""
    n_facts = rng.randint(2, 4)
    asked = rng.choice(keys)
    others = [k for k in keys if k != asked]
    if shared_word:
        colour, box = asked.rsplit(" ", 1)
        twins = [k for k in others if k.startswith(colour + " ") or k.endswith(" " + box)]
        chosen = [asked, rng.choice(twins)] if twins else [asked]
    else:
        words = set(asked.split())
        chosen = [asked]
        others = [k for k in others if not set(k.split()) & words]
    while len(chosen) < n_facts:
        k = rng.choice(others)
        if k not in chosen:
            chosen.append(k)
    codes = {k: str(rng.randint(1000, 9999)) for k in chosen}
    people = rng.sample(PEOPLE, 4)
    sentences = [_place_sentence(rng, people) for _ in range(22)]
    for k in chosen:
        sentences.insert(rng.randint(0, len(sentences)), f"The code of the {k} is {codes[k]}.")
    prompt = (" ".join(sentences) + f"\n\nQ: What is the code of the {asked}?\n"
              f"A: The code of the {asked} is")
    return {"prompt": prompt, "code": codes[asked], "n_facts": n_facts}


# ----------------------------------------------------------------------------- measuring
def rate(hits: list[bool]) -> dict:
    k, n = sum(hits), len(hits)
    lo, hi = wilson(k, n)
    return {"accuracy": k / n, "n": n, "ci": [lo, hi]}


def measure(model, tokenizer, n: int) -> dict:
    out: dict = {}
    t0 = time.time()
    qa = qa_table(model, tokenizer, 2 * n, n)
    k = round(qa["answerable"]["accuracy"] * qa["answerable"]["n"])
    out["qa_generator"] = {**rate([True] * k + [False] * (qa["answerable"]["n"] - k)),
                           "unanswerable": qa["unanswerable"]}
    rng = random.Random(HELD_OUT_SEED + 101)
    cases = [composed_qa(rng) for _ in range(n)]
    answers = complete(model, tokenizer, [c["prompt"] for c in cases], 8)
    out["qa_composed"] = rate([c["place"] in a.split("\n")[0] for c, a in zip(cases, answers)])
    print(f"qa done ({time.time() - t0:.0f} s)", flush=True)
    rows = retrieval_by_facts(model, tokenizer, n // 2, facts=(1, 2, 4, 8), style="code_of")
    out["lookup_generator"] = [{**r, **rate([True] * round(r["accuracy"] * r["n"])
                                            + [False] * (r["n"] - round(r["accuracy"] * r["n"])))}
                               for r in rows]
    print(f"lookup done ({time.time() - t0:.0f} s)", flush=True)
    out["lookup_composed"] = []
    for split, keys in (("seen", tw.TRAIN_KEYS), ("heldout", tw.HELD_OUT_KEYS)):
        for shared in (False, True):
            rng = random.Random(HELD_OUT_SEED + 202 + shared)
            cases = [composed_lookup(rng, keys, shared) for _ in range(n // 2)]
            answers = complete(model, tokenizer, [c["prompt"] for c in cases], 3)
            out["lookup_composed"].append({"split": split, "shared_word": shared, **rate(
                [a.strip().startswith(c["code"]) for c, a in zip(cases, answers)])})
    print(f"composed lookup done ({time.time() - t0:.0f} s)", flush=True)
    out["arithmetic"] = arithmetic_table(model, tokenizer, n)
    for row in out["arithmetic"]:
        for mode in ("greedy", "trigger", "direct_share"):
            row[f"{mode}_ci"] = list(wilson(round(row[mode] * row["n"]), row["n"]))
    out["seconds"] = time.time() - t0
    return out


def fmt(r: dict) -> str:
    return f"{r['accuracy']:.2f} [{r['ci'][0]:.2f}, {r['ci'][1]:.2f}] (n={r['n']})"


def report(res: dict, model_name: str, command: str) -> list[str]:
    lines = [SECTION, "",
             f"{model_name}; greedy; held-out seed; Wilson 95% intervals. `{command}`, "
             f"{platform.machine()} 2-core CPU, no GPU, {datetime.date.today()}.", "",
             "| what | bar | measured |", "| --- | --- | --- |"]
    lines.append(f"| QA, answerable (generator) | >= 0.80 | {fmt(res['qa_generator'])} |")
    lines.append(f"| QA, composed (2-4 people, 3-6 moves, place distractors) | >= 0.80 | "
                 f"{fmt(res['qa_composed'])} |")
    u = res["qa_generator"]["unanswerable"]
    lines.append(f"| QA, unanswerable: answers spread | spread | {u['distinct_answers']} distinct "
                 f"answers, top share {u['top_share']:.2f}, entropy {u['entropy_bits']:.2f} of "
                 f"{u['max_entropy_bits']:.2f} bits (n={u['n']}) |")
    for r in res["lookup_generator"]:
        bar = ">= 0.97" if r["facts"] == 1 else (">= 0.90" if r["split"] == "seen" else ">= 0.85")
        lines.append(f"| lookup, {r['facts']} fact(s), {r['split']} keys (generator) | {bar} | "
                     f"{fmt(r)} |")
    for r in res["lookup_composed"]:
        bar = ">= 0.90" if r["split"] == "seen" else ">= 0.85"
        what = "a key sharing a word with another" if r["shared_word"] else "distinct words"
        lines.append(f"| lookup, composed 2-4 facts, ~300 tokens, {what}, {r['split']} keys | "
                     f"{bar} | {fmt(r)} |")
    for r in res["arithmetic"]:
        t = f"{r['trigger']:.2f} [{r['trigger_ci'][0]:.2f}, {r['trigger_ci'][1]:.2f}]"
        g = f"{r['greedy']:.2f} [{r['greedy_ci'][0]:.2f}, {r['greedy_ci'][1]:.2f}]"
        bar = ">= 0.80 trigger; greedy >= 20 pts lower" if r["steps"] == 2 else (
            "greedy >= 20 pts lower" if r["steps"] == 3 else "-")
        lines.append(f"| arithmetic, {r['steps']} step(s): trigger / greedy (direct style "
                     f"{r['direct_share']:.2f}) | {bar} | {t} / {g} (n={r['n']}) |")
    lines += ["", f"Measured in {res['seconds']:.0f} s."]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--model", type=Path, help="a model directory (config.json, weights)")
    group.add_argument("--run", type=Path, help="a training run's directory (its checkpoint)")
    parser.add_argument("--n", type=int, default=100, help="cases a row (QA answerable: 2n)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--write-results", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.model is not None:
        from minidecode.checkpoint import load_pretrained
        model, tokenizer = load_pretrained(args.model)
        name = args.model.name
    else:
        sys.path.insert(0, str(ROOT / "scripts"))
        from ship_model import model_from_run
        model, tokenizer, state = model_from_run(args.run)
        name = f"{args.run.name} at step {state['step']}"
    model.eval()
    res = measure(model, tokenizer, args.n)
    command = "python benchmarks/bench_main_model.py " + " ".join(sys.argv[1:])
    lines = report(res, name, command)
    print("\n".join(lines))
    if args.write_results:
        sys.path.insert(0, str(ROOT / "benchmarks"))
        from results_md import replace_section
        RESULTS_JSON.write_text(json.dumps({"model": name, **res}, indent=1))
        replace_section(SECTION, lines)


if __name__ == "__main__":
    main()
