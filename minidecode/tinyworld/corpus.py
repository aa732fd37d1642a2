"""TinyWorld: a small synthetic world whose text shows each decoding phenomenon.

Every document family exists because a chapter needs it:

=================  ===========================================================  ==========
family             what it teaches the model                                    chapters
=================  ===========================================================  ==========
``stories``        fluent, predictable narrative (a draft model can guess it)   01-03, 07
``retrieval``      a code stated once among filler and distractors, then asked  08, 09
``arithmetic``     word problems answered directly or with a worked chain       04, 05
``qa``             short answers with several phrasings, some unanswerable      06
``structured``     tables, lists and code that repeat spans of their context    07
=================  ===========================================================  ==========

Everything is drawn from a ``random.Random`` seeded by the caller, so the same seed gives the
same bytes. Each generator returns a :class:`Doc`: the text, the character spans whose tokens get a
larger loss weight (answers), and, for documents that double as evaluation tasks, the ground truth.

Retrieval keys are ``<colour> <container>`` pairs ("the green door"). A fixed, seed-independent
subset of the pairs never appears in training (:data:`HELD_OUT_KEYS`): every *word* of a held-out
key is familiar, but the pair is not, so answering needs a real lookup rather than a memorised key.

The arithmetic format is the one small trial models learned fastest (restated chains; a direct
style that is recognisable from its first token "The"; the trigger "Let's think step by step.").
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

EOS = "<|endoftext|>"
HELD_OUT_SEED = 20261123  # training rows are seeded by strings "seed-step-row"; never this int
TRIGGER = "Let's think step by step."

# ----------------------------------------------------------------------------- vocabulary
NAMES: list[tuple[str, str]] = [
    ("Tom", "he"), ("Mia", "she"), ("Sam", "he"), ("Lily", "she"), ("Ben", "he"), ("Emma", "she"),
    ("Max", "he"), ("Zoe", "she"), ("Leo", "he"), ("Anna", "she"), ("Jack", "he"), ("Ella", "she"),
    ("Noah", "he"), ("Ruby", "she"), ("Finn", "he"), ("Lucy", "she"), ("Owen", "he"),
    ("Grace", "she"), ("Adam", "he"), ("Chloe", "she"), ("Eli", "he"), ("Ivy", "she"),
    ("Hugo", "he"), ("Nora", "she"), ("Oscar", "he"), ("Rose", "she"), ("Theo", "he"),
    ("Maya", "she"), ("Luke", "he"), ("Alice", "she"),
]
PLACES = ["kitchen", "garden", "library", "park", "school", "market", "bakery", "beach", "forest",
          "station", "bedroom", "office"]
ANIMALS = ["cat", "dog", "bird", "rabbit", "fox", "horse", "duck", "mouse"]
THINGS = ["ball", "book", "kite", "hat", "lamp", "cup", "map", "bell", "drum", "coat"]
ADJECTIVES = ["small", "big", "old", "new", "red", "blue", "happy", "quiet", "bright", "soft"]
WEATHER = ["sunny", "rainy", "windy", "cold", "warm", "cloudy"]
FEELINGS = ["happy", "tired", "hungry", "sad", "excited", "sleepy", "curious", "calm"]

ARITH_OBJECTS = ["apples", "pencils", "marbles", "stickers", "cookies", "books", "coins", "shells",
                 "stamps", "cards", "balloons", "buttons", "flowers", "eggs", "toys", "rocks",
                 "candles", "ribbons", "cups", "keys"]
# Each phrasing takes the amount and a friend's name; "+"/"-" says what it does to the count.
ADD_PHRASES = ["buys {n} more", "finds {n} more", "gets {n} more from {friend}",
               "picks up {n} more", "receives {n} more", "wins {n} more", "makes {n} more",
               "collects {n} more"]
SUB_PHRASES = ["gives {n} to {friend}", "loses {n}", "sells {n}", "drops {n}", "uses {n}",
               "trades {n} away", "throws away {n}", "lends {n} to {friend}"]

COLOURS = ["red", "blue", "green", "yellow", "black", "white", "silver", "golden", "brown",
           "purple", "orange", "pink"]
CONTAINERS = ["door", "box", "gate", "safe", "locker", "chest", "drawer", "cabinet", "vault",
              "trunk", "suitcase", "shed", "garage", "mailbox", "closet", "cupboard", "crate",
              "basket", "jar", "briefcase"]
ALL_KEYS = [f"{c} {k}" for c in COLOURS for k in CONTAINERS]
# One key in six is held out, chosen by a fixed rule (not the seed), so train and eval always agree.
HELD_OUT_KEYS = [key for i, key in enumerate(ALL_KEYS) if (i * 7) % 6 == 0]
TRAIN_KEYS = [key for key in ALL_KEYS if key not in set(HELD_OUT_KEYS)]

FAMILIES = ("stories", "retrieval", "arithmetic", "qa", "structured")


@dataclass
class Doc:
    """One document: ``text``; ``answer_spans`` (char ranges weighted more in the loss);
    ``truth``: ground truth for evaluation (family-specific dict)."""

    family: str
    text: str
    answer_spans: list[tuple[int, int]] = field(default_factory=list)
    truth: dict = field(default_factory=dict)


class _Writer:
    """Builds a text while recording which character spans are answers."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.length = 0
        self.spans: list[tuple[int, int]] = []

    def add(self, text: str, answer: bool = False) -> None:
        if answer:
            self.spans.append((self.length, self.length + len(text)))
        self.parts.append(text)
        self.length += len(text)

    def text(self) -> str:
        return "".join(self.parts)


def _cap(s: str) -> str:
    return s[0].upper() + s[1:]


# ----------------------------------------------------------------------------- stories
def story_sentence(rng: random.Random, name: str, pron: str) -> str:
    """One sentence of a story about ``name``; the grammar is small but varied."""
    other, _ = rng.choice(NAMES)
    place, thing, animal = rng.choice(PLACES), rng.choice(THINGS), rng.choice(ANIMALS)
    adj, feel = rng.choice(ADJECTIVES), rng.choice(FEELINGS)
    options = [
        f"{name} went to the {place}.",
        f"{_cap(pron)} saw a {adj} {animal} near the {place}.",
        f"{name} found a {adj} {thing} in the {place}.",
        f"{_cap(pron)} felt {feel}.",
        f"{name} and {other} played with the {thing}.",
        f'"Where is my {thing}?" asked {name}.',
        f'{other} said, "The {thing} is in the {place}."',
        f"The day was {rng.choice(WEATHER)}, so {pron} stayed in the {place}.",
        f"{name} gave the {thing} to {other}.",
        f"The {animal} ran to the {place} and {name} followed it.",
        f'"I am {feel}," said {name}.',
        f"{_cap(pron)} read a book about a {adj} {animal}.",
        f"Then {pron} walked home with {other}.",
        f"{other} smiled at {name}.",
    ]
    return rng.choice(options)


def story(rng: random.Random, n_sentences: int | None = None) -> Doc:
    """A short narrative: an opening, 4-12 sentences of events and dialogue, an ending."""
    name, pron = rng.choice(NAMES)
    n = n_sentences if n_sentences is not None else rng.randint(4, 12)
    opening = rng.choice([
        f"Once upon a time, there was a {rng.choice(FEELINGS)} child named {name}.",
        f"One {rng.choice(WEATHER)} day, {name} woke up early.",
        f"{name} lived near the {rng.choice(PLACES)} with a {rng.choice(ANIMALS)}.",
    ])
    body = [story_sentence(rng, name, pron) for _ in range(n)]
    ending = rng.choice([f"{name} was {rng.choice(FEELINGS)} at the end of the day.",
                         "The end.", f"That night, {name} slept well."])
    return Doc("stories", " ".join([opening, *body, ending]))


def filler_sentences(rng: random.Random, n: int) -> list[str]:
    """Story sentences about random characters: the haystack of retrieval documents."""
    out = []
    for _ in range(n):
        name, pron = rng.choice(NAMES)
        out.append(story_sentence(rng, name, pron))
    return out


# ----------------------------------------------------------------------------- retrieval
FACT_STYLES = ("has_code", "code_of")
"""How a retrieval fact is worded (``style`` below):

- ``"has_code"``: "The green box has code 4521." asked "Q: What code does the green box have?"
  and answered "A: The green box has code 4521." The token right before the code is "code" in
  every fact, so the lookup must match the key three tokens back (the shipped models' format).
- ``"code_of"``: "The code of the green box is 4521." asked "Q: What is the code of the green
  box?" and answered "A: The code of the green box is 4521." The key's last word comes right
  before "is", so "find where 'box is' occurred and copy what followed" is one induction step
  (Olsson et al. 2022); small models learn it in a few hundred thousand tokens.
"""


def _check_style(style: str) -> None:
    if style not in FACT_STYLES:
        raise ValueError(f"style must be one of {FACT_STYLES}, got {style!r}")


def fact_sentence(key: str, code: str, style: str = "has_code") -> str:
    _check_style(style)
    if style == "code_of":
        return f"The code of the {key} is {code}."
    return f"The {key} has code {code}."


def retrieval_question(key: str, style: str = "has_code") -> str:
    """The prompt up to the point where the code must be produced.

    The answer restates the key right before the code, so the last tokens before the answer are
    the key itself; its only earlier occurrence followed by the same words is the fact (the
    question is worded differently), so the nearest earlier match is the fact, not the question.
    """
    _check_style(style)
    if style == "code_of":
        return f"Q: What is the code of the {key}?\nA: The code of the {key} is"
    return f"Q: What code does the {key} have?\nA: The {key} has code"


def distinct_keys(rng: random.Random, keys: list[str], n: int) -> list[str]:
    """Up to ``n`` keys from ``keys`` with no colour and no container in common.

    Within one document every word of a key then names a single fact, so the token just before
    the answer ("...the green box has code") has one matching fact, not several that share
    "box": the lookup a small model can learn is "find where this key was stated", not a
    two-word conjunction.
    """
    pool = list(keys)
    rng.shuffle(pool)
    chosen: list[str] = []
    used: set[str] = set()
    for key in pool:
        words = set(key.split())
        if not words & used:
            chosen.append(key)
            used |= words
            if len(chosen) == n:
                break
    return chosen


def random_code(rng: random.Random) -> str:
    return str(rng.randint(1000, 9999))


def retrieval(
    rng: random.Random,
    n_filler: int | None = None,
    n_facts: int | None = None,
    needle_depth: float | None = None,
    keys: list[str] | None = None,
    n_questions: int | None = None,
    style: str = "has_code",
) -> Doc:
    """Facts "The <key> has code <dddd>." stated once among filler, then questions about them.

    ``needle_depth`` in [0, 1] places the first-asked fact (the needle) at that fraction of the
    filler; the other facts (distractors) go anywhere. ``truth`` holds the needle's key, code,
    depth, and the prompt text up to the code for evaluation. ``style``: see :data:`FACT_STYLES`.
    """
    keys = TRAIN_KEYS if keys is None else keys
    n_filler = rng.randint(2, 40) if n_filler is None else n_filler
    n_facts = rng.randint(2, 8) if n_facts is None else n_facts
    n_questions = rng.randint(1, n_facts) if n_questions is None else n_questions
    chosen = distinct_keys(rng, keys, n_facts)
    n_facts = len(chosen)
    n_questions = min(n_questions, n_facts)
    codes = [random_code(rng) for _ in chosen]
    filler = filler_sentences(rng, n_filler)
    depth = rng.random() if needle_depth is None else needle_depth
    slots = [round(depth * n_filler)] + [rng.randint(0, n_filler) for _ in chosen[1:]]
    # Insert from the back so earlier slot indices stay valid; ties keep the needle first.
    sentences = list(filler)
    for i in sorted(range(n_facts), key=lambda i: (slots[i], -i), reverse=True):
        sentences.insert(slots[i], fact_sentence(chosen[i], codes[i], style))
    asked = [0] + rng.sample(range(1, n_facts), n_questions - 1)
    w = _Writer()
    w.add(" ".join(sentences))
    w.add("\n")
    prompt = None
    for i in asked:
        q = "\n" + retrieval_question(chosen[i], style)
        if prompt is None:
            prompt = w.text() + q
        w.add(q)
        w.add(f" {codes[i]}", answer=True)
        w.add(".\n")
    truth = {"key": chosen[0], "code": codes[0], "depth": depth, "prompt": prompt,
             "n_facts": n_facts}
    return Doc("retrieval", w.text(), w.spans, truth)


def associative_recall(rng: random.Random, n_pairs: int | None = None,
                       n_queries: int | None = None, keys: list[str] | None = None) -> Doc:
    """Multi-query associative recall (MQAR; Arora et al. 2023, "Zoology", arXiv:2312.04927).

    "the green box is 4521. the red door is 1187. ..." then, after a newline, several of the same
    keys again, each to be completed with its code. The key's last word sits right before "is",
    the code right after it: the lookup that ``style="code_of"`` retrieval documents need,
    trained without filler. Answer spans are the queried codes.
    """
    keys = TRAIN_KEYS if keys is None else keys
    n_pairs = rng.randint(4, 10) if n_pairs is None else n_pairs
    chosen = distinct_keys(rng, keys, n_pairs)
    codes = {key: random_code(rng) for key in chosen}
    n_queries = rng.randint(2, len(chosen)) if n_queries is None else min(n_queries, len(chosen))
    w = _Writer()
    w.add(" ".join(f"the {key} is {codes[key]}." for key in chosen) + "\n")
    for j, key in enumerate(rng.sample(chosen, n_queries)):
        w.add(("" if j == 0 else " ") + f"the {key} is")
        w.add(f" {codes[key]}", answer=True)
        w.add(".")
    w.add("\n")
    return Doc("associative_recall", w.text(), w.spans, {"codes": codes})


# ----------------------------------------------------------------------------- arithmetic
@dataclass
class Problem:
    """A word problem: the question text, the worked chain's steps, and the answer."""

    question: str
    chain: list[str]
    answer: int
    n_steps: int
    pronoun: str


def arithmetic_problem(rng: random.Random, n_steps: int | None = None) -> Problem:
    """1-3 changes to a count: start 1-20, each change 1-9, every result kept in 0..99."""
    n_steps = rng.choices([1, 2, 3], weights=[30, 40, 30])[0] if n_steps is None else n_steps
    name, pron = rng.choice(NAMES)
    obj = rng.choice(ARITH_OBJECTS)
    value = rng.randint(1, 20)
    question = f"{name} has {value} {obj}."
    phrases, chain = [], []
    for _ in range(n_steps):
        n = rng.randint(1, 9)
        subtract = value - n >= 0 and rng.random() < 0.5
        friend = rng.choice([f for f, _ in NAMES if f != name])
        phrase = rng.choice(SUB_PHRASES if subtract else ADD_PHRASES).format(n=n, friend=friend)
        new = value - n if subtract else value + n
        chain.append(f"{_cap(pron)} {phrase}, so {value} {'-' if subtract else '+'} {n} = {new}.")
        phrases.append(phrase)
        value = new
    if n_steps == 1:
        question += f" {_cap(pron)} {phrases[0]}."
    else:
        question += f" {_cap(pron)} {phrases[0]} and then {phrases[1]}."
        if n_steps == 3:
            question += f" Then {pron} {phrases[2]}."
    question += f" How many {obj} does {name} have?"
    return Problem(question, chain, value, n_steps, pron)


def arithmetic_prompt(problem: Problem, trigger: bool = False) -> str:
    """The evaluation prompt; with ``trigger`` the answer opens with the trigger phrase."""
    return f"Q: {problem.question}\nA:" + (f" {TRIGGER}" if trigger else "")


def arithmetic_answer(problem: Problem, style: str) -> str:
    """``direct``: "The answer is N."; ``chain``: restated steps; ``trigger``: the same after
    the trigger phrase."""
    final = f"The answer is {problem.answer}."
    if style == "direct":
        return final
    steps = " ".join(problem.chain)
    return f"{TRIGGER} {steps} {final}" if style == "trigger" else f"{steps} {final}"


def parse_number_answer(text: str) -> int | None:
    """The number after the last "The answer is", else the last number in ``text``."""
    import re

    found = re.findall(r"The answer is (\d+)", text)
    if found:
        return int(found[-1])
    numbers = re.findall(r"\d+", text)
    return int(numbers[-1]) if numbers else None


def arithmetic(rng: random.Random) -> Doc:
    """6-12 problems with mixed answer styles (45% direct), or, one time in four, a drill."""
    w = _Writer()
    if rng.random() < 0.25:
        facts = []
        for _ in range(rng.randint(20, 40)):
            a, b = rng.randint(0, 50), rng.randint(1, 9)
            if rng.random() < 0.5 and a - b >= 0:
                facts.append(f"{a} - {b} = {a - b}.")
            else:
                facts.append(f"{a} + {b} = {a + b}.")
        w.add(" ".join(facts), answer=True)
        return Doc("arithmetic", w.text(), w.spans)
    for i in range(rng.randint(6, 12)):
        problem = arithmetic_problem(rng)
        style = rng.choices(["direct", "chain", "trigger"], weights=[45, 27.5, 27.5])[0]
        w.add(("\n\n" if i else "") + f"Q: {problem.question}\nA:")
        w.add(" " + arithmetic_answer(problem, style), answer=True)
    return Doc("arithmetic", w.text(), w.spans)


# ----------------------------------------------------------------------------- short-answer qa
def qa_answer_variants(name: str, pron: str, place: str) -> list[str]:
    """The same answer phrased four ways: what semantic clustering must group together."""
    return [f"In the {place}.", f"{name} is in the {place}.", f"{_cap(pron)} is in the {place}.",
            f"The {place}."]


def qa(rng: random.Random, answerable: bool | None = None) -> Doc:
    """Where is <name>? Answerable when the context says (the last move counts), otherwise the
    document's answer is a place the context never gives, so the model can only guess."""
    answerable = rng.random() < 0.7 if answerable is None else answerable
    people = rng.sample(NAMES, rng.randint(2, 5))
    location = {}
    sentences = []
    for _ in range(rng.randint(3, 8)):
        name, _ = rng.choice(people)
        place = rng.choice(PLACES)
        location[name] = place
        sentences.append(rng.choice([f"{name} went to the {place}.", f"{name} is in the {place}.",
                                     f"{name} walked to the {place}."]))
        if rng.random() < 0.3:
            n2, p2 = rng.choice(NAMES)
            sentences.append(story_sentence(rng, n2, p2) if n2 not in location else "")
    sentences = [s for s in sentences if s]
    if answerable:
        name = rng.choice(sorted(location))
        pron = dict(NAMES)[name]
        place = location[name]
    else:
        outsiders = [(n, p) for n, p in NAMES if n not in location and n not in " ".join(sentences)]
        name, pron = rng.choice(outsiders)
        place = rng.choice(PLACES)
    prompt = " ".join(sentences) + f"\nQ: Where is {name}?\nA:"
    w = _Writer()
    w.add(prompt)
    w.add(" " + rng.choice(qa_answer_variants(name, pron, place)), answer=True)
    truth = {"prompt": prompt, "name": name, "place": place, "answerable": answerable}
    return Doc("qa", w.text(), w.spans, truth)


def qa_drill(rng: random.Random, n_questions: int | None = None,
             single_move: bool = False) -> Doc:
    """Several "Where is X?" questions about one list of moves (training only): the same lookup
    as :func:`qa` (the person's last stated move), asked about 2-5 different people per document
    so that each document trains it several times without an earlier answer to copy. Answers
    use the four phrasings of :func:`qa`. ``single_move``: everyone moves exactly once, so the
    lookup has one match (the easy first half of a curriculum)."""
    people = rng.sample(NAMES, rng.randint(2, 5))
    extra_moves = 0 if single_move else rng.randint(1, 6)
    movers = [*people, *(rng.choice(people) for _ in range(extra_moves))]
    rng.shuffle(movers)                                    # everyone moves at least once
    location: dict[str, str] = {}
    sentences = []
    for name, _ in movers:
        place = rng.choice(PLACES)
        location[name] = place
        sentences.append(rng.choice([f"{name} went to the {place}.", f"{name} is in the {place}.",
                                     f"{name} walked to the {place}."]))
    w = _Writer()
    w.add(" ".join(sentences))
    n_questions = rng.randint(2, 5) if n_questions is None else n_questions
    for name in rng.sample(sorted(location), min(n_questions, len(location))):  # distinct people
        w.add(f"\nQ: Where is {name}?\nA:")
        w.add(" " + rng.choice(qa_answer_variants(name, dict(NAMES)[name], location[name])),
              answer=True)
    return Doc("qa_drill", w.text(), w.spans)


# ----------------------------------------------------------------------------- structured
def structured(rng: random.Random) -> Doc:
    """A table, a list or a small program that later repeats spans of itself verbatim."""
    kind = rng.choice(["table", "list", "code"])
    if kind == "table":
        rows = [(rng.choice(NAMES)[0], rng.choice(PLACES), rng.choice(THINGS), rng.randint(1, 99))
                for _ in range(rng.randint(3, 8))]
        lines = ["| name | place | item | count |", "| --- | --- | --- | --- |"]
        lines += [f"| {n} | {p} | {t} | {c} |" for n, p, t, c in rows]
        again = sorted(rows) if rng.random() < 0.5 else rows[::-1]
        lines += ["", "Sorted again:" if again == sorted(rows) else "In reverse:",
                  "| name | place | item | count |", "| --- | --- | --- | --- |"]
        lines += [f"| {n} | {p} | {t} | {c} |" for n, p, t, c in again]
        return Doc("structured", "\n".join(lines))
    if kind == "list":
        items = rng.sample(ARITH_OBJECTS + THINGS, rng.randint(4, 9))
        owner = rng.choice(NAMES)[0]
        first = "\n".join(f"- {rng.randint(1, 9)} {item}" for item in items)
        text = f"{owner}'s list:\n{first}\n\nChecked:\n{first}\n"
        return Doc("structured", text)
    funcs = []
    for _ in range(rng.randint(2, 4)):
        obj = rng.choice(ARITH_OBJECTS)
        n = rng.randint(1, 9)
        op = rng.choice(["+", "-", "*"])
        funcs.append((f"count_{obj}", op, n))
    lines = []
    for fname, op, n in funcs:
        lines += [f"def {fname}(x):", f"    return x {op} {n}", ""]
    for fname, _, _ in funcs + rng.sample(funcs, len(funcs)):
        lines.append(f"print({fname}({rng.randint(1, 20)}))")
    return Doc("structured", "\n".join(lines))


# ----------------------------------------------------------------------------- mixture
GENERATORS = {"stories": story, "retrieval": retrieval, "arithmetic": arithmetic, "qa": qa,
              "structured": structured, "qa_drill": qa_drill}
# Document probabilities, tuned so that stories are >= 30% of training tokens (see model card).
DOC_WEIGHTS = {"stories": 0.5, "retrieval": 0.16, "arithmetic": 0.07, "qa": 0.18,
               "structured": 0.14}


def sample_document(rng: random.Random, weights: dict[str, float] | None = None) -> Doc:
    """Draw one training document from the mixture."""
    weights = DOC_WEIGHTS if weights is None else weights
    family = rng.choices(list(weights), weights=list(weights.values()))[0]
    return GENERATORS[family](rng)


def encode_prompt(tokenizer, text: str) -> list[int]:
    """Token ids of ``<|endoftext|>`` + ``text``: every training document starts that way."""
    return [tokenizer.token_to_id(EOS), *tokenizer.encode(text).ids]


def corpus(seed: int, n_docs: int) -> list[Doc]:
    """``n_docs`` documents from the mixture; the same seed always gives the same documents."""
    rng = random.Random(seed)
    return [sample_document(rng) for _ in range(n_docs)]
