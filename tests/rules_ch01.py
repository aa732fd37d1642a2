"""Wrong variants of chapter 01's later exercises (see tests/test_exercise_rules.py): each breaks
one rule the exercise states, and the check must reject it."""

from __future__ import annotations

import torch


# ----------------------------------------------------------------------------------- 01.3
@torch.no_grad()
def _loop(model, prompt_ids, max_new_tokens, temperature, processors, seed, stop_token_id, *,
          cache=True, recompute=False, temperature_first=True, stop=True, pad=True,
          whole_text=True, sample=True):
    if not temperature > 0:
        raise ValueError("temperature")
    generator = torch.Generator().manual_seed(seed)
    tokens = prompt_ids
    if max_new_tokens == 0:
        return tokens
    kv = model.new_cache() if cache else None
    logits = model(prompt_ids, kv).logits[:, -1].float()
    finished = torch.zeros(prompt_ids.shape[0], dtype=torch.bool)
    for _ in range(max_new_tokens):
        seen = tokens if whole_text else tokens[:, prompt_ids.shape[1]:]
        scores = logits / temperature if temperature_first else logits
        for processor in processors:
            scores = processor(seen, scores)
        if not temperature_first:
            scores = scores / temperature
        if sample:
            token = torch.multinomial(torch.softmax(scores, -1), 1, generator=generator)[:, 0]
        else:
            token = scores.argmax(-1)
        if stop and stop_token_id is not None:
            if pad:
                token = torch.where(finished, stop_token_id, token)
            finished |= token == stop_token_id
        tokens = torch.cat([tokens, token[:, None]], dim=1)
        if tokens.shape[1] - prompt_ids.shape[1] == max_new_tokens or bool(finished.all()):
            break
        if not pad and bool(finished.any()):
            break
        if recompute:
            logits = model(tokens).logits[:, -1].float()
        else:
            logits = model(token[:, None], kv).logits[:, -1].float()
    return tokens


def loop_last_token_without_cache(model, prompt_ids, max_new_tokens, temperature, processors,
                                  seed, stop_token_id):  # the cache holds what came before
    return _loop(model, prompt_ids, max_new_tokens, temperature, processors, seed,
                 stop_token_id, cache=False)


def loop_recomputing_the_prefix(model, prompt_ids, max_new_tokens, temperature, processors,
                                seed, stop_token_id):  # one token a step through the cache
    return _loop(model, prompt_ids, max_new_tokens, temperature, processors, seed,
                 stop_token_id, cache=False, recompute=True)


def loop_temperature_after_processors(model, prompt_ids, max_new_tokens, temperature,
                                      processors, seed, stop_token_id):  # temperature first
    return _loop(model, prompt_ids, max_new_tokens, temperature, processors, seed,
                 stop_token_id, temperature_first=False)


def loop_ignoring_the_stop_token(model, prompt_ids, max_new_tokens, temperature, processors,
                                 seed, stop_token_id):
    return _loop(model, prompt_ids, max_new_tokens, temperature, processors, seed,
                 stop_token_id, stop=False)


def loop_ending_when_one_row_stops(model, prompt_ids, max_new_tokens, temperature, processors,
                                   seed, stop_token_id):  # finished rows are padded
    return _loop(model, prompt_ids, max_new_tokens, temperature, processors, seed,
                 stop_token_id, pad=False)


def loop_processors_see_new_tokens_only(model, prompt_ids, max_new_tokens, temperature,
                                        processors, seed, stop_token_id):  # the whole text
    return _loop(model, prompt_ids, max_new_tokens, temperature, processors, seed,
                 stop_token_id, whole_text=False)


def loop_greedy(model, prompt_ids, max_new_tokens, temperature, processors, seed,
                stop_token_id):  # a draw, not the argmax
    return _loop(model, prompt_ids, max_new_tokens, temperature, processors, seed,
                 stop_token_id, sample=False)


# ----------------------------------------------------------------------------------- 01.4
def answer_01_4_truncation_first():  # top-p 0.9 at temperature 1 keeps 8
    return 8


RULES = [
    ("01.3", "sample_with_cache", loop_last_token_without_cache),
    ("01.3", "sample_with_cache", loop_recomputing_the_prefix),
    ("01.3", "sample_with_cache", loop_temperature_after_processors),
    ("01.3", "sample_with_cache", loop_ignoring_the_stop_token),
    ("01.3", "sample_with_cache", loop_ending_when_one_row_stops),
    ("01.3", "sample_with_cache", loop_processors_see_new_tokens_only),
    ("01.3", "sample_with_cache", loop_greedy),
    ("01.4", "answer_01_4", answer_01_4_truncation_first),
]

