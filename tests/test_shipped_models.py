"""The shipped TinyWorld checkpoints load in minidecode and in transformers, and agree."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import minidecode
from minidecode import tinyworld as tw
from minidecode.tinyworld.evaluate import encode_prompt

MODELS = Path(minidecode.__file__).parent / "models"
SHIPPED = sorted(p.name for p in MODELS.iterdir() if (p / "config.json").is_file())


def test_the_main_model_and_its_draft_are_shipped():
    assert {"main", "main-draft"} <= set(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_model_loads_in_both_libraries_and_agrees(name):
    transformers = pytest.importorskip("transformers")
    model, tokenizer = minidecode.load(name)
    assert tokenizer is not None
    ids = torch.tensor([encode_prompt(tokenizer, "Tom went to the kitchen. He found a red ball.")])
    hf = transformers.AutoModelForCausalLM.from_pretrained(MODELS / name, dtype=torch.float32)
    hf.eval()
    with torch.no_grad():
        ours = model(ids).logits
        theirs = hf(ids).logits
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)
    # and the tokenizer loads through transformers too, with the same ids
    hf_tok = transformers.AutoTokenizer.from_pretrained(MODELS / name)
    assert hf_tok(tw.EOS + "Tom went to the kitchen.")["input_ids"] == encode_prompt(
        tokenizer, "Tom went to the kitchen.")


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_model_has_learned_tinyworld(name):
    """Held-out story perplexity far below an untrained model's (about the vocabulary size)."""
    from minidecode.tinyworld.evaluate import held_out_docs, perplexity

    model, tokenizer = minidecode.load(name)
    ppl = perplexity(model, tokenizer, held_out_docs("stories", 10))
    assert ppl < 5.0, ppl


def test_the_main_model_thinks_step_by_step():
    """The chain-of-thought effect the chapters need: the trigger beats a direct greedy answer.

    Held-out two-step problems; the main model's card reports 1.00 vs 0.28 on 50 (here 12 of 12
    vs 3 of 12).
    """
    from minidecode.tinyworld.evaluate import complete

    model, tokenizer = minidecode.load("main")
    rng = __import__("random").Random(7)
    problems = [tw.arithmetic_problem(rng, n_steps=2) for _ in range(12)]

    def accuracy(trigger: bool) -> float:
        prompts = [tw.arithmetic_prompt(p, trigger=trigger) for p in problems]
        outs = complete(model, tokenizer, prompts, 72)
        return sum(tw.parse_number_answer(o) == p.answer for o, p in zip(outs, problems)) / 12

    assert accuracy(trigger=True) >= accuracy(trigger=False) + 0.4


def test_the_main_model_finds_a_lone_fact_that_its_draft_cannot():
    """What chapters 8 and 9 need: the answer depends on a token far back in the context.

    Held-out keys, one fact among filler, within the trained context, the main model's "code_of"
    wording; the main model's card reports 1.00 on such documents (here 10 of 10). The one-layer
    draft finds none (0 of 10): it cannot form an induction head, which needs two attention
    layers, one to note each token's predecessor and one to find the match (Olsson et al. 2022).
    """
    from minidecode.tinyworld.evaluate import complete

    rng = __import__("random").Random(11)
    docs = [tw.retrieval(rng, n_filler=30, n_facts=1, needle_depth=rng.random(),
                         keys=tw.HELD_OUT_KEYS, style="code_of") for _ in range(10)]

    def accuracy(name: str) -> float:
        model, tokenizer = minidecode.load(name)
        answers = complete(model, tokenizer, [d.truth["prompt"] for d in docs], 3)
        return sum(a.strip().startswith(d.truth["code"]) for a, d in zip(answers, docs)) / 10

    assert accuracy("main") >= 0.9
    assert accuracy("main-draft") <= 0.2


def test_the_main_model_answers_where_is_x_and_its_draft_cannot():
    """What chapter 6's short answers need: the person's last stated move, held-out stories.

    The main model's card and RESULTS.md report its accuracy on 200 such questions (here 16 of
    16); the one-layer draft answers 2 of 16."""
    from minidecode.tinyworld.evaluate import complete

    rng = __import__("random").Random(21)
    docs = [tw.qa(rng, answerable=True) for _ in range(16)]

    def accuracy(name: str) -> float:
        model, tokenizer = minidecode.load(name)
        answers = complete(model, tokenizer, [d.truth["prompt"] for d in docs], 8)
        return sum(d.truth["place"] in a.split("\n")[0] for a, d in zip(answers, docs)) / 16

    assert accuracy("main") >= 0.75
    assert accuracy("main-draft") <= 0.35


def test_the_main_model_finds_a_code_among_distractors():
    """Four facts of the same shape, held-out keys, the main model's "code_of" wording: the
    lookup must pick the asked key's fact, not the nearest code."""
    from minidecode.tinyworld.evaluate import complete

    rng = __import__("random").Random(23)
    docs = [tw.retrieval(rng, n_filler=20, n_facts=4, needle_depth=rng.random(),
                         keys=tw.HELD_OUT_KEYS, style="code_of") for _ in range(12)]
    model, tokenizer = minidecode.load("main")
    answers = complete(model, tokenizer, [d.truth["prompt"] for d in docs], 3)
    assert sum(a.strip().startswith(d.truth["code"]) for a, d in zip(answers, docs)) >= 10


def test_the_main_draft_agrees_with_the_main_model():
    """Speculative decoding pays only if the draft's greedy token is usually the target's."""
    from minidecode.tinyworld.evaluate import agreement, held_out_docs

    target, tokenizer = minidecode.load("main")
    draft, _ = minidecode.load("main-draft")
    assert draft.config.num_hidden_layers == 1
    assert agreement(target, draft, tokenizer, held_out_docs("structured", 8)) >= 0.6
