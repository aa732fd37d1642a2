"""Checkpoints in the Hugging Face format: one directory that minidecode and transformers both load.

A directory holds::

    config.json              LlamaConfig fields (model_type "llama"; "qwen2" when the q, k, v
                             projections have biases)
    model.safetensors        weights under transformers' Llama names (or, as transformers
                             writes big models, model.safetensors.index.json + shards)
    tokenizer.json           a ``tokenizers`` tokenizer     (optional)
    tokenizer_config.json    tokenizer_class, special tokens
    generation_config.json   bos/eos/pad ids and default decoding settings

so ``transformers.AutoModelForCausalLM.from_pretrained(path)`` and
``minidecode.checkpoint.load(path)`` read the same files. Weight names are minidecode's module
names with ``model.`` in front (except ``lm_head.weight``, which is absent when the head is tied
to the embedding). No permutation is needed: minidecode's RoPE uses transformers' "rotate_half"
layout.

Only safetensors are read, never pickle (a ``.bin`` file can run arbitrary code when unpickled).
Beyond plain Llama, minidecode reads Qwen2's q/k/v biases and Llama 3.1's RoPE scaling
(``rope_type: "llama3"``). A config that needs something else (another RoPE scaling, MLP or
output biases, sliding windows, another activation, ...) is refused with a ``ValueError`` that
names the keys.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from minidecode.model import ModelConfig, Transformer
from minidecode.rope import Llama3RopeScaling

MODELS_DIR = Path(__file__).parent / "models"

# Keys that describe the file, not the network: read and ignored.
_METADATA_KEYS = {
    "architectures", "model_type", "transformers_version", "torch_dtype", "dtype", "_name_or_path",
    "initializer_range", "use_cache", "is_llama_config", "output_attentions",
    "output_hidden_states", "return_dict", "tokenizer_class",
}
# Qwen2's sliding-window keys, read and ignored while the window is off (use_sliding_window false).
_QWEN2_WINDOW_KEYS = {"sliding_window", "max_window_layers"}
# Keys whose value must be the one minidecode implements.
_REQUIRED_VALUES: dict[str, Any] = {
    "hidden_act": "silu", "attention_bias": False, "mlp_bias": False, "pretraining_tp": 1,
    "rope_interleaved": False, "attention_dropout": 0.0, "use_sliding_window": False,
    "use_mrope": False,
}
_LLAMA3_ROPE_KEYS = ("factor", "low_freq_factor", "high_freq_factor",
                     "original_max_position_embeddings")
_FIELDS = set(ModelConfig.__dataclass_fields__)


# ------------------------------------------------------------------------- config
def config_to_hf(config: ModelConfig, dtype: torch.dtype = torch.float32) -> dict[str, Any]:
    """ModelConfig -> the dict transformers writes to config.json for a LlamaForCausalLM."""
    import transformers

    dtype_name = str(dtype).removeprefix("torch.")
    rope: dict[str, Any] = {"rope_type": "default"}
    if config.rope_scaling is not None:
        rope = {"rope_type": "llama3", **dataclasses.asdict(config.rope_scaling)}
    hf = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": config.vocab_size,
        "hidden_size": config.hidden_size,
        "intermediate_size": config.intermediate_size,
        "num_hidden_layers": config.num_hidden_layers,
        "num_attention_heads": config.num_attention_heads,
        "num_key_value_heads": config.num_key_value_heads,
        "head_dim": config.head_dim,
        "max_position_embeddings": config.max_position_embeddings,
        "rms_norm_eps": config.rms_norm_eps,
        # transformers 4.x reads rope_theta and rope_scaling, 5.x rope_parameters
        "rope_theta": config.rope_theta,
        "rope_parameters": {"rope_theta": config.rope_theta, **rope},
        "rope_scaling": None if config.rope_scaling is None else rope,
        "tie_word_embeddings": config.tie_word_embeddings,
        "bos_token_id": config.bos_token_id,
        "eos_token_id": config.eos_token_id,
        "pad_token_id": config.pad_token_id,
        "hidden_act": "silu",
        "attention_bias": False,
        "attention_dropout": 0.0,
        "mlp_bias": False,
        "pretraining_tp": 1,
        "initializer_range": 0.02,
        "use_cache": True,
        "dtype": dtype_name,
        "torch_dtype": dtype_name,
        "transformers_version": transformers.__version__,
    }
    if config.attention_bias:  # Qwen2: biases on q, k, v (a Llama attention_bias biases o too)
        for key in ("attention_bias", "mlp_bias", "pretraining_tp"):
            del hf[key]
        hf.update({"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2",
                   "use_sliding_window": False, "sliding_window": None,
                   "max_window_layers": config.num_hidden_layers})
    return hf


def _rope_from_hf(hf: dict[str, Any], values: dict[str, Any], problems: list[str]) -> None:
    """Read RoPE's theta and scaling into ``values`` from transformers 5's ``rope_parameters``
    or 4's ``rope_theta`` + ``rope_scaling``; what cannot be honoured goes to ``problems``."""
    theta = (hf.get("rope_parameters") or {}).get("rope_theta")
    if theta is not None:
        values["rope_theta"] = theta
    key = "rope_scaling" if hf.get("rope_scaling") else "rope_parameters"
    scaling = {k: v for k, v in (hf.get(key) or {}).items() if k != "rope_theta"}
    old_name = scaling.pop("type", "default")         # transformers < 4.45 called it "type"
    rope_type = scaling.pop("rope_type", old_name)
    if rope_type == "default" and not scaling:
        return
    if rope_type == "llama3" and set(scaling) == set(_LLAMA3_ROPE_KEYS):
        values["rope_scaling"] = Llama3RopeScaling(**scaling)
        return
    problems.append(f"{key}={hf[key]!r} (minidecode supports plain RoPE and rope_type 'llama3' "
                    f"with the keys {list(_LLAMA3_ROPE_KEYS)})")


def config_from_hf(hf: dict[str, Any]) -> ModelConfig:
    """config.json dict -> ModelConfig, or a ValueError naming every key minidecode can't honour.

    model_type "llama" or "qwen2" (Qwen2 = Llama with q, k, v biases); RoPE plain or "llama3".
    """
    problems: list[str] = []
    model_type = hf.get("model_type", "llama")
    if model_type not in ("llama", "qwen2"):
        problems.append(f"model_type={model_type!r} (only 'llama' and 'qwen2' are supported)")
    for key, allowed in _REQUIRED_VALUES.items():
        if key in hf and hf[key] != allowed:
            problems.append(f"{key}={hf[key]!r} (minidecode supports only {allowed!r})")
    layer_types = hf.get("layer_types") or []
    if any(kind != "full_attention" for kind in layer_types):
        problems.append(f"layer_types={layer_types!r} (minidecode supports only full attention)")
    ignored = _QWEN2_WINDOW_KEYS if model_type == "qwen2" else set()
    if model_type != "qwen2" and hf.get("sliding_window") is not None:
        problems.append(f"sliding_window={hf['sliding_window']!r} (minidecode supports only None)")

    values = {key: hf[key] for key in _FIELDS if key in hf}
    values["attention_bias"] = model_type == "qwen2"
    values.pop("rope_scaling", None)
    _rope_from_hf(hf, values, problems)
    eos = values.get("eos_token_id")
    if isinstance(eos, list):
        if len(eos) == 1:
            values["eos_token_id"] = eos[0]
        else:
            problems.append(f"eos_token_id={eos!r} (minidecode supports one end-of-sequence id)")
    if values.get("num_key_value_heads") is None and "num_attention_heads" in hf:
        values["num_key_value_heads"] = hf["num_attention_heads"]
    head_dim = hf.get("head_dim")
    if head_dim is not None and "hidden_size" in hf and "num_attention_heads" in hf:
        if head_dim != hf["hidden_size"] // hf["num_attention_heads"]:
            derived = hf["hidden_size"] // hf["num_attention_heads"]
            problems.append(f"head_dim={head_dim} (minidecode needs hidden_size // "
                            f"num_attention_heads = {derived})")

    known = _FIELDS | _METADATA_KEYS | set(_REQUIRED_VALUES) | ignored | \
        {"rope_parameters", "rope_scaling", "head_dim", "layer_types", "sliding_window"}
    unknown = sorted(set(hf) - known)
    if unknown:
        problems.append(f"unknown keys {unknown}")
    if problems:
        raise ValueError("config.json asks for what minidecode does not support: "
                         + "; ".join(problems))
    missing = sorted(name for name, f in ModelConfig.__dataclass_fields__.items()
                     if name not in values and f.default is dataclasses.MISSING)
    if missing:
        raise ValueError(f"config.json lacks required keys {missing}")
    return ModelConfig(**values)


# ------------------------------------------------------------------------- save
def save_pretrained(model: Transformer, directory: str | Path, tokenizer: Any = None,
                    generation_config: dict[str, Any] | None = None) -> Path:
    """Write ``model`` (and optionally its tokenizer) as a Hugging Face checkpoint directory.

    tokenizer: None, a ``tokenizers.Tokenizer``, or a path to a tokenizer.json file (or to a
        directory that holds one).
    generation_config: extra entries for generation_config.json, e.g. ``{"do_sample": False}``.
    Returns the directory.
    """
    from tokenizers import Tokenizer

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = model.config
    dtype = model.embed_tokens.weight.dtype

    hf_config = config_to_hf(config, dtype)
    (directory / "config.json").write_text(json.dumps(hf_config, indent=2) + "\n")

    tensors = {}
    for name, tensor in model.state_dict().items():
        if name == "lm_head.weight" and config.tie_word_embeddings:
            continue  # shares storage with the embedding; transformers re-ties it on load
        hf_name = name if name.startswith("lm_head.") else f"model.{name}"
        tensors[hf_name] = tensor.detach().to("cpu").contiguous()
    save_file(tensors, str(directory / "model.safetensors"), metadata={"format": "pt"})

    special = {"bos_token_id": config.bos_token_id, "eos_token_id": config.eos_token_id,
               "pad_token_id": config.pad_token_id}
    generation = {k: v for k, v in special.items() if v is not None}
    generation.update(generation_config or {})
    (directory / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")

    if tokenizer is not None:
        if isinstance(tokenizer, (str, Path)):
            path = Path(tokenizer)
            path = path / "tokenizer.json" if path.is_dir() else path
            if not path.is_file():
                raise ValueError(f"tokenizer={str(tokenizer)!r}: no tokenizer.json there")
            tokenizer = Tokenizer.from_file(str(path))
        if not isinstance(tokenizer, Tokenizer):
            raise ValueError("tokenizer must be None, a tokenizers.Tokenizer or a path, got "
                             f"{type(tokenizer).__name__}")
        tokenizer.save(str(directory / "tokenizer.json"))
        tokenizer_config: dict[str, Any] = {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "model_max_length": config.max_position_embeddings,
            "clean_up_tokenization_spaces": False,
        }
        for key, token_id in special.items():
            if token_id is not None and tokenizer.id_to_token(token_id) is not None:
                tokenizer_config[key.removesuffix("_id")] = tokenizer.id_to_token(token_id)
        (directory / "tokenizer_config.json").write_text(
            json.dumps(tokenizer_config, indent=2) + "\n")
    return directory


# ------------------------------------------------------------------------- load
def _read_weights(directory: Path, device: str | torch.device) -> dict[str, torch.Tensor]:
    single, index = directory / "model.safetensors", directory / "model.safetensors.index.json"
    if single.is_file():
        return load_file(str(single), device=str(device))
    if index.is_file():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        tensors: dict[str, torch.Tensor] = {}
        for file in files:
            tensors.update(load_file(str(directory / file), device=str(device)))
        return tensors
    pickles = sorted(p.name for p in directory.glob("*.bin")) + \
        sorted(p.name for p in directory.glob("*.pt"))
    hint = f" (found {pickles}: minidecode never unpickles; convert them to safetensors)" \
        if pickles else ""
    raise ValueError(f"no model.safetensors in {directory}{hint}")


def load_pretrained(directory: str | Path, dtype: torch.dtype = torch.float32,
                    device: str | torch.device = "cpu"):
    """Load a Hugging Face Llama checkpoint directory -> (Transformer, tokenizers.Tokenizer | None).

    Works for directories written by ``save_pretrained`` or by transformers, including real
    Llama-family models (SmolLM, TinyLlama) as long as their config uses only what minidecode
    implements (see ``config_from_hf``). The model is returned in eval mode.
    """
    from tokenizers import Tokenizer

    directory = Path(directory)
    config_path = directory / "config.json"
    if not config_path.is_file():
        raise ValueError(f"directory={str(directory)!r} has no config.json")
    config = config_from_hf(json.loads(config_path.read_text()))

    state = {}
    for hf_name, tensor in _read_weights(directory, device).items():
        if hf_name.endswith("rotary_emb.inv_freq"):
            continue  # computed, not learned: some old checkpoints store it
        name = hf_name.removeprefix("model.")
        state[name] = tensor.to(dtype)
    if config.tie_word_embeddings:
        if "embed_tokens.weight" in state:
            state["lm_head.weight"] = state["embed_tokens.weight"]
    with torch.device("meta"):  # no random init: every weight comes from the file
        model = Transformer(config)
    expected = set(model.state_dict())
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise ValueError(f"model.safetensors does not match config.json: missing {missing}, "
                         f"unexpected {unexpected}")
    model.load_state_dict(state, assign=True)
    if config.tie_word_embeddings:
        model.lm_head.weight = model.embed_tokens.weight
    tokenizer_path = directory / "tokenizer.json"
    tokenizer = Tokenizer.from_file(str(tokenizer_path)) if tokenizer_path.is_file() else None
    return model.eval(), tokenizer


def available_models() -> list[str]:
    """Names of the models shipped in ``minidecode/models/``."""
    if not MODELS_DIR.is_dir():
        return []
    return sorted(p.name for p in MODELS_DIR.iterdir() if (p / "config.json").is_file())


# Names of earlier shipped models, kept so that old code still loads something sensible: the
# course's two four-layer models became the eight-layer "main", their draft "main-draft".
ALIASES = {"tiny-target": "main", "tiny-retriever": "main", "tiny-draft": "main-draft"}


def load(name_or_path: str | Path, dtype: torch.dtype = torch.float32,
         device: str | torch.device = "cpu"):
    """Load a shipped model by name ("main", "main-draft") or any checkpoint directory by path.

    The earlier names "tiny-target" / "tiny-retriever" load "main" and "tiny-draft" loads
    "main-draft" (``ALIASES``). Returns (Transformer, tokenizers.Tokenizer | None), as
    ``load_pretrained``.
    """
    path = Path(name_or_path)
    if (path / "config.json").is_file():
        return load_pretrained(path, dtype=dtype, device=device)
    name = str(name_or_path)
    shipped = MODELS_DIR / name
    if not (shipped / "config.json").is_file() and name in ALIASES:
        shipped = MODELS_DIR / ALIASES[name]
    if (shipped / "config.json").is_file():
        return load_pretrained(shipped, dtype=dtype, device=device)
    raise ValueError(f"name_or_path={str(name_or_path)!r} is neither a checkpoint directory nor a "
                     f"shipped model; shipped models: {available_models() or 'none yet'}")
