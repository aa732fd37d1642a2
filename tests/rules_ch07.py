"""Wrong variants of chapter 07's later exercises (see tests/test_exercise_rules.py): each breaks
one rule the exercise states, and the check must reject it."""

from __future__ import annotations

import torch


# ----------------------------------------------------------------------------------- 07.4
@torch.no_grad()
def _speculative(target, draft, input_ids, max_new_tokens, gamma, *, roll_back_target=True,
                 roll_back_draft=True, bonus=True, clip_last_round=True):
    tokens = input_ids
    target_cache, draft_cache = target.new_cache(), draft.new_cache()
    accepted_lengths = []
    while tokens.shape[1] - input_ids.shape[1] < max_new_tokens:
        committed = tokens.shape[1]
        remaining = max_new_tokens - (committed - input_ids.shape[1])
        round_gamma = min(gamma, remaining - 1) if clip_last_round else gamma
        drafted = []
        if round_gamma > 0:
            new = tokens[:, min(draft_cache.seen_tokens, committed - 1):]
            logits = draft(new, draft_cache).logits[0, -1]
            for _ in range(round_gamma):
                drafted.append(int(logits.argmax()))
                if len(drafted) < round_gamma:
                    logits = draft(torch.tensor([[drafted[-1]]]), draft_cache).logits[0, -1]
        candidate = torch.cat([tokens, torch.tensor([drafted], dtype=torch.long)], dim=1)
        new = candidate[:, min(target_cache.seen_tokens, committed - 1):]
        logits = target(new, target_cache).logits[0]
        choices = logits[-(len(drafted) + 1):].argmax(dim=-1)
        accepted = 0
        while accepted < len(drafted) and drafted[accepted] == int(choices[accepted]):
            accepted += 1
        emitted = drafted[:accepted]
        if bonus or accepted < len(drafted) or not drafted:  # no bonus after a full accept
            emitted = emitted + [int(choices[accepted])]
        tokens = torch.cat([tokens, torch.tensor([emitted], dtype=torch.long)], dim=1)
        accepted_lengths.append(accepted)
        if roll_back_target:
            target_cache.crop(committed + accepted)
        if roll_back_draft:
            draft_cache.crop(min(committed + accepted, draft_cache.seen_tokens))
    return tokens[:, :input_ids.shape[1] + max_new_tokens], accepted_lengths


def speculative_without_target_rollback(target, draft, input_ids, max_new_tokens, gamma):
    return _speculative(target, draft, input_ids, max_new_tokens, gamma, roll_back_target=False)


def speculative_without_draft_rollback(target, draft, input_ids, max_new_tokens, gamma):
    return _speculative(target, draft, input_ids, max_new_tokens, gamma, roll_back_draft=False)


def speculative_without_bonus(target, draft, input_ids, max_new_tokens, gamma):
    return _speculative(target, draft, input_ids, max_new_tokens, gamma, bonus=False)


def speculative_drafting_past_the_end(target, draft, input_ids, max_new_tokens, gamma):
    return _speculative(target, draft, input_ids, max_new_tokens, gamma, clip_last_round=False)


# ----------------------------------------------------------------------------------- 07.5
def _verify(logits, draft_tokens, *, offset=True, bonus=True):
    gamma = len(draft_tokens)
    choices = (logits[-(gamma + 1):] if offset else logits[-gamma:]).argmax(dim=-1)
    accepted = 0
    while accepted < gamma and int(choices[accepted]) == int(draft_tokens[accepted]):
        accepted += 1
    emitted = [int(t) for t in list(draft_tokens)[:accepted]]
    if accepted < gamma or bonus:
        emitted.append(int(choices[accepted]))
    return emitted


def verify_first_attempt(logits, draft_tokens):  # the given code: no offset, no bonus
    return _verify(logits, draft_tokens, offset=False, bonus=False)


def verify_without_offset(logits, draft_tokens):
    return _verify(logits, draft_tokens, offset=False)


def verify_without_bonus(logits, draft_tokens):
    return _verify(logits, draft_tokens, bonus=False)


# ----------------------------------------------------------------------------------- 07.6
def answer_07_6_b():
    return "b"


def answer_07_6_d():
    return "d"


RULES = [
    ("07.4", "speculative_greedy", speculative_without_target_rollback),
    ("07.4", "speculative_greedy", speculative_without_draft_rollback),
    ("07.4", "speculative_greedy", speculative_without_bonus),
    ("07.4", "speculative_greedy", speculative_drafting_past_the_end),
    ("07.5", "greedy_verify", verify_first_attempt),
    ("07.5", "greedy_verify", verify_without_offset),
    ("07.5", "greedy_verify", verify_without_bonus),
    ("07.6", "answer_07_6", answer_07_6_b),
    ("07.6", "answer_07_6", answer_07_6_d),
]
