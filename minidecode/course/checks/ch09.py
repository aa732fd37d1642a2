"""Chapter 09 (InfiniPot and cache policies): 09.1 NuC scores from logits, 09.2 CaP scores from the
catalyst's attention, 09.3 the keep set (NuC first, then CaP), 09.4 Context-Reset RoPE positions,
09.5 the CCD reader loop with any cache policy; short answers on the playground's small pot:
09.6 how many distillations InfiniPot makes, 09.7 where StreamingLLM keeps a needle."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from hypothesis import strategies as st

from minidecode.cache_policies import H2O, InfiniPot, SirLLM, StreamingLLM
from minidecode.cache_policies.cap_nuc import catalyst_scores, infinipot_keep, novelty_scores
from minidecode.course.grading import Case, exercise
from minidecode.infinipot import context_reset_positions, read_document
from minidecode.model import ModelConfig, Transformer


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# 09.1 random cases: batch 1-2, length 1-12, vocabulary 2-9.
@st.composite
def _nuc_cases(draw: st.DrawFn) -> Case:
    batch, length, vocab = (draw(st.integers(1, 2)), draw(st.integers(1, 12)),
                            draw(st.integers(2, 9)))
    seed = draw(st.integers(0, 10**6))
    logits = torch.randn(batch, length, vocab, generator=_generator(seed)) * 3
    ids = torch.randint(0, vocab, (batch, length), generator=_generator(seed + 1))
    return Case(logits, ids)


@exercise("09.1", reference=novelty_scores, returns=torch.Tensor, strategy=_nuc_cases(),
          max_examples=20)
def novelty_scores_cases() -> Iterator[Case]:
    """A certain prediction (NLL 0), a uniform one (log V), the first token 0, a batch of two."""
    logits = torch.tensor([[[0.0, 0.0, 0.0], [100.0, 0.0, 0.0], [0.0, 0.0, 0.0]]])
    yield Case(logits, torch.tensor([[2, 1, 0]]))           # token 1 after a uniform step: log 3
    yield Case(logits, torch.tensor([[0, 0, 2]]))           # token 2 predicted with certainty
    yield Case(torch.zeros(1, 1, 4), torch.tensor([[3]]), name="the first token scores 0")
    yield Case(torch.tensor([[[200.0, 0.0], [0.0, 0.0]]]), torch.tensor([[0, 1]]),
               name="log_softmax: a softmax then a log gives inf for a very unlikely token")
    yield Case(torch.randn(2, 6, 5, generator=_generator(0)), torch.randint(0, 5, (2, 6)))


# 09.2 random cases: GQA shapes and a context followed by the catalyst.
@st.composite
def _cap_cases(draw: st.DrawFn) -> Case:
    kv_heads = draw(st.sampled_from([1, 2, 4]))
    group = draw(st.sampled_from([1, 2]))
    context, catalyst = draw(st.integers(1, 10)), draw(st.integers(1, 4))
    seed = draw(st.integers(0, 10**6))
    scores = torch.randn(1, kv_heads * group, catalyst, context + catalyst,
                         generator=_generator(seed))
    return Case(torch.softmax(scores, dim=-1), context, kv_heads)


@exercise("09.2", reference=catalyst_scores, returns=torch.Tensor, strategy=_cap_cases(),
          max_examples=20)
def catalyst_scores_cases() -> Iterator[Case]:
    """One head; heads sharing a KV head are summed; the catalyst's self-attention is dropped."""
    weights = torch.tensor([[[[0.5, 0.25, 0.25], [0.1, 0.2, 0.7]]]])  # 1 head, 2 catalyst queries
    yield Case(weights, 1, 1)
    yield Case(weights, 2, 1, name="the catalyst's attention to itself is dropped")
    four = torch.softmax(torch.randn(2, 4, 3, 8, generator=_generator(3)), dim=-1)
    yield Case(four, 5, 2, name="query heads 0, 1 share KV head 0; heads 2, 3 share KV head 1")
    yield Case(four, 5, 4)
    yield Case(four, 5, 1)


# 09.3 random cases: distinct random scores, any budget and alpha.
@st.composite
def _keep_cases(draw: st.DrawFn) -> Case:
    length = draw(st.integers(1, 16))
    keep = draw(st.integers(1, length))
    alpha = draw(st.sampled_from([0.0, 0.2, 0.5, 0.7, 1.0]))
    seed = draw(st.integers(0, 10**6))
    nuc, cap = torch.rand(2, 1, 2, length, generator=_generator(seed))
    return Case(nuc, cap, keep, alpha)


@exercise("09.3", reference=infinipot_keep, returns=torch.Tensor, strategy=_keep_cases(),
          max_examples=25)
def infinipot_keep_cases() -> Iterator[Case]:
    """alpha 0 (CaP only), 1 (NuC only), 0.5; a NuC pick never counted twice; two heads differ."""
    nuc = torch.tensor([[[0.9, 0.1, 0.8, 0.2, 0.3, 0.7]]])
    cap = torch.tensor([[[0.5, 0.6, 0.1, 0.9, 0.2, 0.3]]])
    yield Case(nuc, cap, 3, 0.0)                             # by CaP: entries 0, 1, 3
    yield Case(nuc, cap, 3, 1.0)                             # by NuC: entries 0, 2, 5
    yield Case(nuc, cap, 4, 0.5)                             # NuC 0, 2; then CaP 3, 1
    yield Case(nuc, nuc, 4, 0.5, name="CaP fills in among the entries NuC did not take")
    two = torch.rand(2, 1, 2, 9, generator=_generator(5))
    yield Case(two[0], two[1], 5, 0.4)


# 09.4 random cases: kept token indices, distinct and unsorted.
@st.composite
def _reset_cases(draw: st.DrawFn) -> Case:
    heads = draw(st.integers(1, 3))
    length = draw(st.integers(1, 12))
    seed = draw(st.integers(0, 10**6))
    rows = [torch.randperm(100, generator=_generator(seed + h))[:length] for h in range(heads)]
    return Case(torch.stack(rows)[None])


@exercise("09.4", reference=context_reset_positions, returns=torch.Tensor,
          strategy=_reset_cases(), max_examples=20)
def context_reset_positions_cases() -> Iterator[Case]:
    """Already in order; out of order; per head; one entry."""
    yield Case(torch.tensor([[[0, 1, 2, 3]]]))
    yield Case(torch.tensor([[[7, 3, 90, 12]]]), name="out of order: ranks, not argsort")
    yield Case(torch.tensor([[[5, 900, 17], [40, 2, 3]]]), name="each row on its own")
    yield Case(torch.tensor([[[1234]]]))


# 09.5: the reader loop, on a tiny random model (what it reads does not matter, only that the
# student's loop keeps and re-numbers exactly the entries the course's reader does).
def read_with_policy(model, input_ids, policy, pot_size, keep_size, chunk_size):
    """The kept token indices of every layer, (layers, batch, kv_heads, kept), and the NLL of
    every token read, (batch, length), after ``read_document`` with CR-RoPE."""
    result = read_document(model, input_ids, policy, pot_size, keep_size, chunk_size)
    return torch.stack(result.cache.token_index), result.token_nll


def _tiny_model(max_positions: int = 64) -> Transformer:
    torch.manual_seed(0)  # the weights; every case gets its own copy of the same model
    config = ModelConfig(vocab_size=40, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=max_positions)
    return Transformer(config).eval()


@exercise("09.5", reference=read_with_policy, returns=tuple, stateful=("policy",), points=3)
def read_with_policy_cases() -> Iterator[Case]:
    """StreamingLLM, H2O (attention weights, state), InfiniPot on a batch of two (the catalyst
    takes room), one token a chunk (the first token's NLL is 0), and two sizes that cannot work."""
    model = _tiny_model()
    ids = torch.randint(0, 40, (2, 37), generator=_generator(1))
    yield Case(model, ids[:1, :32], StreamingLLM(n_sinks=2), 24, 8, 8,
               name="distil when the next chunk would overflow the pot, keep keep_size")
    yield Case(model, ids[:1, :32], H2O(n_recent=4), 24, 8, 8,
               name="a policy that needs attention weights, and observes every chunk")
    yield Case(model, ids, InfiniPot([1, 2, 3], alpha=0.5), 24, 8, 6,
               name="the catalyst's reserve counts against the pot")
    yield Case(model, ids[:, :10], SirLLM(n_sinks=1, n_recent=2), 7, 3, 1,
               name="one token a chunk: NLL carried across chunks, CR-RoPE after each distil")
    yield Case(model, ids[:1, :20], InfiniPot([1, 2, 3]), 24, 8, 14,
               name="ValueError: a chunk larger than pot - keep - catalyst cannot fit")
    yield Case(model, ids[:1, :20], StreamingLLM(n_sinks=2), 8, 8, 4,
               name="ValueError: keep_size must be smaller than pot_size")


# 09.6 - 09.7: the playground's small pot (M = 256, C = 64, chunks of 128) on a 2,048-token
# document, read by the tiny random model: the questions are about the policies' mechanics, which
# do not depend on what the tokens say. The policy is built and the document read in a helper, so
# a student's answer may use read_document and the policies too (only the package's functions that
# the reference calls directly count as its answer).
SMALL_POT = {"pot_size": 256, "keep_size": 64, "chunk_size": 128}
CHAPTER_POT = {"pot_size": 512, "keep_size": 256, "chunk_size": 128}
NEEDLE = int(0.9 * 2048)                                    # the token at depth 0.9: 1843


def _read_2048(policy_name: str, sizes: dict[str, int]):
    policies = {"InfiniPot": lambda: InfiniPot(list(range(1, 17))),   # a 16-token catalyst
                "StreamingLLM": lambda: StreamingLLM(n_sinks=4)}
    model = _tiny_model(max_positions=512)
    ids = torch.randint(0, 40, (1, 2048), generator=_generator(9))
    with torch.no_grad():
        return read_document(model, ids, policies[policy_name](), **sizes)


def answer_09_6() -> int:
    """InfiniPot with a 16-token catalyst in the small pot: how many distillations?"""
    return _read_2048("InfiniPot", SMALL_POT).distillations


@exercise("09.6", reference=answer_09_6, returns=int)
def answer_09_6_cases() -> Iterator[Case]:
    yield Case()


def _needle_kept(sizes: dict[str, int]) -> bool:
    return NEEDLE in _read_2048("StreamingLLM", sizes).cache.token_index[0][0, 0].tolist()


def answer_09_7() -> str:
    """StreamingLLM (4 sinks): is the token at depth 0.9 still cached after the last token in the
    chapter's pot (M = 512, C = 256), in the small pot (M = 256, C = 64)? "a" both, "b" only the
    chapter's, "c" only the small one, "d" neither."""
    kept = (_needle_kept(CHAPTER_POT), _needle_kept(SMALL_POT))
    return {(True, True): "a", (True, False): "b", (False, True): "c", (False, False): "d"}[kept]


@exercise("09.7", reference=answer_09_7, returns=str)
def answer_09_7_cases() -> Iterator[Case]:
    yield Case()
