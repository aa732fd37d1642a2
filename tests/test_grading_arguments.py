"""The check on arguments that are not plain values: a model (compared by its weights) and an
object stateful by design (a cache policy, which ``stateful=`` lets the call change)."""

from __future__ import annotations

import pytest
import torch

from minidecode.course.grading import Case, exercise, run_check


class _Counter:
    """Remembers how often it was called: stateful by design."""

    def __init__(self) -> None:
        self.calls = 0

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Counter) and other.calls == self.calls


def _scaled(layer, counter):
    counter.calls += 1
    return layer(torch.ones(1, 2))


def _cases():
    yield Case(torch.nn.Linear(2, 3).requires_grad_(False), _Counter())


def test_a_model_argument_left_alone_passes_and_a_changed_one_fails():
    torch.manual_seed(0)
    ex = exercise("98.1", reference=_scaled, stateful=("counter",))(_cases)
    assert run_check(ex, _scaled).passed

    def retrains(layer, counter):
        layer.weight.add_(1.0)
        return _scaled(layer, counter) - torch.ones(2) @ torch.ones(2, 3)

    result = run_check(ex, retrains)
    assert not result.passed
    assert "changed its argument layer" in result.detail and "weights differ" in result.detail
    assert "torch.nn.modules.linear.Linear with 9 parameters" in result.detail


def test_only_the_declared_stateful_argument_may_change():
    ex = exercise("98.2", reference=_scaled)(_cases)
    result = run_check(ex, _scaled)
    assert not result.passed and "changed its argument counter" in result.detail


def test_stateful_must_name_a_parameter():
    with pytest.raises(ValueError, match="stateful"):
        exercise("98.3", reference=_scaled, stateful=("policy",))
