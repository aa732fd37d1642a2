"""Chapter 03 (temperature scheduling): 03.1 EDT's temperature, 03.2 llama.cpp's dynamic
temperature."""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from hypothesis import strategies as st

from minidecode import temperature
from minidecode.course.grading import Case, exercise

_entropies = st.lists(st.floats(min_value=0.0, max_value=8.0, width=32), min_size=1,
                      max_size=6).map(lambda values: torch.tensor(values, dtype=torch.float32))


def edt_temperature(entropy, t0, n, theta):
    """The course's EDT temperature (see :func:`minidecode.temperature.edt_temperature`)."""
    return temperature.edt_temperature(entropy, t0, n, theta)


def dynamic_temperature(entropy, n_candidates, min_temperature, max_temperature, exponent):
    """llama.cpp's rule (see :func:`minidecode.temperature.dynamic_temperature`)."""
    return temperature.dynamic_temperature(entropy, n_candidates, min_temperature,
                                           max_temperature, exponent)


@exercise(
    "03.1",
    reference=edt_temperature,
    returns=torch.Tensor,
    strategy=st.builds(Case, _entropies, st.floats(0.1, 2.0), st.floats(0.05, 0.95),
                       st.floats(0.05, 3.0)),
    max_examples=20,
)
def edt_cases() -> Iterator[Case]:
    """The paper's N = 0.8, zero entropy, large entropy, bad arguments."""
    yield Case(torch.tensor([0.5, 1.0, 2.0, 4.0]), 1.0, 0.8, 1.0)
    yield Case(torch.tensor([1.0]), 0.7, 0.8, 0.5)
    yield Case(torch.tensor([0.0, 3.0]), 1.0, 0.8, 1.0, name="entropy 0 gives temperature 0")
    yield Case(torch.tensor([[50.0, 2.0], [0.1, 1.5]]), 1.2, 0.5, 2.0, name="any shape")
    yield Case(torch.tensor([1.0]), 0.0, 0.8, 1.0, name="t0 must be > 0: ValueError")
    yield Case(torch.tensor([1.0]), 1.0, 1.0, 1.0, name="n must be in (0, 1): ValueError")
    yield Case(torch.tensor([1.0]), 1.0, 0.0, 1.0, name="n must be in (0, 1): ValueError")
    yield Case(torch.tensor([1.0]), 1.0, 0.8, 0.0, name="theta must be > 0: ValueError")


@exercise(
    "03.2",
    reference=dynamic_temperature,
    returns=torch.Tensor,
    strategy=st.builds(
        lambda entropy, count, low, spread, exponent: Case(
            entropy.clamp(max=math.log(count)), torch.full_like(entropy, count, dtype=torch.long),
            low, low + spread, exponent),
        _entropies, st.integers(1, 3000), st.floats(0.0, 1.0), st.floats(0.0, 2.0),
        st.floats(0.25, 4.0),
    ),
    max_examples=20,
)
def dynamic_temperature_cases() -> Iterator[Case]:
    """Min, middle and max entropy, one candidate, an exponent, bad arguments."""
    full = math.log(1000)
    counts = torch.tensor([1000, 1000, 1000])
    yield Case(torch.tensor([0.0, full / 2, full]), counts, 0.5, 1.5, 1.0)
    yield Case(torch.tensor([0.0, full / 2, full]), counts, 0.5, 1.5, 2.0)
    yield Case(torch.tensor([0.5, 0.0]), torch.tensor([2, 1]), 0.0, 2.0, 1.0,
               name="one candidate: log n = 0, the fraction is 0")
    yield Case(torch.tensor([3.0, 0.2]), torch.tensor([4, 4]), 0.5, 1.5, 1.0,
               name="the fraction H / log n is clamped to [0, 1]")
    yield Case(torch.tensor([1.0]), torch.tensor([10]), 1.0, 1.0, 1.0,
               name="min_temperature = max_temperature: a fixed T")
    yield Case(torch.tensor([1.0]), torch.tensor([10]), -0.5, 1.0, 1.0,
               name="min_temperature must be >= 0: ValueError")
    yield Case(torch.tensor([1.0]), torch.tensor([10]), 1.0, 0.5, 1.0,
               name="min_temperature must be <= max_temperature: ValueError")
    yield Case(torch.tensor([1.0]), torch.tensor([10]), 0.5, 1.0, 0.0,
               name="exponent must be > 0: ValueError")
