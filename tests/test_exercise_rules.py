"""Every rule an exercise's text states has a case that fails without it.

For each rule of each exercise (solutions/NN_*.ipynb, the markdown above the function), a
deliberately wrong variant that breaks that rule only; ``check_rejects`` asserts that the check
fails on the stub and on the variant and passes the course's own reference. Rules on inputs that
must not change are enforced by the grader for every exercise (an in-place variant fails).
"""

from __future__ import annotations

import math
import re
from collections import Counter

import pytest
import torch
import torch.nn.functional as F

INF = float("inf")


def _softmax_t(logits, temperature):
    if not temperature > 0:
        raise ValueError("temperature")
    return torch.softmax(logits / temperature, dim=-1)


# ----------------------------------------------------------------------------------- 00.1
def softmax_float32(logits, temperature):  # same shape and dtype as logits
    return _softmax_t(logits.float(), temperature)


def softmax_in_place(logits, temperature):  # inputs are left alone
    if not temperature > 0:
        raise ValueError("temperature")
    logits.div_(temperature)
    return torch.softmax(logits, dim=-1)


def softmax_first_dim(logits, temperature):  # over the last dimension
    if not temperature > 0:
        raise ValueError("temperature")
    return torch.softmax(logits / temperature, dim=0)


def softmax_no_value_error(logits, temperature):  # ValueError unless temperature > 0
    return torch.softmax(logits / temperature, dim=-1)


def softmax_naive(logits, temperature):  # numerically stable
    if not temperature > 0:
        raise ValueError("temperature")
    weights = torch.exp(logits / temperature)
    return weights / weights.sum(dim=-1, keepdim=True)


# ----------------------------------------------------------------------------------- 01.1
def _min_p(logits, min_p, *, top=None, compare=torch.lt, cast=None, in_place=False):
    if not 0 <= min_p <= 1:
        raise ValueError("min_p")
    logits = logits.float() if cast else logits
    probs = torch.softmax(logits, dim=-1)
    top = probs.amax(dim=-1, keepdim=True) if top is None else top(probs)
    fill = logits.masked_fill_ if in_place else logits.masked_fill
    return fill(compare(probs, min_p * top), -INF)


def min_p_float32(logits, min_p):
    return _min_p(logits, min_p, cast=True)


def min_p_in_place(logits, min_p):
    return _min_p(logits, min_p, in_place=True)


def min_p_batch_wide_max(logits, min_p):  # each row against its own top probability
    return _min_p(logits, min_p, top=lambda probs: probs.max())


def min_p_at_most(logits, min_p):  # below means strictly below
    return _min_p(logits, min_p, compare=torch.le)


def min_p_no_value_error(logits, min_p):
    probs = torch.softmax(logits, dim=-1)
    return logits.masked_fill(probs < min_p * probs.amax(dim=-1, keepdim=True), -INF)


# ----------------------------------------------------------------------------------- 01.2
def _top_p(logits, top_p, *, inclusive=False, cast=False, in_place=False, check=True):
    if check and not 0 < top_p <= 1:
        raise ValueError("top_p")
    logits = logits.float() if cast else logits
    sorted_logits, _ = torch.sort(logits, dim=-1, descending=True)
    sorted_probs = torch.softmax(sorted_logits, dim=-1)
    mass = sorted_probs.cumsum(dim=-1) - (0 if inclusive else sorted_probs)
    kept = (mass < top_p).sum(dim=-1, keepdim=True).clamp(min=1)
    threshold = sorted_logits.gather(-1, kept - 1)
    fill = logits.masked_fill_ if in_place else logits.masked_fill
    return fill(logits < threshold, -INF)


def top_p_float32(logits, top_p):
    return _top_p(logits, top_p, cast=True)


def top_p_in_place(logits, top_p):
    return _top_p(logits, top_p, in_place=True)


def top_p_inclusive_cumsum(logits, top_p):  # the mass strictly before the token
    return _top_p(logits, top_p, inclusive=True)


def top_p_splitting_ties(logits, top_p):  # ties at the boundary are kept together
    if not 0 < top_p <= 1:
        raise ValueError("top_p")
    order = torch.argsort(logits, dim=-1, descending=True, stable=True)
    sorted_probs = torch.softmax(logits.gather(-1, order), dim=-1)
    keep_sorted = (sorted_probs.cumsum(dim=-1) - sorted_probs) < top_p
    keep = torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)
    return logits.masked_fill(~keep, -INF)


def top_p_no_value_error(logits, top_p):
    return _top_p(logits, top_p, check=False)


# ----------------------------------------------------------------------------------- 02.1
def _entropy(logits):
    log_probs = torch.log_softmax(logits, dim=-1)
    probs = log_probs.exp()
    present = probs > 0
    surprisal = torch.where(present, -log_probs, torch.zeros_like(log_probs))
    entropy = (probs * surprisal).sum(dim=-1)
    deviation = torch.where(present, surprisal - entropy.unsqueeze(-1), torch.zeros_like(probs))
    return entropy, (probs * deviation**2).sum(dim=-1)


def entropy_input_dtype(logits):  # float32 whatever the input dtype, float16 included
    entropy, varentropy = _entropy(logits.float())
    return entropy.to(logits.dtype), varentropy.to(logits.dtype)


def entropy_nan_on_minus_inf(logits):  # -inf entries contribute 0, not nan
    log_probs = torch.log_softmax(logits.float(), dim=-1)
    probs = log_probs.exp()
    entropy = -(probs * log_probs).sum(dim=-1)
    return entropy, (probs * (log_probs + entropy.unsqueeze(-1)) ** 2).sum(dim=-1)


# ----------------------------------------------------------------------------------- 02.2
def _adaptive(logits, epsilon, *, leading_run=True, open_top=True):
    if not (0 < epsilon < 1 if open_top else 0 < epsilon <= 1):
        raise ValueError("epsilon")
    vocab = logits.shape[-1]
    probs, _ = torch.sort(torch.softmax(logits.double(), dim=-1), dim=-1, descending=True)
    rest = (1 - probs.cumsum(dim=-1)).clamp(min=0)
    rest[..., -1] = 0
    others = torch.arange(vocab - 1, -1, -1, dtype=probs.dtype)
    entropies = (-torch.special.xlogy(probs, probs).cumsum(dim=-1)
                 - torch.special.xlogy(rest, rest / others.clamp(min=1)))
    log_vocab = torch.tensor(vocab, dtype=torch.float64).log()
    previous = torch.cat([log_vocab.expand_as(entropies[..., :1]), entropies[..., :-1]], dim=-1)
    growing = ((previous - entropies) / log_vocab)[..., 1:] > epsilon
    if leading_run:
        growing = torch.cumprod(growing.long(), dim=-1)
    return 1 + growing.long().sum(dim=-1)


def adaptive_counts_every_gain(logits, epsilon):  # stop at the first k with gain <= epsilon
    return _adaptive(logits, epsilon, leading_run=False)


def adaptive_epsilon_one_allowed(logits, epsilon):  # epsilon in (0, 1), open at 1
    return _adaptive(logits, epsilon, open_top=False)


# ----------------------------------------------------------------------------------- 03.1
def _edt(entropy, t0, n, theta, *, checks=(True, True, True), zero=None):
    if checks[0] and not t0 > 0:
        raise ValueError("t0")
    if checks[1] and not 0 < n < 1:
        raise ValueError("n")
    if checks[2] and not theta > 0:
        raise ValueError("theta")
    result = t0 * torch.exp(theta / entropy * math.log(n))
    return result if zero is None else torch.where(entropy > 0, result, zero * t0)


def edt_t0_at_zero_entropy(entropy, t0, n, theta):  # H = 0 gives 0
    return _edt(entropy, t0, n, theta, zero=1.0)


def edt_no_t0_check(entropy, t0, n, theta):
    return _edt(entropy, t0, n, theta, checks=(False, True, True)) if t0 != 0 else entropy * 0


def edt_no_n_check(entropy, t0, n, theta):
    if n <= 0:
        return entropy * 0
    return _edt(entropy, t0, n, theta, checks=(True, False, True))


def edt_no_theta_check(entropy, t0, n, theta):
    return _edt(entropy, t0, n, theta, checks=(True, True, False))


# ----------------------------------------------------------------------------------- 03.2
def _dynamic(entropy, n_candidates, low, high, exponent, *, clamp=True, checks=(True, True, True),
             one_candidate_guard=True):
    if checks[0] and not 0 <= low:
        raise ValueError("low")
    if checks[1] and not low <= high:
        raise ValueError("high")
    if checks[2] and not exponent > 0:
        raise ValueError("exponent")
    max_entropy = torch.log(n_candidates.to(entropy.dtype))
    if one_candidate_guard:
        fraction = torch.where(max_entropy > 0, entropy / max_entropy.clamp(min=1e-12),
                               torch.zeros_like(entropy))
    else:
        fraction = entropy / max_entropy
    if clamp:
        fraction = fraction.clamp(0, 1)
    return low + (high - low) * fraction**exponent


def dynamic_no_clamp(*args):
    return _dynamic(*args, clamp=False)


def dynamic_no_one_candidate_guard(*args):  # n = 1: fraction 0
    return _dynamic(*args, one_candidate_guard=False)


def dynamic_negative_min_allowed(*args):
    return _dynamic(*args, checks=(False, True, True))


def dynamic_min_above_max_allowed(*args):
    return _dynamic(*args, checks=(True, False, True))


def dynamic_zero_exponent_allowed(*args):
    return _dynamic(*args, checks=(True, True, False))


# ----------------------------------------------------------------------------------- 04.1
def _delta(step_probs, span, *, rows=None, check_start=True):
    start, end = span
    if not (0 <= start or not check_start) or not start < end <= step_probs.shape[0]:
        raise ValueError("span")
    top2 = (step_probs[start:end] if rows is None else step_probs).topk(2, dim=-1).values
    return float((top2[:, 0] - top2[:, 1]).mean())


def delta_over_every_row(step_probs, span):  # read only the answer's rows
    return _delta(step_probs, span, rows="all")


def delta_negative_start_allowed(step_probs, span):  # 0 <= start
    return _delta(step_probs, span, check_start=False)


# ----------------------------------------------------------------------------------- 04.2
def _span(pieces, *, first=r"\s*\d+", more=r"\d+", match=re.fullmatch):
    for end in range(len(pieces), 0, -1):
        if match(first, pieces[end - 1]):
            start = end - 1
            while start > 0 and match(more, pieces[start]) and match(first, pieces[start - 1]):
                start -= 1
            return (start, end)
    return None


def span_continues_over_spaces(pieces):  # continuation pieces have no leading space
    return _span(pieces, more=r"\s*\d+")


def span_mixed_pieces(pieces):  # "14." mixes digits with a dot: not a number piece
    return _span(pieces, match=re.match)


# ----------------------------------------------------------------------------------- 05.1
def _front(scores, dominates):
    n = scores.shape[0]
    return [i for i in range(n)
            if not any(j != i and dominates(scores[j], scores[i]) for j in range(n))]


def front_equal_dominates(scores):  # equal candidates do not dominate each other
    return _front(scores, lambda a, b: bool((a >= b).all()))


def front_strict_everywhere(scores):  # better on one, at least as good elsewhere, dominates
    return _front(scores, lambda a, b: bool((a > b).all()))


def front_tensor_indices(scores):  # Python ints
    keep = _front(scores, lambda a, b: bool((a >= b).all() and (a > b).any()))
    return list(torch.tensor(keep, dtype=torch.long))


# ----------------------------------------------------------------------------------- 05.2
def _chebyshev(scores, weights, *, augment=1e-6, normalise=True, last_on_tie=False,
               check_negative=True, check_zero=True):
    if check_negative and bool((weights < 0).any()):
        raise ValueError("negative")
    if check_zero and float(weights.sum()) == 0.0:
        raise ValueError("zero")
    if normalise:
        low, high = scores.min(dim=0).values, scores.max(dim=0).values
        span = high - low
        scores = torch.where(span > 0, (scores - low) / torch.where(span > 0, span, 1.0), 0.0)
    gap = 1.0 - scores
    distance = (weights * gap).max(dim=1).values + augment * gap.sum(dim=1)
    if last_on_tie:
        return int(len(distance) - 1 - distance.flip(0).argmin())
    return int(distance.argmin())


def chebyshev_last_on_tie(scores, weights):
    return _chebyshev(scores, weights, last_on_tie=True)


def chebyshev_not_augmented(scores, weights):
    return _chebyshev(scores, weights, augment=0.0)


def chebyshev_not_normalised(scores, weights):
    return _chebyshev(scores, weights, normalise=False)


def chebyshev_negative_allowed(scores, weights):
    return _chebyshev(scores, weights, check_negative=False)


def chebyshev_all_zero_allowed(scores, weights):
    return _chebyshev(scores, weights, check_zero=False)


# ----------------------------------------------------------------------------------- 06.1
def semantic_entropy_log2(cluster_ids):  # natural log
    n = len(cluster_ids)
    if n < 2:
        raise ValueError("n")
    return float(-sum(c / n * math.log2(c / n) for c in Counter(cluster_ids).values()))


def semantic_entropy_one_sample_allowed(cluster_ids):
    n = len(cluster_ids)
    return float(-sum(c / n * math.log(c / n) for c in Counter(cluster_ids).values()))


# ----------------------------------------------------------------------------------- 06.2
def _auroc(scores, labels, *, tie=0.5, need_right=True):
    wrong = [s for s, y in zip(scores, labels) if y == 1]
    right = [s for s, y in zip(scores, labels) if y == 0]
    if not wrong or (need_right and not right):
        raise ValueError("one class")
    if not right:
        return 1.0
    wins = sum((w > r) + tie * (w == r) for w in wrong for r in right)
    return float(wins / (len(wrong) * len(right)))


def auroc_ties_count_zero(scores, labels):  # a tie counts one half
    return _auroc(scores, labels, tie=0.0)


def auroc_no_negative_allowed(scores, labels):
    return _auroc(scores, labels, need_right=False)


# ----------------------------------------------------------------------------------- 06.3
def _greedy(items, equivalent, *, any_member=False, last=False, swapped=False):
    clusters: list[list] = []
    ids = []
    for item in items:
        found = None
        for index, members in enumerate(clusters):
            for member in (members if any_member else members[:1]):
                if equivalent(item, member) if swapped else equivalent(member, item):
                    found = index
                    break
            if found is not None and not last:
                break
        if found is None:
            clusters.append([item])
            ids.append(len(clusters) - 1)
        else:
            clusters[found].append(item)
            ids.append(found)
    return ids


def greedy_any_member(items, equivalent):  # compare with the representative only
    return _greedy(items, equivalent, any_member=True)


def greedy_last_cluster(items, equivalent):  # join the first matching cluster
    return _greedy(items, equivalent, last=True)


def greedy_swapped_arguments(items, equivalent):  # equivalent(representative, item)
    return _greedy(items, equivalent, swapped=True)


# ----------------------------------------------------------------------------------- 07.1
def _verify(p, q, x, u, *, compare=float.__lt__, accepted=None, residual=None, cast=None):
    ratio = min(1.0, float(p[x]) / float(q[x]))
    if compare(u, ratio):
        return F.one_hot(torch.tensor(x), p.shape[-1]).to(cast or p.dtype) \
            if accepted is None else accepted(p)
    if residual is not None:
        return residual(p, q)
    rest = (p - q).clamp(min=0)
    return (rest / rest.sum() if rest.sum() > 0 else p).to(cast or p.dtype)


def verify_accept_returns_p(p, q, draft_token, uniform):  # accept branch: one-hot of x
    return _verify(p, q, draft_token, uniform, accepted=lambda p: p)


def verify_resample_from_p(p, q, draft_token, uniform):  # reject branch: the residual
    return _verify(p, q, draft_token, uniform, residual=lambda p, q: p)


def verify_unnormalised_residual(p, q, draft_token, uniform):  # reject branch: divided by sum
    return _verify(p, q, draft_token, uniform, residual=lambda p, q: (p - q).clamp(min=0))


def verify_at_most(p, q, draft_token, uniform):  # accept when uniform < ratio, strictly
    return _verify(p, q, draft_token, uniform, compare=float.__le__)


def verify_float32(p, q, draft_token, uniform):  # dtype of p
    return _verify(p, q, draft_token, uniform, cast=torch.float32)


def verify_in_place(p, q, draft_token, uniform):  # inputs are left alone
    ratio = min(1.0, float(p[draft_token]) / float(q[draft_token]))
    if uniform < ratio:
        return F.one_hot(torch.tensor(draft_token), p.shape[-1]).to(p.dtype)
    p.sub_(q).clamp_(min=0)
    return p / p.sum()


# ----------------------------------------------------------------------------------- 07.2
def prefix_counts_all_matches(draft_tokens, target_tokens):  # stop at the first disagreement
    return sum(int(a) == int(b) for a, b in zip(list(draft_tokens), list(target_tokens)))


def prefix_as_tensor(draft_tokens, target_tokens):  # an int
    same = torch.as_tensor(list(draft_tokens)) == torch.as_tensor(list(target_tokens))[:len(
        list(draft_tokens))]
    return same.long().cumprod(0).sum()


# ----------------------------------------------------------------------------------- 07.3
def _lookup(tokens, max_ngram, num_tokens, *, overlap=True, latest=True, longest_first=True):
    tokens = [int(t) for t in tokens]
    length = len(tokens)
    sizes = range(min(max_ngram, length - 1), 0, -1)
    for n in (sizes if longest_first else reversed(sizes)):
        pattern = tokens[length - n:]
        last_start = length - n - 1 if overlap else length - 2 * n
        starts = range(last_start, -1, -1) if latest else range(0, last_start + 1)
        for start in starts:
            if tokens[start:start + n] == pattern:
                return tokens[start + n:start + n + num_tokens]
    return []


def lookup_without_overlap(tokens, max_ngram, num_tokens):  # an overlapping copy counts
    return _lookup(tokens, max_ngram, num_tokens, overlap=False)


def lookup_earliest(tokens, max_ngram, num_tokens):  # the latest occurrence
    return _lookup(tokens, max_ngram, num_tokens, latest=False)


def lookup_shortest_first(tokens, max_ngram, num_tokens):  # the longest n-gram first
    return _lookup(tokens, max_ngram, num_tokens, longest_first=False)


# ----------------------------------------------------------------------------------- 08.1
def _mask(length, n_sinks, window, *, causal=True, sinks=True, inclusive_window=False):
    q = torch.arange(length)[:, None]
    k = torch.arange(length)[None, :]
    in_window = (q - k <= window) if inclusive_window else (q - k < window)
    keep = ((k < n_sinks) if sinks else torch.zeros_like(in_window)) | in_window
    return (k <= q) & keep if causal else keep


def mask_without_sinks(length, n_sinks, window):
    return _mask(length, n_sinks, window, sinks=False)


def mask_window_one_too_wide(length, n_sinks, window):  # the window counts the query itself
    return _mask(length, n_sinks, window, inclusive_window=True)


def mask_sinks_in_the_future(length, n_sinks, window):  # k <= q
    return _mask(length, n_sinks, window, causal=False)


# ----------------------------------------------------------------------------------- 08.2
def _missed(weights, mask, *, all_queries=False):
    q_len, k_len = weights.shape[-2:]
    causal = torch.arange(k_len)[None, :] <= torch.arange(k_len - q_len, k_len)[:, None]
    dropped = causal & ~mask
    per_query = (weights * dropped).sum(dim=-1)
    if all_queries:
        return per_query.mean(dim=-1)
    return per_query[..., dropped.any(dim=-1)].mean(dim=-1)


def missed_over_all_queries(weights, mask):  # leave out queries that lose nothing
    return _missed(weights, mask, all_queries=True)


def missed_nan_when_nothing_dropped(weights, mask):  # zeros when nothing is dropped
    return _missed(weights, mask)


# ----------------------------------------------------------------------------------- 08.3
def heads_highest(scores, fraction):  # the lowest scores
    count = round(fraction * scores.numel())
    top = scores.flatten().argsort(descending=True)[:count]
    return {divmod(int(i), scores.shape[1]) for i in top}


def heads_floor(scores, fraction):  # round(fraction * heads), not int()
    count = int(fraction * scores.numel() * 0.999)
    return {divmod(int(i), scores.shape[1]) for i in scores.flatten().argsort()[:count]}


# ----------------------------------------------------------------------------------- 09.1
def nuc_log_of_softmax(logits, input_ids):  # log_softmax: a log of a softmax underflows
    log_probs = torch.softmax(logits.float(), dim=-1).log()[:, :-1]
    nll = -log_probs.gather(-1, input_ids[:, 1:, None])[..., 0]
    return torch.cat([torch.zeros_like(nll[:, :1]), nll], dim=1)


def nuc_not_shifted(logits, input_ids):  # logits at t predict the token at t + 1
    nll = -torch.log_softmax(logits.float(), dim=-1).gather(-1, input_ids[..., None])[..., 0]
    return torch.cat([torch.zeros_like(nll[:, :1]), nll[:, 1:]], dim=1)


# ----------------------------------------------------------------------------------- 09.2
def cap_keeps_catalyst_keys(weights, context_length, num_kv_heads):  # drop the catalyst's keys
    batch, heads = weights.shape[:2]
    on_keys = weights[..., -context_length:].sum(dim=2)
    return on_keys.reshape(batch, num_kv_heads, heads // num_kv_heads, context_length).sum(dim=2)


def cap_interleaved_groups(weights, context_length, num_kv_heads):  # h // (heads // kv)
    batch, heads = weights.shape[:2]
    on_context = weights[..., :context_length].sum(dim=2)
    grouped = on_context.reshape(batch, heads // num_kv_heads, num_kv_heads, context_length)
    return grouped.sum(dim=1)


# ----------------------------------------------------------------------------------- 09.3
def _keep(nuc, cap, keep, alpha, *, exclude=True, sort=True):
    n_nuc = round(alpha * keep)
    novel = nuc.topk(n_nuc, dim=-1).indices
    rest = cap.scatter(-1, novel, -INF) if exclude else cap
    kept = torch.cat([novel, rest.topk(keep - n_nuc, dim=-1).indices], dim=-1)
    return kept.sort(dim=-1).values if sort else kept


def keep_may_take_twice(nuc, cap, keep, alpha):  # among those not already taken
    return _keep(nuc, cap, keep, alpha, exclude=False)


def keep_unsorted(nuc, cap, keep, alpha):  # sorted ascending
    return _keep(nuc, cap, keep, alpha, sort=False)


def keep_cap_first(nuc, cap, keep, alpha):  # NuC first, then CaP
    return _keep(cap, nuc, keep, 1 - alpha)


# ----------------------------------------------------------------------------------- 09.4
def positions_argsort(token_index):  # the rank of each entry, not the order
    return token_index.argsort(dim=-1)


def positions_across_rows(token_index):  # each row on its own
    flat = token_index.flatten()
    return flat.argsort().argsort().reshape(token_index.shape)


RULES = [
    ("00.1", "softmax_with_temperature", softmax_float32),
    ("00.1", "softmax_with_temperature", softmax_in_place),
    ("00.1", "softmax_with_temperature", softmax_first_dim),
    ("00.1", "softmax_with_temperature", softmax_no_value_error),
    ("00.1", "softmax_with_temperature", softmax_naive),
    ("01.1", "min_p_filter", min_p_float32),
    ("01.1", "min_p_filter", min_p_in_place),
    ("01.1", "min_p_filter", min_p_batch_wide_max),
    ("01.1", "min_p_filter", min_p_at_most),
    ("01.1", "min_p_filter", min_p_no_value_error),
    ("01.2", "top_p_filter", top_p_float32),
    ("01.2", "top_p_filter", top_p_in_place),
    ("01.2", "top_p_filter", top_p_inclusive_cumsum),
    ("01.2", "top_p_filter", top_p_splitting_ties),
    ("01.2", "top_p_filter", top_p_no_value_error),
    ("02.1", "entropy_varentropy", entropy_input_dtype),
    ("02.1", "entropy_varentropy", entropy_nan_on_minus_inf),
    ("02.2", "adaptive_candidate_count", adaptive_counts_every_gain),
    ("02.2", "adaptive_candidate_count", adaptive_epsilon_one_allowed),
    ("03.1", "edt_temperature", edt_t0_at_zero_entropy),
    ("03.1", "edt_temperature", edt_no_t0_check),
    ("03.1", "edt_temperature", edt_no_n_check),
    ("03.1", "edt_temperature", edt_no_theta_check),
    ("03.2", "dynamic_temperature", dynamic_no_clamp),
    ("03.2", "dynamic_temperature", dynamic_no_one_candidate_guard),
    ("03.2", "dynamic_temperature", dynamic_negative_min_allowed),
    ("03.2", "dynamic_temperature", dynamic_min_above_max_allowed),
    ("03.2", "dynamic_temperature", dynamic_zero_exponent_allowed),
    ("04.1", "answer_delta", delta_over_every_row),
    ("04.1", "answer_delta", delta_negative_start_allowed),
    ("04.2", "last_number_span", span_continues_over_spaces),
    ("04.2", "last_number_span", span_mixed_pieces),
    ("05.1", "pareto_front", front_equal_dominates),
    ("05.1", "pareto_front", front_strict_everywhere),
    ("05.1", "pareto_front", front_tensor_indices),
    ("05.2", "chebyshev_select", chebyshev_last_on_tie),
    ("05.2", "chebyshev_select", chebyshev_not_augmented),
    ("05.2", "chebyshev_select", chebyshev_not_normalised),
    ("05.2", "chebyshev_select", chebyshev_negative_allowed),
    ("05.2", "chebyshev_select", chebyshev_all_zero_allowed),
    ("06.1", "discrete_semantic_entropy", semantic_entropy_log2),
    ("06.1", "discrete_semantic_entropy", semantic_entropy_one_sample_allowed),
    ("06.2", "auroc", auroc_ties_count_zero),
    ("06.2", "auroc", auroc_no_negative_allowed),
    ("06.3", "cluster_greedy", greedy_any_member),
    ("06.3", "cluster_greedy", greedy_last_cluster),
    ("06.3", "cluster_greedy", greedy_swapped_arguments),
    ("07.1", "verify_position", verify_accept_returns_p),
    ("07.1", "verify_position", verify_resample_from_p),
    ("07.1", "verify_position", verify_unnormalised_residual),
    ("07.1", "verify_position", verify_at_most),
    ("07.1", "verify_position", verify_float32),
    ("07.1", "verify_position", verify_in_place),
    ("07.2", "accepted_prefix_length", prefix_counts_all_matches),
    ("07.2", "accepted_prefix_length", prefix_as_tensor),
    ("07.3", "find_candidate_tokens", lookup_without_overlap),
    ("07.3", "find_candidate_tokens", lookup_earliest),
    ("07.3", "find_candidate_tokens", lookup_shortest_first),
    ("08.1", "sink_window_mask", mask_without_sinks),
    ("08.1", "sink_window_mask", mask_window_one_too_wide),
    ("08.1", "sink_window_mask", mask_sinks_in_the_future),
    ("08.2", "missed_mass", missed_over_all_queries),
    ("08.2", "missed_mass", missed_nan_when_nothing_dropped),
    ("08.3", "choose_local_heads", heads_highest),
    ("08.3", "choose_local_heads", heads_floor),
    ("09.1", "novelty_scores", nuc_log_of_softmax),
    ("09.1", "novelty_scores", nuc_not_shifted),
    ("09.2", "catalyst_scores", cap_keeps_catalyst_keys),
    ("09.2", "catalyst_scores", cap_interleaved_groups),
    ("09.3", "infinipot_keep", keep_may_take_twice),
    ("09.3", "infinipot_keep", keep_unsorted),
    ("09.3", "infinipot_keep", keep_cap_first),
    ("09.4", "context_reset_positions", positions_argsort),
    ("09.4", "context_reset_positions", positions_across_rows),
]


def _more_rules() -> list:
    """Further exercises keep their wrong variants beside this file, one module a chapter
    (``tests/rules_chNN.py``, each defining ``RULES`` in the same form as above)."""
    import importlib.util
    from pathlib import Path

    more = []
    for path in sorted(Path(__file__).parent.glob("rules_ch*.py")):
        spec = importlib.util.spec_from_file_location(f"_rules_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        more += module.RULES
    return more


RULES += _more_rules()


@pytest.mark.parametrize(("exercise_id", "name", "wrong"), RULES,
                         ids=[wrong.__name__ for _, _, wrong in RULES])
def test_each_stated_rule_has_a_case_that_fails_without_it(exercise_id, name, wrong,
                                                           check_rejects):
    check_rejects(exercise_id, name, wrong)


def test_every_exercise_has_at_least_one_rule_variant():
    from minidecode.course.grading import exercises_for_chapter

    covered = {exercise_id for exercise_id, _, _ in RULES}
    every = {eid for chapter in range(11) for eid in exercises_for_chapter(f"{chapter:02d}")}
    assert every <= covered, sorted(every - covered)


@pytest.mark.parametrize(
    ("exercise_id", "wrong", "named"),
    [
        ("07.1", verify_resample_from_p, "reject branch"),
        ("07.1", verify_accept_returns_p, "accept branch"),
        ("07.3", lookup_without_overlap, "an occurrence overlapping the suffix counts"),
        ("01.1", min_p_float32, "the dtype of logits is kept"),
        ("01.2", top_p_splitting_ties, "tie"),  # "the tie keeps all" comes first
    ],
)
def test_the_failure_names_the_rule(exercise_id, wrong, named, capsys):
    from minidecode.course.grading import check

    assert check(exercise_id, wrong) is False
    first_line = capsys.readouterr().out.splitlines()[0]
    assert named in first_line, first_line


def test_07_3_overlap_case_from_the_issue():
    from minidecode.prompt_lookup import find_candidate_tokens

    assert find_candidate_tokens([1, 1, 2, 1, 1, 1], 2, 2) == [1]
    assert lookup_without_overlap([1, 1, 2, 1, 1, 1], 2, 2) == [2, 1]
