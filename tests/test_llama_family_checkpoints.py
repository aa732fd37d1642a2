"""minidecode's own Transformer reads Llama-family checkpoints as transformers writes them.

- sharded safetensors (model.safetensors.index.json + shards) load to the same logits;
- Qwen2 (biases on q, k, v) loads, and minidecode writes such a model back as a Qwen2 checkpoint;
- Llama 3.1's RoPE scaling (rope_type "llama3") gives transformers' logits, beyond the original
  context too, and the cache re-rotates keys with the same scaled frequencies;
- what minidecode does not implement is refused by name.

Every model is random (seeded, 2 layers, hidden 64); weights use std 0.2 and biases are drawn
non-zero, so that a missing bias or an unscaled frequency changes the logits.
"""

from __future__ import annotations

import json

import pytest
import torch
from transformers import (
    AutoModelForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from minidecode.checkpoint import config_from_hf, load_pretrained, save_pretrained
from minidecode.model import ModelConfig
from minidecode.rope import Llama3RopeScaling

VOCAB = 96
LLAMA3_ROPE = {"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0,
               "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 32}


def sizes(**extra) -> dict:
    return {"vocab_size": VOCAB, "hidden_size": 64, "intermediate_size": 128,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
            "max_position_embeddings": 128, "initializer_range": 0.2, "tie_word_embeddings": False,
            **extra}


def random_model(model_class, config):
    torch.manual_seed(0)
    model = model_class(config).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith(".bias"):          # transformers starts biases at zero
                param.normal_(0.0, 0.5)
    return model


def tokens(length: int = 20) -> torch.Tensor:
    return torch.randint(0, VOCAB, (2, length), generator=torch.Generator().manual_seed(1))


@torch.no_grad()
def assert_same_logits(ours, theirs, input_ids: torch.Tensor) -> None:
    torch.testing.assert_close(ours(input_ids).logits, theirs(input_ids).logits,
                               atol=1e-4, rtol=1e-4)


# --------------------------------------------------------------------------- shards
def test_sharded_checkpoint_loads(tmp_path):
    theirs = random_model(LlamaForCausalLM, LlamaConfig(**sizes()))
    theirs.save_pretrained(tmp_path, max_shard_size="200KB")
    shards = sorted(p.name for p in tmp_path.glob("model-*.safetensors"))
    assert len(shards) >= 2 and not (tmp_path / "model.safetensors").exists()
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert sorted(set(index["weight_map"].values())) == shards
    ours, _ = load_pretrained(tmp_path)
    assert_same_logits(ours, theirs, tokens())


# --------------------------------------------------------------------------- Qwen2 biases
def test_qwen2_attention_biases_load(tmp_path):
    theirs = random_model(Qwen2ForCausalLM, Qwen2Config(**sizes()))
    theirs.save_pretrained(tmp_path)
    ours, _ = load_pretrained(tmp_path)
    assert ours.config.attention_bias
    assert ours.layers[0].self_attn.q_proj.bias is not None
    assert ours.layers[0].self_attn.o_proj.bias is None
    assert_same_logits(ours, theirs, tokens())
    with torch.no_grad():                       # the biases are really used
        ours.layers[0].self_attn.k_proj.bias.zero_()
        assert not torch.allclose(ours(tokens()).logits, theirs(tokens()).logits, atol=1e-3)


def test_minidecode_writes_biased_attention_as_qwen2(tmp_path):
    theirs = random_model(Qwen2ForCausalLM, Qwen2Config(**sizes()))
    theirs.save_pretrained(tmp_path / "original")
    ours, _ = load_pretrained(tmp_path / "original")
    save_pretrained(ours, tmp_path / "copy")
    assert json.loads((tmp_path / "copy" / "config.json").read_text())["model_type"] == "qwen2"
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "copy").eval()
    assert isinstance(reloaded, Qwen2ForCausalLM)
    assert_same_logits(ours, reloaded, tokens())


# --------------------------------------------------------------------------- Llama 3 RoPE
def test_llama3_rope_scaling_matches_transformers(tmp_path):
    """100 tokens, past the original 32-token context the scaling is about."""
    theirs = random_model(LlamaForCausalLM, LlamaConfig(**sizes(rope_parameters=LLAMA3_ROPE)))
    theirs.save_pretrained(tmp_path)
    ours, _ = load_pretrained(tmp_path)
    assert ours.config.rope_scaling == Llama3RopeScaling(8.0, 1.0, 4.0, 32)
    assert_same_logits(ours, theirs, tokens(100))
    unscaled = json.loads((tmp_path / "config.json").read_text())
    unscaled["rope_parameters"] = {"rope_type": "default", "rope_theta": 10000.0}
    (tmp_path / "config.json").write_text(json.dumps(unscaled))
    plain, _ = load_pretrained(tmp_path)
    with torch.no_grad():                        # the scaling really changes the model
        assert not torch.allclose(plain(tokens(100)).logits, theirs(tokens(100)).logits,
                                  atol=1e-3)


def test_transformers_4_style_llama3_rope_scaling_is_read():
    hf = {"model_type": "llama", "vocab_size": VOCAB, "hidden_size": 64,
          "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
          "rope_theta": 500000.0, "rope_scaling": {k: v for k, v in LLAMA3_ROPE.items()
                                                   if k != "rope_theta"}}
    config = config_from_hf(hf)
    assert config.rope_theta == 500000.0
    assert config.rope_scaling == Llama3RopeScaling(8.0, 1.0, 4.0, 32)


@torch.no_grad()
def test_cache_re_rotation_uses_the_scaled_frequencies(tmp_path):
    """set_positions(p + 7) on a cache filled at positions p gives the keys of a run at p + 7
    (RoPE is relative, so every layer's hidden states are the same in both runs)."""
    theirs = random_model(LlamaForCausalLM, LlamaConfig(**sizes(rope_parameters=LLAMA3_ROPE)))
    theirs.save_pretrained(tmp_path)
    ours, _ = load_pretrained(tmp_path)
    ids = tokens(40)
    moved, shifted = ours.new_cache(), ours.new_cache()
    ours(ids, moved)
    ours(ids, shifted, positions=torch.arange(40) + 7)
    for layer in range(ours.config.num_hidden_layers):
        moved.set_positions(layer, moved.positions[layer] + 7)
        torch.testing.assert_close(moved.keys[layer], shifted.keys[layer], atol=1e-4, rtol=1e-4)


# --------------------------------------------------------------------------- refusals
def base_config(**changes) -> dict:
    config = {"model_type": "llama", "vocab_size": VOCAB, "hidden_size": 64,
              "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4}
    config.update(changes)
    return config


@pytest.mark.parametrize(("changes", "named"), [
    ({"rope_parameters": {"rope_type": "yarn", "rope_theta": 1e4, "factor": 4.0}},
     "rope_parameters"),
    ({"rope_scaling": {"type": "linear", "factor": 2.0}}, "rope_scaling"),
    ({"rope_parameters": {**LLAMA3_ROPE, "factor": None, "extra": 1}}, "rope_parameters"),
    ({"attention_bias": True}, "attention_bias"),       # a Llama bias on o_proj as well
    ({"model_type": "qwen2", "use_sliding_window": True, "sliding_window": 16},
     "use_sliding_window"),
    ({"model_type": "mistral", "sliding_window": 16}, "model_type"),
    ({"layer_types": ["full_attention", "sliding_attention"]}, "layer_types"),
])
def test_what_minidecode_does_not_implement_is_refused_by_name(changes, named):
    with pytest.raises(ValueError, match=f"does not support.*{named}"):
        config_from_hf(base_config(**changes))


def test_bad_rope_scaling_values_are_refused():
    with pytest.raises(ValueError, match="factor >= 1"):
        Llama3RopeScaling(factor=0.5, low_freq_factor=1.0, high_freq_factor=4.0,
                          original_max_position_embeddings=32)
    with pytest.raises(ValueError, match="rope_scaling must be None or a Llama3RopeScaling"):
        ModelConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=128,
                    num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                    rope_scaling=8.0)
