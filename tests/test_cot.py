"""Chain-of-thought decoding (minidecode.cot): branching, Delta, selection, the source's variant."""

from __future__ import annotations

import pytest
import torch

import minidecode
from minidecode import tinyworld as tw
from minidecode.cot import (
    CoTPath,
    aggregate_answers,
    answer_delta,
    branch_paths,
    cot_decode,
    expand_cache,
    held_out_arithmetic,
    last_number_span,
    select_path,
    stop_token_ids,
    top2_margin,
    trigger_insertion_decode,
)
from minidecode.generate import generate
from minidecode.tinyworld.evaluate import encode_prompt


@pytest.fixture(scope="module")
def target():
    torch.manual_seed(0)
    model, tokenizer = minidecode.load("main")
    return model.eval(), tokenizer


def _path(answer, delta, prob=0.1, index=0):
    return CoTPath(index, prob, [1, 2], "x", torch.zeros(2, 4), answer=answer,
                   answer_span=(1, 2) if answer else None, delta=delta)


# --------------------------------------------------------------------------- Delta and spans
def test_top2_margin_and_delta_read_only_the_answer_span():
    probs = torch.tensor([[0.5, 0.5, 0.0], [0.9, 0.05, 0.05], [0.2, 0.7, 0.1], [1.0, 0.0, 0.0]])
    assert torch.allclose(top2_margin(probs), torch.tensor([0.0, 0.85, 0.5, 1.0]))
    assert answer_delta(probs, (1, 3)) == pytest.approx((0.85 + 0.5) / 2)
    # changing a row outside the span leaves Delta alone; inside it does not
    changed = probs.clone()
    changed[0] = torch.tensor([1.0, 0.0, 0.0])
    changed[3] = torch.tensor([0.4, 0.4, 0.2])
    assert answer_delta(changed, (1, 3)) == answer_delta(probs, (1, 3))
    changed[2] = torch.tensor([0.8, 0.1, 0.1])
    assert answer_delta(changed, (1, 3)) != answer_delta(probs, (1, 3))
    for bad in ((2, 2), (-1, 2), (0, 5)):
        with pytest.raises(ValueError, match="span"):
            answer_delta(probs, bad)


def test_last_number_span_finds_the_last_number_over_several_tokens():
    assert last_number_span([" He", " has", " 3", ",", " so", " 3", " +", " 4", " =", " 7", "."]) \
        == (9, 10)
    assert last_number_span([" The", " answer", " is", " 10", "0", "."]) == (3, 5)
    assert last_number_span(["7"]) == (0, 1)
    assert last_number_span([" no", " numbers", " here", "."]) is None
    assert last_number_span([]) is None
    assert last_number_span([" 12", " 5"]) == (1, 2)          # two numbers: a space splits them


def test_delta_is_in_unit_interval_on_real_paths(target):
    model, tokenizer = target
    problem = held_out_arithmetic(2, 1)[0]
    result = cot_decode(model, tokenizer, tw.arithmetic_prompt(problem), k=10)
    assert len(result.paths) == 10
    for path in result.paths:
        assert 0.0 <= path.delta <= 1.0
        if path.answer_found:
            start, end = path.answer_span
            assert path.answer == tokenizer.decode(path.tokens[start:end]).strip()
            assert path.answer.isdigit()
            assert path.delta == pytest.approx(answer_delta(path.step_probs, path.answer_span))
        else:
            assert path.delta == 0.0 and path.answer_span is None
    firsts = [p.first_token for p in result.paths]
    assert len(set(firsts)) == 10                              # k distinct first tokens
    probs = [p.first_token_prob for p in result.paths]
    assert probs == sorted(probs, reverse=True)


# --------------------------------------------------------------------------- greedy and batching
def test_k_equals_one_is_greedy_decoding(target):
    model, tokenizer = target
    stops = stop_token_ids(tokenizer)
    for problem in held_out_arithmetic(3, 2) + held_out_arithmetic(1, 1):
        prompt = tw.arithmetic_prompt(problem)
        ids = torch.tensor([encode_prompt(tokenizer, prompt)])
        greedy = generate(model, ids, 72)[0, ids.shape[1]:].tolist()
        cut = next((i for i, t in enumerate(greedy) if t in stops), len(greedy))
        result = cot_decode(model, tokenizer, prompt, k=1)
        assert result.chosen == 0 and len(result.paths) == 1
        assert result.path.tokens == greedy[:cut]


def test_batched_and_sequential_branches_give_the_same_paths(target):
    model, tokenizer = target
    problem = held_out_arithmetic(2, 1)[0]
    ids = torch.tensor([encode_prompt(tokenizer, tw.arithmetic_prompt(problem))])
    stops = stop_token_ids(tokenizer)
    _, batched, batched_probs = branch_paths(model, ids, 5, 60, stops, batched=True)
    _, sequential, sequential_probs = branch_paths(model, ids, 5, 60, stops, batched=False)
    assert batched == sequential
    for a, b in zip(batched_probs, sequential_probs):
        assert torch.allclose(a, b, atol=1e-4)


def test_expand_cache_repeats_every_row(target):
    model, _ = target
    cache = model.new_cache()
    model(torch.tensor([[1, 2, 3]]), cache)
    wide = expand_cache(cache, 4)
    assert wide.batch_size == 4 and cache.batch_size == 1
    assert torch.equal(wide.keys[0][3], cache.keys[0][0])


# --------------------------------------------------------------------------- it really helps
@pytest.mark.parametrize(("n_steps", "index", "selection"),
                         [(2, 6, "max"), (3, 5, "max"), (3, 6, "max"), (2, 1, "aggregate"),
                          (2, 4, "aggregate"), (3, 3, "aggregate"), (3, 7, "aggregate")])
def test_cot_decoding_fixes_held_out_problems_greedy_gets_wrong(target, n_steps, index, selection):
    """Fixed held-out problems on which greedy answers directly and wrongly: the chosen path is
    another branch, and its answer is right (falling back to greedy fails the first assert)."""
    model, tokenizer = target
    problem = held_out_arithmetic(n_steps, index + 1)[index]
    result = cot_decode(model, tokenizer, tw.arithmetic_prompt(problem), k=10,
                        selection=selection)
    assert result.paths[0].answer != str(problem.answer), "greedy is right here: a bad fixture"
    assert result.chosen != 0
    assert result.answer == str(problem.answer)
    assert tw.parse_number_answer(result.path.text) == problem.answer


# --------------------------------------------------------------------------- selection rules
def test_selection_max_aggregate_and_extension():
    paths = [_path("5", 0.9, prob=0.5, index=0), _path("7", 0.6, prob=0.3, index=1),
             _path("7", 0.5, prob=0.15, index=2), _path(None, 0.0, prob=0.05, index=3)]
    assert select_path(paths, "max") == 0
    assert aggregate_answers(paths) == pytest.approx({"5": 0.9, "7": 1.1})
    assert select_path(paths, "aggregate") == 1                # the best path with answer 7
    assert select_path(paths, "delta_x_prob") == 0             # 0.45 > 0.18
    assert select_path([_path(None, 0.0), _path(None, 0.0)], "max") == 0
    with pytest.raises(ValueError, match="selection"):
        select_path(paths, "best")


def test_no_locatable_answer_is_a_flag_not_a_crash(target):
    model, tokenizer = target
    result = cot_decode(model, tokenizer, "One sunny day, Mia", k=3, max_new_tokens=6)
    assert not result.answer_found
    assert result.chosen == 0 and result.answer is None
    assert all(p.answer is None and p.delta == 0.0 for p in result.paths)
    # with the appended phrase, an answer is decoded for every path
    phrase = cot_decode(model, tokenizer, tw.arithmetic_prompt(held_out_arithmetic(1, 1)[0]),
                        k=3, answer="phrase")
    assert all(p.answer_found and 0 <= p.delta <= 1 for p in phrase.paths)


@pytest.mark.parametrize("k", [0, -1, 1118, 2.5, True])
def test_bad_k_is_a_clear_error(target, k):
    model, tokenizer = target
    with pytest.raises(ValueError, match=r"k must be an int in \[1, 1117\]"):
        cot_decode(model, tokenizer, "Q: hi\nA:", k=k)


def test_other_bad_arguments(target):
    model, tokenizer = target
    with pytest.raises(ValueError, match="answer"):
        cot_decode(model, tokenizer, "Q: hi\nA:", answer="regex")
    with pytest.raises(ValueError, match="max_new_tokens"):
        cot_decode(model, tokenizer, "Q: hi\nA:", max_new_tokens=0)
    with pytest.raises(ValueError, match="every"):
        trigger_insertion_decode(model, tokenizer, "Q: hi\nA:", every=0)
    with pytest.raises(ValueError, match="n_steps"):
        held_out_arithmetic(4, 1)


# --------------------------------------------------------------------------- the source's variant
def test_trigger_insertion_feeds_token_ids_and_keeps_them(target):
    model, tokenizer = target
    problem = held_out_arithmetic(2, 1)[0]
    out = trigger_insertion_decode(model, tokenizer, tw.arithmetic_prompt(problem), every=3,
                                   max_new_tokens=40)
    phrase = tokenizer.encode(" " + tw.TRIGGER).ids
    assert out.tokens[: len(phrase)] == phrase and all(out.inserted[: len(phrase)])
    assert out.insertions >= 2 and out.text.count(tw.TRIGGER) == out.insertions
    assert sum(not flag for flag in out.inserted) <= 40
    assert all(isinstance(t, int) and 0 <= t < model.vocab_size for t in out.tokens)
    # every model token is the argmax given everything before it, inserted phrases included
    context = encode_prompt(tokenizer, tw.arithmetic_prompt(problem))
    logits = model(torch.tensor([context + out.tokens])).logits[0]
    for i, (token, inserted) in enumerate(zip(out.tokens, out.inserted)):
        if not inserted:
            assert int(logits[len(context) + i - 1].argmax()) == token


# --------------------------------------------------------------------------- graded exercises
def _delta_of_top1(step_probs, span):            # confidence = p(top-1), not the margin
    start, end = span
    if not 0 <= start < end <= step_probs.shape[0]:
        raise ValueError(f"bad span {span}")
    return float(step_probs[start:end].max(dim=-1).values.mean())


def _delta_over_whole_path(step_probs, span):    # reads the reasoning too, not only the answer
    top2 = step_probs.topk(2, dim=-1).values
    return float((top2[:, 0] - top2[:, 1]).mean())


def _first_number(pieces):                       # the first number, not the last
    for i, piece in enumerate(pieces):
        if piece.strip().isdigit():
            return (i, i + 1)
    return None


def _last_single_token(pieces):                  # forgets numbers written over several tokens
    for i in range(len(pieces) - 1, -1, -1):
        if piece_is_number(pieces[i]):
            return (i, i + 1)
    return None


def piece_is_number(piece):
    return piece.strip().isdigit() and piece.lstrip(" ") == piece.strip()


@pytest.mark.parametrize(
    ("exercise_id", "name", "wrong"),
    [("04.1", "answer_delta", _delta_of_top1), ("04.1", "answer_delta", _delta_over_whole_path),
     ("04.2", "last_number_span", _first_number), ("04.2", "last_number_span", _last_single_token)],
)
def test_chapter_04_checks_fail_on_the_stub_and_on_a_typical_mistake(exercise_id, name, wrong,
                                                                     check_rejects):
    check_rejects(exercise_id, name, wrong)


def test_a_branch_that_starts_with_a_stop_token_is_an_empty_flagged_path(target):
    model, tokenizer = target
    problem = held_out_arithmetic(2, 5)[4]            # its top-10 holds "\n"
    result = cot_decode(model, tokenizer, tw.arithmetic_prompt(problem), k=10)
    stops = stop_token_ids(tokenizer)
    firsts = [p.first_token for p in result.paths]
    assert len(set(firsts)) == 10
    empty = [p for p in result.paths if p.first_token in stops]
    assert empty, "the fixture should have a stop token among its top-10 first tokens"
    for path in empty:
        assert path.tokens == [] and not path.answer_found and path.delta == 0.0
