"""A quality judge for TinyWorld stories: the generator knows its grammar, so it can grade text.

A language-model judge or a perplexity says how *likely* a text is; TinyWorld can say whether it
is *right*, because every story is drawn from the small grammar in :mod:`.corpus`. The judge
scores a text on three axes:

**Validity.** The text is cut into sentences by matching, from left to right, the regexes of
:data:`OPENINGS`, :data:`BODY` and :data:`ENDINGS`: the sentence templates of ``story`` and
``story_sentence`` with each slot (``{name}``, ``{place}``, ...) replaced by the alternation of its
vocabulary list. A sentence is *valid* when it matches a template allowed at its position and
does not contradict what came before. The rules, all of which TinyWorld's own stories obey:

1. *Grammar*: the first sentence of a story is an opening, every later one a body sentence or an
   ending; a piece of text that matches no allowed template runs to the next ``.`` (or ``."``)
   and counts as one invalid sentence.
2. *One protagonist*: the opening names the child the story is about; every ``{name}`` slot
   afterwards must be that child (``{other}`` slots may be anyone).
3. *Pronouns agree*: every ``he``/``she`` slot must be the protagonist's pronoun from
   :data:`~.corpus.NAMES` ("Tom ... She felt happy." is a contradiction).
4. *Nothing after the end*: once an ending ("The end.", "That night, Tom slept well.", ...) is
   stated, any further sentence is invalid. A text should stop there (with ``<|endoftext|>``).

A last fragment with no full stop (the token budget ran out) is not scored if it can still grow
into an allowed sentence (checked with the ``regex`` package's partial matching), and is invalid
otherwise. ``validity`` is the share of scored sentences that are valid.

*Locations* are reported, not scored: TinyWorld's sentences are independent events, so the
generator itself writes "Tom went to the park. The day was cold, so he stayed in the kitchen."
Rule 5 would reject its own stories; :attr:`Verdict.location_clashes` counts those places instead
(a presence, "found a ... in the P" or "stayed in the P", at a place other than the last one
stated, with no move, "went to", "ran to ... followed it" or "walked home", in between), and the
generator's own rate is the baseline to compare with.

**Repetition.** :func:`repeated_ngram_share`: the share of a text's word 4-grams that already
occurred earlier in it (seq-rep-4 of Welleck et al. 2019, arXiv:1908.04319), and
:func:`find_loop`: a block of words repeated back to back at least three times.

**Perplexity without the end-of-text token** (:func:`perplexity_without_eos`): the model's
``<|endoftext|>`` after "The end." is nearly certain, so counting it rewards texts that stop
early, and a looping text never earns it. Here only the generated tokens before the first
end-of-text token are scored.

Every aggregate comes with a seeded percentile bootstrap interval over prompts
(:func:`bootstrap_ci`): the samples of one prompt are not independent, so prompts are resampled.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import regex
import torch

from minidecode.tinyworld.corpus import (
    ADJECTIVES,
    ANIMALS,
    FEELINGS,
    NAMES,
    PLACES,
    THINGS,
    WEATHER,
)

__all__ = [
    "BODY",
    "PRONOUN",
    "ENDINGS",
    "OPENINGS",
    "Sentence",
    "Verdict",
    "bootstrap_ci",
    "find_loop",
    "judge_story",
    "perplexity_without_eos",
    "repeated_ngram_share",
    "words",
]

PRONOUN = dict(NAMES)
_NAMES = [name for name, _ in NAMES]
SLOTS: dict[str, list[str]] = {
    "name": _NAMES, "other": _NAMES, "pron": ["he", "she"], "Pron": ["He", "She"],
    "place": PLACES, "thing": THINGS, "animal": ANIMALS, "adj": ADJECTIVES, "feel": FEELINGS,
    "weather": WEATHER,
}
# The templates of corpus.story (openings, endings) and corpus.story_sentence (body), in the
# generator's own words; {Pron} is the capitalised pronoun (_cap(pron) there).
OPENINGS = {
    "once upon a time": "Once upon a time, there was a {feel} child named {name}.",
    "woke up early": "One {weather} day, {name} woke up early.",
    "lived near": "{name} lived near the {place} with a {animal}.",
}
BODY = {
    "went to": "{name} went to the {place}.",
    "saw": "{Pron} saw a {adj} {animal} near the {place}.",
    "found": "{name} found a {adj} {thing} in the {place}.",
    "felt": "{Pron} felt {feel}.",
    "played": "{name} and {other} played with the {thing}.",
    "where is": '"Where is my {thing}?" asked {name}.',
    "said": '{other} said, "The {thing} is in the {place}."',
    "stayed": "The day was {weather}, so {pron} stayed in the {place}.",
    "gave": "{name} gave the {thing} to {other}.",
    "followed": "The {animal} ran to the {place} and {name} followed it.",
    "i am": '"I am {feel}," said {name}.',
    "read": "{Pron} read a book about a {adj} {animal}.",
    "walked home": "Then {pron} walked home with {other}.",
    "smiled": "{other} smiled at {name}.",
}
ENDINGS = {
    "end of the day": "{name} was {feel} at the end of the day.",
    "the end": "The end.",
    "slept well": "That night, {name} slept well.",
}
MOVES = {"went to", "followed", "walked home"}
PRESENCE = {"found", "stayed"}
_SENTENCE_END = re.compile(r'\."?(?=\s|$)')


def _compile(template: str) -> regex.Pattern:
    parts = re.split(r"\{(\w+)\}", template)          # literal, slot, literal, slot, ...
    out = []
    for i, part in enumerate(parts):
        if i % 2:
            choices = sorted(SLOTS[part], key=len, reverse=True)
            out.append(f"(?P<{part}>" + "|".join(map(regex.escape, choices)) + ")")
        else:
            out.append(regex.escape(part))
    return regex.compile("".join(out))


_OPENINGS = {key: _compile(t) for key, t in OPENINGS.items()}
_FOLLOWERS = {key: _compile(t) for key, t in {**BODY, **ENDINGS}.items()}


@dataclass
class Sentence:
    """One sentence: its ``text``, the ``template`` it matched (None: none), and whether it is
    ``valid``; ``reason`` says why not."""

    text: str
    template: str | None
    valid: bool
    reason: str | None = None


@dataclass
class Verdict:
    """The judge's reading of one text (see the module docstring for the rules)."""

    sentences: list[Sentence]
    incomplete: str = ""
    location_clashes: int = 0
    repeated_4grams: float = 0.0
    loop_period: int | None = None
    words: int = 0
    errors: list[str] = field(default_factory=list)
    protagonist: str | None = None

    @property
    def validity(self) -> float:
        """Share of scored sentences that are valid; NaN when no sentence was complete."""
        if not self.sentences:
            return math.nan
        return sum(s.valid for s in self.sentences) / len(self.sentences)

    @property
    def loops(self) -> bool:
        return self.loop_period is not None


def words(text: str) -> list[str]:
    """Words and punctuation marks, the units of the repetition measures."""
    return re.findall(r"\w+|[^\w\s]", text)


def repeated_ngram_share(tokens: Sequence, n: int = 4) -> float:
    """Share of the n-grams of ``tokens`` that occurred earlier in the same sequence (0 if none)."""
    grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
    return 1 - len(set(grams)) / len(grams) if grams else 0.0


def find_loop(tokens: Sequence, min_repeats: int = 3, max_period: int = 40) -> int | None:
    """The shortest period p such that some block of p tokens occurs ``min_repeats`` times back to
    back in ``tokens`` (e.g. one sentence said three times in a row); None if there is none."""
    for period in range(1, max_period + 1):
        run = 0
        for i in range(len(tokens) - period):
            run = run + 1 if tokens[i] == tokens[i + period] else 0
            if run >= (min_repeats - 1) * period:
                return period
    return None


def _match(patterns: dict[str, regex.Pattern], text: str, pos: int):
    for key, pattern in patterns.items():
        found = pattern.match(text, pos)
        if found and (found.end() == len(text) or text[found.end()].isspace()):
            return key, found
    return None, None


def judge_story(text: str, prompt: str = "") -> Verdict:
    """Judge ``text``, the continuation of ``prompt`` (both plain text, no end-of-text token).

    The prompt's sentences set the protagonist and the state but are not scored; pass the whole
    story as ``text`` (and no prompt) to score the opening too.
    """
    full = prompt + (" " if prompt and text and not text[0].isspace() else "") + text
    start = len(full) - len(text)
    state = {"protagonist": None, "ended": False, "where": None, "first": True}
    verdict = Verdict(sentences=[])
    pos = 0
    while True:
        while pos < len(full) and full[pos].isspace():
            pos += 1
        if pos >= len(full):
            break
        key, found = _match(_OPENINGS if state["first"] else _FOLLOWERS, full, pos)
        if found is None:
            end = _SENTENCE_END.search(full, pos)
            if end is None:                                       # the budget ran out mid-sentence
                fragment = full[pos:]
                allowed = _OPENINGS if state["first"] else _FOLLOWERS
                if any(p.fullmatch(fragment, partial=True) for p in allowed.values()):
                    if pos >= start:
                        verdict.incomplete = fragment
                    break
                end_pos = len(full)
            else:
                end_pos = end.end()
            sentence = Sentence(full[pos:end_pos], None, False, "outside the grammar")
        else:
            end_pos = found.end()
            sentence = Sentence(full[pos:end_pos], key, True)
            _check(sentence, found.groupdict(), state, verdict)
        if state["ended"]:
            sentence.valid, sentence.reason = False, "after the ending"
        if sentence.template in ENDINGS:
            state["ended"] = True
        state["first"] = False
        if pos >= start:
            verdict.sentences.append(sentence)
        pos = end_pos
    tokens = words(text)
    verdict.words = len(tokens)
    verdict.repeated_4grams = repeated_ngram_share(tokens, 4)
    verdict.loop_period = find_loop(tokens)
    verdict.errors = [f"{s.reason}: {s.text}" for s in verdict.sentences if not s.valid]
    verdict.protagonist = state["protagonist"]
    return verdict


def _check(sentence: Sentence, slots: dict, state: dict, verdict: Verdict) -> None:
    """Rules 2-3 on a matched sentence, and the location bookkeeping."""
    name = slots.get("name")
    if name is not None:
        if state["protagonist"] is None:
            state["protagonist"] = name
        elif name != state["protagonist"]:
            sentence.valid, sentence.reason = False, f"protagonist is {state['protagonist']}"
    pron = (slots.get("pron") or slots.get("Pron") or "").lower()
    if pron and state["protagonist"] and pron != PRONOUN[state["protagonist"]]:
        sentence.valid = False
        sentence.reason = f"{state['protagonist']} is '{PRONOUN[state['protagonist']]}'"
    if sentence.template in MOVES:
        state["where"] = slots.get("place", "home")
    elif sentence.template in PRESENCE:
        if state["where"] not in (None, slots["place"]):
            verdict.location_clashes += 1
        state["where"] = slots["place"]


def perplexity_without_eos(model: Any, tokens: torch.Tensor, prompt_length: int,
                           eos_token_id: int | None) -> torch.Tensor:
    """(batch,) ``exp(mean NLL)`` of each row's generated tokens *before* its first
    ``eos_token_id``; the end-of-text token itself is not counted. NaN for a row with none."""
    from minidecode.diversity import perplexity

    return perplexity(model, tokens, prompt_length, eos_token_id, count_eos=False)


def bootstrap_ci(values: Sequence[float], groups: Sequence | None = None,
                 statistic: Callable[[list[float]], float] | None = None, *,
                 n_resamples: int = 1000, seed: int = 0, level: float = 0.95
                 ) -> tuple[float, float, float]:
    """``(estimate, low, high)``: ``statistic`` (default: the mean) of ``values`` and its
    percentile bootstrap interval. With ``groups`` (e.g. the prompt of each sample) whole groups
    are resampled, since samples of one prompt are correlated. NaN values are dropped."""
    statistic = statistic or (lambda xs: sum(xs) / len(xs))
    groups = list(range(len(values))) if groups is None else list(groups)
    by_group: dict = {}
    for value, group in zip(values, groups):
        if not (isinstance(value, float) and math.isnan(value)):
            by_group.setdefault(group, []).append(float(value))
    clusters = list(by_group.values())
    if not clusters:
        return math.nan, math.nan, math.nan
    estimate = statistic([v for c in clusters for v in c])
    gen = torch.Generator().manual_seed(seed)
    picks = torch.randint(len(clusters), (n_resamples, len(clusters)), generator=gen).tolist()
    stats = sorted(statistic([v for i in row for v in clusters[i]]) for row in picks)
    tail = (1 - level) / 2
    low = stats[int(math.floor(tail * (n_resamples - 1)))]
    high = stats[int(math.ceil((1 - tail) * (n_resamples - 1)))]
    return estimate, low, high
