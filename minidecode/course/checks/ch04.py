"""Chapter 04 (chain-of-thought decoding): 04.1 the answer confidence Delta of a path, 04.2 the
span of the last number in a path, 04.3 CoT-decoding end to end (branch, continue, score,
choose), 04.4 find the bug: trigger insertion that takes a logit for a token id, 04.5 a short
answer: what aggregated Delta does where max Delta is wrong."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Any

import torch
from hypothesis import strategies as st

from minidecode.cot import (
    answer_delta,
    branch_paths,
    cot_decode,
    held_out_arithmetic,
    last_number_span,
    select_path,
    trigger_insertion_decode,
)
from minidecode.course.grading import Case, exercise


# 04.1 random cases: a path of 1..8 positions over 2..12 tokens and an answer span inside it.
@st.composite
def _delta_cases(draw: st.DrawFn) -> Case:
    length = draw(st.integers(min_value=1, max_value=8))
    vocab = draw(st.integers(min_value=2, max_value=12))
    logit = st.floats(min_value=-5.0, max_value=5.0, allow_nan=False, width=32)
    logits = draw(st.lists(st.lists(logit, min_size=vocab, max_size=vocab), min_size=length,
                           max_size=length))
    start = draw(st.integers(min_value=0, max_value=length - 1))
    end = draw(st.integers(min_value=start + 1, max_value=length))
    return Case(torch.softmax(torch.tensor(logits) * 2, dim=-1), (start, end))


@exercise("04.1", reference=answer_delta, returns=float, strategy=_delta_cases(), max_examples=20,
          atol=1e-5)
def answer_delta_cases() -> Iterator[Case]:
    """A one-token answer, a two-token answer after confident reasoning, a flat row, bad spans."""
    probs = torch.tensor([[0.97, 0.02, 0.01], [0.5, 0.3, 0.2], [0.4, 0.4, 0.2], [0.1, 0.2, 0.7]])
    yield Case(probs, (3, 4))                      # only the last row: 0.7 - 0.2
    yield Case(probs, (1, 3), name="reads only the answer's rows (1 and 2, not row 0)")
    yield Case(probs, (0, 4))
    yield Case(probs, (2, 3))                      # a tie at the top: Delta 0
    yield Case(torch.tensor([[1.0, 0.0]]), (0, 1))
    generator = torch.Generator().manual_seed(4)
    for _ in range(3):
        rows = torch.softmax(torch.randn(6, 20, generator=generator) * 3, dim=-1)
        yield Case(rows, (2, 5))
    yield Case(probs, (2, 2), name="start < end: ValueError for an empty span")
    yield Case(probs, (3, 5), name="end <= path_len: ValueError past the end")
    yield Case(probs, (-1, 2), name="0 <= start: ValueError for a negative start")


# 04.2 random cases: pieces drawn from words, numbers with a leading space and bare digits.
_pieces = st.lists(st.sampled_from([" He", " has", " so", " =", " +", ".", ",", " The", " answer",
                                    " is", " 7", " 12", "3", "0", " 45", "7.", " x1"]),
                   max_size=12)


@exercise("04.2", reference=last_number_span, returns=(tuple, type(None)),
          strategy=st.builds(Case, _pieces), max_examples=30)
def last_number_span_cases() -> Iterator[Case]:
    """The last of several numbers, a number over two tokens, no number, a bare first piece."""
    yield Case([" He", " has", " 3", ",", " so", " 3", " +", " 4", " =", " 7", "."])
    yield Case([" The", " answer", " is", " 10", "0", "."])          # " 10" + "0" = 100
    yield Case([" so", " 5", " +", " 9", " =", " 14", ".", " The", " answer", " is", " 14"])
    yield Case([" no", " numbers", " here"])
    yield Case([])
    yield Case(["7"])
    yield Case([" 12", " 5"], name="a piece with a space starts a new number")
    yield Case([" it", " costs", " 14.", " ok"], name="\"14.\" mixes digits with a dot: no number")
    yield Case(["1", "2", "3"], name="one number over 3 pieces")


# ------------------------------------------------------------------------------------- 04.3-04.5
# The model of these exercises is main-draft (1 layer, trained on the same TinyWorld text as
# main and distilled from it): its paths are real chains with numbers in them, and a check stays
# within seconds.
@functools.lru_cache(maxsize=1)
def _draft() -> tuple[Any, Any]:
    import minidecode

    model, tokenizer = minidecode.load("main-draft")
    return model.eval(), tokenizer


def _question_ids(tokenizer: Any, n_steps: int, index: int) -> torch.Tensor:
    """(1, prompt) ids of held-out arithmetic problem ``index`` with ``n_steps`` steps."""
    from minidecode import tinyworld
    from minidecode.tinyworld.corpus import encode_prompt

    problem = held_out_arithmetic(n_steps, index + 1)[index]
    return torch.tensor([encode_prompt(tokenizer, tinyworld.arithmetic_prompt(problem))])


def cot_decode_max(model: Any, tokenizer: Any, prompt_ids: torch.Tensor, k: int,
                   max_new_tokens: int) -> dict[str, list | int]:
    """CoT-decoding with max Delta and the last number as the answer, as :func:`cot_decode`
    does it, with each branch's first token, tokens, answer and Delta, and the chosen branch."""
    result = cot_decode(model, tokenizer, prompt_ids, k=k, max_new_tokens=max_new_tokens)
    return {
        "first_tokens": [path.first_token for path in result.paths],
        "tokens": [path.tokens for path in result.paths],
        "answers": [path.answer for path in result.paths],
        "deltas": [path.delta for path in result.paths],
        "chosen": result.chosen,
    }


@st.composite
def _cot_cases(draw: st.DrawFn) -> Case:
    model, tokenizer = _draft()
    n_steps = draw(st.integers(1, 3))
    index = draw(st.integers(0, 9))
    k = draw(st.integers(1, 3))
    max_new_tokens = draw(st.integers(1, 10))
    return Case(model, tokenizer, _question_ids(tokenizer, n_steps, index), k, max_new_tokens)


@exercise("04.3", reference=cot_decode_max, returns=dict, strategy=_cot_cases(), max_examples=2,
          points=3, stateful=("tokenizer",), answers=(branch_paths,))
def cot_decode_max_cases() -> Iterator[Case]:
    """A direct answer against chains, a chain that needs Delta on its answer only, greedy
    (k = 1), a path cut before its first number, and k out of range."""
    model, tokenizer = _draft()
    yield Case(model, tokenizer, _question_ids(tokenizer, 1, 0), 3, 14,
               name="branch on the top-k first tokens, continue each greedily")
    yield Case(model, tokenizer, _question_ids(tokenizer, 2, 0), 3, 16,
               name="Delta on the answer span only; choose the largest")
    yield Case(model, tokenizer, _question_ids(tokenizer, 3, 1), 1, 10, name="k = 1 is greedy")
    yield Case(model, tokenizer, _question_ids(tokenizer, 2, 1), 2, 3,
               name="no number in a path: answer None, Delta 0")
    yield Case(model, tokenizer, _question_ids(tokenizer, 1, 1), 0, 8,
               name="k outside [1, vocab]: ValueError")


def trigger_greedy(model: Any, tokenizer: Any, prompt_ids: torch.Tensor, every: int,
                   max_new_tokens: int) -> list[int]:
    """Greedy decoding that feeds the trigger's token ids through the cache at step 0 and after
    every ``every`` generated tokens (:func:`trigger_insertion_decode`, phrase due = phrase fed)."""
    return trigger_insertion_decode(model, tokenizer, prompt_ids, every=every,
                                    max_new_tokens=max_new_tokens, at_sentence_end=False).tokens


@exercise("04.4", reference=trigger_greedy, returns=list, stateful=("tokenizer",))
def trigger_greedy_cases() -> Iterator[Case]:
    """The trigger every 3 and every 5 tokens, once only, and bad arguments."""
    model, tokenizer = _draft()
    yield Case(model, tokenizer, _question_ids(tokenizer, 2, 4), 3, 12,
               name="the next token is the argmax's index, not the largest logit's value")
    yield Case(model, tokenizer, _question_ids(tokenizer, 1, 2), 5, 10)
    yield Case(model, tokenizer, _question_ids(tokenizer, 3, 0), 20, 6)
    yield Case(model, tokenizer, _question_ids(tokenizer, 1, 2), 0, 6,
               name="every >= 1: ValueError")


@functools.lru_cache(maxsize=1)
def _aggregation_on_problem() -> str:
    """What aggregated Delta does on held-out 3-step problem 7 (main-draft, k = 10, 48 tokens)
    where max Delta is wrong: "a" right, "b" max Delta's wrong answer, "c" another wrong one."""
    model, tokenizer = _draft()
    problem = held_out_arithmetic(3, 8)[7]
    result = cot_decode(model, tokenizer, _question_ids(tokenizer, 3, 7), k=10,
                        max_new_tokens=48)
    truth = str(problem.answer)
    by_max = result.paths[select_path(result.paths, "max")].answer
    by_sum = result.paths[select_path(result.paths, "aggregate")].answer
    if not any(path.answer == truth for path in result.paths):
        return "d"
    return "a" if by_sum == truth else "b" if by_sum == by_max else "c"


def answer_04_5() -> str:
    """The multiple-choice answer of 04.5, computed live from the run it asks about."""
    return _aggregation_on_problem()


@exercise("04.5", reference=answer_04_5, returns=str)
def answer_04_5_cases() -> Iterator[Case]:
    """One question, no arguments."""
    yield Case(name="aggregated Delta on the problem where max Delta is wrong")
