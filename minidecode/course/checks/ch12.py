"""Chapter 12 (the capstone): 12.1 a whole decoding stack, scored by
:mod:`minidecode.course.capstone` on held-out prompts rather than compared case by case.

Its answers may rightly differ from the reference stack's (another sampler, another policy,
another draft length), so the exercise is open-ended: ``check("12.1", decode)`` runs
:func:`~minidecode.course.capstone.grade_stack`, which scores the student's ``decode`` and plain
greedy side by side on the same prompts and passes a stack that keeps within the KV budget and
closes at least a quarter of the gap between plain greedy's score and 100.
"""

from __future__ import annotations

from collections.abc import Iterator

from minidecode.course.capstone import grade_stack, reference_decode
from minidecode.course.grading import Case, exercise


@exercise("12.1", reference=reference_decode, name="decode", points=5, scorer=grade_stack)
def decode_cases() -> Iterator[Case]:
    """Not run (the scorer decides); one case so that the exercise is declared like the others."""
    yield Case(None, None, 0, name="the capstone's held-out prompts, via capstone.score_stack")
