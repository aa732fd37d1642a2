"""The capstone's scorer (minidecode/course/capstone.py): the reference stack gets its known score,
the plain greedy stack a lower one that fails exercise 12.1's bar, a stack that ignores the KV
budget fails too, and bad input gets a ValueError naming the parameter.

The pinned numbers are those of the shipped main and main-draft: when the shipped models change,
re-run the reference and update them (the ordering tests must hold for any model).
"""

from __future__ import annotations

import math

import pytest
import torch

from minidecode.course import capstone
from minidecode.course.capstone import (
    greedy_decode,
    held_out_prompts,
    reference_decode,
    score_formula,
    score_stack,
    wilson_interval,
)

# main + main-draft, default run (4 prompts per task, budget 128, seed 0). The reference stack
# reaches the ceiling: every answer right, speedup over the cap of 2, within the budget.
REFERENCE_SCORE = 100.0
GREEDY_SCORE = 56.94779


@pytest.fixture(scope="module")
def reference_report() -> capstone.CapstoneReport:
    return score_stack(reference_decode)


@pytest.fixture(scope="module")
def greedy_report() -> capstone.CapstoneReport:
    return score_stack(greedy_decode)


@pytest.fixture(scope="module")
def tokenizer():
    import minidecode

    return minidecode.load("main")[1]


# ----------------------------------------------------------------------------- the scores
@pytest.mark.slow
def test_the_reference_stack_gets_its_known_score(reference_report) -> None:
    report = reference_report
    assert report.score == pytest.approx(REFERENCE_SCORE, abs=1e-4)
    assert report.baseline_score == pytest.approx(GREEDY_SCORE, abs=1e-4)
    assert report.within_budget and report.peak_entries <= capstone.KV_BUDGET
    assert report.passed and report.score >= report.pass_bar
    assert report.task_quality("story")[0] == 1.0      # min-p: valid, no loop
    assert report.task_quality("story", base=True)[0] == 0.0  # greedy: every story loops
    assert report.task_quality("retrieval")[0] == 1.0  # InfiniPot kept the code within 128
    assert report.speedup > 1.5                          # the draft saves main-model calls
    assert [row.task for row in report.rows] == [t for t in capstone.TASKS for _ in range(4)]


@pytest.mark.slow
def test_the_reference_score_is_reproducible(reference_report) -> None:
    again = score_stack(reference_decode, tasks=("story",), n_per_task=2)
    first_two = [row.text for row in reference_report.task_rows("story")[:2]]
    assert [row.text for row in again.rows] == first_two


@pytest.mark.slow
def test_the_plain_greedy_stack_scores_lower_and_fails(reference_report, greedy_report) -> None:
    assert greedy_report.score < reference_report.score
    assert math.isclose(greedy_report.score, reference_report.baseline_score)  # same prompts
    assert greedy_report.speedup == 1.0
    assert not greedy_report.within_budget and not greedy_report.passed
    assert greedy_report.score < greedy_report.pass_bar


@pytest.mark.slow
def test_a_stack_over_the_kv_budget_fails_whatever_its_quality() -> None:
    def no_budget(model, prompt_ids, max_new_tokens, **kwargs):
        return reference_decode(model, prompt_ids, max_new_tokens, **{**kwargs, "kv_budget": None})

    report = score_stack(no_budget, tasks=("retrieval",), n_per_task=1)
    assert report.peak_entries > capstone.KV_BUDGET and not report.within_budget
    assert not report.passed
    within = score_stack(reference_decode, tasks=("retrieval",), n_per_task=1)
    assert within.peak_entries <= capstone.KV_BUDGET


def test_the_score_formula() -> None:
    assert score_formula(1.0, 1.0, 100, 128) == pytest.approx(100 * (0.6 + 0.1 + 0.2))
    assert score_formula(1.0, 5.0, 256, 128) == pytest.approx(100 * (0.6 + 0.2 + 0.1))
    assert score_formula(0.5, 2.0, 64, None) == pytest.approx(50.0)
    assert score_formula(0.0, 2.0, 0, 128) == 0.0


def test_wilson_interval() -> None:
    low, high = wilson_interval(4, 4)
    assert (round(low, 2), high) == (0.51, 1.0)
    low, high = wilson_interval(0, 10)
    assert low == 0.0 and round(high, 3) == 0.278
    with pytest.raises(ValueError, match="successes"):
        wilson_interval(5, 4)
    with pytest.raises(ValueError, match="n must be"):
        wilson_interval(0, 0)


# ----------------------------------------------------------------------------- the prompts
def test_held_out_prompts_are_fixed_and_nested(tokenizer) -> None:
    small = held_out_prompts(tokenizer, 2)
    large = held_out_prompts(tokenizer, 3)
    assert [p.task for p in small] == ["story"] * 2 + ["arithmetic"] * 2 + ["retrieval"] * 2
    assert small == held_out_prompts(tokenizer, 2)
    for task in capstone.TASKS:
        assert [p for p in small if p.task == task] == [p for p in large if p.task == task][:2]
    retrieval = [p for p in large if p.task == "retrieval"]
    assert all(len(p.ids) > capstone.KV_BUDGET for p in retrieval)  # the budget must bite
    assert all(p.ids[0] == tokenizer.token_to_id("<|endoftext|>") for p in large)
    assert all(p.answer.isdigit() for p in large if p.task != "story")


# ----------------------------------------------------------------------------- bad input
def _fine(model, prompt_ids, max_new_tokens, *, draft=None, kv_budget=None, task="story",
          stop_ids=frozenset(), generator=None):
    return []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kv_budget": 8}, "kv_budget must be an int >= 16"),
        ({"kv_budget": 64.0}, "kv_budget must be an int"),
        ({"n_per_task": 0}, "n_per_task must be an int >= 1"),
        ({"tasks": ("poem",)}, "tasks must be a non-empty subset"),
        ({"tasks": ()}, "tasks must be a non-empty subset"),
        ({"seed": -1}, "seed must be an int >= 0"),
        ({"model": torch.nn.Linear(2, 2), "tokenizer": None}, "tokenizer must be given"),
    ],
)
def test_bad_arguments_are_value_errors(kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        score_stack(_fine, **kwargs)


def test_a_decode_that_is_not_a_stack_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="decode must be a function"):
        score_stack(42)
    with pytest.raises(ValueError, match=r"decode must accept decode\(model, prompt_ids"):
        score_stack(lambda model, prompt_ids: [])
    with pytest.raises(ValueError, match="n_per_task must be an int >= 1"):
        held_out_prompts(None, 0)


@pytest.mark.parametrize(
    ("returned", "message"),
    [
        ("The end.", "list of ints or a 1-d"),
        ([1.5, 2.0], "list of ints or a 1-d"),
        (torch.zeros(2, 3, dtype=torch.long), "shape"),
        (torch.zeros(3), "dtype"),
        ([10**6], "outside"),
    ],
)
def test_a_stack_that_returns_no_token_ids_is_a_value_error(returned, message) -> None:
    def bad(model, prompt_ids, max_new_tokens, **kwargs):
        return returned

    with pytest.raises(ValueError, match=message):
        score_stack(bad, tasks=("retrieval",), n_per_task=1)


def test_returned_ids_are_cut_after_the_first_stop_and_at_the_limit() -> None:
    cut = capstone._as_token_list
    assert cut([5, 6, 7, 8], 3, frozenset({9}), 100) == [5, 6, 7]
    assert cut(torch.tensor([[5, 9, 7]]), 10, frozenset({9}), 100) == [5, 9]
    assert cut((), 10, frozenset(), 100) == []
