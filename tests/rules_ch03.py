"""Wrong variants of chapter 03's later exercises (see tests/test_exercise_rules.py): each breaks
one rule the exercise states, and the check must reject it."""

from __future__ import annotations

import math

import torch

INF = float("inf")


def _entropy(scores):
    log_probs = torch.log_softmax(scores.float(), dim=-1)
    probs = log_probs.exp()
    return -torch.where(probs > 0, probs * log_probs, torch.zeros_like(probs)).sum(dim=-1)


# ----------------------------------------------------------------------------------- 03.3
@torch.no_grad()
def _edt_loop(model, prompt_ids, max_new_tokens, t0, n, theta, seed, stop_token_id, *,
              cache=True, entropy_of_tempered=False, per_row=True, guard=True, stale=False,
              inverted=False):
    if not (t0 > 0 and 0 < n < 1 and theta > 0):
        raise ValueError("t0, n or theta")
    generator = torch.Generator().manual_seed(seed)
    tokens, temperatures = prompt_ids, []
    if max_new_tokens == 0:
        return tokens, torch.zeros(0, prompt_ids.shape[0])
    kv = model.new_cache() if cache else None
    logits = model(prompt_ids, kv).logits[:, -1].float()
    finished = torch.zeros(prompt_ids.shape[0], dtype=torch.bool)
    previous_entropy = None
    while True:
        entropy = _entropy(logits / t0 if entropy_of_tempered else logits)
        if not per_row:
            entropy = entropy.mean().expand_as(entropy)
        used = previous_entropy if stale and previous_entropy is not None else entropy
        previous_entropy = entropy
        if inverted:
            temperature = t0 * torch.exp(used / theta * math.log(n))
        else:
            temperature = t0 * torch.exp(theta / used * math.log(n))
        temperatures.append(temperature)
        if guard:
            greedy = temperature[:, None] < 1e-4
            top_only = logits.masked_fill(logits < logits.amax(-1, keepdim=True), -INF)
            scaled = logits / torch.where(greedy, torch.ones_like(temperature[:, None]),
                                          temperature[:, None])
            scores = torch.where(greedy, top_only, scaled)
        else:
            scores = logits / temperature[:, None]
        token = torch.multinomial(torch.softmax(scores, -1), 1, generator=generator)[:, 0]
        if stop_token_id is not None:
            token = torch.where(finished, stop_token_id, token)
            finished |= token == stop_token_id
        tokens = torch.cat([tokens, token[:, None]], dim=1)
        if tokens.shape[1] - prompt_ids.shape[1] == max_new_tokens or bool(finished.all()):
            return tokens, torch.stack(temperatures)
        logits = model(token[:, None], kv).logits[:, -1].float()


def edt_last_token_without_cache(model, prompt_ids, max_new_tokens, t0, n, theta, seed,
                                 stop_token_id):
    return _edt_loop(model, prompt_ids, max_new_tokens, t0, n, theta, seed, stop_token_id,
                     cache=False)


def edt_entropy_after_temperature(model, prompt_ids, max_new_tokens, t0, n, theta, seed,
                                  stop_token_id):  # the entropy of the model's own logits
    return _edt_loop(model, prompt_ids, max_new_tokens, t0, n, theta, seed, stop_token_id,
                     entropy_of_tempered=True)


def edt_one_temperature_for_the_batch(model, prompt_ids, max_new_tokens, t0, n, theta, seed,
                                      stop_token_id):  # each row its own temperature
    return _edt_loop(model, prompt_ids, max_new_tokens, t0, n, theta, seed, stop_token_id,
                     per_row=False)


def edt_dividing_by_zero(model, prompt_ids, max_new_tokens, t0, n, theta, seed,
                         stop_token_id):  # T < 1e-4 is greedy
    return _edt_loop(model, prompt_ids, max_new_tokens, t0, n, theta, seed, stop_token_id,
                     guard=False)


def edt_previous_steps_entropy(model, prompt_ids, max_new_tokens, t0, n, theta, seed,
                               stop_token_id):  # recomputed from each step's own entropy
    return _edt_loop(model, prompt_ids, max_new_tokens, t0, n, theta, seed, stop_token_id,
                     stale=True)


def edt_inverted_exponent(model, prompt_ids, max_new_tokens, t0, n, theta, seed,
                          stop_token_id):  # n^(theta / H), not n^(H / theta)
    return _edt_loop(model, prompt_ids, max_new_tokens, t0, n, theta, seed, stop_token_id,
                     inverted=True)


# ----------------------------------------------------------------------------------- 03.4
def answer_03_4_share_not_count():  # the number of steps (an int), not their share
    return 0.5


RULES = [
    ("03.3", "edt_sample", edt_last_token_without_cache),
    ("03.3", "edt_sample", edt_entropy_after_temperature),
    ("03.3", "edt_sample", edt_one_temperature_for_the_batch),
    ("03.3", "edt_sample", edt_dividing_by_zero),
    ("03.3", "edt_sample", edt_previous_steps_entropy),
    ("03.3", "edt_sample", edt_inverted_exponent),
    ("03.4", "answer_03_4", answer_03_4_share_not_count),
]

