"""Wrong variants of chapter 02's later exercises (see tests/test_exercise_rules.py): each breaks
one rule the exercise states, and the check must reject it."""

from __future__ import annotations

import torch

from minidecode.adaptive import adaptive_candidate_count

INF = float("inf")


# ----------------------------------------------------------------------------------- 02.3
@torch.no_grad()
def _adaptive_loop(model, prompt_ids, max_new_tokens, epsilon, temperature, seed, stop_token_id,
                   *, cache=True, temperature_first=True, ties=True, per_row=True,
                   count_after_ties=True):
    if not 0 < epsilon < 1 or not temperature > 0:
        raise ValueError("epsilon or temperature")
    generator = torch.Generator().manual_seed(seed)
    tokens, counts = prompt_ids, []
    if max_new_tokens == 0:
        return tokens, torch.zeros(0, prompt_ids.shape[0], dtype=torch.long)
    kv = model.new_cache() if cache else None
    logits = model(prompt_ids, kv).logits[:, -1].float()
    finished = torch.zeros(prompt_ids.shape[0], dtype=torch.bool)
    while True:
        scores = logits / temperature if temperature_first else logits
        count = adaptive_candidate_count(scores, epsilon)
        if not per_row:
            count = count.max().expand_as(count)
        sorted_scores, order = torch.sort(scores, dim=-1, descending=True)
        if ties:
            threshold = sorted_scores.gather(-1, (count - 1)[:, None])
            scores = scores.masked_fill(scores < threshold, -INF)
        else:
            ranks = torch.empty_like(order).scatter_(-1, order, torch.arange(scores.shape[-1])
                                                     .expand_as(order))
            scores = scores.masked_fill(ranks >= count[:, None], -INF)
        if not temperature_first:
            scores = scores / temperature
        counts.append((scores > -INF).sum(dim=-1) if count_after_ties else count)
        token = torch.multinomial(torch.softmax(scores, -1), 1, generator=generator)[:, 0]
        if stop_token_id is not None:
            token = torch.where(finished, stop_token_id, token)
            finished |= token == stop_token_id
        tokens = torch.cat([tokens, token[:, None]], dim=1)
        if tokens.shape[1] - prompt_ids.shape[1] == max_new_tokens or bool(finished.all()):
            return tokens, torch.stack(counts)
        logits = model(token[:, None], kv).logits[:, -1].float()


def adaptive_last_token_without_cache(model, prompt_ids, max_new_tokens, epsilon, temperature,
                                      seed, stop_token_id):
    return _adaptive_loop(model, prompt_ids, max_new_tokens, epsilon, temperature, seed,
                          stop_token_id, cache=False)


def adaptive_rule_before_temperature(model, prompt_ids, max_new_tokens, epsilon, temperature,
                                     seed, stop_token_id):  # the rule on the tempered scores
    return _adaptive_loop(model, prompt_ids, max_new_tokens, epsilon, temperature, seed,
                          stop_token_id, temperature_first=False)


def adaptive_splitting_ties(model, prompt_ids, max_new_tokens, epsilon, temperature, seed,
                            stop_token_id):  # a token tied with the last kept one is kept
    return _adaptive_loop(model, prompt_ids, max_new_tokens, epsilon, temperature, seed,
                          stop_token_id, ties=False)


def adaptive_one_count_for_the_batch(model, prompt_ids, max_new_tokens, epsilon, temperature,
                                     seed, stop_token_id):  # each row its own set
    return _adaptive_loop(model, prompt_ids, max_new_tokens, epsilon, temperature, seed,
                          stop_token_id, per_row=False)


def adaptive_reports_count_before_ties(model, prompt_ids, max_new_tokens, epsilon, temperature,
                                       seed, stop_token_id):  # the tokens kept, ties included
    return _adaptive_loop(model, prompt_ids, max_new_tokens, epsilon, temperature, seed,
                          stop_token_id, count_after_ties=False)


# ----------------------------------------------------------------------------------- 02.4
def answer_02_4_at_temperature_1():  # the set at temperature 1
    return 35


RULES = [
    ("02.3", "adaptive_sample", adaptive_last_token_without_cache),
    ("02.3", "adaptive_sample", adaptive_rule_before_temperature),
    ("02.3", "adaptive_sample", adaptive_splitting_ties),
    ("02.3", "adaptive_sample", adaptive_one_count_for_the_batch),
    ("02.3", "adaptive_sample", adaptive_reports_count_before_ties),
    ("02.4", "answer_02_4", answer_02_4_at_temperature_1),
]

