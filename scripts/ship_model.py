"""Turn a training run into a shipped model: HF-format directory, evaluation and model card.

    python scripts/ship_model.py --run /path/to/runs/draft1 --name main-draft \
        --command "python -m minidecode.tinyworld.train --preset draft1 --out runs/draft1" \
        --hardware "2-core CPU (1 thread), no GPU" [--target main]

Writes ``minidecode/models/<name>/`` with config.json, model.safetensors, tokenizer files,
``metrics.csv`` (the run's learning curves), ``learning_curves.png``, ``eval.json`` and a
``README.md`` model card whose figures are read from those files, never typed in by hand.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_model

from minidecode import tinyworld as tw
from minidecode.checkpoint import load_pretrained, save_pretrained
from minidecode.model import Transformer
from minidecode.tinyworld.evaluate import agreement, evaluate, held_out_docs, summary
from minidecode.tinyworld.train import PRESETS, model_config

MODELS = Path(__file__).resolve().parents[1] / "minidecode" / "models"


def model_from_run(run: Path) -> tuple[Transformer, object, dict]:
    """The model in the run's latest checkpoint, its tokenizer and the run's saved state."""
    from tokenizers import Tokenizer

    state = json.loads((run / "checkpoint" / "state.json").read_text())
    tokenizer = Tokenizer.from_file(str(run / "tokenizer.json"))
    cfg = PRESETS["quick"].__class__(**state["config"])
    model = Transformer(model_config(cfg, tokenizer.get_vocab_size(),
                                     tokenizer.token_to_id(tw.EOS)))
    load_model(model, str(run / "checkpoint" / "model.safetensors"))
    return model.eval(), tokenizer, state


def plot_curves(metrics: Path, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with metrics.open() as f:
        rows = list(csv.DictReader(f))
    tokens = [int(r["tokens"]) / 1e6 for r in rows]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.5))
    ax1.plot(tokens, [float(r["loss"]) for r in rows])
    ax1.set(xlabel="training tokens (M)", ylabel="weighted loss", title="training loss")
    skip = {"step", "tokens", "elapsed_s", "loss", "lr", "direct_share"}
    for key in [k for k in rows[0] if k not in skip]:  # every accuracy the run logged
        ax2.plot(tokens, [float(r[key]) for r in rows], label=key)
    ax2.set(xlabel="training tokens (M)", ylabel="accuracy (quick eval)", ylim=(-0.02, 1.02),
            title="task accuracy during training")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=90)


def wall_time_s(rows: list[dict]) -> float:
    """The run's training time: ``elapsed_s`` restarts at 0 whenever the run is resumed, so
    sum the last value of each stretch."""
    total, previous = 0.0, 0.0
    for row in rows:
        elapsed = float(row["elapsed_s"])
        if elapsed < previous:
            total += previous
        previous = elapsed
    return total + previous


def card(name: str, model: Transformer, state: dict, result: dict, command: str,
         hardware: str, rows: list[dict], init_from: str | None = None) -> str:
    c = model.config
    s = result["summary"]
    last = rows[-1]
    cfg = state["config"]
    origin = ("trained from scratch" if init_from is None else
              f"initialised from the shipped `{init_from}` and trained further")
    schedule = ("constant after the warm-up" if cfg.get("min_lr_ratio", 0.1) == 1.0 else
                f"cosine to {cfg.get('min_lr_ratio', 0.1):.0%}")
    cooldown = cfg.get("extra", {}).get("cooldown")
    end = cooldown["to_step"] if cooldown else cfg["max_steps"]
    if cooldown:
        schedule += (f", then a linear cool-down to {cooldown['final_ratio']:.0%} of it from "
                     f"step {cooldown['from_step']} to {cooldown['to_step']}")
    lines = [
        f"# {name}",
        "",
        f"A {model.num_parameters() / 1e6:.2f}M-parameter Llama-architecture decoder {origin} "
        "on TinyWorld, minidecode's synthetic corpus (`minidecode/tinyworld/corpus.py`).",
        "Loads with `minidecode.load(\"" + name + "\")` and with "
        "`transformers.AutoModelForCausalLM.from_pretrained(path)`.",
        "",
        "## Architecture",
        f"{c.num_hidden_layers} layers, width {c.hidden_size}, {c.num_attention_heads} query heads "
        f"sharing {c.num_key_value_heads} key/value heads (head size {c.head_dim}), SwiGLU width "
        f"{c.intermediate_size}, RMSNorm, RoPE (theta {c.rope_theta:g}), tied embeddings, "
        f"vocabulary {c.vocab_size}, context {c.max_position_embeddings}.",
        "",
        "## Data and tokenizer",
        "TinyWorld's five families (stories, retrieval, arithmetic, short-answer QA, structured "
        "text), generated on the fly: the batch of step s is a pure function of (seed, s). "
        "Byte-level BPE trained on 30,000 TinyWorld documents; digit runs are split into pairs so "
        "that every number 0-99 is a single token. Why: trial runs of this recipe showed that "
        "with single-token numbers a small model learns the restated arithmetic chains in "
        "about 2.3M tokens, and digit-split numbers would make every copied operand three "
        "tokens long.",
        "",
        "## Training",
        f"- command: `{command}`",
        f"- hardware: {hardware}",
        f"- steps: {state['step']} of {end} "
        f"({int(last['tokens']) / 1e6:.1f}M tokens, batch {state['config']['batch_size']} x "
        f"{state['config']['seq_len']}), wall time {wall_time_s(rows) / 60:.0f} min",
        f"- AdamW lr {cfg['lr']:g}, warm-up {cfg['warmup_steps']} steps, {schedule}, weight "
        "decay 0.1, clip 1.0, loss weight 3 on answer tokens",
        "",
        "![learning curves](learning_curves.png)",
        "",
        "## Held-out evaluation (`python -m minidecode.tinyworld.evaluate`, seed 20261123)",
        "| figure | value |",
        "|---|---|",
    ]
    lines += [f"| {k} | {v:.3f} |" for k, v in s.items()]
    lines += ["", "Held-out perplexity per family: "
              + ", ".join(f"{f} {v:.2f}" for f, v in result["perplexity"]["target"].items()),
              "", "Full tables (retrieval by depth and length, arithmetic by steps) are in "
              "`eval.json`."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--command", required=True)
    parser.add_argument("--hardware", required=True)
    parser.add_argument("--target", default=None, help="shipped target, to measure agreement")
    parser.add_argument("--notes", default="", help="extra markdown appended to the card "
                        "(a path to a .md file, or the text itself)")
    parser.add_argument("--init-from", default=None, help="the shipped model the run started from")
    parser.add_argument("--by-facts", type=int, default=0,
                        help="documents per cell of the retrieval-by-number-of-facts table")
    parser.add_argument("--qa", type=int, default=0,
                        help="questions of each kind (answerable, unanswerable) for QA")
    args = parser.parse_args()
    torch.set_num_threads(2)
    model, tokenizer, state = model_from_run(args.run)
    out = MODELS / args.name
    out.mkdir(parents=True, exist_ok=True)
    save_pretrained(model, out, tokenizer=tokenizer,
                    generation_config={"do_sample": False, "max_new_tokens": 64})
    shutil.copy(args.run / "metrics.csv", out / "metrics.csv")
    plot_curves(out / "metrics.csv", out / "learning_curves.png")
    small = args.target is not None  # a draft: smaller task grids, plus agreement
    result = evaluate(model, tokenizer, None, *((4, 10, 50) if small else (20, 50, 50)),
                      n_by_facts=args.by_facts, style=state["config"].get("fact_style", "has_code"),
                      n_qa=args.qa)
    if small and (MODELS / args.target / "config.json").exists():
        target, _ = load_pretrained(MODELS / args.target)
        result["agreement"] = {f: agreement(target, model, tokenizer, held_out_docs(f, 50))
                               for f in ("stories", "structured")}
    result["summary"] = summary(result)
    (out / "eval.json").write_text(json.dumps(result, indent=1))
    with (out / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    text = card(args.name, model, state, result, args.command, args.hardware, rows, args.init_from)
    notes = Path(args.notes).read_text() if args.notes.endswith(".md") else args.notes
    (out / "README.md").write_text(text + ("\n" + notes + "\n" if notes else ""))
    print(text)


if __name__ == "__main__":
    main()
