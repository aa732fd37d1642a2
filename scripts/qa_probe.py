"""Why the main model's QA does not form: three measurements on a training run's checkpoint.

    python scripts/qa_probe.py probe  --run runs/main      # p(place) at the answer, and copying
    python scripts/qa_probe.py tune   --run runs/main --lr 1e-3 --steps 60 --format exact
    python scripts/qa_probe.py tune   --fresh draft --lr 3e-3 --steps 1500 --format exact

``probe``: on answerable "Where is X?" documents, the probability the model gives, at the place
slot of the answer "X is in the", to the right place, to the other places the context names, and
to places it never names; then greedy copying of a place inside random-token copy rows (the
induction task) against the same place in TinyWorld text. ``tune``: a short fine-tune on QA-drill
rows only (loss on the answers), printing the cross-entropy on the answers' place tokens (ln 12 =
2.48 is a uniform guess over the 12 places) - from the run's weights or from a fresh model of a
preset's size. ``--format exact``: every move is worded "X is in the P." like the answer, so an
exact n-gram copy answers it; ``drill``: the corpus's own single-move drills (three wordings).
The logs of the runs quoted in RESULTS.md are in benchmarks/results/qa_probe/.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_model

from minidecode import tinyworld as tw
from minidecode.model import Transformer
from minidecode.tinyworld import train as T


def exact_drill(rng: random.Random) -> tw.Doc:
    """Single-move drill in which the move and the answer share the wording "X is in the P"."""
    people = rng.sample(tw.NAMES, rng.randint(2, 5))
    place = {name: rng.choice(tw.PLACES) for name, _ in people}
    w = tw._Writer()
    w.add(" ".join(f"{name} is in the {place[name]}." for name, _ in people))
    for name in rng.sample(sorted(place), rng.randint(2, len(place))):
        w.add(f"\nQ: Where is {name}?\nA:")
        w.add(f" {name} is in the {place[name]}.", answer=True)
    return tw.Doc("qa_drill", w.text(), w.spans)


def load(run: Path | None, fresh: str | None):
    tok_dir = run or Path("minidecode/models/main")
    tok = T.load_or_train_tokenizer(tok_dir / "tokenizer.json")
    cfg = T.PRESETS[fresh or "main"]
    model = Transformer(T.model_config(cfg, tok.get_vocab_size(), tok.token_to_id(tw.EOS)))
    if fresh is None:
        load_model(model, str(run / "checkpoint" / "model.safetensors"))
    return model, tok


@torch.no_grad()
def last_logits(model, ids: list[int]) -> torch.Tensor:
    return model(torch.tensor([ids])).logits[0, -1].float()


def probe(model, tok, n: int = 60) -> None:
    model.eval()
    rng = random.Random(5)
    place_id = {p: tok.encode(" " + p).ids[0] for p in tw.PLACES}
    right, named, unnamed, argmax = [], [], [], []
    for _ in range(n):
        doc = tw.qa(rng, answerable=True)
        prompt = doc.truth["prompt"] + f" {doc.truth['name']} is in the"
        probs = last_logits(model, tok.encode(prompt).ids).softmax(-1)
        for place, i in place_id.items():
            (right if place == doc.truth["place"] else
             named if place in doc.truth["prompt"] else unnamed).append(probs[i].item())
        argmax.append(max(place_id, key=lambda p: probs[place_id[p]]) == doc.truth["place"])
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    print(f"p(right place) {mean(right):.3f}, p(another place the context names) {mean(named):.3f},"
          f" p(a place it never names) {mean(unnamed):.3f}, argmax right {mean(argmax):.2f} "
          f"(n = {n} documents; uniform over 12 places = 0.083)")
    vocab, eos, newline = tok.get_vocab_size(), tok.token_to_id(tw.EOS), tok.encode("\n").ids
    copied = {"random token": [], "place": []}
    for _ in range(30):
        chunk = [rng.randrange(1, vocab) for _ in range(20)]
        k = rng.randrange(5, 15)
        for kind in copied:
            c = list(chunk)
            if kind == "place":
                c[k] = place_id[rng.choice(tw.PLACES)]
            ids = [eos, *c, *newline, *c[:k]]
            copied[kind].append(int(last_logits(model, ids).argmax()) == c[k])
    print("greedy copy inside random-token copy rows (n = 30):",
          {kind: mean(hits) for kind, hits in copied.items()})


def tune(model, tok, lr: float, steps: int, fmt: str, threads: int) -> None:
    torch.set_num_threads(threads)
    if fmt == "exact":
        T.tw.qa_drill = lambda rng, n_questions=None, single_move=True: exact_drill(rng)
    place_ids = {tok.encode(" " + p).ids[0] for p in tw.PLACES}
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.1, betas=(0.9, 0.95))
    model.train()
    for step in range(steps):
        rows = [T.qa_row(random.Random(f"ft-{step}-{r}"), tok, 256, p_single=1.0) for r in range(8)]
        ids = torch.tensor([r[0] for r in rows])
        weights = torch.tensor([r[1] for r in rows])[:, 1:].reshape(-1)
        logits = model(ids[:, :-1]).logits
        ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), ids[:, 1:].reshape(-1),
                             reduction="none")
        loss = (ce * weights).sum() / weights.sum()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        target = ids[:, 1:].reshape(-1)
        places = (weights > 0) & torch.tensor([int(t) in place_ids for t in target])
        print(step, round(loss.item(), 3), "place-token CE", round(ce[places].mean().item(), 3),
              "n", int(places.sum()), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["probe", "tune"])
    parser.add_argument("--run", type=Path, default=None, help="a training run's directory")
    parser.add_argument("--fresh", default=None, help="tune a fresh model of this preset's size")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--format", choices=["exact", "drill"], default="exact")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    if (args.run is None) == (args.fresh is None):
        parser.error("give exactly one of --run and --fresh")
    model, tok = load(args.run, args.fresh)
    if args.what == "probe":
        probe(model, tok)
    else:
        tune(model, tok, args.lr, args.steps, args.format, args.threads)


if __name__ == "__main__":
    main()
