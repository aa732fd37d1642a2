"""Chapter 07 (speculative decoding): 07.1 the acceptance rule with the residual for one position,
07.2 the accepted-prefix length of greedy verification, 07.3 prompt-lookup candidate search."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from hypothesis import strategies as st

from minidecode.course.grading import Case, exercise
from minidecode.prompt_lookup import find_candidate_tokens
from minidecode.speculative import accepted_prefix_length, verify_position


def _probs(values: list[float]) -> torch.Tensor:
    return torch.softmax(torch.tensor(values, dtype=torch.float32), dim=-1)


# 07.1 random cases: two distributions over 2..10 tokens, a drafted token, a uniform number.
@st.composite
def _verify_cases(draw: st.DrawFn) -> Case:
    vocab = draw(st.integers(min_value=2, max_value=10))
    logit = st.floats(min_value=-6.0, max_value=6.0, allow_nan=False, width=32)
    p = _probs(draw(st.lists(logit, min_size=vocab, max_size=vocab)))
    q = _probs(draw(st.lists(logit, min_size=vocab, max_size=vocab)))
    token = draw(st.integers(min_value=0, max_value=vocab - 1))
    uniform = draw(st.floats(min_value=0.0, max_value=0.999, allow_nan=False))
    ratio = float(p[token] / q[token])
    if abs(uniform - ratio) < 1e-4:  # too close to the boundary to judge fairly
        uniform = min(0.999, ratio + 0.01) if ratio < 0.5 else max(0.0, ratio - 0.01)
    return Case(p, q, token, uniform)


@exercise("07.1", reference=verify_position, returns=torch.Tensor, strategy=_verify_cases(),
          max_examples=20, atol=1e-6)
def verify_position_cases() -> Iterator[Case]:
    """Accepted because p > q; accepted and rejected by the uniform; an impossible token; p == q."""
    p = torch.tensor([0.5, 0.3, 0.2])
    q = torch.tensor([0.2, 0.6, 0.2])
    yield Case(p, q, 0, 0.99, name="accept branch: p(x) >= q(x) is always accepted, one-hot")
    yield Case(p, q, 1, 0.3, name="accept branch: 0.3 < 0.3 / 0.6, one-hot")
    yield Case(p, q, 1, 0.7, name="reject branch: the residual norm(max(0, p - q))")
    yield Case(torch.tensor([0.0, 0.5, 0.5]), torch.tensor([0.5, 0.25, 0.25]), 0, 0.0,
               name="reject branch: p(x) = 0 is never accepted")
    yield Case(torch.tensor([0.1, 0.2, 0.3, 0.4]), torch.tensor([0.4, 0.3, 0.2, 0.1]), 0, 0.5,
               name="reject branch: the residual")
    yield Case(torch.tensor([0.25, 0.25, 0.5]), torch.tensor([0.25, 0.25, 0.5]), 2, 0.99,
               name="accept branch: p == q")
    yield Case(torch.tensor([0.25, 0.75]), torch.tensor([0.5, 0.5]), 0, 0.5,
               name="accept only when uniform < p(x) / q(x), strictly: 0.5 rejects")
    yield Case(torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64),
               torch.tensor([0.2, 0.6, 0.2], dtype=torch.float64), 0, 0.5,
               name="accept branch: the one-hot has the dtype of p (float64)")
    yield Case(torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64),
               torch.tensor([0.2, 0.6, 0.2], dtype=torch.float64), 1, 0.9,
               name="reject branch: the residual has the dtype of p (float64)")
    generator = torch.Generator().manual_seed(7)
    for _ in range(4):
        p = torch.softmax(torch.randn(12, generator=generator) * 2, dim=-1)
        q = torch.softmax(torch.randn(12, generator=generator) * 2, dim=-1)
        token = int(torch.argmax(q - p))           # where the draft overshoots: may be rejected
        yield Case(p, q, token, float(torch.rand(1, generator=generator)))


# 07.2 random cases: a draft of 1..8 tokens and a target choice that agrees for a while.
@st.composite
def _prefix_cases(draw: st.DrawFn) -> Case:
    gamma = draw(st.integers(min_value=1, max_value=8))
    draft = draw(st.lists(st.integers(0, 20), min_size=gamma, max_size=gamma))
    agree = draw(st.integers(min_value=0, max_value=gamma))
    rest = draw(st.lists(st.integers(0, 20), min_size=gamma + 1 - agree,
                         max_size=gamma + 1 - agree))
    return Case(torch.tensor(draft), torch.tensor(draft[:agree] + rest))


@exercise("07.2", reference=accepted_prefix_length, returns=int, strategy=_prefix_cases(),
          max_examples=20)
def accepted_prefix_length_cases() -> Iterator[Case]:
    """All accepted, none, some; a later match after a mismatch does not count; lists too."""
    yield Case(torch.tensor([4, 8, 15]), torch.tensor([4, 8, 15, 16]))
    yield Case(torch.tensor([4, 8, 15]), torch.tensor([5, 8, 15, 16]))
    yield Case(torch.tensor([4, 8, 15]), torch.tensor([4, 9, 15, 16]),
               name="stop at the first disagreement: the later match does not count")
    yield Case(torch.tensor([4, 8, 15, 16]), torch.tensor([4, 8, 15, 23, 42]))
    yield Case(torch.tensor([7]), torch.tensor([7, 7]))
    yield Case([1, 2, 3, 4], [1, 2, 0, 4, 5])


# 07.3 random cases: short texts over a tiny vocabulary, so n-grams repeat.
_prompt_lookup_cases = st.builds(
    Case,
    st.lists(st.integers(0, 4), min_size=1, max_size=16),
    st.integers(min_value=1, max_value=4),
    st.integers(min_value=1, max_value=5),
)


@exercise("07.3", reference=find_candidate_tokens, returns=list, strategy=_prompt_lookup_cases,
          max_examples=25)
def find_candidate_tokens_cases() -> Iterator[Case]:
    """Longest n-gram first, latest occurrence first, fewer tokens at the end, no match."""
    yield Case([5, 6, 7, 8, 5, 6], 2, 3)            # [5, 6] at 0 -> [7, 8, 5]
    yield Case([1, 2, 9, 1, 3, 9, 1, 2], 3, 2,      # [9,1,2] never; [1,2] at 0 -> [9, 1]
               name="the longest n-gram first")
    yield Case([4, 9, 4, 8, 4], 3, 1,               # the latest earlier 4 is at 2 -> [8]
               name="the latest earlier occurrence")
    yield Case([1, 2, 3, 1], 2, 5)                  # only [1] matches; 3 tokens follow it
    yield Case([1, 2, 3], 3, 4)                     # nothing repeats -> []
    yield Case([3, 3], 1, 5)                        # overlapping copy -> [3]
    yield Case([7], 2, 2)                           # a single token cannot match itself
    yield Case([2, 5, 2, 5, 2, 5], 4, 3)            # [2,5,2,5] at 0 -> [2, 5]
    yield Case([1, 1, 2, 1, 1, 1], 2, 2,            # [1,1] at 3 overlaps the suffix -> [1]
               name="an occurrence overlapping the suffix counts")
