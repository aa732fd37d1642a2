"""Chapter 06 (semantic uncertainty): 06.1 discrete semantic entropy from cluster ids, 06.2 AUROC
from scores and labels without sklearn, 06.3 greedy clustering from a pairwise-equivalence
function, 06.4 semantic entropy of sampled answers end to end (cluster, weight by likelihood,
entropy), 06.5 a short answer: how many fewer meanings at a low temperature."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Any

import torch
from hypothesis import strategies as st

from minidecode.course.grading import Case, exercise
from minidecode.semantic_uncertainty import (
    ExactMatchClusterer,
    auroc,
    cluster_greedy,
    cluster_log_probs,
    discrete_semantic_entropy,
    extract_answer,
    held_out_questions,
    sample_answers,
    semantic_entropy,
    sequence_log_likelihood,
)

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


# ------------------------------------------------------------------------------------- 06.4-06.5
def exact_match(question: str, answers: list[str]) -> list[int]:
    """A clusterer: same cluster when the normalised answers are identical."""
    return ExactMatchClusterer()(question, answers)


def place_named(question: str, answers: list[str]) -> list[int]:
    """A clusterer: same cluster when the answers name the same place ("He is in the park." and
    "The park." agree), the task's own answer parser."""
    return ExactMatchClusterer(lambda text: extract_answer("qa", text) or text)(question, answers)


def first_letter(question: str, answers: list[str]) -> list[int]:
    """A clusterer for the random cases: same cluster when the answers start with the same letter
    (ids numbered by first appearance, as every clusterer returns them)."""
    return cluster_greedy([answer[0].lower() for answer in answers], lambda a, b: a == b)


def _cluster(clusterer: Any, question: str, texts: list[str]) -> list[int]:
    return list(clusterer(question, texts))


def _log_likelihoods(log_probs: torch.Tensor, mask: torch.Tensor,
                     length_normalised: bool) -> torch.Tensor:
    return sequence_log_likelihood(log_probs, mask, length_normalised)


def semantic_entropy_from_samples(question: str, texts: list[str], log_probs: torch.Tensor,
                                  mask: torch.Tensor, clusterer: Any,
                                  length_normalised: bool) -> dict[str, Any]:
    """Semantic entropy of N sampled answers (Kuhn et al. 2023, the weighted estimator): cluster
    them, p(C) from the sequence likelihoods (per token with ``length_normalised``), SE."""
    ids = _cluster(clusterer, question, texts)
    log_likelihoods = _log_likelihoods(log_probs, mask, length_normalised)
    log_p = cluster_log_probs(ids, log_likelihoods)
    return {"clusters": ids, "cluster_probs": log_p.exp().tolist(),
            "entropy": semantic_entropy(ids, log_likelihoods)}


@functools.lru_cache(maxsize=1)
def _sampled() -> list[tuple[str, Any]]:
    """10 answers, sampled by main at temperature 1 (seed 0), to three held-out
    "Where is X?" questions."""
    import minidecode
    from minidecode.tinyworld.corpus import encode_prompt

    model, tokenizer = minidecode.load("main")
    model.eval()
    out = []
    for question in held_out_questions(3, 0):
        samples = sample_answers(model, tokenizer, encode_prompt(tokenizer, question.prompt),
                                 n=10, max_new_tokens=16, seed=0)
        out.append((question.question, samples))
    return out


@st.composite
def _sample_cases(draw: st.DrawFn) -> Case:
    n = draw(st.integers(2, 8))
    texts = draw(st.lists(st.sampled_from(["In the park.", "The park.", "in the kitchen",
                                           "Kitchen.", "At school.", "Garden", "park"]),
                          min_size=n, max_size=n))
    lengths = draw(st.lists(st.integers(1, 5), min_size=n, max_size=n))
    value = st.floats(min_value=-8.0, max_value=-0.01, allow_nan=False)
    log_probs = torch.tensor(draw(st.lists(st.lists(value, min_size=5, max_size=5), min_size=n,
                                           max_size=n)), dtype=torch.float64)
    mask = torch.arange(5)[None, :] < torch.tensor(lengths)[:, None]
    return Case("Where is Tom?", texts, log_probs.masked_fill(~mask, 0.0), mask, first_letter,
                draw(st.booleans()))


@exercise("06.4", reference=semantic_entropy_from_samples, returns=dict,
          strategy=_sample_cases(), max_examples=25, points=2)
def semantic_entropy_from_samples_cases() -> Iterator[Case]:
    """Hand-sized samples, real samples of main with two clusterers, with and without
    length normalisation, and too few samples."""
    texts = ["In the park.", "The park.", "In the kitchen."]
    log_probs = torch.tensor([[-0.1, -0.2, -0.3], [-0.5, -0.5, 0.0], [-2.0, -1.0, -1.0]],
                             dtype=torch.float64)
    mask = torch.tensor([[True, True, True], [True, True, False], [True, True, True]])
    yield Case("Where is Tom?", texts, log_probs, mask, place_named, False,
               name="p(C) from the sequence likelihoods, summed within a cluster")
    yield Case("Where is Tom?", texts, log_probs, mask, place_named, True,
               name="length_normalised: log p(s) divided by its number of tokens")
    yield Case("Where is Tom?", texts, log_probs, mask, exact_match, False,
               name="the clusterer decides: exact match splits the paraphrase")
    for question, samples in _sampled():
        for clusterer in (exact_match, place_named):
            yield Case(question, samples.texts, samples.log_probs, samples.mask, clusterer,
                       True)
    yield Case("Where is Tom?", texts[:1], log_probs[:1], mask[:1], place_named, False,
               name="fewer than 2 samples: ValueError")


def _clusters_at(temperature: float) -> int:
    """How many places (clusters of the parsed clusterer) main's 10 answers to held-out
    question 0 name at ``temperature`` (seed 0, 16 tokens)."""
    import minidecode
    from minidecode.tinyworld.corpus import encode_prompt

    model, tokenizer = minidecode.load("main")
    model.eval()
    question = held_out_questions(1, 0)[0]
    samples = sample_answers(model, tokenizer, encode_prompt(tokenizer, question.prompt), n=10,
                             temperature=temperature, max_new_tokens=16, seed=0)
    return len(set(place_named(question.question, samples.texts)))


def answer_06_5() -> int:
    """The short answer of 06.5, computed live from the run it asks about."""
    return _fewer_places()


@functools.lru_cache(maxsize=1)
def _fewer_places() -> int:
    return _clusters_at(1.0) - _clusters_at(0.3)


@exercise("06.5", reference=answer_06_5, returns=int)
def answer_06_5_cases() -> Iterator[Case]:
    """One question, no arguments."""
    yield Case(name="clusters at temperature 1.0 minus clusters at 0.3")
