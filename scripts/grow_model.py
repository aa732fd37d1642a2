"""Grow a shipped model deeper without changing what it computes: each layer is followed by a
copy of itself whose output projections (attention ``o_proj`` and MLP ``down_proj``) start at
zero, so the copy adds nothing to the residual stream until training moves it (function-
preserving growth, as in Net2Net: Chen, Goodfellow, Shlens 2016, arXiv:1511.05641).

    python scripts/grow_model.py minidecode/models/main runs/grown --factor 2

(The shipped main model began this way: an earlier 4-layer course model, tiny-retriever, grown
to 8 layers, then trained further; see its model card.)
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import torch

from minidecode.checkpoint import load_pretrained, save_pretrained
from minidecode.model import Transformer


def grow(model: Transformer, factor: int) -> Transformer:
    """A ``factor`` times deeper model whose logits equal ``model``'s (up to float rounding)."""
    if factor < 1:
        raise ValueError(f"factor must be >= 1, got {factor}")
    config = replace(model.config, num_hidden_layers=model.config.num_hidden_layers * factor)
    grown = Transformer(config)
    source = model.state_dict()
    target = grown.state_dict()
    for name, tensor in source.items():
        if not name.startswith("layers."):
            target[name].copy_(tensor)
            continue
        _, index, rest = name.split(".", 2)
        for copy in range(factor):
            new_name = f"layers.{int(index) * factor + copy}.{rest}"
            silent = copy > 0 and rest.endswith(("o_proj.weight", "down_proj.weight"))
            target[new_name].copy_(torch.zeros_like(tensor) if silent else tensor)
    grown.load_state_dict(target)
    return grown.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--factor", type=int, default=2)
    args = parser.parse_args()
    model, tokenizer = load_pretrained(args.source)
    grown = grow(model, args.factor)
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, model.config.vocab_size, (1, 64), generator=gen)
    with torch.no_grad():
        gap = (grown(ids).logits - model(ids).logits).abs().max().item()
    print(f"{model.config.num_hidden_layers} -> {grown.config.num_hidden_layers} layers, "
          f"{grown.num_parameters() / 1e6:.2f}M parameters; max logit difference {gap:.2e}")
    save_pretrained(grown, args.out, tokenizer=args.source / "tokenizer.json")


if __name__ == "__main__":
    main()
