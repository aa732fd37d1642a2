"""Speculative decoding: a cheap drafter guesses, the target verifies many guesses in one call.

Leviathan, Kalman & Matias (2023, "Fast Inference from Transformers via Speculative Decoding",
arXiv:2211.17192) and Chen et al. (2023, "Accelerating Large Language Model Decoding with
Speculative Sampling", arXiv:2302.01318). One round, with the committed text x_{1..n}:

    1. draft:  x~_1 ~ q(. | x_{1..n}), ..., x~_g ~ q(. | x_{1..n}, x~_{1..g-1})    (g = gamma)
    2. verify: ONE target call on x_n, x~_1..x~_g gives p_1 .. p_{g+1}, where
               p_i = p(. | x_{1..n}, x~_{1..i-1})
    3. accept x~_i while u_i < min(1, p_i(x~_i) / q_i(x~_i)),  u_i ~ U[0, 1)
    4. at the first rejection i, emit y ~ norm(max(0, p_i - q_i))          (the residual)
       if all g were accepted, emit a bonus y ~ p_{g+1}
    5. roll both caches back to the accepted text (``cache.crop``)

Every round emits between 1 and g + 1 tokens, and the emitted text has exactly the target's
distribution (Leviathan et al., Appendix A.1): P(emit x) = min(q(x), p(x)) + (1 - beta) *
max(0, p(x) - q(x)) / (1 - beta) = p(x), with beta = sum_x min(p(x), q(x)). p and q must be the
distributions the tokens are really drawn from: after temperature, top-k and every other processor.

Greedy decoding is the special case p = onehot(argmax), q = onehot(draft argmax): accept the longest
prefix on which the draft's argmax equals the target's, then emit the target's own argmax.

Expected cost (Leviathan et al., Section 3), with alpha the probability that a draft token is
accepted and c the cost of one draft call relative to one target call:

    tokens per target call  E = (1 - alpha^(g+1)) / (1 - alpha)
    speedup                 S = (1 - alpha^(g+1)) / ((1 - alpha) (g c + 1))

Lossless, measured: ``lossless_p_values`` runs many seeded rounds through ``verify_draft`` and
returns one chi-square p-value (``chi_square_p_value``) per seed, uniform on [0, 1] when the rule
is right; ``chi_square_power`` says how large a deviation a given number of draws can see.

What a drafter is (``Drafter``): anything that proposes up to ``gamma`` tokens, with the
distributions it drew them from, and forgets rejected ones. ``ModelDrafter`` (a small model with
its own cache) lives here; ``minidecode.prompt_lookup.PromptLookupDrafter`` needs no model.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

from minidecode.generate import decode_steps, prefill, process_scores
from minidecode.interfaces import LogitsProcessor, is_stateful
from minidecode.kernels import dispatch

__all__ = [
    "Drafter",
    "ModelDrafter",
    "Round",
    "SpeculativeOutput",
    "SpeculativeStats",
    "accepted_prefix_length",
    "chi_square_p_value",
    "chi_square_power",
    "expected_tokens_per_call",
    "greedy_verify",
    "lossless_p_values",
    "processed_probs",
    "residual_probs",
    "speculative_generate",
    "theoretical_speedup",
    "verify_draft",
    "verify_position",
]


# ------------------------------------------------------------------------- theory
def expected_tokens_per_call(alpha: float, gamma: int) -> float:
    """E = (1 - alpha^(gamma+1)) / (1 - alpha): tokens emitted per target call (Leviathan et al.,
    eq. 1); ``gamma + 1`` when alpha = 1."""
    _check_gamma(gamma)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if alpha == 1.0:
        return float(gamma + 1)
    return (1.0 - alpha ** (gamma + 1)) / (1.0 - alpha)


def theoretical_speedup(alpha: float, gamma: int, cost_ratio: float,
                        verify_cost: float = 1.0) -> float:
    """S = (1 - alpha^(gamma+1)) / ((1 - alpha)(gamma c + v)).

    c = ``cost_ratio`` >= 0: the wall-time cost of one draft call over one target call;
    v = ``verify_cost`` >= 1 (default 1): the cost of the target's verify call on gamma + 1
    tokens over its call on one token, T_target(gamma + 1) / T_target(1). Leviathan et al.
    (2023, Theorem 3.8) assume v = 1, true where a call's time is all weight loading (a large
    model on a GPU); on a CPU a 6-token call costs measurably more than a 1-token one, and the
    theory that counts it (``verify_cost`` measured) is the one a measurement should meet.
    """
    if cost_ratio < 0:
        raise ValueError(f"cost_ratio must be >= 0, got {cost_ratio}")
    if not verify_cost >= 1.0:
        raise ValueError(f"verify_cost must be >= 1 (T(gamma + 1) / T(1)), got {verify_cost}")
    return expected_tokens_per_call(alpha, gamma) / (gamma * cost_ratio + verify_cost)


# ------------------------------------------------------------------------- one position
def residual_probs(p: Tensor, q: Tensor) -> Tensor:
    """norm(max(0, p - q)) over the last dim: where the target wants more mass than the draft gave.

    p, q: (..., vocab) probabilities. A rejection can only happen where p(x) < q(x), and then the
    residual's mass sum(max(0, p - q)) is > 0; rows where it is 0 (p == q) return p itself.
    """
    residual = (p - q).clamp(min=0)
    mass = residual.sum(dim=-1, keepdim=True)
    return torch.where(mass > 0, residual / mass.clamp(min=torch.finfo(p.dtype).tiny), p)


def verify_position(p: Tensor, q: Tensor, draft_token: int, uniform: float) -> Tensor:
    """The distribution of the token emitted at one drafted position (the acceptance rule).

    Accept ``draft_token`` x when uniform < min(1, p(x) / q(x)); then the position emits x, so the
    answer is onehot(x). Otherwise it emits a token drawn from ``residual_probs(p, q)``.

    p, q: (vocab,) target and draft probabilities; draft_token: an id drawn from q; uniform: a
    number in [0, 1). Returns (vocab,) probabilities, dtype of p.
    """
    accept_prob = min(1.0, float(p[draft_token]) / float(q[draft_token]))
    if uniform < accept_prob:
        return torch.nn.functional.one_hot(torch.tensor(draft_token), p.shape[-1]).to(p.dtype)
    return residual_probs(p, q)


def accepted_prefix_length(draft_tokens: Sequence[int] | Tensor,
                           target_tokens: Sequence[int] | Tensor) -> int:
    """Greedy verification: how many leading draft tokens equal the target's argmax tokens.

    draft_tokens: (gamma,); target_tokens: (gamma,) or (gamma + 1,), the target's choice at each
    drafted position (a last extra entry, the bonus position, is ignored). Returns an int in
    [0, gamma].
    """
    accepted_len = 0
    for drafted, wanted in zip(list(draft_tokens), list(target_tokens)):
        if int(drafted) != int(wanted):
            break
        accepted_len += 1
    return accepted_len


def greedy_verify(logits: Tensor, draft_tokens: Sequence[int] | Tensor) -> list[int]:
    """The tokens one greedy round emits: the accepted draft tokens, then the target's own token.

    logits: (n + gamma, vocab), the target's logits over the committed text x_1..x_n followed by
    the draft; row t scores token t + 1, so draft token i (0-based, at position n + i) is checked
    against the argmax of row n + i - 1, and the last row, n + gamma - 1, is the bonus position.
    draft_tokens: (gamma,) with gamma >= 1 (n >= 1 too: the rows start at x_1).
    Returns the first ``accepted_prefix_length`` draft tokens followed by the target's argmax at
    the first disagreement (the correction) or, when all gamma agree, at the bonus position:
    1 to gamma + 1 ints.
    """
    gamma = len(draft_tokens)
    if gamma < 1 or logits.dim() != 2 or logits.shape[0] < gamma + 1:
        raise ValueError(f"logits must be (n + gamma, vocab) with n >= 1 and draft_tokens "
                         f"(gamma,) with gamma >= 1, got logits {tuple(logits.shape)} and "
                         f"{gamma} draft tokens")
    choices = logits[-(gamma + 1):].argmax(dim=-1)          # choices[i] is the target's token i
    accepted_len = accepted_prefix_length(draft_tokens, choices)
    return [int(token) for token in list(draft_tokens)[:accepted_len]] + [
        int(choices[accepted_len])]


# ------------------------------------------------------------------------- a whole draft, batched
def verify_draft(target_probs: Tensor, draft_probs: Tensor, draft_tokens: Tensor,
                 generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Speculative sampling's verification of ``batch`` independent drafts at once.

    target_probs: (batch, gamma + 1, vocab), p_1 .. p_{gamma+1};
    draft_probs: (batch, gamma, vocab), q_1 .. q_gamma, the distributions the drafts came from;
    draft_tokens: (batch, gamma) long.
    Returns accepted_len (batch,) in [0, gamma] and next_token (batch,): the residual sample at the
    first rejection, or the bonus sample from p_{gamma+1} when all gamma were accepted.
    float32 CUDA tensors with CuPy installed go through chapter 10's one-launch kernel
    (:mod:`minidecode.kernels.speculative_verify`): the same accepted_len for the same generator
    state, the next token from the same distribution by another draw.
    """
    batch, gamma = draft_tokens.shape
    on_gpu = dispatch.verify_draft(target_probs, draft_probs, draft_tokens, generator)
    if on_gpu is not None:  # chapter 10's one launch, on CUDA only
        return on_gpu
    index = draft_tokens.unsqueeze(-1)
    p_drafted = target_probs[:, :gamma].gather(-1, index).squeeze(-1)          # (batch, gamma)
    q_drafted = draft_probs.gather(-1, index).squeeze(-1)
    accept_prob = (p_drafted / q_drafted).clamp(max=1.0)
    uniforms = torch.rand(batch, gamma, generator=generator, device=draft_tokens.device)
    accepted = uniforms < accept_prob
    accepted_len = accepted.long().cumprod(dim=-1).sum(dim=-1)                  # (batch,)

    rows = torch.arange(batch, device=draft_tokens.device)
    at = accepted_len.clamp(max=max(gamma - 1, 0))
    if gamma > 0:
        rejected_at = residual_probs(target_probs[rows, at], draft_probs[rows, at])
        next_probs = torch.where((accepted_len < gamma)[:, None], rejected_at,
                                 target_probs[:, gamma])
    else:
        next_probs = target_probs[:, 0]
    next_token = torch.multinomial(next_probs, 1, generator=generator).squeeze(-1)
    return accepted_len, next_token


# ------------------------------------------------------------------------- losslessness, measured
def chi_square_p_value(samples: Tensor, probs: Tensor, min_expected: float = 5.0) -> float:
    """Pearson's chi-square goodness of fit of ``samples`` (token ids, any shape) to ``probs``
    (vocab,): the p-value, P(a sample of probs fits at least this badly).

    Tokens expecting fewer than ``min_expected`` counts are pooled into one bin (and that bin into
    the smallest kept one if it is itself too small), so the chi-square approximation holds.
    A token of probability 0 that was emitted gives p = 0. Under a correct sampler the p-value is
    uniform on [0, 1]: one run giving 0.04 happens 4% of the time, which is why
    ``lossless_p_values`` looks at many.
    """
    from scipy.stats import chisquare

    if probs.dim() != 1 or samples.numel() == 0:
        raise ValueError(f"probs must be (vocab,) and samples non-empty, got {tuple(probs.shape)}"
                         f" and {samples.numel()} samples")
    counts = torch.bincount(samples.reshape(-1), minlength=probs.shape[0]).double()
    expected = probs.double() * samples.numel()
    if bool((counts[expected == 0] > 0).any()):
        return 0.0
    big = expected >= min_expected
    observed = torch.cat([counts[big], counts[~big].sum()[None]])
    wanted = torch.cat([expected[big], expected[~big].sum()[None]])
    if wanted[-1] < min_expected:             # pool the rare bin into the smallest kept bin
        observed, wanted = observed[:-1], wanted[:-1]
        observed[-1] += counts[~big].sum()
        wanted[-1] += expected[~big].sum()
    if observed.numel() < 2:
        raise ValueError("probs puts (nearly) all its mass on one token: nothing to test")
    wanted = wanted * observed.sum() / wanted.sum()
    return float(chisquare(observed.numpy(), wanted.numpy()).pvalue)


def chi_square_power(probs: Tensor, alternative: Tensor, n: int, level: float = 0.05,
                     min_expected: float = 5.0) -> float:
    """The chance that ``chi_square_p_value`` of n draws from ``alternative`` falls below
    ``level`` when the claim is ``probs``: the test's power against that deviation.

    Large-sample theory (Cochran 1952): the statistic then follows a noncentral chi-square with
    the bins' count - 1 degrees of freedom and noncentrality
    lambda = n * sum_bins (a_b - p_b)^2 / p_b, bins pooled as ``chi_square_p_value`` pools them.
    """
    from scipy.stats import chi2, ncx2

    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an int >= 1, got {n!r}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if probs.shape != alternative.shape or probs.dim() != 1:
        raise ValueError(f"probs and alternative must both be (vocab,), got "
                         f"{tuple(probs.shape)} and {tuple(alternative.shape)}")
    p, a = probs.double(), alternative.double()
    big = p * n >= min_expected
    p_bins = torch.cat([p[big], p[~big].sum()[None]])
    a_bins = torch.cat([a[big], a[~big].sum()[None]])
    keep = p_bins > 0
    lam = float(n * ((a_bins[keep] - p_bins[keep]) ** 2 / p_bins[keep]).sum())
    dof = int(keep.sum()) - 1
    return float(ncx2.sf(chi2.isf(level, dof), dof, lam))


def lossless_p_values(target_probs: Tensor, draft_probs: Tensor, runs: int = 20_000,
                      seeds: Sequence[int] = range(200), verify: Any = None) -> list[float]:
    """One chi-square p-value per seed for the first token a gamma = 1 round emits.

    target_probs p_1, draft_probs q_1: (vocab,). For each seed: ``runs`` drafts x ~ q_1, ONE call
    of ``verify`` (default ``verify_draft``, the real rule) on all of them, the emitted token
    (x if accepted, else the residual draw), and ``chi_square_p_value`` against p_1. A lossless
    rule gives p-values uniform on [0, 1] (test it with ``scipy.stats.kstest(values, "uniform")``);
    a biased one piles them up near 0.

    Only the tokens p_1 can emit need a column: drafts of tokens with p_1 = 0 are always rejected
    (min(1, 0 / q) = 0) and the residual max(0, p - q) is 0 there, so they are merged into one
    column, which changes no outcome. With a truncated p_1 (top-k, top-p) the simulation is cheap.
    """
    verify = verify_draft if verify is None else verify
    if not isinstance(runs, int) or runs < 100:
        raise ValueError(f"runs must be an int >= 100, got {runs!r}")
    if target_probs.dim() != 1 or target_probs.shape != draft_probs.shape:
        raise ValueError(f"target_probs and draft_probs must both be (vocab,), got "
                         f"{tuple(target_probs.shape)} and {tuple(draft_probs.shape)}")
    keep = target_probs > 0
    p = torch.cat([target_probs[keep], target_probs.new_zeros(1)]).float()
    q = torch.cat([draft_probs[keep], draft_probs[~keep].sum()[None]]).float()
    values = []
    for seed in seeds:
        generator = torch.Generator().manual_seed(int(seed))
        drafted = torch.multinomial(q, runs, replacement=True, generator=generator)[:, None]
        accepted_len, next_token = verify(p.expand(runs, 2, -1), q.expand(runs, 1, -1), drafted,
                                          generator)
        emitted = torch.where(accepted_len == 1, drafted[:, 0], next_token)
        values.append(chi_square_p_value(emitted, p))
    return values


def processed_probs(tokens: Tensor, logits: Tensor, processors: Sequence[LogitsProcessor],
                    temperature: float = 1.0) -> Tensor:
    """softmax(processors(logits / temperature)) for each row, row i seeing ``tokens[:, :t_i]``.

    tokens: (1, n + k) the committed text and k drafted tokens; logits: (k + 1, vocab), the scores
    after tokens[:, :n], ..., tokens[:, :n + k]. Returns (k + 1, vocab) float probabilities, the
    very distributions ``minidecode.generate.generate`` samples from.
    """
    return torch.softmax(_processed_scores(tokens, logits, processors, temperature), dim=-1)


def _processed_scores(tokens: Tensor, logits: Tensor, processors: Sequence[LogitsProcessor],
                      temperature: float = 1.0) -> Tensor:
    """``process_scores`` for each row in order, row i seeing ``tokens[:, :t_i]``."""
    rows = logits.shape[0]
    start = tokens.shape[1] - rows + 1
    return torch.cat([process_scores(tokens[:, : start + i], logits[i : i + 1], processors,
                                     temperature) for i in range(rows)], dim=0)


def _stateful(processors: Sequence[LogitsProcessor]) -> list[Any]:
    """The processors that declare state; one that keeps state without saying how to roll it
    back cannot be used here (it would count rejected draft tokens as seen)."""
    out = []
    for processor in processors:
        if is_stateful(processor):
            if not all(callable(getattr(processor, name, None)) for name in ("state", "restore")):
                raise ValueError(f"logits processor {type(processor).__name__} declares state "
                                 "but has no state()/restore(): speculative decoding must roll "
                                 "it back after a rejection")
            out.append(processor)
    return out


# ------------------------------------------------------------------------- drafters
@runtime_checkable
class Drafter(Protocol):
    """Proposes draft tokens. ``propose(tokens (1, n), gamma, ...)`` returns (draft_tokens (k,)
    long, draft_probs (k, vocab) or None when the draft is deterministic) with 0 <= k <= gamma;
    ``rollback(length)`` forgets everything after the first ``length`` tokens of the text."""

    def propose(self, tokens: Tensor, gamma: int, *, do_sample: bool,
                processors: Sequence[LogitsProcessor], temperature: float,
                generator: torch.Generator | None) -> tuple[Tensor, Tensor | None]: ...

    def rollback(self, length: int) -> None: ...


class ModelDrafter:
    """A small language model with its own cache as the drafter (Leviathan et al.'s M_q).

    Each ``propose`` makes ``gamma`` draft calls, one token each (the first also feeds whatever
    text the cache has not seen yet). ``calls`` and ``seconds`` count them for the statistics.
    tokenizer, target_tokenizer: optional ``tokenizers.Tokenizer`` objects; when both are given
    they must have the same vocabulary, or the draft's token ids would mean other words.
    """

    def __init__(self, model: Any, *, tokenizer: Any = None, target_tokenizer: Any = None):
        _check_has_cache(model, "draft")
        if tokenizer is not None and target_tokenizer is not None:
            if tokenizer.get_vocab() != target_tokenizer.get_vocab():
                raise ValueError("draft and target tokenizers differ (their vocabularies map "
                                 "tokens to different ids): speculative decoding needs one "
                                 "shared tokenizer")
        self.model = model
        self.vocab_size = int(model.vocab_size)
        self.cache = model.new_cache()
        self.calls = 0
        self.seconds = 0.0

    def propose(self, tokens: Tensor, gamma: int, *, do_sample: bool = False,
                processors: Sequence[LogitsProcessor] = (), temperature: float = 1.0,
                generator: torch.Generator | None = None) -> tuple[Tensor, Tensor | None]:
        drafted: list[int] = []
        probs: list[Tensor] = []
        if gamma > 0:
            start = time.perf_counter()
            cache, next_logits = prefill(self.model, tokens, self.cache)
            steps = decode_steps(self.model, cache, next_logits, input_ids=tokens,
                                 processors=processors, temperature=temperature,
                                 do_sample=do_sample, generator=generator)
            for step in steps:
                drafted.append(int(step.token[0]))
                probs.append(step.probs[0])
                if len(drafted) == gamma:
                    break
            self.seconds += time.perf_counter() - start
            self.calls += gamma
        draft_tokens = torch.tensor(drafted, dtype=torch.long, device=tokens.device)
        return draft_tokens, (torch.stack(probs) if do_sample and probs else None)

    def rollback(self, length: int) -> None:
        self.cache.crop(min(length, self.cache.seen_tokens))


# ------------------------------------------------------------------------- the loop
@dataclass
class Round:
    """One draft-and-verify round: what was drafted, how much was kept, what the target added."""

    drafted: list[int]
    accepted_len: int
    next_token: int

    @property
    def bonus(self) -> bool:
        """True when every drafted token was accepted (the target's token is a free bonus)."""
        return self.accepted_len == len(self.drafted)


@dataclass
class SpeculativeStats:
    """Counts of one run; ``alpha`` and ``tokens_per_target_call`` are what the theory predicts."""

    new_tokens: int = 0
    target_calls: int = 0
    draft_calls: int = 0
    drafted: int = 0
    accepted: int = 0
    rejected: int = 0
    wall_time_s: float = 0.0
    target_time_s: float = 0.0
    draft_time_s: float = 0.0
    gammas: list[int] = field(default_factory=list)

    @property
    def alpha(self) -> float:
        """Acceptance rate, the alpha of the theory: the chance that a draft token is accepted
        once every token before it was. Estimated as accepted / (accepted + rejected): a round
        tests its tokens in order and stops at the first rejection, so the tokens drafted after
        a rejection were never tested and do not count (accepted / drafted would underrate alpha
        at large gamma)."""
        tested = self.accepted + self.rejected
        return self.accepted / tested if tested else 0.0

    @property
    def draft_acceptance(self) -> float:
        """accepted / drafted: the share of draft calls' work that was kept."""
        return self.accepted / self.drafted if self.drafted else 0.0

    @property
    def mean_gamma(self) -> float:
        return sum(self.gammas) / len(self.gammas) if self.gammas else 0.0

    @property
    def tokens_per_target_call(self) -> float:
        return self.new_tokens / self.target_calls if self.target_calls else 0.0

    @property
    def tokens_per_second(self) -> float:
        return self.new_tokens / self.wall_time_s if self.wall_time_s else 0.0

    @property
    def cost_ratio(self) -> float:
        """c measured in this run: seconds per draft call / seconds per target call. (A target
        call here verifies gamma + 1 tokens, so this is a slight underestimate of c.)"""
        if not self.draft_calls or not self.target_calls or not self.target_time_s:
            return 0.0
        return (self.draft_time_s / self.draft_calls) / (self.target_time_s / self.target_calls)

    def expected_tokens_per_call(self) -> float:
        """E at this run's alpha and (rounded) mean gamma."""
        gamma = max(1, round(self.mean_gamma))
        return expected_tokens_per_call(min(self.alpha, 1.0), gamma)

    def theoretical_speedup(self, cost_ratio: float | None = None) -> float:
        """S at this run's alpha, mean gamma and c (default: c measured in this run)."""
        gamma = max(1, round(self.mean_gamma))
        c = self.cost_ratio if cost_ratio is None else cost_ratio
        return theoretical_speedup(min(self.alpha, 1.0), gamma, c)

    def summary(self) -> str:
        return (f"{self.new_tokens} tokens in {self.target_calls} target calls "
                f"({self.tokens_per_target_call:.2f} per call, theory "
                f"{self.expected_tokens_per_call():.2f}), alpha {self.alpha:.2f}, "
                f"mean gamma {self.mean_gamma:.1f}, {self.draft_calls} draft calls")


@dataclass
class SpeculativeOutput:
    """tokens: (1, prompt + new) long; stats; rounds: one ``Round`` per target call."""

    tokens: Tensor
    stats: SpeculativeStats
    rounds: list[Round]


@torch.no_grad()
def speculative_generate(target: Any, draft: Any, input_ids: Tensor, max_new_tokens: int, *,
                         gamma: int = 4, do_sample: bool = False, temperature: float = 1.0,
                         logits_processors: Sequence[LogitsProcessor] = (),
                         generator: torch.Generator | None = None,
                         eos_token_id: int | None = None, adaptive_gamma: bool = False,
                         max_gamma: int = 16, cache: Any = None, verify: Any = None,
                         accept_prefix: Any = None) -> SpeculativeOutput:
    """Continue ``input_ids`` (1, prompt) by up to ``max_new_tokens`` tokens, speculatively.

    target: a ``LanguageModel`` (minidecode ``Transformer`` or ``hf_adapter.HFModel``) whose cache
        supports ``crop``. draft: a ``Drafter`` (e.g. ``PromptLookupDrafter``) or a draft model
        with the same vocabulary, wrapped in a ``ModelDrafter``.
    gamma: draft tokens per round, >= 1. adaptive_gamma: grow gamma by one (up to ``max_gamma``)
        after a round that accepted every draft token, shrink it by one (down to 1) after a
        rejection.
    do_sample, temperature, logits_processors, generator, eos_token_id: as in
        ``minidecode.generate.generate``; greedy gives exactly ``generate``'s tokens, sampling
        gives exactly its distribution. The processors are applied to both models' logits.
    cache: the target's cache, as in ``generate`` (it may already hold a prefix of input_ids);
        at the end it holds every token but the last one emitted. Default: ``target.new_cache()``.
    verify, accept_prefix: your own rules, to try them inside the real loop (chapter 07's
        exercises). ``verify(p, q, draft_token, uniform)`` as :func:`verify_position` decides each
        position when sampling (one uniform per drafted position, then one draw from what it
        returns at the first rejection, or from the bonus position); ``accept_prefix(draft_tokens,
        target_tokens)`` as :func:`accepted_prefix_length` decides greedy rounds. Default: the
        batched :func:`verify_draft` and :func:`accepted_prefix_length`; with
        ``verify=verify_position`` the tokens are the same for the same generator.
    """
    if not isinstance(input_ids, Tensor) or input_ids.dim() != 2 or input_ids.shape[0] != 1:
        raise ValueError("input_ids must be a 2-d tensor of shape (1, prompt): speculative "
                         "decoding here runs one sequence at a time, got "
                         f"{getattr(input_ids, 'shape', type(input_ids).__name__)}")
    if input_ids.shape[1] == 0:
        raise ValueError("input_ids is empty: the prompt needs at least one token")
    if not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be an int >= 0, got {max_new_tokens!r}")
    _check_gamma(gamma)
    if adaptive_gamma:
        _check_gamma(max_gamma, "max_gamma")
    if do_sample and not temperature > 0:
        raise ValueError(f"temperature must be > 0 when sampling, got {temperature}")
    _check_has_cache(target, "target")
    if not isinstance(draft, Drafter):
        draft = ModelDrafter(draft)
    draft_vocab = getattr(draft, "vocab_size", None)
    if draft_vocab is not None and int(draft_vocab) != int(target.vocab_size):
        raise ValueError(f"draft and target have different vocabularies (draft vocab_size "
                         f"{draft_vocab}, target vocab_size {target.vocab_size}): they must share "
                         "one tokenizer")

    stateful = _stateful(logits_processors)
    draft.rollback(0)                 # a drafter reused from an earlier text forgets it
    stats = SpeculativeStats()
    rounds: list[Round] = []
    target_cache = target.new_cache() if cache is None else cache
    if target_cache.seen_tokens >= input_ids.shape[1]:
        raise ValueError(f"the cache already holds {target_cache.seen_tokens} tokens but input_ids "
                         f"has only {input_ids.shape[1]}: at least one token must be new")
    max_positions = getattr(getattr(target, "config", None), "max_position_embeddings", None)
    tokens = input_ids
    prompt_len = input_ids.shape[1]
    draft_calls_before = getattr(draft, "calls", 0)
    draft_seconds_before = getattr(draft, "seconds", 0.0)
    start_time = time.perf_counter()
    while tokens.shape[1] - prompt_len < max_new_tokens:
        committed = tokens.shape[1]
        remaining = max_new_tokens - (committed - prompt_len)
        round_gamma = min(gamma, remaining - 1)          # no point drafting past the end
        if max_positions is not None:
            round_gamma = min(round_gamma, max_positions - committed)
        round_gamma = max(round_gamma, 0)
        before = [p.state() for p in stateful]         # the drafts must not count as seen
        draft_tokens, draft_probs = draft.propose(
            tokens, round_gamma, do_sample=do_sample, processors=logits_processors,
            temperature=temperature, generator=generator)
        drafted = int(draft_tokens.shape[0])
        candidate = torch.cat([tokens, draft_tokens[None].to(tokens.device)], dim=1)

        # One target call scores the last committed token and every draft token: p_1..p_{k+1}.
        new_input = candidate[:, target_cache.seen_tokens:]
        start = time.perf_counter()
        logits = target(new_input, target_cache).logits[0, -(drafted + 1):, :]
        stats.target_time_s += time.perf_counter() - start
        stats.target_calls += 1
        for processor, snapshot in zip(stateful, before):
            processor.restore(snapshot)

        # Each row's processed scores, in order; row i sees the state after rows 0..i-1.
        after_row = []
        scores_rows = []
        for i in range(drafted + 1):
            scores_rows.append(process_scores(candidate[:, : committed + i], logits[i : i + 1],
                                              logits_processors, temperature))
            after_row.append([p.state() for p in stateful])
        scores = torch.cat(scores_rows, dim=0)                           # (drafted + 1, vocab)
        if do_sample:
            target_probs = torch.softmax(scores, dim=-1)
            if draft_probs is None:        # a deterministic drafter: q is a point mass
                draft_probs = torch.nn.functional.one_hot(
                    draft_tokens, target_probs.shape[-1]).to(target_probs.dtype)
            if verify is None:
                accepted_len, next_token = verify_draft(target_probs[None], draft_probs[None],
                                                        draft_tokens[None], generator)
            else:
                accepted_len, next_token = _verify_one_by_one(
                    verify, target_probs, draft_probs, draft_tokens, generator)
            accepted_len, next_token = int(accepted_len), int(next_token)
        else:
            choices = scores.argmax(dim=-1)
            accepted_len = (accept_prefix or accepted_prefix_length)(draft_tokens, choices)
            next_token = int(choices[accepted_len])

        for processor, snapshot in zip(stateful, after_row[accepted_len]):
            processor.restore(snapshot)              # as if only the kept tokens were seen
        rounds.append(Round(draft_tokens.tolist(), accepted_len, next_token))
        stats.drafted += drafted
        stats.accepted += accepted_len
        stats.rejected += int(accepted_len < drafted)
        stats.gammas.append(round_gamma)
        emitted = [*draft_tokens[:accepted_len].tolist(), next_token]
        if eos_token_id is not None and eos_token_id in emitted:
            emitted = emitted[: emitted.index(eos_token_id) + 1]
        tokens = torch.cat([tokens, torch.tensor([emitted], device=tokens.device)], dim=1)
        # Roll back: the target's cache keeps the accepted text, all but the newest token.
        target_cache.crop(committed + accepted_len)
        draft.rollback(committed + accepted_len)
        if eos_token_id is not None and emitted[-1] == eos_token_id:
            break
        if adaptive_gamma and drafted == round_gamma and round_gamma > 0:
            gamma = min(gamma + 1, max_gamma) if accepted_len == drafted else max(gamma - 1, 1)

    tokens = tokens[:, : prompt_len + max_new_tokens]
    stats.wall_time_s = time.perf_counter() - start_time
    stats.new_tokens = tokens.shape[1] - prompt_len
    stats.draft_calls = getattr(draft, "calls", 0) - draft_calls_before
    stats.draft_time_s = getattr(draft, "seconds", 0.0) - draft_seconds_before
    return SpeculativeOutput(tokens, stats, rounds)


def _verify_one_by_one(verify: Any, target_probs: Tensor, draft_probs: Tensor,
                       draft_tokens: Tensor, generator: torch.Generator | None) -> tuple[int, int]:
    """:func:`verify_draft` for one draft, position by position with ``verify`` (a function like
    :func:`verify_position`), drawing the same random numbers in the same order. A position is
    accepted when ``verify`` returns the one-hot of its draft token."""
    gamma = draft_tokens.shape[0]
    uniforms = torch.rand(1, gamma, generator=generator, device=draft_tokens.device)[0]
    for i in range(gamma):
        token = int(draft_tokens[i])
        emitted = verify(target_probs[i], draft_probs[i], token, float(uniforms[i]))
        if not bool(emitted[token] == 1):                        # rejected: draw from emitted
            return i, int(torch.multinomial(emitted[None], 1, generator=generator))
    return gamma, int(torch.multinomial(target_probs[gamma][None], 1, generator=generator))


# ------------------------------------------------------------------------- checks
def _check_gamma(gamma: Any, name: str = "gamma") -> None:
    if isinstance(gamma, bool) or not isinstance(gamma, int) or gamma < 1:
        raise ValueError(f"{name} must be an int >= 1 (draft tokens per round), got {gamma!r}")


def _check_has_cache(model: Any, role: str) -> None:
    new_cache = getattr(model, "new_cache", None)
    cache = new_cache() if callable(new_cache) else None
    if cache is None or not callable(getattr(cache, "crop", None)):
        raise ValueError(f"the {role} model has no KV cache with crop(): speculative decoding "
                         f"needs model.new_cache() returning a cache it can roll back "
                         f"(minidecode Transformer, or wrap a transformers model in "
                         f"minidecode.hf_adapter.HFModel); got {type(model).__name__}")
