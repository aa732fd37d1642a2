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


def _family(tokenizer, n_tokens: int, depths=(0.0, 0.5, 1.0), seed: int = 3) -> dict:
    import random

    from minidecode import tinyworld as tw
    from minidecode.infinipot import needle_example

    rng = random.Random(seed)
    state = rng.getstate()
    family = {}
    for depth in depths:
        rng.setstate(state)
        family[depth] = needle_example(tokenizer, n_tokens, depth, rng, keys=tw.HELD_OUT_KEYS,
                                       style="code_of")
    return family


@pytest.mark.parametrize("name", ["H2O", "InfiniPot"])
def test_a_forked_family_reads_every_document_as_a_fresh_reader_would(main_model, name):
    """The grid reads the deepest needle's document once and forks the reader before each other
    needle; answers and kept shares must equal reading each document from scratch (H2O carries
    state between chunks, InfiniPot runs a catalyst: both must survive the fork)."""
    from minidecode.infinipot import answer_after_reading, needle_found, needle_kept

    model, tokenizer = main_model
    args = _args(exit_when="code-gone")
    family = _family(tokenizer, 600)
    catalyst = tokenizer.encode(bench.GENERIC_CATALYSTS["code_of"]).ids
    outcomes = bench.read_family(model, tokenizer, name, family, catalyst, args, early_exit=False)
    assert sorted(outcomes) == sorted(family)
    for depth, ex in family.items():
        policy, reset = bench.policies(catalyst)[name]
        generated, result = answer_after_reading(
            model, ex.document_ids, ex.question_ids, policy, max_new_tokens=3, pot_size=args.pot,
            keep_size=args.keep, chunk_size=args.chunk, reset=reset)
        assert outcomes[depth]["hit"] == needle_found(tokenizer, generated, ex.code)
        assert outcomes[depth]["kept"] == pytest.approx(needle_kept(result.cache,
                                                                    ex.code_positions))
        assert outcomes[depth]["stopped_at"] is None


def test_early_exit_stops_only_documents_whose_code_left_every_head(main_model):
    """StreamingLLM's window passes the needle quickly: those documents stop early, scored as
    misses, and the same documents read to the end are misses too."""
    model, tokenizer = main_model
    args = _args(exit_when="code-gone")
    family = _family(tokenizer, 700)
    catalyst = tokenizer.encode(bench.GENERIC_CATALYSTS["code_of"]).ids
    full = bench.read_family(model, tokenizer, "StreamingLLM", family, catalyst, args, False)
    fast = bench.read_family(model, tokenizer, "StreamingLLM", family, catalyst, args, True)
    stopped = [d for d, o in fast.items() if o["stopped_at"] is not None]
    assert stopped, "the needle at depth 0 must leave StreamingLLM's window"
    for depth in stopped:
        assert fast[depth]["stopped_at"] < fast[depth]["length"]
        assert fast[depth]["gone_at"] == full[depth]["gone_at"] == fast[depth]["stopped_at"]
        assert not fast[depth]["hit"] and not full[depth]["hit"]
    for depth in set(family) - set(stopped):
        assert fast[depth] == full[depth]


def test_grid_cells_count_hits_over_shared_families(main_model):
    model, tokenizer = main_model
    args = _args(lengths=[400], depths=[0.0, 1.0], n=2, policies=["SirLLM", "InfiniPot"],
                 read_to_end_up_to=4096, exit_when="code-gone")
    result = bench.grid(args, model, tokenizer)
    assert [(c["policy"], c["depth"]) for c in result["cells"]] == [
        ("SirLLM", 0.0), ("SirLLM", 1.0), ("InfiniPot", 0.0), ("InfiniPot", 1.0)]
    for cell in result["cells"]:
        assert cell["n"] == 2 and cell["read_to_end"] and cell["stopped_early"] == 0
        assert tuple(cell["interval"]) == pytest.approx(wilson_interval(cell["hits"], 2))
        assert cell["gone_and_hit"] <= cell["gone"] <= 2


def _grid_cell(policy, length, depth, hits, read_to_end, split=0, split_and_hit=0, n=30):
    return {"policy": policy, "length": length, "depth": depth, "n": n, "hits": hits,
            "accuracy": hits / n, "split": split, "split_and_hit": split_and_hit,
            "read_to_end": read_to_end}


def test_grid_section_reports_every_cell_the_stopping_check_and_the_bar():
    common = {"model": "main", "style": "code_of", "pot": 512, "keep": 256, "chunk": 128,
              "exit_when": "no-whole-code", "machine": "test", "date": "today"}
    short = dict(common, command="short", cells=[
        _grid_cell("InfiniPot", 4096, 0.0, 27, True, split=3),
        _grid_cell("InfiniPot", 4096, 1.0, 30, True),
        _grid_cell("SirLLM", 4096, 0.0, 20, True, split=9, split_and_hit=1)])
    long = dict(common, command="long", cells=[
        _grid_cell("InfiniPot", 32768, 0.0, 12, False, split=10),
        _grid_cell("InfiniPot", 4096, 0.0, 0, True)])        # measured twice: the first wins
    lines = bench.grid_section([short, long])
    text = "\n".join(lines)
    assert lines[0] == bench.GRID_SECTION
    assert "12 documents came to a distillation" in text and "1 of them were answered" in text
    assert "| InfiniPot | 4096 | 0.90 [0.74, 0.97] | 1.00 [0.89, 1.00] | 0.95 |" in text
    assert "--exit-when no-whole-code" in text and "Up to 4,096 tokens" in text
    assert "| InfiniPot | 32768 | 0.40 [0.25, 0.58] | - | 0.40 |" in text
    assert "| SirLLM | 4096 | 0.67 [0.49, 0.81] | - | 0.67 |" in text
    assert "NOT met in 1 of 3 cells (lowest 0.40)" in text  # 0.90 meets it
    assert "- `short`" in text and "- `long`" in text
