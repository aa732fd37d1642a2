"""What "a model" means to the decoding techniques, and an adapter that makes any transformers
causal LM one.

The interface (``LanguageModel``) is three names::

    model.vocab_size                      -> int
    model.new_cache()                     -> an empty cache
    model(input_ids, cache)               -> output with .logits (batch, seq, vocab) and .cache

``input_ids``: (batch, seq) long, the tokens *not yet* in the cache. The model appends them to the
cache in place and returns logits for each of them. A cache (``Cache``) must report
``seen_tokens`` (how many tokens it has consumed) and support ``crop(length)`` (forget everything
after the first ``length`` entries: speculative decoding's rollback).

``minidecode.model.Transformer`` satisfies it directly, with ``KVCache``. ``HFModel`` wraps a
``transformers`` model and its ``DynamicCache``, so sampling, speculative decoding, chain-of-thought
decoding and uncertainty estimates, which need only logits, run on any causal LM you have::

    from transformers import AutoModelForCausalLM
    model = HFModel(AutoModelForCausalLM.from_pretrained("HuggingFaceTB/SmolLM2-135M"))
    tokens = minidecode.generate.generate(model, input_ids, max_new_tokens=20)

Techniques that edit the cache entry by entry (compression, Context-Reset RoPE) or read attention
weights need minidecode's own ``Transformer``.
"""

from __future__ import annotations

import copy
import hashlib
import inspect
from typing import Any

import torch
from torch import Tensor

from minidecode.cache import _check_times
from minidecode.interfaces import Cache, LanguageModel, ModelOutput  # noqa: F401 (re-export)


def _config_id(hf_model: Any) -> str:
    return hashlib.sha1(hf_model.config.to_json_string().encode()).hexdigest()[:12]


class HFCache:
    """A transformers ``DynamicCache`` behind the ``Cache`` interface."""

    def __init__(self, past_key_values: Any, config_id: str):
        self.past_key_values = past_key_values
        self.config_id = config_id

    @property
    def seen_tokens(self) -> int:
        return int(self.past_key_values.get_seq_length())

    def __len__(self) -> int:
        return self.seen_tokens

    def crop(self, length: int) -> None:
        """Keep the first ``length`` entries (transformers' crop takes -number to remove)."""
        if not isinstance(length, int) or not 0 <= length <= len(self):
            raise ValueError(f"length must be an int in [0, {len(self)}], got {length!r}")
        if length < len(self):
            self.past_key_values.crop(length - len(self))

    def clone(self) -> HFCache:
        return HFCache(copy.deepcopy(self.past_key_values), self.config_id)

    def repeat_batch(self, times: int) -> HFCache:
        """A copy with every batch row repeated ``times`` times (``repeat_interleave``), as
        ``KVCache.repeat_batch``; transformers' own ``batch_repeat_interleave`` does the work."""
        _check_times(times)
        past = copy.deepcopy(self.past_key_values)
        past.batch_repeat_interleave(times)  # in place, on every layer's keys and values
        return HFCache(past, self.config_id)

    def __repr__(self) -> str:
        return f"HFCache(seen_tokens={self.seen_tokens})"


class HFModel:
    """Wrap a transformers causal LM (``AutoModelForCausalLM``) as a ``LanguageModel``."""

    def __init__(self, hf_model: Any):
        self.model = hf_model.eval()
        self.config = hf_model.config
        self._config_id = _config_id(hf_model)
        # transformers renamed forward's ``past_key_values`` to ``cache`` (the old name warns).
        parameters = inspect.signature(hf_model.forward).parameters
        self._cache_argument = "cache" if "cache" in parameters else "past_key_values"

    @classmethod
    def from_pretrained(cls, name_or_path: str, **kwargs: Any) -> HFModel:
        from transformers import AutoModelForCausalLM

        return cls(AutoModelForCausalLM.from_pretrained(name_or_path, **kwargs))

    @property
    def vocab_size(self) -> int:
        # The output layer can be wider than config.vocab_size (padded); logits follow the layer.
        return int(self.model.get_output_embeddings().weight.shape[0])

    def new_cache(self) -> HFCache:
        from transformers import DynamicCache

        try:
            past = DynamicCache(config=self.config)
        except TypeError:  # transformers < 4.56 takes no config
            past = DynamicCache()
        if hasattr(past, "activate_past_recording"):
            # Sliding-window layers (Mistral, Gemma 2/3) otherwise drop what leaves the window
            # and then cannot crop: recording keeps it until the next crop (speculative rollback).
            past.activate_past_recording()
        return HFCache(past, self._config_id)

    def __call__(self, input_ids: Tensor, cache: HFCache | None = None) -> ModelOutput:
        """input_ids: (batch, seq) -> ModelOutput(logits (batch, seq, vocab) float, cache)."""
        if not isinstance(input_ids, Tensor) or input_ids.dim() != 2 or input_ids.numel() == 0:
            raise ValueError("input_ids must be a non-empty 2-d tensor (batch, seq), got "
                             f"{getattr(input_ids, 'shape', type(input_ids).__name__)}")
        vocab = self.vocab_size
        if bool(((input_ids < 0) | (input_ids >= vocab)).any()):
            bad = input_ids[(input_ids < 0) | (input_ids >= vocab)].unique()[:10].tolist()
            raise ValueError(f"input_ids contains ids outside the vocabulary [0, {vocab - 1}]: "
                             f"{bad}")
        with torch.no_grad():
            if cache is None:
                logits = self.model(input_ids=input_ids, use_cache=False).logits
                return ModelOutput(logits=logits.float(), cache=None)
            if not isinstance(cache, HFCache):
                raise ValueError(f"cache must be an HFCache from this model's new_cache(), got "
                                 f"{type(cache).__name__}")
            if cache.config_id != self._config_id:
                raise ValueError(f"cache was built for another model (config id {cache.config_id}"
                                 f", this model's is {self._config_id})")
            out = self.model(input_ids=input_ids, use_cache=True,
                             **{self._cache_argument: cache.past_key_values})
        return ModelOutput(logits=out.logits.float(), cache=cache)
