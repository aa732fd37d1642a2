"""Kernel 3: speculative sampling's verification of a whole batch of drafts in one launch.

Leviathan, Kalman & Matias 2023 (arXiv:2211.17192); Chen et al. 2023 (arXiv:2302.01318); the
rule as :func:`minidecode.speculative.verify_draft` states it. For batch row b, with target
distributions p_1 .. p_{g+1}, draft distributions q_1 .. q_g and drafted tokens x_1 .. x_g:

    accept x_i while u_i < min(1, p_i(x_i) / q_i(x_i))       (u_i: the acceptance uniforms)
    accepted_len = the number of leading acceptances, in [0, g]
    next token ~ norm(max(0, p_a - q_a)) at the first rejection a (p_a if that is all zero),
               ~ p_{g+1} when all g were accepted (the bonus token)

The next token is drawn by the inverse CDF from one more uniform per row, so the kernel and the
reference draw the *same* token from the same numbers; ``verify_draft`` draws it with
``torch.multinomial`` instead (same distribution, another random stream).

Layout: one block of 1024 threads per batch row. Thread 0 runs the g acceptance tests (g reads of
two floats); then the block reduces the residual's mass over the vocabulary and draws from it.
Bytes that must move: two rows of vocab floats (p_a and q_a, or p_{g+1} alone), 2 g floats and g
token ids, per batch row: about 8 * vocab * batch. The other g - 1 target and draft rows are
never read, which is the point of fusing: eager PyTorch builds all of them.
"""

from __future__ import annotations

import torch
from torch import Tensor

from minidecode.kernels import _cuda
from minidecode.kernels.min_p_top_p import inverse_cdf

CUDA_SOURCE = r"""
// ---------------------------------------------------------------- kernel 3: speculative verify
struct ResidualWeight {               // max(0, p - q), or p itself (q == nullptr)
    const float* p; const float* q;
    __device__ float operator()(int i) const {
        return q ? fmaxf(p[i] - q[i], 0.0f) : p[i];
    }
};

// grid = (batch,), block = (threads,), threads a multiple of 32, <= 1024.
// target_probs (batch, gamma + 1, vocab), draft_probs (batch, gamma, vocab), draft_tokens
// (batch, gamma) in [0, vocab), accept_uniforms (batch, gamma), sample_uniforms (batch,).
extern "C" __global__ void speculative_verify(const float* __restrict__ target_probs,
                                              const float* __restrict__ draft_probs,
                                              const i64* __restrict__ draft_tokens,
                                              const float* __restrict__ accept_uniforms,
                                              const float* __restrict__ sample_uniforms,
                                              i64* __restrict__ accepted_len,
                                              i64* __restrict__ next_token,
                                              int gamma, int vocab) {
    __shared__ float scratch[32];
    __shared__ int shared_ints[2];
    __shared__ int accepted;
    const i64 b = blockIdx.x;
    const float* p_rows = target_probs + b * (i64)(gamma + 1) * vocab;
    const float* q_rows = draft_probs + b * (i64)gamma * vocab;

    if (threadIdx.x == 0) {
        int a = 0;
        for (; a < gamma; ++a) {
            const i64 x = draft_tokens[b * gamma + a];
            float ratio = p_rows[(i64)a * vocab + x] / q_rows[(i64)a * vocab + x];
            ratio = ratio > 1.0f ? 1.0f : ratio;      // not fminf: a NaN ratio must reject
            if (!(accept_uniforms[b * gamma + a] < ratio)) break;
        }
        accepted = a;
    }
    __syncthreads();
    const int a = accepted;

    ResidualWeight weight = {p_rows + (i64)a * vocab,
                             a < gamma ? q_rows + (i64)a * vocab : nullptr};
    float mine = 0.0f;
    for (int i = threadIdx.x; i < vocab; i += blockDim.x) mine += weight(i);
    float mass = block_sum(mine, scratch);
    if (a < gamma && !(mass > 0.0f)) {                // p == q at the rejection: draw from p
        weight.q = nullptr;
        mine = 0.0f;
        for (int i = threadIdx.x; i < vocab; i += blockDim.x) mine += weight(i);
        mass = block_sum(mine, scratch);
    }
    const int token = inverse_cdf(weight, vocab, sample_uniforms[b] * mass, scratch, shared_ints);
    if (threadIdx.x == 0) {
        accepted_len[b] = (i64)a;
        next_token[b] = (i64)token;
    }
}
"""

KERNEL_NAME = "speculative_verify"


def validate(target_probs: Tensor, draft_probs: Tensor, draft_tokens: Tensor,
             accept_uniforms: Tensor, sample_uniforms: Tensor, *, for_kernel: bool = False
             ) -> None:
    """Shapes: target (batch, gamma + 1, vocab), draft (batch, gamma, vocab), tokens (batch,
    gamma) long, accept_uniforms (batch, gamma), sample_uniforms (batch,)."""
    dtypes = _cuda.FLOAT32 if for_kernel else _cuda.FLOATS
    _cuda.check_tensor(target_probs, "target_probs", dtypes=dtypes, dim=3, contiguous=for_kernel)
    _cuda.check_tensor(draft_probs, "draft_probs", dtypes=dtypes, dim=3, contiguous=for_kernel)
    _cuda.check_tensor(draft_tokens, "draft_tokens", dtypes=_cuda.LONG, dim=None,
                       contiguous=for_kernel)
    _cuda.check_tensor(accept_uniforms, "accept_uniforms", dtypes=dtypes, dim=None,
                       contiguous=for_kernel)
    _cuda.check_tensor(sample_uniforms, "sample_uniforms", dtypes=dtypes, dim=1,
                       contiguous=for_kernel)
    batch, gamma_plus_one, vocab = target_probs.shape
    gamma = gamma_plus_one - 1
    expected = {"draft_probs": ((batch, gamma, vocab), draft_probs),
                "draft_tokens": ((batch, gamma), draft_tokens),
                "accept_uniforms": ((batch, gamma), accept_uniforms),
                "sample_uniforms": ((batch,), sample_uniforms)}
    for name, (shape, tensor) in expected.items():
        if tuple(tensor.shape) != shape:
            raise ValueError(f"{name} must have shape {shape} to match target_probs "
                             f"{tuple(target_probs.shape)} (batch, gamma + 1, vocab), got "
                             f"{tuple(tensor.shape)}")
    _cuda.check_same_device(target_probs=target_probs, draft_probs=draft_probs,
                            draft_tokens=draft_tokens, accept_uniforms=accept_uniforms,
                            sample_uniforms=sample_uniforms)
    if draft_tokens.numel() and (int(draft_tokens.min()) < 0 or int(draft_tokens.max()) >= vocab):
        raise ValueError(f"draft_tokens must lie in [0, {vocab - 1}] (the vocabulary), got values "
                         f"in [{int(draft_tokens.min())}, {int(draft_tokens.max())}]")
    if for_kernel:
        _cuda.check_cuda(target_probs, "target_probs")


def accepted_lengths(target_probs: Tensor, draft_probs: Tensor, draft_tokens: Tensor,
                     accept_uniforms: Tensor) -> Tensor:
    """(batch,) long: leading acceptances u_i < min(1, p_i(x_i) / q_i(x_i))."""
    gamma = draft_tokens.shape[1]
    index = draft_tokens.unsqueeze(-1)
    p_drafted = target_probs[:, :gamma].gather(-1, index).squeeze(-1)
    q_drafted = draft_probs.gather(-1, index).squeeze(-1)
    accepted = accept_uniforms < (p_drafted / q_drafted).clamp(max=1.0)
    return accepted.long().cumprod(dim=-1).sum(dim=-1)


def next_token_weights(target_probs: Tensor, draft_probs: Tensor, accepted_len: Tensor) -> Tensor:
    """(batch, vocab) unnormalised weights of the next token: the residual max(0, p_a - q_a) at a
    rejection (p_a if it is all zero), p_{g+1} after full acceptance."""
    batch, gamma = draft_probs.shape[:2]
    rows = torch.arange(batch, device=target_probs.device)
    p_next = target_probs[rows, accepted_len]                       # p_a, or p_{g+1} when a == g
    if gamma == 0:
        return p_next
    at = accepted_len.clamp(max=gamma - 1)
    residual = (p_next - draft_probs[rows, at]).clamp(min=0)
    use_residual = (accepted_len < gamma) & (residual.sum(dim=-1) > 0)
    return torch.where(use_residual[:, None], residual, p_next)


def reference(target_probs: Tensor, draft_probs: Tensor, draft_tokens: Tensor,
              accept_uniforms: Tensor, sample_uniforms: Tensor) -> tuple[Tensor, Tensor]:
    """The CPU path: (accepted_len (batch,), next_token (batch,)), both long."""
    validate(target_probs, draft_probs, draft_tokens, accept_uniforms, sample_uniforms)
    accepted_len = accepted_lengths(target_probs, draft_probs, draft_tokens, accept_uniforms)
    weights = next_token_weights(target_probs, draft_probs, accepted_len)
    return accepted_len, inverse_cdf(weights, sample_uniforms)


def launch_kernel(target_probs: Tensor, draft_probs: Tensor, draft_tokens: Tensor,
                  accept_uniforms: Tensor, sample_uniforms: Tensor, *, threads: int = 1024,
                  out: tuple[Tensor, Tensor] | None = None, check: bool = True
                  ) -> tuple[Tensor, Tensor]:
    """The CuPy path: one launch, one block per batch row. ``check=False`` skips the checks
    (the token range check reads the device: a synchronisation) for callers that made them."""
    import numpy as np

    if check:
        validate(target_probs, draft_probs, draft_tokens, accept_uniforms, sample_uniforms,
                 for_kernel=True)
    batch, gamma_plus_one, vocab = target_probs.shape
    if out is None:
        out = tuple(torch.empty(batch, dtype=torch.int64, device=target_probs.device)
                    for _ in range(2))
    # A (batch, 0, vocab) draft has no valid pointer to give; the kernel never reads it then.
    draft = draft_probs if draft_probs.numel() else target_probs
    tokens = draft_tokens if draft_tokens.numel() else out[0]
    uniforms = accept_uniforms if accept_uniforms.numel() else sample_uniforms
    _cuda.launch(CUDA_SOURCE, KERNEL_NAME, (batch,), (threads,),
                 (target_probs, draft, tokens, uniforms, sample_uniforms, out[0], out[1],
                  np.int32(gamma_plus_one - 1), np.int32(vocab)), target_probs.device)
    return out[0], out[1]


def verify_speculative(target_probs: Tensor, draft_probs: Tensor, draft_tokens: Tensor,
                       accept_uniforms: Tensor, sample_uniforms: Tensor) -> tuple[Tensor, Tensor]:
    """Dispatch: CuPy kernel for float32 CUDA tensors, else the reference. See the module doc."""
    validate(target_probs, draft_probs, draft_tokens, accept_uniforms, sample_uniforms)
    tensors = (target_probs, draft_probs, draft_tokens, accept_uniforms, sample_uniforms)
    if _cuda.use_kernel(*tensors):
        return launch_kernel(*(t.contiguous() for t in tensors), check=False)
    return reference(*tensors)
