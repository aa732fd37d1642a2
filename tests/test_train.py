"""The training loop: the loss falls, and a resumed run is the same run."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from minidecode.tinyworld.train import PRESETS, TrainConfig, lr_at, train, train_tokenizer

TINY = replace(PRESETS["quick"], model=dict(hidden_size=32, intermediate_size=64,
                                             num_hidden_layers=1, num_attention_heads=2,
                                             num_key_value_heads=1),
               seq_len=64, batch_size=4, lr=1e-2, warmup_steps=5, max_steps=40,
               eval_every=10**6, ckpt_every=10)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models on a busy 2-core machine: one thread avoids oversubscription stalls."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(n_docs=2000)


def _losses(path):
    import csv

    with open(path / "metrics.csv") as f:
        return [float(r["loss"]) for r in csv.DictReader(f)]


def test_a_tiny_run_decreases_the_loss(tokenizer, tmp_path):
    cfg = replace(TINY, eval_every=10, eval_n=2)
    model = train(cfg, tmp_path, tokenizer=tokenizer, progress=False, log=lambda *_: None)
    losses = _losses(tmp_path)
    assert len(losses) == 4
    assert losses[-1] < losses[0] - 0.5
    assert (tmp_path / "final" / "model.safetensors").exists()
    assert model.num_parameters() > 0


def test_resuming_continues_the_same_run(tokenizer, tmp_path):
    # Warm-up covers the first 10 steps, so the interrupted run's schedule matches until then.
    run = replace(TINY, warmup_steps=10)
    straight = train(replace(run, max_steps=20), tmp_path / "a", tokenizer=tokenizer,
                     progress=False, log=lambda *_: None)
    # Stop at step 10 (a checkpoint), then run the same command again with the full length.
    train(replace(run, max_steps=10), tmp_path / "b", tokenizer=tokenizer, progress=False,
          log=lambda *_: None)
    state = tmp_path / "b" / "checkpoint" / "state.json"
    import json

    saved = json.loads(state.read_text())
    saved["config"]["max_steps"] = 20  # as if the first run had been interrupted at step 10
    state.write_text(json.dumps(saved))
    resumed = train(replace(run, max_steps=20), tmp_path / "b", tokenizer=tokenizer,
                    progress=False, log=lambda *_: None)
    for (name, a), (_, b) in zip(straight.state_dict().items(), resumed.state_dict().items()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6, msg=name)


def test_schedule_warms_up_then_decays_to_the_floor():
    cfg = TrainConfig(model={}, lr=1.0, warmup_steps=10, max_steps=110, min_lr_ratio=0.1)
    assert lr_at(0, cfg) == pytest.approx(0.1)
    assert lr_at(9, cfg) == pytest.approx(1.0)
    assert lr_at(60, cfg) == pytest.approx(0.55)
    assert lr_at(110, cfg) == pytest.approx(0.1)


def test_init_from_starts_a_new_run_from_saved_weights(tokenizer, tmp_path):
    first = train(replace(TINY, max_steps=5), tmp_path / "a", tokenizer=tokenizer,
                  progress=False, log=lambda *_: None)
    second = train(replace(TINY, max_steps=0), tmp_path / "b", tokenizer=tokenizer,
                   progress=False, log=lambda *_: None, init_from=tmp_path / "a" / "final")
    for (name, a), (_, b) in zip(first.state_dict().items(), second.state_dict().items()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)


def test_copy_rows_weight_only_the_copied_half(tokenizer):
    """Each copy example is <eos> x \\n x; the loss counts the second x and nothing else."""
    import random

    from minidecode.tinyworld.train import copy_row

    ids, weights = copy_row(random.Random(3), tokenizer, 128)
    assert len(ids) == len(weights) == 129
    newline = tokenizer.encode("\n").ids
    counted = [i for i, w in enumerate(weights) if w > 0]
    assert counted, "a copy row must have something to learn"
    # split the counted positions into runs; each run repeats the tokens just before its newline
    runs, start = [], counted[0]
    for a, b in zip(counted, counted[1:] + [None]):
        if b != a + 1:
            runs.append((start, a + 1))
            start = b
    for lo, hi in runs:
        n = hi - lo
        first = ids[lo - len(newline) - n: lo - len(newline)]
        assert ids[lo - len(newline): lo] == newline
        assert ids[lo:hi] == first


def test_retriever_mixture_draws_fact_counts_and_copy_rows(tokenizer):
    """The retriever preset's rows: about p_copy copy rows, and retrieval documents whose fact
    count comes from ``fact_counts`` (one-fact documents appear, which the default never has)."""
    import random

    from minidecode.tinyworld.train import mixture_row

    cfg = PRESETS["retriever"]
    copy, one_fact = 0, 0
    for r in range(60):
        rng = random.Random(f"t-{r}")
        ids, weights = mixture_row(rng, tokenizer, 256, cfg.p_retrieval, cfg.p_copy, (1,))
        text = tokenizer.decode(ids)
        copy += weights[1] == 0.0 and "has code" not in text and "Q:" not in text
        one_fact += text.count("has code") == 2  # the fact, and the answer restating it
    assert 8 <= copy <= 30
    assert one_fact >= 10


def test_recall_rows_weight_only_the_queried_codes(tokenizer):
    import random

    from minidecode.tinyworld.train import recall_row

    ids, weights = recall_row(random.Random(1), tokenizer, 256)
    assert len(ids) == len(weights) == 257
    weighted = [tokenizer.decode([i]) for i, w in zip(ids, weights) if w > 0]
    assert weighted and all(piece.strip().isdigit() for piece in weighted)


def test_grown_model_computes_what_the_small_one_did():
    import sys

    import torch

    import minidecode

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    from grow_model import grow

    small, _ = minidecode.load("main-draft")
    big = grow(small, 2)
    assert big.config.num_hidden_layers == 2 * small.config.num_hidden_layers
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, small.config.vocab_size, (2, 40), generator=gen)
    with torch.no_grad():
        assert torch.allclose(big(ids).logits, small(ids).logits, atol=1e-5)
        # ... and it is a deeper model, not the same one: the copies have their own weights
        big.layers[1].self_attn.o_proj.weight.normal_()
        assert not torch.allclose(big(ids).logits, small(ids).logits, atol=1e-3)


def test_distillation_kl_is_zero_on_the_teacher_and_positive_elsewhere():
    import minidecode
    from minidecode.tinyworld.train import distillation_kl

    teacher, tokenizer = minidecode.load("main")
    text = ("Tom went to the park. Anna gave the ball to Tom. The day was sunny, so they "
            "played outside. Then Tom walked home with Anna. Anna said, \"The ball is in the "
            "kitchen.\" Tom smiled at Anna. The end.")
    ids = torch.tensor(tokenizer.encode(text).ids[:48]).reshape(2, 24)  # text the teacher knows
    with torch.no_grad():
        own = teacher(ids).logits
    assert distillation_kl(teacher, ids, own).abs().max() < 1e-5
    other = distillation_kl(teacher, ids, torch.zeros_like(own))      # a uniform student
    assert other.shape == (2 * 24,) and bool((other > 0.1).all())


def test_a_distilled_student_moves_towards_its_teacher(tokenizer, tmp_path):
    """A few steps of pure distillation lower KL(teacher || student) on fresh text, while the
    same steps of plain cross-entropy training lower it less: the soft targets are used."""
    import minidecode
    from minidecode.tinyworld.train import distillation_kl

    with pytest.raises(ValueError, match="teacher"):   # another tokenizer: refused by name
        train(replace(TINY, teacher="main-draft"), tmp_path / "bad", tokenizer=tokenizer,
              progress=False, log=lambda *_: None)
    teacher, tokenizer = minidecode.load("main-draft")
    run = replace(TINY, max_steps=12, warmup_steps=2, lr=3e-3)
    ids = torch.tensor([tokenizer.encode("Once upon a time, there was a happy child named Mia. "
                                         "She went to the park.").ids])

    def kl_after(cfg, out):
        student = train(cfg, out, tokenizer=tokenizer, progress=False, log=lambda *_: None)
        with torch.no_grad():
            return float(distillation_kl(teacher, ids, student(ids).logits).mean())

    distilled = kl_after(replace(run, teacher="main-draft", distill_weight=1.0), tmp_path / "kd")
    plain = kl_after(run, tmp_path / "ce")
    assert distilled < plain


def test_qa_rows_weight_only_the_answers_and_the_answer_is_the_last_move(tokenizer):
    """A QA-drill row trains the answers and nothing else, and each answer names the place of
    the person's last stated move (the lookup the main model's QA needs)."""
    import random
    import re

    from minidecode.tinyworld.train import qa_row

    ids, weights = qa_row(random.Random(2), tokenizer, 256, p_single=0.5)
    assert len(ids) == len(weights) == 257
    weighted = "".join(tokenizer.decode([i]) for i, w in zip(ids, weights) if w > 0)
    assert weighted and "Where" not in weighted and "went" not in weighted
    for doc in tokenizer.decode(ids, skip_special_tokens=False).split("<|endoftext|>"):
        moves = re.findall(r"(\w+) (?:went to|is in|walked to) the (\w+)\.", doc.split("\nQ:")[0])
        last = dict(moves)
        for name, answer in re.findall(r"Q: Where is (\w+)\?\nA: ([^\n]+)", doc):
            assert answer.rstrip(".").endswith(last[name]), (name, answer, moves)


def test_single_move_drills_move_everyone_once():
    import random
    import re

    from minidecode import tinyworld as tw

    for seed in range(20):
        doc = tw.qa_drill(random.Random(seed), single_move=True)
        names = re.findall(r"(\w+) (?:went to|is in|walked to) the", doc.text.split("\nQ:")[0])
        assert len(names) == len(set(names)) >= 2


def test_main_preset_stages_switch_the_mixture_at_their_steps():
    from minidecode.tinyworld.train import mixture_at

    cfg = PRESETS["main"]
    assert len(mixture_at(cfg, 0)) == 6 and mixture_at(cfg, 0)[-1]["qa"] == 0.37
    assert "qa_drill" in mixture_at(cfg, 625)[-1]
    late = mixture_at(cfg, 1500)
    assert late[0] == 0.25 and late[-2:] == (0.3, 0.5)  # p_retrieval; p_qa, p_single


def test_cooldown_falls_linearly_to_its_final_ratio_and_ends_the_run():
    """The main preset's recorded cool-down: constant lr, then linear to 5% at the last step."""
    from minidecode.tinyworld import train as T

    cfg = T.PRESETS["main"]
    cool = cfg.extra["cooldown"]
    a, b = cool["from_step"], cool["to_step"]
    assert T.lr_at(a - 1, cfg) == cfg.lr
    mid = T.lr_at((a + b) // 2, cfg)
    assert 0.4 * cfg.lr < mid < 0.6 * cfg.lr
    assert T.lr_at(b - 1, cfg) == pytest.approx(cool["final_ratio"] * cfg.lr)
    lrs = [T.lr_at(s, cfg) for s in range(a - 1, b)]
    assert all(x >= y for x, y in zip(lrs, lrs[1:]))
    # without a cool-down the schedule is the plain cosine to min_lr_ratio at max_steps
    plain = T.PRESETS["target"]
    assert T.lr_at(plain.max_steps, plain) == pytest.approx(plain.min_lr_ratio * plain.lr)
