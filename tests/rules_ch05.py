"""Wrong variants of chapter 05's later exercises (see tests/test_exercise_rules.py): each breaks
one rule the exercise states, and the check must reject it. 05.3's first variant is the given code
of the find-the-bug exercise itself."""

from __future__ import annotations

import torch


# ----------------------------------------------------------------------------------- 05.3
def _choose(scores, weights, *, strict=True, on_front=True, normalise=True):
    if bool((weights < 0).any()) or float(weights.sum()) == 0.0:
        raise ValueError("weights")
    n = scores.shape[0]
    front = []
    for i in range(n):
        dominated = False
        for j in range(n):
            at_least = bool((scores[j] >= scores[i]).all())
            better = bool((scores[j] > scores[i]).any()) if strict else j != i
            if at_least and better:
                dominated = True
        if not dominated or not on_front:
            front.append(i)
    low, high = scores.min(dim=0).values, scores.max(dim=0).values
    span = torch.where(high > low, high - low, 1.0)
    normalised = (scores - low) / span if normalise else scores
    values = normalised @ weights
    best = max(float(values[i]) for i in front)
    return next(i for i in front if float(values[i]) >= best - 1e-12)


def choose_on_front(scores, weights):  # the given code: ">= everywhere" dominates
    return _choose(scores, weights, strict=False)


def choose_ignoring_the_front(scores, weights):  # a tie goes to the front first
    return _choose(scores, weights, on_front=False)


def choose_raw_scales(scores, weights):  # min-max normalised first
    return _choose(scores, weights, normalise=False)


# ----------------------------------------------------------------------------------- 05.4
def answer_05_4_at_one_half():
    return "c"


RULES = [
    ("05.3", "choose_on_front", choose_on_front),
    ("05.3", "choose_on_front", choose_ignoring_the_front),
    ("05.3", "choose_on_front", choose_raw_scales),
    ("05.4", "answer_05_4", answer_05_4_at_one_half),
]
