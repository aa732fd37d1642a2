"""speculative_generate takes a student's own rules (chapter 07): ``verify=`` (a function like
verify_position) when sampling, ``accept_prefix=`` (like accepted_prefix_length) when greedy. The
package's own functions plugged in give exactly the default output; a broken rule changes it."""

from __future__ import annotations

import pytest
import torch

import minidecode
from minidecode.speculative import (
    ModelDrafter,
    accepted_prefix_length,
    speculative_generate,
    verify_position,
)
from minidecode.tinyworld.evaluate import encode_prompt, held_out_docs


@pytest.fixture(scope="module")
def pair():
    target, tokenizer = minidecode.load("main")
    draft, _ = minidecode.load("main-draft")
    prompt = torch.tensor([encode_prompt(tokenizer, held_out_docs("stories", 1)[0].text)[:24]])
    return target, draft, prompt


def _sampled(pair, seed: int, **hooks) -> list[int]:
    target, draft, prompt = pair
    out = speculative_generate(target, ModelDrafter(draft), prompt, 40, gamma=4, do_sample=True,
                               temperature=1.0, generator=torch.Generator().manual_seed(seed),
                               **hooks)
    return out.tokens[0].tolist()


def _always_accept(p, q, draft_token, uniform):
    return torch.nn.functional.one_hot(torch.tensor(draft_token), p.shape[-1]).to(p.dtype)


def _resample_from_p(p, q, draft_token, uniform):  # the classic mistake: p, not the residual
    if uniform < min(1.0, float(p[draft_token]) / float(q[draft_token])):
        return _always_accept(p, q, draft_token, uniform)
    return p


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_packages_own_verify_position_gives_the_default_output(pair, seed):
    assert _sampled(pair, seed, verify=verify_position) == _sampled(pair, seed)


def test_a_broken_verify_changes_the_output(pair):
    # six seeds: main-draft agrees with main so often that resampling from p instead of the
    # residual changes none of the first three 40-token samples (it changes seeds 3 to 6)
    default = [_sampled(pair, seed) for seed in range(6)]
    assert [_sampled(pair, seed, verify=_always_accept) for seed in range(6)] != default
    assert [_sampled(pair, seed, verify=_resample_from_p) for seed in range(6)] != default


def test_accept_prefix_hook_in_greedy_rounds(pair):
    target, draft, prompt = pair

    def greedy(**hooks):
        out = speculative_generate(target, ModelDrafter(draft), prompt, 40, gamma=4, **hooks)
        return out.tokens[0].tolist(), [r.accepted_len for r in out.rounds]

    default_tokens, default_accepted = greedy()
    assert greedy(accept_prefix=accepted_prefix_length) == (default_tokens, default_accepted)

    def never_accept(draft_tokens, target_tokens):
        return 0

    tokens, accepted = greedy(accept_prefix=never_accept)
    assert tokens == default_tokens  # greedy output does not depend on the rule's speed ...
    assert set(accepted) == {0} and accepted != default_accepted  # ... but the rounds do


def test_prompt_lookup_takes_your_find_function():
    """PromptLookupDrafter(find=...) runs the student's lookup in the real loop: the package's own
    function gives the same tokens, one that never finds anything drafts nothing."""
    from minidecode import load
    from minidecode.prompt_lookup import PromptLookupDrafter, find_candidate_tokens

    model, tokenizer = load("main")
    text = "| Tom | park | 4 |\n| Mia | beach | 7 |\n| Tom |"
    ids = torch.tensor([[0, *tokenizer.encode(text).ids]])
    default = speculative_generate(model, PromptLookupDrafter(), ids, 12)
    yours = speculative_generate(model, PromptLookupDrafter(find=find_candidate_tokens), ids, 12)
    assert yours.tokens.tolist() == default.tokens.tolist() and default.stats.drafted > 0
    never = speculative_generate(model, PromptLookupDrafter(find=lambda *_: []), ids, 12)
    assert never.tokens.tolist() == default.tokens.tolist() and never.stats.drafted == 0
    with pytest.raises(ValueError, match="find"):
        PromptLookupDrafter(find="lookup")
