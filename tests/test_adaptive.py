"""Chapter 02: adaptive decoding (Zhu et al. 2024), the source's confidence rule, entropix."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import chi2

from minidecode.adaptive import (
    REGIONS,
    AdaptiveDecoding,
    ConfidenceRule,
    Entropix,
    adaptive_candidate_count,
    adaptive_filter,
    confidence_gains,
    entropix_region,
)
from minidecode.entropy import entropy_varentropy
from minidecode.sampling import sample_next_token
from tests.test_sampling import logit_batches

INF = float("inf")
IDS = torch.zeros(1, 0, dtype=torch.long)
SETTINGS = settings(max_examples=120, derandomize=True, deadline=None)


def _entropy_with_uniform_rest(probs_desc: list[float], k: int) -> float:
    """H_k by the paper's definition, written as plainly as possible (float64 Python)."""
    vocab = len(probs_desc)
    head = -sum(p * math.log(p) for p in probs_desc[:k] if p > 0)
    rest = max(0.0, 1.0 - sum(probs_desc[:k]))
    if k == vocab or rest == 0:
        return head
    return head - rest * math.log(rest / (vocab - k))


def _count_by_hand(logits: torch.Tensor, epsilon: float) -> int:
    probs = sorted(torch.softmax(logits.double(), dim=-1).tolist(), reverse=True)
    vocab = len(probs)
    count = 1
    for k in range(2, vocab + 1):
        gain = (_entropy_with_uniform_rest(probs, k - 1) - _entropy_with_uniform_rest(probs, k))
        if gain / math.log(vocab) > epsilon:
            count = k
        else:
            break
    return count


def test_gains_follow_the_paper_formula():
    logits = torch.tensor([3.0, 2.0, 1.5, 0.0, -1.0, -4.0])
    gains, _ = confidence_gains(logits)
    probs = sorted(torch.softmax(logits.double(), dim=-1).tolist(), reverse=True)
    for k in range(1, 7):
        previous = math.log(6) if k == 1 else _entropy_with_uniform_rest(probs, k - 1)
        expected = (previous - _entropy_with_uniform_rest(probs, k)) / math.log(6)
        assert math.isclose(gains[k - 1].item(), expected, abs_tol=1e-12)
    assert (gains >= -1e-12).all(), "revealing a probability never lowers the confidence"


@SETTINGS
@given(logit_batches(max_vocab=20), st.sampled_from([1e-4, 1e-3, 1e-2, 0.05]))
def test_candidate_count_matches_a_plain_loop(scores, epsilon):
    counts = adaptive_candidate_count(scores, epsilon)
    for row, count in zip(scores, counts.tolist()):
        assert count == _count_by_hand(row, epsilon)


@SETTINGS
@given(logit_batches(max_vocab=20), st.floats(1e-5, 0.2))
def test_kept_set_is_the_top_tokens_never_empty(scores, epsilon):
    filtered = AdaptiveDecoding(epsilon)(IDS, scores)
    kept = filtered > -INF
    assert kept.any(dim=-1).all()
    assert torch.equal(filtered[kept], scores[kept])
    # A prefix of the sorted order: every kept logit is >= every dropped logit.
    lowest_kept = scores.masked_fill(~kept, INF).amin(dim=-1)
    highest_dropped = scores.masked_fill(kept, -INF).amax(dim=-1)
    assert (lowest_kept > highest_dropped).all()
    assert torch.allclose(torch.softmax(filtered, -1).sum(-1), torch.ones(len(scores)))


@pytest.mark.parametrize("vocab", [2, 7, 1000])
def test_one_hot_keeps_exactly_one_token_and_uniform_keeps_all(vocab):
    one_hot = torch.full((1, vocab), -INF)
    one_hot[0, vocab // 2] = 0.0
    assert (AdaptiveDecoding(1e-3)(IDS, one_hot) > -INF).sum() == 1
    peaked = torch.zeros(1, vocab)
    peaked[0, 1] = 40.0                                   # one-hot up to float precision
    assert (AdaptiveDecoding(1e-3)(IDS, peaked) > -INF).sum() == 1
    uniform = torch.zeros(1, vocab)
    assert (AdaptiveDecoding(1e-3)(IDS, uniform) > -INF).all()


def test_flat_head_keeps_more_than_a_peaked_one_unlike_greedy():
    vocab = 200
    flat_head = torch.full((vocab,), -6.0)
    flat_head[:8] = torch.linspace(2.0, 1.3, 8)           # eight good options, then a tail
    peaked = flat_head.clone()
    peaked[0] = 9.0
    counts = adaptive_candidate_count(torch.stack([flat_head, peaked]), 1e-3)
    assert counts[0] >= 6 and counts[1] == 1


def test_adaptive_sampling_matches_its_distribution():
    logits = torch.tensor([2.0, 1.8, 1.7, 1.5] + [-5.0] * 60)
    filtered = AdaptiveDecoding(1e-3)(IDS, logits[None])
    kept = filtered[0] > -INF
    assert 2 <= int(kept.sum()) < 64
    expected = torch.softmax(filtered, -1)[0][kept]
    tokens = sample_next_token(filtered.expand(20_000, -1), torch.Generator().manual_seed(5))
    counts = torch.bincount(tokens, minlength=64).double()
    assert counts[~kept].sum() == 0
    statistic = ((counts[kept] - 20_000 * expected) ** 2 / (20_000 * expected)).sum().item()
    assert statistic < chi2.ppf(0.999, int(kept.sum()) - 1)


def test_adaptive_filter_works_on_one_row_and_rejects_bad_epsilon():
    assert (adaptive_filter(torch.zeros(5), 0.01) > -INF).all()
    for bad in (0.0, -0.1, 1.0, float("nan")):
        with pytest.raises(ValueError, match=r"epsilon must be in \(0, 1\)"):
            AdaptiveDecoding(bad)
    with pytest.raises(ValueError, match="NaN"):
        AdaptiveDecoding()(IDS, torch.tensor([[0.0, float("nan")]]))


# ---------------------------------------------------------------------------- source rule


def test_confidence_rule_picks_sizes_per_row():
    rule = ConfidenceRule(small_above=0.8, greedy_above=0.9, small_k=3, large_k=6)
    sharp = torch.tensor([12.0] + [0.0] * 9)              # H ~ 0: greedy
    medium = torch.tensor([8.0, 5.0, -9, -10, -11, -12, -13, -14, -15, -16])  # confidence 0.84
    flat = torch.zeros(10)                                  # H = log 10: large set
    scores = torch.stack([sharp, medium, flat])
    h, _ = entropy_varentropy(scores)
    confidence = 1 / (1 + h)
    assert confidence[0] > 0.9 and 0.8 < confidence[1] <= 0.9 and confidence[2] < 0.8
    assert rule.candidate_count(scores).tolist() == [1, 3, 6]
    kept = (rule(IDS, scores) > -INF).sum(dim=-1)
    assert kept.tolist() == [1, 3, 10]                      # the flat row: 6 tied -> all 10 tied
    assert ConfidenceRule(large_k=500).candidate_count(flat[None]).item() == 10


def test_confidence_rule_rejects_bad_thresholds():
    with pytest.raises(ValueError, match="small_above"):
        ConfidenceRule(small_above=0.95, greedy_above=0.9)
    with pytest.raises(ValueError, match="large_k"):
        ConfidenceRule(large_k=0)


# ---------------------------------------------------------------------------- entropix


def test_entropix_regions_cover_the_four_quadrants():
    vocab = 64
    confident = torch.full((vocab,), -10.0)
    confident[0] = 10.0
    forking = torch.full((vocab,), -2.0)
    forking[:2] = torch.tensor([3.0, 2.9])                 # two options and a long thin tail
    uncertain = torch.zeros(vocab)                           # uniform: H = log 64, V = 0
    lost = torch.cat([torch.zeros(8), torch.full((vocab - 8,), -2.5)])  # broad and uneven
    scores = torch.stack([confident, forking, uncertain, lost])
    h, v = entropy_varentropy(scores)
    regions = entropix_region(scores, entropy_threshold=2.0, varentropy_threshold=1.0)
    assert [REGIONS[i] for i in regions.tolist()] == list(REGIONS), (h, v)


def test_entropix_argmax_when_confident_and_hotter_when_lost():
    sampler = Entropix(entropy_threshold=2.0, varentropy_threshold=1.0,
                       temperatures=(0.0, 1.0, 1.0, 2.0))
    confident = torch.full((1, 64), -10.0)
    confident[0, 3] = 10.0
    assert ((sampler(IDS, confident) > -INF).sum()).item() == 1
    lost = torch.cat([torch.zeros(8), torch.full((56,), -2.5)])[None]
    assert sampler.region(lost).item() == 3
    assert torch.allclose(sampler(IDS, lost), lost / 2.0)
    uncertain = torch.zeros(1, 64)
    assert torch.equal(sampler(IDS, uncertain), uncertain)


def test_entropix_rejects_bad_arguments():
    with pytest.raises(ValueError, match="entropy_threshold"):
        Entropix(entropy_threshold=0.0)
    with pytest.raises(ValueError, match="temperatures"):
        Entropix(temperatures=(0.0, 1.0, -1.0, 1.0))


def test_from_paper_converts_the_authors_log2_scale():
    # The authors' code: entropies in nats, the gain divided by log2 V (not ln V).
    logits = torch.randn(3, 50, generator=torch.Generator().manual_seed(7)) * 2
    vocab = logits.shape[-1]
    probs, _ = torch.sort(torch.softmax(logits.double(), -1), descending=True)
    k = torch.arange(1, vocab + 1, dtype=torch.float64)
    cumulative = torch.cumsum(probs, -1)
    a = probs * torch.log(probs * (vocab - k) / (1 - cumulative))
    b = torch.log(((1 - cumulative) / (vocab - k)) / ((1 - cumulative + probs) / (vocab + 1 - k)))
    code_gain = ((a + (1 - cumulative + probs) * b) / math.log2(vocab))[:, :-1]
    gains, _ = confidence_gains(logits)
    assert torch.allclose(code_gain, gains[:, :-1] * math.log(2), atol=1e-9)
    assert AdaptiveDecoding.from_paper(1e-3).epsilon == pytest.approx(1e-3 / math.log(2))
