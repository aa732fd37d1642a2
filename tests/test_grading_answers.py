"""exercise(answers=...): more of the package's code counts as the course's answer, so a notebook
function that runs it (a whole decode loop handed to ``decode_steps``) scores 0, "delegates"."""

from __future__ import annotations

import torch

from minidecode import generate
from minidecode.adaptive import AdaptiveDecoding
from minidecode.course.grading import Case, _answer_codes, _grade_one, exercise

CELL = "/tmp/ipykernel_4242/7654321.py"  # what ipykernel names a cell's code


def _argmax(scores):
    """The reference: a thin wrapper that calls no package function itself."""
    return scores.argmax(dim=-1)


def _cases():
    yield Case(torch.tensor([[0.0, 2.0, 1.0], [3.0, 0.0, 1.0]]))


ARGMAX = exercise("98.1", reference=_argmax, name="argmax_rows",
                  answers=(generate.draw, AdaptiveDecoding))(_cases)


def _cell_function(source: str):
    namespace = {"__name__": "__main__", "torch": torch, "generate": generate,
                 "AdaptiveDecoding": AdaptiveDecoding}
    exec(compile(source, CELL, "exec"), namespace)
    return namespace["argmax_rows"]


def test_own_work_passes():
    fn = _cell_function("def argmax_rows(scores):\n    return scores.max(dim=-1).indices\n")
    result = _grade_one(ARGMAX, fn, {CELL})
    assert (result.status, result.earned) == ("passed", 1), result.detail


def test_running_a_listed_function_delegates():
    fn = _cell_function("def argmax_rows(scores):\n    return generate.draw(scores)\n")
    result = _grade_one(ARGMAX, fn, {CELL})
    assert (result.status, result.earned) == ("delegates", 0)
    assert result.detail.startswith("argmax_rows runs minidecode.generate.draw, the course's own")


def test_running_a_method_of_a_listed_class_delegates():
    fn = _cell_function("def argmax_rows(scores):\n"
                        "    kept = AdaptiveDecoding(0.5)(None, scores)\n"
                        "    return kept.argmax(dim=-1)\n")
    result = _grade_one(ARGMAX, fn, {CELL})
    assert result.status == "delegates"
    assert "minidecode.adaptive.AdaptiveDecoding." in result.detail


def test_a_class_contributes_its_own_methods_not_generated_ones():
    names = set(_answer_codes(AdaptiveDecoding).values())
    assert "minidecode.adaptive.AdaptiveDecoding.__call__" in names
    assert not any(name.endswith(("__repr__", "__eq__", "__init__")) for name in names)
    # a decorated function counts by its own code, not the decorator's wrapper
    decode_steps = _answer_codes(generate.decode_steps)
    assert list(decode_steps.values()) == ["minidecode.generate.decode_steps"]
