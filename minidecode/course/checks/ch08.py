"""Chapter 08 (per-head attention patterns): 08.1 StreamingLLM's sink-plus-window mask, 08.2 the
share of attention a pattern misses, 08.3 the heads to make local under a budget, 08.4 one layer
of attention with sink-plus-window heads and its KV cost, 08.5 the KV cache at long context."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from hypothesis import strategies as st

from minidecode.attention_patterns import (
    choose_local_heads,
    missed_mass,
    sink_window_attention,
    sink_window_mask,
)
from minidecode.course.grading import Case, exercise


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# 08.1 random cases: any length, any number of sinks (even more than the length), any window.
@st.composite
def _mask_cases(draw: st.DrawFn) -> Case:
    return Case(draw(st.integers(0, 24)), draw(st.integers(0, 6)), draw(st.integers(1, 30)))


@exercise("08.1", reference=sink_window_mask, returns=torch.Tensor, strategy=_mask_cases(),
          max_examples=25)
def sink_window_mask_cases() -> Iterator[Case]:
    """A window that covers everything; no sinks; window 1 (the diagonal); sinks and a window."""
    yield Case(6, 0, 6)                                     # full causal
    yield Case(8, 0, 3)                                     # sliding window only
    yield Case(8, 2, 1, name="window 1: the diagonal (the query itself), plus two sinks")
    yield Case(10, 3, 4)
    yield Case(5, 8, 2, name="more sinks than tokens: still causal")
    yield Case(0, 2, 2)                                     # an empty sequence


def _attention(heads: int, q_len: int, k_len: int, seed: int) -> torch.Tensor:
    """Causal softmax attention of the last q_len of k_len positions, (heads, q_len, k_len)."""
    scores = torch.randn(heads, q_len, k_len, generator=_generator(seed)) * 2
    causal = torch.arange(k_len)[None, :] <= torch.arange(k_len - q_len, k_len)[:, None]
    return torch.softmax(scores.masked_fill(~causal, float("-inf")), dim=-1)


def _mask(q_len: int, k_len: int, n_sinks: int, window: int) -> torch.Tensor:
    return sink_window_mask(k_len, n_sinks, window)[k_len - q_len:]


# 08.2 random cases: 1-3 heads, the last q of k positions, a sink + window mask.
@st.composite
def _missed_cases(draw: st.DrawFn) -> Case:
    k_len = draw(st.integers(1, 16))
    q_len = draw(st.integers(1, k_len))
    heads, seed = draw(st.integers(1, 3)), draw(st.integers(0, 10**6))
    mask = _mask(q_len, k_len, draw(st.integers(0, 3)), draw(st.integers(1, 8)))
    return Case(_attention(heads, q_len, k_len, seed), mask)


@exercise("08.2", reference=missed_mass, returns=torch.Tensor, strategy=_missed_cases(),
          max_examples=25)
def missed_mass_cases() -> Iterator[Case]:
    """Hand-made weights; queries that lose nothing left out; a pattern that drops nothing; the
    last queries only (q < k)."""
    weights = torch.tensor([[[1.0, 0.0, 0.0, 0.0],
                             [0.5, 0.5, 0.0, 0.0],
                             [0.2, 0.3, 0.5, 0.0],
                             [0.1, 0.2, 0.3, 0.4]]])
    yield Case(weights, _mask(4, 4, 0, 2),                  # queries 2, 3 lose keys: (0.2+0.5)/2
               name="queries that lose nothing are left out of the mean")
    yield Case(weights, _mask(4, 4, 1, 1))
    yield Case(weights, _mask(4, 4, 0, 4), name="nothing dropped: zeros")
    yield Case(_attention(2, 12, 12, 1), _mask(12, 12, 2, 4))
    yield Case(_attention(3, 4, 20, 2), _mask(4, 20, 1, 5))


# 08.3 random cases: distinct scores, budgets whose fraction * heads is never exactly x.5.
@st.composite
def _budget_cases(draw: st.DrawFn) -> Case:
    layers, heads = draw(st.integers(1, 4)), draw(st.integers(1, 8))
    count = draw(st.integers(0, layers * heads))
    scores = torch.randperm(layers * heads, generator=_generator(draw(st.integers(0, 10**6))))
    return Case(scores.reshape(layers, heads).float() / 10, count / (layers * heads))


@exercise("08.3", reference=choose_local_heads, returns=set, strategy=_budget_cases(),
          max_examples=25)
def choose_local_heads_cases() -> Iterator[Case]:
    """Half of four heads; none; all; a budget that rounds (0.3 of 10 heads = 3); layers > 1."""
    scores = torch.tensor([[0.3, 0.1], [0.2, 0.9]])
    yield Case(scores, 0.5)                                 # {(0, 1), (1, 0)}
    yield Case(scores, 0.0)
    yield Case(scores, 1.0)
    yield Case(torch.arange(10.0).flip(0).reshape(2, 5), 0.3,
               name="round(0.3 * 10) = 3 heads, the lowest scores")
    yield Case(torch.randperm(32, generator=_generator(4)).reshape(4, 8).float(), 0.75)


# 08.4: one layer of attention with sink-plus-window heads, and the KV entries each head keeps.
def _qkv(seed: int, heads: int, length: int, head_dim: int) -> tuple[torch.Tensor, ...]:
    generator = _generator(seed)
    return tuple(torch.randn(heads, length, head_dim, generator=generator) * scale
                 for scale in (1.5, 1.5, 1.0))


@st.composite
def _attention_cases(draw: st.DrawFn) -> Case:
    heads, length = draw(st.integers(1, 4)), draw(st.integers(1, 24))
    q, k, v = _qkv(draw(st.integers(0, 10**6)), heads, length, draw(st.sampled_from([2, 4, 8])))
    local = set(draw(st.lists(st.integers(0, heads - 1), max_size=heads)))
    return Case(q, k, v, local, draw(st.integers(0, 4)), draw(st.integers(1, 12)))


@exercise("08.4", reference=sink_window_attention, returns=tuple, strategy=_attention_cases(),
          max_examples=25, points=2)
def sink_window_attention_cases() -> Iterator[Case]:
    """Two of four heads local; every head global; every head local; window 1; more sinks
    than tokens; a window longer than the text."""
    q, k, v = _qkv(0, 4, 20, 8)
    yield Case(q, k, v, {1, 3}, 2, 4,
               name="local heads: k < n_sinks or q - k < window; the others: every k <= q")
    yield Case(q, k, v, set(), 2, 4, name="no local head: plain causal attention, T entries each")
    yield Case(q, k, v, {0, 1, 2, 3}, 4, 6, name="every head local: n_sinks + window entries each")
    yield Case(q, k, v, {0}, 0, 1, name="window 1, no sinks: each query sees only itself")
    q, k, v = _qkv(1, 2, 5, 4)
    yield Case(q, k, v, {0, 1}, 8, 2, name="more sinks than tokens: every token is kept")
    yield Case(q, k, v, {1}, 1, 30, name="a window longer than the text: as global")
    q, k, v = _qkv(2, 3, 16, 4)
    yield Case(q, k, v, [2], 1, 3, name="local_heads as a list")


def _kv_share(local_share: float, n_sinks: int, window: int, length: int) -> float:
    """The share of a full KV cache kept when ``local_share`` of the heads are sink + window."""
    local = min(length, n_sinks + window)
    return local_share * local / length + (1 - local_share)


def answer_08_5() -> str:
    """Half the heads local (sink 4 + window 32) at 32,768 tokens: (a) under 1% of the full
    KV cache, (b) about 50%, (c) about 54%, (d) about 100% (computed)."""
    share = _kv_share(0.5, 4, 32, 32_768)
    return min(zip((0.005, 0.50, 0.54, 1.0), "abcd"), key=lambda pair: abs(pair[0] - share))[1]


@exercise("08.5", reference=answer_08_5, returns=str, max_examples=0)
def answer_08_5_cases() -> Iterator[Case]:
    yield Case(name="the KV cache of half the heads local, at 32,768 tokens")
