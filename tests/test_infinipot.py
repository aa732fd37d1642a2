"""Chapter 09: cache policies (StreamingLLM, H2O, TOVA, SnapKV, SirLLM, InfiniPot) and the reader
that streams a long input through a fixed-size pot (Continual Context Distillation, CR-RoPE)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from minidecode.cache_policies import (
    H2O,
    TOVA,
    InfiniPot,
    Observation,
    SirLLM,
    SnapKV,
    StreamingLLM,
)
from minidecode.cache_policies.base import top_entries
from minidecode.cache_policies.cap_nuc import catalyst_scores, infinipot_keep, novelty_scores
from minidecode.infinipot import answer_after_reading, extend_positions, read_document
from minidecode.model import ModelConfig, Transformer

VOCAB = 97


def make_model(seed: int = 0, max_positions: int = 128) -> Transformer:
    torch.manual_seed(seed)
    model = Transformer(ModelConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64,
                                    num_hidden_layers=2, num_attention_heads=4,
                                    num_key_value_heads=2, max_position_embeddings=max_positions,
                                    tie_word_embeddings=False)).eval()
    with torch.no_grad():  # larger weights: attention far from uniform
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.15)
    return model


MODEL = make_model()
CATALYST = [5, 6, 7]


def all_policies():
    return [StreamingLLM(n_sinks=2), H2O(n_recent=4), TOVA(), SnapKV(window=4, kernel=3),
            SirLLM(n_sinks=2, n_recent=4), InfiniPot(catalyst_ids=CATALYST),
            InfiniPot(catalyst_ids=CATALYST, use_nuc=False),
            InfiniPot(catalyst_ids=CATALYST, use_cap=False)]


def tokens(length: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, VOCAB, (1, length), generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------ exactness without compression
@pytest.mark.parametrize("policy", all_policies(), ids=lambda p: repr(p)[:40])
def test_a_budget_as_large_as_the_input_equals_the_uncompressed_model(policy):
    ids = tokens(60)
    full = F.log_softmax(MODEL(ids).logits[:, -1], dim=-1)
    result = read_document(MODEL, ids, policy, pot_size=100, keep_size=80, chunk_size=7)
    assert result.distillations == 0
    torch.testing.assert_close(result.next_logits, full, atol=1e-5, rtol=0)


def nuc_of(ids: torch.Tensor) -> torch.Tensor:
    """NuC of every token of ids (1, length) by the exercise function, in one uncompressed pass."""
    with torch.no_grad():
        return novelty_scores(MODEL(ids).logits, ids)                   # (1, length)


@pytest.mark.parametrize("chunk_size", [1, 9, 40])
def test_the_readers_nuc_is_novelty_scores_over_the_whole_document(chunk_size):
    ids = tokens(50)
    seen = {}

    class Spy(StreamingLLM):
        def observe(self, cache, observation):
            seen["nll"] = observation.token_nll.clone()

    result = read_document(MODEL, ids, Spy(), pot_size=100, keep_size=60, chunk_size=chunk_size)
    torch.testing.assert_close(seen["nll"], nuc_of(ids), atol=1e-5, rtol=0)
    torch.testing.assert_close(result.token_nll, nuc_of(ids), atol=1e-5, rtol=0)
    assert seen["nll"][0, 0] == 0


# ------------------------------------------------------------------ the pot's bound and CR-RoPE
@settings(max_examples=15, deadline=None)
@given(length=st.integers(1, 300), chunk=st.integers(1, 20), policy_id=st.integers(0, 7))
def test_peak_cache_never_exceeds_the_pot(length, chunk, policy_id):
    policy = all_policies()[policy_id]
    result = read_document(MODEL, tokens(length, seed=length), policy, pot_size=48,
                           keep_size=24, chunk_size=chunk)
    assert result.peak_entries <= 48
    assert result.cache.length <= 48
    for layer in range(MODEL.config.num_hidden_layers):
        assert result.cache.layer_length(layer) <= 48


def test_cr_rope_keeps_every_position_below_the_pot_and_without_it_they_grow():
    ids = tokens(400)
    policy = InfiniPot(catalyst_ids=CATALYST)
    result = read_document(MODEL, ids, policy, pot_size=64, keep_size=32, chunk_size=16)
    assert result.distillations > 5
    assert max(int(p.max()) for p in result.cache.positions) < 64
    # kept entries sit at 0..C-1 in stream order, the chunks read since then after them
    for layer in range(MODEL.config.num_hidden_layers):
        order = result.cache.token_index[layer].argsort(dim=-1)
        positions = result.cache.positions[layer].gather(-1, order)
        assert bool((positions.diff(dim=-1) > 0).all())
    longer = extend_positions(MODEL, 1024)
    no_reset = read_document(longer, ids, InfiniPot(catalyst_ids=CATALYST), pot_size=64,
                             keep_size=32, chunk_size=16, reset=False)
    assert max(int(p.max()) for p in no_reset.cache.positions) >= 390


def test_without_a_policy_positions_past_the_trained_context_are_refused():
    with pytest.raises(ValueError, match="max_position_embeddings"):
        read_document(MODEL, tokens(200), None, chunk_size=50)
    longer = extend_positions(MODEL, 256)
    result = read_document(longer, tokens(200), None, chunk_size=50)
    assert result.peak_entries == 200


# ------------------------------------------------------------------ what each policy keeps
def test_top_entries_in_stream_order_and_ties_to_the_newest():
    scores = torch.tensor([[[1.0, 3.0, 3.0, 0.0, 2.0]]])
    index = torch.tensor([[[10, 11, 12, 13, 14]]])
    assert top_entries(scores, index, 3).tolist() == [[[1, 2, 4]]]
    assert top_entries(torch.zeros(1, 1, 5), index, 2).tolist() == [[[3, 4]]]


def kept_tokens(result, layer=0):
    return sorted(result.cache.token_index[layer][0, 0].tolist())


def test_streaming_llm_keeps_the_sinks_and_the_most_recent_tokens():
    result = read_document(MODEL, tokens(100), StreamingLLM(n_sinks=3), pot_size=40,
                           keep_size=20, chunk_size=10)
    kept = kept_tokens(result)
    assert kept[:3] == [0, 1, 2]
    assert kept[3:] == list(range(100 - len(kept) + 3, 100))


def test_h2o_accumulates_the_attention_each_entry_received():
    ids = tokens(30)
    policy = H2O(n_recent=0)
    read_document(MODEL, ids, policy, pot_size=64, keep_size=32, chunk_size=8)
    attentions = MODEL(ids, output_attentions=True).attentions
    for layer, weights in attentions.items():                          # (1, heads, 30, 30)
        received = weights.sum(dim=2).reshape(1, 2, 2, 30).sum(2)       # per KV head
        torch.testing.assert_close(policy._accumulated[layer], received, atol=1e-4, rtol=1e-4)


def test_tova_keeps_the_same_tokens_in_every_head_of_a_layer():
    result = read_document(MODEL, tokens(120), TOVA(), pot_size=40, keep_size=20, chunk_size=10)
    for layer in range(2):
        index = result.cache.token_index[layer][0]
        assert bool((index == index[0]).all())


def test_policies_that_score_by_attention_keep_different_tokens_per_kv_head():
    result = read_document(MODEL, tokens(120), SnapKV(window=4), pot_size=40, keep_size=20,
                           chunk_size=10)
    heads = result.cache.token_index[0][0]
    assert not bool((heads[0] == heads[1]).all())


@pytest.mark.parametrize("pooling", ["avg", "max"])
def test_snapkv_pools_the_windows_votes_as_the_papers_code(pooling):
    """Votes of the last `window` queries on the entries before the window, pooled over 3
    neighbours with zero padding counted in the average; the window itself always kept."""
    ids = tokens(30)
    cache = MODEL.new_cache()
    attentions = MODEL(ids, cache=cache, output_attentions=True).attentions
    policy = SnapKV(window=4, kernel=3, pooling=pooling)
    scores = policy.score(MODEL, cache, 1, Observation(attentions=attentions))
    votes = attentions[1][0, :, -4:, :26].sum(dim=1).reshape(2, 2, 26).sum(1)   # (kv, 26)
    padded = F.pad(votes, (1, 1))                                       # zeros at both ends
    windows = torch.stack([padded[:, :-2], padded[:, 1:-1], padded[:, 2:]])      # (3, kv, 26)
    expected = windows.mean(0) if pooling == "avg" else windows.amax(0)
    torch.testing.assert_close(scores[0, :, :26], expected)
    assert bool(torch.isinf(scores[0, :, 26:]).all())


def test_snapkv_averages_by_default_and_refuses_an_unknown_pooling():
    assert SnapKV().pooling == "avg"
    with pytest.raises(ValueError, match="pooling"):
        SnapKV(pooling="mean")


def test_sirllm_and_nuc_only_infinipot_keep_the_most_surprising_tokens():
    ids = tokens(45)
    nll = nuc_of(ids)[0, 1:]                                           # tokens 1..44
    # one distillation happens before the last chunk (tokens 40..44): pot 44, keep 20
    policy = InfiniPot(catalyst_ids=CATALYST, use_cap=False)
    result = read_document(MODEL, ids, policy, pot_size=44, keep_size=20, chunk_size=10)
    assert result.distillations == 1
    kept = [t for t in kept_tokens(result) if t < 40]
    expected = sorted((nll[:39].topk(20).indices + 1).tolist())
    assert kept == expected
    # SirLLM: the 2 sinks and 4 newest, then the 14 most surprising of the rest
    result = read_document(MODEL, ids, SirLLM(n_sinks=2, n_recent=4), pot_size=44, keep_size=20,
                           chunk_size=10)
    kept = [t for t in kept_tokens(result) if t < 40]
    middle = nll[1:35].topk(14).indices + 2                            # tokens 2..35
    assert kept == sorted([0, 1, 36, 37, 38, 39, *middle.tolist()])


def test_cap_is_the_catalyst_attention_and_the_catalyst_leaves_no_trace():
    ids = tokens(40)
    cache = MODEL.new_cache()
    MODEL(ids, cache=cache)
    reference = cache.clone()
    out = MODEL(torch.tensor([CATALYST]), cache=reference, output_attentions=True)
    policy = InfiniPot(catalyst_ids=CATALYST, alpha=0.0)
    policy.prepare(MODEL, cache, 10, Observation(token_nll=torch.zeros(1, 40)))
    for layer, weights in out.attentions.items():
        expected = weights[..., :40].sum(dim=2).reshape(1, 2, 2, 40).sum(2)
        torch.testing.assert_close(policy._cap[layer], expected)
    assert cache.length == 40 and cache.seen_tokens == 40 and cache.next_position == 40


def test_infinipot_alpha_splits_the_budget_between_nuc_and_cap():
    ids = tokens(45)
    policy = InfiniPot(catalyst_ids=CATALYST, alpha=0.5)
    result = read_document(MODEL, ids, policy, pot_size=44, keep_size=20, chunk_size=10)
    nll = nuc_of(ids)[0, 1:]
    top_nuc = set((nll[:39].topk(10).indices + 1).tolist())
    for head in range(2):
        kept = {t for t in result.cache.token_index[0][0, head].tolist() if t < 40}
        assert top_nuc <= kept and len(kept) == 20


def test_infinipot_with_sinks_and_a_recent_window_fills_the_rest_with_its_own_rule():
    ids = tokens(45)
    policy = InfiniPot(catalyst_ids=CATALYST, use_cap=False, n_sinks=2, n_recent=6)
    result = read_document(MODEL, ids, policy, pot_size=44, keep_size=20, chunk_size=10)
    nll = nuc_of(ids)[0]
    # one distillation, before reading tokens 40-44: sinks 0-1, recent 34-39, then the 12 most
    # novel of tokens 2-33 (NuC only), then tokens 40-44 read after it
    top_nuc = set((nll[2:34].topk(12).indices + 2).tolist())
    for layer in range(MODEL.config.num_hidden_layers):
        for head in range(2):
            kept = set(result.cache.token_index[layer][0, head].tolist())
            assert {0, 1} | set(range(34, 45)) <= kept
            assert kept - {0, 1} - set(range(34, 45)) == top_nuc
    plain = read_document(MODEL, ids, InfiniPot(catalyst_ids=CATALYST, use_cap=False),
                          pot_size=44, keep_size=20, chunk_size=10)
    assert not set(range(34, 40)) <= set(plain.cache.token_index[0][0, 0].tolist())


@pytest.mark.parametrize("name, value", [("n_sinks", -1), ("n_recent", 2.5)])
def test_infinipot_refuses_a_bad_window(name, value):
    with pytest.raises(ValueError, match=name):
        InfiniPot(catalyst_ids=CATALYST, **{name: value})


def test_question_probe_hands_the_policy_the_questions_attention_and_leaves_no_trace():
    from minidecode.cache_policies import QuestionProbe

    ids, question = tokens(40), [11, 12, 13, 14]
    cache = MODEL.new_cache()
    MODEL(ids, cache=cache)
    reference = cache.clone()
    out = MODEL(torch.tensor([question]), cache=reference, output_attentions=True)
    probe = QuestionProbe(TOVA(), question)
    probe.prepare(MODEL, cache, 10, Observation(token_nll=torch.zeros(1, 40)))
    assert cache.length == 40 and cache.seen_tokens == 40 and cache.next_position == 40
    for layer in range(MODEL.config.num_hidden_layers):
        expected = out.attentions[layer][:, :, -1, :40].mean(dim=1, keepdim=True).expand(1, 2, 40)
        torch.testing.assert_close(probe.score(MODEL, cache, layer, Observation()), expected)
    assert probe.reserve == 4 and probe.name == "TOVA + question"
    # the reader leaves room for the probe: the pot is never exceeded, the probe included
    result = read_document(MODEL, tokens(120), QuestionProbe(SnapKV(window=4, kernel=3), question),
                           pot_size=40, keep_size=20, chunk_size=8)
    assert result.peak_entries <= 40 and result.distillations > 0


def test_question_probe_refuses_a_policy_without_attention_and_an_empty_question():
    from minidecode.cache_policies import QuestionProbe

    with pytest.raises(ValueError, match="policy"):
        QuestionProbe(StreamingLLM(), [1, 2])
    with pytest.raises(ValueError, match="question_ids"):
        QuestionProbe(TOVA(), [])


def test_answer_after_reading_generates_from_the_compressed_cache():
    ids = tokens(150)[0].tolist()
    generated, result = answer_after_reading(MODEL, ids[:140], ids[140:], StreamingLLM(),
                                             max_new_tokens=3, pot_size=48, keep_size=24,
                                             chunk_size=8)
    assert len(generated) == 3 and result.peak_entries <= 48


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize("kwargs, message", [
    (dict(pot_size=32, keep_size=32), "smaller than pot_size"),
    (dict(pot_size=32, keep_size=40), "smaller than pot_size"),
    (dict(pot_size=64, keep_size=2, policy=StreamingLLM(n_sinks=4)), "n_sinks"),
    (dict(pot_size=64, keep_size=32, chunk_size=40), "chunk_size"),
    (dict(pot_size=64, keep_size=32, chunk_size=0), "chunk_size"),
])
def test_bad_sizes_are_refused_with_the_parameter_named(kwargs, message):
    kwargs = {"policy": StreamingLLM(), "chunk_size": 8, **kwargs}
    with pytest.raises(ValueError, match=message):
        read_document(MODEL, tokens(10), **kwargs)


def test_bad_documents_and_policy_parameters_are_refused():
    with pytest.raises(ValueError, match="empty"):
        read_document(MODEL, torch.zeros(1, 0, dtype=torch.long), StreamingLLM())
    with pytest.raises(ValueError, match="empty"):
        answer_after_reading(MODEL, [], [1, 2], StreamingLLM())
    with pytest.raises(ValueError, match="alpha"):
        InfiniPot(catalyst_ids=CATALYST, alpha=1.5)
    with pytest.raises(ValueError, match="catalyst_ids"):
        InfiniPot(catalyst_ids=[])
    with pytest.raises(ValueError, match="n_recent"):
        H2O(n_recent=-1)
    with pytest.raises(ValueError, match="kernel"):
        SnapKV(kernel=4)


def test_a_policy_that_needs_attention_weights_refuses_a_model_without_them():
    class Opaque:
        def new_cache(self):
            return MODEL.new_cache()

    with pytest.raises(ValueError, match="needs attention weights"):
        read_document(Opaque(), tokens(10), H2O(), pot_size=32, keep_size=16, chunk_size=8)


@pytest.mark.parametrize("keep, alpha, use_cap, use_nuc", [
    (10, 0.5, True, True), (7, 0.25, True, True), (12, 0.0, True, True), (9, 1.0, True, True),
    (10, 0.5, False, True), (10, 0.5, True, False), (1, 0.5, True, True), (39, 0.5, True, True),
])
def test_infinipot_keeps_what_the_exercise_functions_choose(keep, alpha, use_cap, use_nuc):
    """The real policy (prepare + score + the shared compress) keeps exactly
    infinipot_keep(NuC by novelty_scores, CaP by catalyst_scores), computed here independently."""
    ids = tokens(40, seed=keep)
    cache = MODEL.new_cache()
    MODEL(ids, cache=cache)
    probe = cache.clone()
    catalyst = MODEL(torch.tensor([CATALYST]), cache=probe, output_attentions=True).attentions
    observation = Observation(token_nll=nuc_of(ids))
    policy = InfiniPot(catalyst_ids=CATALYST, alpha=alpha, use_cap=use_cap, use_nuc=use_nuc)
    policy.compress(MODEL, cache, keep, observation)
    share = alpha if use_cap and use_nuc else float(use_nuc)
    for layer in range(MODEL.config.num_hidden_layers):
        cap = catalyst_scores(catalyst[layer], 40, 2) if use_cap else torch.zeros(1, 2, 40)
        nuc = nuc_of(ids)[:, None].expand(1, 2, 40) if use_nuc else torch.zeros(1, 2, 40)
        expected = infinipot_keep(nuc, cap, keep, share)                 # entry = token index
        assert torch.equal(cache.token_index[layer], expected), (layer, keep, alpha)


def test_infinipot_score_marks_the_keep_set_and_top_entries_returns_it():
    ids = tokens(30)
    cache = MODEL.new_cache()
    MODEL(ids, cache=cache)
    policy = InfiniPot(catalyst_ids=CATALYST, alpha=0.5)
    observation = Observation(token_nll=nuc_of(ids))
    policy.prepare(MODEL, cache, 8, observation)
    scores = policy.score(MODEL, cache, 0, observation)                # (1, 2, 30)
    assert set(scores.unique().tolist()) == {0.0, 1.0}
    assert scores.sum(dim=-1).tolist() == [[8.0, 8.0]]
    kept = infinipot_keep(policy.nuc(cache, 0, observation), policy._cap[0], 8, 0.5)
    assert torch.equal(top_entries(scores, cache.token_index[0], 8), kept)


def test_context_reset_positions_are_ranks_in_stream_order():
    from minidecode.infinipot import context_reset_positions

    assert context_reset_positions(torch.tensor([[7, 3, 90, 12]])).tolist() == [[1, 0, 3, 2]]


# ------------------------------------------------------------- the shipped model, 8x its context
def test_infinipot_finds_the_needle_at_4x_the_context_where_streamingllm_and_random_do_not():
    """Held-out needle documents of 2,048 tokens (4x the trained 512) with held-out keys, pot 512,
    kept 256, a generic catalyst (the question without its key). InfiniPot keeps the code and the
    main model answers it; with StreamingLLM's or a random keep-set the code is gone and so is the
    answer."""
    import random

    import minidecode
    from minidecode import tinyworld as tw
    from minidecode.cache_policies import CachePolicy
    from minidecode.infinipot import needle_example, needle_found, needle_kept
    from minidecode.tinyworld.evaluate import HELD_OUT_SEED

    class RandomChoice(CachePolicy):
        def __init__(self, seed: int):
            self.generator = torch.Generator().manual_seed(seed)

        def score(self, model, cache, layer, observation):
            return torch.rand(cache.token_index[layer].shape, generator=self.generator)

    model, tokenizer = minidecode.load("main")
    catalyst = tokenizer.encode("\nQ: What is the code of the").ids
    rng = random.Random(HELD_OUT_SEED)
    found = {"InfiniPot": 0, "StreamingLLM": 0, "random": 0}
    kept = {"InfiniPot": 0.0, "StreamingLLM": 0.0, "random": 0.0}
    for depth in (0.1, 0.4, 0.7):  # deeper would sit in StreamingLLM's recent window
        ex = needle_example(tokenizer, 2048, depth, rng, keys=tw.HELD_OUT_KEYS, style="code_of")
        for name, policy in [("InfiniPot", InfiniPot(catalyst_ids=catalyst)),
                             ("StreamingLLM", StreamingLLM()), ("random", RandomChoice(0))]:
            generated, result = answer_after_reading(
                model, ex.document_ids, ex.question_ids, policy, max_new_tokens=3,
                pot_size=512, keep_size=256, chunk_size=128)
            kept[name] += needle_kept(result.cache, ex.code_positions) / 3
            found[name] += needle_found(tokenizer, generated, ex.code)
    assert kept["InfiniPot"] >= 0.6 and max(kept["StreamingLLM"], kept["random"]) <= 0.25, kept
    assert found["InfiniPot"] >= 2, found
    assert found["StreamingLLM"] == 0 and found["random"] == 0, found


# ------------------------------------------------------------------ graded exercises 09.x
def _nuc_without_shift(logits, input_ids):              # scores token t with logits t, not t - 1
    log_probs = torch.log_softmax(logits.float(), dim=-1)
    return -log_probs.gather(-1, input_ids[..., None])[..., 0]


def _cap_with_mean_over_group(weights, context_length, num_kv_heads):
    batch, heads = weights.shape[:2]
    on_context = weights[..., :context_length].sum(dim=2)
    return on_context.reshape(batch, num_kv_heads, heads // num_kv_heads, -1).mean(dim=2)


def _keep_without_exclusion(nuc, cap, keep, alpha):     # an entry may be chosen twice
    n_nuc = round(alpha * keep)
    both = torch.cat([nuc.topk(n_nuc, dim=-1).indices, cap.topk(keep - n_nuc, dim=-1).indices], -1)
    return both.sort(dim=-1).values


def _order_instead_of_rank(token_index):                 # argsort once: an order, not a rank
    return token_index.argsort(dim=-1)


@pytest.mark.parametrize("exercise_id, name, wrong", [
    ("09.1", "novelty_scores", _nuc_without_shift),
    ("09.2", "catalyst_scores", _cap_with_mean_over_group),
    ("09.3", "infinipot_keep", _keep_without_exclusion),
    ("09.4", "context_reset_positions", _order_instead_of_rank),
])
def test_chapter_09_checks_fail_on_the_stub_and_on_a_typical_mistake(exercise_id, name, wrong,
                                                                     check_rejects):
    check_rejects(exercise_id, name, wrong)


def test_needle_documents_with_distractors_point_at_the_needles_code():
    import random

    import minidecode
    from minidecode.infinipot import needle_example

    tokenizer = minidecode.load("main")[1]
    ex = needle_example(tokenizer, 300, 0.5, random.Random(3), style="code_of", n_facts=3)
    text = tokenizer.decode(ex.document_ids)
    assert text.count("The code of the") == 3
    assert tokenizer.decode([ex.document_ids[i] for i in ex.code_positions]).strip() == ex.code
    key = tokenizer.decode(ex.question_ids).split("code of the ")[1].split("?")[0]
    assert f"The code of the {key} is {ex.code}." in text
    with pytest.raises(ValueError, match="n_facts"):
        needle_example(tokenizer, 300, 0.5, random.Random(3), n_facts=0)
