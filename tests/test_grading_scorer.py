"""exercise(scorer=...): an open-ended exercise (the capstone) is decided by a scorer, not by
comparing with the reference case by case; a stub is "not implemented", an error is a failure."""

from __future__ import annotations

import pytest

from minidecode.course.grading import Case, exercise, run_check


def _reference(x):
    return x


def _scorer(fn):
    value = fn(3)
    return value >= 3, f"scored {value} (bar 3)"


@exercise("98.1", reference=_reference, name="answer", scorer=_scorer, points=2)
def _cases():
    yield Case(1)


def test_a_scored_exercise_passes_on_the_scorers_word(capsys: pytest.CaptureFixture[str]) -> None:
    result = run_check(_cases, lambda x: x + 1)  # differs from the reference, still passes
    assert result.passed and result.earned == 2
    assert result.report() == "✓ 98.1 answer: scored 4 (bar 3)"
    failed = run_check(_cases, lambda x: x - 1)
    assert failed.status == "failed" and failed.earned == 0 and "scored 2" in failed.detail


def test_a_scored_stub_is_not_implemented_and_an_error_fails() -> None:
    def stub(x):
        raise NotImplementedError()

    assert run_check(_cases, stub).status == "not implemented"
    broken = run_check(_cases, lambda x: 1 / 0)
    assert broken.status == "failed" and "ZeroDivisionError" in broken.detail
    assert run_check(_cases, 42).status == "wrong signature"
