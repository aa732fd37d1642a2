"""Losslessness measured as a distribution (chapter 07): ``chi_square_p_value``,
``chi_square_power`` and ``lossless_p_values`` on small hand-made distributions, so each runs in
well under a second. Under the real rule the p-values of many seeds are uniform (a KS test); under
the common wrong rule (on rejection, draw from p instead of the residual) they pile up at 0."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import chisquare, kstest

from minidecode.speculative import (
    chi_square_p_value,
    chi_square_power,
    lossless_p_values,
    verify_draft,
)

# p puts no mass on the last 4 of 10 tokens; the drafts do.
P = torch.tensor([0.4, 0.25, 0.15, 0.1, 0.07, 0.03, 0.0, 0.0, 0.0, 0.0])
Q_MODEL = torch.tensor([0.3, 0.3, 0.1, 0.1, 0.05, 0.05, 0.04, 0.03, 0.02, 0.01])
Q_UNIFORM = torch.full((10,), 0.1)


def resample_from_p(target_probs, draft_probs, draft_tokens, generator):
    """The common first attempt: after a rejection, draw from p, not from max(0, p - q)."""
    accepted_len, next_token = verify_draft(target_probs, draft_probs, draft_tokens, generator)
    from_p = torch.multinomial(target_probs[:, 0], 1, generator=generator)[:, 0]
    return accepted_len, torch.where(accepted_len < 1, from_p, next_token)


def test_chi_square_p_value_pools_rare_bins_like_scipy() -> None:
    probs = torch.tensor([0.5, 0.3, 0.19, 0.006, 0.004])     # 1000 draws: the last two expect < 5
    samples = torch.tensor([0] * 480 + [1] * 310 + [2] * 200 + [3] * 6 + [4] * 4)
    # the pooled rare bin (expects 10) is kept as a bin of its own
    wanted = chisquare([480, 310, 200, 10], [500, 300, 190, 10]).pvalue
    assert chi_square_p_value(samples, probs) == pytest.approx(wanted, rel=1e-6)   # float32 p
    assert chi_square_p_value(torch.tensor([0, 1, 5]), torch.tensor([0.5, 0.5] + [0.0] * 4)) == 0
    with pytest.raises(ValueError, match="one token"):
        chi_square_p_value(torch.zeros(100, dtype=torch.long), torch.tensor([1.0, 0.0]))


def test_chi_square_power_is_the_level_without_a_deviation_and_matches_simulation() -> None:
    assert chi_square_power(P, P, 1000) == pytest.approx(0.05, abs=1e-12)
    shifted = P.clone()
    shifted[0] -= 0.03
    shifted[1] += 0.03
    powers = [chi_square_power(P, shifted, n) for n in (500, 2000, 8000)]
    assert powers[0] < powers[1] < powers[2]
    generator = torch.Generator().manual_seed(0)
    rejected = [chi_square_p_value(torch.multinomial(shifted, 2000, replacement=True,
                                                     generator=generator), P) < 0.05
                for _ in range(400)]
    assert np.mean(rejected) == pytest.approx(powers[1], abs=0.08)
    with pytest.raises(ValueError, match="n must"):
        chi_square_power(P, shifted, 0)


@pytest.mark.parametrize("draft", [Q_MODEL, Q_UNIFORM], ids=["draft model", "uniform draft"])
def test_p_values_of_the_real_rule_are_uniform(draft) -> None:
    values = lossless_p_values(P, draft, runs=2000, seeds=range(150))
    assert len(values) == 150 and all(0 <= v <= 1 for v in values)
    assert kstest(values, "uniform").pvalue > 1e-3
    # a uniform sample puts about 5% below 0.05, not most of it
    assert np.mean(np.array(values) < 0.05) < 0.12


def test_p_values_of_the_wrong_rule_pile_up_at_zero() -> None:
    values = lossless_p_values(P, Q_MODEL, runs=2000, seeds=range(30), verify=resample_from_p)
    assert np.median(values) < 1e-3
    assert kstest(values, "uniform").pvalue < 1e-6


def test_lossless_p_values_checks_its_arguments() -> None:
    with pytest.raises(ValueError, match="runs"):
        lossless_p_values(P, Q_MODEL, runs=10)
    with pytest.raises(ValueError, match="target_probs"):
        lossless_p_values(P, Q_MODEL[:5])
