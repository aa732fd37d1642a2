"""benchmarks/bench_infinipot.py's needle grid: equal terms, counts and intervals as it says."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pytest

import minidecode
from minidecode.course.capstone import wilson_interval

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_infinipot as bench  # noqa: E402


def _args(**overrides) -> argparse.Namespace:
    args = dict(lengths=[256], depths=[0.5], n=2, pot=128, keep=64, chunk=32, held_out_keys=True,
                style="code_of", n_facts=[2, 3], question_known=False, question_catalyst=False,
                policies=None, model="main")
    args.update(overrides)
    return argparse.Namespace(**args)


@pytest.fixture(scope="module")
def main_model():
    return minidecode.load("main")


def test_the_question_known_setting_gives_the_question_to_the_policies_that_can_use_it():
    from minidecode.cache_policies import InfiniPot, QuestionProbe, SirLLM, StreamingLLM

    question = [5, 6, 7]
    known = bench.policies([1, 2], question)
    for name in ("H2O", "TOVA", "SnapKV"):
        policy, reset = known[name]
        assert isinstance(policy, QuestionProbe) and policy.question_ids == question and reset
    assert known["InfiniPot"][0].catalyst_ids == question
    assert isinstance(known["StreamingLLM"][0], StreamingLLM)
    assert isinstance(known["SirLLM"][0], SirLLM)
    generic = bench.policies([1, 2])
    assert generic["InfiniPot"][0].catalyst_ids == [1, 2]
    assert not any(isinstance(p, QuestionProbe) for p, _ in generic.values())
    assert isinstance(generic["InfiniPot, NuC only"][0], InfiniPot)


@pytest.mark.parametrize("question_known", [False, True])
def test_needle_cells_count_hits_with_wilson_intervals(main_model, question_known):
    model, tokenizer = main_model
    args = _args(question_known=question_known, policies=["SnapKV", "InfiniPot"])
    result = bench.needle(args, model, tokenizer)
    assert result["question_known"] is question_known and result["n_facts"] == [2, 3]
    assert [c["policy"] for c in result["cells"]] == ["SnapKV", "InfiniPot"]
    for cell in result["cells"]:
        assert 0 <= cell["hits"] <= cell["n"] == 2
        assert cell["accuracy"] == cell["hits"] / 2
        assert tuple(cell["interval"]) == pytest.approx(wilson_interval(cell["hits"], 2))


def test_equal_terms_table_has_a_column_a_setting_and_marks_policies_that_cannot_use_it(tmp_path):
    cell = {"length": 4096, "depth": 0.5, "n": 30, "kept": 1.0}
    common = dict(model="main", style="code_of", lengths=[4096], depths=[0.5], pot=512, keep=256,
                  chunk=128, machine="cpu", date="today", command="cmd")
    generic = dict(common, policies=["SirLLM", "InfiniPot"],
                   cells=[dict(cell, policy="SirLLM", hits=24, accuracy=0.8),
                          dict(cell, policy="InfiniPot", hits=12, accuracy=0.4)])
    known = dict(common, policies=["InfiniPot"],
                 cells=[dict(cell, policy="InfiniPot", hits=27, accuracy=0.9)])
    paths = {}
    for name, run in (("lone", generic), ("multi", generic), ("qk", known)):
        paths[name] = tmp_path / f"{name}.json"
        paths[name].write_text(json.dumps(run))
    lines = bench.equal_terms_section(dict(zip(bench.SETTINGS, paths.values())))
    rows = {line.split(" | ")[0].strip("| "): line for line in lines if line.startswith("| ")}
    low, high = wilson_interval(24, 30)
    assert f"0.80 [{low:.2f}, {high:.2f}], n = 30" in rows["SirLLM"]
    assert rows["SirLLM"].endswith("(cannot use it) |")
    assert rows["InfiniPot"].count("n = 30") == 3 and "0.90" in rows["InfiniPot"]
