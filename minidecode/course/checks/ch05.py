"""Chapter 05 (multi-objective decoding): 05.1 the Pareto front with the correct dominance rule,
05.2 Chebyshev selection with weights, 05.3 find the bug: the common first attempt at "front,
then a weighted choice" whose dominance test forgets the strict part, 05.4 a short answer: when
does a weighted sum pick the knee of a front?"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from hypothesis import strategies as st

from minidecode.course.grading import Case, exercise
from minidecode.multi_objective import chebyshev_select, pareto_front, weighted_sum_select

# 05.1 random cases: small integer grids, so ties and duplicates are common.
_grid_points = st.integers(1, 3).flatmap(lambda m: st.lists(
    st.lists(st.integers(0, 3), min_size=m, max_size=m), min_size=1, max_size=10))


@exercise("05.1", reference=pareto_front, returns=list,
          strategy=_grid_points.map(lambda points: Case(torch.tensor(points, dtype=torch.float64))),
          max_examples=30)
def pareto_front_cases() -> Iterator[Case]:
    """A trade-off curve, a dominated point, duplicates, all equal, one objective, one point."""
    yield Case(torch.tensor([[3.0, 1.0], [1.0, 3.0], [2.0, 2.0], [1.0, 1.0]]))
    yield Case(torch.tensor([[3.0, 1.0], [3.0, 1.0], [2.0, 0.5]]),
               name="equal candidates do not dominate each other")
    yield Case(torch.tensor([[1.0, 1.0], [1.0, 1.0], [1.0, 1.0]]),
               name="all equal: all on the front")
    yield Case(torch.tensor([[2.0, 5.0], [2.0, 4.0]]),
               name="at least as good on all, strictly better on one, dominates")
    yield Case(torch.tensor([[0.3], [0.9], [0.9], [0.1]]))
    yield Case(torch.tensor([[1.0, 2.0, 3.0]]))
    generator = torch.Generator().manual_seed(5)
    for _ in range(3):
        yield Case(torch.randn(12, 3, generator=generator, dtype=torch.float64))


# 05.2 random cases: continuous scores (few ties) and non-negative weights, at least one > 0.
@st.composite
def _chebyshev_cases(draw: st.DrawFn) -> Case:
    n = draw(st.integers(min_value=1, max_value=8))
    m = draw(st.integers(min_value=1, max_value=4))
    value = st.floats(min_value=-5.0, max_value=5.0, allow_nan=False)
    scores = draw(st.lists(st.lists(value, min_size=m, max_size=m), min_size=n, max_size=n))
    weights = draw(st.lists(st.floats(min_value=0.0, max_value=1.0), min_size=m, max_size=m))
    weights[draw(st.integers(0, m - 1))] = draw(st.floats(min_value=0.1, max_value=1.0))
    return Case(torch.tensor(scores, dtype=torch.float64),
                torch.tensor(weights, dtype=torch.float64))


@exercise("05.2", reference=chebyshev_select, returns=int, strategy=_chebyshev_cases(),
          max_examples=25)
def chebyshev_select_cases() -> Iterator[Case]:
    """A knee point a weighted sum misses, corner weights, a constant objective, bad weights."""
    f64 = torch.float64
    knee = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.45, 0.45]], dtype=f64)
    yield Case(knee, torch.tensor([0.5, 0.5], dtype=f64), name="the knee a weighted sum misses")
    yield Case(knee, torch.tensor([1.0, 0.0], dtype=f64))            # a corner: objective 0's best
    yield Case(knee, torch.tensor([0.0, 3.0], dtype=f64))
    yield Case(torch.tensor([[-2.0, 7.0], [-1.0, 7.0], [-3.0, 7.0]], dtype=f64),
               torch.tensor([0.2, 0.8], dtype=f64), name="a constant objective becomes all 0")
    yield Case(torch.tensor([[10.0, 0.1], [0.0, 0.3], [5.0, 0.2]], dtype=f64),
               torch.tensor([0.5, 0.5], dtype=f64), name="scales differ: min-max normalise")
    yield Case(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]], dtype=f64),
               torch.tensor([0.5, 0.5], dtype=f64), name="a tie: the first candidate")
    yield Case(torch.tensor([[1.0, 0.0], [1.0, 0.5], [0.0, 1.0]], dtype=f64),
               torch.tensor([1.0, 0.0], dtype=f64),
               name="the 1e-6 * sum of gaps breaks a tie of the max term")
    generator = torch.Generator().manual_seed(6)
    for _ in range(3):
        yield Case(torch.randn(10, 3, generator=generator, dtype=f64),
                   torch.rand(3, generator=generator, dtype=f64) + 0.05)
    yield Case(knee, torch.tensor([-0.5, 1.0], dtype=f64), name="a negative weight: ValueError")
    yield Case(knee, torch.tensor([0.0, 0.0], dtype=f64), name="all weights zero: ValueError")


# 05.3: the front, then the weighted sum of the normalised scores over the front. The reference is
# weighted_sum_select: its maximum is always reached on the front (a candidate that dominates a
# maximiser scores at least as much), and its ties go to the front, then to the lowest index.
def choose_on_front(scores: torch.Tensor, weights: torch.Tensor) -> int:
    """The candidate the weighted sum picks among the Pareto front (:func:`weighted_sum_select`)."""
    return weighted_sum_select(scores, weights)


@st.composite
def _grid_choice_cases(draw: st.DrawFn) -> Case:
    m = draw(st.integers(1, 3))
    points = draw(st.lists(st.lists(st.integers(0, 3), min_size=m, max_size=m), min_size=1,
                           max_size=8))
    weights = draw(st.lists(st.sampled_from([0.0, 0.25, 0.5, 1.0]), min_size=m, max_size=m))
    weights[draw(st.integers(0, m - 1))] = 1.0
    return Case(torch.tensor(points, dtype=torch.float64),
                torch.tensor(weights, dtype=torch.float64))


@exercise("05.3", reference=choose_on_front, returns=int, strategy=_grid_choice_cases(),
          max_examples=30)
def choose_on_front_cases() -> Iterator[Case]:
    """Duplicated best candidates, identical candidates, a plain trade-off, bad weights."""
    f64 = torch.float64
    yield Case(torch.tensor([[3.0, 1.0], [3.0, 1.0], [1.0, 3.0]], dtype=f64),
               torch.tensor([0.7, 0.3], dtype=f64),
               name="equal candidates do not dominate each other: the duplicated best stays")
    yield Case(torch.tensor([[1.0, 1.0]] * 3, dtype=f64), torch.tensor([1.0, 1.0], dtype=f64),
               name="identical candidates: all on the front, the first is chosen")
    yield Case(torch.tensor([[3.0, 1.0], [1.0, 3.0], [2.0, 2.0], [1.0, 1.0]], dtype=f64),
               torch.tensor([0.7, 0.3], dtype=f64))
    yield Case(torch.tensor([[10.0, 0.1], [0.0, 0.3], [5.0, 0.2]], dtype=f64),
               torch.tensor([0.3, 0.7], dtype=f64), name="scales differ: min-max normalise")
    yield Case(torch.tensor([[2.0, 4.0], [2.0, 5.0]], dtype=f64),
               torch.tensor([1.0, 0.0], dtype=f64),
               name="a tie of the weighted sum goes to the candidate on the front")
    yield Case(torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=f64),
               torch.tensor([-0.5, 1.0], dtype=f64), name="a negative weight: ValueError")


def _first_knee_picked() -> str:
    """On the front [[1, 0], [0, 1], [x, x]] with weights (0.5, 0.5): for which x does the weighted
    sum pick the knee (candidate 2)? Read off a grid of x around 0.5, as a student would."""
    weights = torch.tensor([0.5, 0.5], dtype=torch.float64)
    picked = {}
    for x in (0.3, 0.45, 0.5, 0.55, 0.7):
        knee = torch.tensor([[1.0, 0.0], [0.0, 1.0], [x, x]], dtype=torch.float64)
        picked[x] = weighted_sum_select(knee, weights) == 2
    if not any(picked.values()):
        return "d"
    if picked[0.3]:
        return "a"
    return "c" if picked[0.5] else "b"


def answer_05_4() -> str:
    """The multiple-choice answer of 05.4, computed with the course's weighted_sum_select."""
    return _first_knee_picked()


@exercise("05.4", reference=answer_05_4, returns=str)
def answer_05_4_cases() -> Iterator[Case]:
    """One question, no arguments."""
    yield Case(name="when the weighted sum picks the knee")
