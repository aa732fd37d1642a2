"""Chapter 01 (the decode loop): exercise 01.1 min-p filtering, 01.2 tie-safe nucleus filtering."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from hypothesis import strategies as st

from minidecode import sampling
from minidecode.course.grading import Case, exercise

INF = float("inf")

# Random cases: 1 to 12 logits, some "round" (ties), some -inf, at least one finite.
_value = st.one_of(
    st.floats(min_value=-10.0, max_value=10.0, allow_nan=False, width=32),
    st.sampled_from([0.0, 1.0, -2.0]),
    st.just(-INF),
)
_logits = st.lists(_value, min_size=1, max_size=12).map(
    lambda values: torch.tensor(values if any(v > -INF for v in values) else [*values, 0.0],
                                dtype=torch.float32)
)


def min_p_filter(logits, min_p):
    """The course's min-p filter (see :func:`minidecode.sampling.min_p_filter`)."""
    return sampling.min_p_filter(logits, min_p)


def top_p_filter(logits, top_p):
    """The course's tie-safe nucleus filter (see :func:`minidecode.sampling.top_p_filter`)."""
    return sampling.top_p_filter(logits, top_p)


@exercise(
    "01.1",
    reference=min_p_filter,
    returns=torch.Tensor,
    strategy=st.builds(Case, _logits, st.floats(min_value=0.0, max_value=1.0)),
    max_examples=20,
)
def min_p_cases() -> Iterator[Case]:
    """Plain, batched, with -inf, the two ends of the range, and bad min_p."""
    generator = torch.Generator().manual_seed(1)
    yield Case(torch.tensor([2.0, 1.0, 0.0, -1.0]), 0.3)
    yield Case(torch.tensor([2.0, 1.0, 0.0, -1.0]), 0.05)
    yield Case(torch.tensor([3.0, 3.0, 0.5, -4.0]), 0.5, name="a tie at the top")
    yield Case(torch.tensor([1.0, -INF, 0.5, -INF]), 0.7, name="already filtered (-inf) tokens")
    yield Case(torch.randn(3, 10, generator=generator), 0.2,
               name="a batch: each row against its own top probability")
    yield Case(torch.tensor([0.5, 0.2, 0.1]), 0.0, name="min_p = 0 keeps everything")
    yield Case(torch.tensor([0.5, 0.2, 0.1]), 1.0,
               name="min_p = 1 keeps the top: below means strictly below")
    yield Case(torch.tensor([0.5, 0.2]), -0.1, name="min_p must be in [0, 1]: ValueError")
    yield Case(torch.tensor([0.5, 0.2]), 1.5, name="min_p must be in [0, 1]: ValueError")
    yield Case(torch.tensor([[2.0, 0.5, -1.0], [0.0, 0.1, -3.0]], dtype=torch.float64), 0.3,
               name="the dtype of logits is kept (float64)")


@exercise(
    "01.2",
    reference=top_p_filter,
    returns=torch.Tensor,
    strategy=st.builds(Case, _logits, st.floats(min_value=0.05, max_value=1.0)),
    max_examples=20,
)
def top_p_cases() -> Iterator[Case]:
    """Plain, batched, ties at the boundary, -inf, top_p = 1 and bad top_p."""
    generator = torch.Generator().manual_seed(2)
    yield Case(torch.tensor([3.0, 2.0, 1.0, 0.0, -1.0]), 0.5)
    yield Case(torch.tensor([3.0, 2.0, 1.0, 0.0, -1.0]), 0.9,
               name="the mass strictly before a token decides (not including it)")
    yield Case(torch.tensor([5.0, 0.0, 0.0]), 0.5)                  # the top token alone is enough
    yield Case(torch.tensor([1.0, 1.0, 1.0, 1.0]), 0.5, name="uniform: the tie keeps all")
    yield Case(torch.tensor([2.0, 1.0, 1.0, -3.0]), 0.75,
               name="a tie at the boundary: ties are never split")
    yield Case(torch.tensor([0.0, -INF, 1.0, -INF]), 0.6, name="already filtered (-inf) tokens")
    yield Case(torch.randn(4, 9, generator=generator), 0.8, name="a batch: each row alone")
    yield Case(torch.tensor([0.3, 0.1, -0.2]), 1.0, name="top_p = 1 keeps everything")
    yield Case(torch.tensor([0.3, 0.1]), 0.0, name="top_p must be in (0, 1]: ValueError")
    yield Case(torch.tensor([0.3, 0.1]), 1.2, name="top_p must be in (0, 1]: ValueError")
    yield Case(torch.tensor([[2.0, 1.0, 0.0], [0.0, 0.0, -1.0]], dtype=torch.float64), 0.6,
               name="the dtype of logits is kept (float64)")
