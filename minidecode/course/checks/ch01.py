"""Chapter 01 (the decode loop): exercise 01.1 min-p filtering, 01.2 tie-safe nucleus filtering,
01.3 the sampling loop with a KV cache (3 points), 01.4 a short answer: top-p 0.9 at temperature
2."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from hypothesis import strategies as st

from minidecode import generate as decode_loop
from minidecode import sampling
from minidecode.course.checks.tiny_model import check_model, random_prompt
from minidecode.course.grading import Case, exercise

INF = float("inf")

# Random cases: 1 to 12 logits, some "round" (ties), some -inf, at least one finite.
_value = st.one_of(
    st.floats(min_value=-10.0, max_value=10.0, allow_nan=False, width=32),
    st.sampled_from([0.0, 1.0, -2.0]),
    st.just(-INF),
)
_logits = st.lists(_value, min_size=1, max_size=12).map(
    lambda values: torch.tensor(values if any(v > -INF for v in values) else [*values, 0.0],
                                dtype=torch.float32)
)


def min_p_filter(logits, min_p):
    """The course's min-p filter (see :func:`minidecode.sampling.min_p_filter`)."""
    return sampling.min_p_filter(logits, min_p)


def top_p_filter(logits, top_p):
    """The course's tie-safe nucleus filter (see :func:`minidecode.sampling.top_p_filter`)."""
    return sampling.top_p_filter(logits, top_p)


@exercise(
    "01.1",
    reference=min_p_filter,
    returns=torch.Tensor,
    strategy=st.builds(Case, _logits, st.floats(min_value=0.0, max_value=1.0)),
    max_examples=20,
)
def min_p_cases() -> Iterator[Case]:
    """Plain, batched, with -inf, the two ends of the range, and bad min_p."""
    generator = torch.Generator().manual_seed(1)
    yield Case(torch.tensor([2.0, 1.0, 0.0, -1.0]), 0.3)
    yield Case(torch.tensor([2.0, 1.0, 0.0, -1.0]), 0.05)
    yield Case(torch.tensor([3.0, 3.0, 0.5, -4.0]), 0.5, name="a tie at the top")
    yield Case(torch.tensor([1.0, -INF, 0.5, -INF]), 0.7, name="already filtered (-inf) tokens")
    yield Case(torch.randn(3, 10, generator=generator), 0.2,
               name="a batch: each row against its own top probability")
    yield Case(torch.tensor([0.5, 0.2, 0.1]), 0.0, name="min_p = 0 keeps everything")
    yield Case(torch.tensor([0.5, 0.2, 0.1]), 1.0,
               name="min_p = 1 keeps the top: below means strictly below")
    yield Case(torch.tensor([0.5, 0.2]), -0.1, name="min_p must be in [0, 1]: ValueError")
    yield Case(torch.tensor([0.5, 0.2]), 1.5, name="min_p must be in [0, 1]: ValueError")
    yield Case(torch.tensor([[2.0, 0.5, -1.0], [0.0, 0.1, -3.0]], dtype=torch.float64), 0.3,
               name="the dtype of logits is kept (float64)")


@exercise(
    "01.2",
    reference=top_p_filter,
    returns=torch.Tensor,
    strategy=st.builds(Case, _logits, st.floats(min_value=0.05, max_value=1.0)),
    max_examples=20,
)
def top_p_cases() -> Iterator[Case]:
    """Plain, batched, ties at the boundary, -inf, top_p = 1 and bad top_p."""
    generator = torch.Generator().manual_seed(2)
    yield Case(torch.tensor([3.0, 2.0, 1.0, 0.0, -1.0]), 0.5)
    yield Case(torch.tensor([3.0, 2.0, 1.0, 0.0, -1.0]), 0.9,
               name="the mass strictly before a token decides (not including it)")
    yield Case(torch.tensor([5.0, 0.0, 0.0]), 0.5)                  # the top token alone is enough
    yield Case(torch.tensor([1.0, 1.0, 1.0, 1.0]), 0.5, name="uniform: the tie keeps all")
    yield Case(torch.tensor([2.0, 1.0, 1.0, -3.0]), 0.75,
               name="a tie at the boundary: ties are never split")
    yield Case(torch.tensor([0.0, -INF, 1.0, -INF]), 0.6, name="already filtered (-inf) tokens")
    yield Case(torch.randn(4, 9, generator=generator), 0.8, name="a batch: each row alone")
    yield Case(torch.tensor([0.3, 0.1, -0.2]), 1.0, name="top_p = 1 keeps everything")
    yield Case(torch.tensor([0.3, 0.1]), 0.0, name="top_p must be in (0, 1]: ValueError")
    yield Case(torch.tensor([0.3, 0.1]), 1.2, name="top_p must be in (0, 1]: ValueError")
    yield Case(torch.tensor([[2.0, 1.0, 0.0], [0.0, 0.0, -1.0]], dtype=torch.float64), 0.6,
               name="the dtype of logits is kept (float64)")


# ------------------------------------------------------------------------------------ 01.3
@dataclass(frozen=True)
class NoImmediateRepeat:
    """A logits processor that reads the text so far: the token just written may not follow
    itself. ``input_ids``: (batch, t), the prompt and every token generated so far."""

    def __call__(self, input_ids, scores):
        if input_ids.shape[1] == 0:
            return scores
        return scores.scatter(-1, input_ids[:, -1:], float("-inf"))


def sample_with_cache(model, prompt_ids, max_new_tokens, temperature, processors, seed,
                      stop_token_id):
    """The course's loop: :func:`minidecode.generate.generate` with sampling."""
    generator = torch.Generator().manual_seed(seed)
    return decode_loop.generate(model, prompt_ids, max_new_tokens, do_sample=True,
                                temperature=temperature, logits_processors=processors,
                                generator=generator, eos_token_id=stop_token_id)


def _loop_case(batch, prompt_length, max_new_tokens, temperature, processors, seed, stop,
               name="", last_token=None):
    prompt = random_prompt(batch, prompt_length, seed)
    if last_token is not None:  # a prompt ending in a token the model likes to repeat
        prompt[:, -1] = last_token
    return Case(check_model(prompt_length, max_new_tokens), prompt, max_new_tokens, temperature,
                processors, seed, stop, name=name)


# The parts of the package's loop the exercise asks for: running them is not the student's work.
LOOP_PARTS = (decode_loop.generate, decode_loop.prefill, decode_loop.decode_steps,
              decode_loop.process_scores, decode_loop.apply_temperature, decode_loop.draw,
              sampling.sample_next_token, sampling.apply_processors)


@exercise(
    "01.3",
    reference=sample_with_cache,
    returns=torch.Tensor,
    points=3,
    answers=LOOP_PARTS,
    strategy=st.builds(
        _loop_case, st.integers(1, 3), st.integers(1, 6), st.integers(1, 10),
        st.sampled_from([0.7, 1.0, 1.4]),
        st.sampled_from([[], [sampling.TopP(0.8)], [sampling.MinP(0.05)], [sampling.TopK(4)]]),
        st.integers(0, 2**16), st.sampled_from([None, 28, 22]),
    ),
    max_examples=5,
)
def sample_with_cache_cases() -> Iterator[Case]:
    """One row, a batch with stops, temperature before truncation, a processor that reads the
    text, every row stopping early, zero tokens, bad arguments."""
    yield _loop_case(1, 5, 10, 1.0, [], 0, None, name="one row, plain sampling, no stop token")
    yield _loop_case(3, 4, 12, 0.8, [sampling.TopP(0.9)], 1, 28,
                     name="a batch: rows that draw the stop token are padded with it")
    yield _loop_case(2, 3, 12, 0.5, [sampling.TopP(0.6)], 5, None,
                     name="temperature first, then the processors")
    yield _loop_case(2, 6, 10, 1.5, [sampling.MinP(0.1)], 2, 28,
                     name="min-p at a high temperature")
    yield _loop_case(3, 3, 8, 0.7, [NoImmediateRepeat(), sampling.TopK(6)], 1, None,
                     last_token=20,
                     name="a processor that reads input_ids: the prompt and the tokens so far")
    yield _loop_case(3, 4, 24, 1.0, [], 4, 22,
                     name="every row stops early: the loop ends when all rows have stopped")
    yield _loop_case(2, 3, 0, 1.0, [], 0, 28, name="max_new_tokens = 0: the prompt as it is")
    yield _loop_case(1, 3, 4, 0.0, [], 0, None, name="temperature must be > 0: ValueError")
    yield _loop_case(1, 3, 0, -1.0, [], 0, None, name="temperature must be > 0: ValueError")


# ------------------------------------------------------------------------------------ 01.4
ONCE_UPON_A_TIME = "Once upon a time, there was a"


@functools.cache
def _main_last_logits(text: str) -> torch.Tensor:
    """main's (vocab,) float32 logits for the token after ``text``."""
    import minidecode
    from minidecode.tinyworld.evaluate import encode_prompt

    model, tokenizer = minidecode.load("main")
    with torch.no_grad():
        return model(torch.tensor([encode_prompt(tokenizer, text)])).logits[0, -1].float()


def _kept_by_top_p(text: str, top_p: float, temperature: float) -> int:
    scores = _main_last_logits(text) / temperature
    return int((sampling.top_p_filter(scores, top_p) > float("-inf")).sum())


def answer_01_4():
    """How many tokens top-p 0.9 keeps at temperature 2 (temperature first) after
    "Once upon a time, there was a", on main."""
    return _kept_by_top_p(ONCE_UPON_A_TIME, 0.9, 2.0)


@exercise("01.4", reference=answer_01_4, returns=int)
def answer_01_4_cases() -> Iterator[Case]:
    yield Case(name="the number of tokens top-p 0.9 keeps at temperature 2")
