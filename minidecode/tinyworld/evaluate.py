"""Measure the shipped TinyWorld models on a held-out split (a seed training never used).

    python -m minidecode.tinyworld.evaluate --target main --draft main-draft \
        --out results.json

Reports, as the TinyWorld issue asks:

* retrieval exact match by needle depth (0..100%) and document length, for keys seen in training
  and for held-out keys that never occur in the training split;
* arithmetic accuracy by number of steps: plain greedy, greedy after the trigger phrase, and the
  share of greedy answers in the direct style ("The answer is ...");
* held-out perplexity per document family, for target and draft;
* draft/target agreement: the fraction of positions where the draft's greedy (argmax) next token
  equals the target's, teacher-forced on held-out stories and structured text.
"""

from __future__ import annotations

import argparse
import json
import math
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from minidecode import tinyworld as tw
from minidecode.generate import decode_steps, prefill, stop_token_ids
from minidecode.tinyworld.corpus import HELD_OUT_SEED, encode_prompt  # noqa: F401 (re-export)

DEPTHS = (0.0, 0.25, 0.5, 0.75, 1.0)
FILLER_SENTENCES = (6, 14, 24, 34)  # about 110, 200, 320 and 440 tokens with the facts


def _stop_ids(tokenizer) -> set[int]:
    return stop_token_ids(tokenizer, tw.EOS)


def _batched(items: list, size: int):
    for i in range(0, len(items), size):
        yield items[i : i + size]


@torch.no_grad()
def greedy_batch(model: Any, prompts: list[list[int]], max_new_tokens: int,
                 stop_ids: set[int]) -> list[list[int]]:
    """Greedy continuation of each prompt with the KV cache, one prompt at a time (prompts differ
    in length), up to and including the first stop token."""
    return [greedy_cached(model, p, max_new_tokens, stop_ids) for p in prompts]


@torch.no_grad()
def greedy_cached(model: Any, prompt: list[int], max_new_tokens: int,
                  stop_ids: set[int]) -> list[int]:
    """Greedy continuation of one prompt, stopping after a stop token or at the context's end."""
    room = model.config.max_position_embeddings - len(prompt)
    cache, next_logits = prefill(model, torch.tensor([prompt]))
    out: list[int] = []
    for step in decode_steps(model, cache, next_logits):
        out.append(int(step.token[0]))
        if out[-1] in stop_ids or len(out) >= min(max_new_tokens, room):
            break
    return out


def complete(model, tokenizer, prompts: list[str], max_new_tokens: int,
             batch_size: int = 64) -> list[str]:
    """Greedy completions up to the end of the line."""
    out: list[str] = []
    for chunk in _batched(prompts, batch_size):
        ids = [encode_prompt(tokenizer, p) for p in chunk]
        out += [tokenizer.decode(o) for o in greedy_batch(model, ids, max_new_tokens,
                                                          _stop_ids(tokenizer))]
    return out


def retrieval_grid(model, tokenizer, n_per_cell: int, seed: int = HELD_OUT_SEED,
                   style: str = "has_code") -> list[dict]:
    """Exact-match accuracy for every (key split, filler length, needle depth) cell; ``style``
    is the facts' wording (``tw.FACT_STYLES``), the one the model was trained on."""
    rng = random.Random(seed)
    rows = []
    for split, keys in (("seen", tw.TRAIN_KEYS), ("heldout", tw.HELD_OUT_KEYS)):
        for n_filler in FILLER_SENTENCES:
            for depth in DEPTHS:
                docs = [tw.retrieval(rng, n_filler=n_filler, needle_depth=depth, keys=keys,
                                     style=style) for _ in range(n_per_cell)]
                answers = complete(model, tokenizer, [d.truth["prompt"] for d in docs], 3)
                hits = [a.strip().startswith(d.truth["code"]) for a, d in zip(answers, docs)]
                n_tokens = np.mean([len(encode_prompt(tokenizer, d.truth["prompt"]))
                                    for d in docs])
                rows.append({"split": split, "filler": n_filler, "tokens": round(float(n_tokens)),
                             "depth": depth, "accuracy": float(np.mean(hits)), "n": len(docs)})
    return rows


def retrieval_by_facts(model, tokenizer, n_per_cell: int, facts: tuple[int, ...] = (1, 2, 4, 8),
                       seed: int = HELD_OUT_SEED, style: str = "has_code") -> list[dict]:
    """Exact-match accuracy by the number of facts in the document (1 = a lone needle, more =
    distractors of the same shape), for seen and held-out keys; filler and depth drawn at random
    within the trained context."""
    rng = random.Random(seed + 2)
    rows = []
    for split, keys in (("seen", tw.TRAIN_KEYS), ("heldout", tw.HELD_OUT_KEYS)):
        for n_facts in facts:
            docs = [tw.retrieval(rng, n_filler=rng.randint(2, 36), n_facts=n_facts,
                                 needle_depth=rng.random(), keys=keys, style=style)
                    for _ in range(n_per_cell)]
            answers = complete(model, tokenizer, [d.truth["prompt"] for d in docs], 3)
            hits = [a.strip().startswith(d.truth["code"]) for a, d in zip(answers, docs)]
            rows.append({"split": split, "facts": n_facts, "accuracy": float(np.mean(hits)),
                         "n": len(docs)})
    return rows


def arithmetic_table(model, tokenizer, n_per_step: int, seed: int = HELD_OUT_SEED) -> list[dict]:
    """Accuracy by number of steps for plain greedy and for the trigger prompt."""
    rng = random.Random(seed + 1)
    rows = []
    for n_steps in (1, 2, 3):
        problems = [tw.arithmetic_problem(rng, n_steps=n_steps) for _ in range(n_per_step)]
        row = {"steps": n_steps, "n": n_per_step}
        for mode in ("greedy", "trigger"):
            prompts = [tw.arithmetic_prompt(p, trigger=mode == "trigger") for p in problems]
            outs = complete(model, tokenizer, prompts, 72)
            row[mode] = float(np.mean([tw.parse_number_answer(o) == p.answer
                                       for o, p in zip(outs, problems)]))
            if mode == "greedy":
                row["direct_share"] = float(np.mean([o.strip().startswith("The") for o in outs]))
        rows.append(row)
    return rows


def qa_table(model, tokenizer, n_answerable: int, n_unanswerable: int,
             seed: int = HELD_OUT_SEED) -> dict:
    """"Where is X?" greedy: exact place on answerable questions (the person's last stated move),
    and on unanswerable ones (the person never appears) how the answers spread over places."""
    rng = random.Random(seed + 3)
    result: dict = {}
    for answerable, n in ((True, n_answerable), (False, n_unanswerable)):
        docs = [tw.qa(rng, answerable=answerable) for _ in range(n)]
        answers = [a.split("\n")[0] for a in complete(model, tokenizer,
                                                       [d.truth["prompt"] for d in docs], 8)]
        places = [next((p for p in tw.PLACES if p in a), None) for a in answers]
        if answerable:
            result["answerable"] = {"n": n, "accuracy": float(np.mean(
                [p == d.truth["place"] for p, d in zip(places, docs)]))}
        else:
            counts = {p: places.count(p) for p in set(places)}
            named = [p for p in places if p is not None]
            probs = np.array([c / n for c in counts.values()])
            result["unanswerable"] = {
                "n": n, "distinct_answers": len(counts),
                "top_share": max(counts.values()) / n,
                "entropy_bits": float(-(probs * np.log2(probs)).sum()),
                "max_entropy_bits": math.log2(len(tw.PLACES)),
                "named_a_place": len(named) / n}
    return result


@torch.no_grad()
def _teacher_forced(model, tokenizer, docs: list[tw.Doc]):
    """Per document: (token ids, logits) with the model reading the whole document."""
    device = next(model.parameters()).device
    for doc in docs:
        ids = encode_prompt(tokenizer, doc.text)[: model.config.max_position_embeddings]
        x = torch.tensor([ids], device=device)
        yield x[0], model(x).logits[0].float()


def perplexity(model, tokenizer, docs: list[tw.Doc]) -> float:
    """exp(mean token NLL) over the documents."""
    total, count = 0.0, 0
    for ids, logits in _teacher_forced(model, tokenizer, docs):
        total += float(F.cross_entropy(logits[:-1], ids[1:], reduction="sum"))
        count += len(ids) - 1
    return math.exp(total / count)


def agreement(target, draft, tokenizer, docs: list[tw.Doc]) -> float:
    """Fraction of positions where argmax(draft) == argmax(target), teacher-forced."""
    same, count = 0, 0
    for (_, lt), (_, ld) in zip(_teacher_forced(target, tokenizer, docs),
                                _teacher_forced(draft, tokenizer, docs)):
        same += int((lt.argmax(-1) == ld.argmax(-1)).sum())
        count += lt.size(0)
    return same / count


def held_out_docs(family: str, n: int, seed: int = HELD_OUT_SEED) -> list[tw.Doc]:
    rng = random.Random(seed + 7 + tw.FAMILIES.index(family))
    return [tw.GENERATORS[family](rng) for _ in range(n)]


def evaluate(target, tokenizer, draft=None, n_retrieval: int = 20, n_arith: int = 50,
             n_docs: int = 50, n_by_facts: int = 0, style: str = "has_code",
             n_qa: int = 0) -> dict:
    """Every figure of the TinyWorld issue's quality bars, as a dict (JSON-ready).

    ``n_by_facts`` > 0 adds retrieval accuracy by number of facts (``retrieval_by_facts``);
    ``style`` is the facts' wording the model was trained on; ``n_qa`` > 0 adds ``qa_table``."""
    result: dict = {"retrieval": retrieval_grid(target, tokenizer, n_retrieval, style=style),
                    "arithmetic": arithmetic_table(target, tokenizer, n_arith)}
    if n_by_facts:
        result["retrieval_by_facts"] = retrieval_by_facts(target, tokenizer, n_by_facts,
                                                          style=style)
    if n_qa:
        result["qa"] = qa_table(target, tokenizer, n_qa, n_qa)
    docs = {f: held_out_docs(f, n_docs) for f in tw.FAMILIES}
    result["perplexity"] = {"target": {f: perplexity(target, tokenizer, d)
                                       for f, d in docs.items()}}
    if draft is not None:
        result["perplexity"]["draft"] = {f: perplexity(draft, tokenizer, d)
                                         for f, d in docs.items()}
        result["agreement"] = {f: agreement(target, draft, tokenizer, docs[f])
                               for f in ("stories", "structured")}
    return result


def summary(result: dict) -> dict:
    """The quality-bar figures in one flat dict."""
    ret = result["retrieval"]
    s = {f"retrieval_{split}": float(np.mean([r["accuracy"] for r in ret if r["split"] == split]))
         for split in ("seen", "heldout")}
    for row in result.get("retrieval_by_facts", []):
        s[f"retrieval_{row['facts']}fact_{row['split']}"] = row["accuracy"]
    for row in result["arithmetic"]:
        for k in ("greedy", "trigger", "direct_share"):
            s[f"arith{row['steps']}_{k}"] = row[k]
    if "qa" in result:
        s["qa_answerable"] = result["qa"]["answerable"]["accuracy"]
        s["qa_unanswerable_top_share"] = result["qa"]["unanswerable"]["top_share"]
    s.update({f"agreement_{k}": v for k, v in result.get("agreement", {}).items()})
    return s


def main(argv: list[str] | None = None) -> None:
    from minidecode.checkpoint import load

    parser = argparse.ArgumentParser(prog="python -m minidecode.tinyworld.evaluate",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", default="main")
    parser.add_argument("--draft", default="main-draft")
    parser.add_argument("--style", default="code_of", choices=tw.FACT_STYLES,
                        help="the retrieval facts' wording the target was trained on")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--n-retrieval", type=int, default=20, help="documents per grid cell")
    parser.add_argument("--n-arith", type=int, default=50, help="problems per step count")
    parser.add_argument("--n-docs", type=int, default=50, help="documents per family")
    parser.add_argument("--n-by-facts", type=int, default=0,
                        help="documents per (key split, fact count) cell; 0 skips that table")
    parser.add_argument("--device", default=None)
    args = parser.parse_args(argv)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    target, tokenizer = load(args.target)
    draft = load(args.draft)[0] if args.draft else None
    target.to(device).eval()
    if draft is not None:
        draft.to(device).eval()
    result = evaluate(target, tokenizer, draft, args.n_retrieval, args.n_arith, args.n_docs,
                      args.n_by_facts, style=args.style)
    result["summary"] = summary(result)
    text = json.dumps(result, indent=1)
    if args.out:
        args.out.write_text(text)
    print(json.dumps(result["summary"], indent=1))


if __name__ == "__main__":
    main()
