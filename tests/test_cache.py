"""The KV cache: decoding with it equals recomputing, crop, keep, set_positions, bookkeeping."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from minidecode.generate import generate
from minidecode.model import ModelConfig, Transformer

VOCAB = 200


def make_model(seed: int = 0, layers: int = 3) -> Transformer:
    torch.manual_seed(seed)
    model = Transformer(ModelConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=128,
                                    num_hidden_layers=layers, num_attention_heads=8,
                                    num_key_value_heads=2, max_position_embeddings=512,
                                    tie_word_embeddings=False)).eval()
    with torch.no_grad():  # larger weights: attention far from uniform, greedy paths diverse
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.1)
    return model


MODEL = make_model()


@torch.no_grad()
def test_cached_decoding_equals_recomputing():
    torch.manual_seed(1)
    tokens = torch.randint(0, VOCAB, (2, 40))
    full = MODEL(tokens).logits                                   # (2, 40, vocab), no cache
    cache = MODEL.new_cache()
    chunks = [MODEL(tokens[:, :10], cache).logits, MODEL(tokens[:, 10:17], cache).logits]
    chunks += [MODEL(tokens[:, i:i + 1], cache).logits for i in range(17, 40)]
    torch.testing.assert_close(torch.cat(chunks, dim=1), full, atol=1e-5, rtol=0)
    assert len(cache) == cache.seen_tokens == cache.next_position == 40


@torch.no_grad()
def test_greedy_with_cache_equals_greedy_without():
    torch.manual_seed(2)
    prompt = torch.randint(0, VOCAB, (1, 8))
    with_cache = generate(MODEL, prompt, 40)
    tokens = prompt
    for _ in range(40):  # recompute the whole sequence at every step
        logits = MODEL(tokens).logits[:, -1]
        tokens = torch.cat([tokens, logits.argmax(-1, keepdim=True)], dim=1)
    assert with_cache.tolist() == tokens.tolist()


@torch.no_grad()
def test_crop_then_continue_equals_never_going_past():
    torch.manual_seed(3)
    tokens = torch.randint(0, VOCAB, (2, 30))
    rolled_back = MODEL.new_cache()
    MODEL(tokens[:, :20], rolled_back)
    MODEL(torch.randint(0, VOCAB, (2, 6)), rolled_back)        # draft tokens, later rejected
    rolled_back.crop(20)
    assert len(rolled_back) == rolled_back.seen_tokens == rolled_back.next_position == 20
    straight = MODEL.new_cache()
    MODEL(tokens[:, :20], straight)
    got = MODEL(tokens[:, 20:], rolled_back).logits
    expected = MODEL(tokens[:, 20:], straight).logits
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)
    for layer in range(MODEL.config.num_hidden_layers):
        torch.testing.assert_close(rolled_back.keys[layer], straight.keys[layer])
        assert torch.equal(rolled_back.positions[layer], straight.positions[layer])


@torch.no_grad()
def test_keep_everything_and_same_positions_changes_nothing():
    torch.manual_seed(4)
    tokens = torch.randint(0, VOCAB, (2, 25))
    reference = MODEL.new_cache()
    MODEL(tokens[:, :20], reference)
    edited = reference.clone()
    for layer in range(edited.num_layers):
        everything = torch.arange(20).expand(2, 2, 20)
        edited.keep(layer, everything)
        edited.set_positions(layer, edited.positions[layer].clone())
    expected = MODEL(tokens[:, 20:], reference).logits
    got = MODEL(tokens[:, 20:], edited).logits
    assert torch.equal(got, expected)


@pytest.mark.parametrize("shift", [37, -11])
@torch.no_grad()
def test_shifting_all_positions_changes_no_logit(shift):
    """RoPE is relative: moving every cached and every new position by a constant is a no-op."""
    torch.manual_seed(5)
    tokens = torch.randint(0, VOCAB, (2, 30))
    reference = MODEL.new_cache()
    MODEL(tokens[:, :20], reference)
    shifted = reference.clone()
    for layer in range(shifted.num_layers):
        shifted.set_positions(layer, shifted.positions[layer] + shift + 11)
    assert shifted.next_position == 20 + shift + 11
    expected = MODEL(tokens[:, 20:], reference).logits
    got = MODEL(tokens[:, 20:], shifted).logits                 # positions continue from 20+shift
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)


@torch.no_grad()
def test_context_reset_positions_continue_after_the_new_maximum():
    cache = MODEL.new_cache()
    MODEL(torch.randint(0, VOCAB, (1, 30)), cache)
    for layer in range(cache.num_layers):
        recent = torch.arange(20, 30).expand(1, 2, 10)
        cache.keep(layer, recent)
        cache.set_positions(layer, torch.arange(10).expand(1, 2, 10))
    assert (len(cache), cache.seen_tokens, cache.next_position) == (10, 30, 10)
    MODEL(torch.randint(0, VOCAB, (1, 2)), cache)
    assert cache.positions[1][0, 0, -2:].tolist() == [10, 11]


def _kept_vs_masked(seed: int, n_keep: int, new_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits of new tokens with (a) a cache compressed by per-layer, per-head keep() and (b) the
    full cache with an attention pattern hiding the dropped entries from the heads that dropped
    them."""
    generator = torch.Generator().manual_seed(seed)
    prefix, batch, kv_heads = 24, 2, 2
    group = MODEL.config.num_attention_heads // kv_heads
    tokens = torch.randint(0, VOCAB, (batch, prefix + new_tokens), generator=generator)
    full = MODEL.new_cache()
    MODEL(tokens[:, :prefix], full)
    compressed = full.clone()
    visible = torch.ones(MODEL.config.num_hidden_layers, batch, kv_heads, 512, dtype=torch.bool)
    for layer in range(compressed.num_layers):
        indices = torch.rand(batch, kv_heads, prefix, generator=generator).argsort(-1)[..., :n_keep]
        compressed.keep(layer, indices)                          # random order on purpose
        visible[layer, :, :, :prefix] = False
        visible[layer].scatter_(2, indices, True)                # positions == indices here

    def hide_dropped(layer, q_positions, k_positions):
        table = visible[layer].repeat_interleave(group, dim=1)   # (batch, heads, 512)
        allowed = table.gather(2, k_positions)                   # (batch, heads, k)
        return allowed[:, :, None, :]

    kept = MODEL(tokens[:, prefix:], compressed).logits
    masked = MODEL(tokens[:, prefix:], full, attention_pattern=hide_dropped).logits
    return kept, masked


@torch.no_grad()
def test_keep_per_head_subsets_equals_masking_those_entries():
    kept, masked = _kept_vs_masked(seed=6, n_keep=9, new_tokens=5)
    torch.testing.assert_close(kept, masked, atol=1e-5, rtol=0)


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 10_000), n_keep=st.integers(1, 24), new_tokens=st.integers(1, 4))
@torch.no_grad()
def test_keep_equals_masking_property(seed, n_keep, new_tokens):
    kept, masked = _kept_vs_masked(seed, n_keep, new_tokens)
    torch.testing.assert_close(kept, masked, atol=1e-5, rtol=0)


@torch.no_grad()
def test_layers_may_keep_different_amounts():
    cache = MODEL.new_cache()
    MODEL(torch.randint(0, VOCAB, (1, 16)), cache)
    cache.keep(1, torch.arange(4).expand(1, 2, 4))
    assert [cache.layer_length(i) for i in range(3)] == [16, 4, 16]
    out = MODEL(torch.randint(0, VOCAB, (1, 3)), cache, output_attentions=[1])
    assert out.attentions[1].shape == (1, 8, 3, 7)
    assert [cache.layer_length(i) for i in range(3)] == [19, 7, 19]


@torch.no_grad()
def test_bookkeeping_nbytes_clone_and_errors():
    cache = MODEL.new_cache()
    assert len(cache) == 0 and cache.nbytes() == 0
    MODEL(torch.randint(0, VOCAB, (2, 10)), cache)
    head_dim = MODEL.config.head_dim
    assert cache.nbytes() == 3 * 2 * (2 * 2 * 10 * head_dim) * 4  # layers * (k, v) * elems * fp32
    assert cache.keys[0].shape == (2, 2, 10, head_dim)
    assert cache.positions[0].shape == (2, 2, 10) and cache.positions[0].dtype == torch.long
    copy = cache.clone()
    copy.crop(3)
    assert len(copy) == 3 and len(cache) == 10
    with pytest.raises(ValueError, match=r"length must be an int in \[0, 10\]"):
        cache.crop(11)
    with pytest.raises(ValueError, match=r"indices must have shape \(2, 2, n_keep\)"):
        cache.keep(0, torch.arange(3).expand(2, 3))
    with pytest.raises(ValueError, match=r"indices must lie in \[0, 9\]"):
        cache.keep(0, torch.full((2, 2, 1), 10))
    with pytest.raises(ValueError, match=r"layer must be in \[0, 2\]"):
        cache.keep(3, torch.zeros(2, 2, 1, dtype=torch.long))
    with pytest.raises(ValueError, match="cannot broadcast"):
        cache.set_positions(0, torch.zeros(2, 3, 10, dtype=torch.long))
    with pytest.raises(ValueError, match="batch size 1"):
        MODEL(torch.zeros(1, 1, dtype=torch.long), cache)
    cache.crop(0)
    assert (len(cache), cache.seen_tokens, cache.next_position, cache.nbytes()) == (0, 0, 0, 0)


@torch.no_grad()
def test_token_index_follows_append_crop_keep_and_position_resets():
    cache = MODEL.new_cache()
    MODEL(torch.randint(0, VOCAB, (1, 6)), cache)
    MODEL(torch.randint(0, VOCAB, (1, 4)), cache)
    for layer in range(3):
        assert cache.token_index[layer][0, 0].tolist() == list(range(10))
    cache.crop(8)                                       # a rollback forgets tokens 8 and 9
    MODEL(torch.randint(0, VOCAB, (1, 2)), cache)       # ... so the next tokens reuse 8, 9
    assert cache.token_index[2][0, 1].tolist() == list(range(10))
    cache.keep(0, torch.tensor([[[1, 4, 9], [0, 2, 3]]]))
    assert cache.token_index[0][0].tolist() == [[1, 4, 9], [0, 2, 3]]
    cache.set_positions(0, torch.arange(3))             # positions change, the token ids do not
    assert cache.token_index[0][0].tolist() == [[1, 4, 9], [0, 2, 3]]
    assert cache.clone().token_index[0][0, 0].tolist() == [1, 4, 9]
