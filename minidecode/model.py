"""The course's decoder: a Llama-architecture transformer in one file, with an explicit KV cache.

Architecture (Touvron et al., 2023, "LLaMA", arXiv:2302.13971), for token ids x_1..x_T:

    h_0 = Embed(x)
    for each layer:  h = h + Attention(RMSNorm(h))      # RoPE on q and k, grouped-query heads
                     h = h + SwiGLU(RMSNorm(h))
    logits = RMSNorm(h) @ W_out^T                       # W_out tied to Embed or separate

Every choice follows transformers' ``LlamaForCausalLM`` so that a Hugging Face Llama checkpoint
loads with no weight permutation and gives the same logits (to float32 rounding); see
``checkpoint.py``. Two options cover more of the family: biases on the q, k, v projections
(``attention_bias``, as Qwen2) and Llama 3.1's RoPE frequency scaling (``rope_scaling``).
Module names are those of transformers minus the leading ``model.``.

Three things a black-box ``generate()`` hides are explicit here:

- the cache (``minidecode.cache.KVCache``): keys, values and the RoPE position of every entry;
- the positions given to RoPE: ``forward(..., positions=...)``;
- the attention weights: ``forward(..., output_attentions=[layers])``, and a per-head mask hook,
  ``forward(..., attention_pattern=fn)`` with ``fn(layer, q_positions, k_positions) -> bool mask``.

With no cache, no pattern and no attention output requested (the training path), attention is one
``scaled_dot_product_attention(is_causal=True)`` call, fast on GPU under bf16 autocast.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from minidecode.cache import CacheFingerprint, KVCache
from minidecode.interfaces import AttentionPattern, ModelOutput
from minidecode.rope import (  # noqa: F401 (apply_rotary, rotate_half: re-exported)
    Llama3RopeScaling,
    apply_rotary,
    rotary_cos_sin,
    rotate_half,
)

# scaled_dot_product_attention shares KV heads itself (no copy) from torch 2.5 on.
_SDPA_HAS_GQA = tuple(int(v) for v in torch.__version__.split(".")[:2]) >= (2, 5)


@dataclass
class ModelConfig:
    """Hyperparameters; names follow transformers' ``LlamaConfig`` so config.json round-trips.

    attention_bias: biases on the q, k and v projections, as Qwen2 (o_proj never has one; a
        Llama config.json whose ``attention_bias`` also means an o_proj bias is refused).
    rope_scaling: Llama 3.1's RoPE frequency scaling (config.json ``rope_type: "llama3"``).
    """

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    max_position_embeddings: int = 512
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    tie_word_embeddings: bool = True
    bos_token_id: int | None = None
    eos_token_id: int | None = None
    pad_token_id: int | None = None
    attention_bias: bool = False
    rope_scaling: Llama3RopeScaling | None = None

    def __post_init__(self) -> None:
        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                     "num_attention_heads", "num_key_value_heads", "max_position_embeddings"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size ({self.hidden_size}) must be divisible by "
                             f"num_attention_heads ({self.num_attention_heads})")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(f"num_attention_heads ({self.num_attention_heads}) must be divisible "
                             f"by num_key_value_heads ({self.num_key_value_heads})")
        if self.head_dim % 2:
            raise ValueError(f"head_dim = hidden_size // num_attention_heads must be even for "
                             f"RoPE, got {self.head_dim}")
        if self.rms_norm_eps <= 0 or self.rope_theta <= 0:
            raise ValueError(f"rms_norm_eps and rope_theta must be > 0, got {self.rms_norm_eps} "
                             f"and {self.rope_theta}")
        if isinstance(self.rope_scaling, dict):       # as read back from json
            self.rope_scaling = Llama3RopeScaling(**self.rope_scaling)
        if self.rope_scaling is not None and not isinstance(self.rope_scaling, Llama3RopeScaling):
            raise ValueError(f"rope_scaling must be None or a Llama3RopeScaling, got "
                             f"{self.rope_scaling!r}")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    def config_id(self) -> str:
        """A short hash of every field: caches remember it to refuse another model."""
        text = json.dumps(dataclasses.asdict(self), sort_keys=True)
        return hashlib.sha1(text.encode()).hexdigest()[:12]


class RMSNorm(nn.Module):
    """RMSNorm (Zhang & Sennrich, 2019, arXiv:1910.07467): y = w * x / sqrt(mean(x^2) + eps).

    Computed in float32 and cast back before the weight multiply, as transformers' LlamaRMSNorm.
    """

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        input_dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(input_dtype)


class MLP(nn.Module):
    """SwiGLU MLP (Shazeer, 2020, arXiv:2002.05202): y = W_down(silu(W_gate x) * W_up x)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Attention(nn.Module):
    """Multi-head causal self-attention with grouped-query heads (GQA, Ainslie et al., 2023,
    arXiv:2305.13245) and RoPE.

        q = R(p) W_q x,  k = R(p) W_k x,  v = W_v x        (R(p): rotation at position p)
        out = W_o concat_h softmax(q_h k_g^T / sqrt(head_dim) + mask) v_g,  g = h // (H / H_kv)

    Query head h reads KV head h // group_size, the convention of transformers' ``repeat_kv``.
    """

    def __init__(self, config: ModelConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads
        self.head_dim = config.head_dim
        bias, kv_size = config.attention_bias, self.num_kv_heads * self.head_dim
        self.q_proj = nn.Linear(config.hidden_size, self.num_heads * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(config.hidden_size, kv_size, bias=bias)
        self.v_proj = nn.Linear(config.hidden_size, kv_size, bias=bias)
        self.o_proj = nn.Linear(self.num_heads * self.head_dim, config.hidden_size, bias=False)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, positions: Tensor,
                cache: KVCache | None, pattern: AttentionPattern | None, need_weights: bool
                ) -> tuple[Tensor, Tensor | None]:
        """x: (batch, seq, hidden); cos, sin: (batch or 1, seq, head_dim); positions: (batch or 1,
        seq). Returns (batch, seq, hidden) and, if need_weights, weights (batch, heads, seq, k)."""
        batch, seq, _ = x.shape
        heads, kv_heads, head_dim = self.num_heads, self.num_kv_heads, self.head_dim
        q = self.q_proj(x).view(batch, seq, heads, head_dim).transpose(1, 2)     # (B, H, T, D)
        k = self.k_proj(x).view(batch, seq, kv_heads, head_dim).transpose(1, 2)  # (B, Hkv, T, D)
        v = self.v_proj(x).view(batch, seq, kv_heads, head_dim).transpose(1, 2)  # (B, Hkv, T, D)
        cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)                            # (B|1, 1, T, D)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)

        k_positions = positions[:, None, :].expand(batch, kv_heads, seq)         # (B, Hkv, T)
        if cache is not None:
            # k, v, k_positions now cover every cached entry followed by the new ones: K entries
            k, v, k_positions = cache.append(self.layer_idx, k, v, k_positions)
        num_keys = k.shape[2]
        past = num_keys - seq

        # Visibility (see cache.py): all cached entries, plus causal order inside the new chunk.
        mask = None
        if pattern is not None or need_weights or (past > 0 and seq > 1):
            key_index = torch.arange(num_keys, device=x.device)
            query_index = torch.arange(seq, device=x.device) + past
            mask = key_index[None, :] <= query_index[:, None]                   # (T, K)
        if pattern is not None:
            q_pos = positions[:, None, :].expand(batch, heads, seq)              # (B, H, T)
            k_pos = k_positions.repeat_interleave(heads // kv_heads, dim=1)      # (B, H, K)
            mask = mask & pattern(self.layer_idx, q_pos, k_pos)                  # (B, H, T, K)

        if not need_weights:
            is_causal = mask is None and past == 0 and seq > 1
            gqa = {}
            if heads != kv_heads and _SDPA_HAS_GQA:
                gqa = {"enable_gqa": True}
            elif heads != kv_heads:
                k, v = (t.repeat_interleave(heads // kv_heads, dim=1) for t in (k, v))
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal,
                                               **gqa)                            # (B, H, T, D)
            weights = None
        else:
            # Explicit softmax, grouping query heads by the KV head they share: no copy of k, v.
            group = heads // kv_heads
            qg = q.reshape(batch, kv_heads, group, seq, head_dim)
            scores = qg @ k.unsqueeze(2).transpose(-1, -2) / math.sqrt(head_dim)  # (B,Hkv,G,T,K)
            scores = scores.reshape(batch, heads, seq, num_keys)
            scores = scores.masked_fill(~mask, float("-inf"))
            weights = torch.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
            y = weights.view(batch, kv_heads, group, seq, num_keys) @ v.unsqueeze(2)
            y = y.reshape(batch, heads, seq, head_dim)
        y = y.transpose(1, 2).reshape(batch, seq, heads * head_dim)
        return self.o_proj(y), weights


class Block(nn.Module):
    """Pre-norm decoder layer: h = h + Attention(RMSNorm(h)); h = h + MLP(RMSNorm(h))."""

    def __init__(self, config: ModelConfig, layer_idx: int):
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = Attention(config, layer_idx)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = MLP(config)

    def forward(self, h: Tensor, cos: Tensor, sin: Tensor, positions: Tensor,
                cache: KVCache | None, pattern: AttentionPattern | None, need_weights: bool
                ) -> tuple[Tensor, Tensor | None]:
        attn_out, weights = self.self_attn(self.input_layernorm(h), cos, sin, positions, cache,
                                           pattern, need_weights)
        h = h + attn_out
        h = h + self.mlp(self.post_attention_layernorm(h))
        return h, weights


# ------------------------------------------------------------------------- the model
class Transformer(nn.Module):
    """Llama-architecture decoder: token ids (batch, seq) -> logits (batch, seq, vocab)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(Block(config, i) for i in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.embed_tokens.weight
        # GPT-2 style init: N(0, 0.02), and N(0, 0.02 / sqrt(2 * layers)) for the projections that
        # write into the residual stream, so its variance does not grow with depth.
        self.apply(self._init_weights)
        for name, param in self.named_parameters():
            if name.endswith(("o_proj.weight", "down_proj.weight")):
                nn.init.normal_(param, mean=0.0, std=0.02 / math.sqrt(2 * config.num_hidden_layers))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    @property
    def fingerprint(self) -> CacheFingerprint:
        c = self.config
        return CacheFingerprint(c.num_hidden_layers, c.num_key_value_heads, c.head_dim,
                                c.rope_theta, c.config_id(), c.rope_scaling)

    @property
    def vocab_size(self) -> int:
        return self.config.vocab_size

    def new_cache(self) -> KVCache:
        """An empty cache for this model."""
        return KVCache(self.fingerprint)

    def num_parameters(self, exclude_embeddings: bool = False) -> int:
        """Number of parameters (tied weights counted once), optionally without the embedding."""
        total = sum(p.numel() for p in self.parameters())
        if exclude_embeddings:
            total -= self.embed_tokens.weight.numel()
        return total

    def forward(self, input_ids: Tensor, cache: KVCache | None = None,
                positions: Tensor | None = None,
                attention_pattern: AttentionPattern | None = None,
                output_attentions: bool | Sequence[int] = False) -> ModelOutput:
        """Run the model on ``input_ids`` (batch, seq).

        cache: appended to in place; the new tokens attend to every cached entry.
        positions: (seq,) or (batch, seq) RoPE positions of the new tokens; default
            ``cache.next_position + arange(seq)`` (``arange(seq)`` without a cache).
        attention_pattern: see ``AttentionPattern``.
        output_attentions: True for all layers, or a list of layer ids.
        """
        self._check_inputs(input_ids, cache)
        positions = self._rope_positions(input_ids, cache, positions)             # (B|1, T)
        attention_layers = self._attention_layers(output_attentions)
        batch, seq = input_ids.shape

        h = self.embed_tokens(input_ids)                                          # (B, T, hidden)
        cos, sin = rotary_cos_sin(positions, self.config.head_dim, self.config.rope_theta,
                                  h.dtype, self.config.rope_scaling)              # (B|1, T, D)
        positions = positions.expand(batch, seq)
        attentions: dict[int, Tensor] = {}
        for i, layer in enumerate(self.layers):
            h, weights = layer(h, cos, sin, positions, cache, attention_pattern,
                               i in attention_layers)
            if weights is not None:
                attentions[i] = weights
        logits = self.lm_head(self.norm(h))                                       # (B, T, vocab)
        return ModelOutput(logits=logits, cache=cache, attentions=attentions)

    # ------------------------------------------------------------- forward's argument checks
    def _check_inputs(self, input_ids: Tensor, cache: KVCache | None) -> None:
        """ValueError unless input_ids is a non-empty (batch, seq) tensor of ids in the vocabulary
        and cache (if any) is this model's, holding the same batch size."""
        vocab = self.config.vocab_size
        if not isinstance(input_ids, Tensor) or input_ids.dim() != 2:
            raise ValueError("input_ids must be a 2-d tensor (batch, seq), got "
                             f"{getattr(input_ids, 'shape', type(input_ids).__name__)}")
        if input_ids.dtype not in (torch.long, torch.int32, torch.int64):
            raise ValueError(f"input_ids must be an integer tensor, got {input_ids.dtype}")
        batch, seq = input_ids.shape
        if batch == 0 or seq == 0:
            raise ValueError(f"input_ids is empty (shape {tuple(input_ids.shape)}): the prompt "
                             "needs at least one token")
        if bool(((input_ids < 0) | (input_ids >= vocab)).any()):
            bad = input_ids[(input_ids < 0) | (input_ids >= vocab)]
            raise ValueError(f"input_ids contains ids outside the vocabulary [0, {vocab - 1}]: "
                             f"{bad.unique()[:10].tolist()}")
        if cache is None:
            return
        if not isinstance(cache, KVCache):
            raise ValueError(f"cache must be a minidecode KVCache (from model.new_cache()), "
                             f"got {type(cache).__name__}")
        if cache.fingerprint != self.fingerprint:
            raise ValueError(f"cache was built for another model: cache fingerprint "
                             f"{cache.fingerprint} != this model's {self.fingerprint}")
        if cache.batch_size is not None and cache.batch_size != batch:
            raise ValueError(f"input_ids has batch size {batch} but the cache holds "
                             f"{cache.batch_size} sequences")

    def _rope_positions(self, input_ids: Tensor, cache: KVCache | None,
                        positions: Tensor | None) -> Tensor:
        """The new tokens' RoPE positions as (1 or batch, seq) long, checked against the shape of
        input_ids and against max_position_embeddings."""
        batch, seq = input_ids.shape
        start = cache.next_position if cache is not None else 0
        if positions is None:
            positions = torch.arange(start, start + seq, device=input_ids.device)[None]  # (1, T)
        else:
            positions = torch.as_tensor(positions, device=input_ids.device)
            if positions.dim() == 1:
                positions = positions[None]
            if positions.dtype != torch.long or positions.dim() != 2 or \
                    positions.shape[-1] != seq or positions.shape[0] not in (1, batch):
                raise ValueError(f"positions must be a long tensor of shape ({seq},) or "
                                 f"({batch}, {seq}), got {positions.dtype} "
                                 f"{tuple(positions.shape)}")
        last_position = int(positions.max())
        if last_position >= self.config.max_position_embeddings:
            cached = 0 if cache is None else len(cache)
            raise ValueError(
                f"position {last_position} is beyond max_position_embeddings="
                f"{self.config.max_position_embeddings} ({seq} new tokens, {cached} cached): the "
                f"prompt is too long for this model. Shorten it, or use a cache policy that "
                f"compresses the cache and re-assigns positions (Context-Reset RoPE).")
        return positions

    def _attention_layers(self, output_attentions: bool | Sequence[int]) -> set[int]:
        """output_attentions (True, False or layer ids) -> the layers whose weights to return."""
        layers = self.config.num_hidden_layers
        if output_attentions is True:
            return set(range(layers))
        if output_attentions is False:
            return set()
        requested = set(output_attentions)
        bad_layers = sorted(i for i in requested if not 0 <= i < layers)
        if bad_layers:
            raise ValueError(f"output_attentions layer ids must be in [0, {layers - 1}], got "
                             f"{bad_layers}")
        return requested
