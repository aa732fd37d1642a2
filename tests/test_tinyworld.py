"""TinyWorld: the generator is deterministic and every document's answer agrees with its text."""

from __future__ import annotations

import random
import re

import pytest

from minidecode import tinyworld as tw
from minidecode.tinyworld.train import build_batch, build_row, encode_doc, train_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(n_docs=3000)


def test_same_seed_same_bytes_other_seed_other_bytes():
    a = [d.text for d in tw.corpus(7, 200)]
    b = [d.text for d in tw.corpus(7, 200)]
    c = [d.text for d in tw.corpus(8, 200)]
    assert a == b
    assert a != c


def test_training_batches_are_a_function_of_seed_and_step(tokenizer):
    import minidecode.tinyworld.train as train

    train._worker_init(tokenizer.to_str())
    x1, w1 = build_batch((0, 5, 2, 128, 0.6))
    x2, w2 = build_batch((0, 5, 2, 128, 0.6))
    x3, _ = build_batch((0, 6, 2, 128, 0.6))
    assert (x1 == x2).all() and (w1 == w2).all()
    assert (x1 != x3).any()


def test_arithmetic_chains_and_answers_are_right():
    rng = random.Random(1)
    for _ in range(300):
        p = tw.arithmetic_problem(rng)
        assert len(p.chain) == p.n_steps
        value = None
        for step in p.chain:
            a, op, b, c = re.search(r"(\d+) ([+-]) (\d+) = (\d+)\.$", step).groups()
            a, b, c = int(a), int(b), int(c)
            assert value is None or a == value  # each step starts from the previous result
            assert c == (a + b if op == "+" else a - b)
            assert 0 <= c <= 99
            value = c
        assert value == p.answer
        for style in ("direct", "chain", "trigger"):
            assert tw.parse_number_answer(tw.arithmetic_answer(p, style)) == p.answer
        assert tw.arithmetic_answer(p, "trigger").startswith(tw.TRIGGER)
        assert tw.arithmetic_answer(p, "direct").startswith("The answer is")


def test_arithmetic_drills_are_right():
    rng = random.Random(2)
    seen = 0
    for _ in range(60):
        doc = tw.arithmetic(rng)
        for a, op, b, c in re.findall(r"(?<![\d=] )\b(\d+) ([+-]) (\d+) = (\d+)\.", doc.text):
            assert int(c) == (int(a) + int(b) if op == "+" else int(a) - int(b))
            seen += 1
    assert seen > 100


def test_retrieval_answers_were_stated_in_the_document():
    rng = random.Random(3)
    for _ in range(200):
        doc = tw.retrieval(rng)
        stated = dict(re.findall(r"The (\w+ \w+) has code (\d{4})\.", doc.text))
        asked = re.findall(r"What code does the (\w+ \w+) have\?\nA: The \1 has code (\d{4})\.",
                           doc.text)
        assert asked, doc.text
        for key, code in asked:
            assert stated[key] == code
        assert doc.truth["code"] == stated[doc.truth["key"]]
        assert doc.truth["prompt"].endswith(f"The {doc.truth['key']} has code")
        # the needle's fact is in the prompt, once
        assert doc.truth["prompt"].count(tw.fact_sentence(doc.truth["key"], doc.truth["code"])) == 1


def test_facts_in_one_document_share_no_colour_and_no_container():
    rng = random.Random(5)
    for keys in (tw.TRAIN_KEYS, tw.HELD_OUT_KEYS):
        for _ in range(100):
            doc = tw.retrieval(rng, n_facts=8, keys=keys)
            facts = doc.text.split("\n\n")[0]  # the questions restate the keys
            stated = re.findall(r"The (\w+) (\w+) has code \d{4}\.", facts)
            colours, containers = zip(*stated)
            assert len(stated) == 8
            assert len(set(colours)) == len(colours) and len(set(containers)) == len(containers)


def test_needle_depth_places_the_fact():
    rng = random.Random(4)
    early = tw.retrieval(rng, n_filler=30, needle_depth=0.0).truth
    late = tw.retrieval(rng, n_filler=30, needle_depth=1.0).truth

    def rel(t):
        return t["prompt"].index(tw.fact_sentence(t["key"], t["code"])) / len(t["prompt"])

    assert rel(early) < 0.1 < 0.7 < rel(late)


def test_held_out_keys_never_occur_in_training_rows(tokenizer):
    assert set(tw.HELD_OUT_KEYS).isdisjoint(tw.TRAIN_KEYS)
    assert len(tw.HELD_OUT_KEYS) + len(tw.TRAIN_KEYS) == len(tw.ALL_KEYS)
    rng = random.Random(5)
    text = " ".join(tokenizer.decode(build_row(rng, tokenizer, 512, 1.0)[0]) for _ in range(150))
    assert "has code" in text
    for key in tw.HELD_OUT_KEYS:
        assert key not in text


def test_qa_truth_matches_the_context():
    rng = random.Random(6)
    for _ in range(300):
        doc = tw.qa(rng)
        t = doc.truth
        moves = re.findall(rf"{t['name']} (?:went to|is in|walked to) the (\w+)\.", t["prompt"])
        if t["answerable"]:
            assert moves and moves[-1] == t["place"]
        else:
            assert t["name"] not in t["prompt"].split("\nQ:")[0]
        assert t["place"] in doc.text[doc.answer_spans[0][0]:]


def test_structured_text_repeats_spans_of_itself():
    rng = random.Random(7)
    for _ in range(50):
        text = tw.structured(rng).text
        # some 14-character span occurs twice: what prompt-lookup drafting can copy from
        spans = [text[i : i + 14] for i in range(len(text) - 14)]
        assert len(set(spans)) < len(spans), text


def test_tokenizer_makes_numbers_0_to_99_single_tokens():
    from pathlib import Path

    from tokenizers import Tokenizer

    import minidecode

    path = Path(minidecode.__file__).parent / "models" / "main" / "tokenizer.json"
    tokenizer = Tokenizer.from_file(str(path))
    for n in range(100):
        assert len(tokenizer.encode(f" has {n}.").ids) == 3, n
    assert len(tokenizer.encode(" 4821").ids) == 2


def test_answer_tokens_get_the_answer_weight(tokenizer):
    doc = tw.arithmetic_problem(random.Random(8))
    text = f"Q: {doc.question}\nA:"
    d = tw.Doc("arithmetic", text + " The answer is 5.", [(len(text), len(text) + 17)])
    ids, weights = encode_doc(tokenizer, d)
    assert weights[0] == 1.0 and weights[-1] == 3.0
    answer = tokenizer.decode([i for i, w in zip(ids, weights) if w == 3.0])
    assert answer.strip() == "The answer is 5."


def test_code_of_facts_put_the_key_right_before_is():
    """style="code_of": the answer's last word before the code is the key's last word + "is",
    and that pair occurs exactly once in the document before the answer: the fact."""
    rng = random.Random(5)
    for _ in range(20):
        doc = tw.retrieval(rng, n_filler=6, n_facts=4, style="code_of")
        key, code = doc.truth["key"], doc.truth["code"]
        assert doc.truth["prompt"].endswith(f"The code of the {key} is")
        body = doc.truth["prompt"][: doc.truth["prompt"].rindex("\nQ:")]
        assert body.count(f"{key} is") == 1
        assert f"The code of the {key} is {code}." in body
    with pytest.raises(ValueError, match="style"):
        tw.retrieval(rng, style="code of")


def test_associative_recall_queries_stated_pairs():
    rng = random.Random(2)
    for _ in range(20):
        doc = tw.associative_recall(rng)
        pairs, queries = doc.text.rstrip("\n").split("\n")
        stated = dict(re.findall(r"the (\w+ \w+) is (\d{4})\.", pairs))
        asked = re.findall(r"the (\w+ \w+) is (\d{4})\.", queries)
        assert asked and all(stated[k] == v for k, v in asked)
        assert all(doc.text[a:b].strip() in stated.values() for a, b in doc.answer_spans)
        assert not set(stated) & set(tw.HELD_OUT_KEYS)


def test_qa_drill_answers_each_persons_last_move():
    rng = random.Random(9)
    for _ in range(30):
        doc = tw.qa_drill(rng)
        moves, *qa_lines = doc.text.split("\nQ: ")
        last = {}
        for name, place in re.findall(r"(\w+) (?:went to|is in|walked to) the (\w+)\.", moves):
            last[name] = place
        asked = []
        for block in qa_lines:
            name = re.match(r"Where is (\w+)\?", block).group(1)
            answer = block.split("\nA: ")[1]
            place = last[name]
            assert answer.rstrip(".").endswith(f"the {place}") or answer == f"The {place}."
            asked.append(name)
        assert len(asked) == len(set(asked)) >= 2


def test_needle_example_speaks_the_models_wording():
    """The main model was trained on "The code of the <key> is ..." facts: a needle for it must
    state and ask the fact that way, with the code's tokens found in the document."""
    import random

    import minidecode
    from minidecode.tinyworld.needles import needle_example

    tokenizer = minidecode.load("main")[1]
    for style, question in (("has_code", "What code does the"), ("code_of", "What is the code of")):
        ex = needle_example(tokenizer, 300, 0.5, random.Random(1), style=style)
        assert question in tokenizer.decode(ex.question_ids)
        assert tokenizer.decode([ex.document_ids[i] for i in ex.code_positions]).strip() == ex.code
        if style == "code_of":
            assert f"is {ex.code}." in tokenizer.decode(ex.document_ids)
