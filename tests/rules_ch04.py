"""Wrong variants of chapter 04's later exercises (see tests/test_exercise_rules.py): each breaks
one rule the exercise states, and the check must reject it. 04.4's first variant is the given code
of the find-the-bug exercise itself."""

from __future__ import annotations

import torch

from minidecode.cot import answer_delta, last_number_span
from minidecode.generate import decode_steps, prefill, stop_token_ids
from minidecode.tinyworld import TRIGGER


# ----------------------------------------------------------------------------------- 04.3
@torch.no_grad()
def _cot(model, tokenizer, prompt_ids, k, max_new_tokens, *, check_k=True, delta_rows="span",
         choose="delta", keep_stop=False, first_row=True):
    if check_k and not 1 <= k <= model.vocab_size:
        raise ValueError("k")
    stops = stop_token_ids(tokenizer)
    cache, next_logits = prefill(model, prompt_ids)
    first_probs = torch.softmax(next_logits[0], dim=-1)
    firsts = first_probs.topk(max(k, 1)).indices.tolist()
    out = {"first_tokens": firsts, "tokens": [], "answers": [], "deltas": []}
    for first in firsts:
        tokens, rows = [first], [first_probs]
        if first not in stops and max_new_tokens > 1:
            branch = cache.repeat_batch(1)
            logits = model(torch.tensor([[first]]), branch).logits[:, -1].float()
            for step in decode_steps(model, branch, logits):
                tokens.append(int(step.token[0]))
                rows.append(step.probs[0])
                if tokens[-1] in stops or len(tokens) == max_new_tokens:
                    break
        if tokens[-1] in stops and not keep_stop:
            tokens, rows = tokens[:-1], rows[:-1]
        if not first_row:  # the rows shifted by one: each token scored by the next distribution
            rows = rows[1:] + rows[-1:]
        span = last_number_span([tokenizer.decode([t]) for t in tokens])
        answer, delta = None, 0.0
        if span is not None:
            answer = tokenizer.decode(tokens[span[0]:span[1]]).strip()
            read = span if delta_rows == "span" else (0, len(tokens))
            delta = answer_delta(torch.stack(rows), read)
        out["tokens"].append(tokens)
        out["answers"].append(answer)
        out["deltas"].append(delta)
    found = [j for j, a in enumerate(out["answers"]) if a is not None]
    if choose == "delta":
        out["chosen"] = max(found, key=lambda j: (out["deltas"][j], -j)) if found else 0
    else:
        out["chosen"] = 0
    return out


def cot_delta_over_whole_path(model, tokenizer, prompt_ids, k, max_new_tokens):
    return _cot(model, tokenizer, prompt_ids, k, max_new_tokens, delta_rows="all")


def cot_keeps_greedy_branch(model, tokenizer, prompt_ids, k, max_new_tokens):
    return _cot(model, tokenizer, prompt_ids, k, max_new_tokens, choose="first")


def cot_no_k_check(model, tokenizer, prompt_ids, k, max_new_tokens):
    return _cot(model, tokenizer, prompt_ids, k, max_new_tokens, check_k=False)


def cot_rows_off_by_one(model, tokenizer, prompt_ids, k, max_new_tokens):
    return _cot(model, tokenizer, prompt_ids, k, max_new_tokens, first_row=False)


# ----------------------------------------------------------------------------------- 04.4
@torch.no_grad()
def _trigger(model, tokenizer, prompt_ids, every, max_new_tokens, *, pick, keep_phrase=True):
    if every < 1 or max_new_tokens < 1:
        raise ValueError("every")
    stops = stop_token_ids(tokenizer)
    phrase = tokenizer.encode(" " + TRIGGER.strip()).ids
    cache = model.new_cache()
    tokens = []
    pending = prompt_ids
    since, generated = every, 0
    while generated < max_new_tokens:
        if since >= every:
            pending = torch.cat([pending, torch.tensor([phrase])], dim=1)
            tokens += phrase if keep_phrase else []
            since = 0
        logits = model(pending, cache).logits[0, -1]
        next_token = pick(logits)
        if next_token in stops:
            break
        tokens.append(next_token)
        since, generated = since + 1, generated + 1
        pending = torch.tensor([[next_token]])
    return tokens


def trigger_greedy(model, tokenizer, prompt_ids, every, max_new_tokens):  # the given code
    return _trigger(model, tokenizer, prompt_ids, every, max_new_tokens,
                    pick=lambda logits: int(logits.max()))


def trigger_phrase_dropped(model, tokenizer, prompt_ids, every, max_new_tokens):
    return _trigger(model, tokenizer, prompt_ids, every, max_new_tokens,
                    pick=lambda logits: int(logits.argmax()), keep_phrase=False)


# ----------------------------------------------------------------------------------- 04.5
def answer_04_5_follows_max_delta():  # takes aggregation to follow max Delta's wrong answer
    return "b"


RULES = [
    ("04.3", "cot_decode_max", cot_delta_over_whole_path),
    ("04.3", "cot_decode_max", cot_keeps_greedy_branch),
    ("04.3", "cot_decode_max", cot_no_k_check),
    ("04.3", "cot_decode_max", cot_rows_off_by_one),
    ("04.4", "trigger_greedy", trigger_greedy),
    ("04.4", "trigger_greedy", trigger_phrase_dropped),
    ("04.5", "answer_04_5", answer_04_5_follows_max_delta),
]
