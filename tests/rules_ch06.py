"""Wrong variants of chapter 06's later exercises (see tests/test_exercise_rules.py): each breaks
one rule the exercise states, and the check must reject it."""

from __future__ import annotations

import math
from collections import Counter

import torch


# ----------------------------------------------------------------------------------- 06.4
def _se(question, texts, log_probs, mask, clusterer, length_normalised, *, use_mask=True,
        normalise=None, weighted=True, check_n=True):
    if check_n and len(texts) < 2:
        raise ValueError("n")
    ids = list(clusterer(question, texts))
    rows = log_probs * mask if use_mask else log_probs
    ll = rows.sum(dim=-1)
    if length_normalised if normalise is None else normalise:
        ll = ll / (mask.sum(dim=-1) if use_mask else mask.shape[-1])
    present = sorted(set(ids))
    if weighted:
        clusters = torch.tensor(ids)
        total = torch.logsumexp(ll, dim=0)
        log_p = torch.stack([torch.logsumexp(ll[clusters == c], dim=0) - total for c in present])
        probs = log_p.exp().tolist()
    else:
        counts = Counter(ids)
        probs = [counts[c] / len(ids) for c in present]
    return {"clusters": ids, "cluster_probs": probs,
            "entropy": float(-sum(p * math.log(p) for p in probs))}


def se_discrete_shares(question, texts, log_probs, mask, clusterer, length_normalised):
    return _se(question, texts, log_probs, mask, clusterer, length_normalised, weighted=False)


def se_never_normalised(question, texts, log_probs, mask, clusterer, length_normalised):
    return _se(question, texts, log_probs, mask, clusterer, length_normalised, normalise=False)


def se_counts_padding(question, texts, log_probs, mask, clusterer, length_normalised):
    return _se(question, texts, log_probs, mask, clusterer, length_normalised, use_mask=False)


def se_one_sample_allowed(question, texts, log_probs, mask, clusterer, length_normalised):
    if len(texts) < 2:
        return {"clusters": [0], "cluster_probs": [1.0], "entropy": 0.0}
    return _se(question, texts, log_probs, mask, clusterer, length_normalised)


# ----------------------------------------------------------------------------------- 06.5
def answer_06_5_no_change():
    return 0


RULES = [
    ("06.4", "semantic_entropy_from_samples", se_discrete_shares),
    ("06.4", "semantic_entropy_from_samples", se_never_normalised),
    ("06.4", "semantic_entropy_from_samples", se_counts_padding),
    ("06.4", "semantic_entropy_from_samples", se_one_sample_allowed),
    ("06.5", "answer_06_5", answer_06_5_no_change),
]
