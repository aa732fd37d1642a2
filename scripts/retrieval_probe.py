"""Finer signal than exact match for the retrieval onset: loss and accuracy on the code tokens.

    python scripts/retrieval_probe.py RUN_DIR_OR_MODEL_DIR [--n 48]

Teacher-forced on held-out retrieval documents: mean cross-entropy on the tokens of each answered
code (chance is about ln 90 = 4.5 for the first two-digit token), the share of code tokens the
model ranks first, and exact match of the whole code. Exact match at 0% can hide a loss that has
started to fall; this is what to watch in the first hour of a run (trial runs showed it).
"""

from __future__ import annotations

import argparse
import math
import random
from pathlib import Path

import torch
import torch.nn.functional as F

from minidecode import tinyworld as tw
from minidecode.tinyworld.evaluate import HELD_OUT_SEED


def load(path: Path):
    from tokenizers import Tokenizer

    from minidecode import train
    from minidecode.checkpoint import load_pretrained
    from minidecode.model import Transformer

    if (path / "config.json").exists():
        return load_pretrained(path)
    tok = Tokenizer.from_file(str(path / "tokenizer.json"))
    cfg = train.PRESETS["target"]
    model = Transformer(train.model_config(cfg, tok.get_vocab_size(), tok.token_to_id(tw.EOS)))
    train.load_model(model, str(path / "checkpoint" / "model.safetensors"))
    return model.eval(), tok


@torch.no_grad()
def probe(model, tok, n: int, keys: list[str]) -> dict[str, float]:
    rng = random.Random(HELD_OUT_SEED + 7)
    losses, top1, exact = [], [], []
    for _ in range(n):
        doc = tw.retrieval(rng, n_filler=rng.randint(2, 30), keys=keys)
        enc = tok.encode(doc.text)
        ids = torch.tensor([[tok.token_to_id(tw.EOS), *enc.ids]])
        logits = model(ids[:, :-1]).logits[0]  # (T-1, V)
        targets = ids[0, 1:]
        for a, b in doc.answer_spans:
            pos = [i for i, (s, e) in enumerate(enc.offsets) if s < b and e > a]
            pos = [p for p in pos if tok.decode([enc.ids[p]]).strip().isdigit()]
            rows = torch.tensor(pos)  # token i of the text is target index i
            lp = F.cross_entropy(logits[rows], targets[rows], reduction="none")
            hit = logits[rows].argmax(-1) == targets[rows]
            losses += lp.tolist()
            top1 += hit.float().tolist()
            exact.append(float(hit.all()))
    return {"code_loss": sum(losses) / len(losses), "code_top1": sum(top1) / len(top1),
            "exact": sum(exact) / len(exact), "chance_loss": math.log(90)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("path", type=Path)
    parser.add_argument("--n", type=int, default=48)
    args = parser.parse_args()
    model, tok = load(args.path)
    for split, keys in (("seen", tw.TRAIN_KEYS), ("held-out", tw.HELD_OUT_KEYS)):
        r = probe(model, tok, args.n, keys)
        print(split, " ".join(f"{k}={v:.3f}" for k, v in r.items()))


if __name__ == "__main__":
    main()
