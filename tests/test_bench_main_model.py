"""The composed cases of benchmarks/bench_main_model.py ask what they say they ask."""

from __future__ import annotations

import random
import re
import sys
from pathlib import Path

import pytest

from minidecode import tinyworld as tw

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_main_model as bench  # noqa: E402


def test_wilson_interval_matches_known_values():
    lo, hi = bench.wilson(8, 10)
    assert lo == pytest.approx(0.4902, abs=1e-3) and hi == pytest.approx(0.9433, abs=1e-3)
    assert bench.wilson(0, 0) == (0.0, 1.0)


@pytest.mark.parametrize("seed", range(20))
def test_composed_qa_answer_is_the_persons_last_move(seed):
    case = bench.composed_qa(random.Random(seed))
    story, question = case["prompt"].split("\nQ: Where is ")
    name = question.split("?")[0]
    moves = re.findall(rf"{name} (?:went to|walked to|is in) the (\w+)\.", story)
    assert moves and moves[-1] == case["place"]
    assert case["moves"] == len(moves)


@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("keys", [tw.TRAIN_KEYS, tw.HELD_OUT_KEYS])
def test_composed_lookup_states_the_asked_code_once(shared, keys):
    rng = random.Random(3)
    for _ in range(20):
        case = bench.composed_lookup(rng, keys, shared)
        asked = case["prompt"].split("Q: What is the code of the ")[1].split("?")[0]
        assert asked in keys
        facts = dict(re.findall(r"The code of the ([a-z ]+) is (\d{4})\.", case["prompt"]))
        assert facts[asked] == case["code"] and 2 <= len(facts) <= 4
        others = [k for k in facts if k != asked]
        share = any(set(k.split()) & set(asked.split()) for k in others)
        if shared:
            assert share
        else:
            assert not share
