"""Shared test set-up: repository paths, and the `gpu` marker's automatic skip."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent

# Plots in tests never need a window.
os.environ.setdefault("MPLBACKEND", "Agg")


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if any(item.get_closest_marker("gpu") for item in items) and not _cuda_available():
        skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU (torch.cuda.is_available() is False)")
        for item in items:
            if item.get_closest_marker("gpu"):
                item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository's top folder (holds pyproject.toml, notebooks/, solutions/ ...)."""
    return REPO_ROOT


@pytest.fixture
def check_rejects(capsys: pytest.CaptureFixture[str]):
    """``check_rejects(exercise_id, name, wrong)`` asserts that an exercise's check is real: it
    fails on the unsolved stub (saying so), fails on ``wrong`` (printing yours vs expected) and
    passes the course's own reference."""
    from minidecode.course.grading import check, get_exercise

    def assert_rejects(exercise_id: str, name: str, wrong) -> None:
        exercise = get_exercise(exercise_id)
        assert exercise.name == name
        namespace: dict = {}
        exec(f"def {name}({', '.join(exercise.parameters)}):\n    raise NotImplementedError()",
             namespace)
        assert check(exercise_id, namespace[name]) is False
        assert "not implemented yet" in capsys.readouterr().out
        assert check(exercise_id, wrong) is False
        out = capsys.readouterr().out
        assert "failed" in out and "yours:" in out and "expected:" in out
        assert check(exercise_id, exercise.reference) is True

    return assert_rejects
