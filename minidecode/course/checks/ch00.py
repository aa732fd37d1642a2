"""Chapter 00 (the tour): exercise 00.1, softmax with temperature."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from hypothesis import strategies as st

from minidecode.course.grading import Case, exercise
from minidecode.course.tour import softmax_with_temperature

# Random cases: 1 to 12 float32 logits in [-30, 30] and a temperature in [0.05, 20].
_logits = st.lists(
    st.floats(min_value=-30.0, max_value=30.0, allow_nan=False, width=32), min_size=1, max_size=12
).map(lambda values: torch.tensor(values, dtype=torch.float32))
_temperature = st.floats(min_value=0.05, max_value=20.0, allow_nan=False)
_random_cases = st.builds(Case, _logits, _temperature)


@exercise(
    "00.1",
    reference=softmax_with_temperature,
    returns=torch.Tensor,
    strategy=_random_cases,
    max_examples=14,
    atol=1e-6,
)
def softmax_with_temperature_cases() -> Iterator[Case]:
    """Hand-picked cases first: plain, sharp, flat, batched, extreme logits, bad temperatures."""
    generator = torch.Generator().manual_seed(0)
    yield Case(torch.tensor([2.0, 1.0, 0.1]), 1.0)
    yield Case(torch.tensor([2.0, 1.0, 0.1]), 0.5)
    yield Case(torch.tensor([2.0, 1.0, 0.1]), 4.0)
    yield Case(torch.tensor([3.0]), 0.7)
    yield Case(torch.zeros(5), 1.3)
    yield Case(torch.randn(8, generator=generator), 0.8)
    yield Case(torch.randn(3, 6, generator=generator), 1.5,
               name="a batch: softmax over the last dim")
    yield Case(torch.tensor([1000.0, 0.0, -1000.0]), 1.0,
               name="numerical stability: naive exp overflows to inf, then nan")
    yield Case(torch.tensor([5.0, 4.0]), 0.01)  # tiny temperature: almost greedy
    yield Case(torch.tensor([1.0, 2.0]), 0.0, name="temperature must be > 0: ValueError")
    yield Case(torch.tensor([1.0, 2.0]), -1.0, name="temperature must be > 0: ValueError")
    yield Case(torch.tensor([[0.5, -1.0, 2.0]], dtype=torch.float64), 0.9,
               name="the dtype of logits is kept (float64)")
