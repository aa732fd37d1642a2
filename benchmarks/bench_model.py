"""Decode speed: minidecode's loop vs transformers' generate, same weights, same machine.

Greedy, batch 1, ``--new-tokens`` new tokens after a ``--prompt``-token prompt. The two runs
alternate (minidecode, transformers, minidecode, ...) so that a slow spell of the machine hits
both; the median of ``--repeats`` runs is reported, and the ratio is measured in this one run.

The model is ``minidecode/models/main`` when it exists, else a random Llama built here
(4 layers, hidden 256, 8 heads, 4 KV heads, vocab 2048). Both libraries load the same directory.

    python benchmarks/bench_model.py                   # print
    python benchmarks/bench_model.py --write-results   # also update benchmarks/RESULTS.md
"""

from __future__ import annotations

import argparse
import copy
import datetime
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from results_md import replace_section  # benchmarks/results_md.py, beside this script
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

from minidecode.checkpoint import MODELS_DIR, load_pretrained
from minidecode.generate import generate

SECTION = "## Model: decode speed"


def model_directory(scratch: Path) -> tuple[Path, str]:
    shipped = MODELS_DIR / "main"
    if (shipped / "config.json").is_file():
        return shipped, "shipped main"
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=2048, hidden_size=256, intermediate_size=688,
                         num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=4,
                         max_position_embeddings=512, rms_norm_eps=1e-5,
                         tie_word_embeddings=True, bos_token_id=None, eos_token_id=None,
                         pad_token_id=None)
    LlamaForCausalLM(config).save_pretrained(scratch)
    return scratch, "random Llama: 4 layers, hidden 256, 8 heads, 4 KV heads, vocab 2048"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--prompt", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    parser.add_argument("--write-results", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as scratch:
        directory, description = model_directory(Path(scratch))
        ours, _ = load_pretrained(directory)
        theirs = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()
    # No early stop in either library: every run makes exactly --new-tokens tokens. (transformers
    # falls back to the model's own generation_config for an eos the passed one leaves unset.)
    theirs.generation_config.eos_token_id = None
    generation_config = copy.deepcopy(theirs.generation_config)
    generation_config.eos_token_id = None
    generation_config.do_sample = False
    generation_config.max_new_tokens = args.new_tokens
    generation_config.min_new_tokens = 0
    prompt = torch.randint(0, ours.config.vocab_size, (1, args.prompt),
                           generator=torch.Generator().manual_seed(0))

    def run_ours() -> torch.Tensor:
        return generate(ours, prompt, args.new_tokens)

    @torch.no_grad()
    def run_theirs() -> torch.Tensor:
        return theirs.generate(prompt, attention_mask=torch.ones_like(prompt),
                               generation_config=generation_config)

    same = run_ours().tolist() == run_theirs().tolist()  # also warms both up
    times: dict[str, list[float]] = {"minidecode": [], "transformers": []}
    for _ in range(args.repeats):
        for name, run in (("minidecode", run_ours), ("transformers", run_theirs)):
            start = time.perf_counter()
            out = run()
            times[name].append(time.perf_counter() - start)
            assert out.shape[1] == args.prompt + args.new_tokens
    speed = {name: args.new_tokens / statistics.median(t) for name, t in times.items()}
    ratio = speed["minidecode"] / speed["transformers"]

    import transformers

    lines = [
        f"- model: {description}",
        f"- greedy, batch 1, prompt {args.prompt} tokens, {args.new_tokens} new tokens, float32, "
        f"median of {args.repeats} alternating runs, torch {torch.__version__}, "
        f"transformers {transformers.__version__}, {torch.get_num_threads()} threads",
        f"- minidecode `generate`: {speed['minidecode']:.0f} tokens/s "
        f"({1000 / speed['minidecode']:.1f} ms a token)",
        f"- transformers `generate`: {speed['transformers']:.0f} tokens/s "
        f"({1000 / speed['transformers']:.1f} ms a token)",
        f"- ratio minidecode / transformers: {ratio:.2f}x (goal: >= 0.67x, i.e. within 1.5x)",
        f"- same tokens from both: {same}",
        f"- load average (1 min) when the run ended: {os.getloadavg()[0]:.1f} (other jobs on the "
        "machine slow both libraries alike; the runs alternate)",
    ]
    print("\n".join(lines))
    if args.write_results:
        write_results(lines)


def write_results(lines: list[str]) -> None:
    """Replace this benchmark's section of RESULTS.md (other sections stay as they are)."""
    command = " ".join(["python benchmarks/bench_model.py", *sys.argv[1:]])
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    body = [SECTION, "",
            f"Command: `{command}`; machine: {os.cpu_count()}-core CPU, {gpu} "
            f"({platform.machine()}), shared with other jobs; date: "
            f"{datetime.date.today().isoformat()}.", "", *lines, ""]
    replace_section(SECTION, body)


if __name__ == "__main__":
    main()
