"""Which draft should ship beside the main model: acceptance of each candidate, side by side.

    python scripts/compare_drafts.py --target minidecode/models/main \
        --drafts runs/draft1-hf runs/draft1d-hf --names "corpus only" "distilled" --write-results

For every held-out prompt (TinyWorld stories and structured documents, the first 32 tokens) each
draft proposes gamma tokens at a time to the target in greedy speculative decoding; alpha is the
share of proposed tokens the target accepted (Leviathan et al. 2023), pooled over the prompts, with
a Wilson 95% interval over proposals (they are not independent, so the interval is optimistic).
Teacher-forced agreement (argmax of draft == argmax of target on held-out text) is reported too.
Acceptance counts tokens, not seconds, so this comparison does not need a quiet machine.
"""

from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path

import torch

import minidecode
from minidecode.course.capstone import wilson_interval
from minidecode.speculative import ModelDrafter, speculative_generate
from minidecode.tinyworld.evaluate import agreement, encode_prompt, held_out_docs

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## The main model's draft: trained on the corpus, or distilled"
FAMILIES = ("stories", "structured")


def wilson(k: int, n: int) -> tuple[float, float]:
    """Wilson score interval (Wilson 1927)."""
    return wilson_interval(k, n)


def acceptance(target, draft, tokenizer, family: str, n_prompts: int, gamma: int,
               new_tokens: int) -> dict:
    accepted = tested = calls = 0
    for doc in held_out_docs(family, n_prompts):
        ids = torch.tensor([encode_prompt(tokenizer, doc.text)[:32]])
        out = speculative_generate(target, ModelDrafter(draft), ids, new_tokens, gamma=gamma)
        accepted += out.stats.accepted
        tested += out.stats.accepted + out.stats.rejected
        calls += out.stats.target_calls
    lo, hi = wilson(accepted, tested)
    return {"alpha": accepted / tested, "ci": [lo, hi], "proposed": tested,
            "tokens_per_call": n_prompts * new_tokens / calls}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", required=True)
    parser.add_argument("--drafts", nargs="+", required=True)
    parser.add_argument("--names", nargs="+", required=True)
    parser.add_argument("--prompts", type=int, default=10, help="held-out documents per family")
    parser.add_argument("--gamma", type=int, default=4)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--write-results", action="store_true")
    args = parser.parse_args()
    if len(args.names) != len(args.drafts):
        raise SystemExit("--names must give one name per draft")
    torch.set_num_threads(args.threads)
    target, tokenizer = minidecode.load(args.target)
    lines = [SECTION, "",
             f"Target `{args.target}`; greedy speculative decoding, gamma {args.gamma}, "
             f"{args.new_tokens} new tokens after 32-token prompts, {args.prompts} held-out "
             "documents a family; alpha with a Wilson 95% interval over proposed tokens; "
             "agreement = share of positions where the draft's argmax equals the target's "
             f"(teacher-forced, 50 held-out documents). `python scripts/compare_drafts.py "
             f"{' '.join(sys.argv[1:])}`, 2-core CPU, {datetime.date.today()}.", "",
             "| draft | text | alpha | tokens / target call | agreement |",
             "|---|---|---|---|---|"]
    for name, path in zip(args.names, args.drafts):
        draft, _ = minidecode.load(path)
        for family in FAMILIES:
            a = acceptance(target, draft, tokenizer, family, args.prompts, args.gamma,
                           args.new_tokens)
            agree = agreement(target, draft, tokenizer, held_out_docs(family, 50))
            lines.append(f"| {name} | {family} | {a['alpha']:.3f} [{a['ci'][0]:.3f}, "
                         f"{a['ci'][1]:.3f}] (n={a['proposed']}) | {a['tokens_per_call']:.2f} | "
                         f"{agree:.3f} |")
            print(lines[-1], flush=True)
    print("\n".join(lines))
    if args.write_results:
        sys.path.insert(0, str(ROOT / "benchmarks"))
        from results_md import replace_section
        replace_section(SECTION, lines + [""])


if __name__ == "__main__":
    main()
