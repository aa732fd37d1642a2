"""Train the course's TinyWorld models: tokenizer, data packing, training loop, checkpoints.

    python -m minidecode.tinyworld.train --preset quick  --out runs/quick   # minutes on a laptop
    python -m minidecode.tinyworld.train --preset target --out runs/target  # a GPU helps
    python -m minidecode.tinyworld.train --preset retriever --out runs/retriever \
        --init-from runs/target/final                                   # teach it to look things up
    python scripts/grow_model.py runs/retriever/final runs/grown        # 4 -> 8 layers
    python -m minidecode.tinyworld.train --preset main --out runs/main --init-from runs/grown
    python -m minidecode.tinyworld.train --preset draft1-distilled --out runs/draft \
        --teacher main                                                  # the one-layer draft

The shipped "main" and "main-draft" were made by this chain (their model cards give the steps,
tokens and hours; benchmarks/RESULTS.md the learning curves).

Each run writes ``metrics.csv`` (loss and task accuracies every ``eval_every`` steps), a resumable
``checkpoint/`` (weights, AdamW moments and the step, all in safetensors/JSON: nothing is
pickled) and, at the end, a Hugging Face-format model directory ``final/``. Running the same
command again resumes from the checkpoint and continues the same run: the batch for step ``s`` is
generated from ``(seed, s)`` alone, so a resumed run sees exactly the data it would have seen.

Recipe (see the model cards): AdamW (beta 0.9/0.95, weight decay
0.1 on matrices), gradient clipping 1.0, linear warm-up then cosine decay to 10%, loss weight 3 on
answer tokens, documents packed whole into rows (a retrieval document always starts its row, so no
two retrieval documents share a row and a question can only be about its own document's facts).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import random
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, load_model, save_file, save_model
from torch import Tensor

from minidecode import tinyworld as tw
from minidecode.generate import stop_token_ids
from minidecode.model import ModelConfig, Transformer
from minidecode.tinyworld.corpus import encode_prompt
from minidecode.tinyworld.evaluate import greedy_batch

ANSWER_WEIGHT = 3.0
TOKENIZER_SEED = 12345  # corpus seed for the tokenizer's training sample


# ----------------------------------------------------------------------------- tokenizer
def train_tokenizer(vocab_size: int = 2048, n_docs: int = 30_000):
    """Byte-level BPE trained on a TinyWorld sample.

    Digit runs are pre-split into pairs (`` ?\\d{1,2}``), so every number 0-99 is one token
    (" 14") and a four-digit code is two ("48", "21"). Trial runs showed that single-token
    numbers let a small model learn the restated arithmetic chains within minutes; digit-by-digit
    tokens would triple the length of every calculation the model has to copy.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r" ?\d{1,2}"), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[tw.EOS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    docs = tw.corpus(TOKENIZER_SEED, n_docs)
    tokenizer.train_from_iterator((d.text for d in docs), trainer=trainer)
    return tokenizer


def encode_doc(tokenizer, doc: tw.Doc) -> tuple[list[int], list[float]]:
    """``<|endoftext|>`` + the document's tokens, with weight 3 on tokens inside answer spans."""
    enc = tokenizer.encode(doc.text)
    weights = []
    for start, end in enc.offsets:
        answer = any(start < b and end > a for a, b in doc.answer_spans)
        weights.append(ANSWER_WEIGHT if answer else 1.0)
    eos = tokenizer.token_to_id(tw.EOS)
    return [eos, *enc.ids], [1.0, *weights]


# ----------------------------------------------------------------------------- data
NON_RETRIEVAL = {k: v for k, v in tw.DOC_WEIGHTS.items() if k != "retrieval"}


def retrieval_row(rng: random.Random, tokenizer, seq_len: int,
                  fact_counts: tuple[int, ...] | None = None, style: str = "has_code",
                  doc_weights: dict[str, float] | None = None):
    """A row that starts with one retrieval document (sometimes after a short story), then other
    families. ``fact_counts``: the number of facts is drawn from it (default 2-8 uniformly);
    ``style``: the facts' wording (``tinyworld.FACT_STYLES``)."""
    ids: list[int] = []
    weights: list[float] = []
    if rng.random() < 0.3:  # sometimes a short story first, so the needle is not always at 0
        ids, weights = encode_doc(tokenizer, tw.story(rng, rng.randint(1, 4)))
    max_filler = max(2, min(38, seq_len // 14))  # ~11 tokens a filler sentence, + facts
    for _ in range(20):  # a retrieval document is never cut: its questions need its facts
        n_filler = rng.randint(2, max_filler)
        n_facts = rng.randint(2, 8) if fact_counts is None else rng.choice(fact_counts)
        doc = tw.retrieval(rng, n_filler=n_filler, n_facts=n_facts, style=style)
        i, w = encode_doc(tokenizer, doc)
        if len(ids) + len(i) <= seq_len + 1:
            ids, weights = ids + i, weights + w
            break
    return _fill_row(rng, tokenizer, seq_len, ids, weights, doc_weights)


def _fill_row(rng: random.Random, tokenizer, seq_len: int, ids: list[int], weights: list[float],
              doc_weights: dict[str, float] | None = None):
    """Pack whole non-retrieval documents after ``ids`` up to ``seq_len + 1`` tokens, then pad
    (padding weighted 0). ``doc_weights``: the families' probabilities (default the corpus's)."""
    while len(ids) < seq_len + 1:
        i, w = encode_doc(tokenizer, tw.sample_document(rng, doc_weights or NON_RETRIEVAL))
        room = seq_len + 1 - len(ids)
        if len(i) > room and room < 48:
            break  # pad rather than start a document that would be cut almost at once
        ids, weights = ids + i[:room], weights + w[:room]
    pad = seq_len + 1 - len(ids)
    eos = tokenizer.token_to_id(tw.EOS)
    return ids + [eos] * pad, weights + [0.0] * pad


def build_row(rng: random.Random, tokenizer, seq_len: int, p_retrieval: float):
    """One training row of ``seq_len + 1`` tokens, documents packed whole, padding weighted 0."""
    if rng.random() < p_retrieval:
        return retrieval_row(rng, tokenizer, seq_len)
    return _fill_row(rng, tokenizer, seq_len, [], [])


def copy_row(rng: random.Random, tokenizer, seq_len: int):
    """Random-token copy examples: ``<eos> x1..xn \\n x1..xn``, n in 16-48, loss on the copy only.

    The induction-head task ("find where the current token occurred before, predict what came
    next") in its purest form. In trial runs a small model learns it in ~2M tokens on
    its own, while needle retrieval inside the mixture did not form in 25M; a share of these rows
    built the lookup circuit that retrieval then reuses (RESULTS.md, "TinyWorld models").
    """
    eos = tokenizer.token_to_id(tw.EOS)
    newline = tokenizer.encode("\n").ids
    vocab = tokenizer.get_vocab_size()
    ids: list[int] = []
    weights: list[float] = []
    while True:
        n = rng.randint(16, 48)
        if len(ids) + 2 * n + 2 > seq_len + 1:
            break
        chunk = [rng.randrange(1, vocab) for _ in range(n)]
        ids += [eos, *chunk, *newline, *chunk]
        weights += [0.0] * (n + 1 + len(newline)) + [1.0] * n
    pad = seq_len + 1 - len(ids)
    return ids + [eos] * pad, weights + [0.0] * pad


def _answers_only_row(tokenizer, seq_len: int, next_doc) -> tuple[list[int], list[float]]:
    """Whole documents from ``next_doc()`` packed into one row, loss on their answer spans only."""
    ids: list[int] = []
    weights: list[float] = []
    while True:
        i, w = encode_doc(tokenizer, next_doc())
        if len(ids) + len(i) > seq_len + 1:
            break
        ids += i
        weights += [x if x > 1.0 else 0.0 for x in w]
    pad = seq_len + 1 - len(ids)
    eos = tokenizer.token_to_id(tw.EOS)
    return ids + [eos] * pad, weights + [0.0] * pad


def recall_row(rng: random.Random, tokenizer, seq_len: int):
    """Rows of multi-query associative recall documents (``tinyworld.associative_recall``),
    packed whole; loss on the queried codes only, so the row trains the lookup and nothing else."""
    return _answers_only_row(tokenizer, seq_len, lambda: tw.associative_recall(rng))


def qa_row(rng: random.Random, tokenizer, seq_len: int, p_single: float = 0.5):
    """Rows of "Where is X?" drills (``tinyworld.qa_drill``), packed whole, loss on the answers
    only: the person's last stated move, trained many times a row. ``p_single``: the share of
    drills in which everyone moves once (one match to find rather than the latest of several)."""
    return _answers_only_row(
        tokenizer, seq_len, lambda: tw.qa_drill(rng, single_move=rng.random() < p_single))


def mixture_row(rng: random.Random, tokenizer, seq_len: int, p_retrieval: float, p_copy: float,
                fact_counts: tuple[int, ...] | None, p_recall: float = 0.0,
                style: str = "has_code", doc_weights: dict[str, float] | None = None,
                p_qa: float = 0.0, p_single: float = 0.5):
    """With ``p_copy`` a copy row, with ``p_recall`` an associative-recall row, with ``p_qa`` a
    row of QA drills, with ``p_retrieval`` a retrieval row (facts from ``fact_counts``, worded
    in ``style``), otherwise a row of the other families drawn with ``doc_weights``."""
    u = rng.random()
    if u < p_copy:
        return copy_row(rng, tokenizer, seq_len)
    if u < p_copy + p_recall:
        return recall_row(rng, tokenizer, seq_len)
    if u < p_copy + p_recall + p_qa:
        return qa_row(rng, tokenizer, seq_len, p_single)
    if u < p_copy + p_recall + p_qa + p_retrieval:
        return retrieval_row(rng, tokenizer, seq_len, fact_counts, style, doc_weights)
    return _fill_row(rng, tokenizer, seq_len, [], [], doc_weights)


_WORKER_TOKENIZER = None


def _worker_init(tokenizer_json: str) -> None:
    global _WORKER_TOKENIZER
    from tokenizers import Tokenizer

    _WORKER_TOKENIZER = Tokenizer.from_str(tokenizer_json)


def build_batch(args: tuple):
    """The batch for one step, a pure function of (seed, step): resumes see the same data.

    args: (seed, step, batch_size, seq_len, p_retrieval[, p_copy, fact_counts[, p_recall,
    style, doc_weights]]); with p_copy set, rows come from ``mixture_row``.
    """
    seed, step, batch_size, seq_len, p_retrieval, *mixture = args
    rows, weights = [], []
    for r in range(batch_size):
        rng = random.Random(f"{seed}-{step}-{r}")
        if mixture:
            i, w = mixture_row(rng, _WORKER_TOKENIZER, seq_len, p_retrieval, *mixture)
        else:
            i, w = build_row(rng, _WORKER_TOKENIZER, seq_len, p_retrieval)
        rows.append(i)
        weights.append(w)
    return np.asarray(rows, dtype=np.int64), np.asarray(weights, dtype=np.float32)


# ----------------------------------------------------------------------------- presets
@dataclass
class TrainConfig:
    model: dict
    seq_len: int = 512
    batch_size: int = 16
    lr: float = 3e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 100
    max_steps: int = 1000
    time_budget_s: float | None = None  # if set, max_steps is re-derived from measured speed
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    p_retrieval: float = 0.6
    eval_every: int = 100
    eval_n: int = 32
    ckpt_every: int = 200
    seed: int = 0
    # The retriever mixture (None/0: the original one). data_seed names the data stream when
    # it must differ from ``seed`` (which also seeds the weights' initialisation).
    p_copy: float = 0.0
    fact_counts: tuple[int, ...] | None = None
    data_seed: str | None = None
    # The main model's mixture: associative-recall rows, the facts' wording, family weights.
    p_recall: float = 0.0
    fact_style: str = "has_code"
    doc_weights: dict[str, float] | None = None
    # Distillation (a draft learning from the main model): the teacher's directory or shipped
    # name; the loss is distill_weight * KL(teacher || student) + (1 - distill_weight) * CE.
    teacher: str | None = None
    distill_weight: float = 1.0
    extra: dict = field(default_factory=dict)


# The main model's drafts: one layer, width 128, from scratch on the corpus ("draft1"), or
# distilled from the main model's soft targets on the same corpus ("draft1-distilled", run from
# draft1's step-1000 weights with --init-from and --max-steps 500, so that both saw 1500 steps).
# The shipped draft1 run was started with max_steps 3000 and set to 1500 at step 500 (the cosine
# schedule then followed the shorter horizon); the loss had flattened (1.19 at 1000, 1.11 at 1500).
DRAFT1 = TrainConfig(
    model=dict(hidden_size=128, intermediate_size=352, num_hidden_layers=1,
               num_attention_heads=4, num_key_value_heads=2),
    batch_size=16, lr=3e-3, warmup_steps=100, max_steps=1500, p_retrieval=0.3,
    p_copy=0.05, p_recall=0.05, fact_style="code_of",
    doc_weights={"stories": 0.45, "arithmetic": 0.08, "qa": 0.22, "structured": 0.25},
    data_seed="draft1", eval_every=500, eval_n=16, ckpt_every=100)

PRESETS: dict[str, TrainConfig] = {
    # ~3.2M parameters: 4 layers, width 256, 8 query heads sharing 4 key/value heads.
    # Sized for the 2-core CPU (about 4-5k tokens/s); on a GPU raise batch_size.
    "target": TrainConfig(
        model=dict(hidden_size=256, intermediate_size=688, num_hidden_layers=4,
                   num_attention_heads=8, num_key_value_heads=4),
        batch_size=16, lr=2e-3, warmup_steps=100, max_steps=8000, eval_every=100,
        eval_n=24, ckpt_every=50),
    # ~0.5M parameters: 2 layers, width 128.
    "draft": TrainConfig(
        model=dict(hidden_size=128, intermediate_size=352, num_hidden_layers=2,
                   num_attention_heads=4, num_key_value_heads=2),
        batch_size=16, lr=3e-3, warmup_steps=100, max_steps=2000, eval_every=250,
        eval_n=24, ckpt_every=100),
    # What a student runs in a notebook: the loss falls within minutes on a laptop CPU.
    "quick": TrainConfig(
        model=dict(hidden_size=128, intermediate_size=352, num_hidden_layers=2,
                   num_attention_heads=4, num_key_value_heads=2),
        seq_len=256, batch_size=8, lr=3e-3, warmup_steps=20, max_steps=300, eval_every=100,
        eval_n=16, ckpt_every=100),
    # The earlier tiny-target trained further (--init-from its directory): 30% copy rows, 45%
    # retrieval rows with mostly one or two facts, 25% the usual families; constant lr after a
    # short warm-up (min_lr_ratio 1). The main model's card tells the story.
    "retriever": TrainConfig(
        model=dict(hidden_size=256, intermediate_size=688, num_hidden_layers=4,
                   num_attention_heads=8, num_key_value_heads=4),
        batch_size=8, lr=1e-3, min_lr_ratio=1.0, warmup_steps=30, max_steps=2500,
        p_retrieval=0.45, p_copy=0.3, fact_counts=(1, 1, 1, 2, 2, 3, 4, 5, 6, 8),
        data_seed="needle", eval_every=100, eval_n=24, ckpt_every=100),
    "draft1": DRAFT1,
    "draft1-distilled": replace(DRAFT1, teacher="main", distill_weight=0.9),
    # The course's main model: 8 layers, width 256 (~6M parameters), grown from tiny-retriever
    # (scripts/grow_model.py: each layer followed by a copy whose output projections start at
    # zero, so the grown model computes exactly what tiny-retriever did) and trained on with
    # associative-recall rows, "code_of" facts among distractors and more QA.
    "main": TrainConfig(
        model=dict(hidden_size=256, intermediate_size=688, num_hidden_layers=8,
                   num_attention_heads=8, num_key_value_heads=4),
        batch_size=8, lr=1e-3, min_lr_ratio=1.0, warmup_steps=30, max_steps=6000,
        p_retrieval=0.3, p_copy=0.1, p_recall=0.15, fact_style="code_of",
        fact_counts=(1, 2, 2, 3, 4, 4, 5, 6, 8),
        doc_weights={"stories": 0.35, "arithmetic": 0.08, "qa": 0.37, "structured": 0.2},
        data_seed="main", eval_every=100, eval_n=24, ckpt_every=25,
        extra={"stages": [
            # From step 625 on (QA was not forming: the model answered one place for everyone),
            # half the QA documents ask 2-5 questions about the same moves.
            {"from_step": 625, "doc_weights": {"stories": 0.35, "arithmetic": 0.08, "qa": 0.17,
                                               "qa_drill": 0.2, "structured": 0.2}},
            # From step 1500 on (QA still at chance: p(place) uniform over the 12 places, even
            # when the context states the move in the answer's own words), 30% of rows are QA
            # drills with loss on the answers only, half of them with one move per person.
            {"from_step": 1500, "p_copy": 0.05, "p_recall": 0.1, "p_retrieval": 0.25,
             "p_qa": 0.3, "p_single": 0.5}],
            # Decided at step 4175 (quick evaluation at the bars: lookup 0.96-1.00, QA 0.92-1.00,
            # loss flat at 0.62-0.64 for 600 steps at a constant lr): cool down and stop.
            "cooldown": {"from_step": 4200, "to_step": 4700, "final_ratio": 0.05}}),
}


def mixture_at(cfg: TrainConfig, step: int) -> tuple:
    """The arguments of ``build_batch`` for ``step`` after the batch size and length:
    ``(p_retrieval, *mixture)``. ``cfg.extra["stages"]`` lists recorded mid-run changes, each
    ``{"from_step": s, ...}`` overriding fields (``doc_weights``, ``p_copy``, ``p_recall``,
    ``p_retrieval``, ``p_qa``, ``p_single``) from step s on, so a resumed run still sees exactly
    the data the original one did."""
    fields = {"p_copy": cfg.p_copy, "p_recall": cfg.p_recall, "p_retrieval": cfg.p_retrieval,
              "doc_weights": cfg.doc_weights, "p_qa": 0.0, "p_single": 0.5}
    for stage in cfg.extra.get("stages", []):
        if step >= stage["from_step"]:
            fields.update({k: v for k, v in stage.items() if k != "from_step"})
    p_retrieval = fields["p_retrieval"]
    if fields["p_qa"] > 0:
        return (p_retrieval, fields["p_copy"], cfg.fact_counts, fields["p_recall"],
                cfg.fact_style, fields["doc_weights"], fields["p_qa"], fields["p_single"])
    doc_weights = fields["doc_weights"]
    if cfg.p_recall > 0 or cfg.fact_style != "has_code" or doc_weights:
        return (p_retrieval, cfg.p_copy, cfg.fact_counts, cfg.p_recall, cfg.fact_style,
                doc_weights)
    if cfg.p_copy > 0 or cfg.fact_counts:
        return (p_retrieval, cfg.p_copy, cfg.fact_counts)
    return (p_retrieval,)


def model_config(cfg: TrainConfig, vocab_size: int, eos_id: int) -> ModelConfig:
    return ModelConfig(vocab_size=vocab_size, max_position_embeddings=512,
                       tie_word_embeddings=True, bos_token_id=eos_id, eos_token_id=eos_id,
                       pad_token_id=eos_id, **cfg.model)


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up to ``lr``, then cosine decay to ``min_lr_ratio * lr`` at ``max_steps``.

    A run may instead end with a linear cool-down, ``cfg.extra["cooldown"] = {"from_step": a,
    "to_step": b, "final_ratio": r}``: the learning rate falls linearly from its value at step a
    to ``r * lr`` at step b, where the run then stops (the warm-up, stable, decay schedule of
    Hu et al. 2024, "MiniCPM")."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    cooldown = cfg.extra.get("cooldown")
    if cooldown is not None and step >= cooldown["from_step"]:
        start = lr_at(cooldown["from_step"] - 1, cfg)
        frac = min(1.0, (step - cooldown["from_step"] + 1)
                   / (cooldown["to_step"] - cooldown["from_step"]))
        return start + frac * (cfg.lr * cooldown["final_ratio"] - start)
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps))
    cosine = 0.5 * (1 + math.cos(math.pi * progress))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * cosine)


# ----------------------------------------------------------------------------- quick evaluation
def quick_eval(model: Transformer, tokenizer, n: int, seed: int = 999,
               style: str = "has_code") -> dict[str, float]:
    """Retrieval (seen / held-out keys, 2-8 facts), answerable QA and 2-step arithmetic
    accuracies on fresh documents, greedy."""
    rng = random.Random(seed)
    model.eval()
    newline = stop_token_ids(tokenizer, tw.EOS)
    result: dict[str, float] = {}
    for split, keys in (("seen", tw.TRAIN_KEYS), ("heldout", tw.HELD_OUT_KEYS)):
        docs = [tw.retrieval(rng, n_filler=rng.randint(2, 36), keys=keys, style=style)
                for _ in range(n)]
        outs = greedy_batch(model, [encode_prompt(tokenizer, d.truth["prompt"]) for d in docs],
                            3, newline)
        hits = [tokenizer.decode(o).strip().startswith(d.truth["code"]) for o, d in zip(outs, docs)]
        result[f"retrieval_{split}"] = float(np.mean(hits))
    qa_docs = [tw.qa(rng, answerable=True) for _ in range(n)]
    outs = greedy_batch(model, [encode_prompt(tokenizer, d.truth["prompt"]) for d in qa_docs],
                        8, newline)
    result["qa"] = float(np.mean([d.truth["place"] in tokenizer.decode(o).split("\n")[0]
                                  for o, d in zip(outs, qa_docs)]))
    problems = [tw.arithmetic_problem(rng, n_steps=2) for _ in range(n)]
    for mode in ("trigger", "greedy"):
        prompts = [encode_prompt(tokenizer, tw.arithmetic_prompt(p, trigger=mode == "trigger"))
                   for p in problems]
        outs = [tokenizer.decode(o) for o in greedy_batch(model, prompts, 64, newline)]
        hits = [tw.parse_number_answer(o) == p.answer for o, p in zip(outs, problems)]
        result[f"arith2_{mode}"] = float(np.mean(hits))
        if mode == "greedy":
            result["direct_share"] = float(np.mean([o.strip().startswith("The") for o in outs]))
    model.train()
    return result


# ----------------------------------------------------------------------------- checkpoints
def distillation_kl(teacher: Transformer, inputs: Tensor, student_logits: Tensor) -> Tensor:
    """Per-position KL(p_teacher || p_student) over the vocabulary, (batch * seq,).

    Knowledge distillation with the teacher's soft targets (Hinton, Vinyals & Dean 2015,
    arXiv:1503.02531); DistillSpec (Zhou et al. 2023, arXiv:2310.08461) trains speculative-
    decoding drafts this way, since the draft's acceptance rate is what matching p_teacher buys.
    inputs: (batch, seq) ids; student_logits: (batch, seq, vocab).
    """
    with torch.no_grad():
        teacher_log_probs = F.log_softmax(teacher(inputs).logits.float(), dim=-1)
    student_log_probs = F.log_softmax(student_logits.float(), dim=-1)
    kl = (teacher_log_probs.exp() * (teacher_log_probs - student_log_probs)).sum(dim=-1)
    return kl.reshape(-1)


def save_checkpoint(path: Path, model: Transformer, opt: torch.optim.Optimizer, step: int,
                    cfg: TrainConfig) -> None:
    """Weights, AdamW moments and the step, as safetensors + JSON (no pickle anywhere)."""
    path.mkdir(parents=True, exist_ok=True)
    save_model(model, str(path / "model.safetensors"))  # handles the tied embedding
    moments = {}
    for i, p in enumerate(model.parameters()):
        state = opt.state.get(p, {})
        for name in ("exp_avg", "exp_avg_sq"):
            if name in state:
                moments[f"{i}.{name}"] = state[name].detach().contiguous().cpu()
        if "step" in state:
            moments[f"{i}.step"] = torch.as_tensor(state["step"], dtype=torch.float32).reshape(1)
    save_file(moments, str(path / "optimizer.safetensors"))
    (path / "state.json").write_text(json.dumps({"step": step, "config": asdict(cfg)}, indent=1))


def load_checkpoint(path: Path, model: Transformer, opt: torch.optim.Optimizer) -> int:
    device = next(model.parameters()).device
    load_model(model, str(path / "model.safetensors"), device=str(device))
    moments = load_file(str(path / "optimizer.safetensors"), device=str(device))
    for i, p in enumerate(model.parameters()):
        if f"{i}.exp_avg" in moments:
            step_t = moments[f"{i}.step"].reshape(()).cpu()
            opt.state[p] = {"step": step_t, "exp_avg": moments[f"{i}.exp_avg"],
                            "exp_avg_sq": moments[f"{i}.exp_avg_sq"]}
    return json.loads((path / "state.json").read_text())["step"]


# ----------------------------------------------------------------------------- training
def make_optimizer(model: Transformer, cfg: TrainConfig, device: torch.device):
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.95),
                             fused=device.type == "cuda")


def train(cfg: TrainConfig, out: Path, tokenizer=None, device: str | None = None,
          num_workers: int = 0, progress: bool = True, log=print,
          init_from: Path | None = None) -> Transformer:
    """Train (or resume) a model; returns it. See the module docstring for what is written.

    ``init_from``: a model directory whose weights start a new run (fresh optimiser and
    schedule); used to continue a shipped model when its run directory is gone.
    """
    from tqdm.auto import tqdm

    out.mkdir(parents=True, exist_ok=True)
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if tokenizer is None:
        tokenizer = load_or_train_tokenizer(out / "tokenizer.json")
    torch.manual_seed(cfg.seed)
    eos = tokenizer.token_to_id(tw.EOS)
    model = Transformer(model_config(cfg, tokenizer.get_vocab_size(), eos))
    model.to(dev).train()
    opt = make_optimizer(model, cfg, dev)
    ckpt = out / "checkpoint"
    step = 0
    if (ckpt / "state.json").exists():
        step = load_checkpoint(ckpt, model, opt)
        saved = json.loads((ckpt / "state.json").read_text())["config"]
        end = cfg.extra.get("cooldown", {}).get("to_step", saved["max_steps"])
        cfg = replace(cfg, max_steps=end, time_budget_s=None)
        log(f"resumed from {ckpt} at step {step}")
    elif init_from is not None:
        from minidecode.checkpoint import load_pretrained

        start, _ = load_pretrained(init_from, device=dev)
        model.load_state_dict(start.state_dict())
        log(f"initialised from {init_from}")
    log(f"model: {model.num_parameters() / 1e6:.2f}M parameters on {dev}")
    teacher = None
    if cfg.teacher is not None:
        from minidecode.checkpoint import load as load_model_by_name

        teacher = load_model_by_name(cfg.teacher, device=dev)[0].eval()
        if teacher.config.vocab_size != tokenizer.get_vocab_size():
            raise ValueError(f"teacher={cfg.teacher!r} has vocab_size {teacher.config.vocab_size}"
                             f" but the tokenizer has {tokenizer.get_vocab_size()}: a student "
                             "learns from a teacher that shares its tokenizer")
        log(f"distilling from {cfg.teacher} ({teacher.num_parameters() / 1e6:.2f}M parameters)")
    metrics_path = out / "metrics.csv"
    fields = ["step", "tokens", "elapsed_s", "loss", "lr", "retrieval_seen", "retrieval_heldout",
              "qa", "arith2_trigger", "arith2_greedy", "direct_share"]
    if not metrics_path.exists():
        with metrics_path.open("w", newline="") as f:
            csv.writer(f).writerow(fields)

    tok_json = tokenizer.to_str()
    data_seed = cfg.seed if cfg.data_seed is None else cfg.data_seed
    jobs = ((data_seed, s, cfg.batch_size, cfg.seq_len, *mixture_at(cfg, s))
            for s in range(step, 10**9))
    if num_workers > 0:
        import multiprocessing as mp

        pool = mp.get_context("spawn").Pool(num_workers, _worker_init, (tok_json,))
        batches = pool.imap(build_batch, jobs, chunksize=2)
    else:
        pool = None
        _worker_init(tok_json)
        batches = map(build_batch, jobs)

    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if dev.type == "cuda" else None
    t0 = time.time()
    run_loss, run_n = 0.0, 0
    bar = tqdm(total=cfg.max_steps, initial=step, disable=not progress, desc="train")
    while step < cfg.max_steps:
        ids, weights = next(batches)
        x = torch.from_numpy(ids).to(dev, non_blocking=True)
        w = torch.from_numpy(weights).to(dev, non_blocking=True)
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg)
        if autocast is not None:
            with autocast:
                logits = model(x[:, :-1]).logits
        else:
            logits = model(x[:, :-1]).logits
        nll = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), x[:, 1:].reshape(-1),
                              reduction="none")
        if teacher is not None:
            nll = (1 - cfg.distill_weight) * nll + cfg.distill_weight * distillation_kl(
                teacher, x[:, :-1], logits)
        wt = w[:, 1:].reshape(-1)
        loss = (nll * wt).sum() / wt.sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        step += 1
        run_loss += float(loss.detach()) if step % 10 == 0 or dev.type == "cpu" else 0.0
        run_n += 1 if step % 10 == 0 or dev.type == "cpu" else 0
        bar.update(1)
        if cfg.time_budget_s is not None and step == 10:
            t10 = time.time()
        if cfg.time_budget_s is not None and step == 40:
            # Fix the schedule's length from the measured speed, once; it is saved with the run.
            # 10% of the budget is left for evaluations and checkpoints.
            per_step = (time.time() - t10) / 30
            left = 0.9 * cfg.time_budget_s - (time.time() - t0)
            cfg = replace(cfg, max_steps=max(60, 40 + int(left / per_step)), time_budget_s=None)
            bar.total = cfg.max_steps
            log(f"{per_step * 1000:.1f} ms/step -> max_steps {cfg.max_steps}")
        if step % cfg.eval_every == 0 or step == cfg.max_steps:
            scores = quick_eval(model, tokenizer, cfg.eval_n, style=cfg.fact_style)
            row = {"step": step, "tokens": step * cfg.batch_size * cfg.seq_len,
                   "elapsed_s": round(time.time() - t0, 1),
                   "loss": round(run_loss / max(run_n, 1), 4), "lr": lr_at(step, cfg), **scores}
            run_loss, run_n = 0.0, 0
            with metrics_path.open("a", newline="") as f:
                csv.writer(f).writerow([row[k] for k in fields])
            log(" ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                         for k, v in row.items()))
        if step % cfg.ckpt_every == 0 or step == cfg.max_steps:
            save_checkpoint(ckpt, model, opt, step, cfg)
    bar.close()
    if pool is not None:
        pool.terminate()
    model.eval()
    from minidecode.checkpoint import save_pretrained

    save_pretrained(model.float().cpu(), out / "final", tokenizer=tokenizer,
                    generation_config={"do_sample": False, "max_new_tokens": 64})
    return model


def load_or_train_tokenizer(path: Path):
    from tokenizers import Tokenizer

    if path.exists():
        return Tokenizer.from_file(str(path))
    tokenizer = train_tokenizer()
    path.parent.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(path))
    return tokenizer


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m minidecode.tinyworld.train",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="quick")
    parser.add_argument("--out", type=Path, required=True, help="run directory")
    parser.add_argument("--tokenizer", type=Path, default=None,
                        help="tokenizer.json to use (default: a shipped model's, else train one)")
    parser.add_argument("--max-steps", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=None, help="rows a step")
    parser.add_argument("--time-budget", type=float, default=None,
                        help="seconds; sets max_steps from the speed of the first 30 steps")
    parser.add_argument("--device", default=None)
    parser.add_argument("--workers", type=int, default=0, help="data-generation processes")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--teacher", default=None,
                        help="distil from this model (directory or shipped name)")
    parser.add_argument("--init-from", type=Path, default=None,
                        help="model directory whose weights start the run (fresh optimiser)")
    args = parser.parse_args(argv)
    cfg = PRESETS[args.preset]
    if args.max_steps is not None:
        cfg = replace(cfg, max_steps=args.max_steps)
    if args.batch_size is not None:
        cfg = replace(cfg, batch_size=args.batch_size)
    if args.time_budget is not None:
        cfg = replace(cfg, time_budget_s=args.time_budget)
    if args.teacher is not None:
        cfg = replace(cfg, teacher=args.teacher)
    tok_path = args.tokenizer
    if tok_path is None:
        shipped = Path(__file__).parents[1] / "models" / "main" / "tokenizer.json"
        tok_path = shipped if shipped.exists() else args.out / "tokenizer.json"
    tokenizer = load_or_train_tokenizer(tok_path)
    if not (args.out / "tokenizer.json").exists():
        args.out.mkdir(parents=True, exist_ok=True)
        tokenizer.save(str(args.out / "tokenizer.json"))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    train(cfg, args.out, tokenizer=tokenizer, device=args.device, num_workers=args.workers,
          progress=not args.no_progress, init_from=args.init_from)


if __name__ == "__main__":
    main()
