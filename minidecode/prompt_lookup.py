"""Prompt-lookup drafting: the text so far is the draft model.

Saxena (2023, "Prompt Lookup Decoding", github.com/apoorvumang/prompt-lookup-decoding); the same
idea as LLMA (Yang et al., 2023, arXiv:2304.04487). Text that quotes itself (tables, lists, code,
summaries of a document) often continues the way an earlier copy of its last few tokens did:

    for n = max_ngram down to min_ngram:
        pattern = the last n tokens
        find the latest earlier occurrence of pattern (not the suffix itself)
        if one exists and tokens follow it: propose up to gamma of those tokens

No model is called, so a draft costs nothing (c ~ 0), but it proposes nothing on text that does not
repeat. Its proposals are deterministic: q is a point mass on the proposed token, so in speculative
sampling a proposed x is accepted with probability p(x) and a rejection samples from p with x
removed (``minidecode.speculative.residual_probs`` of p and onehot(x)).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = ["PromptLookupDrafter", "find_candidate_tokens"]


def find_candidate_tokens(tokens: Sequence[int] | Tensor, max_ngram: int, num_tokens: int
                          ) -> list[int]:
    """Up to ``num_tokens`` tokens that followed the latest earlier copy of the text's last n-gram.

    tokens: (length,) ids; max_ngram >= 1: the longest suffix tried first, then shorter ones down
    to 1; num_tokens >= 1. Returns a list of ints, empty when no suffix of length <= max_ngram
    occurred earlier with a token after it.

    Example: tokens [5, 6, 7, 8, 5, 6], max_ngram 2, num_tokens 3 -> the suffix [5, 6] occurred at
    position 0, followed by [7, 8, 5] -> returns [7, 8, 5].
    """
    if isinstance(max_ngram, bool) or not isinstance(max_ngram, int) or max_ngram < 1:
        raise ValueError(f"max_ngram must be an int >= 1, got {max_ngram!r}")
    if isinstance(num_tokens, bool) or not isinstance(num_tokens, int) or num_tokens < 1:
        raise ValueError(f"num_tokens must be an int >= 1, got {num_tokens!r}")
    ids = [int(t) for t in (tokens.tolist() if isinstance(tokens, Tensor) else tokens)]
    length = len(ids)
    for n in range(min(max_ngram, length - 1), 0, -1):
        pattern = ids[length - n:]
        # Latest start first; a copy must end before the text does, so a token follows it.
        for start in range(length - n - 1, -1, -1):
            if ids[start : start + n] == pattern:
                follow = start + n
                return ids[follow : follow + num_tokens]
    return []


class PromptLookupDrafter:
    """A ``Drafter`` (see ``minidecode.speculative``) that looks the continuation up in the text.

    max_ngram: the longest suffix to look up (>= 1). ``calls`` stays 0: no model runs.
    find: a function like :func:`find_candidate_tokens` (chapter 07's exercise) to use instead,
        so your own lookup runs inside ``speculative_generate``.
    """

    def __init__(self, max_ngram: int = 3, find: Callable[..., Sequence[int]] | None = None):
        if isinstance(max_ngram, bool) or not isinstance(max_ngram, int) or max_ngram < 1:
            raise ValueError(f"max_ngram must be an int >= 1, got {max_ngram!r}")
        if find is not None and not callable(find):
            raise ValueError(f"find must be a function like find_candidate_tokens, got {find!r}")
        self.max_ngram = max_ngram
        self.find = find_candidate_tokens if find is None else find
        self.calls = 0
        self.seconds = 0.0

    def propose(self, tokens: Tensor, gamma: int, **_: Any) -> tuple[Tensor, None]:
        """tokens: (1, n). Returns (k,) long with 0 <= k <= gamma, and None (a point mass)."""
        found = list(self.find(tokens[0], self.max_ngram, gamma)) if gamma > 0 else []
        return torch.tensor(found, dtype=torch.long, device=tokens.device), None

    def rollback(self, length: int) -> None:
        """Nothing to forget: the drafter keeps no state."""
