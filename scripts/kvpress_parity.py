"""Record which cache entries NVIDIA kvpress keeps on the course's model: the reference that
tests/test_kvpress_parity.py compares minidecode's cache policies with.

kvpress pins its own transformers version, so this runs in an environment of its own, not the
course's (the test itself needs neither kvpress nor this environment)::

    python3 -m venv kvpress-env
    kvpress-env/bin/pip install kvpress "transformers<5.3" torch
    kvpress-env/bin/python scripts/kvpress_parity.py   # writes tests/fixtures/kvpress_kept.json

What it does. It loads ``minidecode/models/main`` with transformers (``LlamaForCausalLM``,
eager attention, float32), builds 3 TinyWorld documents of 400 tokens (the corpus generator
``minidecode/tinyworld/corpus.py`` is standard-library Python, loaded from its file so that the
course package itself is not imported; the shipped tokenizer encodes them), and prefills each
document once per press and compression ratio:

- ``StreamingLLMPress(n_sink=4)``, ``SnapKVPress(window_size=64, kernel_size=5)``, ``TOVAPress()``,
  ``ObservedAttentionPress()``, at compression ratios 0.25, 0.5 and 0.75 (kvpress keeps
  ``int(length * (1 - ratio))`` entries of every layer and KV head).

How the kept positions are recovered. kvpress prunes the cache in place and keeps no record of
which positions survived; its ``compress`` gathers key rows in ``topk`` order, not in position
order. Rather than re-implement each press's score (which would test a copy, not kvpress), the
script treats kvpress as a black box: it prefills the same document once *without* a press, and
finds each compressed key row among the full cache's rows of the same layer and KV head (nearest
row; the distance must be 0 up to float rounding and every match distinct, or the script stops).
Keys are stored after RoPE, so two positions never share a row. This works for any press that
only drops entries, whatever its scoring.

The fixture records the versions of kvpress, transformers and torch, the model's name and the
SHA-256 of its weights (the test refuses a fixture made for other weights), the documents' token
ids (so the test reads exactly the same tokens), and for every (press, ratio, document, layer, KV
head) the kept positions as a hex bit mask (bit p set = position p kept), to keep the file small.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import random
import sys
from importlib.metadata import version
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
MODEL_DIR = REPO / "minidecode" / "models" / "main"
FIXTURE = REPO / "tests" / "fixtures" / "kvpress_kept.json"
N_TOKENS = 400
N_DOCUMENTS = 3
RATIOS = (0.25, 0.5, 0.75)


def load_corpus():
    """minidecode/tinyworld/corpus.py as a standalone module (it imports only the standard
    library), without importing the course package and its dependencies."""
    spec = importlib.util.spec_from_file_location("tinyworld_corpus",
                                                  REPO / "minidecode" / "tinyworld" / "corpus.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def documents(tokenizer) -> list[dict]:
    """N_DOCUMENTS TinyWorld token sequences of N_TOKENS: <|endoftext|>, then documents of the
    training mixture separated by <|endoftext|>, cut at N_TOKENS (held-out seeds)."""
    corpus = load_corpus()
    eos = tokenizer.token_to_id(corpus.EOS)
    docs = []
    for i in range(N_DOCUMENTS):
        seed = corpus.HELD_OUT_SEED + i
        rng = random.Random(seed)
        ids = [eos]
        while len(ids) < N_TOKENS:
            ids += tokenizer.encode(corpus.sample_document(rng).text).ids + [eos]
        docs.append({"seed": seed, "input_ids": ids[:N_TOKENS]})
    return docs


def presses() -> dict[str, object]:
    """name -> a press factory taking the compression ratio."""
    from kvpress import ObservedAttentionPress, SnapKVPress, StreamingLLMPress, TOVAPress

    return {
        "StreamingLLMPress(n_sink=4)": lambda r: StreamingLLMPress(compression_ratio=r, n_sink=4),
        "SnapKVPress(window_size=64, kernel_size=5)":
            lambda r: SnapKVPress(compression_ratio=r, window_size=64, kernel_size=5),
        "TOVAPress()": lambda r: TOVAPress(compression_ratio=r),
        "ObservedAttentionPress()": lambda r: ObservedAttentionPress(compression_ratio=r),
    }


def prefill_keys(model, input_ids: torch.Tensor, press=None) -> list[torch.Tensor]:
    """Keys of every layer after prefilling input_ids (1, length), compressed by ``press`` if
    given: [(kv_heads, entries, head_dim)] per layer."""
    from transformers import DynamicCache

    cache = DynamicCache()
    with torch.no_grad():
        if press is None:
            model(input_ids, past_key_values=cache)
        else:
            with press(model):
                model(input_ids, past_key_values=cache)
    return [layer.keys[0].clone() for layer in cache.layers]


def kept_positions(compressed: torch.Tensor, full: torch.Tensor) -> list[int]:
    """Positions of the rows of compressed (entries, head_dim) in full (length, head_dim), sorted.
    Each row must match one full row exactly (up to float rounding), each a different one."""
    distance = torch.cdist(compressed.double(), full.double())           # (entries, length)
    nearest, positions = distance.min(dim=-1)
    scale = full.double().norm(dim=-1).max()
    if float(nearest.max()) > 1e-6 * float(scale):
        raise RuntimeError(f"a compressed key matches no full key (distance {nearest.max():.3g})")
    if len(set(positions.tolist())) != len(positions):
        raise RuntimeError("two compressed keys matched the same position")
    return sorted(positions.tolist())


def to_mask(positions: list[int]) -> str:
    """Hex bit mask: bit p set = position p kept."""
    return hex(sum(1 << p for p in positions))


def main() -> None:
    from tokenizers import Tokenizer
    from transformers import LlamaForCausalLM
    from transformers.utils import logging

    logging.disable_progress_bar()
    tokenizer = Tokenizer.from_file(str(MODEL_DIR / "tokenizer.json"))
    model = LlamaForCausalLM.from_pretrained(MODEL_DIR, attn_implementation="eager",
                                             dtype=torch.float32).eval()
    docs = documents(tokenizer)
    runs = []
    for name, make in presses().items():
        for ratio in RATIOS:
            for d, doc in enumerate(docs):
                ids = torch.tensor([doc["input_ids"]])
                full = prefill_keys(model, ids)
                pressed = prefill_keys(model, ids, make(ratio))
                masks = [[to_mask(kept_positions(pressed[layer][head], full[layer][head]))
                          for head in range(full[layer].shape[0])] for layer in range(len(full))]
                runs.append({"press": name, "compression_ratio": ratio, "document": d,
                             "n_kept": pressed[0].shape[1], "kept_masks": masks})
            print(f"{name}, ratio {ratio}: kept {runs[-1]['n_kept']} of {N_TOKENS}", flush=True)
    weights = (MODEL_DIR / "model.safetensors").read_bytes()
    fixture = {"kvpress": version("kvpress"), "transformers": version("transformers"),
               "torch": version("torch"), "model": "main",
               "model_sha256": hashlib.sha256(weights).hexdigest(),
               "attn_implementation": "eager", "documents": docs, "runs": runs}
    FIXTURE.parent.mkdir(parents=True, exist_ok=True)
    FIXTURE.write_text(json.dumps(fixture, separators=(",", ":")) + "\n")
    print(f"wrote {FIXTURE.relative_to(REPO)} ({FIXTURE.stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    main()
