"""Wrong variants of chapter 08's later exercises (see tests/test_exercise_rules.py): each breaks
one rule the exercise states, and the check must reject it."""

from __future__ import annotations

import math

import torch


# ----------------------------------------------------------------------------------- 08.4
def _attention(q, k, v, local_heads, n_sinks, window, *, sinks=True, inclusive=False,
               scale=True, kv_from="last query"):
    heads, length, head_dim = q.shape
    query = torch.arange(length)[:, None]
    key = torch.arange(length)[None, :]
    in_window = (query - key <= window) if inclusive else (query - key < window)
    local = (key <= query) & (((key < n_sinks) if sinks else False) | in_window)
    causal = key <= query
    masks = torch.stack([local if h in set(local_heads) else causal for h in range(heads)])
    scores = q @ k.transpose(-1, -2) / (math.sqrt(head_dim) if scale else 1.0)
    out = torch.softmax(scores.masked_fill(~masks, float("-inf")), dim=-1) @ v
    if kv_from == "last query":
        kv = masks[:, -1].sum(dim=-1)
    elif kv_from == "every pair":
        kv = masks.sum(dim=(-1, -2))
    else:  # one number for the layer
        return out, masks[:, -1].sum()
    return out, kv


def attention_local_without_sinks(q, k, v, local_heads, n_sinks, window):
    return _attention(q, k, v, local_heads, n_sinks, window, sinks=False)


def attention_window_one_too_wide(q, k, v, local_heads, n_sinks, window):
    return _attention(q, k, v, local_heads, n_sinks, window, inclusive=True)


def attention_without_scale(q, k, v, local_heads, n_sinks, window):
    return _attention(q, k, v, local_heads, n_sinks, window, scale=False)


def attention_kv_counts_every_pair(q, k, v, local_heads, n_sinks, window):
    return _attention(q, k, v, local_heads, n_sinks, window, kv_from="every pair")


def attention_kv_total(q, k, v, local_heads, n_sinks, window):
    return _attention(q, k, v, local_heads, n_sinks, window, kv_from="total")


# ----------------------------------------------------------------------------------- 08.5
def answer_08_5_c():  # the playground's 54% at 480 tokens: the local heads' share shrinks
    return "c"


def answer_08_5_a():  # as if every head were local
    return "a"


RULES = [
    ("08.4", "sink_window_attention", attention_local_without_sinks),
    ("08.4", "sink_window_attention", attention_window_one_too_wide),
    ("08.4", "sink_window_attention", attention_without_scale),
    ("08.4", "sink_window_attention", attention_kv_counts_every_pair),
    ("08.4", "sink_window_attention", attention_kv_total),
    ("08.5", "answer_08_5", answer_08_5_c),
    ("08.5", "answer_08_5", answer_08_5_a),
]
