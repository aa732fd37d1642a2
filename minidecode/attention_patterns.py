"""Per-head attention patterns: which heads need the whole context, and what it costs to give it.

Every attention head of a trained model does one job. Some look only at the last few tokens
(local, "streaming" heads); some park their attention on the first tokens (sinks); a few reach back
anywhere in the context to fetch a fact (retrieval heads). A head that never looks far can be given
a *local* mask, and its KV cache shrinks to the window; a retrieval head cannot. This module gives:

- masks, each a function of (query position, key position), combined per head into the model's
  ``attention_pattern`` hook: :class:`Global`, :class:`Local` (sliding window, Beltagy et al. 2020,
  arXiv:2004.05150), :class:`SinkWindow` (StreamingLLM's "A-shape", Xiao et al. 2024,
  arXiv:2309.17453), :class:`Strided` (Child et al. 2019, arXiv:1904.10509) and
  :class:`VerticalSlash` (MInference, Jiang et al. 2024, arXiv:2407.02490: a few key columns plus a
  few diagonals, estimated from the last queries' attention);
- :func:`feature_selector`, a feature-based choice (a common first attempt), fixed so that it
  reaches the attention (see its docstring for what the first attempt gets wrong);
- measured head profiling in the spirit of DuoAttention (Xiao et al. 2024, arXiv:2410.10819):
  :func:`mass_outside` (attention a head puts outside sink + window) and :func:`loss_increase`
  (how much the loss on retrieval documents rises when that head alone is made local),
  :func:`greedy_profile` (heads made local one at a time, each re-measured given the others: it
  sees heads that back each other up, which one-head-at-a-time ablation misses), then
  :func:`choose_local_heads` under a budget; :func:`needle_accuracy` and
  :func:`pattern_perplexity` measure what a pattern costs in quality;
- cost accounting: :func:`attended_pairs`, :func:`cost_report`.

Shapes: q_positions (batch, heads, q), k_positions (batch, heads, k), masks (batch, heads, q, k),
True = may attend. Every mask here keeps the diagonal (a query always sees itself), so no softmax
row is ever empty.
"""

from __future__ import annotations

import functools
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from minidecode.generate import decode_steps, prefill

__all__ = ["Global", "Local", "SinkWindow", "Strided", "VerticalSlash", "HeadPatterns",
           "PATTERNS", "make_pattern", "sink_window_mask", "estimate_vertical_slash",
           "selector_features", "feature_order", "feature_selector", "missed_mass", "mass_outside",
           "pattern_loss", "loss_increase", "greedy_profile", "choose_local_heads",
           "random_local_heads", "retrieval_document", "needle_documents", "needle_accuracy",
           "pattern_perplexity", "attended_pairs", "kv_entries", "cost_report",
           "sink_window_attention"]


def _check_int(name: str, value: int, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


# ----------------------------------------------------------------------------- masks
class Mask:
    """A pattern for one head: ``allowed(q_pos, k_pos) -> bool``, broadcast over any shape."""

    name = "mask"

    def allowed(self, q_pos: Tensor, k_pos: Tensor) -> Tensor:
        raise NotImplementedError

    def __call__(self, q_pos: Tensor, k_pos: Tensor) -> Tensor:
        """q_pos (..., q), k_pos (..., k) -> (..., q, k) bool, causal (k <= q) included."""
        q, k = q_pos[..., :, None], k_pos[..., None, :]
        return (k <= q) & self.allowed(q, k)


@dataclass(frozen=True)
class Global(Mask):
    """Full causal attention: every earlier token."""

    name = "global"

    def allowed(self, q: Tensor, k: Tensor) -> Tensor:
        return torch.ones_like(q - k, dtype=torch.bool)


@dataclass(frozen=True)
class Local(Mask):
    """Sliding window: the ``window`` most recent tokens, the query itself included (q - k < w)."""

    window: int = 64
    name = "local"

    def __post_init__(self) -> None:
        _check_int("window", self.window, 1)

    def allowed(self, q: Tensor, k: Tensor) -> Tensor:
        return (q - k) < self.window


@dataclass(frozen=True)
class SinkWindow(Mask):
    """StreamingLLM's A-shape: the first ``n_sinks`` positions plus a sliding ``window``."""

    n_sinks: int = 4
    window: int = 64
    name = "sink_window"

    def __post_init__(self) -> None:
        _check_int("n_sinks", self.n_sinks, 0)
        _check_int("window", self.window, 1)

    def allowed(self, q: Tensor, k: Tensor) -> Tensor:
        return (k < self.n_sinks) | ((q - k) < self.window)


@dataclass(frozen=True)
class Strided(Mask):
    """Sparse Transformer's strided pattern: a local ``window`` plus every ``stride``-th token back
    (q - k divisible by the stride): a dilated view of the whole context."""

    stride: int = 16
    window: int = 16
    name = "strided"

    def __post_init__(self) -> None:
        _check_int("stride", self.stride, 1)
        _check_int("window", self.window, 1)

    def allowed(self, q: Tensor, k: Tensor) -> Tensor:
        return ((q - k) < self.window) | ((q - k) % self.stride == 0)


@dataclass(frozen=True)
class VerticalSlash(Mask):
    """MInference's vertical-slash: some key positions every query sees (vertical lines: sinks,
    separators, the needle) plus some query-key offsets (slash lines: the diagonal, a period).

    ``verticals`` are key positions and ``slashes`` offsets q - k; build them from attention with
    :func:`estimate_vertical_slash`. Offset 0 (the query itself) is always included.
    """

    verticals: tuple[int, ...] = ()
    slashes: tuple[int, ...] = (0,)
    name = "vertical_slash"

    def allowed(self, q: Tensor, k: Tensor) -> Tensor:
        vertical = torch.as_tensor(self.verticals, dtype=torch.long, device=k.device)
        slash = torch.as_tensor(tuple({0, *self.slashes}), dtype=torch.long, device=k.device)
        on_vertical = torch.isin(k.expand(torch.broadcast_shapes(q.shape, k.shape)), vertical)
        on_slash = torch.isin(q - k, slash)
        return on_vertical | on_slash


def estimate_vertical_slash(weights: Tensor, n_vertical: int, n_slash: int,
                            last_queries: int = 64) -> VerticalSlash:
    """MInference's online estimate for one head: the ``last_queries`` rows of its attention
    (q, k) vote; the top ``n_vertical`` key columns and the top ``n_slash`` diagonals win.

    weights: (q, k) one head's attention over positions 0..k-1 (queries are the last q positions).
    """
    _check_int("n_vertical", n_vertical, 0)
    _check_int("n_slash", n_slash, 0)
    rows = weights[-last_queries:]                                       # (r, k)
    n_rows, n_keys = rows.shape
    q_pos = torch.arange(n_keys - n_rows, n_keys)[:, None]
    offsets = (q_pos - torch.arange(n_keys)[None, :]).clamp(min=0)       # (r, k) q - k
    column_votes = rows.sum(dim=0)                                       # (k,)
    diagonal_votes = torch.zeros(n_keys).index_add_(0, offsets.flatten(), rows.flatten())
    verticals = column_votes.topk(min(n_vertical, n_keys)).indices.sort().values
    slashes = diagonal_votes.topk(min(n_slash, n_keys)).indices.sort().values
    return VerticalSlash(tuple(verticals.tolist()), tuple(slashes.tolist()))


def sink_window_mask(length: int, n_sinks: int, window: int) -> Tensor:
    """(length, length) bool, row = query, column = key: ``SinkWindow(n_sinks, window)`` over
    positions 0..length-1, i.e. k <= q and (k < n_sinks or q - k < window)."""
    _check_int("length", length, 0)
    positions = torch.arange(length)
    return SinkWindow(n_sinks, window)(positions, positions)


PATTERNS: dict[str, Callable[..., Mask]] = {"global": Global, "local": Local,
                                            "sink_window": SinkWindow, "strided": Strided}


def make_pattern(name: str, **kwargs) -> Mask:
    """A mask by name: one of PATTERNS' keys (vertical-slash is built from attention instead)."""
    if name not in PATTERNS:
        raise ValueError(f"unknown pattern name {name!r}; known: {sorted(PATTERNS)}")
    return PATTERNS[name](**kwargs)


class HeadPatterns:
    """One mask per (layer, query head), as the model's ``attention_pattern`` hook.

    patterns: a list with one entry per layer, each a list of ``num_heads`` masks.
    Use with ``model(ids, attention_pattern=HeadPatterns(...))``.
    """

    def __init__(self, patterns: Sequence[Sequence[Mask]], num_layers: int, num_heads: int):
        if len(patterns) != num_layers:
            raise ValueError(f"patterns has {len(patterns)} layers, the model has {num_layers}")
        for layer, heads in enumerate(patterns):
            if len(heads) != num_heads:
                raise ValueError(f"patterns[{layer}] has {len(heads)} masks, the model has "
                                 f"{num_heads} heads per layer")
        self.patterns = [list(heads) for heads in patterns]

    @classmethod
    def for_model(cls, model, patterns: Sequence[Sequence[Mask]]) -> HeadPatterns:
        return cls(patterns, model.config.num_hidden_layers, model.config.num_attention_heads)

    @classmethod
    def with_local_heads(cls, model, local_heads: set[tuple[int, int]], local: Mask
                         ) -> HeadPatterns:
        """Every head global except ``local_heads`` ((layer, head) pairs), which get ``local``."""
        c = model.config
        return cls([[local if (layer, head) in local_heads else Global()
                     for head in range(c.num_attention_heads)]
                    for layer in range(c.num_hidden_layers)],
                   c.num_hidden_layers, c.num_attention_heads)

    def __call__(self, layer: int, q_positions: Tensor, k_positions: Tensor) -> Tensor:
        masks = [mask(q_positions[:, h], k_positions[:, h])             # (batch, q, k) each
                 for h, mask in enumerate(self.patterns[layer])]
        return torch.stack(masks, dim=1)                                 # (batch, heads, q, k)


# ----------------------------------------------------------------------------- cost
def attended_pairs(mask: Mask, length: int) -> int:
    """Query-key pairs a mask attends to over a sequence of ``length`` tokens (causal included)."""
    positions = torch.arange(length)
    return int(mask(positions, positions).sum())


def kv_entries(mask: Mask, length: int) -> int:
    """KV entries the *last* query needs: what a cache for this head must hold after ``length``."""
    positions = torch.arange(length)
    return int(mask(positions[-1:], positions).sum())


def cost_report(patterns: HeadPatterns, length: int) -> dict:
    """Attended pairs and KV entries per layer and in total, relative to full causal attention."""
    full_pairs = length * (length + 1) // 2
    per_layer = []
    for heads in patterns.patterns:
        pairs = sum(attended_pairs(m, length) for m in heads)
        entries = sum(kv_entries(m, length) for m in heads)
        per_layer.append({"pairs": pairs / (full_pairs * len(heads)),
                          "kv_entries": entries / (length * len(heads))})
    n = len(per_layer)
    return {"per_layer": per_layer,
            "pairs": sum(r["pairs"] for r in per_layer) / n,
            "kv_entries": sum(r["kv_entries"] for r in per_layer) / n}


def sink_window_attention(q: Tensor, k: Tensor, v: Tensor, local_heads: set[int] | Sequence[int],
                          n_sinks: int, window: int) -> tuple[Tensor, Tensor]:
    """One layer's attention with sink-plus-window heads, and the KV cache each head must keep.

    q, k, v: (heads, T, head_dim), the queries, keys and values of positions 0..T-1 (one key and
    value head per query head). Head h attends under ``SinkWindow(n_sinks, window)`` if h is in
    ``local_heads``, else under full causal attention (:class:`Global`):

        out[h] = softmax(q[h] k[h]^T / sqrt(head_dim) + M_h) v[h],
        M_h = 0 where head h's mask keeps the key, -inf elsewhere

    Returns (out (heads, T, head_dim), kv (heads,) long): kv[h] = :func:`kv_entries` of head h's
    mask at length T, the keys and values its cache must hold for the next query (T for a
    global head, at most n_sinks + window for a local one, whatever T is). The KV cache's
    memory is then kv.sum() * 2 * head_dim * bytes per number (keys and values).
    """
    if q.dim() != 3 or k.shape != q.shape or v.shape[:2] != q.shape[:2]:
        raise ValueError(f"q, k, v must be (heads, T, head_dim) with the same heads and T, got "
                         f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    heads, length = q.shape[0], q.shape[1]
    local_heads = set(local_heads)
    if not local_heads <= set(range(heads)):
        raise ValueError(f"local_heads must be head indices in [0, {heads}), got "
                         f"{sorted(local_heads)}")
    local, full = SinkWindow(n_sinks, window), Global()
    patterns = [local if h in local_heads else full for h in range(heads)]
    positions = torch.arange(length, device=q.device)
    masks = torch.stack([pattern(positions, positions) for pattern in patterns])  # (heads, T, T)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=masks)
    kv = torch.tensor([kv_entries(pattern, length) if length else 0 for pattern in patterns],
                      dtype=torch.long)
    return out, kv


# ------------------------------------------------------------- the feature-based selector
def selector_features(input_ids: Tensor, special_ids: Sequence[int] = ()) -> dict[str, float]:
    """The feature-based selector's input features, for one sequence (1, length) or (length,):

        token_diversity = |unique tokens| / length
        special_share   = (# tokens in special_ids) / length
        complexity      = (token_diversity + (1 - special_share)) / 2
    """
    ids = input_ids.reshape(-1)
    if ids.numel() == 0:
        raise ValueError("input_ids is empty: there are no features to compute")
    length = ids.numel()
    special = torch.isin(ids, torch.as_tensor(list(special_ids), dtype=ids.dtype)).sum()
    diversity = ids.unique().numel() / length
    special_share = float(special) / length
    return {"length": float(length), "token_diversity": diversity, "special_share": special_share,
            "complexity": (diversity + (1.0 - special_share)) / 2}


def feature_order(num_layers: int, num_heads: int) -> list[tuple[int, int]]:
    """The order in which a head-agnostic rule makes heads local: head 0 of every layer, then
    head 1, ... (spread over layers; the rule knows nothing about what any head does)."""
    return [(layer, head) for head in range(num_heads) for layer in range(num_layers)]


def feature_selector(model, input_ids: Tensor, special_ids: Sequence[int] = (),
                     local: Mask | None = None) -> tuple[HeadPatterns, dict[str, float]]:
    """A context-aware selector (a common first attempt), fixed so that its choice reaches the
    attention.

    complexity > 0.7 -> every head global; 0.3 < complexity <= 0.7 -> "mixed": half the heads
    local; complexity <= 0.3 -> every head local (``local``, default SinkWindow(4, 64)). Which
    heads: :func:`feature_order`, since input features say nothing about heads.
    What the first attempt's pseudo-code gets wrong is in notebook 08; in short, its patterns were
    passed to a model that takes no such argument, and every head received the same label.
    Returns (the patterns, the features with the chosen local fraction).
    """
    local = SinkWindow() if local is None else local
    features = selector_features(input_ids, special_ids)
    c = features["complexity"]
    fraction = 0.0 if c > 0.7 else (0.5 if c > 0.3 else 1.0)
    cfg = model.config
    order = feature_order(cfg.num_hidden_layers, cfg.num_attention_heads)
    chosen = set(order[:round(fraction * len(order))])
    return HeadPatterns.with_local_heads(model, chosen, local), {**features, "local": fraction}


# ----------------------------------------------------------------------------- profiling
def missed_mass(weights: Tensor, mask: Tensor) -> Tensor:
    """The share of attention a pattern would drop, per head.

    weights: (..., q, k) causal softmax attention (queries at positions 0..q-1 of the keys);
    mask: (q, k) bool, True = the pattern keeps that key. For every query that loses at least one
    of its causal keys (k <= q), sum its weights on the dropped keys; return the mean over those
    queries, (...,). Queries the pattern leaves whole are left out: counting them would make any
    pattern look harmless on short inputs. No such query: 0.
    """
    q_len, k_len = weights.shape[-2:]
    if mask.shape != (q_len, k_len):
        raise ValueError(f"mask has shape {tuple(mask.shape)}, weights end in {(q_len, k_len)}")
    offset = k_len - q_len
    causal = torch.arange(k_len)[None, :] <= torch.arange(offset, k_len)[:, None]
    dropped = causal & ~mask                                             # (q, k)
    affected = dropped.any(dim=-1)                                       # (q,)
    if not bool(affected.any()):
        return weights.new_zeros(weights.shape[:-2])
    outside = (weights * dropped).sum(dim=-1)                            # (..., q)
    return outside[..., affected].mean(dim=-1)


@torch.no_grad()
def mass_outside(model, documents: Sequence[Tensor], local: Mask) -> Tensor:
    """(layers, heads): the mean attention mass each head puts outside ``local``'s keys
    (:func:`missed_mass` of every layer's attention, averaged over the documents).

    A head near 0 never looks outside the pattern: it can be made local at no cost. Averaged
    over every query, a retrieval head can still score low: it reaches far back at the few
    queries that need a fact and reads locally elsewhere (notebook 08 shows it).
    """
    cfg = model.config
    total = torch.zeros(cfg.num_hidden_layers, cfg.num_attention_heads)
    for ids in documents:
        ids = ids.reshape(1, -1)
        positions = torch.arange(ids.shape[1])
        mask = local(positions, positions)
        attentions = model(ids, output_attentions=True).attentions
        for layer, weights in attentions.items():                        # (1, heads, T, T)
            total[layer] += missed_mass(weights[0], mask)
    return total / max(1, len(documents))


@torch.no_grad()
def pattern_loss(model, documents: Sequence[tuple[Tensor, Tensor]],
                 pattern: HeadPatterns | None) -> float:
    """Mean NLL over the weighted tokens. documents: (ids (T,), weight (T,)) pairs, weight 1 on
    the tokens that count (e.g. the answer's code), 0 elsewhere; token t is scored from t - 1."""
    total, count = 0.0, 0.0
    for ids, weight in documents:
        logits = model(ids.reshape(1, -1), attention_pattern=pattern).logits[0, :-1]
        nll = F.cross_entropy(logits.float(), ids.reshape(-1)[1:], reduction="none")
        total += float((nll * weight[1:]).sum())
        count += float(weight[1:].sum())
    return total / max(count, 1.0)


def loss_increase(model, documents: Sequence[tuple[Tensor, Tensor]], local: Mask) -> Tensor:
    """(layers, heads): how much ``pattern_loss`` rises when that head alone is made local.

    DuoAttention's idea measured directly: a head whose loss barely moves is a streaming head; a
    head whose loss jumps is a retrieval head. Costs layers x heads forward passes per document.
    """
    cfg = model.config
    base = pattern_loss(model, documents, None)
    out = torch.zeros(cfg.num_hidden_layers, cfg.num_attention_heads)
    for layer in range(cfg.num_hidden_layers):
        for head in range(cfg.num_attention_heads):
            pattern = HeadPatterns.with_local_heads(model, {(layer, head)}, local)
            out[layer, head] = pattern_loss(model, documents, pattern) - base
    return out


@torch.no_grad()
def greedy_profile(model, documents: Sequence[tuple[Tensor, Tensor]], local: Mask
                   ) -> tuple[Tensor, list[float]]:
    """Make heads local one at a time, each time the head whose addition raises
    :func:`pattern_loss` least *given the heads already local* (forward selection).

    Why: :func:`loss_increase` makes one head local with every other head global, so two heads
    that do the same long-range job look free one by one, and making both local breaks the model.
    DuoAttention avoids this by optimising every head's gate jointly; forward selection is the
    measured, training-free counterpart. Re-measuring every remaining head at every step costs
    heads^2 / 2 loss evaluations; here each step re-measures only the head with the lowest
    (possibly stale) increase until one is confirmed (lazy greedy, Minoux 1978), which is exact
    when a head's increase never shrinks as other heads become local and costs far fewer passes.

    documents: (ids (T,), weight (T,)) pairs as in :func:`pattern_loss`.
    Returns (order (layers, heads): the step at which each head was made local, 0 = first, so
    ``choose_local_heads(order, f)`` takes the first ``round(f * heads)``; losses: the loss with
    the first k heads local, k = 0..heads).
    """
    cfg = model.config
    heads = [(layer, head) for layer in range(cfg.num_hidden_layers)
             for head in range(cfg.num_attention_heads)]

    def loss_with(chosen: list[tuple[int, int]]) -> float:
        return pattern_loss(model, documents, HeadPatterns.with_local_heads(model, set(chosen),
                                                                              local))

    losses = [loss_with([])]
    estimate = {h: loss_with([h]) - losses[0] for h in heads}
    order: list[tuple[int, int]] = []
    while estimate:
        fresh: set[tuple[int, int]] = set()
        while True:
            candidate = min(estimate, key=lambda h: (estimate[h], h))
            if candidate in fresh:
                break
            estimate[candidate] = loss_with([*order, candidate]) - losses[-1]
            fresh.add(candidate)
        losses.append(losses[-1] + estimate.pop(candidate))
        order.append(candidate)
    ranks = torch.zeros(cfg.num_hidden_layers, cfg.num_attention_heads)
    for step, (layer, head) in enumerate(order):
        ranks[layer, head] = step
    return ranks, losses


def choose_local_heads(scores: Tensor, fraction: float) -> set[tuple[int, int]]:
    """The ``round(fraction * heads)`` heads with the lowest scores (least need of the whole
    context), as (layer, head) pairs. scores: (layers, heads), e.g. from ``loss_increase``."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction!r}")
    n_local = round(fraction * scores.numel())
    flat = scores.flatten().argsort(stable=True)[:n_local]
    heads = scores.shape[1]
    return {(int(i) // heads, int(i) % heads) for i in flat}


def random_local_heads(num_layers: int, num_heads: int, fraction: float, seed: int
                       ) -> set[tuple[int, int]]:
    """``round(fraction * heads)`` heads drawn uniformly at random (the baseline for profiling)."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction!r}")
    heads = [(layer, head) for layer in range(num_layers) for head in range(num_heads)]
    return set(random.Random(seed).sample(heads, round(fraction * len(heads))))


# ----------------------------------------------------------------------------- quality
def needle_documents(tokenizer, n: int, seed: int, min_tokens: int = 300, max_tokens: int = 480,
                     keys: list[str] | None = None, style: str = "has_code") -> list:
    """``n`` one-fact needle examples (``tinyworld.needles.needle_example``), lengths drawn
    uniformly in [min_tokens, max_tokens] and depths in [0, 1] from ``random.Random(seed)``;
    ``keys`` as in ``tinyworld.retrieval`` (``tinyworld.HELD_OUT_KEYS`` for evaluation);
    ``style`` is the facts' wording (``"code_of"`` for the main model)."""
    from minidecode.tinyworld.needles import needle_example

    _check_int("n", n, 1)
    _check_int("min_tokens", min_tokens, 64)
    if not isinstance(max_tokens, int) or max_tokens < min_tokens:
        raise ValueError(f"max_tokens must be an int >= min_tokens ({min_tokens}), "
                         f"got {max_tokens!r}")
    rng = random.Random(seed)
    return [needle_example(tokenizer, rng.randint(min_tokens, max_tokens), rng.random(), rng,
                           keys=keys, style=style) for _ in range(n)]


def retrieval_document(tokenizer, needle) -> tuple[Tensor, Tensor]:
    """(ids (T,), weight (T,)) for :func:`pattern_loss` from a needle example
    (``minidecode.tinyworld.needles.needle_example``): the document, the question, then the code's
    tokens, with weight 1 on the code only (the tokens a retrieval head must fetch)."""
    code_ids = tokenizer.encode(f" {needle.code}").ids
    ids = torch.tensor([*needle.document_ids, *needle.question_ids, *code_ids])
    weight = torch.zeros(len(ids))
    weight[-len(code_ids):] = 1.0
    return ids, weight


@torch.no_grad()
def needle_accuracy(model, tokenizer, needles: Sequence, pattern: HeadPatterns | None,
                    max_new_tokens: int = 3) -> float:
    """Exact match of the greedy answer over needle examples, every step under ``pattern``
    (the prompt is read once into a cache; each new token attends to it under the same masks)."""
    from minidecode.tinyworld.needles import needle_found

    _check_int("max_new_tokens", max_new_tokens, 1)
    if not needles:
        raise ValueError("needles is empty: there is no accuracy to measure")
    patterned = functools.partial(model, attention_pattern=pattern)   # every call masked
    hits = 0
    for needle in needles:
        ids = torch.tensor([[*needle.document_ids, *needle.question_ids]])
        cache, next_logits = prefill(patterned, ids, model.new_cache())
        generated = []
        for step in decode_steps(patterned, cache, next_logits):          # greedy
            generated.append(int(step.token[0]))
            if len(generated) == max_new_tokens:
                break
        hits += needle_found(tokenizer, generated, needle.code)
    return hits / len(needles)


def pattern_perplexity(model, token_lists: Sequence[Sequence[int]],
                       pattern: HeadPatterns | None) -> float:
    """exp(mean token NLL) of whole documents under ``pattern`` (each cut to the context)."""
    limit = model.config.max_position_embeddings
    documents = [(torch.tensor(list(ids)[:limit]), torch.ones(min(len(ids), limit)))
                 for ids in token_lists if len(ids) > 1]
    if not documents:
        raise ValueError("token_lists holds no document of 2 or more tokens")
    return math.exp(pattern_loss(model, documents, pattern))
