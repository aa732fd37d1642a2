"""Reading a document of any length with a cache of fixed size: InfiniPot's Continual Context
Distillation, and the same reader for the baselines in :mod:`minidecode.cache_policies`.

Kim, Shim, Choi, Chang (2024), "InfiniPot: Infinite Context Processing on Memory-Constrained
LLMs", EMNLP 2024, arXiv:2410.01518.

**Continual Context Distillation (CCD).** Read the input in chunks into a *pot* of ``pot_size`` (M)
cache entries. Whenever the next chunk would overflow the pot, *distil* it: a cache policy scores
every entry and only ``keep_size`` (C < M) survive; then reading continues. Memory never exceeds M,
whatever the length of the input. InfiniPot's own policy scores with a catalyst prompt (CaP) and
novelty under compression (NuC), see :class:`minidecode.cache_policies.InfiniPot`.

**Context-Reset RoPE (CR-RoPE).** A model trained on 512-token contexts has never seen a RoPE
position >= 512. After each distillation the kept entries get positions 0..C-1 again (in stream
order), so no position ever reaches M: ``reset_positions``. Without it, positions grow with the
input and the model reads positions it was never trained on.

The reader, in one picture (M = 8, C = 4, chunks of 2)::

    read  a b | c d | e f | g h        pot full: distil -> keep 4, e.g. [a c f h] at positions 0-3
    read  i j | k l                    pot full again: distil -> keep 4 of [a c f h i j k l] ...
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from minidecode.cache import KVCache
from minidecode.cache_policies import CachePolicy, InfiniPot, Observation
from minidecode.cache_policies.cap_nuc import catalyst_scores, infinipot_keep, novelty_scores
from minidecode.generate import decode_steps
from minidecode.model import Transformer
from minidecode.tinyworld.needles import Needle, needle_example, needle_found  # noqa: F401 (re-export)

__all__ = ["InfiniPot", "catalyst_scores", "context_reset_positions", "infinipot_keep",
           "novelty_scores", "ChunkReader", "Needle", "ReadResult", "answer_after_reading",
           "answer_from", "extend_positions", "needle_example", "needle_found", "needle_kept",
           "read_document", "reset_positions"]


@dataclass
class ReadResult:
    """What reading left behind.

    cache: the cache after the last token; next_logits: (batch, vocab) the model's prediction for
    the token after the input; peak_entries / peak_bytes: the largest cache ever held (entries per
    KV head in a layer, and bytes of keys + values over all layers); distillations: how many times
    the pot was compressed; kept: for each distillation, the token indices that layer 0, KV head 0
    of batch row 0 kept (for the playground's highlighting); trace: (tokens read, cache entries)
    after every chunk, for plots; token_nll: (batch, length) -log p of every input token given what
    the cache held when it was read (0 for the first token): NuC, and a measure of reading quality.
    """

    cache: KVCache
    next_logits: Tensor
    peak_entries: int
    peak_bytes: int
    distillations: int = 0
    kept: list[list[int]] = field(default_factory=list)
    trace: list[tuple[int, int]] = field(default_factory=list)
    token_nll: Tensor | None = None


def context_reset_positions(token_index: Tensor) -> Tensor:
    """CR-RoPE's new positions: each entry's rank in stream order among its head's entries.

    token_index: (..., length) which token each kept entry holds; returns (..., length) long with
    positions 0..length-1: the oldest kept token gets 0, the newest length - 1.
    """
    return token_index.argsort(dim=-1).argsort(dim=-1)


def reset_positions(cache: KVCache) -> None:
    """Context-Reset RoPE: give the entries of every layer positions 0..length-1 in stream order;
    the keys are re-rotated by the position change (``KVCache.set_positions``)."""
    for layer in range(cache.num_layers):
        if cache.layer_length(layer):
            cache.set_positions(layer, context_reset_positions(cache.token_index[layer]))


def extend_positions(model: Transformer, max_positions: int) -> Transformer:
    """The same weights with a larger ``max_position_embeddings``: lets a full cache (or a reader
    without CR-RoPE) run past the trained context, to *show* what happens there. RoPE itself has no
    table to extend; the limit is the model's guard against positions it was never trained on."""
    from dataclasses import replace

    longer = Transformer(replace(model.config, max_position_embeddings=max_positions))
    longer.load_state_dict(model.state_dict())
    return longer.to(next(model.parameters()).device).eval()


def _check_sizes(policy: CachePolicy | None, pot_size: int, keep_size: int, chunk_size: int,
                 n_sinks: int) -> None:
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be an int >= 1, got {chunk_size!r}")
    if policy is None:
        return
    if not isinstance(pot_size, int) or not isinstance(keep_size, int) or keep_size < 1:
        raise ValueError(f"pot_size and keep_size must be ints, keep_size >= 1; got "
                         f"{pot_size!r}, {keep_size!r}")
    if keep_size >= pot_size:
        raise ValueError(f"keep_size (C={keep_size}) must be smaller than pot_size (M={pot_size})")
    if keep_size < n_sinks:
        raise ValueError(f"keep_size (C={keep_size}) must be at least the policy's n_sinks "
                         f"({n_sinks}): the sinks alone would not fit")
    room = pot_size - keep_size - policy.reserve
    if chunk_size > room:
        raise ValueError(f"chunk_size ({chunk_size}) must be at most pot_size - keep_size - "
                         f"catalyst length = {pot_size} - {keep_size} - {policy.reserve} = {room}, "
                         f"or a chunk read right after a distillation would overflow the pot")


@torch.no_grad()
def read_document(model: Transformer, input_ids: Tensor, policy: CachePolicy | None = None,
                  pot_size: int = 512, keep_size: int = 256, chunk_size: int = 64,
                  reset: bool = True, room_after: int = 0) -> ReadResult:
    """Stream ``input_ids`` (batch, length) through the model in chunks, distilling the cache with
    ``policy`` whenever the next chunk would overflow ``pot_size`` entries.

    policy None: no compression (the full cache; needs a model whose position limit covers the
    input, see ``extend_positions``). reset: apply CR-RoPE after each distillation.
    room_after: entries that must still fit after the last chunk (the answer to be generated).
    """
    if not isinstance(input_ids, Tensor) or input_ids.dim() != 2 or input_ids.shape[1] == 0:
        raise ValueError("input_ids must be a non-empty (batch, length) tensor: an empty document "
                         f"has nothing to read (got {getattr(input_ids, 'shape', input_ids)!r})")
    reader = ChunkReader(model, policy, pot_size, keep_size, chunk_size, reset)
    length = input_ids.shape[1]
    for start in range(0, length, chunk_size):
        is_last = start + chunk_size >= length
        reader.read(input_ids[:, start:start + chunk_size], room_after if is_last else 0)
    return reader.finish()


class ChunkReader:
    """``read_document``'s loop one chunk at a time, its state between chunks kept in one object.

    ``read`` distils the pot if the chunk would overflow it, then reads the chunk; ``finish``
    returns the :class:`ReadResult`. A benchmark can ``fork`` the reader after a shared prefix
    and continue two documents from there: the fork reads exactly as a fresh reader would.
    """

    def __init__(self, model: Transformer, policy: CachePolicy | None, pot_size: int = 512,
                 keep_size: int = 256, chunk_size: int = 64, reset: bool = True) -> None:
        _check_sizes(policy, pot_size, keep_size, chunk_size, getattr(policy, "n_sinks", 0))
        if policy is not None and policy.needs_attentions and not isinstance(model, Transformer):
            raise ValueError(f"{type(policy).__name__} needs attention weights, which this model "
                             "cannot return (use a minidecode Transformer)")
        self.model, self.policy, self.reset = model, policy, reset
        self.pot_size, self.keep_size, self.chunk_size = pot_size, keep_size, chunk_size
        self.tokens_read = 0
        self._nll = torch.zeros(1, 1024)               # (batch, capacity), grown by doubling
        self.prev_logits: Tensor | None = None         # (batch, vocab)
        self.observation = Observation(token_nll=self._nll[:, :0])
        self.result = ReadResult(cache=model.new_cache(), next_logits=torch.empty(0),
                                 peak_entries=0, peak_bytes=0)
        if policy is not None:
            policy.reset()

    @torch.no_grad()
    def read(self, chunk: Tensor, room_after: int = 0) -> None:
        """Read ``chunk`` (batch, n <= chunk_size), leaving ``room_after`` free entries after it."""
        policy, cache, result = self.policy, self.result.cache, self.result
        needed = chunk.shape[1] + room_after
        if policy is not None and cache.length + needed + policy.reserve > self.pot_size:
            _distil(self.model, cache, policy, self.pot_size, self.keep_size, needed,
                    self.observation, self.reset, result)
        out = self.model(chunk, cache=cache,
                         output_attentions=policy is not None and policy.needs_attentions)
        result.peak_entries = max(result.peak_entries, cache.length)
        result.peak_bytes = max(result.peak_bytes, cache.nbytes())
        start, end = self.tokens_read, self.tokens_read + chunk.shape[1]
        result.trace.append((end, cache.length))
        if end > self._nll.shape[1] or self._nll.shape[0] != chunk.shape[0]:
            grown = torch.zeros(chunk.shape[0], max(2 * self._nll.shape[1], end))
            grown[:, :start] = self._nll[:, :start]
            self._nll = grown
        self._nll[:, start:end] = chunk_novelty(self.prev_logits, out.logits, chunk)
        self.prev_logits = out.logits[:, -1]
        self.tokens_read = end
        self.observation = Observation(attentions=out.attentions, token_nll=self._nll[:, :end])
        if policy is not None:
            policy.observe(cache, self.observation)

    def fork(self) -> ChunkReader:
        """An independent copy (cache, policy state, NLLs) that shares the model's weights."""
        return copy.deepcopy(self, memo={id(self.model): self.model})

    def finish(self) -> ReadResult:
        """The reading's result: next-token log-probabilities, NLL of every token read."""
        self.result.next_logits = F.log_softmax(self.prev_logits.float(), dim=-1)
        self.result.token_nll = self._nll[:, :self.tokens_read].clone()
        return self.result


def chunk_novelty(prev_logits: Tensor | None, logits: Tensor, chunk: Tensor) -> Tensor:
    """NuC of a chunk's tokens with :func:`novelty_scores`, continued across chunks.

    prev_logits: (batch, vocab) the last logits of the previous chunk, which predict the chunk's
    first token (None for the first chunk: its first token gets 0); logits: (batch, chunk, vocab)
    the model's outputs on chunk (batch, chunk). Returns (batch, chunk):
    -log softmax(logits[t - 1])[chunk[t]], with logits[-1] = prev_logits.
    """
    if prev_logits is None and chunk.shape[1] == 1:   # novelty_scores of one token is empty
        return torch.zeros(chunk.shape)
    if prev_logits is None:
        return novelty_scores(logits, chunk)
    logits = torch.cat([prev_logits[:, None], logits], dim=1)            # (batch, 1 + chunk, V)
    ids = torch.cat([chunk[:, :1], chunk], dim=1)      # a placeholder first: scored 0, dropped
    return novelty_scores(logits, ids)[:, 1:]


def _distil(model, cache: KVCache, policy: CachePolicy, pot_size: int, keep_size: int,
            needed: int, observation: Observation, reset: bool, result: ReadResult) -> None:
    keep = min(keep_size, pot_size - needed - policy.reserve)
    if keep < 1:
        raise ValueError(f"pot_size={pot_size} leaves no room for the cache after {needed} new "
                         f"tokens and a {policy.reserve}-token catalyst")
    policy.compress(model, cache, keep, observation)
    result.peak_entries = max(result.peak_entries, policy.peak_entries)
    result.peak_bytes = max(result.peak_bytes, policy.peak_entries * _bytes_per_entry(cache))
    result.distillations += 1
    result.kept.append(cache.token_index[0][0, 0].tolist())
    if reset:
        reset_positions(cache)


def _bytes_per_entry(cache: KVCache) -> int:
    """Bytes of keys + values that one cached entry (one token, every layer and head) costs."""
    return cache.nbytes() // max(1, cache.length)


@torch.no_grad()
def answer_after_reading(model: Transformer, document_ids: list[int], question_ids: list[int],
                         policy: CachePolicy | None, max_new_tokens: int = 4, **read_kwargs
                         ) -> tuple[list[int], ReadResult]:
    """Read document + question with ``read_document``, then decode greedily from the cache.

    The question is read as the last chunk(s); the reader leaves room for ``max_new_tokens``.
    Returns (generated token ids, the reading's result).
    """
    if len(document_ids) == 0:
        raise ValueError("document_ids is empty: there is nothing to read")
    ids = torch.tensor([list(document_ids) + list(question_ids)])
    result = read_document(model, ids, policy, room_after=max_new_tokens, **read_kwargs)
    return answer_from(model, result, max_new_tokens), result


@torch.no_grad()
def answer_from(model: Transformer, result: ReadResult, max_new_tokens: int = 4) -> list[int]:
    """Greedy tokens decoded from what a reading left in its cache (batch row 0); the cache grows
    by the answer and ``result``'s peak memory counts it."""
    cache = result.cache
    generated: list[int] = []
    for step in decode_steps(model, cache, result.next_logits.float()):       # greedy
        generated.append(int(step.token[0]))
        result.peak_entries = max(result.peak_entries, cache.length)
        result.peak_bytes = max(result.peak_bytes, cache.nbytes())
        if len(generated) == max_new_tokens:
            break
    return generated


def needle_kept(cache: KVCache, code_positions: list[int]) -> float:
    """Share of (layer, KV head) caches that still hold every token of the needle's code: whether
    compression kept the answer at all, whatever the model then does with it (batch row 0)."""
    wanted = torch.tensor(code_positions)
    kept = [torch.isin(wanted, cache.token_index[layer][0, head]).all()
            for layer in range(cache.num_layers)
            for head in range(cache.token_index[layer].shape[1])]
    return float(torch.stack(kept).float().mean())
