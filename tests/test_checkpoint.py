"""Checkpoint I/O in the Hugging Face format, both directions, and the errors it must give."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import AutoModelForCausalLM, AutoTokenizer

from minidecode import checkpoint
from minidecode.checkpoint import load, load_pretrained, save_pretrained
from minidecode.model import ModelConfig, Transformer

VOCAB = 120


def make_model(tie: bool) -> Transformer:
    torch.manual_seed(0)
    return Transformer(ModelConfig(vocab_size=VOCAB, hidden_size=48, intermediate_size=96,
                                   num_hidden_layers=2, num_attention_heads=6,
                                   num_key_value_heads=2, max_position_embeddings=128,
                                   rope_theta=5000.0, tie_word_embeddings=tie, bos_token_id=1,
                                   eos_token_id=2, pad_token_id=2)).eval()


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.BpeTrainer(vocab_size=60, special_tokens=["<unk>", "<s>", "</s>"])
    tok.train_from_iterator(["the cat sat on the mat", "a dog ate the hat"] * 20, trainer)
    return tok


@pytest.mark.parametrize("tie", [True, False])
@torch.no_grad()
def test_save_load_round_trip(tmp_path, tokenizer, tie):
    model = make_model(tie)
    save_pretrained(model, tmp_path, tokenizer=tokenizer, generation_config={"do_sample": False})
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["config.json", "generation_config.json", "model.safetensors",
                     "tokenizer.json", "tokenizer_config.json"]
    loaded, loaded_tokenizer = load(tmp_path)
    assert loaded.config == model.config
    assert (loaded.lm_head.weight is loaded.embed_tokens.weight) == tie
    input_ids = torch.randint(0, VOCAB, (2, 16))
    assert torch.equal(loaded(input_ids).logits, model(input_ids).logits)
    assert loaded_tokenizer.encode("the cat").ids == tokenizer.encode("the cat").ids
    weights = load_file(str(tmp_path / "model.safetensors"))
    assert "model.layers.1.self_attn.k_proj.weight" in weights and "model.norm.weight" in weights
    assert ("lm_head.weight" in weights) == (not tie)
    generation = json.loads((tmp_path / "generation_config.json").read_text())
    assert generation == {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 2,
                          "do_sample": False}


@pytest.mark.parametrize("tie", [True, False])
@torch.no_grad()
def test_transformers_loads_what_minidecode_saves(tmp_path, tokenizer, tie):
    model = make_model(tie)
    save_pretrained(model, tmp_path, tokenizer=tokenizer)
    hf = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert hf.config.model_type == "llama" and hf.config.num_key_value_heads == 2
    input_ids = torch.randint(0, VOCAB, (2, 16))
    torch.testing.assert_close(hf(input_ids).logits, model(input_ids).logits, atol=1e-5, rtol=0)
    hf_tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    assert hf_tokenizer.eos_token == "</s>" and hf_tokenizer.bos_token == "<s>"
    assert hf_tokenizer("the cat")["input_ids"] == tokenizer.encode("the cat").ids


def test_tokenizer_given_as_path_and_bf16_dtype(tmp_path, tokenizer):
    tokenizer.save(str(tmp_path / "tok.json"))
    model = make_model(tie=True).to(torch.bfloat16)
    save_pretrained(model, tmp_path / "ckpt", tokenizer=tmp_path / "tok.json")
    config = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert config["dtype"] == "bfloat16" and config["architectures"] == ["LlamaForCausalLM"]
    loaded, _ = load_pretrained(tmp_path / "ckpt", dtype=torch.bfloat16)
    assert loaded.embed_tokens.weight.dtype == torch.bfloat16
    assert torch.equal(loaded.layers[0].mlp.up_proj.weight, model.layers[0].mlp.up_proj.weight)


def _hf_style_config() -> dict:
    """A config.json as transformers 4.x wrote it for TinyLlama-style models."""
    return {"architectures": ["LlamaForCausalLM"], "attention_bias": False, "bos_token_id": 1,
            "eos_token_id": 2, "hidden_act": "silu", "hidden_size": 48,
            "initializer_range": 0.02, "intermediate_size": 96, "max_position_embeddings": 128,
            "model_type": "llama", "num_attention_heads": 6, "num_hidden_layers": 2,
            "num_key_value_heads": 2, "pretraining_tp": 1, "rms_norm_eps": 1e-5,
            "rope_scaling": None, "rope_theta": 5000.0, "tie_word_embeddings": False,
            "torch_dtype": "bfloat16", "transformers_version": "4.35.0", "use_cache": True,
            "vocab_size": VOCAB}


def test_transformers_4_style_config_is_understood():
    config = checkpoint.config_from_hf(_hf_style_config())
    assert config == ModelConfig(
        vocab_size=VOCAB, hidden_size=48, intermediate_size=96, num_hidden_layers=2,
        num_attention_heads=6, num_key_value_heads=2, max_position_embeddings=128,
        rope_theta=5000.0, tie_word_embeddings=False, bos_token_id=1, eos_token_id=2)


@pytest.mark.parametrize("key, value", [
    ("rope_scaling", {"type": "linear", "factor": 2.0}),
    ("attention_bias", True),
    ("mlp_bias", True),
    ("hidden_act", "gelu"),
    ("head_dim", 16),
    ("rope_parameters", {"rope_type": "llama3", "rope_theta": 5000.0, "factor": 8.0}),
    ("some_new_feature", 1),
])
def test_unsupported_config_keys_are_named(tmp_path, key, value):
    save_pretrained(make_model(tie=False), tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config[key] = value
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=f"does not support.*{key}"):
        load_pretrained(tmp_path)


def test_never_unpickles_and_checks_weights(tmp_path):
    save_pretrained(make_model(tie=False), tmp_path)
    (tmp_path / "model.safetensors").rename(tmp_path / "pytorch_model.bin")
    with pytest.raises(ValueError, match="never unpickles"):
        load_pretrained(tmp_path)
    save_pretrained(make_model(tie=True), tmp_path)   # tied weights, but config says untied
    config = json.loads((tmp_path / "config.json").read_text())
    config["tie_word_embeddings"] = False
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"missing \['lm_head.weight'\]"):
        load_pretrained(tmp_path)


def test_unknown_model_name_lists_the_shipped_ones():
    with pytest.raises(ValueError, match="shipped models"):
        load("no-such-model")


def test_earlier_model_names_load_the_main_pair():
    """"tiny-target" / "tiny-retriever" load the main model, "tiny-draft" its draft."""
    import minidecode

    main, _ = minidecode.load("main")
    draft, _ = minidecode.load("main-draft")
    for old, new in (("tiny-target", main), ("tiny-retriever", main), ("tiny-draft", draft)):
        model, tokenizer = minidecode.load(old)
        assert tokenizer is not None
        assert model.config == new.config
        for (name, a), (_, b) in zip(model.state_dict().items(), new.state_dict().items()):
            assert torch.equal(a, b), (old, name)
