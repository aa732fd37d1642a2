"""Wrong stacks for the capstone (exercise 12.1): each fails the scorer's bar for one reason."""

from __future__ import annotations

from minidecode.course.capstone import greedy_decode


def greedy_everywhere(model, prompt_ids, max_new_tokens, *, draft=None, kv_budget=None,
                      task="story", stop_ids=frozenset(), generator=None):
    """The plain greedy stack: its stories loop, it ignores the draft and the KV budget."""
    return greedy_decode(model, prompt_ids, max_new_tokens, stop_ids=stop_ids)


RULES = [("12.1", "decode", greedy_everywhere)]
