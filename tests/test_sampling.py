"""Chapter 01: truncation samplers and temperature, against transformers and against statistics.

Every processor is compared with transformers' warper of the same name on random logit batches
drawn by hypothesis (ties and -inf entries included), then checked for the properties every
sampler must have, then sampled 20,000 times and compared with its own filtered distribution.
Each comparison would fail for greedy decoding, which keeps one token where these keep several.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import chi2
from transformers import (
    EpsilonLogitsWarper,
    EtaLogitsWarper,
    MinPLogitsWarper,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
    TypicalLogitsWarper,
)

from minidecode.entropy import check_scores, entropy, entropy_varentropy
from minidecode.generate import generate
from minidecode.sampling import (
    Epsilon,
    Eta,
    MinP,
    Temperature,
    TopK,
    TopP,
    Typical,
    apply_processors,
    min_p_filter,
    sample_next_token,
    top_k_filter,
    top_p_filter,
)

INF = float("inf")
IDS = torch.zeros(1, 0, dtype=torch.long)
SETTINGS = settings(max_examples=150, derandomize=True, deadline=None)

# Logits: a few "round" values so that ties are common, any float in [-12, 12], and -inf.
_value = st.one_of(
    st.sampled_from([0.0, 1.0, -1.0, 2.5]),
    st.floats(min_value=-12.0, max_value=12.0, allow_nan=False, width=32),
    st.just(-INF),
)


@st.composite
def logit_batches(draw, min_vocab: int = 2, max_vocab: int = 16) -> torch.Tensor:
    batch = draw(st.integers(1, 3))
    vocab = draw(st.integers(min_vocab, max_vocab))
    rows = []
    for _ in range(batch):
        row = draw(st.lists(_value, min_size=vocab, max_size=vocab))
        if all(v == -INF for v in row):
            row[draw(st.integers(0, vocab - 1))] = draw(st.floats(-5, 5, width=32))
        rows.append(row)
    return torch.tensor(rows, dtype=torch.float32)


def _kept(scores: torch.Tensor) -> torch.Tensor:
    return scores > -INF


# ---------------------------------------------------------------------------- vs transformers


@SETTINGS
@given(logit_batches(), st.integers(1, 20))
def test_top_k_matches_transformers(scores, k):
    assert torch.equal(TopK(k)(IDS, scores), TopKLogitsWarper(k)(IDS, scores))


@SETTINGS
@given(logit_batches(), st.floats(0.01, 1.0))
def test_top_p_matches_transformers_up_to_ties_at_the_boundary(scores, top_p):
    ours, theirs = TopP(top_p)(IDS, scores), TopPLogitsWarper(top_p)(IDS, scores)
    kept_ours, kept_theirs = _kept(ours), _kept(theirs)
    assert (kept_ours | ~kept_theirs).all(), "transformers keeps a token we drop"
    # Whatever we keep in addition is tied with the least likely token transformers keeps.
    boundary = scores.masked_fill(~kept_theirs, INF).amin(dim=-1, keepdim=True)
    extra = kept_ours & ~kept_theirs
    assert torch.equal(scores[extra], boundary.expand_as(scores)[extra])
    assert torch.equal(ours[kept_ours], scores[kept_ours])


def test_top_p_is_exactly_transformers_without_ties():
    generator = torch.Generator().manual_seed(0)
    for top_p in (0.3, 0.7, 0.9, 0.95, 1.0):
        scores = torch.randn(8, 50, generator=generator) * 3
        assert torch.equal(TopP(top_p)(IDS, scores), TopPLogitsWarper(top_p)(IDS, scores))


@SETTINGS
@given(logit_batches(), st.floats(0.0, 1.0))
def test_min_p_matches_transformers(scores, min_p):
    assert torch.equal(MinP(min_p)(IDS, scores), MinPLogitsWarper(min_p)(IDS, scores))


@SETTINGS
@given(logit_batches(), st.floats(0.05, 0.95))
def test_typical_matches_transformers(scores, mass):
    assert torch.equal(Typical(mass)(IDS, scores), TypicalLogitsWarper(mass)(IDS, scores))


@SETTINGS
@given(logit_batches(), st.floats(1e-4, 0.5))
def test_epsilon_matches_transformers(scores, epsilon):
    assert torch.equal(Epsilon(epsilon)(IDS, scores), EpsilonLogitsWarper(epsilon)(IDS, scores))


@SETTINGS
@given(logit_batches(), st.floats(1e-4, 0.5))
def test_eta_matches_transformers(scores, epsilon):
    assert torch.equal(Eta(epsilon)(IDS, scores), EtaLogitsWarper(epsilon)(IDS, scores))


@SETTINGS
@given(logit_batches(), st.floats(0.05, 5.0))
def test_temperature_matches_transformers(scores, temperature):
    assert torch.equal(Temperature(temperature)(IDS, scores),
                       TemperatureLogitsWarper(temperature)(IDS, scores))


# ---------------------------------------------------------------------------- properties

PROCESSORS = [TopK(3), TopP(0.8), MinP(0.2), Typical(0.5), Epsilon(0.05), Eta(0.05),
              Temperature(0.7)]


@SETTINGS
@given(logit_batches(max_vocab=24))
def test_kept_set_is_never_empty_and_renormalises_to_one(scores):
    for processor in PROCESSORS:
        filtered = processor(IDS, scores)
        assert _kept(filtered).any(dim=-1).all(), processor
        probs = torch.softmax(filtered, dim=-1)
        assert torch.allclose(probs.sum(dim=-1), torch.ones(scores.shape[0]), atol=1e-5)
        # Kept tokens keep their relative odds: p'_i = p_i / (mass kept).
        if not isinstance(processor, Temperature):
            original = torch.softmax(scores, dim=-1)
            kept_mass = (original * _kept(filtered)).sum(dim=-1, keepdim=True)
            expected = torch.where(_kept(filtered), original / kept_mass, 0.0)
            assert torch.allclose(probs, expected, atol=1e-5)


@SETTINGS
@given(logit_batches(), st.floats(0.05, 5.0), st.floats(0.05, 5.0))
def test_lower_temperature_never_increases_entropy(scores, t1, t2):
    low, high = min(t1, t2), max(t1, t2)
    h_low = entropy(Temperature(low)(IDS, scores))
    h_high = entropy(Temperature(high)(IDS, scores))
    assert (h_low <= h_high + 1e-4).all()


def test_truncation_keeps_a_whole_tie_group():
    scores = torch.tensor([[1.0, 1.0, 1.0, 1.0]])
    for processor in (TopP(0.5), TopK(2)):
        assert _kept(processor(IDS, scores)).all(), processor
    assert torch.equal(top_p_filter(torch.tensor([2.0, 1.0, 1.0, -3.0]), 0.75) > -INF,
                       torch.tensor([True, True, True, False]))


def test_plain_functions_work_on_any_leading_shape():
    logits = torch.randn(2, 3, 10, generator=torch.Generator().manual_seed(1))
    for fn, arg in ((top_k_filter, 4), (top_p_filter, 0.8), (min_p_filter, 0.3)):
        out = fn(logits, arg)
        assert out.shape == logits.shape
        flat = fn(logits.reshape(6, 10), arg).reshape(2, 3, 10)
        assert torch.equal(out, flat)
    assert (top_k_filter(logits, 4) > -INF).sum(dim=-1).eq(4).all()


# ---------------------------------------------------------------------------- entropy helper


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_entropy_is_finite_with_minus_inf_in_any_dtype(dtype):
    scores = torch.tensor([[0.0, 0.0, -INF, -INF], [3.0, -INF, -INF, -INF], [1.0, 2.0, 3.0, 4.0]],
                          dtype=dtype)
    h, v = entropy_varentropy(scores)
    assert torch.isfinite(h).all() and torch.isfinite(v).all()
    assert h.dtype == torch.float32
    assert math.isclose(h[0].item(), math.log(2), rel_tol=1e-6) and v[0].item() == 0.0
    assert h[1].item() == 0.0 and v[1].item() == 0.0
    p = torch.softmax(torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64), dim=-1)
    expected_h = -(p * p.log()).sum()
    expected_v = (p * (p.log() + expected_h) ** 2).sum()
    tolerance = 1e-2 if dtype != torch.float32 else 1e-5
    assert math.isclose(h[2].item(), expected_h.item(), rel_tol=tolerance)
    assert math.isclose(v[2].item(), expected_v.item(), rel_tol=tolerance)


def test_the_naive_entropy_gives_nan_in_float16_and_ours_does_not():
    scores = torch.tensor([0.0, 0.0, -INF], dtype=torch.float16)
    probs = torch.softmax(scores, dim=-1)
    naive = -(probs * torch.log(probs + 1e-10)).sum()      # 1e-10 underflows to 0 in float16
    assert torch.isnan(naive)
    assert math.isclose(entropy(scores).item(), math.log(2), rel_tol=1e-3)


# ---------------------------------------------------------------------------- sampling


def _chi_square(processor, logits: torch.Tensor, draws: int = 20_000, seed: int = 1234):
    filtered = processor(IDS, logits[None])
    expected = torch.softmax(filtered, dim=-1)[0]
    generator = torch.Generator().manual_seed(seed)
    tokens = sample_next_token(filtered.expand(draws, -1), generator)
    counts = torch.bincount(tokens, minlength=logits.numel()).double()
    kept = expected > 0
    assert counts[~kept].sum() == 0, "a filtered-out token was drawn"
    statistic = ((counts[kept] - draws * expected[kept]) ** 2 / (draws * expected[kept])).sum()
    return statistic.item(), int(kept.sum()) - 1, counts


@pytest.mark.parametrize("processor", PROCESSORS, ids=lambda p: type(p).__name__)
def test_20000_draws_match_the_filtered_distribution(processor):
    logits = torch.tensor([2.0, 1.6, 1.2, 0.9, 0.3, -0.5, -1.5, -3.0])
    statistic, dof, counts = _chi_square(processor, logits)
    assert dof >= 1, "only one token kept: this sampler would be greedy here"
    assert (counts > 0).sum() >= 2
    assert statistic < chi2.ppf(0.999, dof), f"chi-square {statistic:.1f} with {dof} dof"


def test_chi_square_catches_a_wrong_sampler():
    logits = torch.tensor([2.0, 1.6, 1.2, 0.9, 0.3, -0.5, -1.5, -3.0])
    filtered = TopK(4)(IDS, logits[None])
    expected = torch.softmax(filtered, dim=-1)[0]
    wrong = torch.softmax(filtered / 0.8, dim=-1)            # a sampler at the wrong temperature
    tokens = torch.multinomial(wrong.expand(20_000, -1), 1,
                               generator=torch.Generator().manual_seed(1234))[:, 0]
    counts = torch.bincount(tokens, minlength=8).double()[:4]
    statistic = ((counts - 20_000 * expected[:4]) ** 2 / (20_000 * expected[:4])).sum().item()
    assert statistic > chi2.ppf(0.999, 3)


def test_sampling_is_reproducible_with_a_seed():
    scores = torch.randn(4, 30, generator=torch.Generator().manual_seed(0))
    filtered = apply_processors([Temperature(0.9), TopP(0.9)], scores)
    first = sample_next_token(filtered.repeat(50, 1), torch.Generator().manual_seed(7))
    again = sample_next_token(filtered.repeat(50, 1), torch.Generator().manual_seed(7))
    other = sample_next_token(filtered.repeat(50, 1), torch.Generator().manual_seed(8))
    assert torch.equal(first, again) and not torch.equal(first, other)


@pytest.fixture(scope="module")
def draft_model():
    import minidecode

    return minidecode.load("main-draft")[0]


def test_generate_with_processors_is_reproducible_and_stays_in_the_kept_set(draft_model):
    prompt = torch.tensor([[0, 5, 17, 23, 9]])

    def run(seed):
        return generate(draft_model, prompt.repeat(6, 1), 12, do_sample=True,
                        logits_processors=[TopK(5)],
                        generator=torch.Generator().manual_seed(seed))

    tokens = run(3)
    assert torch.equal(tokens, run(3))
    # Teacher-forced check: every sampled token is among the top 5 of the model at its step.
    with torch.no_grad():
        logits = draft_model(tokens[:, :-1]).logits[:, prompt.shape[1] - 1 :]
    chosen = tokens[:, prompt.shape[1] :]
    top5 = torch.topk(logits, 5, dim=-1).values[..., -1]
    assert (logits.gather(-1, chosen[..., None])[..., 0] >= top5 - 1e-4).all()
    greedy = generate(draft_model, prompt.repeat(6, 1), 12)
    assert not torch.equal(tokens, greedy), "sampling with top-k 5 behaved like greedy"


# ---------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "make, words",
    [
        (lambda: Temperature(0.0), ["temperature", "> 0", "greedy"]),
        (lambda: Temperature(-1.0), ["temperature", "> 0", "greedy"]),
        (lambda: Temperature(float("nan")), ["temperature"]),
        (lambda: TopP(0.0), ["top_p", "(0, 1]"]),
        (lambda: TopP(1.5), ["top_p", "(0, 1]"]),
        (lambda: MinP(-0.1), ["min_p", "[0, 1]"]),
        (lambda: MinP(1.1), ["min_p", "[0, 1]"]),
        (lambda: TopK(0), ["k", ">= 1"]),
        (lambda: TopK(2.5), ["k", ">= 1"]),
        (lambda: Typical(1.0), ["mass", "(0, 1)"]),
        (lambda: Epsilon(0.0), ["epsilon", "(0, 1)"]),
        (lambda: Eta(1.0), ["epsilon", "(0, 1)"]),
        (lambda: top_p_filter(torch.zeros(3), 2.0), ["top_p", "(0, 1]"]),
        (lambda: min_p_filter(torch.zeros(3), -1.0), ["min_p", "[0, 1]"]),
        (lambda: top_k_filter(torch.zeros(3), 0), ["k", ">= 1"]),
    ],
)
def test_bad_arguments_name_the_parameter_and_its_range(make, words):
    with pytest.raises(ValueError) as info:
        make()
    for word in words:
        assert word in str(info.value)


@pytest.mark.parametrize("processor", PROCESSORS, ids=lambda p: type(p).__name__)
def test_nan_logits_are_rejected(processor):
    scores = torch.tensor([[1.0, float("nan"), 0.0]])
    with pytest.raises(ValueError, match="NaN"):
        processor(IDS, scores)
    with pytest.raises(ValueError, match="all -inf"):
        processor(IDS, torch.full((1, 3), -INF))


def test_check_scores_rejects_integer_tensors():
    with pytest.raises(ValueError, match="floating-point"):
        check_scores(torch.tensor([[1, 2]]))
