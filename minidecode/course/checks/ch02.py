"""Chapter 02 (adaptive decoding): 02.1 stable entropy and varentropy, 02.2 the candidate count of
adaptive decoding (Zhu et al. 2024), 02.3 adaptive decoding inside the sampling loop (3 points),
02.4 a short answer: adaptive decoding at temperature 2."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from hypothesis import strategies as st

from minidecode import adaptive
from minidecode import entropy as entropy_module
from minidecode import generate as decode_loop
from minidecode.course.checks.ch01 import LOOP_PARTS, _main_last_logits
from minidecode.course.checks.tiny_model import check_model, random_prompt
from minidecode.course.grading import Case, exercise

INF = float("inf")

_value = st.one_of(
    st.floats(min_value=-10.0, max_value=10.0, allow_nan=False, width=32),
    st.sampled_from([0.0, 1.0]),
    st.just(-INF),
)


def _logits(min_size: int):
    return st.lists(_value, min_size=min_size, max_size=16).map(
        lambda values: torch.tensor(values if any(v > -INF for v in values) else [*values, 0.0],
                                    dtype=torch.float32)
    )


def entropy_varentropy(logits):
    """The course's entropy and varentropy (see :func:`minidecode.entropy.entropy_varentropy`)."""
    return entropy_module.entropy_varentropy(logits)


def adaptive_candidate_count(logits, epsilon):
    """The course's rule (see :func:`minidecode.adaptive.adaptive_candidate_count`)."""
    return adaptive.adaptive_candidate_count(logits, epsilon)


@exercise(
    "02.1",
    reference=entropy_varentropy,
    returns=tuple,
    strategy=st.builds(Case, _logits(1)),
    max_examples=20,
)
def entropy_varentropy_cases() -> Iterator[Case]:
    """Uniform, peaked, -inf entries, float16 input, a batch."""
    generator = torch.Generator().manual_seed(3)
    yield Case(torch.zeros(4))                                       # log 4 and 0
    yield Case(torch.tensor([2.0, 1.0, 0.0]))
    yield Case(torch.tensor([30.0, 0.0, 0.0]))                       # almost certain
    yield Case(torch.tensor([0.0, 0.0, -INF, -INF]), name="-inf entries contribute 0, not nan")
    yield Case(torch.tensor([1.0, 0.0, -INF], dtype=torch.float16),
               name="float16 in, float32 out")
    yield Case(torch.randn(3, 7, generator=generator) * 2, name="a batch: (3,) and (3,)")


def _gain_dips_then_rises() -> torch.Tensor:
    """Logits whose gains are Delta_2 = 0.37, Delta_3 = 0.0095 and Delta_4 = 0.019: with epsilon
    1e-2 the count is 2, although Delta_4 > epsilon again."""
    return torch.tensor([3.0, 2.9, 0.0, -0.1, -9.0, -9.0, -9.0, -9.0, -9.0, -9.0])


@exercise(
    "02.2",
    reference=adaptive_candidate_count,
    returns=torch.Tensor,
    strategy=st.builds(Case, _logits(2), st.sampled_from([1e-3, 1e-2, 3e-2])),
    max_examples=20,
)
def adaptive_count_cases() -> Iterator[Case]:
    """Peaked, flat head, uniform, -inf, a batch, bad epsilon."""
    generator = torch.Generator().manual_seed(4)
    flat_head = torch.full((40,), -6.0)
    flat_head[:6] = torch.tensor([2.0, 1.9, 1.8, 1.6, 1.5, 1.4])
    yield Case(torch.tensor([9.0, 0.0, 0.0, 0.0, 0.0]), 1e-3)      # one clear winner
    yield Case(flat_head, 1e-3)                                      # six good options
    yield Case(flat_head, 2e-2)                                      # a larger epsilon keeps fewer
    yield Case(torch.tensor([0.0, -INF, -INF, -INF]), 1e-3)         # one-hot
    yield Case(torch.zeros(8), 1e-3, name="uniform: the count is 1")
    yield Case(torch.randn(3, 30, generator=generator) * 2, 1e-3, name="a batch: shape (3,)")
    yield Case(_gain_dips_then_rises(), 1e-2,
               name="the count stops at the first k where the gain is <= epsilon")
    yield Case(torch.tensor([1.0, 0.0]), 0.0, name="epsilon must be in (0, 1): ValueError")
    yield Case(torch.tensor([1.0, 0.0]), 1.0, name="epsilon must be in (0, 1): ValueError")


# ------------------------------------------------------------------------------------ 02.3
class _CountKept:
    """Runs a processor and records, at every step, how many tokens each row keeps."""

    def __init__(self, processor):
        self.processor, self.counts = processor, []

    def __call__(self, input_ids, scores):
        kept = self.processor(input_ids, scores)
        self.counts.append((kept > -INF).sum(dim=-1))
        return kept


def adaptive_sample(model, prompt_ids, max_new_tokens, epsilon, temperature, seed,
                    stop_token_id):
    """The course's answer: :func:`minidecode.generate.generate` with
    :class:`minidecode.adaptive.AdaptiveDecoding` as its processor; returns the tokens and the
    number of candidates each row kept at each step, (steps, batch) int64."""
    recorder = _CountKept(adaptive.AdaptiveDecoding(epsilon))
    tokens = decode_loop.generate(model, prompt_ids, max_new_tokens, do_sample=True,
                                  temperature=temperature, logits_processors=[recorder],
                                  generator=torch.Generator().manual_seed(seed),
                                  eos_token_id=stop_token_id)
    kept = (torch.stack(recorder.counts) if recorder.counts
            else torch.zeros(0, prompt_ids.shape[0], dtype=torch.long))
    return tokens, kept


def _adaptive_case(batch, prompt_length, max_new_tokens, epsilon, temperature, seed, stop,
                   name=""):
    return Case(check_model(prompt_length, max_new_tokens),
                random_prompt(batch, prompt_length, seed), max_new_tokens, epsilon, temperature,
                seed, stop, name=name)


@exercise(
    "02.3",
    reference=adaptive_sample,
    returns=tuple,
    points=3,
    answers=(*LOOP_PARTS, adaptive.AdaptiveDecoding, adaptive.adaptive_filter),
    strategy=st.builds(
        _adaptive_case, st.integers(1, 3), st.integers(1, 6), st.integers(1, 10),
        st.sampled_from([1e-3, 1e-2, 0.2]), st.sampled_from([0.7, 1.0, 2.0]),
        st.integers(0, 2**16), st.sampled_from([None, 28]),
    ),
    max_examples=5,
)
def adaptive_sample_cases() -> Iterator[Case]:
    """One row, a batch with stops, temperature before the rule, ties, zero tokens, bad input."""
    yield _adaptive_case(1, 5, 10, 1e-3, 1.0, 0, None, name="one row, epsilon 1e-3")
    yield _adaptive_case(3, 4, 12, 1e-2, 1.0, 1, 28,
                         name="a batch: each row its own candidate set; stopped rows padded")
    yield _adaptive_case(2, 3, 12, 1e-3, 0.6, 5, None,
                         name="temperature first, then the rule on the tempered scores")
    yield _adaptive_case(2, 6, 10, 1e-3, 1.6, 2, 28, name="a high temperature")
    yield _adaptive_case(3, 3, 12, 0.2, 2.0, 0, None,
                         name="tokens 22 and 31 always tie: a tie with the last kept token is "
                              "kept too")
    yield _adaptive_case(2, 3, 0, 1e-3, 1.0, 0, 28, name="max_new_tokens = 0: the prompt, and "
                                                         "an empty (0, batch) count")
    yield _adaptive_case(1, 3, 4, 0.0, 1.0, 0, None, name="epsilon must be in (0, 1): ValueError")
    yield _adaptive_case(1, 3, 4, 1e-3, 0.0, 0, None, name="temperature must be > 0: ValueError")


# ------------------------------------------------------------------------------------ 02.4
MAYA = "One sunny day, Maya woke up early."


def answer_02_4():
    """How many tokens adaptive decoding (epsilon 1e-3) keeps at temperature 2 after
    "One sunny day, Maya woke up early.", on main."""
    return _kept_by_adaptive(MAYA, 1e-3, 2.0)


def _kept_by_adaptive(text: str, epsilon: float, temperature: float) -> int:
    scores = _main_last_logits(text) / temperature
    return int((adaptive.adaptive_filter(scores, epsilon) > -INF).sum())


@exercise("02.4", reference=answer_02_4, returns=int)
def answer_02_4_cases() -> Iterator[Case]:
    yield Case(name="the number of candidates adaptive decoding keeps at temperature 2")
