"""minidecode's Transformer vs transformers' Llama; attention output, patterns, bad input."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from minidecode.checkpoint import load_pretrained
from minidecode.generate import generate
from minidecode.model import ModelConfig, Transformer

VOCAB = 320


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """A random transformers Llama (4 layers, 8 heads, 2 KV heads, untied head), saved and loaded
    back in minidecode: (hf_model, minidecode_model)."""
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=172,
                         num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=2,
                         max_position_embeddings=256, rms_norm_eps=1e-5, rope_theta=10000.0,
                         tie_word_embeddings=False, bos_token_id=None, eos_token_id=None,
                         pad_token_id=None)
    hf = LlamaForCausalLM(config).eval()
    # Larger weights than the 0.02 init, so that greedy decoding does not fall into a loop at once.
    with torch.no_grad():
        for p in hf.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.08)
    directory = tmp_path_factory.mktemp("hf_llama")
    hf.save_pretrained(directory)
    model, _ = load_pretrained(directory)
    return hf, model


def small_model(tie: bool = True, layers: int = 2, **overrides) -> Transformer:
    torch.manual_seed(1)
    config = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                  tie_word_embeddings=tie)
    config.update(overrides)
    return Transformer(ModelConfig(**config)).eval()


def test_logits_match_transformers(pair):
    hf, model = pair
    torch.manual_seed(2)
    input_ids = torch.randint(0, VOCAB, (3, 40))
    with torch.no_grad():
        expected = hf(input_ids).logits
        got = model(input_ids).logits
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_greedy_64_tokens_matches_transformers_generate(pair):
    hf, model = pair
    torch.manual_seed(3)
    prompt = torch.randint(0, VOCAB, (1, 12))
    expected = hf.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=False,
                           max_new_tokens=64, min_new_tokens=64)
    got = generate(model, prompt, max_new_tokens=64)
    assert got.shape == (1, 12 + 64)
    assert got.tolist() == expected.tolist()
    assert len(set(got[0, 12:].tolist())) > 8  # a real continuation, not one repeated token


def test_allow_all_pattern_reproduces_unmasked_model():
    model = small_model()
    input_ids = torch.randint(0, VOCAB, (2, 20))

    def allow_all(layer, q_positions, k_positions):
        return torch.ones(q_positions.shape[:2] + (q_positions.shape[2], k_positions.shape[2]),
                          dtype=torch.bool)

    with torch.no_grad():
        plain = model(input_ids).logits
        patterned = model(input_ids, attention_pattern=allow_all).logits
    torch.testing.assert_close(patterned, plain, atol=1e-6, rtol=0)


def test_output_attentions_for_chosen_layers():
    model = small_model(layers=3)
    input_ids = torch.randint(0, VOCAB, (2, 10))
    with torch.no_grad():
        out = model(input_ids, output_attentions=[0, 2])
        plain = model(input_ids).logits
    assert sorted(out.attentions) == [0, 2]
    weights = out.attentions[2]
    assert weights.shape == (2, 4, 10, 10)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 4, 10))
    assert torch.all(weights.triu(diagonal=1) == 0)  # causal
    torch.testing.assert_close(out.logits, plain, atol=1e-5, rtol=0)
    assert sorted(model(input_ids, output_attentions=True).attentions) == [0, 1, 2]


def test_per_head_pattern_masks_only_its_head():
    """A sliding window of 3 on head 1 only: head 1's weights vanish outside the window."""
    model = small_model()
    input_ids = torch.randint(0, VOCAB, (1, 12))

    def window_on_head_1(layer, q_positions, k_positions):
        local = (q_positions[..., :, None] - k_positions[..., None, :]) < 3     # (B, H, q, k)
        head = torch.arange(q_positions.shape[1])[None, :, None, None]
        return local | (head != 1)

    with torch.no_grad():
        out = model(input_ids, attention_pattern=window_on_head_1, output_attentions=True)
        plain = model(input_ids, output_attentions=True)
    distance = torch.arange(12)[:, None] - torch.arange(12)[None, :]
    assert torch.all(out.attentions[0][0, 1][distance >= 3] == 0)
    assert not torch.all(plain.attentions[0][0, 1][distance >= 3] == 0)
    torch.testing.assert_close(out.attentions[0][:, 0], plain.attentions[0][:, 0])
    assert not torch.allclose(out.logits, plain.logits)


def test_training_step_and_parameter_count():
    model = small_model(tie=True).train()
    config = model.config
    per_layer = (2 * config.hidden_size * config.hidden_size            # q, o
                 + 2 * config.hidden_size * 2 * config.head_dim       # k, v (2 KV heads)
                 + 3 * config.hidden_size * config.intermediate_size  # gate, up, down
                 + 2 * config.hidden_size)                            # two norms
    expected = VOCAB * 64 + 2 * per_layer + 64
    assert model.num_parameters() == expected
    assert model.num_parameters(exclude_embeddings=True) == expected - VOCAB * 64
    assert small_model(tie=False).num_parameters() == expected + VOCAB * 64
    input_ids = torch.randint(0, VOCAB, (2, 16))
    logits = model(input_ids).logits
    loss = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1),
                                             input_ids[:, 1:].flatten())
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())
    assert abs(loss.item() - torch.log(torch.tensor(float(VOCAB))).item()) < 0.5  # small init


def test_bf16_autocast_path_runs():
    model = small_model()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(torch.randint(0, VOCAB, (2, 8))).logits
    assert logits.shape == (2, 8, VOCAB) and torch.isfinite(logits.float()).all()


# ------------------------------------------------------------------------- bad input
def test_out_of_vocab_ids_are_named():
    model = small_model()
    with pytest.raises(ValueError, match=r"outside the vocabulary \[0, 319\].*\[320\]"):
        model(torch.tensor([[1, 2, VOCAB]]))
    with pytest.raises(ValueError, match="outside the vocabulary"):
        model(torch.tensor([[-1, 2]]))


def test_empty_prompt():
    model = small_model()
    with pytest.raises(ValueError, match="empty"):
        model(torch.zeros(1, 0, dtype=torch.long))
    with pytest.raises(ValueError, match="empty"):
        generate(model, torch.zeros(1, 0, dtype=torch.long), 5)


def test_too_long_prompt_without_cache_policy():
    model = small_model()  # max_position_embeddings=64
    model(torch.zeros(1, 64, dtype=torch.long))
    with pytest.raises(ValueError, match="max_position_embeddings=64.*too long"):
        model(torch.zeros(1, 65, dtype=torch.long))
    cache = model.new_cache()
    model(torch.zeros(1, 60, dtype=torch.long), cache)
    with pytest.raises(ValueError, match="position 64 is beyond max_position_embeddings=64"):
        model(torch.zeros(1, 5, dtype=torch.long), cache)


def test_cache_from_another_model_is_rejected():
    model, other = small_model(), small_model(layers=3)
    cache = other.new_cache()
    with pytest.raises(ValueError, match="another model"):
        model(torch.zeros(1, 3, dtype=torch.long), cache)
    same_shapes = small_model(rope_theta=500.0).new_cache()
    with pytest.raises(ValueError, match="another model"):
        model(torch.zeros(1, 3, dtype=torch.long), same_shapes)
    with pytest.raises(ValueError, match="KVCache"):
        model(torch.zeros(1, 3, dtype=torch.long), cache={})


def test_bad_config_and_arguments():
    with pytest.raises(ValueError, match="num_key_value_heads"):
        ModelConfig(vocab_size=10, hidden_size=64, intermediate_size=64, num_hidden_layers=1,
                    num_attention_heads=4, num_key_value_heads=3)
    model = small_model()
    with pytest.raises(ValueError, match="output_attentions layer ids"):
        model(torch.zeros(1, 3, dtype=torch.long), output_attentions=[5])
    with pytest.raises(ValueError, match="positions must be"):
        model(torch.zeros(1, 3, dtype=torch.long), positions=torch.arange(4))
