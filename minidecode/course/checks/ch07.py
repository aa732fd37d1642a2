"""Chapter 07 (speculative decoding): 07.1 the acceptance rule with the residual for one position,
07.2 the accepted-prefix length of greedy verification, 07.3 prompt-lookup candidate search, 07.4
greedy speculative decoding with cache rollback, end to end, 07.5 the verify step of a greedy
round (find the bug), 07.6 rejected tokens per round at gamma 8."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from hypothesis import strategies as st

from minidecode import speculative
from minidecode.course.grading import Case, exercise
from minidecode.model import ModelConfig, Transformer
from minidecode.prompt_lookup import find_candidate_tokens
from minidecode.speculative import accepted_prefix_length, verify_position


def _probs(values: list[float]) -> torch.Tensor:
    return torch.softmax(torch.tensor(values, dtype=torch.float32), dim=-1)


# 07.1 random cases: two distributions over 2..10 tokens, a drafted token, a uniform number.
@st.composite
def _verify_cases(draw: st.DrawFn) -> Case:
    vocab = draw(st.integers(min_value=2, max_value=10))
    logit = st.floats(min_value=-6.0, max_value=6.0, allow_nan=False, width=32)
    p = _probs(draw(st.lists(logit, min_size=vocab, max_size=vocab)))
    q = _probs(draw(st.lists(logit, min_size=vocab, max_size=vocab)))
    token = draw(st.integers(min_value=0, max_value=vocab - 1))
    uniform = draw(st.floats(min_value=0.0, max_value=0.999, allow_nan=False))
    ratio = float(p[token] / q[token])
    if abs(uniform - ratio) < 1e-4:  # too close to the boundary to judge fairly
        uniform = min(0.999, ratio + 0.01) if ratio < 0.5 else max(0.0, ratio - 0.01)
    return Case(p, q, token, uniform)


@exercise("07.1", reference=verify_position, returns=torch.Tensor, strategy=_verify_cases(),
          max_examples=20, atol=1e-6)
def verify_position_cases() -> Iterator[Case]:
    """Accepted because p > q; accepted and rejected by the uniform; an impossible token; p == q."""
    p = torch.tensor([0.5, 0.3, 0.2])
    q = torch.tensor([0.2, 0.6, 0.2])
    yield Case(p, q, 0, 0.99, name="accept branch: p(x) >= q(x) is always accepted, one-hot")
    yield Case(p, q, 1, 0.3, name="accept branch: 0.3 < 0.3 / 0.6, one-hot")
    yield Case(p, q, 1, 0.7, name="reject branch: the residual norm(max(0, p - q))")
    yield Case(torch.tensor([0.0, 0.5, 0.5]), torch.tensor([0.5, 0.25, 0.25]), 0, 0.0,
               name="reject branch: p(x) = 0 is never accepted")
    yield Case(torch.tensor([0.1, 0.2, 0.3, 0.4]), torch.tensor([0.4, 0.3, 0.2, 0.1]), 0, 0.5,
               name="reject branch: the residual")
    yield Case(torch.tensor([0.25, 0.25, 0.5]), torch.tensor([0.25, 0.25, 0.5]), 2, 0.99,
               name="accept branch: p == q")
    yield Case(torch.tensor([0.25, 0.75]), torch.tensor([0.5, 0.5]), 0, 0.5,
               name="accept only when uniform < p(x) / q(x), strictly: 0.5 rejects")
    yield Case(torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64),
               torch.tensor([0.2, 0.6, 0.2], dtype=torch.float64), 0, 0.5,
               name="accept branch: the one-hot has the dtype of p (float64)")
    yield Case(torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64),
               torch.tensor([0.2, 0.6, 0.2], dtype=torch.float64), 1, 0.9,
               name="reject branch: the residual has the dtype of p (float64)")
    generator = torch.Generator().manual_seed(7)
    for _ in range(4):
        p = torch.softmax(torch.randn(12, generator=generator) * 2, dim=-1)
        q = torch.softmax(torch.randn(12, generator=generator) * 2, dim=-1)
        token = int(torch.argmax(q - p))           # where the draft overshoots: may be rejected
        yield Case(p, q, token, float(torch.rand(1, generator=generator)))


# 07.2 random cases: a draft of 1..8 tokens and a target choice that agrees for a while.
@st.composite
def _prefix_cases(draw: st.DrawFn) -> Case:
    gamma = draw(st.integers(min_value=1, max_value=8))
    draft = draw(st.lists(st.integers(0, 20), min_size=gamma, max_size=gamma))
    agree = draw(st.integers(min_value=0, max_value=gamma))
    rest = draw(st.lists(st.integers(0, 20), min_size=gamma + 1 - agree,
                         max_size=gamma + 1 - agree))
    return Case(torch.tensor(draft), torch.tensor(draft[:agree] + rest))


@exercise("07.2", reference=accepted_prefix_length, returns=int, strategy=_prefix_cases(),
          max_examples=20)
def accepted_prefix_length_cases() -> Iterator[Case]:
    """All accepted, none, some; a later match after a mismatch does not count; lists too."""
    yield Case(torch.tensor([4, 8, 15]), torch.tensor([4, 8, 15, 16]))
    yield Case(torch.tensor([4, 8, 15]), torch.tensor([5, 8, 15, 16]))
    yield Case(torch.tensor([4, 8, 15]), torch.tensor([4, 9, 15, 16]),
               name="stop at the first disagreement: the later match does not count")
    yield Case(torch.tensor([4, 8, 15, 16]), torch.tensor([4, 8, 15, 23, 42]))
    yield Case(torch.tensor([7]), torch.tensor([7, 7]))
    yield Case([1, 2, 3, 4], [1, 2, 0, 4, 5])


# 07.3 random cases: short texts over a tiny vocabulary, so n-grams repeat.
_prompt_lookup_cases = st.builds(
    Case,
    st.lists(st.integers(0, 4), min_size=1, max_size=16),
    st.integers(min_value=1, max_value=4),
    st.integers(min_value=1, max_value=5),
)


@exercise("07.3", reference=find_candidate_tokens, returns=list, strategy=_prompt_lookup_cases,
          max_examples=25)
def find_candidate_tokens_cases() -> Iterator[Case]:
    """Longest n-gram first, latest occurrence first, fewer tokens at the end, no match."""
    yield Case([5, 6, 7, 8, 5, 6], 2, 3)            # [5, 6] at 0 -> [7, 8, 5]
    yield Case([1, 2, 9, 1, 3, 9, 1, 2], 3, 2)      # [9,1,2] never; [1,2] at 0 -> [9, 1]
    yield Case([1, 2, 3, 5, 2, 6, 1, 2], 2, 2,      # [1,2] at 0 -> [3, 5]; [2] at 4 -> [6, 1]
               name="the longest n-gram first")
    yield Case([4, 9, 4, 8, 4], 3, 1,               # the latest earlier 4 is at 2 -> [8]
               name="the latest earlier occurrence")
    yield Case([1, 2, 3, 1], 2, 5)                  # only [1] matches; 3 tokens follow it
    yield Case([1, 2, 3], 3, 4)                     # nothing repeats -> []
    yield Case([3, 3], 1, 5)                        # overlapping copy -> [3]
    yield Case([7], 2, 2)                           # a single token cannot match itself
    yield Case([2, 5, 2, 5, 2, 5], 4, 3)            # [2,5,2,5] at 0 -> [2, 5]
    yield Case([1, 1, 2, 1, 1, 1], 2, 2,            # [1,1] at 3 overlaps the suffix -> [1]
               name="an occurrence overlapping the suffix counts")


# 07.4: whole greedy speculative decoding, on tiny random models (the check is about the
# algorithm, not the text, and a random model runs in a millisecond).
_TINY = ModelConfig(vocab_size=40, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                    tie_word_embeddings=False)


@torch.no_grad()
def _tiny_pair(seed: int, noise: float) -> tuple[Transformer, Transformer]:
    """A random target with peaked logits, and a draft that is the target plus weight noise:
    noise 0 agrees everywhere (every round ends with a bonus token), more noise agrees less."""
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():               # the constructor's own init uses the global RNG
        torch.manual_seed(seed)
        target, draft = Transformer(_TINY), Transformer(_TINY)
    for target_param, draft_param in zip(target.parameters(), draft.parameters()):
        if target_param.dim() >= 2:            # matrices: N(0, 1/fan_in), embeddings N(0, 1)
            fan_in = 1 if target_param is target.embed_tokens.weight else target_param.shape[1]
            target_param.copy_(torch.randn(target_param.shape, generator=generator)
                               / fan_in ** 0.5)
        draft_param.copy_(target_param + noise * target_param.std()
                          * torch.randn(target_param.shape, generator=generator)
                          if target_param.dim() >= 2 else target_param)
    return target.eval(), draft.eval()


def _prompt(seed: int, length: int) -> torch.Tensor:
    return torch.randint(0, _TINY.vocab_size, (1, length),
                         generator=torch.Generator().manual_seed(seed))


def speculative_greedy(target, draft, input_ids, max_new_tokens, gamma):
    """The course's answer: the tokens of ``speculative_generate`` (a draft model in a
    ``ModelDrafter``) and the accepted length of each of its rounds."""
    out = speculative.speculative_generate(target, draft, input_ids, max_new_tokens, gamma=gamma)
    return out.tokens, [r.accepted_len for r in out.rounds]


@st.composite
def _speculative_cases(draw: st.DrawFn) -> Case:
    seed = draw(st.integers(0, 10**6))
    target, draft = _tiny_pair(seed, draw(st.sampled_from([0.0, 0.05, 0.1, 0.3])))
    return Case(target, draft, _prompt(seed, draw(st.integers(1, 8))),
                draw(st.integers(0, 12)), draw(st.integers(1, 5)))


@exercise("07.4", reference=speculative_greedy, returns=tuple, strategy=_speculative_cases(),
          max_examples=4, points=3, answers=(speculative.ModelDrafter,))
def speculative_greedy_cases() -> Iterator[Case]:
    """A draft that always agrees (bonus tokens), one that sometimes does, one that rarely
    does; gamma 1; the last round drafts only what is still needed; nothing to write."""
    target, draft = _tiny_pair(0, 0.1)
    yield Case(target, draft, _prompt(1, 5), 12, 3,
               name="the draft agrees sometimes: accepted prefix, then the target's correction")
    same_target, same_draft = _tiny_pair(2, 0.0)
    yield Case(same_target, same_draft, _prompt(3, 4), 12, 3,
               name="the draft always agrees: each round is gamma tokens plus the bonus token")
    yield Case(same_target, same_draft, _prompt(4, 3), 8, 4,
               name="the last round drafts min(gamma, remaining - 1) tokens")
    yield Case(target, draft, _prompt(5, 6), 10, 1, name="gamma 1")
    far_target, far_draft = _tiny_pair(6, 0.5)
    yield Case(far_target, far_draft, _prompt(7, 2), 10, 5,
               name="a draft that rarely agrees: rolling both caches back")
    yield Case(target, draft, _prompt(8, 1), 12, 4, name="a one-token prompt")
    yield Case(target, draft, _prompt(9, 5), 0, 4, name="max_new_tokens 0: the prompt, no round")
    yield Case(target, draft, _prompt(10, 5), 1, 4, name="one token: a round with no draft")


# 07.5: the verify step of one greedy round (find the bug), on random logits with planted
# agreement: the first `agree` draft tokens are the target's choices, the next one is not.
def _verify_case(seed: int, committed: int, gamma: int, vocab: int, agree: int,
                 name: str = "") -> Case:
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(committed + gamma, vocab, generator=generator) * 3
    choices = logits[committed - 1:].argmax(dim=-1)          # the target's token for draft i
    draft = torch.randint(0, vocab, (gamma,), generator=generator)
    draft[:agree] = choices[:agree]
    if agree < gamma:
        draft[agree] = (choices[agree] + 1) % vocab          # the first disagreement
    return Case(logits, draft, name=name)


@st.composite
def _greedy_verify_cases(draw: st.DrawFn) -> Case:
    gamma = draw(st.integers(1, 6))
    return _verify_case(draw(st.integers(0, 10**6)), draw(st.integers(1, 6)), gamma,
                        draw(st.integers(3, 12)), draw(st.integers(0, gamma)))


@exercise("07.5", reference=speculative.greedy_verify, returns=list,
          strategy=_greedy_verify_cases(), max_examples=25)
def greedy_verify_cases() -> Iterator[Case]:
    """Some accepted then a correction; all accepted then the bonus; none; gamma 1; the draft
    shifted by one position (what the target writes after each draft token) is not accepted."""
    yield _verify_case(0, 4, 4, 10, 2, name="draft token i is checked against row n + i - 1 "
                       "(the logits at t score token t + 1); then the target's correction")
    yield _verify_case(1, 3, 3, 10, 3, name="all gamma accepted: the bonus token from the last row")
    yield _verify_case(2, 5, 4, 10, 0, name="none accepted: the target's correction only")
    yield _verify_case(3, 1, 1, 6, 1, name="gamma 1, one committed token, accepted: + bonus")
    yield _verify_case(4, 2, 1, 6, 0, name="gamma 1, rejected")
    logits = torch.randn(7, 9, generator=torch.Generator().manual_seed(5))
    yield Case(logits, logits[3:6].argmax(dim=-1),
               name="the target's choices one row late are not the draft it accepts")
    yield Case(logits, logits[3:6].argmax(dim=-1).tolist(), name="draft_tokens as a list")


def _red_tokens_per_round(gamma: int) -> float:
    """Rejected draft tokens per round: greedy, 48 tokens from the playground's prompt."""
    import minidecode
    from minidecode.tinyworld.evaluate import encode_prompt

    target, tokenizer = minidecode.load("main")
    draft, _ = minidecode.load("main-draft")
    prompt = torch.tensor([encode_prompt(tokenizer, "One rainy day, Leo woke up early.")])
    rounds = speculative.speculative_generate(target, draft, prompt, 48, gamma=gamma).rounds
    return sum(len(r.drafted) - r.accepted_len for r in rounds) / len(rounds)


def answer_07_6() -> str:
    """The playground at gamma 8: (a) under 1 red token per round, (b) 1 to 3, (c) 3 to 6,
    (d) more than 6 (computed live)."""
    red = _red_tokens_per_round(8)
    return "a" if red < 1 else "b" if red < 3 else "c" if red <= 6 else "d"


@exercise("07.6", reference=answer_07_6, returns=str, max_examples=0)
def answer_07_6_cases() -> Iterator[Case]:
    yield Case(name="the playground's prompt, greedy, 48 tokens, gamma 8")
