"""The decode loop, written once: every technique in the course steps through it.

One step, for a batch of sequences x_{1..t}:

    logits = model(new tokens, cache).logits[:, -1]        # (batch, vocab): scores for x_{t+1}
    scores = logits / temperature                          # temperature first, as transformers
    scores = processor_k(... processor_1(x, scores))       # e.g. top-p, min-p, a penalty
    x_{t+1} = argmax(scores)                               # greedy
            ~ softmax(scores)                              # sampling

Temperature comes first, then the processors, in the order transformers' ``generate`` applies
``TemperatureLogitsWarper`` before ``TopPLogitsWarper`` and the other truncation warpers: top-p
at T = 0.6 keeps the nucleus of the *sharpened* distribution. (Dividing after truncating would
keep the nucleus of the T = 1 distribution and only then sharpen it: another, smaller-support
sampler than the one the settings name.)

The pieces, each usable on its own:

- :func:`process_scores`: temperature, then the processors -> the scores a token is drawn from;
- :func:`draw`: argmax, or one sample from ``softmax(scores)``;
- :func:`prefill`: feed the prompt (whatever the cache has not seen yet) -> logits for x_{t+1};
- :func:`decode_steps`: a generator that yields one :class:`Step` per new token, forever; the
  caller decides when to stop. ``generate`` below, CoT decoding's branches, the speculative
  drafter, InfiniPot's answerer and the evaluations all iterate over it;
- :func:`stop_token_ids`: the tokens that end a one-line answer.

``model`` is anything that follows :class:`minidecode.interfaces.LanguageModel`: minidecode's
``Transformer`` or a wrapped transformers model (``minidecode.hf_adapter.HFModel``). Logits
processors follow transformers' ``LogitsProcessor`` convention, so both libraries' work here.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from numbers import Real
from typing import Any

import torch
from torch import Tensor

from minidecode.interfaces import LogitsProcessor
from minidecode.kernels import dispatch

END_OF_TEXT = "<|endoftext|>"
ARGMAX_BELOW = 1e-4  # a temperature this small is argmax, without dividing by (almost) zero


# ------------------------------------------------------------------------- one step
def apply_temperature(scores: Tensor, temperature: float | Tensor) -> Tensor:
    """``scores / T``, with ``T`` a number or one per row (batch,); ``T < 1e-4`` is greedy.

    scores: (batch, vocab). A row whose temperature is (almost) zero keeps only its top token(s),
    done as a mask rather than a division that would overflow.
    """
    if not isinstance(temperature, Tensor):
        if float(temperature) == 1.0:
            return scores
        temperature = torch.full(scores.shape[:-1], float(temperature), device=scores.device)
    temperature = temperature.to(scores.dtype).unsqueeze(-1)
    greedy = temperature < ARGMAX_BELOW
    scaled = scores / torch.where(greedy, torch.ones_like(temperature), temperature)
    top_only = scores.masked_fill(scores < scores.amax(dim=-1, keepdim=True), float("-inf"))
    return torch.where(greedy, top_only, scaled)


def process_scores(input_ids: Tensor, logits: Tensor, processors: Sequence[LogitsProcessor] = (),
                   temperature: float = 1.0) -> Tensor:
    """The scores the next token is drawn from: ``processors(logits / temperature)``.

    input_ids: (batch, t) the text so far (processors may read it); logits: (batch, vocab).
    Returns (batch, vocab) float32 (float64 stays float64).
    """
    scores = logits if logits.dtype == torch.float64 else logits.float()
    scores = apply_temperature(scores, temperature)
    for processor in processors:
        scores = processor(input_ids, scores)
    return scores


def draw(scores: Tensor, do_sample: bool = False,
         generator: torch.Generator | None = None) -> Tensor:
    """(batch, vocab) scores -> (batch,) long: argmax, or one sample from ``softmax(scores)``.

    On a CPU the sample is ``torch.multinomial``'s (so a seeded generator gives the same tokens
    as transformers' sampling); float32 CUDA scores go through chapter 10's kernel when CuPy is
    installed (the same distribution, another random stream).
    """
    if not do_sample:
        return scores.argmax(dim=-1)
    on_gpu = dispatch.sample_next_token(scores, generator)
    if on_gpu is not None:
        return on_gpu
    probs = torch.softmax(scores.float(), dim=-1)
    return torch.multinomial(probs, 1, generator=generator)[:, 0]


# ------------------------------------------------------------------------- the loop
@dataclass
class Step:
    """One decoding step. token: (batch,) long, the token drawn; scores: (batch, vocab), the
    processed scores it was drawn from (``probs`` is their softmax); logits: (batch, vocab), the
    model's raw scores. Assign ``step.token`` before asking for the next step to feed another
    token instead (a finished row's padding, a forced answer)."""

    token: Tensor
    scores: Tensor
    logits: Tensor

    @property
    def probs(self) -> Tensor:
        return torch.softmax(self.scores.float(), dim=-1)


@torch.no_grad()
def prefill(model: Any, input_ids: Tensor, cache: Any = None) -> tuple[Any, Tensor]:
    """Feed the tokens of ``input_ids`` (batch, t) that ``cache`` has not seen yet.

    Returns (cache, next_logits (batch, vocab) float32): the scores for token t + 1.
    """
    cache = model.new_cache() if cache is None else cache
    seen = cache.seen_tokens
    if seen >= input_ids.shape[1]:
        raise ValueError(f"the cache already holds {seen} tokens but input_ids has only "
                         f"{input_ids.shape[1]}: at least one token must be new")
    return cache, model(input_ids[:, seen:], cache).logits[:, -1, :].float()


@torch.no_grad()
def decode_steps(model: Any, cache: Any, next_logits: Tensor, *, input_ids: Tensor | None = None,
                 processors: Sequence[LogitsProcessor] = (), temperature: float = 1.0,
                 do_sample: bool = False, generator: torch.Generator | None = None
                 ) -> Iterator[Step]:
    """Yield one :class:`Step` per new token, for as long as the caller keeps asking.

    cache: holds the text so far; next_logits: (batch, vocab), the model's scores for the next
    token (from :func:`prefill`, or from a reader that filled the cache another way). input_ids:
    (batch, t) the text so far, for processors that read it (default: empty). The model is
    called for step n + 1 only when the caller asks for it, so a caller that stops after a step
    leaves the cache holding every token but the last one drawn.
    """
    if input_ids is None:
        input_ids = torch.zeros(next_logits.shape[0], 0, dtype=torch.long,
                                device=next_logits.device)
    tokens = input_ids
    logits = next_logits
    while True:
        scores = process_scores(tokens, logits, processors, temperature)
        step = Step(draw(scores, do_sample, generator), scores, logits)
        yield step
        tokens = torch.cat([tokens, step.token[:, None]], dim=1)
        logits = model(step.token[:, None], cache).logits[:, -1, :].float()


def stop_token_ids(tokenizer: Any, end_of_text: str = END_OF_TEXT) -> set[int]:
    """Tokens that end a one-line answer: every token whose text holds a newline, and
    ``end_of_text``. tokenizer: a ``tokenizers.Tokenizer`` (byte-level pieces write "\\n" as
    "Ċ") or anything with ``get_vocab()`` and ``token_to_id()``."""
    stops = {i for piece, i in tokenizer.get_vocab().items() if "Ċ" in piece or "\n" in piece}
    eos = tokenizer.token_to_id(end_of_text)
    return stops | ({eos} if eos is not None else set())


# ------------------------------------------------------------------------- generate
def _check_generate_args(input_ids: Any, max_new_tokens: Any, do_sample: bool,
                         temperature: Any) -> None:
    if not isinstance(input_ids, Tensor) or input_ids.dim() != 2:
        raise ValueError("input_ids must be a 2-d tensor (batch, prompt), got "
                         f"{getattr(input_ids, 'shape', type(input_ids).__name__)}")
    if input_ids.shape[0] == 0 or input_ids.shape[1] == 0:
        raise ValueError(f"input_ids is empty (shape {tuple(input_ids.shape)}): the prompt needs "
                         "at least one token")
    if not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be an int >= 0, got {max_new_tokens!r}")
    if (not isinstance(temperature, Real) or isinstance(temperature, bool)
            or not 0 <= temperature < float("inf")):
        raise ValueError(f"temperature must be a finite number >= 0, got {temperature!r}")
    if do_sample and temperature == 0:
        raise ValueError("temperature must be > 0 when sampling, got 0; for temperature 0 use "
                         "greedy decoding (do_sample=False)")


@torch.no_grad()
def generate(model: Any, input_ids: Tensor, max_new_tokens: int, *, do_sample: bool = False,
             temperature: float = 1.0, logits_processors: Sequence[LogitsProcessor] = (),
             generator: torch.Generator | None = None, eos_token_id: int | None = None,
             cache: Any = None) -> Tensor:
    """Continue ``input_ids`` (batch, prompt) by up to ``max_new_tokens`` tokens.

    Returns (batch, prompt + new) long: the prompt followed by the new tokens, as transformers'
    ``generate`` does. A row that emits ``eos_token_id`` is finished: it is padded with
    ``eos_token_id`` until every row is finished or ``max_new_tokens`` is reached.

    do_sample: sample from ``softmax(processors(scores / temperature))`` (with ``generator``)
        instead of taking the argmax. Example: ``generate(m, ids, 40, do_sample=True,
        temperature=0.6, logits_processors=[TopP(0.5)])`` samples from the top-0.5 nucleus of
        the T = 0.6 distribution, as transformers' ``generate(temperature=0.6, top_p=0.5)``.
    cache: a cache that already holds the first ``cache.seen_tokens`` tokens of ``input_ids``
        (say, a shared system prompt); only the rest is fed. Default: a fresh ``model.new_cache()``.
        It is updated in place, and at the end holds every token but the last one generated.
    """
    _check_generate_args(input_ids, max_new_tokens, do_sample, temperature)
    tokens = input_ids
    if max_new_tokens == 0:
        return tokens
    cache, next_logits = prefill(model, input_ids, cache)
    finished = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
    steps = decode_steps(model, cache, next_logits, input_ids=input_ids,
                         processors=logits_processors, temperature=temperature,
                         do_sample=do_sample, generator=generator)
    for step in steps:
        if eos_token_id is not None:
            step.token = torch.where(finished, eos_token_id, step.token)
            finished |= step.token == eos_token_id
        tokens = torch.cat([tokens, step.token[:, None]], dim=1)
        if tokens.shape[1] - input_ids.shape[1] == max_new_tokens or bool(finished.all()):
            break
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
