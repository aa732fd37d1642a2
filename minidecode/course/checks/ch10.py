"""Chapter 10 (GPU kernels), each kernel's per-block algorithm written on the CPU: 10.1 Chan's merge
of two parts' softmax moments, 10.2 the one-pass entropy kernel's thread layout and merge tree,
10.3 the radix select that finds min-p / top-p's threshold without a sort, 10.4 a block of the
speculative verify kernel (the accepted prefix, the residual and the draw), 10.5 a short answer:
does the order of the merges matter?"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from hypothesis import strategies as st

from minidecode.course.grading import Case, exercise
from minidecode.kernels import min_p_top_p, softmax_entropy, speculative_verify

INF = float("inf")


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _moments(z: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """(max, mass, mean, var) of y = z - max under the weights exp(y), per row of z (float64);
    an all -inf part is empty: (-inf, 0, 0, 0)."""
    z = z.double()
    m = z.amax(dim=-1) if z.shape[-1] else torch.full(z.shape[:-1], -INF, dtype=z.dtype)
    finite = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    y = z - finite[..., None]
    e = torch.exp(y)
    mass = e.sum(dim=-1)
    safe = torch.where(mass > 0, mass, torch.ones_like(mass))
    y0 = torch.where(e > 0, y, torch.zeros_like(y))
    mean = (e * y0).sum(dim=-1) / safe
    var = (e * (y0 - mean[..., None]) ** 2).sum(dim=-1) / safe
    return m, mass, mean, var


def _logits(rows: int, vocab: int, seed: int, scale: float = 3.0, masked: float = 0.0
            ) -> torch.Tensor:
    """Random float32 logits, a share ``masked`` of them -inf, each row keeping one finite."""
    logits = torch.randn(rows, vocab, generator=_generator(seed)) * scale
    if masked:
        drop = torch.rand(rows, vocab, generator=_generator(seed + 1)) < masked
        drop[:, 0] = False
        logits = logits.masked_fill(drop, -INF)
    return logits


# 10.1 random cases: two parts of random rows, either possibly empty.
@st.composite
def _merge_cases(draw: st.DrawFn) -> Case:
    rows = draw(st.integers(1, 3))
    sizes = draw(st.integers(0, 9)), draw(st.integers(0, 9))
    seed = draw(st.integers(0, 10**6))
    scale = draw(st.sampled_from([0.5, 3.0, 30.0]))
    parts = [_logits(rows, size, seed + 7 * i, scale, masked=0.3) if size else
             torch.empty(rows, 0) for i, size in enumerate(sizes)]
    return Case(_moments(parts[0]), _moments(parts[1]))


@exercise("10.1", reference=softmax_entropy.merge_moments, returns=tuple,
          strategy=_merge_cases(), max_examples=25)
def merge_moments_cases() -> Iterator[Case]:
    """Parts with the same max, far-apart maxima, an empty part on either side, both empty."""
    a = _moments(torch.tensor([[0.0, -1.0, -2.0]]))
    b = _moments(torch.tensor([[0.0, 0.5]]))
    yield Case(a, b, name="both parts weighted by their mass, shifted to the common max")
    yield Case(b, a)
    far = _moments(torch.tensor([[40.0, 38.0]]))
    yield Case(a, far, name="a part far below the max weighs exp(m_a - m) of its mass")
    empty = _moments(torch.full((1, 2), -INF))
    yield Case(empty, b, name="an empty part (mass 0, max -inf) changes nothing")
    yield Case(b, empty, name="an empty part (mass 0, max -inf) changes nothing")
    yield Case(empty, empty, name="two empty parts: mass 0, mean 0, var 0, no nan")
    rows = _logits(4, 12, 3)
    yield Case(_moments(rows[:, :5]), _moments(rows[:, 5:]))


# 10.2 random cases: any vocabulary, power-of-2 threads, some tokens masked.
@st.composite
def _blocked_cases(draw: st.DrawFn) -> Case:
    rows, vocab = draw(st.integers(1, 3)), draw(st.integers(1, 70))
    threads = draw(st.sampled_from([1, 2, 4, 8, 16, 32, 64]))
    seed = draw(st.integers(0, 10**6))
    masked = draw(st.sampled_from([0.0, 0.5, 0.9]))
    return Case(_logits(rows, vocab, seed, draw(st.sampled_from([1.0, 3.0, 20.0])), masked),
                threads)


@exercise("10.2", reference=softmax_entropy.blocked_moments, returns=tuple,
          strategy=_blocked_cases(), max_examples=25, points=2)
def blocked_moments_cases() -> Iterator[Case]:
    """One thread; a warp; more threads than tokens; a truncated row; uniform; not a power of 2."""
    logits = _logits(3, 50, 0)
    yield Case(logits, 1, name="one thread reads the whole row")
    yield Case(logits, 32, name="thread t reads entries t, t + threads, ...; the last ones pad")
    yield Case(logits, 64, name="more threads than tokens: the idle threads' parts are empty")
    truncated = logits.clone()
    truncated[0, 5:] = -INF
    truncated[1, ::2] = -INF
    yield Case(truncated, 8, name="-inf tokens add no mass, and no nan")
    yield Case(torch.zeros(2, 16), 4, name="uniform: H = log 16, V = 0")
    yield Case(_logits(2, 300, 1, scale=20.0), 16)
    yield Case(logits, 3, name="ValueError: threads must be a power of 2")
    yield Case(logits, 0, name="ValueError: threads must be a power of 2")


# 10.3 random cases: vocabularies, scales and both thresholds.
@st.composite
def _radix_cases(draw: st.DrawFn) -> Case:
    rows, vocab = draw(st.integers(1, 3)), draw(st.integers(1, 300))
    seed = draw(st.integers(0, 10**6))
    scale = draw(st.sampled_from([0.5, 3.0, 10.0]))
    masked = draw(st.sampled_from([0.0, 0.3]))
    min_p = draw(st.sampled_from([0.0, 0.01, 0.1, 0.5]))
    top_p = draw(st.sampled_from([0.05, 0.3, 0.7, 0.9, 0.99, 1.0]))
    return Case(_logits(rows, vocab, seed, scale, masked) + draw(st.sampled_from([0.0, -50.0])),
                min_p, top_p)


@exercise("10.3", reference=min_p_top_p.keep_mask, name="radix_keep_mask", returns=torch.Tensor,
          strategy=_radix_cases(), max_examples=30, points=2)
def radix_keep_mask_cases() -> Iterator[Case]:
    """Top-p alone, min-p alone, both; ties at the threshold; negative logits (the key flips all
    bits); keys that share their high bytes; a tiny top-p; bad parameters."""
    logits = _logits(4, 1000, 2)
    yield Case(logits, 0.0, 0.9, name="top-p: keep while the mass strictly above is < top_p * M")
    yield Case(logits, 0.1, 1.0, name="min-p alone: keep e >= min_p, no radix pass")
    yield Case(logits, 0.05, 0.8, name="min-p first, then top-p on the survivors' mass M")
    ties = torch.tensor([[2.0, 1.0, 1.0, 1.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0, -1.0, -1.0]])
    yield Case(ties, 0.0, 0.5, name="ties with the threshold logit are all kept")
    yield Case(logits - 100.0, 0.0, 0.7, name="negative logits: the order key flips every bit")
    close = torch.tensor([[1.0, 1.0 + 2**-20, 1.0 + 2**-21, 1.0 - 2**-22, 0.9, -0.9, -1.0]])
    yield Case(close, 0.0, 0.6, name="keys equal in their high bytes: the low passes decide")
    yield Case(logits, 0.0, 0.001, name="a tiny top-p keeps the top token (and its ties)")
    masked = _logits(2, 200, 4, masked=0.5)
    yield Case(masked, 0.02, 0.95, name="-inf tokens have no mass and are never kept")
    yield Case(logits, 0.0, 0.0, name="ValueError: top_p must be in (0, 1]")
    yield Case(logits, 1.5, 0.9, name="ValueError: min_p must be in [0, 1]")


# 10.4 random cases: batches of drafts from a drafter near the target.
def _drafts(batch: int, gamma: int, vocab: int, seed: int, noise: float = 1.0) -> tuple:
    gen = _generator(seed)
    target = torch.softmax(torch.randn(batch, gamma + 1, vocab, generator=gen) * 2, dim=-1)
    draft_logits = torch.log(target[:, :gamma]) + noise * torch.randn(batch, gamma, vocab,
                                                                      generator=gen)
    draft = torch.softmax(draft_logits, dim=-1)
    tokens = torch.multinomial(draft.reshape(-1, vocab), 1, generator=gen).reshape(batch, gamma)
    return (target, draft, tokens, torch.rand(batch, gamma, generator=gen),
            torch.rand(batch, generator=gen))


@st.composite
def _verify_cases(draw: st.DrawFn) -> Case:
    batch, gamma, vocab = draw(st.integers(1, 4)), draw(st.integers(1, 6)), draw(st.integers(2, 40))
    noise = draw(st.sampled_from([0.1, 1.0, 3.0]))
    return Case(*_drafts(batch, gamma, vocab, draw(st.integers(0, 10**6)), noise))


@exercise("10.4", reference=speculative_verify.reference, name="verify_block", returns=tuple,
          strategy=_verify_cases(), max_examples=30, points=2,
          answers=(speculative_verify.accepted_lengths, speculative_verify.next_token_weights,
                   min_p_top_p.inverse_cdf))
def verify_block_cases() -> Iterator[Case]:
    """A batch; every draft accepted (the bonus token); the first rejected; p = q at the
    rejection; q(x) = 0; p(x) = q(x) = 0; u equal to the ratio; the draw's rounding fallback."""
    yield Case(*_drafts(8, 5, 50, 0), name="a batch of drafts near the target")
    p = torch.tensor([[[0.5, 0.3, 0.2], [0.1, 0.6, 0.3], [0.2, 0.2, 0.6]]])
    q = torch.tensor([[[0.5, 0.3, 0.2], [0.1, 0.6, 0.3]]])
    tokens = torch.tensor([[0, 1]])
    yield Case(p, q, tokens, torch.tensor([[0.3, 0.9]]), torch.tensor([0.7]),
               name="all accepted: the bonus token comes from p_{gamma+1}")
    q_wrong = torch.tensor([[[0.1, 0.1, 0.8], [0.1, 0.6, 0.3]]])
    yield Case(p, q_wrong, torch.tensor([[2, 1]]), torch.tensor([[0.5, 0.1]]),
               torch.tensor([0.6]), name="rejection: the draw is from norm(max(0, p_a - q_a))")
    yield Case(p, q, tokens, torch.tensor([[0.3, 1.0]]), torch.tensor([0.45]),
               name="rejected where p_a = q_a: no residual mass, draw from p_a")
    zero_q = torch.tensor([[[0.0, 0.5, 0.5], [0.1, 0.6, 0.3]]])
    yield Case(p, zero_q, tokens, torch.tensor([[0.99, 0.2]]), torch.tensor([0.1]),
               name="q(x) = 0: the ratio is inf, capped at 1, accepted")
    zero_both = torch.tensor([[[0.0, 0.5, 0.5], [0.1, 0.6, 0.3], [0.2, 0.2, 0.6]]])
    yield Case(zero_both, zero_q, tokens, torch.tensor([[0.0, 0.2]]), torch.tensor([0.1]),
               name="p(x) = q(x) = 0: a nan ratio rejects")
    yield Case(p, torch.tensor([[[0.5, 0.3, 0.2], [0.1, 0.4, 0.5]]]), torch.tensor([[0, 2]]),
               torch.tensor([[0.0, 0.6]]), torch.tensor([0.3]),
               name="accept only when u < ratio, strictly")
    yield Case(p, q_wrong, torch.tensor([[2, 1]]), torch.tensor([[0.5, 0.1]]),
               torch.tensor([1.0]),
               name="u * total reaches the total (rounding): the last index of positive weight")
    bad = list(_drafts(2, 3, 10, 2))
    bad[2] = bad[2].clone()
    bad[2][1, 2] = 10
    yield Case(*bad, name="ValueError: a draft token outside the vocabulary")


# 10.5: the notebook's 6 x 5,000 logits, 1,024 threads: a binary tree of merges against a left-to-
# right chain of the same per-thread moments, both in float64.
def answer_10_5() -> str:
    """The largest |dH| between the two orders: "a" exactly 0, "b" above 0 but below 1e-12,
    "c" between 1e-12 and 1e-6, "d" above 1e-6."""
    logits = torch.randn(6, 5000, generator=_generator(1)) * 3
    logits[0, 100:] = -INF
    threads = 1024
    rows, vocab = logits.shape
    padded = torch.full((rows, -(-vocab // threads) * threads), -INF, dtype=torch.float64)
    padded[:, :vocab] = logits.double()
    per_thread = _moments(padded.view(rows, -1, threads).transpose(1, 2))   # (rows, threads) each
    chain = tuple(t[:, 0] for t in per_thread)
    for thread in range(1, threads):
        chain = softmax_entropy.merge_moments(chain, tuple(t[:, thread] for t in per_thread))
    tree_entropy, _ = softmax_entropy.blocked_moments(logits, threads)
    gap = float((torch.log(chain[1]) - chain[2] - tree_entropy).abs().max())
    if gap == 0:
        return "a"
    return "b" if gap < 1e-12 else "c" if gap < 1e-6 else "d"


@exercise("10.5", reference=answer_10_5, returns=str)
def answer_10_5_cases() -> Iterator[Case]:
    yield Case()
