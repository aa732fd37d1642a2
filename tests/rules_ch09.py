"""Wrong variants for chapter 09's exercises beyond 09.4 (see tests/test_exercise_rules.py): each
breaks one rule the exercise's text states, and the check must fail on it."""

from __future__ import annotations

import torch

from minidecode.cache_policies import Observation
from minidecode.cache_policies.cap_nuc import novelty_scores
from minidecode.infinipot import context_reset_positions


# ----------------------------------------------------------------------------------- 09.5
def _reader(model, input_ids, policy, pot_size, keep_size, chunk_size, *, reset=True,
            reserve=True, carry=True, observe=True, validate=True, fresh_observation=True,
            keep_at_pot=False):
    catalyst = policy.reserve if reserve else 0
    if validate and not (1 <= keep_size < pot_size
                         and 1 <= chunk_size <= pot_size - keep_size - policy.reserve):
        raise ValueError("sizes")
    batch, length = input_ids.shape
    cache = model.new_cache()
    token_nll = torch.zeros(batch, length)
    observation = Observation(token_nll=token_nll[:, :0])
    policy.reset()
    last_logits = None
    for start in range(0, length, chunk_size):
        chunk = input_ids[:, start:start + chunk_size]
        end = start + chunk.shape[1]
        if cache.length + chunk.shape[1] + catalyst > pot_size:
            keep = pot_size - chunk.shape[1] - catalyst if keep_at_pot else keep_size
            policy.compress(model, cache, keep, observation)
            if reset:
                for layer in range(cache.num_layers):
                    cache.set_positions(layer, context_reset_positions(cache.token_index[layer]))
        with torch.no_grad():
            out = model(chunk, cache=cache, output_attentions=policy.needs_attentions)
        if last_logits is None or not carry:
            token_nll[:, start + 1:end] = novelty_scores(out.logits, chunk)[:, 1:]
        else:
            logits = torch.cat([last_logits, out.logits], dim=1)
            ids = torch.cat([chunk[:, :1], chunk], dim=1)
            token_nll[:, start:end] = novelty_scores(logits, ids)[:, 1:]
        last_logits = out.logits[:, -1:]
        if fresh_observation:
            observation = Observation(attentions=out.attentions, token_nll=token_nll[:, :end])
        if observe:
            policy.observe(cache, observation)
    return torch.stack(cache.token_index), token_nll


def reader_without_cr_rope(*args):  # re-number the kept entries after each distillation
    return _reader(*args, reset=False)


def reader_ignores_the_catalyst(*args):  # the catalyst's reserve counts against the pot
    return _reader(*args, reserve=False, validate=False)


def reader_nll_restarts_each_chunk(*args):  # the previous chunk's last logits predict chunk[0]
    return _reader(*args, carry=False)


def reader_never_observes(*args):  # policy.observe after every chunk (H2O accumulates there)
    return _reader(*args, observe=False)


def reader_stale_observation(*args):  # the policy sees the latest chunk's attentions and NLL
    return _reader(*args, fresh_observation=False)


def reader_fills_the_pot(*args):  # keep keep_size entries, not as many as would fit
    return _reader(*args, keep_at_pot=True)


def reader_no_value_error(*args):
    return _reader(*args, validate=False)


# ----------------------------------------------------------------------------------- 09.6
def distillations_without_the_catalyst():  # the catalyst's 16 entries count against the pot
    return 14


def distillations_one_a_chunk():  # the first chunk finds an empty pot: nothing to distil
    return 16


# ----------------------------------------------------------------------------------- 09.7
def needle_kept_in_both_pots():  # the small pot's recent window is only the last 188 tokens
    return "a"


def needle_lost_in_both_pots():  # the chapter's pot keeps the last 508 tokens at the end
    return "d"


RULES = [
    ("09.5", "read_with_policy", reader_without_cr_rope),
    ("09.5", "read_with_policy", reader_ignores_the_catalyst),
    ("09.5", "read_with_policy", reader_nll_restarts_each_chunk),
    ("09.5", "read_with_policy", reader_never_observes),
    ("09.5", "read_with_policy", reader_stale_observation),
    ("09.5", "read_with_policy", reader_fills_the_pot),
    ("09.5", "read_with_policy", reader_no_value_error),
    ("09.6", "answer_09_6", distillations_without_the_catalyst),
    ("09.6", "answer_09_6", distillations_one_a_chunk),
    ("09.7", "answer_09_7", needle_kept_in_both_pots),
    ("09.7", "answer_09_7", needle_lost_in_both_pots),
]
