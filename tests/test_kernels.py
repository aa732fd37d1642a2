"""Chapter 10: the CuPy kernels' references agree with minidecode's PyTorch code (CPU, always), the
CUDA sources compile for sm_80 and sm_90 (when nvcc is on PATH), and each kernel equals its
reference on a GPU (marked ``gpu``; skipped without CUDA and CuPy)."""

from __future__ import annotations

import math
import re
import shutil
import subprocess

import pytest
import torch

from minidecode import kernels
from minidecode.cache import CacheFingerprint, KVCache
from minidecode.cache_policies.base import per_kv_head
from minidecode.cache_policies.cap_nuc import catalyst_scores
from minidecode.entropy import entropy_varentropy
from minidecode.infinipot import context_reset_positions
from minidecode.kernels import (
    attention_scores,
    kv_compaction,
    min_p_top_p,
    softmax_entropy,
    speculative_verify,
)
from minidecode.sampling import min_p_filter, top_p_filter
from minidecode.speculative import residual_probs, verify_draft

NEG_INF = float("-inf")
SHAPES = [(1, 7), (3, 100), (5, 1000), (2, 4099)]     # non-multiples of 32, 256, 1024 and 4


def _logits(rows: int, vocab: int, seed: int, scale: float = 3.0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(rows, vocab, generator=gen) * scale


# ------------------------------------------------------------------ 1. softmax + entropy
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("threads", [1, 32, 256])
def test_blocked_moments_replays_the_kernel_and_equals_entropy_py(shape, threads) -> None:
    logits = _logits(*shape, seed=shape[1])
    logits[0, : shape[1] // 2] = NEG_INF                 # masked tokens, as a processor leaves them
    entropy, varentropy = entropy_varentropy(logits.double())
    blocked_h, blocked_v = softmax_entropy.blocked_moments(logits, threads)
    torch.testing.assert_close(blocked_h, entropy, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(blocked_v, varentropy, rtol=1e-9, atol=1e-9)


def test_softmax_entropy_reference_matches_entropy_softmax_and_logsumexp() -> None:
    logits = _logits(4, 333, seed=1)
    logits[1, 5:] = NEG_INF
    stats = kernels.softmax_entropy_stats(logits, return_probs=True)
    entropy, varentropy = entropy_varentropy(logits)
    assert torch.equal(stats.entropy, entropy) and torch.equal(stats.varentropy, varentropy)
    torch.testing.assert_close(stats.log_norm, torch.logsumexp(logits, dim=-1))
    torch.testing.assert_close(stats.probs, torch.softmax(logits, dim=-1))
    # A peaked row has low entropy, a flat one log(vocab): the numbers mean what they say.
    assert stats.entropy[1] < math.log(5) + 1e-5
    flat = kernels.softmax_entropy_stats(torch.zeros(1, 64))
    torch.testing.assert_close(flat.entropy, torch.tensor([math.log(64)]))
    torch.testing.assert_close(flat.varentropy, torch.tensor([0.0]))


def test_merge_moments_of_a_split_row_equals_the_whole_row() -> None:
    row = _logits(1, 50, seed=3)[0].double()
    def moments(x):
        m = x.max()
        e = torch.exp(x - m)
        mean = (e * (x - m)).sum() / e.sum()
        return m, e.sum(), mean, (e * (x - m - mean) ** 2).sum() / e.sum()
    merged = softmax_entropy.merge_moments(moments(row[:17]), moments(row[17:]))
    for got, want in zip(merged, moments(row)):
        torch.testing.assert_close(got, want)


# ------------------------------------------------------------------ 2. min-p / top-p sampling
@pytest.mark.parametrize("min_p, top_p", [(0.0, 1.0), (0.05, 1.0), (0.0, 0.9), (0.1, 0.8),
                                          (0.0, 0.3), (0.5, 0.5), (1.0, 1.0), (0.0, 1e-6)])
@pytest.mark.parametrize("shape", SHAPES)
def test_keep_mask_equals_sampling_py_min_p_then_top_p(shape, min_p, top_p) -> None:
    logits = _logits(*shape, seed=7 + shape[1])
    expected = logits
    if min_p > 0:
        expected = min_p_filter(expected, min_p)
    if top_p < 1:
        expected = top_p_filter(expected, top_p)
    assert torch.equal(min_p_top_p.keep_mask(logits, min_p, top_p), expected > NEG_INF)


def test_keep_mask_keeps_whole_tie_groups_like_top_p_filter() -> None:
    logits = torch.tensor([[3.0, 1.0, 1.0, 1.0, 0.0, -2.0], [0.0, 0.0, 0.0, 0.0, 0.0, 0.0]])
    for top_p in (0.5, 0.8, 0.95):
        expected = top_p_filter(logits, top_p) > NEG_INF
        assert torch.equal(min_p_top_p.keep_mask(logits, 0.0, top_p), expected)


def test_inverse_cdf_sampling_follows_the_kept_distribution() -> None:
    logits = _logits(1, 40, seed=11, scale=1.0)
    n = 20000
    uniforms = (torch.arange(n, dtype=torch.float32) + 0.5) / n      # evenly spaced: exact counts
    tokens = min_p_top_p.reference(logits.expand(n, -1), uniforms, min_p=0.02, top_p=0.9)
    kept = min_p_top_p.keep_mask(logits, 0.02, 0.9)[0]
    assert kept[tokens].all()
    probs = torch.softmax(logits[0].masked_fill(~kept, NEG_INF), dim=-1)
    counts = torch.bincount(tokens, minlength=40).float() / n
    torch.testing.assert_close(counts, probs, rtol=0, atol=2.0 / n)
    assert len(tokens.unique()) > 1        # not greedy decoding


def test_inverse_cdf_is_the_first_index_past_the_target() -> None:
    weights = torch.tensor([[0.0, 1.0, 0.0, 2.0, 1.0]])
    for u, want in [(0.0, 1), (0.24, 1), (0.26, 3), (0.74, 3), (0.76, 4), (0.999, 4)]:
        assert int(min_p_top_p.inverse_cdf(weights, torch.tensor([u]))) == want


# ------------------------------------------------------------------ 3. speculative verification
def _draft_problem(batch: int, gamma: int, vocab: int, seed: int):
    gen = torch.Generator().manual_seed(seed)
    target = torch.softmax(torch.randn(batch, gamma + 1, vocab, generator=gen) * 2, dim=-1)
    draft = torch.softmax(torch.randn(batch, gamma, vocab, generator=gen) * 2, dim=-1)
    tokens = torch.multinomial(draft.reshape(-1, vocab), 1, generator=gen).reshape(batch, gamma)
    return target, draft, tokens


@pytest.mark.parametrize("batch, gamma, vocab", [(8, 4, 50), (3, 1, 7), (5, 8, 1000)])
def test_speculative_reference_matches_verify_draft(batch, gamma, vocab) -> None:
    target, draft, tokens = _draft_problem(batch, gamma, vocab, seed=gamma)
    gen = torch.Generator().manual_seed(5)
    accepted_len, _ = verify_draft(target, draft, tokens, generator=gen)
    uniforms = torch.rand(batch, gamma, generator=torch.Generator().manual_seed(5))
    ref_len, ref_token = kernels.verify_speculative(target, draft, tokens, uniforms,
                                                    torch.rand(batch))
    assert torch.equal(ref_len, accepted_len)
    assert ((ref_len >= 0) & (ref_len <= gamma)).all() and 0 < ref_token.max() < vocab
    weights = speculative_verify.next_token_weights(target, draft, ref_len)
    for b in range(batch):
        a = int(ref_len[b])
        want = target[b, gamma] if a == gamma else residual_probs(target[b, a], draft[b, a])
        torch.testing.assert_close(weights[b] / weights[b].sum(), want)


def test_speculative_reference_accepts_equal_distributions_and_rejects_impossible_drafts() -> None:
    target, _, tokens = _draft_problem(4, 3, 20, seed=1)
    same = target[:, :3].clone()
    length, _ = speculative_verify.reference(target, same, tokens, torch.full((4, 3), 0.999),
                                             torch.rand(4))
    assert (length == 3).all()                         # p == q: every draft is accepted
    impossible = target.clone()
    impossible[torch.arange(4), 0, tokens[:, 0]] = 0.0  # the target never emits the first draft
    length, token = speculative_verify.reference(impossible, same, tokens, torch.zeros(4, 3),
                                                 torch.rand(4))
    assert (length == 0).all() and (token != tokens[:, 0]).all()


# ------------------------------------------------------------------ 4. KV compaction + CR-RoPE
def _filled_cache(batch=2, kv_heads=3, length=37, head_dim=8, seed=0) -> KVCache:
    gen = torch.Generator().manual_seed(seed)
    cache = KVCache(CacheFingerprint(1, kv_heads, head_dim, 10000.0, "test"))
    for chunk in (length // 2, length - length // 2):
        keys = torch.randn(batch, kv_heads, chunk, head_dim, generator=gen)
        start = cache.seen_tokens
        positions = torch.arange(start, start + chunk).expand(batch, kv_heads, chunk) + 100
        cache.append(0, keys, torch.randn_like(keys), positions)
    return cache


@pytest.mark.parametrize("n_keep", [1, 10, 36])
def test_compact_kv_reference_equals_cache_keep_then_context_reset(n_keep) -> None:
    cache = _filled_cache()
    gen = torch.Generator().manual_seed(n_keep)
    scores = torch.rand(cache.token_index[0].shape, generator=gen)
    indices = scores.topk(n_keep, dim=-1).indices.sort(dim=-1).values    # stream order
    got = kernels.compact_kv(cache.keys[0], cache.values[0], cache.positions[0],
                             cache.token_index[0], indices)
    cache.keep(0, indices)
    cache.set_positions(0, context_reset_positions(cache.token_index[0]))
    want = (cache.keys[0], cache.values[0], cache.positions[0], cache.token_index[0])
    for got_t, want_t in zip(got, want):
        torch.testing.assert_close(got_t, want_t, rtol=1e-5, atol=1e-5)
    assert torch.equal(got[2], torch.arange(n_keep).expand_as(got[2]))


def test_compact_kv_with_explicit_positions_rotates_by_the_delta() -> None:
    cache = _filled_cache(batch=1, kv_heads=1, length=5, head_dim=4)
    indices = torch.tensor([[[4, 0]]])
    new_positions = torch.tensor([[[7, 3]]])
    keys, *_ = kernels.compact_kv(cache.keys[0], cache.values[0], cache.positions[0],
                                  cache.token_index[0], indices, new_positions)
    cache.keep(0, indices)
    cache.set_positions(0, new_positions)
    torch.testing.assert_close(keys, cache.keys[0])
    assert not torch.allclose(keys, cache.keys[0].new_zeros(keys.shape))


# ------------------------------------------------------------------ 5. attention received
def test_received_attention_equals_the_models_weights_summed_per_kv_head() -> None:
    from minidecode.model import ModelConfig, Transformer, apply_rotary, rotary_cos_sin

    torch.manual_seed(0)
    config = ModelConfig(vocab_size=50, hidden_size=32, num_hidden_layers=1,
                         num_attention_heads=4, num_key_value_heads=2, intermediate_size=64,
                         max_position_embeddings=64)
    model = Transformer(config).eval()
    attention = model.layers[0].self_attn
    x = torch.randn(2, 9, 32)
    positions = torch.arange(9)[None]
    cos, sin = rotary_cos_sin(positions, config.head_dim, config.rope_theta, x.dtype)
    cache = model.new_cache()
    with torch.no_grad():
        attention(x[:, :6], cos[:, :6], sin[:, :6], positions[:, :6], cache, None, False)
        _, weights = attention(x[:, 6:], cos[:, 6:], sin[:, 6:], positions[:, 6:], cache, None,
                               True)
        q = attention.q_proj(x[:, 6:]).view(2, 3, 4, config.head_dim).transpose(1, 2)
        q = apply_rotary(q, cos[:, None, 6:], sin[:, None, 6:])
    received = kernels.received_attention(q, cache.keys[0])
    torch.testing.assert_close(received, per_kv_head(weights.sum(dim=2), 2), rtol=1e-5, atol=1e-6)
    # CaP is the same sum restricted to the context (the 6 entries before the 3 catalyst tokens).
    torch.testing.assert_close(received[..., :6], catalyst_scores(weights, 6, 2), rtol=1e-5,
                               atol=1e-6)
    # Every query's weights sum to 1, so the total received is queries x group size.
    torch.testing.assert_close(received.sum(dim=-1), torch.full((2, 2), 3.0 * 2))


# ------------------------------------------------------------------ bad input
def test_bad_input_is_rejected_before_any_launch() -> None:
    logits = _logits(4, 64, seed=0)
    with pytest.raises(TypeError, match="logits must have dtype"):
        softmax_entropy.launch_kernel(logits.long())
    with pytest.raises(TypeError, match="float32"):
        softmax_entropy.launch_kernel(logits.double())
    with pytest.raises(ValueError, match="contiguous"):
        softmax_entropy.launch_kernel(logits.t())
    with pytest.raises(ValueError, match="2-d"):
        kernels.softmax_entropy_stats(logits[0])
    with pytest.raises(ValueError, match="CUDA"):
        softmax_entropy.launch_kernel(logits)
    with pytest.raises(ValueError, match="one number per row"):
        kernels.sample_min_p_top_p(logits, torch.rand(3))
    with pytest.raises(ValueError, match="top_p must be in"):
        kernels.sample_min_p_top_p(logits, torch.rand(4), top_p=0.0)
    with pytest.raises(ValueError, match="min_p must be in"):
        kernels.sample_min_p_top_p(logits, torch.rand(4), min_p=1.5)
    with pytest.raises(ValueError, match="contiguous"):
        min_p_top_p.launch_kernel(logits, torch.rand(4, 2)[:, 0])
    target, draft, tokens = _draft_problem(2, 3, 10, seed=0)
    with pytest.raises(ValueError, match="draft_probs must have shape"):
        kernels.verify_speculative(target, draft[:, :2], tokens, torch.rand(2, 3), torch.rand(2))
    with pytest.raises(ValueError, match="draft_tokens must lie in"):
        kernels.verify_speculative(target, draft, tokens + 10, torch.rand(2, 3), torch.rand(2))
    with pytest.raises(TypeError, match="draft_tokens must have dtype int64"):
        kernels.verify_speculative(target, draft, tokens.int(), torch.rand(2, 3), torch.rand(2))
    cache = _filled_cache()
    args = (cache.keys[0], cache.values[0], cache.positions[0], cache.token_index[0])
    with pytest.raises(ValueError, match="indices must lie in"):
        kernels.compact_kv(*args, torch.full((2, 3, 4), 37))
    with pytest.raises(ValueError, match="indices must have shape"):
        kernels.compact_kv(*args, torch.zeros(2, 4, 4, dtype=torch.long))
    with pytest.raises(TypeError, match="values must have dtype"):
        kernels.compact_kv(args[0], args[1].double(), *args[2:], torch.zeros(2, 3, 4).long())
    q = torch.randn(1, 4, 3, 8)
    with pytest.raises(ValueError, match="multiple of kv_heads"):
        kernels.received_attention(q, torch.randn(1, 3, 10, 8))
    with pytest.raises(ValueError, match="Q <= K"):
        kernels.received_attention(q, torch.randn(1, 2, 2, 8))
    with pytest.raises(ValueError, match="agree"):
        kernels.received_attention(q, torch.randn(1, 2, 10, 16))
    with pytest.raises(ValueError, match="multiple of 4"):
        attention_scores.launch_kernel(torch.randn(1, 2, 3, 6), torch.randn(1, 2, 10, 6))


def test_dispatch_uses_the_reference_on_cpu() -> None:
    logits = _logits(2, 10, seed=0)
    assert not kernels.use_kernel(logits)
    assert torch.equal(kernels.softmax_entropy_stats(logits).entropy, entropy_varentropy(logits)[0])


# ------------------------------------------------------------------ the CUDA sources
@pytest.mark.parametrize("name", sorted(kernels.KERNEL_MODULES))
def test_cuda_source_uses_nothing_nvrtc_lacks(name) -> None:
    source = kernels.full_source(kernels.KERNEL_MODULES[name].CUDA_SOURCE)
    source = re.sub(r"//[^\n]*", "", source)                 # comments may name them
    for missing in ("INFINITY", "#include", "FLT_MAX", "size_t", "printf", "std::"):
        assert missing not in source, f"{name}: NVRTC has no {missing}"
    assert 'extern "C" __global__' in source


NVCC = shutil.which("nvcc")


@pytest.mark.skipif(NVCC is None, reason="nvcc is not on PATH: the compile check needs the CUDA "
                                         "toolkit (CI has it)")
@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_every_cuda_source_compiles_to_ptx(arch, tmp_path) -> None:
    # One nvcc call per architecture; each kernel is its own file, as NVRTC sees it.
    sources = []
    for name, module in sorted(kernels.KERNEL_MODULES.items()):
        path = tmp_path / f"{name}.cu"
        path.write_text(kernels.full_source(module.CUDA_SOURCE))
        sources.append(str(path))
    done = subprocess.run([NVCC, "-ptx", f"-arch={arch}", "--std=c++14", "--output-directory",
                           str(tmp_path), *sources], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "warning" not in done.stderr.lower(), done.stderr
    entries = {"attention_scores": ["attention_tile_scores", "attention_merge_stats",
                                         "attention_received"],
               "kv_compaction": ["kv_compact_rope"], "min_p_top_p": ["min_p_top_p_sample"],
               "softmax_entropy": ["softmax_entropy", "softmax_entropy_merge"],
               "speculative_verify": ["speculative_verify"]}
    assert set(entries) == set(kernels.KERNEL_MODULES)
    for name, names in entries.items():
        text = (tmp_path / f"{name}.ptx").read_text()
        for entry in names:
            assert f".entry {entry}(" in text, f"{name}.ptx lacks {entry}"


# ------------------------------------------------------------------ on a GPU
def _cuda_with_cupy() -> None:
    if not kernels.cupy_available():
        pytest.skip("CuPy with a usable GPU is not installed (pip install -e '.[gpu-cuda12]')")


GPU_SHAPES = [(1, 7), (3, 1000), (64, 32000), (5, 32769), (17, 128256)]


@pytest.mark.gpu
@pytest.mark.parametrize("shape", GPU_SHAPES)
def test_gpu_softmax_entropy_equals_reference(shape) -> None:
    _cuda_with_cupy()
    logits = _logits(*shape, seed=shape[1]).cuda()
    logits[0, : shape[1] // 3] = NEG_INF
    # On CPU: on CUDA, entropy.py itself would dispatch to the kernel under test.
    want = softmax_entropy.reference(logits.cpu(), return_probs=True)
    for threads in (256, 1024):
        poisoned = softmax_entropy.SoftmaxEntropy(
            *(torch.full_like(t, float("nan"), device="cuda") for t in want))
        got = softmax_entropy.launch_kernel(logits, return_probs=True, threads=threads,
                                            out=poisoned)
        for got_t, want_t in zip(got, want):
            torch.testing.assert_close(got_t.cpu(), want_t, rtol=2e-4, atol=2e-5)
    # Several blocks per row (a row's parts merged by a second launch), poisoned the same way.
    for threads, splits in [(256, None), (128, 3), (64, 7), (1024, shape[1])]:
        poisoned = softmax_entropy.SoftmaxEntropy(
            *(torch.full_like(t, float("nan"), device="cuda") for t in want[:3]), None)
        got = softmax_entropy.launch_kernel(logits, threads=threads, splits=splits, out=poisoned)
        for got_t, want_t in zip(got[:3], want[:3]):
            torch.testing.assert_close(got_t.cpu(), want_t, rtol=2e-4, atol=2e-5)
    offset = torch.empty(shape[0] * shape[1] + 1, device="cuda")[1:].view(shape)  # misaligned
    offset.copy_(logits)
    for splits in (1, None):
        got = softmax_entropy.launch_kernel(offset, splits=splits)
        torch.testing.assert_close(got.entropy.cpu(), want.entropy, rtol=2e-4, atol=2e-5)


@pytest.mark.gpu
@pytest.mark.parametrize("min_p, top_p", [(0.0, 1.0), (0.05, 1.0), (0.0, 0.9), (0.1, 0.7)])
@pytest.mark.parametrize("shape", GPU_SHAPES)
def test_gpu_min_p_top_p_sampling_equals_reference(shape, min_p, top_p) -> None:
    _cuda_with_cupy()
    logits = _logits(*shape, seed=shape[1] + 1).cuda()
    uniforms = torch.rand(shape[0], generator=torch.Generator().manual_seed(2)).cuda()
    want = min_p_top_p.reference(logits.double(), uniforms.double(), min_p, top_p)
    got = min_p_top_p.launch_kernel(logits, uniforms, min_p, top_p,
                                    out=torch.full((shape[0],), -7, device="cuda"))
    kept = min_p_top_p.keep_mask(logits.double(), min_p, top_p)
    rows = torch.arange(shape[0], device="cuda")
    assert kept[rows, got].all(), "the kernel drew a token outside the kept set"
    # Float32 sums in another order may move a draw across a CDF step only when the target
    # lies within rounding of it; allow that, nothing else.
    weights = torch.where(kept, torch.exp(logits.double() - logits.double().amax(-1, True)), 0)
    cdf = weights.cumsum(-1)
    target = uniforms.double() * cdf[:, -1]
    near = (cdf[rows, want] - target).abs() < 1e-4 * cdf[:, -1]
    near |= (cdf[rows, want] - weights[rows, want] - target).abs() < 1e-4 * cdf[:, -1]
    assert ((got == want) | near).all(), (got, want)


@pytest.mark.gpu
@pytest.mark.parametrize("batch, gamma, vocab", [(1, 1, 7), (8, 4, 1000), (64, 8, 32001),
                                                 (3, 5, 128256)])
def test_gpu_speculative_verify_equals_reference(batch, gamma, vocab) -> None:
    _cuda_with_cupy()
    target, draft, tokens = (t.cuda() for t in _draft_problem(batch, gamma, vocab, seed=vocab))
    accept = torch.rand(batch, gamma, generator=torch.Generator().manual_seed(1)).cuda()
    sample = torch.rand(batch, generator=torch.Generator().manual_seed(2)).cuda()
    want_len, want_token = speculative_verify.reference(target.double(), draft.double(), tokens,
                                                        accept.double(), sample.double())
    out = (torch.full((batch,), -7, device="cuda"), torch.full((batch,), -7, device="cuda"))
    got_len, got_token = speculative_verify.launch_kernel(target, draft, tokens, accept, sample,
                                                          out=out)
    assert torch.equal(got_len, want_len)
    weights = speculative_verify.next_token_weights(target.double(), draft.double(), want_len)
    rows = torch.arange(batch, device="cuda")
    assert (weights[rows, got_token] > 0).all()
    cdf = weights.cumsum(-1)
    target_mass = sample.double() * cdf[:, -1]
    near = (cdf[rows, want_token] - target_mass).abs() < 1e-4 * cdf[:, -1]
    near |= (cdf[rows, want_token] - weights[rows, want_token] - target_mass).abs() < (
        1e-4 * cdf[:, -1])
    assert ((got_token == want_token) | near).all()


@pytest.mark.gpu
@pytest.mark.parametrize("batch, kv_heads, length, head_dim, n_keep",
                         [(1, 1, 5, 4, 3), (2, 8, 4099, 128, 2047), (3, 32, 1000, 64, 999)])
def test_gpu_kv_compaction_equals_reference(batch, kv_heads, length, head_dim, n_keep) -> None:
    _cuda_with_cupy()
    gen = torch.Generator().manual_seed(length)
    keys = torch.randn(batch, kv_heads, length, head_dim, generator=gen).cuda()
    values = torch.randn(batch, kv_heads, length, head_dim, generator=gen).cuda()
    positions = (torch.randperm(length, generator=gen) + 50).expand(batch, kv_heads, -1).cuda()
    token_index = torch.arange(length).expand(batch, kv_heads, -1).contiguous().cuda()
    positions = positions.contiguous()
    indices = torch.rand(batch, kv_heads, length, generator=gen).topk(n_keep, -1).indices
    indices = indices.sort(-1).values.cuda()
    want = kv_compaction.reference(keys, values, positions, token_index, indices)
    poisoned = (torch.full_like(want[0], float("nan")), torch.full_like(want[1], float("nan")),
                torch.full_like(want[2], -7), torch.full_like(want[3], -7))
    got = kv_compaction.launch_kernel(keys, values, positions, token_index, indices, out=poisoned)
    for got_t, want_t in zip(got, want):
        torch.testing.assert_close(got_t, want_t, rtol=1e-4, atol=1e-4)


@pytest.mark.gpu
@pytest.mark.parametrize("batch, heads, kv_heads, n_queries, n_keys, head_dim",
                         [(1, 1, 1, 1, 1, 8), (2, 4, 2, 3, 9, 16), (1, 32, 8, 16, 4099, 128),
                          (2, 8, 8, 5, 1000, 80), (3, 6, 2, 7, 300, 256)])
def test_gpu_received_attention_equals_reference(batch, heads, kv_heads, n_queries, n_keys,
                                                 head_dim) -> None:
    _cuda_with_cupy()
    gen = torch.Generator().manual_seed(n_keys)
    queries = torch.randn(batch, heads, n_queries, head_dim, generator=gen).cuda()
    keys = torch.randn(batch, kv_heads, n_keys, head_dim, generator=gen).cuda()
    want = attention_scores.reference(queries, keys)
    got = attention_scores.launch_kernel(
        queries, keys, out=torch.full((batch, kv_heads, n_keys), float("nan"), device="cuda"))
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


@pytest.mark.gpu
def test_gpu_dispatch_runs_the_kernels_inside_minidecode() -> None:
    _cuda_with_cupy()
    logits = _logits(4, 5000, seed=0).cuda()
    entropy, varentropy = entropy_varentropy(logits)          # the kernel path
    torch.testing.assert_close(entropy, entropy_varentropy(logits.cpu())[0].cuda(), rtol=2e-4,
                               atol=2e-5)
    from minidecode.sampling import sample_next_token

    tokens = sample_next_token(logits, torch.Generator(device="cuda").manual_seed(0))
    assert tokens.shape == (4,) and tokens.is_cuda
    # A head_dim the kernel cannot take (float4 loads) falls back to the reference.
    q, k = torch.randn(1, 4, 3, 6, device="cuda"), torch.randn(1, 2, 10, 6, device="cuda")
    torch.testing.assert_close(kernels.received_attention(q, k),
                               attention_scores.reference(q, k))
