"""Wrong variants for chapter 10's exercises (see tests/test_exercise_rules.py): each breaks one
rule the exercise's text states, and the check must fail on it."""

from __future__ import annotations

import torch

INF = float("inf")


# ----------------------------------------------------------------------------------- 10.1
def _merge(a, b, *, shift_means=True, rescale=True, between=True, guard=True):
    m_a, mass_a, mean_a, var_a = a
    m_b, mass_b, mean_b, var_b = b
    m = torch.maximum(m_a, m_b)
    finite = torch.where(torch.isfinite(m), m, torch.zeros_like(m)) if guard else m
    zero = torch.zeros_like(mass_a)
    if rescale:
        w_a = torch.where(mass_a > 0, mass_a * torch.exp(m_a - finite), zero) if guard else \
            mass_a * torch.exp(m_a - finite)
        w_b = torch.where(mass_b > 0, mass_b * torch.exp(m_b - finite), zero) if guard else \
            mass_b * torch.exp(m_b - finite)
    else:
        w_a, w_b = mass_a, mass_b
    if shift_means:
        mean_a = torch.where(mass_a > 0, mean_a + (m_a - finite), zero) if guard else \
            mean_a + (m_a - finite)
        mean_b = torch.where(mass_b > 0, mean_b + (m_b - finite), zero) if guard else \
            mean_b + (m_b - finite)
    w = w_a + w_b
    safe = torch.where(w > 0, w, torch.ones_like(w)) if guard else w
    mean = (w_a * mean_a + w_b * mean_b) / safe
    var = (w_a * var_a + w_b * var_b) / safe
    if between:
        var = var + (w_a / safe) * (w_b / safe) * (mean_a - mean_b) ** 2
    return m, w, mean, var


def merge_means_not_shifted(a, b):  # each part's mean is measured from its own max
    return _merge(a, b, shift_means=False)


def merge_masses_not_rescaled(a, b):  # weights w = mass * exp(m_part - m)
    return _merge(a, b, rescale=False)


def merge_without_between_term(a, b):  # + w_a w_b (mean_a - mean_b)^2 / W^2
    return _merge(a, b, between=False)


def merge_nan_on_empty(a, b):  # an empty part changes nothing, and no nan
    return _merge(a, b, guard=False)


# ----------------------------------------------------------------------------------- 10.2
def _blocked(logits, threads, *, check=True, guard=True, cast=torch.float64, log_mass=True):
    if check and (threads < 1 or threads & (threads - 1)):
        raise ValueError("threads")
    from minidecode.kernels.softmax_entropy import merge_moments

    rows, vocab = logits.shape
    per = -(-vocab // threads) if threads > 0 else vocab
    threads = max(threads, 1)
    padded = torch.full((rows, per * threads), -INF, dtype=torch.float64)
    padded[:, :vocab] = logits.double()
    parts = padded.view(rows, per, threads).transpose(1, 2)
    m = parts.amax(dim=-1)
    shift = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    y = parts - shift[..., None]
    e = torch.exp(y)
    mass = e.sum(dim=-1)
    safe = torch.where(mass > 0, mass, torch.ones_like(mass))
    if guard:
        y = torch.where(e > 0, y, torch.zeros_like(y))
    mean = (e * y).sum(dim=-1) / safe
    var = (e * (y - mean[..., None]) ** 2).sum(dim=-1) / safe
    moments = (m, mass, mean, var)
    while moments[0].shape[1] > 1:
        half = moments[0].shape[1] // 2
        moments = merge_moments(tuple(x[:, :half] for x in moments),
                                tuple(x[:, half:] for x in moments))
    _, mass, mean, var = (x[:, 0] for x in moments)
    entropy = torch.log(mass) - mean if log_mass else -mean
    return entropy.to(cast), var.to(cast)


def blocked_no_value_error(logits, threads):  # threads a power of 2
    return _blocked(logits, max(threads, 1), check=False)


def blocked_nan_on_minus_inf(logits, threads):  # -inf tokens add no mass, and no nan
    return _blocked(logits, threads, guard=False)


def blocked_float32(logits, threads):  # float64 results
    return _blocked(logits, threads, cast=torch.float32)


def blocked_forgets_log_mass(logits, threads):  # H = log S - mean
    return _blocked(logits, threads, log_mass=False)


# ----------------------------------------------------------------------------------- 10.3
def _radix(logits, min_p, top_p, *, flip_negatives=True, min_p_first=True, by_mass=True,
           passes=(24, 16, 8, 0), check=True):
    if check and not (0 <= min_p <= 1 and 0 < top_p <= 1):
        raise ValueError("min_p / top_p")
    z = logits.float()
    e = torch.exp(z - z.amax(dim=-1, keepdim=True))
    keep = (e >= min_p) & (e > 0)
    if top_p == 1:
        return keep
    bits = z.view(torch.int32).long() & 0xFFFFFFFF
    key = torch.where(bits >= 2**31, bits ^ 0xFFFFFFFF, bits | 2**31) if flip_negatives else bits
    candidates = keep if min_p_first else e > 0
    mass = torch.where(candidates, e if by_mass else torch.ones_like(e),
                       torch.zeros_like(e)).double()
    budget = top_p * mass.sum(dim=-1, keepdim=True)
    prefix = torch.zeros_like(key[:, :1])
    above = torch.zeros_like(budget)
    for shift in passes:
        same_high = (key >> (shift + 8)) == (prefix >> (shift + 8))
        digit = (key >> shift) & 255
        histogram = torch.zeros(key.shape[0], 256, dtype=torch.float64).scatter_add(
            1, digit, torch.where(same_high, mass, torch.zeros_like(mass)))
        from_top = histogram.flip(-1)
        before = above + from_top.cumsum(dim=-1) - from_top
        crossing = (from_top > 0) & (before < budget) & (before + from_top >= budget)
        first = crossing.long().argmax(dim=-1, keepdim=True)
        prefix = prefix | ((255 - first) << shift)
        above = before.gather(-1, first)
    return keep & (key >= prefix)


def radix_raw_bits(logits, min_p, top_p):  # negative floats: flip every bit
    return _radix(logits, min_p, top_p, flip_negatives=False)


def radix_budget_over_all_tokens(logits, min_p, top_p):  # top-p on the min-p survivors' mass
    return _radix(logits, min_p, top_p, min_p_first=False)


def radix_counts_tokens(logits, min_p, top_p):  # a histogram of mass, not of counts
    return _radix(logits, min_p, top_p, by_mass=False)


def radix_one_pass(logits, min_p, top_p):  # four passes, 8 bits each
    return _radix(logits, min_p, top_p, passes=(24,))


def radix_no_value_error(logits, min_p, top_p):
    return _radix(logits, min_p, top_p, check=False)


# ----------------------------------------------------------------------------------- 10.4
def _verify(target_probs, draft_probs, draft_tokens, accept_uniforms, sample_uniforms, *,
            leading=True, strict=True, nan_rejects=True, bonus_row=True, fallback_to_p=True,
            last_positive=True, check=True):
    batch, gamma = draft_tokens.shape
    vocab = target_probs.shape[-1]
    if check and not (0 <= int(draft_tokens.min()) and int(draft_tokens.max()) < vocab):
        raise ValueError("draft_tokens")
    accepted_len = torch.zeros(batch, dtype=torch.long)
    next_token = torch.zeros(batch, dtype=torch.long)
    for b in range(batch):
        a, count = 0, 0
        while a < gamma:
            x = int(draft_tokens[b, a])
            ratio = target_probs[b, a, x] / draft_probs[b, a, x]
            # Python's min(1.0, nan) is 1.0: the nan ratio of p = q = 0 would accept
            ratio = float(ratio.clamp(max=1.0)) if nan_rejects else min(1.0, float(ratio))
            u = float(accept_uniforms[b, a])
            ok = u < ratio if strict else u <= ratio
            if not ok and leading:
                break
            count += ok
            a += 1
        a = a if leading else count
        row = a if (bonus_row or a < gamma) else gamma - 1
        weights = target_probs[b, row]
        if a < gamma:
            residual = (target_probs[b, a] - draft_probs[b, a]).clamp(min=0)
            if residual.sum() > 0 or not fallback_to_p:
                weights = residual
        cdf = weights.cumsum(dim=-1)
        index = int((cdf <= sample_uniforms[b] * cdf[-1]).sum())
        if last_positive:
            positive = torch.nonzero(weights > 0)
            index = min(index, int(positive.max()) if len(positive) else 0)
        accepted_len[b], next_token[b] = a, index
    return accepted_len, next_token


def verify_counts_every_acceptance(*args):  # stop at the first rejection
    return _verify(*args, leading=False)


def verify_at_most(*args):  # accept when u < ratio, strictly
    return _verify(*args, strict=False)


def verify_nan_accepts(*args):  # a nan ratio (p = q = 0) rejects
    return _verify(*args, nan_rejects=False)


def verify_bonus_from_last_draft_row(*args):  # after full acceptance: p_{gamma+1}
    return _verify(*args, bonus_row=False)


def verify_no_fallback_to_p(*args):  # a residual with no mass: draw from p_a
    return _verify(*args, fallback_to_p=False)


def verify_no_last_positive(*args):  # rounding: the last index with positive weight
    return _verify(*args, last_positive=False)


def verify_no_value_error(*args):
    return _verify(*args, check=False)


# ----------------------------------------------------------------------------------- 10.5
def merge_order_exactly_equal():  # float64 rounding depends on the order of the sums
    return "a"


RULES = [
    ("10.1", "merge_moments", merge_means_not_shifted),
    ("10.1", "merge_moments", merge_masses_not_rescaled),
    ("10.1", "merge_moments", merge_without_between_term),
    ("10.1", "merge_moments", merge_nan_on_empty),
    ("10.2", "blocked_moments", blocked_no_value_error),
    ("10.2", "blocked_moments", blocked_nan_on_minus_inf),
    ("10.2", "blocked_moments", blocked_float32),
    ("10.2", "blocked_moments", blocked_forgets_log_mass),
    ("10.3", "radix_keep_mask", radix_raw_bits),
    ("10.3", "radix_keep_mask", radix_budget_over_all_tokens),
    ("10.3", "radix_keep_mask", radix_counts_tokens),
    ("10.3", "radix_keep_mask", radix_one_pass),
    ("10.3", "radix_keep_mask", radix_no_value_error),
    ("10.4", "verify_block", verify_counts_every_acceptance),
    ("10.4", "verify_block", verify_at_most),
    ("10.4", "verify_block", verify_nan_accepts),
    ("10.4", "verify_block", verify_bonus_from_last_draft_row),
    ("10.4", "verify_block", verify_no_fallback_to_p),
    ("10.4", "verify_block", verify_no_last_positive),
    ("10.4", "verify_block", verify_no_value_error),
    ("10.5", "answer_10_5", merge_order_exactly_equal),
]
