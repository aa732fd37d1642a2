"""Chapter 03 (temperature scheduling): 03.1 EDT's temperature, 03.2 llama.cpp's dynamic
temperature, 03.3 EDT inside the sampling loop (3 points), 03.4 a short answer: EDT's near-greedy
steps along a story."""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator

import torch
from hypothesis import strategies as st

from minidecode import generate as decode_loop
from minidecode import temperature
from minidecode.course.checks.ch01 import LOOP_PARTS
from minidecode.course.checks.tiny_model import check_model, random_prompt
from minidecode.course.grading import Case, exercise

_entropies = st.lists(st.floats(min_value=0.0, max_value=8.0, width=32), min_size=1,
                      max_size=6).map(lambda values: torch.tensor(values, dtype=torch.float32))


def edt_temperature(entropy, t0, n, theta):
    """The course's EDT temperature (see :func:`minidecode.temperature.edt_temperature`)."""
    return temperature.edt_temperature(entropy, t0, n, theta)


def dynamic_temperature(entropy, n_candidates, min_temperature, max_temperature, exponent):
    """llama.cpp's rule (see :func:`minidecode.temperature.dynamic_temperature`)."""
    return temperature.dynamic_temperature(entropy, n_candidates, min_temperature,
                                           max_temperature, exponent)


@exercise(
    "03.1",
    reference=edt_temperature,
    returns=torch.Tensor,
    strategy=st.builds(Case, _entropies, st.floats(0.1, 2.0), st.floats(0.05, 0.95),
                       st.floats(0.05, 3.0)),
    max_examples=20,
)
def edt_cases() -> Iterator[Case]:
    """The paper's N = 0.8, zero entropy, large entropy, bad arguments."""
    yield Case(torch.tensor([0.5, 1.0, 2.0, 4.0]), 1.0, 0.8, 1.0)
    yield Case(torch.tensor([1.0]), 0.7, 0.8, 0.5)
    yield Case(torch.tensor([0.0, 3.0]), 1.0, 0.8, 1.0, name="entropy 0 gives temperature 0")
    yield Case(torch.tensor([[50.0, 2.0], [0.1, 1.5]]), 1.2, 0.5, 2.0, name="any shape")
    yield Case(torch.tensor([1.0]), 0.0, 0.8, 1.0, name="t0 must be > 0: ValueError")
    yield Case(torch.tensor([1.0]), 1.0, 1.0, 1.0, name="n must be in (0, 1): ValueError")
    yield Case(torch.tensor([1.0]), 1.0, 0.0, 1.0, name="n must be in (0, 1): ValueError")
    yield Case(torch.tensor([1.0]), 1.0, 0.8, 0.0, name="theta must be > 0: ValueError")


@exercise(
    "03.2",
    reference=dynamic_temperature,
    returns=torch.Tensor,
    strategy=st.builds(
        lambda entropy, count, low, spread, exponent: Case(
            entropy.clamp(max=math.log(count)), torch.full_like(entropy, count, dtype=torch.long),
            low, low + spread, exponent),
        _entropies, st.integers(1, 3000), st.floats(0.0, 1.0), st.floats(0.0, 2.0),
        st.floats(0.25, 4.0),
    ),
    max_examples=20,
)
def dynamic_temperature_cases() -> Iterator[Case]:
    """Min, middle and max entropy, one candidate, an exponent, bad arguments."""
    full = math.log(1000)
    counts = torch.tensor([1000, 1000, 1000])
    yield Case(torch.tensor([0.0, full / 2, full]), counts, 0.5, 1.5, 1.0)
    yield Case(torch.tensor([0.0, full / 2, full]), counts, 0.5, 1.5, 2.0)
    yield Case(torch.tensor([0.5, 0.0]), torch.tensor([2, 1]), 0.0, 2.0, 1.0,
               name="one candidate: log n = 0, the fraction is 0")
    yield Case(torch.tensor([3.0, 0.2]), torch.tensor([4, 4]), 0.5, 1.5, 1.0,
               name="the fraction H / log n is clamped to [0, 1]")
    yield Case(torch.tensor([1.0]), torch.tensor([10]), 1.0, 1.0, 1.0,
               name="min_temperature = max_temperature: a fixed T")
    yield Case(torch.tensor([1.0]), torch.tensor([10]), -0.5, 1.0, 1.0,
               name="min_temperature must be >= 0: ValueError")
    yield Case(torch.tensor([1.0]), torch.tensor([10]), 1.0, 0.5, 1.0,
               name="min_temperature must be <= max_temperature: ValueError")
    yield Case(torch.tensor([1.0]), torch.tensor([10]), 0.5, 1.0, 0.0,
               name="exponent must be > 0: ValueError")


# ------------------------------------------------------------------------------------ 03.3
def edt_sample(model, prompt_ids, max_new_tokens, t0, n, theta, seed, stop_token_id):
    """The course's answer: :func:`minidecode.generate.generate` with
    :class:`minidecode.temperature.EDT` as its processor; returns the tokens and the temperature
    of every row at every step, (steps, batch) float32."""
    scheduler = temperature.EDT(t0=t0, n=n, theta=theta)
    tokens = decode_loop.generate(model, prompt_ids, max_new_tokens, do_sample=True,
                                  logits_processors=[scheduler],
                                  generator=torch.Generator().manual_seed(seed),
                                  eos_token_id=stop_token_id)
    temperatures = (torch.stack(scheduler.history) if scheduler.history
                    else torch.zeros(0, prompt_ids.shape[0]))
    return tokens, temperatures


def _edt_case(batch, prompt_length, max_new_tokens, t0, n, theta, seed, stop, name=""):
    return Case(check_model(prompt_length, max_new_tokens),
                random_prompt(batch, prompt_length, seed), max_new_tokens, t0, n, theta, seed,
                stop, name=name)


@exercise(
    "03.3",
    reference=edt_sample,
    returns=tuple,
    points=3,
    answers=(*LOOP_PARTS, temperature.EDT),
    strategy=st.builds(
        _edt_case, st.integers(1, 3), st.integers(1, 6), st.integers(1, 10),
        st.sampled_from([0.7, 1.0, 1.5]), st.sampled_from([0.5, 0.8]),
        st.sampled_from([0.3, 1.0, 3.0]), st.integers(0, 2**16), st.sampled_from([None, 28]),
    ),
    max_examples=5,
)
def edt_sample_cases() -> Iterator[Case]:
    """The paper's setting, a batch with stops, T0 != 1, near-greedy steps, zero tokens, bad
    arguments."""
    yield _edt_case(1, 5, 10, 1.0, 0.8, 1.0, 0, None, name="one row, the paper's N = 0.8")
    yield _edt_case(3, 4, 12, 1.0, 0.8, 1.0, 1, 28,
                    name="a batch: each row its own entropy and temperature; stopped rows padded")
    yield _edt_case(2, 3, 12, 1.5, 0.8, 0.5, 5, None,
                    name="T0 = 1.5: the entropy is that of the model's logits, before any "
                         "temperature")
    yield _edt_case(3, 3, 12, 1.0, 0.8, 25.0, 2, None,
                    name="a large theta: confident steps get T < 1e-4 (even 0) and are greedy")
    yield _edt_case(2, 3, 0, 1.0, 0.8, 1.0, 0, 28,
                    name="max_new_tokens = 0: the prompt, and an empty (0, batch) trace")
    yield _edt_case(1, 3, 4, 0.0, 0.8, 1.0, 0, None, name="t0 must be > 0: ValueError")
    yield _edt_case(1, 3, 4, 1.0, 1.0, 1.0, 0, None, name="n must be in (0, 1): ValueError")
    yield _edt_case(1, 3, 4, 1.0, 0.8, 0.0, 0, None, name="theta must be > 0: ValueError")


# ------------------------------------------------------------------------------------ 03.4
MAYA = "One sunny day, Maya woke up early."


@functools.cache
def _edt_trace_on_main(text: str, max_new_tokens: int, seed: int) -> torch.Tensor:
    """(steps,) the temperatures of EDT (T0 1, N 0.8, theta 1) along a story from ``text``."""
    import minidecode
    from minidecode.tinyworld import EOS
    from minidecode.tinyworld.evaluate import encode_prompt

    model, tokenizer = minidecode.load("main")
    prompt_ids = torch.tensor([encode_prompt(tokenizer, text)])
    _, temperatures = edt_sample(model, prompt_ids, max_new_tokens, 1.0, 0.8, 1.0, seed,
                                 tokenizer.token_to_id(EOS))
    return temperatures[:, 0]


def answer_03_4():
    """How many of the steps of EDT's story (40 tokens at most, seed 0) from "One sunny day, Maya
    woke up early." on main ran below temperature 0.3."""
    return int((_edt_trace_on_main(MAYA, 40, 0) < 0.3).sum())


@exercise("03.4", reference=answer_03_4, returns=int)
def answer_03_4_cases() -> Iterator[Case]:
    yield Case(name="the number of near-greedy steps (T < 0.3) along EDT's story")
