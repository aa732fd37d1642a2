"""Chapter 02 (adaptive decoding): 02.1 stable entropy and varentropy, 02.2 the candidate count of
adaptive decoding (Zhu et al. 2024)."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from hypothesis import strategies as st

from minidecode import adaptive
from minidecode import entropy as entropy_module
from minidecode.course.grading import Case, exercise

INF = float("inf")

_value = st.one_of(
    st.floats(min_value=-10.0, max_value=10.0, allow_nan=False, width=32),
    st.sampled_from([0.0, 1.0]),
    st.just(-INF),
)


def _logits(min_size: int):
    return st.lists(_value, min_size=min_size, max_size=16).map(
        lambda values: torch.tensor(values if any(v > -INF for v in values) else [*values, 0.0],
                                    dtype=torch.float32)
    )


def entropy_varentropy(logits):
    """The course's entropy and varentropy (see :func:`minidecode.entropy.entropy_varentropy`)."""
    return entropy_module.entropy_varentropy(logits)


def adaptive_candidate_count(logits, epsilon):
    """The course's rule (see :func:`minidecode.adaptive.adaptive_candidate_count`)."""
    return adaptive.adaptive_candidate_count(logits, epsilon)


@exercise(
    "02.1",
    reference=entropy_varentropy,
    returns=tuple,
    strategy=st.builds(Case, _logits(1)),
    max_examples=20,
)
def entropy_varentropy_cases() -> Iterator[Case]:
    """Uniform, peaked, -inf entries, float16 input, a batch."""
    generator = torch.Generator().manual_seed(3)
    yield Case(torch.zeros(4))                                       # log 4 and 0
    yield Case(torch.tensor([2.0, 1.0, 0.0]))
    yield Case(torch.tensor([30.0, 0.0, 0.0]))                       # almost certain
    yield Case(torch.tensor([0.0, 0.0, -INF, -INF]), name="-inf entries contribute 0, not nan")
    yield Case(torch.tensor([1.0, 0.0, -INF], dtype=torch.float16),
               name="float16 in, float32 out")
    yield Case(torch.randn(3, 7, generator=generator) * 2, name="a batch: (3,) and (3,)")


def _gain_dips_then_rises() -> torch.Tensor:
    """Logits whose gains are Delta_2 = 0.37, Delta_3 = 0.0095 and Delta_4 = 0.019: with epsilon
    1e-2 the count is 2, although Delta_4 > epsilon again."""
    return torch.tensor([3.0, 2.9, 0.0, -0.1, -9.0, -9.0, -9.0, -9.0, -9.0, -9.0])


@exercise(
    "02.2",
    reference=adaptive_candidate_count,
    returns=torch.Tensor,
    strategy=st.builds(Case, _logits(2), st.sampled_from([1e-3, 1e-2, 3e-2])),
    max_examples=20,
)
def adaptive_count_cases() -> Iterator[Case]:
    """Peaked, flat head, uniform, -inf, a batch, bad epsilon."""
    generator = torch.Generator().manual_seed(4)
    flat_head = torch.full((40,), -6.0)
    flat_head[:6] = torch.tensor([2.0, 1.9, 1.8, 1.6, 1.5, 1.4])
    yield Case(torch.tensor([9.0, 0.0, 0.0, 0.0, 0.0]), 1e-3)      # one clear winner
    yield Case(flat_head, 1e-3)                                      # six good options
    yield Case(flat_head, 2e-2)                                      # a larger epsilon keeps fewer
    yield Case(torch.tensor([0.0, -INF, -INF, -INF]), 1e-3)         # one-hot
    yield Case(torch.zeros(8), 1e-3, name="uniform: the count is 1")
    yield Case(torch.randn(3, 30, generator=generator) * 2, 1e-3, name="a batch: shape (3,)")
    yield Case(_gain_dips_then_rises(), 1e-2,
               name="the count stops at the first k where the gain is <= epsilon")
    yield Case(torch.tensor([1.0, 0.0]), 0.0, name="epsilon must be in (0, 1): ValueError")
    yield Case(torch.tensor([1.0, 0.0]), 1.0, name="epsilon must be in (0, 1): ValueError")
