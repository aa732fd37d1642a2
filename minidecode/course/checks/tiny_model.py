"""A tiny random language model for the checks of whole decode loops (chapters 01-03).

The checks of a decode loop compare the student's tokens with ``minidecode.generate``'s, so any
model will do as long as it is fast and its next-token distributions vary: some steps peaked,
some flat. :func:`tiny_language_model` is a two-layer :class:`~minidecode.model.Transformer`
with a 32-token vocabulary and weights drawn from a fixed seed, scaled up from the training
init so that the entropy of a step ranges from about 0.05 to 1.9 nats. Tokens 22 and 31 share
their output row, so their logits are always equal: a rule that sorts must keep ties together.

:class:`CheckModel` hands it to the student's loop with the model interface of
:class:`minidecode.interfaces.LanguageModel` and counts the positions the loop runs through it: a
loop with a KV cache runs the prompt once and then one token a step, and a loop that recomputes
its prefix every step is stopped with a message saying so.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import Tensor, nn

from minidecode.model import ModelConfig, Transformer

VOCAB = 32
TIED_TOKENS = (22, 31)


@functools.lru_cache(maxsize=1)
def tiny_language_model() -> Transformer:
    """The checks' model (built once per process): 32 tokens, hidden size 32, 2 layers."""
    config = ModelConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=64, tie_word_embeddings=False)
    generator = torch.Generator().manual_seed(0)
    model = Transformer(config).eval().requires_grad_(False)
    for name, parameter in model.named_parameters():
        if parameter.dim() > 1:  # N(0, 0.5) weights and an N(0, 0.8) output layer: sharp steps
            std = 0.8 if name == "lm_head.weight" else 0.5
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * std)
    model.lm_head.weight[TIED_TOKENS[1]] = model.lm_head.weight[TIED_TOKENS[0]]
    return model


class CheckModel(nn.Module):
    """``model`` as a check hands it to a decode loop: ``vocab_size``, ``new_cache()`` and
    ``model(input_ids, cache)``, counting the positions (tokens per row) it runs.

    Args:
        model: a :class:`~minidecode.interfaces.LanguageModel`.
        max_positions: how many positions per row the loop may run; one more raises
            ``RuntimeError``. For a loop with a cache: the prompt's length plus the new tokens.
    """

    def __init__(self, model: nn.Module, max_positions: int | None = None) -> None:
        super().__init__()
        self.model = model
        self.max_positions = max_positions
        self.positions_run = 0

    @property
    def vocab_size(self) -> int:
        return self.model.vocab_size

    @property
    def config(self) -> Any:
        return self.model.config

    def new_cache(self) -> Any:
        return self.model.new_cache()

    def forward(self, input_ids: Tensor, cache: Any = None) -> Any:
        self.positions_run += input_ids.shape[-1]
        if self.max_positions is not None and self.positions_run > self.max_positions:
            raise RuntimeError(
                f"the loop has run {self.positions_run} positions per row through the model, "
                f"more than the {self.max_positions} a loop with a KV cache needs (the prompt "
                "once, then one new token a step): feed the model only the tokens its cache has "
                "not seen, model(new_tokens, cache)")
        return self.model(input_ids, cache)

    def extra_repr(self) -> str:
        return f"max_positions={self.max_positions}"


def check_model(prompt_length: int, max_new_tokens: int) -> CheckModel:
    """The tiny model, allowed the positions of a cached loop over this prompt and length."""
    return CheckModel(tiny_language_model(), prompt_length + max_new_tokens)


def random_prompt(batch: int, length: int, seed: int) -> Tensor:
    """(batch, length) token ids of the tiny vocabulary, from ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, VOCAB, (batch, length), generator=generator)
