"""Chapter 06 (semantic uncertainty): 06.1 discrete semantic entropy from cluster ids, 06.2 AUROC
from scores and labels without sklearn, 06.3 greedy clustering from a pairwise-equivalence
function."""

from __future__ import annotations

from collections.abc import Iterator

from hypothesis import strategies as st

from minidecode.course.grading import Case, exercise
from minidecode.semantic_uncertainty import auroc, cluster_greedy, discrete_semantic_entropy

# 06.1 random cases: 2..12 samples falling into up to 6 clusters.
_cluster_id_cases = st.builds(Case, st.lists(st.integers(0, 5), min_size=2, max_size=12))


@exercise("06.1", reference=discrete_semantic_entropy, returns=float,
          strategy=_cluster_id_cases, max_examples=25, atol=1e-9)
def discrete_semantic_entropy_cases() -> Iterator[Case]:
    """All agree (0), all differ (log N), halves, uneven sizes, ids that are not 0..k-1, too few."""
    yield Case([0, 0, 0, 0, 0])
    yield Case([0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
    yield Case([0, 0, 1, 1])
    yield Case([2, 2, 2, 0, 1, 2, 2, 0, 2, 2])
    yield Case([7, 3, 7])
    yield Case([0], name="fewer than 2 samples: ValueError")


# 06.2 random cases: 2..30 scores from a small grid (so ties happen), both labels present.
@st.composite
def _auroc_cases(draw: st.DrawFn) -> Case:
    n = draw(st.integers(min_value=2, max_value=30))
    scores = draw(st.lists(st.sampled_from([0.0, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0]),
                           min_size=n, max_size=n))
    labels = draw(st.lists(st.integers(0, 1), min_size=n - 2, max_size=n - 2))
    return Case(scores, [0, 1] + labels)


@exercise("06.2", reference=auroc, returns=float, strategy=_auroc_cases(), max_examples=30,
          atol=1e-9)
def auroc_cases() -> Iterator[Case]:
    """Perfect, reversed, chance, ties counted one half, a hand-sized example, one class only."""
    yield Case([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1])            # 3 of 4 pairs ordered: 0.75
    yield Case([0.9, 0.8, 0.2, 0.1], [0, 0, 1, 1])             # 0
    yield Case([1.0, 2.0, 3.0, 4.0], [0, 1, 0, 1])             # 0.75
    yield Case([0.5, 0.5, 0.5, 0.5], [0, 1, 1, 0], name="every pair tied: a tie counts 1/2")
    yield Case([0.0, 1.0, 1.0, 2.0, 0.0], [0, 1, 0, 1, 1], name="ties between the classes")
    yield Case([0.3, 0.7], [1, 1], name="no right answer (label 0): ValueError")
    yield Case([0.3, 0.7], [0, 0], name="no wrong answer (label 1): ValueError")


def within_one(a: int, b: int) -> bool:
    """Equivalent when the numbers differ by at most 1 (NOT transitive: 1 ~ 2 ~ 3, 1 !~ 3)."""
    return abs(a - b) <= 1


def extends(representative: str, item: str) -> bool:
    """Equivalent when ``item`` starts with ``representative`` (NOT symmetric: the order of the
    arguments matters)."""
    return item.startswith(representative)


def share_a_word(a: str, b: str) -> bool:
    """Equivalent when the two answers have a word in common (not transitive either)."""
    return bool(set(a.lower().split()) & set(b.lower().split()))


_greedy_cases = st.builds(Case, st.lists(st.integers(0, 12), min_size=0, max_size=10),
                          st.just(within_one))


@exercise("06.3", reference=cluster_greedy, returns=list, strategy=_greedy_cases,
          max_examples=30)
def cluster_greedy_cases() -> Iterator[Case]:
    """Chains that a transitive closure would merge, repeats, strings, and the empty list."""
    yield Case([1, 2, 3, 4, 10], within_one,
               name="compare with the representative only: [0, 0, 1, 1, 2]")
    yield Case([5, 5, 5], within_one)
    yield Case([3, 9, 4, 8, 2, 1], within_one)
    yield Case([2, 4, 3], within_one, name="join the first matching cluster")
    yield Case(["ab", "a", "abc", "b"], extends,
               name="call equivalent(representative, item), in that order")
    yield Case(["in the kitchen", "tom kitchen", "tom garden", "the park"], share_a_word)
    yield Case([], within_one)
