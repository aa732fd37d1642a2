"""The decode loop, on minidecode's Transformer and on a wrapped transformers model."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, TopKLogitsWarper

from minidecode.checkpoint import load_pretrained
from minidecode.generate import generate, greedy, sample
from minidecode.hf_adapter import Cache, HFModel, LanguageModel

VOCAB = 150


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """(minidecode Transformer, HFModel) holding the same random weights."""
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=128, rms_norm_eps=1e-5,
                         tie_word_embeddings=True, bos_token_id=None, eos_token_id=None,
                         pad_token_id=None)
    hf = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        for p in hf.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.1)
    directory = tmp_path_factory.mktemp("tiny")
    hf.save_pretrained(directory)
    return load_pretrained(directory)[0], HFModel(hf)


def test_both_models_follow_the_interface(models):
    ours, theirs = models
    for model in (ours, theirs):
        assert isinstance(model, LanguageModel) and model.vocab_size == VOCAB
        assert isinstance(model.new_cache(), Cache)


def test_greedy_is_identical_on_both_models(models):
    ours, theirs = models
    prompt = torch.randint(0, VOCAB, (2, 6), generator=torch.Generator().manual_seed(1))
    assert greedy(ours, prompt, 30).tolist() == greedy(theirs, prompt, 30).tolist()


@torch.no_grad()
def test_hf_cache_decoding_and_crop(models):
    _, theirs = models
    tokens = torch.randint(0, VOCAB, (1, 20), generator=torch.Generator().manual_seed(2))
    full = theirs(tokens).logits
    cache = theirs.new_cache()
    theirs(tokens[:, :12], cache)
    theirs(torch.randint(0, VOCAB, (1, 4)), cache)                     # rejected draft
    cache.crop(12)
    assert len(cache) == cache.seen_tokens == 12
    torch.testing.assert_close(theirs(tokens[:, 12:], cache).logits, full[:, 12:], atol=1e-5,
                               rtol=0)


def test_seeded_sampling_is_reproducible_and_processors_apply(models):
    ours, _ = models
    prompt = torch.randint(0, VOCAB, (2, 5), generator=torch.Generator().manual_seed(3))
    first = sample(ours, prompt, 25, temperature=1.5, seed=7)
    again = sample(ours, prompt, 25, temperature=1.5, seed=7)
    other = sample(ours, prompt, 25, temperature=1.5, seed=8)
    assert first.tolist() == again.tolist() and first.tolist() != other.tolist()

    def ban_even(input_ids, scores):
        scores = scores.clone()
        scores[:, ::2] = float("-inf")
        return scores

    banned = generate(ours, prompt, 25, do_sample=True, logits_processors=[ban_even],
                      generator=torch.Generator().manual_seed(0))
    assert all(t % 2 == 1 for t in banned[:, 5:].flatten().tolist())
    top1 = generate(ours, prompt, 10, do_sample=True, logits_processors=[TopKLogitsWarper(1)],
                    generator=torch.Generator().manual_seed(0))
    assert top1.tolist() == greedy(ours, prompt, 10).tolist()  # transformers' processors work


def test_eos_stops_and_pads(models):
    ours, _ = models
    prompt = torch.randint(0, VOCAB, (2, 5), generator=torch.Generator().manual_seed(4))
    free = greedy(ours, prompt, 20)
    eos = int(free[0, 8])                       # the 4th new token of row 0 becomes "eos"
    stopped = greedy(ours, prompt, 20, eos_token_id=eos)
    row0 = stopped[0, 5:].tolist()
    assert row0[: row0.index(eos) + 1] == free[0, 5:5 + row0.index(eos) + 1].tolist()
    assert all(t == eos for t in row0[row0.index(eos):])
    if eos not in free[1, 5:].tolist():
        assert stopped.shape == free.shape     # row 1 never finishes: all 20 tokens


def test_generate_with_a_prefilled_cache(models):
    ours, theirs = models
    prompt = torch.randint(0, VOCAB, (1, 10), generator=torch.Generator().manual_seed(5))
    for model in (ours, theirs):
        cache = model.new_cache()
        model(prompt[:, :7], cache)              # shared prefix, computed once
        assert generate(model, prompt, 15, cache=cache).tolist() == \
            generate(model, prompt, 15).tolist()
        assert cache.seen_tokens == 10 + 15 - 1


def test_bad_arguments(models):
    ours, theirs = models
    prompt = torch.zeros(1, 3, dtype=torch.long)
    with pytest.raises(ValueError, match="empty"):
        generate(theirs, torch.zeros(1, 0, dtype=torch.long), 3)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        generate(ours, prompt, 3, do_sample=True, temperature=0.0)
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate(ours, prompt, -1)
    cache = ours.new_cache()
    ours(prompt, cache)
    with pytest.raises(ValueError, match="already holds 3 tokens"):
        generate(ours, prompt, 3, cache=cache)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        theirs(torch.tensor([[VOCAB]]))
    with pytest.raises(ValueError, match="HFCache"):
        theirs(prompt, ours.new_cache())
    with pytest.raises(ValueError, match="KVCache"):
        ours(prompt, theirs.new_cache())
