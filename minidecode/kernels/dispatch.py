"""The one place where the decoding code hands work to chapter 10's GPU kernels.

Each function here answers for one hot loop of the earlier chapters. It returns the kernel's
result when every tensor is a float32 CUDA tensor and CuPy finds a GPU (and
``MINIDECODE_KERNELS`` is not ``0``), and ``None`` otherwise, in which case the caller runs its
own PyTorch code. On a CPU nothing here imports CuPy or draws a random number, so a CPU run
draws exactly the random numbers it would draw without this module.

    entropy_varentropy   <- softmax_entropy   (chapter 2's entropy, entropix, EDT)
    sample_next_token    <- min_p_top_p       (chapter 1's draw from softmax(scores))
    verify_draft         <- speculative_verify (chapter 7's acceptance tests)
"""

from __future__ import annotations

import torch
from torch import Tensor


def _on_gpu(*tensors: Tensor) -> bool:
    if not all(isinstance(t, Tensor) and t.is_cuda for t in tensors):
        return False  # the common case, decided without importing anything
    from minidecode.kernels import _cuda

    return _cuda.use_kernel(*tensors)


def entropy_varentropy(scores: Tensor) -> tuple[Tensor, Tensor] | None:
    """(entropy, varentropy) of softmax(scores) over the last dim, by the one-pass kernel; or
    None."""
    if scores.dim() < 1 or not scores.numel() or not _on_gpu(scores):
        return None
    from minidecode.kernels import softmax_entropy

    flat = scores.reshape(-1, scores.shape[-1]).contiguous()
    stats = softmax_entropy.launch_kernel(flat)
    return stats.entropy.reshape(scores.shape[:-1]), stats.varentropy.reshape(scores.shape[:-1])


def sample_next_token(scores: Tensor, generator: torch.Generator | None) -> Tensor | None:
    """One token per row of softmax(scores) (batch, vocab) by inverse CDF on the GPU, or None."""
    if scores.dim() != 2 or not _on_gpu(scores):
        return None
    from minidecode.kernels import min_p_top_p

    uniforms = torch.rand(scores.shape[0], generator=generator, device=scores.device)
    return min_p_top_p.launch_kernel(scores.contiguous(), uniforms)


def verify_draft(target_probs: Tensor, draft_probs: Tensor, draft_tokens: Tensor,
                 generator: torch.Generator | None) -> tuple[Tensor, Tensor] | None:
    """Speculative sampling's (accepted_len, next_token) in one launch, or None."""
    if not _on_gpu(target_probs, draft_probs, draft_tokens):
        return None
    from minidecode.kernels import speculative_verify

    batch, gamma = draft_tokens.shape
    uniforms = torch.rand(batch, gamma, generator=generator, device=draft_tokens.device)
    sample_uniforms = torch.rand(batch, generator=generator, device=draft_tokens.device)
    return speculative_verify.launch_kernel(
        target_probs.contiguous(), draft_probs.contiguous(), draft_tokens.contiguous(),
        uniforms, sample_uniforms, check=False)
