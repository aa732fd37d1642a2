"""InfiniPot's compression policy: Catalyst Prompt (CaP) and Novelty under Compression (NuC).

Kim, Shim, Choi, Chang (2024), "InfiniPot: Infinite Context Processing on Memory-Constrained
LLMs", EMNLP 2024, arXiv:2410.01518. When the pot is full, two scores say what to keep:

- **CaP** (catalyst prompt): append a short prompt after the cached context, run it, and read how
  much attention its queries give each cached entry, per KV head (summed over the catalyst's
  queries and the query heads sharing the KV head). The prompt asks the kind of question the
  context will later be asked (a generic one, or the actual question when it is known), so the
  entries it attends to are the ones a future question will need. Its own entries are removed
  afterwards: it is a probe, not part of the context.

      CaP(j) = sum_{c in catalyst} sum_{h in group} a_h(c, j)

- **NuC** (novelty under compression): the token's negative log-likelihood given the compressed
  context that was cached when the token was read, -log p(x_j | pot). Already computed by the
  forward pass that read the token, so it costs nothing. A token the compressed context could not
  predict is new information; one it predicted is redundant.

Combination (the paper's): first the ``alpha * keep`` entries with the highest NuC, then the rest
of the budget per KV head by CaP among the entries not yet chosen. That rule is one function,
:func:`infinipot_keep` (exercise 09.3), and :class:`InfiniPot` runs exactly it; NuC is
:func:`novelty_scores` (exercise 09.1), which the reader calls on every chunk it reads.

The positions of the kept entries are then reset (Context-Reset RoPE); that is the reader's job,
see :func:`minidecode.infinipot.reset_positions`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from minidecode.cache import KVCache
from minidecode.cache_policies.base import CachePolicy, Observation, per_kv_head, recent_and_sinks


def novelty_scores(logits: Tensor, input_ids: Tensor) -> Tensor:
    """NuC of every token read in one pass: -log softmax(logits[t - 1])[input_ids[t]].

    logits: (batch, length, vocab) the model's outputs on input_ids (batch, length); returns
    (batch, length) with 0 for the first token (nothing predicted it).
    """
    log_probs = torch.log_softmax(logits.float(), dim=-1)[:, :-1]        # predicts tokens 1..T-1
    nll = -log_probs.gather(-1, input_ids[:, 1:, None])[..., 0]         # (batch, length - 1)
    return torch.cat([torch.zeros_like(nll[:, :1]), nll], dim=1)


def catalyst_scores(weights: Tensor, context_length: int, num_kv_heads: int) -> Tensor:
    """CaP per KV head from the catalyst's attention in one layer.

    weights: (batch, heads, catalyst, context_length + catalyst), the softmax attention of the
    catalyst prompt's queries over the cached context followed by the catalyst itself. Returns
    (batch, kv_heads, context_length): the attention each context entry received, summed over the
    catalyst's queries and over the query heads sharing a KV head (head h reads KV head
    h // (heads / kv_heads)). The catalyst's attention to itself is not a score of the context.
    """
    on_context = weights[..., :context_length].sum(dim=2)               # (batch, heads, L)
    return per_kv_head(on_context, num_kv_heads)


def infinipot_keep(nuc: Tensor, cap: Tensor, keep: int, alpha: float) -> Tensor:
    """The paper's keep set: the round(alpha * keep) entries with the highest NuC, then the rest of
    the budget by CaP among the others; returned as sorted entry indices (batch, kv, keep).

    nuc, cap: (batch, kv_heads, length), entries in stream order.
    """
    n_nuc = round(alpha * keep)
    novel = nuc.topk(n_nuc, dim=-1).indices                              # (batch, kv, n_nuc)
    rest = cap.scatter(-1, novel, float("-inf"))                         # not chosen twice
    by_cap = rest.topk(keep - n_nuc, dim=-1).indices
    return torch.cat([novel, by_cap], dim=-1).sort(dim=-1).values


@dataclass
class InfiniPot(CachePolicy):
    """catalyst_ids: the catalyst prompt's token ids (1-d, non-empty) when ``use_cap``;
    alpha: share of the budget chosen by NuC, in [0, 1] (0 = CaP only, 1 = NuC only);
    n_sinks, n_recent: the first and the newest tokens, always kept (default 0, 0: the paper's
    rule alone). The other policies of the course all keep such tokens; with them InfiniPot's
    rule chooses the rest of the budget. Without a recent window the next chunk starts reading
    with the end of the last sentence dropped: its first tokens get nonsense predictions (NLL
    of 10-20 nats for "was" after "The day"), and NuC then keeps exactly those tokens.

    ``use_cap=False`` is ``alpha = 1`` without the catalyst pass, ``use_nuc=False`` is
    ``alpha = 0``. The keep set is :func:`infinipot_keep` itself; ``score`` marks it (1 = kept,
    0 = dropped) so that the shared ``compress`` keeps exactly those entries.
    """

    catalyst_ids: list[int] = field(default_factory=list)
    alpha: float = 0.5
    use_cap: bool = True
    use_nuc: bool = True
    n_sinks: int = 0
    n_recent: int = 0
    name: str = "InfiniPot"
    _cap: dict[int, Tensor] = field(default_factory=dict, init=False, repr=False)
    _keep: int = field(default=0, init=False, repr=False)

    def __post_init__(self) -> None:
        if not 0.0 <= float(self.alpha) <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {self.alpha!r}")
        if not (self.use_cap or self.use_nuc):
            raise ValueError("use_cap and use_nuc cannot both be False: nothing would score")
        if self.use_cap and len(self.catalyst_ids) == 0:
            raise ValueError("catalyst_ids must hold at least one token when use_cap=True")
        for name in ("n_sinks", "n_recent"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an int >= 0, got {value!r}")

    @property
    def needs_attentions(self) -> bool:  # CaP reads attentions itself, from its own forward
        return False

    @property
    def reserve(self) -> int:
        return len(self.catalyst_ids) if self.use_cap else 0

    @property
    def nuc_share(self) -> float:
        """The alpha actually used: ``alpha`` with both scores, 1 with NuC only, 0 with CaP only."""
        if self.use_cap and self.use_nuc:
            return float(self.alpha)
        return 1.0 if self.use_nuc else 0.0

    def prepare(self, model, cache: KVCache, keep: int, observation: Observation) -> None:
        """Run the catalyst prompt over the cache, read its attention, then remove its entries."""
        self.peak_entries = cache.length
        self._keep = keep
        self._cap = {}
        if not self.use_cap:
            return
        length = cache.length
        catalyst = torch.tensor([self.catalyst_ids], device=cache.keys[0].device)
        catalyst = catalyst.expand(cache.batch_size, -1)
        out = model(catalyst, cache=cache, output_attentions=True)
        self.peak_entries = cache.length
        for layer, weights in out.attentions.items():                    # (batch, heads, c, L + c)
            self._cap[layer] = catalyst_scores(weights, length, cache.fingerprint.num_kv_heads)
        cache.crop(length)  # the probe leaves no trace

    def nuc(self, cache: KVCache, layer: int, observation: Observation) -> Tensor:
        """(batch, kv, length) NLL of the token each entry holds (``observation.token_nll``, which
        the reader fills with :func:`novelty_scores`)."""
        token_index = cache.token_index[layer]
        nll = observation.token_nll[:, None, :].expand(*token_index.shape[:2], -1)
        return nll.gather(-1, token_index)

    def score(self, model, cache: KVCache, layer: int, observation: Observation) -> Tensor:
        """1 for the entries :func:`infinipot_keep` keeps (``keep`` from ``prepare``), else 0;
        the sinks and the recent window (if any) get 2 and the rule fills the rest of the budget."""
        token_index = cache.token_index[layer]                           # (batch, kv, length)
        zeros = torch.zeros(token_index.shape, device=token_index.device)
        cap = self._cap[layer] if self.use_cap else zeros
        nuc = self.nuc(cache, layer, observation) if self.use_nuc else zeros
        always = recent_and_sinks(token_index, cache.seen_tokens, self.n_sinks, self.n_recent)
        n_always = int(always.sum(dim=-1).max())
        if n_always >= self._keep:          # the window alone fills the budget
            return always.float()
        cap = cap.masked_fill(always, float("-inf"))
        nuc = nuc.masked_fill(always, float("-inf"))
        kept = infinipot_keep(nuc, cap, self._keep - n_always, self.nuc_share)
        return zeros.scatter(-1, kept, 1.0) + 2.0 * always.float()
