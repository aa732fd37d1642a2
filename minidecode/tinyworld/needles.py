"""Needle-in-a-haystack documents (Kamradt 2023): one fact stated at a chosen depth of a long
TinyWorld document, then a question about it. Chapters 8 and 9 read them.
"""

from __future__ import annotations

from dataclasses import dataclass

from minidecode.tinyworld.corpus import encode_prompt, retrieval


@dataclass
class Needle:
    """A needle-in-a-haystack example: the document's ids, the question's ids, the answer."""

    document_ids: list[int]
    question_ids: list[int]
    code: str
    depth: float
    code_positions: list[int]  # where the code's tokens sit in document_ids


def needle_example(tokenizer, n_tokens: int, depth: float, rng, keys: list[str] | None = None,
                   style: str = "has_code", n_facts: int = 1) -> Needle:
    """A TinyWorld retrieval document of about ``n_tokens`` tokens with one fact (the needle) at
    ``depth`` in [0, 1] of the filler, and its question "Q: What code does the <key> have?"
    (``style="code_of"``: "Q: What is the code of the <key>?", the main model's wording).

    ``n_facts`` > 1 adds ``n_facts - 1`` distractor facts (other keys, no word in common with the
    needle's, other codes) at random depths: the reader must keep the right one.

    The number of filler sentences is corrected twice from the measured token count, so lengths
    land within a few percent of ``n_tokens``.
    """
    if not 0.0 <= depth <= 1.0:
        raise ValueError(f"depth must be in [0, 1], got {depth!r}")
    if n_tokens < 64:
        raise ValueError(f"n_tokens must be >= 64, got {n_tokens!r}")
    if not isinstance(n_facts, int) or not 1 <= n_facts <= 8:
        raise ValueError(f"n_facts must be an int in [1, 8], got {n_facts!r}")
    state = rng.getstate()
    n_filler = max(1, n_tokens // 12)
    for _ in range(3):  # two corrections of the filler count land within a few percent
        rng.setstate(state)
        doc = retrieval(rng, n_filler=n_filler, n_facts=n_facts, needle_depth=depth, n_questions=1,
                        keys=keys, style=style)
        prompt = doc.truth["prompt"]
        ids = encode_prompt(tokenizer, prompt)
        n_filler = max(1, round(n_filler * n_tokens / len(ids)))
    split = prompt.rindex("\nQ:")
    document_ids = encode_prompt(tokenizer, prompt[:split])
    question_ids = tokenizer.encode(prompt[split:]).ids
    code_ids = tokenizer.encode(f" {doc.truth['code']}.").ids[:-1]
    start = next(i for i in range(len(document_ids) - len(code_ids) + 1)
                 if document_ids[i:i + len(code_ids)] == code_ids)
    return Needle(document_ids, question_ids, doc.truth["code"], depth,
                  list(range(start, start + len(code_ids))))


def needle_found(tokenizer, generated: list[int], code: str) -> bool:
    """Exact match: the generated text starts with the code."""
    return tokenizer.decode(generated).strip().startswith(code)
