"""Every logits-only technique on any transformers causal LM, not only minidecode's Transformer.

Five architectures that transformers builds from a config with seeded random weights (nothing is
downloaded; 2 layers, hidden 64, vocab 96): Llama, Qwen2 (q/k/v biases), Mistral (a sliding
window shorter than the text: the cache must keep what leaves the window to roll back), GPT-2
(learned positions, LayerNorm, GELU) and Gemma (scaled embeddings, GeGLU). Each is wrapped in
``HFModel`` and must give, token for token:

- greedy ``generate`` = transformers' own ``model.generate(do_sample=False)``;
- seeded sampling with minidecode's truncation processors = transformers' sampling with the
  matching flag and the same seed;
- ``cot_decode`` with k = 1 = greedy, and with k = 4 each branch = greedy after its first token;
- ``speculative_generate`` (the model itself, a 1-layer model of the same family, or prompt
  lookup as the drafter) = greedy;
- ``score_continuations`` log-probabilities and entropies = transformers' per-step scores.

Weights are drawn with std 0.2 (transformers' default is 0.02): random models then write varied
text instead of one token over and over, and "the same tokens" is a demanding check.
"""

from __future__ import annotations

import copy

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    GemmaConfig,
    GemmaForCausalLM,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from minidecode.cot import cot_decode
from minidecode.generate import generate
from minidecode.hf_adapter import HFModel
from minidecode.prompt_lookup import PromptLookupDrafter
from minidecode.sampling import Epsilon, Eta, MinP, TopK, TopP, Typical
from minidecode.semantic_uncertainty import score_continuations, step_entropies
from minidecode.speculative import speculative_generate

VOCAB = 96
PROMPT_LEN = 8
NEW_TOKENS = 24
NO_SPECIAL_TOKENS = {"bos_token_id": None, "eos_token_id": None, "pad_token_id": None}


def _llama_like(layers: int) -> dict:
    return {"vocab_size": VOCAB, "hidden_size": 64, "intermediate_size": 128,
            "num_hidden_layers": layers, "num_attention_heads": 4, "num_key_value_heads": 2,
            "max_position_embeddings": 128, "initializer_range": 0.2, **NO_SPECIAL_TOKENS}


def _build(family: str, layers: int):
    if family == "llama":
        return LlamaForCausalLM(LlamaConfig(**_llama_like(layers)))
    if family == "qwen2":                   # q, k and v projections with biases
        return Qwen2ForCausalLM(Qwen2Config(**_llama_like(layers)))
    if family == "mistral":                 # sliding window shorter than prompt + new tokens
        return MistralForCausalLM(MistralConfig(**_llama_like(layers), sliding_window=16))
    if family == "gpt2":
        return GPT2LMHeadModel(GPT2Config(vocab_size=VOCAB, n_embd=64, n_layer=layers, n_head=4,
                                          n_positions=128, initializer_range=0.2,
                                          **NO_SPECIAL_TOKENS))
    if family == "gemma":                   # untied head: a tied one repeats the last token
        return GemmaForCausalLM(GemmaConfig(**_llama_like(layers), head_dim=16,
                                            tie_word_embeddings=False))
    raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")


FAMILIES = ("llama", "qwen2", "mistral", "gpt2", "gemma")


def build(family: str, layers: int = 2, seed: int = 0):
    """A seeded random transformers model of ``family`` in eval mode, float32."""
    torch.manual_seed(seed)
    return _build(family, layers).eval()


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Models this small gain nothing from a second thread, and on a busy 2-core machine two
    threads that wait for each other make every call ~10x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module", params=FAMILIES)
def family(request) -> dict:
    hf = build(request.param)
    prompt = torch.randint(0, VOCAB, (1, PROMPT_LEN), generator=torch.Generator().manual_seed(1))
    model = HFModel(hf)
    return {"name": request.param, "hf": hf, "model": model, "prompt": prompt,
            "greedy": generate(model, prompt, NEW_TOKENS)}


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    """A word-level tokenizer over the 96 ids ("0".."9" are numbers, so CoT finds answers)."""
    words = [str(i) for i in range(10)] + [f"w{i}" for i in range(10, VOCAB)]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="w10"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return tok


def transformers_generate(hf, prompt: torch.Tensor, **settings) -> torch.Tensor:
    config = copy.deepcopy(hf.generation_config)
    config.max_new_tokens = NEW_TOKENS
    config.top_k = 0                        # no default top-50 filter when sampling
    for key, value in settings.items():
        setattr(config, key, value)
    with torch.no_grad():
        return hf.generate(prompt, attention_mask=torch.ones_like(prompt),
                           generation_config=config)


# --------------------------------------------------------------------------- generate
def test_greedy_equals_transformers_generate(family):
    ours = family["greedy"]
    theirs = transformers_generate(family["hf"], family["prompt"], do_sample=False)
    assert ours.tolist() == theirs.tolist()
    assert len(set(ours[0, PROMPT_LEN:].tolist())) >= 4, "the random model should vary its text"


SAMPLERS = [  # minidecode processor, transformers' generate flag for the same rule
    (TopK(k=8), {"top_k": 8}),
    (TopP(top_p=0.7), {"top_p": 0.7}),
    (MinP(min_p=0.2), {"min_p": 0.2}),
    (Typical(mass=0.7), {"typical_p": 0.7}),
    (Epsilon(epsilon=0.02), {"epsilon_cutoff": 0.02}),
    (Eta(epsilon=0.02), {"eta_cutoff": 0.02}),
]


# Every processor on Llama; nucleus sampling on every family (each run costs ~1 s on 2 cores).
SAMPLING_CASES = [("llama", *sampler) for sampler in SAMPLERS] + \
    [(name, *SAMPLERS[1]) for name in FAMILIES if name != "llama"]


@pytest.mark.parametrize(("family", "processor", "flag"), SAMPLING_CASES, indirect=["family"],
                         ids=[f"{name}-{type(p).__name__}" for name, p, _ in SAMPLING_CASES])
def test_sampling_processors_equal_transformers_sampling(family, processor, flag):
    """Same seed, same temperature, same truncation rule -> the same sampled tokens."""
    model, hf, prompt = family["model"], family["hf"], family["prompt"]
    ours = generate(model, prompt, NEW_TOKENS, do_sample=True, temperature=0.8,
                    logits_processors=[processor], generator=torch.Generator().manual_seed(7))
    torch.manual_seed(7)
    theirs = transformers_generate(hf, prompt, do_sample=True, temperature=0.8, **flag)
    assert ours.tolist() == theirs.tolist()
    assert ours.tolist() != family["greedy"].tolist(), "sampling should leave the greedy path"


# --------------------------------------------------------------------------- CoT decoding
def test_cot_decoding_with_one_branch_is_greedy(family, tokenizer):
    result = cot_decode(family["model"], tokenizer, family["prompt"], k=1,
                        max_new_tokens=NEW_TOKENS)
    assert result.paths[0].tokens == family["greedy"][0, PROMPT_LEN:].tolist()


def test_cot_branches_share_the_prompt_cache(family, tokenizer):
    """k = 4 branches decoded as one batch over the repeated transformers cache: branch j is the
    greedy continuation of prompt + its first token j (what failed before caches could repeat)."""
    model, prompt = family["model"], family["prompt"]
    result = cot_decode(model, tokenizer, prompt, k=4, max_new_tokens=12)
    firsts = [path.first_token for path in result.paths]
    assert len(set(firsts)) == 4
    for path in result.paths:
        branch = torch.cat([prompt, torch.tensor([[path.first_token]])], dim=1)
        expected = generate(model, branch, 11)[0, PROMPT_LEN:].tolist()
        assert path.tokens == expected


# --------------------------------------------------------------------------- speculative
@pytest.mark.parametrize("drafter", ["itself", "one-layer", "prompt-lookup"])
def test_speculative_decoding_is_greedy(family, drafter):
    model, prompt, greedy = family["model"], family["prompt"], family["greedy"]
    if drafter == "itself":
        draft = HFModel(family["hf"])
    elif drafter == "one-layer":
        draft = HFModel(build(family["name"], layers=1, seed=1))
    else:
        draft = PromptLookupDrafter(max_ngram=2)
        prompt = torch.cat([prompt, prompt], dim=1)     # text that repeats, so lookups find it
        greedy = generate(model, prompt, NEW_TOKENS)
    out = speculative_generate(model, draft, prompt, NEW_TOKENS, gamma=4)
    assert out.tokens.tolist() == greedy.tolist()
    assert out.stats.drafted > 0
    if drafter == "itself":
        assert out.stats.rejected == 0
    if drafter == "one-layer":
        assert out.stats.rejected > 0, "a random draft should be rejected: the rollback is tested"


# --------------------------------------------------------------------------- uncertainty
def test_continuation_scores_equal_transformers_scores(family):
    """log p(token) and the entropy of every step of the greedy continuation, from one forward
    pass (``score_continuations``), match the per-step logits transformers' generate returns."""
    model, hf, prompt, greedy = family["model"], family["hf"], family["prompt"], family["greedy"]
    continuation = greedy[0, PROMPT_LEN:].tolist()
    log_probs, entropies, mask = score_continuations(model, prompt[0].tolist(), [continuation])
    out = transformers_generate(hf, prompt, do_sample=False, output_logits=True,
                                return_dict_in_generate=True)
    step_logits = torch.stack(out.logits, dim=1).float()            # (1, steps, vocab)
    expected = torch.log_softmax(step_logits, dim=-1)[0, range(NEW_TOKENS), continuation]
    assert bool(mask.all())
    torch.testing.assert_close(log_probs[0], expected, atol=1e-4, rtol=0)
    torch.testing.assert_close(entropies, step_entropies(step_logits), atol=1e-4, rtol=0)
