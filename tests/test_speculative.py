"""Speculative decoding (chapter 07): exact greedy output, lossless sampling, cache rollback.

The lossless tests run the real verification code (``verify_draft``) on 20,000 seeded drafts at
once, with the target's and the draft's distributions computed once for a short fixed context (so
20,000 runs cost a few batched model calls, not 20,000 decodes), and compare the distribution of
the emitted tokens with the target's by a chi-square test at a fixed seed. A deliberately wrong
rule (on rejection, sample from p instead of the residual) fails the same test: it has power.
"""

from __future__ import annotations

import copy

import pytest
import torch
from scipy.stats import chisquare
from transformers import (
    AutoModelForCausalLM,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
)

import minidecode
from minidecode.checkpoint import MODELS_DIR
from minidecode.generate import generate
from minidecode.hf_adapter import HFModel
from minidecode.model import ModelConfig, Transformer
from minidecode.prompt_lookup import PromptLookupDrafter, find_candidate_tokens
from minidecode.speculative import (
    ModelDrafter,
    accepted_prefix_length,
    expected_tokens_per_call,
    processed_probs,
    residual_probs,
    speculative_generate,
    theoretical_speedup,
    verify_draft,
    verify_position,
)
from minidecode.tinyworld.evaluate import encode_prompt, held_out_docs

RUNS = 20_000
P_VALUE_FLOOR = 1e-3


@pytest.fixture(scope="module")
def pair():
    target, tokenizer = minidecode.load("main")
    draft, _ = minidecode.load("main-draft")
    return target, draft, tokenizer


@pytest.fixture(scope="module")
def prompts(pair):
    _, _, tokenizer = pair
    docs = held_out_docs("stories", 4) + held_out_docs("structured", 4)
    return [torch.tensor([encode_prompt(tokenizer, doc.text)[:24 + 4 * i]])
            for i, doc in enumerate(docs)]


# --------------------------------------------------------------------------- greedy is exact
@pytest.mark.parametrize("gamma", range(1, 9))
def test_greedy_speculative_equals_target_greedy(pair, prompts, gamma):
    target, draft, _ = pair
    for input_ids in prompts:
        expected = generate(target, input_ids, 40)
        out = speculative_generate(target, draft, input_ids, 40, gamma=gamma)
        assert torch.equal(out.tokens, expected), f"gamma={gamma}, prompt {input_ids.tolist()}"
        assert out.stats.new_tokens == 40
        assert sum(r.accepted_len + 1 for r in out.rounds) >= 40
        assert out.stats.target_calls == len(out.rounds)


@pytest.mark.parametrize("gamma", [1, 3, 8])
def test_prompt_lookup_and_adaptive_gamma_are_exact_too(pair, prompts, gamma):
    target, draft, _ = pair
    for input_ids in prompts[::2]:
        expected = generate(target, input_ids, 40)
        lookup = speculative_generate(target, PromptLookupDrafter(3), input_ids, 40, gamma=gamma)
        adaptive = speculative_generate(target, draft, input_ids, 40, gamma=gamma,
                                        adaptive_gamma=True, max_gamma=10)
        assert torch.equal(lookup.tokens, expected)
        assert torch.equal(adaptive.tokens, expected)
        assert lookup.stats.draft_calls == 0


def test_greedy_with_an_input_dependent_processor_and_eos(pair, prompts):
    """A repetition penalty reads the text so far: each verified position sees its own prefix."""
    target, draft, _ = pair
    processors = [RepetitionPenaltyLogitsProcessor(1.3)]
    for input_ids in prompts[:4]:
        expected = generate(target, input_ids, 40, logits_processors=processors)
        out = speculative_generate(target, draft, input_ids, 40, gamma=4,
                                   logits_processors=processors)
        assert torch.equal(out.tokens, expected)
        stop = int(expected[0, input_ids.shape[1] + 5])        # pretend the 6th token is EOS
        expected = generate(target, input_ids, 40, eos_token_id=stop)
        out = speculative_generate(target, draft, input_ids, 40, gamma=4, eos_token_id=stop)
        assert torch.equal(out.tokens, expected)


def test_adaptive_gamma_grows_and_shrinks(pair, prompts):
    target, _, _ = pair
    out = speculative_generate(target, PromptLookupDrafter(), prompts[-1], 60, gamma=2,
                               adaptive_gamma=True, max_gamma=8)
    assert len(set(out.stats.gammas)) > 1 and max(out.stats.gammas) <= 8


# --------------------------------------------------------------------------- transformers
@pytest.fixture(scope="module")
def hf_pair():
    target = AutoModelForCausalLM.from_pretrained(MODELS_DIR / "main",
                                                  dtype=torch.float32).eval()
    draft = AutoModelForCausalLM.from_pretrained(MODELS_DIR / "main-draft",
                                                 dtype=torch.float32).eval()
    return target, draft


@pytest.mark.parametrize("gamma", [1, 4, 8])
def test_greedy_equals_transformers_assisted_generation(pair, hf_pair, prompts, gamma):
    target, draft, _ = pair
    hf_target, hf_draft = hf_pair
    config = copy.deepcopy(hf_target.generation_config)
    eos = hf_target.generation_config.eos_token_id   # assisted generation always stops there
    config.eos_token_id = eos
    config.do_sample = False
    config.max_new_tokens = 40
    hf_draft.generation_config.num_assistant_tokens = gamma
    hf_draft.generation_config.num_assistant_tokens_schedule = "constant"
    for input_ids in prompts:
        with torch.no_grad():
            assisted = hf_target.generate(input_ids, attention_mask=torch.ones_like(input_ids),
                                          assistant_model=hf_draft, generation_config=config)
        ours = speculative_generate(target, draft, input_ids, 40, gamma=gamma, eos_token_id=eos)
        assert ours.tokens.tolist() == assisted.tolist()
        # ... and through the adapter, on the transformers models themselves
        adapted = speculative_generate(HFModel(hf_target), HFModel(hf_draft), input_ids, 40,
                                       gamma=gamma, eos_token_id=eos)
        assert adapted.tokens.tolist() == assisted.tolist()


# --------------------------------------------------------------------------- lossless sampling
def _probs_after(model, prefixes: torch.Tensor, processors, temperature=1.0) -> torch.Tensor:
    """(rows, len) prefixes -> (rows, vocab) processed next-token probabilities, in one call."""
    with torch.no_grad():
        logits = model(prefixes).logits[:, -1, :].float()
    scores = logits
    for processor in processors:
        scores = processor(prefixes, scores)
    return torch.softmax(scores / temperature, dim=-1)


def _rows_for(model, context, columns: torch.Tensor, processors, temperature):
    """Probabilities after context + each row of ``columns`` (runs, k), once per unique row."""
    if columns.shape[1] == 0:
        return _probs_after(model, context, processors, temperature).expand(columns.shape[0], -1)
    unique, inverse = torch.unique(columns, dim=0, return_inverse=True)
    prefixes = torch.cat([context.expand(unique.shape[0], -1), unique], dim=1)
    return _probs_after(model, prefixes, processors, temperature)[inverse]


def _simulate(target, draft_probs_fn, context, gamma, processors, temperature, seed,
              wrong_rule=False):
    """RUNS independent speculative rounds from ``context``: returns (first emitted tokens,
    accepted lengths, drafts, next tokens, p_1)."""
    generator = torch.Generator().manual_seed(seed)
    drafts, qs = [], []
    for _ in range(gamma):
        so_far = torch.stack(drafts, 1) if drafts else torch.zeros(RUNS, 0, dtype=torch.long)
        q = draft_probs_fn(so_far)                                        # (RUNS, vocab)
        drafts.append(torch.multinomial(q, 1, generator=generator).squeeze(1))
        qs.append(q)
    draft_tokens = torch.stack(drafts, 1)                                 # (RUNS, gamma)
    draft_probs = torch.stack(qs, 1)
    ps = [_rows_for(target, context, draft_tokens[:, :i], processors, temperature)
          for i in range(gamma + 1)]
    target_probs = torch.stack(ps, 1)                                     # (RUNS, gamma+1, V)
    accepted_len, next_token = verify_draft(target_probs, draft_probs, draft_tokens, generator)
    if wrong_rule:  # the classic mistake: on rejection, resample from p instead of the residual
        rows = torch.arange(RUNS)
        p_at = target_probs[rows, accepted_len.clamp(max=gamma - 1)]
        resampled = torch.multinomial(p_at, 1, generator=generator).squeeze(1)
        next_token = torch.where(accepted_len < gamma, resampled, next_token)
    first = torch.where(accepted_len >= 1, draft_tokens[:, 0], next_token)
    return first, accepted_len, draft_tokens, next_token, target_probs[0, 0]


def _chi_square_p_value(samples: torch.Tensor, probs: torch.Tensor) -> float:
    """Goodness of fit of ``samples`` (ids) to ``probs``; bins expecting < 5 counts are pooled."""
    counts = torch.bincount(samples, minlength=probs.shape[0]).double()
    expected = probs.double() * samples.numel()
    assert counts[expected == 0].sum() == 0, "a token of probability 0 was emitted"
    big = expected >= 5
    observed = torch.cat([counts[big], counts[~big].sum()[None]])
    wanted = torch.cat([expected[big], expected[~big].sum()[None]])
    if wanted[-1] < 5:                       # pool the rare bin into the smallest kept bin
        observed, wanted = observed[:-1], wanted[:-1]
        observed[-1] += counts[~big].sum()
        wanted[-1] += expected[~big].sum()
    wanted = wanted * observed.sum() / wanted.sum()
    assert observed.numel() >= 2, "a near-deterministic distribution: nothing to test"
    return float(chisquare(observed.numpy(), wanted.numpy()).pvalue)


@pytest.fixture(scope="module")
def context(pair):
    _, _, tokenizer = pair
    return torch.tensor([encode_prompt(tokenizer, "Once upon a time, there was a")])


def _model_draft(draft, context, processors, temperature):
    return lambda so_far: _rows_for(draft, context, so_far, processors, temperature)


CASES = {
    "draft model, T=1": ([], 1.0),
    "draft model, T=1.5": ([], 1.5),
    "temperature 0.7 and top-k 20": ([TemperatureLogitsWarper(0.7), TopKLogitsWarper(20)], 1.0),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("gamma", [1, 3])
def test_speculative_sampling_is_lossless(pair, context, case, gamma):
    target, draft, _ = pair
    processors, temperature = CASES[case]
    first, accepted_len, *_, p1 = _simulate(
        target, _model_draft(draft, context, processors, temperature), context, gamma,
        processors, temperature, seed=1234)
    assert 0 < float((accepted_len == 0).double().mean()) < 1, "the test needs both outcomes"
    assert _chi_square_p_value(first, p1) > P_VALUE_FLOOR


def test_lossless_with_a_deliberately_bad_uniform_draft(pair, context):
    target, _, _ = pair
    vocab = target.vocab_size
    uniform = lambda so_far: torch.full((RUNS, vocab), 1.0 / vocab)
    first, accepted_len, *_, p1 = _simulate(target, uniform, context, 1, [], 1.0, seed=7)
    assert float((accepted_len == 0).double().mean()) > 0.9      # almost everything is rejected
    assert _chi_square_p_value(first, p1) > P_VALUE_FLOOR
    # with top-k on the target's side too: q is uniform over the whole vocabulary, p over 20
    processors = [TopKLogitsWarper(20)]
    first, *_, p1 = _simulate(target, uniform, context, 1, processors, 1.0, seed=8)
    assert int((p1 > 0).sum()) == 20
    assert _chi_square_p_value(first, p1) > P_VALUE_FLOOR


def test_lossless_second_token_given_the_first_was_accepted(pair, context):
    """Position 2 and the bonus rule: among runs whose first draft token was accepted as y, the
    second emitted token must follow p(. | context, y). (At temperature 2: at T = 1 the models
    are nearly certain of the token after the story's first open slot.)"""
    target, draft, _ = pair
    temperature = 2.0
    first, accepted_len, draft_tokens, next_token, _ = _simulate(
        target, _model_draft(draft, context, [], temperature), context, 2, [], temperature,
        seed=99)
    accepted_first = draft_tokens[accepted_len >= 1, 0]
    frequent = [int(t) for t in accepted_first.unique() if (accepted_first == t).sum() >= 1500]
    followers = _probs_after(target, torch.cat(
        [context.expand(len(frequent), -1), torch.tensor(frequent)[:, None]], dim=1), [],
        temperature)
    entropy = -(followers * followers.clamp(min=1e-12).log()).sum(-1)
    y, p2 = frequent[int(entropy.argmax())], followers[int(entropy.argmax())]   # most uncertain
    kept = (accepted_len >= 1) & (draft_tokens[:, 0] == y)
    second = torch.where(accepted_len[kept] >= 2, draft_tokens[kept, 1], next_token[kept])
    assert kept.sum() >= 1500 and float(entropy.max()) > 0.1
    assert _chi_square_p_value(second, p2) > P_VALUE_FLOOR


def test_the_chi_square_test_catches_a_wrong_rule(pair, context):
    target, draft, _ = pair
    first, *_, p1 = _simulate(target, _model_draft(draft, context, [], 1.0), context, 1, [], 1.0,
                              seed=1234, wrong_rule=True)
    # the floor the real rule passes above, with a factor 10 to spare (p = 3e-5 at this seed;
    # bench_lossless.py: a median of 5e-6 over 20 seeds at top-k 50)
    assert _chi_square_p_value(first, p1) < P_VALUE_FLOOR / 10


def test_speculative_sampling_end_to_end_matches_plain_sampling(pair, context):
    """The full loop (prompt lookup and the draft model) on 600 seeded runs: first-token histogram
    against the target's distribution, with temperature and top-k."""
    target, draft, _ = pair
    processors = [TopKLogitsWarper(10)]
    p1 = processed_probs(context, target(context).logits[0, -1:].detach(), processors, 0.8)[0]
    for drafter in (ModelDrafter(draft), PromptLookupDrafter()):
        firsts = []
        for seed in range(600):
            out = speculative_generate(target, drafter, context, 3, gamma=3, do_sample=True,
                                       temperature=0.8, logits_processors=processors,
                                       generator=torch.Generator().manual_seed(seed))
            firsts.append(int(out.tokens[0, context.shape[1]]))
            assert out.tokens.shape[1] == context.shape[1] + 3
        assert _chi_square_p_value(torch.tensor(firsts), p1) > P_VALUE_FLOOR


# --------------------------------------------------------------------------- cache rollback
def _assert_same_cache(cache, reference):
    assert cache.seen_tokens == reference.seen_tokens
    assert cache.next_position == reference.next_position
    for layer in range(cache.num_layers):
        assert torch.equal(cache.positions[layer], reference.positions[layer])
        torch.testing.assert_close(cache.keys[layer], reference.keys[layer], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(cache.values[layer], reference.values[layer], atol=1e-5,
                                   rtol=1e-4)


def test_cache_after_a_rejection_equals_plain_decoding_of_the_accepted_text(pair, prompts):
    target, draft, _ = pair
    checked = 0
    for input_ids in prompts:
        for new_tokens in (9, 17):
            cache, drafter = target.new_cache(), ModelDrafter(draft)
            out = speculative_generate(target, drafter, input_ids, new_tokens, gamma=4,
                                       cache=cache)
            if out.stats.rejected == 0:
                continue                                # no rollback happened: nothing to test
            checked += 1      # (the last round always ends at max_new_tokens, so the rollbacks
            # checked here are the earlier rounds': a stale entry would shift every later one)
            reference = target.new_cache()
            target(out.tokens[:, :-1], reference)       # the cache holds all but the newest token
            _assert_same_cache(cache, reference)
            draft_reference = draft.new_cache()
            draft(out.tokens[:, : drafter.cache.seen_tokens], draft_reference)
            assert drafter.cache.seen_tokens <= out.tokens.shape[1] - 1
            _assert_same_cache(drafter.cache, draft_reference)
    assert checked >= 6


# --------------------------------------------------------------------------- the parts
def test_verify_position_accepts_or_returns_the_residual():
    p = torch.tensor([0.5, 0.3, 0.2])
    q = torch.tensor([0.2, 0.6, 0.2])
    assert torch.equal(verify_position(p, q, 0, 0.99), torch.tensor([1.0, 0.0, 0.0]))  # p > q
    assert torch.equal(verify_position(p, q, 1, 0.49), torch.tensor([0.0, 1.0, 0.0]))  # 0.3/0.6
    torch.testing.assert_close(verify_position(p, q, 1, 0.51), torch.tensor([1.0, 0.0, 0.0]))
    torch.testing.assert_close(residual_probs(p, p), p)


def test_accepted_prefix_length():
    assert accepted_prefix_length([1, 2, 3], [1, 2, 3, 4]) == 3
    assert accepted_prefix_length([1, 2, 3], [1, 5, 3, 4]) == 1
    assert accepted_prefix_length(torch.tensor([7]), torch.tensor([8, 9])) == 0
    assert accepted_prefix_length([], [4]) == 0


def test_find_candidate_tokens_takes_the_latest_longest_match():
    assert find_candidate_tokens([5, 6, 7, 8, 5, 6], 2, 3) == [7, 8, 5]
    assert find_candidate_tokens([1, 2, 9, 1, 3, 9, 1, 2], 3, 2) == [9, 1]    # [1, 2] at 0
    assert find_candidate_tokens([4, 9, 4, 8, 4], 3, 1) == [8]                 # latest 4 at 2
    assert find_candidate_tokens([1, 2, 3], 3, 4) == []
    assert find_candidate_tokens(torch.tensor([3, 3]), 1, 5) == [3]


def test_theory_formulas():
    assert expected_tokens_per_call(0.0, 4) == 1.0
    assert expected_tokens_per_call(1.0, 4) == 5.0
    assert abs(expected_tokens_per_call(0.8, 2) - (1 + 0.8 + 0.64)) < 1e-12
    assert abs(theoretical_speedup(0.8, 2, 0.5) - 2.44 / 2.0) < 1e-12
    # the verify call on gamma + 1 tokens costing v target calls: S = E / (gamma c + v)
    assert abs(theoretical_speedup(0.8, 2, 0.5, verify_cost=1.5) - 2.44 / 2.5) < 1e-12
    assert theoretical_speedup(0.8, 2, 0.5, verify_cost=1.0) == theoretical_speedup(0.8, 2, 0.5)
    with pytest.raises(ValueError, match="verify_cost"):
        theoretical_speedup(0.8, 2, 0.5, verify_cost=0.5)


def test_stats_alpha_matches_the_round_log(pair, prompts):
    target, draft, _ = pair
    out = speculative_generate(target, draft, prompts[1], 50, gamma=3)
    rejected = sum(r.accepted_len < len(r.drafted) for r in out.rounds)
    accepted = sum(r.accepted_len for r in out.rounds)
    assert out.stats.alpha == pytest.approx(accepted / (accepted + rejected))
    assert out.stats.draft_calls == sum(len(r.drafted) for r in out.rounds)
    assert out.stats.tokens_per_target_call == pytest.approx(50 / len(out.rounds))


# --------------------------------------------------------------------------- bad input
def test_bad_input_is_named(pair, prompts):
    target, draft, tokenizer = pair
    ids = prompts[0]
    for gamma in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="gamma must be an int >= 1"):
            speculative_generate(target, draft, ids, 5, gamma=gamma)
    other = Transformer(ModelConfig(vocab_size=500, hidden_size=32, intermediate_size=64,
                                    num_hidden_layers=1, num_attention_heads=2,
                                    num_key_value_heads=1))
    with pytest.raises(ValueError, match="different vocabularies"):
        speculative_generate(target, other, ids, 5)

    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel

    with pytest.raises(ValueError, match="tokenizers differ"):
        ModelDrafter(draft, tokenizer=Tokenizer(WordLevel({"a": 0, "[UNK]": 1}, unk_token="[UNK]")),
                     target_tokenizer=tokenizer)
    ModelDrafter(draft, tokenizer=tokenizer, target_tokenizer=tokenizer)  # the same: fine

    class NoCache:
        vocab_size = target.vocab_size

        def __call__(self, input_ids, cache=None):
            return target(input_ids)

    with pytest.raises(ValueError, match="target model has no KV cache"):
        speculative_generate(NoCache(), draft, ids, 5)
    with pytest.raises(ValueError, match="shape \\(1, prompt\\)"):
        speculative_generate(target, draft, ids.repeat(2, 1), 5)


def test_greedy_verify_checks_draft_token_i_against_the_row_before_it_and_adds_one_token():
    from minidecode.speculative import greedy_verify

    # 2 committed tokens then 3 drafts: rows 1, 2, 3 score the drafts, row 4 is the bonus row.
    choices = [9, 4, 5, 6, 7]                       # the argmax of each of the 5 rows
    logits = torch.nn.functional.one_hot(torch.tensor(choices), 10).float()
    assert greedy_verify(logits, torch.tensor([4, 5, 6])) == [4, 5, 6, 7]     # + the bonus
    assert greedy_verify(logits, torch.tensor([4, 8, 6])) == [4, 5]          # + the correction
    assert greedy_verify(logits, [1, 5, 6]) == [4]
    assert greedy_verify(logits, [5, 6, 7]) == [4]  # the same tokens one row late do not count
    with pytest.raises(ValueError, match="gamma >= 1"):
        greedy_verify(logits, [])
    with pytest.raises(ValueError, match="n >= 1"):
        greedy_verify(logits[:3], [4, 5, 6])


def test_greedy_verify_is_what_a_greedy_round_of_speculative_generate_emits(pair, prompts):
    from minidecode.speculative import greedy_verify

    target, draft, _ = pair
    ids = prompts[0]
    out = speculative_generate(target, draft, ids, 8, gamma=4)
    first = out.rounds[0]
    with torch.no_grad():
        logits = target(torch.cat([ids, torch.tensor([first.drafted])], dim=1)).logits[0]
    assert greedy_verify(logits, first.drafted) == [*first.drafted[:first.accepted_len],
                                                    first.next_token]
