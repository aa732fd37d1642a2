"""The one decode loop: temperature before the processors (as transformers orders its warpers),
one draw, and processors that declare their state so speculative decoding can roll it back."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest
import torch

import minidecode
from minidecode.generate import decode_steps, draw, generate, prefill, process_scores
from minidecode.multi_objective import MODProcessor
from minidecode.sampling import MinP, TopK, TopP
from minidecode.speculative import ModelDrafter, speculative_generate

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def target():
    return minidecode.load("main")[0]


@pytest.fixture(scope="module")
def tokenizer():
    return minidecode.load("main")[1]


@pytest.fixture(scope="module")
def draft():
    return minidecode.load("main-draft")[0]


def support(scores: torch.Tensor) -> set[int]:
    return set(torch.nonzero(torch.isfinite(scores[0]) & (scores[0] > -1e30)).flatten().tolist())


def transformers_support(logits: torch.Tensor, temperature: float, warper) -> set[int]:
    """The tokens transformers' sampling may draw: TemperatureLogitsWarper, then ``warper``."""
    ids = torch.zeros(1, 1, dtype=torch.long)
    scores = transformers.TemperatureLogitsWarper(temperature)(ids, logits.clone())
    return support(warper(ids, scores))


@pytest.fixture(scope="module")
def prompt_logits(target, tokenizer):
    ids = torch.tensor([[0, *tokenizer.encode("Once upon a time, there was a").ids]])
    _, logits = prefill(target, ids)
    return ids, logits


@pytest.mark.parametrize("temperature,top_p", [(0.6, 0.5), (0.3, 0.9), (1.5, 0.5), (2.0, 0.7)])
def test_sampled_tokens_lie_in_transformers_support(target, prompt_logits, temperature, top_p):
    ids, logits = prompt_logits
    allowed = transformers_support(logits, temperature, transformers.TopPLogitsWarper(top_p))
    rows = ids.expand(300, -1)
    out = generate(target, rows, 1, do_sample=True, temperature=temperature,
                   logits_processors=[TopP(top_p)],
                   generator=torch.Generator().manual_seed(0))
    drawn = set(out[:, -1].tolist())
    assert drawn <= allowed
    # The kept set is exactly transformers' one (not merely a subset that happened to be drawn).
    assert support(process_scores(ids, logits, [TopP(top_p)], temperature)) == allowed


def test_the_support_test_can_fail(prompt_logits):
    """Truncating first and dividing afterwards keeps another set: the order is observable."""
    ids, logits = prompt_logits
    for temperature, top_p in [(0.3, 0.9), (1.5, 0.5)]:
        truncate_then_divide = support(TopP(top_p)(ids, logits.clone()) / temperature)
        assert truncate_then_divide != transformers_support(
            logits, temperature, transformers.TopPLogitsWarper(top_p))


def test_min_p_and_top_k_follow_transformers_after_temperature(prompt_logits):
    ids, logits = prompt_logits
    for ours, theirs in [(MinP(0.1), transformers.MinPLogitsWarper(0.1)),
                         (TopK(5), transformers.TopKLogitsWarper(5))]:
        assert support(process_scores(ids, logits, [ours], 0.7)) == transformers_support(
            logits, 0.7, theirs)


def test_generate_is_decode_steps(target, prompt_logits):
    """``generate`` adds nothing to the loop: the same tokens as iterating decode_steps."""
    ids, _ = prompt_logits
    expected = generate(target, ids, 12, do_sample=True, temperature=0.8,
                        logits_processors=[TopK(20)], generator=torch.Generator().manual_seed(3))
    cache, logits = prefill(target, ids)
    steps = decode_steps(target, cache, logits, input_ids=ids, processors=[TopK(20)],
                         temperature=0.8, do_sample=True,
                         generator=torch.Generator().manual_seed(3))
    tokens = [int(next(steps).token[0]) for _ in range(12)]
    assert expected[0, ids.shape[1]:].tolist() == tokens


def test_draw_on_cpu_is_torch_multinomial():
    """A CPU run draws exactly torch.multinomial's numbers (no kernel changes the stream)."""
    scores = torch.randn(4, 50, generator=torch.Generator().manual_seed(1))
    ours = draw(scores, True, torch.Generator().manual_seed(7))
    plain = torch.multinomial(torch.softmax(scores, -1), 1,
                              generator=torch.Generator().manual_seed(7))[:, 0]
    assert torch.equal(ours, plain)


@pytest.mark.parametrize("bad", [-0.5, float("nan"), float("inf"), "hot"])
def test_bad_temperature_is_named(target, prompt_logits, bad):
    ids, _ = prompt_logits
    with pytest.raises(ValueError, match="temperature"):
        generate(target, ids, 2, do_sample=True, temperature=bad)


# ------------------------------------------------------------------------- every processor
def processor_classes() -> dict[str, type]:
    """Every public logits-processor class in the package: a class whose ``__call__`` takes
    ``(input_ids, scores)``, leaving out base classes that others extend (``Truncation``)."""
    found = {}
    for info in pkgutil.walk_packages(minidecode.__path__, "minidecode."):
        if ".course" in info.name or ".kernels" in info.name:
            continue
        module = importlib.import_module(info.name)
        for name, cls in vars(module).items():
            if (inspect.isclass(cls) and cls.__module__ == module.__name__
                    and not name.startswith("_") and "__call__" in dir(cls)
                    and cls.__call__ is not type.__call__
                    and not getattr(cls, "_is_protocol", False)):
                params = list(inspect.signature(cls.__call__).parameters)
                if params[1:3] == ["input_ids", "scores"]:
                    found[name] = cls
    bases = {b for cls in found.values() for b in cls.__mro__[1:]}
    return {name: cls for name, cls in found.items() if cls not in bases}


def build(name: str, draft) -> object:
    from minidecode import adaptive, sampling, temperature

    makers = {
        "Temperature": lambda: sampling.Temperature(0.8), "TopK": lambda: sampling.TopK(8),
        "TopP": lambda: sampling.TopP(0.9), "MinP": lambda: sampling.MinP(0.05),
        "Typical": lambda: sampling.Typical(0.9), "Epsilon": lambda: sampling.Epsilon(3e-4),
        "Eta": lambda: sampling.Eta(3e-4), "AdaptiveDecoding": lambda: adaptive.AdaptiveDecoding(),
        "ConfidenceRule": adaptive.ConfidenceRule, "Entropix": adaptive.Entropix,
        "EDT": lambda: temperature.EDT(), "DynamicTemperature": temperature.DynamicTemperature,
        "ThreeFactorScheduler": temperature.ThreeFactorScheduler,
        "MODProcessor": lambda: MODProcessor(draft, 0.3, prompt_length=PROMPT_LEN),
    }
    assert name in makers, f"new processor {name}: add it to tests/test_decode_loop.py"
    return makers[name]()


PROMPT_LEN = 9


def test_every_processor_is_listed():
    names = set(processor_classes())
    assert {"TopP", "MinP", "EDT", "ThreeFactorScheduler", "MODProcessor"} <= names


@pytest.mark.parametrize("name", sorted(processor_classes()))
def test_every_processor_through_speculative_greedy(target, draft, tokenizer, name):
    """Greedy speculative decoding with the processor equals greedy ``generate`` with it, and a
    stateful processor ends in the state ``generate`` leaves it in (rejected drafts forgotten)."""
    ids = torch.tensor([[0, *tokenizer.encode("Tom went to the park. He saw").ids]])
    assert ids.shape[1] == PROMPT_LEN
    plain_proc, spec_proc = build(name, draft), build(name, draft)
    expected = generate(target, ids, 16, logits_processors=[plain_proc])
    out = speculative_generate(target, ModelDrafter(draft), ids, 16, gamma=4,
                               logits_processors=[spec_proc])
    assert out.tokens.tolist() == expected.tolist()
    assert out.stats.rejected > 0            # some drafts were taken back
    if getattr(plain_proc, "stateful", False):
        assert spec_proc.state() == plain_proc.state()


@pytest.mark.parametrize("name", sorted(processor_classes()))
def test_every_processor_through_speculative_sampling(target, draft, tokenizer, name):
    """Sampling: every emitted token is one the processor keeps after its prefix (the target's
    distribution was processed), and a stateful processor's state counts exactly the committed
    tokens (one step per emitted token: the rejected drafts were taken back)."""
    ids = torch.tensor([[0, *tokenizer.encode("Tom went to the park. He saw").ids]])
    processor = build(name, draft)
    out = speculative_generate(target, ModelDrafter(draft), ids, 16, gamma=4, do_sample=True,
                               temperature=0.9, logits_processors=[processor],
                               generator=torch.Generator().manual_seed(0))
    new = out.tokens.shape[1] - ids.shape[1]
    assert out.stats.drafted > 0
    if getattr(processor, "stateful", False):
        if name == "MODProcessor":   # the other model has read every committed token but the last
            assert processor.state() == out.tokens.shape[1] - 1
        else:                        # one temperature per committed token
            assert processor.state() == new
        return
    with torch.no_grad():
        logits = target(out.tokens[:, :-1]).logits[0, ids.shape[1] - 1:]     # (new, vocab)
    for i in range(new):
        prefix = out.tokens[:, : ids.shape[1] + i]
        scores = process_scores(prefix, logits[i : i + 1], [build(name, draft)], 0.9)
        assert torch.isfinite(scores[0, out.tokens[0, ids.shape[1] + i]])


def test_state_without_rollback_is_refused(target, draft, tokenizer):
    class Counting:
        stateful = True

        def __call__(self, input_ids, scores):
            return scores

    ids = torch.tensor([[0, *tokenizer.encode("Tom went").ids]])
    with pytest.raises(ValueError, match="Counting"):
        speculative_generate(target, ModelDrafter(draft), ids, 5, logits_processors=[Counting()])
