"""Multi-objective decoding (minidecode.multi_objective): Pareto front, scalarisation, MOD."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import minidecode
from minidecode.generate import generate
from minidecode.multi_objective import (
    MODProcessor,
    chebyshev_select,
    dominates,
    generate_candidates,
    location_statement_rate,
    mod_sample,
    mod_scores,
    normalise_scores,
    pareto_front,
    score_candidates,
    weighted_sum_select,
)
from minidecode.tinyworld.evaluate import encode_prompt
from minidecode.tinyworld.judge import find_loop, judge_story, words

MOD_RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "mod_sweep.json"

# small integer grids make ties and duplicates common, which is where the dominance rule matters
_points = st.integers(1, 3).flatmap(lambda m: st.lists(
    st.lists(st.integers(0, 4), min_size=m, max_size=m), min_size=1, max_size=12))


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    target, tokenizer = minidecode.load("main")
    draft, _ = minidecode.load("main-draft")
    return target.eval(), draft.eval(), tokenizer


# --------------------------------------------------------------------------- dominance and front
def test_dominance_needs_one_strict_improvement():
    assert dominates([2, 1], [1, 1])
    assert not dominates([1, 1], [1, 1])               # equal: neither dominates (the source's bug)
    assert not dominates([2, 0], [1, 1])
    with pytest.raises(ValueError, match="same length"):
        dominates([1, 2], [1, 2, 3])


@settings(max_examples=200, deadline=None, derandomize=True)
@given(_points)
def test_pareto_front_properties(points):
    front = pareto_front(points)
    assert front == sorted(set(front)) and front            # a finite set always has a front
    for i in front:                                         # nobody dominates a returned point
        assert not any(dominates(points[j], points[i]) for j in range(len(points)))
    for i in set(range(len(points))) - set(front):          # every excluded point is dominated
        assert any(dominates(points[j], points[i]) for j in front)
    for i in front:                                         # duplicates share their fate
        assert all(j in front for j in range(len(points)) if points[j] == points[i])


def test_pareto_front_examples_and_duplicates():
    assert pareto_front([[1, 1], [1, 1], [1, 1]]) == [0, 1, 2]
    assert pareto_front([[3, 1], [1, 3], [2, 2], [1, 1], [3, 1]]) == [0, 1, 2, 4]
    assert pareto_front([[0.5]]) == [0]
    with pytest.raises(ValueError, match="scores must be 2-d"):
        pareto_front([1, 2, 3])
    with pytest.raises(ValueError, match="finite"):
        pareto_front([[1.0, float("nan")]])


# --------------------------------------------------------------------------- scalarisation
@settings(max_examples=100, deadline=None, derandomize=True)
@given(_points, st.data())
def test_corner_weights_pick_that_objectives_best(points, data):
    m = len(points[0])
    axis = data.draw(st.integers(0, m - 1))
    corner = [1.0 if i == axis else 0.0 for i in range(m)]
    best = max(p[axis] for p in points)
    for select in (weighted_sum_select, chebyshev_select):
        chosen = select(points, corner)
        assert points[chosen][axis] == best
        assert chosen in pareto_front(points)              # ties broken towards the front


@settings(max_examples=100, deadline=None, derandomize=True)
@given(_points, st.data())
def test_positive_weights_choose_a_pareto_point(points, data):
    m = len(points[0])
    weights = data.draw(st.lists(st.floats(0.05, 1.0), min_size=m, max_size=m))
    assert weighted_sum_select(points, weights) in pareto_front(points)
    assert chebyshev_select(points, weights) in pareto_front(points)


def test_chebyshev_reaches_a_point_the_weighted_sum_cannot():
    # (0.45, 0.45) lies below the line between the corners: no weighted sum ever picks it
    points = [[1.0, 0.0], [0.0, 1.0], [0.45, 0.45]]
    assert pareto_front(points) == [0, 1, 2]
    picked = {weighted_sum_select(points, [w, 1 - w]) for w in torch.linspace(0, 1, 21).tolist()}
    assert 2 not in picked
    assert chebyshev_select(points, [0.5, 0.5]) == 2


def test_normalise_scores():
    scores = normalise_scores([[1.0, 5.0], [3.0, 5.0], [2.0, 5.0]])
    assert torch.allclose(scores, torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.5, 0.0]],
                                               dtype=torch.float64))


@pytest.mark.parametrize(("weights", "match"), [([-0.5, 1.0], ">= 0"), ([0.0, 0.0], "all be zero"),
                                                ([1.0], "one entry per objective"),
                                                ([float("nan"), 1.0], ">= 0")])
def test_bad_weights_are_clear_errors(weights, match):
    for select in (weighted_sum_select, chebyshev_select):
        with pytest.raises(ValueError, match=match):
            select([[1.0, 2.0], [2.0, 1.0]], weights)


# --------------------------------------------------------------------------- candidates
def test_candidates_and_their_scores(models):
    target, _, tokenizer = models
    prompt = encode_prompt(tokenizer, "One sunny day, Mia")
    settings_ = [{"temperature": 0.3}, {"temperature": 1.0, "top_p": 0.9},
                 {"temperature": 1.5, "max_new_tokens": 6}]
    candidates = generate_candidates(target, tokenizer, prompt, settings_, 12, seed=3)
    again = generate_candidates(target, tokenizer, prompt, settings_, 12, seed=3)
    assert [c.tokens for c in candidates] == [c.tokens for c in again]      # seeded
    assert len(candidates[2].tokens) <= 6
    scores = score_candidates(target, prompt, candidates)
    assert scores.shape == (3, 4) and bool(torch.isfinite(scores).all())
    assert bool((scores[:, 0] <= 0).all())                                  # mean log-prob
    assert bool(((scores[:, 1] >= 0) & (scores[:, 1] <= 1)).all())          # Jaccard distance
    assert scores[2, 3] == -len(candidates[2].tokens)
    # a candidate repeated twice is less diverse than the others
    twice = score_candidates(target, prompt, [candidates[0], candidates[0], candidates[1]],
                             ["diversity"])
    assert twice[0, 0] < twice[2, 0]
    with pytest.raises(ValueError, match="objectives"):
        score_candidates(target, prompt, candidates, ["beauty"])
    for bad in ([], [{"top_p": 0.9}], [{"temperature": 0.0}]):
        with pytest.raises(ValueError, match="settings"):
            generate_candidates(target, tokenizer, prompt, bad, 4)


# --------------------------------------------------------------------------- MOD
def test_mod_scores_is_the_weighted_sum_of_log_probs():
    a = torch.tensor([[2.0, 0.0, -1.0]])
    b = torch.tensor([[0.0, 3.0, 0.0]])
    mixed = mod_scores([a, b], [0.25, 0.75])
    expected = 0.25 * torch.log_softmax(a, -1) + 0.75 * torch.log_softmax(b, -1)
    assert torch.allclose(mixed, expected)
    assert torch.allclose(mod_scores([a, b], [2.0, 6.0]), expected)         # normalised
    assert torch.allclose(mod_scores([a, b], [1.0, 0.0]), torch.log_softmax(a, -1))
    with pytest.raises(ValueError, match=">= 0"):
        mod_scores([a, b], [-1.0, 2.0])
    with pytest.raises(ValueError, match="all be zero"):
        mod_scores([a, b], [0.0, 0.0])


def test_mod_processor_endpoints_and_middle(models):
    target, draft, tokenizer = models
    ids = torch.tensor([encode_prompt(tokenizer, "One rainy day, Leo")])
    alone = {name: generate(model, ids, 16) for name, model in (("target", target),
                                                                  ("draft", draft))}
    length = ids.shape[1]
    at_zero = generate(target, ids, 16, logits_processors=[MODProcessor(draft, 0.0, length)])
    at_one = generate(target, ids, 16, logits_processors=[MODProcessor(draft, 1.0, length)])
    assert torch.equal(at_zero, alone["target"])
    assert torch.equal(at_one, alone["draft"])
    # the middle mixes: the first step's scores are the weighted sum of the two log-probs
    processor = MODProcessor(draft, 0.3, length)
    scores = target(ids).logits[:, -1]
    mixed = processor(ids, scores)
    expected = 0.7 * torch.log_softmax(scores, -1) + 0.3 * torch.log_softmax(
        draft(ids).logits[:, -1], -1)
    assert torch.allclose(mixed, expected, atol=1e-5)


def test_mod_processor_with_a_second_prompt_reads_that_prompt(models):
    target, _, tokenizer = models
    ids = torch.tensor([encode_prompt(tokenizer, "One rainy day, Leo")])
    other = encode_prompt(tokenizer, "Q: Mia has 3 apples. How many apples does Mia have?\nA:")
    processor = MODProcessor(target, 1.0, ids.shape[1], other_prompt_ids=other)
    out = generate(target, ids, 8, logits_processors=[processor])
    expected = generate(target, torch.tensor([other]), 8)
    assert out[0, ids.shape[1]:].tolist() == expected[0, len(other):].tolist()
    for bad in (-0.1, 1.5, "half"):
        with pytest.raises(ValueError, match="weight"):
            MODProcessor(target, bad, 3)


# --------------------------------------------------------------------------- MOD over two prompts
def _reporter(tokenizer):
    from minidecode import tinyworld
    context = tinyworld.qa(random.Random(3)).text.split("\nQ:")[0]   # as benchmarks/bench_mod.py
    return encode_prompt(tokenizer, context)


def test_location_statement_rate():
    assert location_statement_rate("Ella is in the forest. Tom went to the park.") == 0.5
    assert location_statement_rate("Hugo walked to the beach. She is in the kitchen.") == 1.0
    assert location_statement_rate("Tom went to the park. The end.") == 0.0
    assert location_statement_rate("Ella is in the") == 0.0            # no complete sentence


def test_mod_sample_at_the_end_weights_is_each_conditioning_alone(models):
    target, _, tokenizer = models
    eos = tokenizer.token_to_id("<|endoftext|>")
    story = encode_prompt(tokenizer, "One rainy day, Leo woke up early.")
    reporter = _reporter(tokenizer)
    for weight, prompt in ((0.0, story), (1.0, reporter)):
        blended = mod_sample(target, story, reporter, weight, 3, 12, seed=5, eos_token_id=eos)
        alone = generate(target, torch.tensor([prompt] * 3), 12, do_sample=True,
                         eos_token_id=eos, generator=torch.Generator().manual_seed(5))
        alone = [row[len(prompt):] for row in alone.tolist()]
        alone = [row[: row.index(eos) + 1] if eos in row else row for row in alone]
        assert blended == alone, weight
    with pytest.raises(ValueError, match="n must be"):
        mod_sample(target, story, reporter, 0.5, 0, 4, seed=0)
    with pytest.raises(ValueError, match="weight"):
        mod_sample(target, story, reporter, 1.5, 2, 4, seed=0)


def _sweep(model, tokenizer, prompts, weights, n, seed=0):
    eos = tokenizer.token_to_id("<|endoftext|>")
    reporter = _reporter(tokenizer)
    out = {}
    for weight in weights:
        validity, location = [], []
        for index, prompt in enumerate(prompts):
            for sample in mod_sample(model, encode_prompt(tokenizer, prompt), reporter, weight,
                                     n, 24, seed + index, eos_token_id=eos):
                text = tokenizer.decode([t for t in sample if t != eos])
                verdict = judge_story(text, prompt=prompt)
                if verdict.sentences:
                    validity.append(verdict.validity)
                location.append(location_statement_rate(text))
        out[weight] = (sum(validity) / len(validity), sum(location) / len(location))
    return out


def test_mod_weight_moves_validity_down_and_location_statements_up(models):
    """A small seeded sweep: story validity falls and the reporter's location statements rise with
    the weight on the reporter. Sampling one conditioning alone at every weight (no MOD) would
    leave both flat and fail."""
    target, _, tokenizer = models
    prompts = ["One sunny day, Maya woke up early.", "Tom lived near the park with a dog."]
    sweep = _sweep(target, tokenizer, prompts, (0.0, 0.6, 1.0), 4)
    (v0, l0), (v_mid, l_mid), (v1, l1) = sweep[0.0], sweep[0.6], sweep[1.0]
    assert v0 >= v_mid >= v1 and v0 - v1 > 0.3, sweep
    assert l0 <= l_mid <= l1 and l1 - l0 > 0.05, sweep


def test_mod_benchmark_results_are_monotone_and_loop_free():
    result = json.loads(MOD_RESULTS.read_text())
    rows = result["rows"]
    assert len(rows) >= 5 and [r["weight"] for r in rows] == sorted(r["weight"] for r in rows)
    assert rows[0]["weight"] == 0.0 and rows[-1]["weight"] == 1.0
    validity = [r["validity"][0] for r in rows]
    location = [r["location_rate"][0] for r in rows]
    assert all(b <= a for a, b in zip(validity, validity[1:])), validity
    assert all(b >= a for a, b in zip(location, location[1:])), location
    assert result["trend"]["validity"]["spearman_of_means"] < -0.9
    assert result["trend"]["location_rate"]["spearman_of_means"] > 0.9
    for row in rows:                        # the saved samples: sampled text, no repetition loop
        sample = row["saved_sample"]["text"]
        assert find_loop(words(sample)) is None, (row["weight"], sample)
        assert judge_story(sample, prompt=row["saved_sample"]["prompt"]).loop_period is None


# --------------------------------------------------------------------------- graded exercises
def _source_front(scores):            # the source's rule: ">= on every objective" dominates
    n = scores.shape[0]
    return [i for i in range(n)
            if not any(j != i and bool((scores[j] >= scores[i]).all()) for j in range(n))]


def _weighted_sum_instead(scores, weights):
    if bool((weights < 0).any()) or float(weights.sum()) == 0.0:
        raise ValueError("bad weights")
    return int((normalise_scores(scores) @ weights).argmax())


def _chebyshev_unnormalised(scores, weights):
    if bool((weights < 0).any()) or float(weights.sum()) == 0.0:
        raise ValueError("bad weights")
    gap = scores.max(dim=0).values - scores
    return int(((weights * gap).max(dim=1).values + 1e-6 * gap.sum(dim=1)).argmin())


@pytest.mark.parametrize(
    ("exercise_id", "name", "wrong"),
    [("05.1", "pareto_front", _source_front),
     ("05.2", "chebyshev_select", _weighted_sum_instead),
     ("05.2", "chebyshev_select", _chebyshev_unnormalised)],
)
def test_chapter_05_checks_fail_on_the_stub_and_on_a_typical_mistake(exercise_id, name, wrong,
                                                                     check_rejects):
    check_rejects(exercise_id, name, wrong)
