"""Chapter 03: temperature schedulers (EDT, llama.cpp dynamic temperature, the three-factor
scheduler of a common first attempt) and the diversity/quality measures the chapters compare
samplers with."""

from __future__ import annotations

import math

import pytest
import torch

from minidecode.diversity import distinct_n, perplexity, sample_batch, self_similarity, trim_at_eos
from minidecode.entropy import entropy
from minidecode.temperature import (
    EDT,
    DynamicTemperature,
    ThreeFactorScheduler,
    apply_temperature,
    dynamic_temperature,
    edt_temperature,
)

INF = float("inf")
IDS = torch.zeros(2, 0, dtype=torch.long)


def test_edt_formula_on_known_entropies():
    h = torch.tensor([0.5, 1.0, 2.0, 8.0])
    t = edt_temperature(h, t0=0.9, n=0.8, theta=0.5)
    expected = [0.9 * 0.8 ** (0.5 / x) for x in (0.5, 1.0, 2.0, 8.0)]
    assert torch.allclose(t, torch.tensor(expected))
    assert edt_temperature(torch.tensor([0.0]), 1.0, 0.8, 1.0).item() == 0.0
    assert (t[1:] > t[:-1]).all() and (t < 0.9).all(), "T grows with H towards T0"


def test_edt_processor_applies_the_temperature_of_each_row():
    flat = torch.log(torch.tensor([0.3, 0.3, 0.2, 0.2]))
    sharp = torch.tensor([10.0, 0.0, 0.0, 0.0])
    scores = torch.stack([flat, sharp])
    edt = EDT(t0=1.0, n=0.8, theta=1.0)
    out = edt(IDS, scores)
    t_flat = 0.8 ** (1.0 / entropy(flat).item())
    assert torch.allclose(out[0], flat / t_flat)
    assert len(edt.history) == 1 and edt.trace().shape == (1, 2)
    assert 0 < edt.trace()[0, 0] < 1.0 and edt.trace()[0, 1] < edt.trace()[0, 0]
    # Not greedy: the flat row still has four tokens, sharper than before but all alive.
    probs = torch.softmax(out[0], -1)
    assert (probs > 0.05).all() and probs[0] > 0.3


def test_llamacpp_dynamic_temperature_formula():
    h = torch.tensor([0.0, math.log(8) / 2, math.log(8)])
    t = dynamic_temperature(h, torch.tensor([8, 8, 8]), 0.2, 1.4, 2.0)
    assert torch.allclose(t, torch.tensor([0.2, 0.2 + 1.2 * 0.25, 1.4]))
    one = dynamic_temperature(torch.tensor([0.0]), torch.tensor([1]), 0.2, 1.4, 1.0)
    assert one.item() == pytest.approx(0.2)


def test_dynamic_temperature_counts_only_tokens_still_in_the_race():
    scores = torch.tensor([[0.0, 0.0, -INF, -INF], [0.0, 0.0, 0.0, 0.0]])
    processor = DynamicTemperature(0.5, 1.5, 1.0)
    out = processor(IDS, scores)
    assert torch.allclose(processor.trace()[0], torch.tensor([1.5, 1.5]))   # both at max entropy
    assert torch.equal(out[0, 2:], torch.tensor([-INF, -INF]))


def test_apply_temperature_zero_is_argmax_with_ties():
    scores = torch.tensor([[1.0, 3.0, 3.0, -INF], [1.0, 2.0, 0.0, 0.0]])
    out = apply_temperature(scores, torch.tensor([0.0, 2.0]))
    assert torch.equal(out[0] > -INF, torch.tensor([False, True, True, False]))
    assert torch.allclose(out[1], scores[1] / 2)


def test_three_factor_scheduler_trace_and_fixed_feedback():
    scheduler = ThreeFactorScheduler(warm_steps=2, cool_after=6, window=4)
    flat = torch.zeros(1, 50)                            # confidence 0: quality factor x1.5
    ids = torch.tensor([[1, 2, 3]])
    for _ in range(7):                                   # the text loops on one token
        scheduler(ids, flat)
        ids = torch.cat([ids, torch.tensor([[7]])], dim=1)
    temps = scheduler.trace()[:, 0].tolist()
    # base 2.0 (warm), then 1.0, then 0.1 (cool); x1.5 low quality; distinct-1 of the last
    # tokens: -, 1/1, 1/2, 1/3 (neutral), then 1/4 < 0.3: repetition heats up x1.2 (the fix).
    expected = [2.0, 2.0, 1.5, 1.5, 1.8, 1.8, 0.1 * 1.5 * 1.2]
    assert temps == pytest.approx(expected)
    scheduler.reset()
    assert scheduler.history == [] and scheduler.trace().numel() == 0


def test_three_factor_scheduler_gives_each_row_its_own_temperature():
    scheduler = ThreeFactorScheduler()
    scores = torch.stack([torch.zeros(30), torch.tensor([30.0] + [0.0] * 29)])
    scheduler(torch.zeros(2, 3, dtype=torch.long), scores)
    first, second = scheduler.history[0].tolist()
    assert first == pytest.approx(2.0) and second == pytest.approx(2.0 * 0.7)


@pytest.mark.parametrize(
    "make, word",
    [
        (lambda: EDT(t0=0.0), "t0"),
        (lambda: EDT(n=1.0), "n must be in (0, 1)"),
        (lambda: EDT(theta=-1.0), "theta"),
        (lambda: DynamicTemperature(1.0, 0.5), "max_temperature"),
        (lambda: DynamicTemperature(-0.1, 1.0), "min_temperature"),
        (lambda: DynamicTemperature(0.5, 1.0, 0.0), "exponent"),
        (lambda: ThreeFactorScheduler(min_temperature=0.0), "0 < min_temperature"),
        (lambda: ThreeFactorScheduler(base_temperature=3.0), "base_temperature <= max_temperature"),
        (lambda: ThreeFactorScheduler(warm_steps=10, cool_after=5), "warm_steps"),
    ],
)
def test_bad_scheduler_arguments(make, word):
    with pytest.raises(ValueError) as info:
        make()
    assert word in str(info.value)


def test_schedulers_reject_nan():
    for scheduler in (EDT(), DynamicTemperature(), ThreeFactorScheduler()):
        with pytest.raises(ValueError, match="NaN"):
            scheduler(IDS, torch.tensor([[0.0, float("nan")], [0.0, 0.0]]))


# ---------------------------------------------------------------------------- measures


def test_distinct_and_self_similarity():
    same = [[1, 2, 3, 4]] * 3
    different = [[1, 2, 3], [4, 5, 6], [7, 8, 9]]
    assert distinct_n(same, 2) == pytest.approx(3 / 9)
    assert distinct_n(different, 2) == 1.0
    assert self_similarity(same) == 1.0 and self_similarity(different) == 0.0
    assert self_similarity([[1, 2, 3], [2, 3, 4]]) == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="at least 2"):
        self_similarity([[1, 2]])


def test_trim_and_perplexity_ignore_padding_after_eos():
    import minidecode

    model, _ = minidecode.load("main-draft")
    tokens = sample_batch(model, [0, 11, 12, 13], [EDT()], n=4, max_new_tokens=6, seed=0,
                          eos_token_id=0)
    assert torch.equal(tokens, sample_batch(model, [0, 11, 12, 13], [EDT()], n=4,
                                            max_new_tokens=6, seed=0, eos_token_id=0))
    padded = torch.cat([tokens, torch.zeros(4, 3, dtype=torch.long)], dim=1)
    rows = trim_at_eos(padded, 4, 0)
    assert all(len(row) <= 7 for row in rows)
    ppl_padded = perplexity(model, padded, 4, eos_token_id=0)
    ended = [0 in row for row in trim_at_eos(tokens, 4, 0)]
    ppl = perplexity(model, tokens, 4, eos_token_id=0)
    for i, done in enumerate(ended):
        if done:
            assert ppl_padded[i].item() == pytest.approx(ppl[i].item(), rel=1e-5)
    assert torch.isfinite(ppl).all() and (ppl >= 1).all()
