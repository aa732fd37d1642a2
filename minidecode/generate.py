"""The plain decode loop that later techniques build on.

One step, for a batch of sequences x_{1..t}:

    logits = model(new tokens, cache).logits[:, -1]        # (batch, vocab): scores for x_{t+1}
    scores = processor_k(... processor_1(x, logits))      # e.g. repetition penalty, top-k
    x_{t+1} = argmax(scores)                              # greedy
            ~ softmax(scores / temperature)               # sampling

The first step feeds the whole prompt (prefill); every later step feeds one token, whose keys and
values join the cache. ``model`` is anything that follows ``minidecode.hf_adapter.LanguageModel``:
minidecode's ``Transformer`` or a wrapped transformers model (``HFModel``).

Logits processors are callables ``(input_ids (batch, t), scores (batch, vocab)) -> scores``, the
convention of transformers' ``LogitsProcessor``, so both libraries' processors work here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from minidecode.interfaces import LogitsProcessor


@torch.no_grad()
def generate(model: Any, input_ids: Tensor, max_new_tokens: int, *, do_sample: bool = False,
             temperature: float = 1.0, logits_processors: Sequence[LogitsProcessor] = (),
             generator: torch.Generator | None = None, eos_token_id: int | None = None,
             cache: Any = None) -> Tensor:
    """Continue ``input_ids`` (batch, prompt) by up to ``max_new_tokens`` tokens.

    Returns (batch, prompt + new) long: the prompt followed by the new tokens, as transformers'
    ``generate`` does. A row that emits ``eos_token_id`` is finished: it is padded with
    ``eos_token_id`` until every row is finished or ``max_new_tokens`` is reached.

    do_sample: sample from softmax(scores / temperature) (with ``generator``) instead of argmax.
    cache: a cache that already holds the first ``cache.seen_tokens`` tokens of ``input_ids``
        (say, a shared system prompt); only the rest is fed. Default: a fresh ``model.new_cache()``.
        It is updated in place, and at the end holds every token but the last one generated.
    """
    if not isinstance(input_ids, Tensor) or input_ids.dim() != 2:
        raise ValueError("input_ids must be a 2-d tensor (batch, prompt), got "
                         f"{getattr(input_ids, 'shape', type(input_ids).__name__)}")
    if input_ids.shape[0] == 0 or input_ids.shape[1] == 0:
        raise ValueError(f"input_ids is empty (shape {tuple(input_ids.shape)}): the prompt needs "
                         "at least one token")
    if not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be an int >= 0, got {max_new_tokens!r}")
    if do_sample and not temperature > 0:
        raise ValueError(f"temperature must be > 0 when sampling, got {temperature}")
    if cache is None:
        cache = model.new_cache()
    already = cache.seen_tokens
    if already >= input_ids.shape[1]:
        raise ValueError(f"the cache already holds {already} tokens but input_ids has only "
                         f"{input_ids.shape[1]}: at least one token must be new")

    tokens = input_ids
    new_input = input_ids[:, already:]                                   # prefill: the prompt
    finished = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
    for _ in range(max_new_tokens):
        scores = model(new_input, cache).logits[:, -1, :].float()        # (batch, vocab)
        for processor in logits_processors:
            scores = processor(tokens, scores)
        if do_sample:
            probs = torch.softmax(scores / temperature, dim=-1)
            next_token = torch.multinomial(probs, 1, generator=generator)[:, 0]
        else:
            next_token = scores.argmax(dim=-1)                            # (batch,)
        if eos_token_id is not None:
            next_token = torch.where(finished, eos_token_id, next_token)
            finished |= next_token == eos_token_id
        tokens = torch.cat([tokens, next_token[:, None]], dim=1)
        if eos_token_id is not None and bool(finished.all()):
            break
        new_input = next_token[:, None]                                  # decode: one token
    return tokens


def greedy(model: Any, input_ids: Tensor, max_new_tokens: int, **kwargs: Any) -> Tensor:
    """``generate`` with argmax decoding."""
    return generate(model, input_ids, max_new_tokens, do_sample=False, **kwargs)


def sample(model: Any, input_ids: Tensor, max_new_tokens: int, temperature: float = 1.0,
           seed: int | None = None, **kwargs: Any) -> Tensor:
    """``generate`` with sampling; ``seed`` builds the ``torch.Generator`` if none is given."""
    if seed is not None and kwargs.get("generator") is None:
        kwargs["generator"] = torch.Generator(device=input_ids.device).manual_seed(seed)
    return generate(model, input_ids, max_new_tokens, do_sample=True, temperature=temperature,
                    **kwargs)
