"""The TinyWorld judge: accepts the generator's own stories, rejects planted errors, and its
perplexity counts exactly the tokens it says it counts."""

from __future__ import annotations

import math
import random

import pytest
import torch

from minidecode import tinyworld as tw
from minidecode.tinyworld.judge import (
    BODY,
    ENDINGS,
    OPENINGS,
    PRONOUN,
    bootstrap_ci,
    find_loop,
    judge_story,
    perplexity_without_eos,
    repeated_ngram_share,
    words,
)

OPENING = "One sunny day, Tom woke up early."


def held_out_stories(n: int = 300) -> list[str]:
    rng = random.Random(tw.HELD_OUT_SEED)        # never a training seed (those are strings)
    return [tw.story(rng).text for _ in range(n)]


def test_held_out_generator_stories_are_fully_valid_and_cover_every_template():
    used = set()
    for text in held_out_stories():
        verdict = judge_story(text)
        assert verdict.validity == 1.0, verdict.errors
        assert not verdict.loops and verdict.incomplete == ""
        used |= {s.template for s in verdict.sentences}
    assert used == set(OPENINGS) | set(BODY) | set(ENDINGS)


def test_prompt_sets_the_protagonist_but_is_not_scored():
    verdict = judge_story("He felt calm. Tom went to the park.", prompt=OPENING)
    assert [s.text for s in verdict.sentences] == ["He felt calm.", "Tom went to the park."]
    assert verdict.validity == 1.0


@pytest.mark.parametrize("kind", ["grammar", "qa sentence", "pronoun", "protagonist"])
def test_rejects_a_planted_error_in_a_held_out_story(kind):
    for story in held_out_stories(8):
        name = judge_story(story).protagonist
        wrong_pronoun = "She" if PRONOUN[name] == "he" else "He"
        stranger = "Mia" if name != "Mia" else "Tom"
        planted, reason = {
            "grammar": (f"{name} went to the moon.", "outside the grammar"),   # no such place
            "qa sentence": (f"{name} is in the kitchen.", "outside the grammar"),
            "pronoun": (f"{wrong_pronoun} felt happy.", f"{name} is '{PRONOUN[name]}'"),
            "protagonist": (f"{stranger} went to the park.", f"protagonist is {name}"),
        }[kind]
        sentences = story.split(". ")
        text = ". ".join(sentences[:2]) + ". " + planted + " " + ". ".join(sentences[2:])
        verdict = judge_story(text)
        bad = [s for s in verdict.sentences if not s.valid]
        assert [s.text for s in bad] == [planted] and bad[0].reason == reason
        assert verdict.validity == pytest.approx(1 - 1 / len(verdict.sentences))


def test_rejects_sentences_after_the_ending():
    verdict = judge_story("He felt calm. The end. Tom went to the park.", prompt=OPENING)
    assert [s.valid for s in verdict.sentences] == [True, True, False]
    assert verdict.sentences[-1].reason == "after the ending"


def test_detects_a_loop_and_repeated_ngrams():
    loop = "Tom went to the park. " * 4
    verdict = judge_story(loop, prompt=OPENING)
    assert verdict.validity == 1.0                    # every sentence is grammatical ...
    assert verdict.loop_period == len(words("Tom went to the park."))    # ... but it loops
    assert verdict.repeated_4grams > 0.6
    for text in held_out_stories(100):
        assert find_loop(words(text)) is None
    assert repeated_ngram_share([1, 2, 3, 4, 1, 2, 3, 4], 4) == pytest.approx(1 / 5)


def test_an_unfinished_last_sentence_is_scored_only_if_it_cannot_be_finished():
    grows = judge_story("He felt calm. Tom found a big", prompt=OPENING)
    assert grows.incomplete == "Tom found a big" and len(grows.sentences) == 1
    wrong = judge_story("He felt calm. Tom found a purple elephant", prompt=OPENING)
    assert wrong.incomplete == "" and not wrong.sentences[-1].valid


def test_location_clashes_are_counted_not_scored():
    verdict = judge_story("Tom went to the park. The day was cold, so he stayed in the kitchen.",
                          prompt=OPENING)
    assert verdict.location_clashes == 1 and verdict.validity == 1.0
    moved = judge_story("Tom went to the park. Tom went to the kitchen. "
                        "The day was cold, so he stayed in the kitchen.", prompt=OPENING)
    assert moved.location_clashes == 0


def test_perplexity_without_eos_is_exp_mean_nll_over_exactly_the_counted_tokens():
    import minidecode

    model, tokenizer = minidecode.load("main")
    eos = tokenizer.token_to_id(tw.EOS)
    prompt = tw.encode_prompt(tokenizer, OPENING)
    body = tokenizer.encode(" He felt calm. The end.").ids
    rows = [prompt + body + [eos, eos, eos],                   # stops, then padding
            prompt + body + tokenizer.encode(" Tom felt calm.").ids[:3],    # never stops
            prompt + [eos] * (len(body) + 3)]                   # stops at once: nothing to count
    tokens = torch.tensor(rows)
    got = perplexity_without_eos(model, tokens, len(prompt), eos)
    with torch.no_grad():
        log_probs = torch.log_softmax(model(tokens).logits.double(), dim=-1)
    for row, value in zip(rows, got.tolist()):
        counted = []
        for t in range(len(prompt), len(row)):
            if row[t] == eos:
                break
            counted.append(-log_probs[rows.index(row), t - 1, row[t]].item())
        if counted:
            assert value == pytest.approx(math.exp(sum(counted) / len(counted)), rel=1e-5)
        else:
            assert math.isnan(value)
    # with the end-of-text token counted (the old measure) the first row differs
    from minidecode.diversity import perplexity

    old = perplexity(model, tokens, len(prompt), eos)
    assert old[0] != pytest.approx(got[0].item(), rel=1e-6)
    assert old[1] == pytest.approx(got[1].item(), rel=1e-6)


def test_bootstrap_is_seeded_and_resamples_groups():
    values = [1.0, 1.0, 1.0, 5.0, 5.0, 5.0]
    estimate, low, high = bootstrap_ci(values, groups=[0, 0, 0, 1, 1, 1], seed=3)
    assert estimate == 3.0 and low <= estimate <= high
    assert (low, high) == bootstrap_ci(values, groups=[0, 0, 0, 1, 1, 1], seed=3)[1:]
    assert low == 1.0 and high == 5.0            # two groups: a resample can be all one group
    constant = bootstrap_ci([2.0] * 10, seed=0)
    assert constant == (2.0, 2.0, 2.0)
    assert bootstrap_ci([1.0, math.nan, 3.0])[0] == 2.0
