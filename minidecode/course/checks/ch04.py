"""Chapter 04 (chain-of-thought decoding): 04.1 the answer confidence Delta of a path, 04.2 the
span of the last number in a path."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from hypothesis import strategies as st

from minidecode.cot import answer_delta, last_number_span
from minidecode.course.grading import Case, exercise


# 04.1 random cases: a path of 1..8 positions over 2..12 tokens and an answer span inside it.
@st.composite
def _delta_cases(draw: st.DrawFn) -> Case:
    length = draw(st.integers(min_value=1, max_value=8))
    vocab = draw(st.integers(min_value=2, max_value=12))
    logit = st.floats(min_value=-5.0, max_value=5.0, allow_nan=False, width=32)
    logits = draw(st.lists(st.lists(logit, min_size=vocab, max_size=vocab), min_size=length,
                           max_size=length))
    start = draw(st.integers(min_value=0, max_value=length - 1))
    end = draw(st.integers(min_value=start + 1, max_value=length))
    return Case(torch.softmax(torch.tensor(logits) * 2, dim=-1), (start, end))


@exercise("04.1", reference=answer_delta, returns=float, strategy=_delta_cases(), max_examples=20,
          atol=1e-5)
def answer_delta_cases() -> Iterator[Case]:
    """A one-token answer, a two-token answer after confident reasoning, a flat row, bad spans."""
    probs = torch.tensor([[0.97, 0.02, 0.01], [0.5, 0.3, 0.2], [0.4, 0.4, 0.2], [0.1, 0.2, 0.7]])
    yield Case(probs, (3, 4))                      # only the last row: 0.7 - 0.2
    yield Case(probs, (1, 3), name="reads only the answer's rows (1 and 2, not row 0)")
    yield Case(probs, (0, 4))
    yield Case(probs, (2, 3))                      # a tie at the top: Delta 0
    yield Case(torch.tensor([[1.0, 0.0]]), (0, 1))
    generator = torch.Generator().manual_seed(4)
    for _ in range(3):
        rows = torch.softmax(torch.randn(6, 20, generator=generator) * 3, dim=-1)
        yield Case(rows, (2, 5))
    yield Case(probs, (2, 2), name="start < end: ValueError for an empty span")
    yield Case(probs, (3, 5), name="end <= path_len: ValueError past the end")
    yield Case(probs, (-1, 2), name="0 <= start: ValueError for a negative start")


# 04.2 random cases: pieces drawn from words, numbers with a leading space and bare digits.
_pieces = st.lists(st.sampled_from([" He", " has", " so", " =", " +", ".", ",", " The", " answer",
                                    " is", " 7", " 12", "3", "0", " 45", "7.", " x1"]),
                   max_size=12)


@exercise("04.2", reference=last_number_span, returns=(tuple, type(None)),
          strategy=st.builds(Case, _pieces), max_examples=30)
def last_number_span_cases() -> Iterator[Case]:
    """The last of several numbers, a number over two tokens, no number, a bare first piece."""
    yield Case([" He", " has", " 3", ",", " so", " 3", " +", " 4", " =", " 7", "."])
    yield Case([" The", " answer", " is", " 10", "0", "."])          # " 10" + "0" = 100
    yield Case([" so", " 5", " +", " 9", " =", " 14", ".", " The", " answer", " is", " 14"])
    yield Case([" no", " numbers", " here"])
    yield Case([])
    yield Case(["7"])
    yield Case([" 12", " 5"], name="a piece with a space starts a new number")
    yield Case([" it", " costs", " 14.", " ok"], name="\"14.\" mixes digits with a dot: no number")
    yield Case(["1", "2", "3"], name="one number over 3 pieces")
