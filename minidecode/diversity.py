"""How to compare samplers: draw many samples, then measure diversity and quality.

- ``distinct_n`` (Li, Galley, Brockett, Gao & Dolan 2016, arXiv:1510.03055): distinct n-grams /
  all n-grams, pooled over the samples. 1 = no n-gram repeats; low = the samples say the same.
- ``self_similarity``: the mean, over pairs of samples, of the Jaccard overlap of their n-gram
  sets, ``|A ∩ B| / |A ∪ B|``. A cheaper cousin of Self-BLEU (Zhu et al. 2018, arXiv:1802.01886):
  0 = every pair disjoint, 1 = every sample identical.
- ``perplexity``: ``exp(mean NLL)`` of the generated tokens under a scoring model (the target),
  a proxy for fluency: low = the model finds its own samples likely. It counts the
  end-of-text token unless ``count_eos=False``; chapter 01 shows why the judge of
  :mod:`minidecode.tinyworld.judge` leaves it out, and why perplexity alone misranks greedy text.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from minidecode.generate import generate

__all__ = [
    "distinct_n",
    "perplexity",
    "plot_tradeoff",
    "sample_batch",
    "self_similarity",
    "story_prompts",
    "trim_at_eos",
]


def _ngrams(tokens: Sequence[int], n: int) -> list[tuple[int, ...]]:
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def distinct_n(samples: Sequence[Sequence[int]], n: int = 2) -> float:
    """Distinct n-grams / total n-grams over all ``samples`` (lists of token ids); 0 if none."""
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an int >= 1, got {n!r}")
    grams = [gram for sample in samples for gram in _ngrams(list(sample), n)]
    return len(set(grams)) / len(grams) if grams else 0.0


def self_similarity(samples: Sequence[Sequence[int]], n: int = 2) -> float:
    """Mean pairwise Jaccard overlap of the samples' n-gram sets (needs >= 2 samples)."""
    if len(samples) < 2:
        raise ValueError(f"self_similarity needs at least 2 samples, got {len(samples)}")
    sets = [set(_ngrams(list(sample), n)) for sample in samples]
    overlaps = [len(a & b) / len(a | b) if a | b else 1.0 for a, b in combinations(sets, 2)]
    return sum(overlaps) / len(overlaps)


def trim_at_eos(tokens: Tensor, prompt_length: int, eos_token_id: int | None) -> list[list[int]]:
    """The generated part of each row, up to and including the first ``eos_token_id``."""
    rows = []
    for row in tokens[:, prompt_length:].tolist():
        if eos_token_id is not None and eos_token_id in row:
            row = row[: row.index(eos_token_id) + 1]
        rows.append(row)
    return rows


@torch.no_grad()
def perplexity(model: Any, tokens: Tensor, prompt_length: int, eos_token_id: int | None = None,
               count_eos: bool = True) -> Tensor:
    """(batch,) perplexity of each row's generated tokens given its prompt, under ``model``.

    tokens: (batch, prompt + new) as ``generate`` returns; positions after a row's first
    ``eos_token_id`` (the padding ``generate`` adds) are not scored. With ``count_eos=False`` the
    first ``eos_token_id`` itself is not scored either (a near-certain token after "The end." that
    flatters texts which stop early); a row with no token left to score then gets NaN.
    """
    logits = model(tokens[:, :-1]).logits.float()
    targets = tokens[:, 1:]
    nll = F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")      # (batch, L-1)
    scored = torch.zeros_like(nll, dtype=torch.bool)
    scored[:, prompt_length - 1 :] = True
    if eos_token_id is not None:
        is_eos = targets == eos_token_id
        after_eos = (torch.cumsum(is_eos.long(), dim=1) - is_eos.long()) > 0
        scored &= ~after_eos
        if not count_eos:
            scored &= ~is_eos
    mean_nll = (nll * scored).sum(dim=1) / scored.sum(dim=1).clamp(min=1)
    if not count_eos:
        mean_nll = mean_nll.masked_fill(scored.sum(dim=1) == 0, float("nan"))
    return mean_nll.exp()


def sample_batch(model: Any, prompt_ids: Sequence[int], processors: Sequence, n: int,
                 max_new_tokens: int, seed: int, eos_token_id: int | None = None) -> Tensor:
    """``n`` samples of one prompt in one batch: (n, prompt + new) long, reproducible by ``seed``.

    ``processors`` run in order at every step (stateful schedulers are reset first); an empty list
    is plain sampling from the model's distribution.
    """
    for processor in processors:
        if hasattr(processor, "reset"):
            processor.reset()
    input_ids = torch.tensor([list(prompt_ids)] * n, dtype=torch.long)
    generator = torch.Generator().manual_seed(seed)
    return generate(model, input_ids, max_new_tokens, do_sample=True,
                    logits_processors=list(processors), generator=generator,
                    eos_token_id=eos_token_id)


def story_prompts(n: int, seed: int = 0) -> list[str]:
    """The first sentence of ``n`` TinyWorld stories: open-ended prompts with many good next words.

    Each story opening is followed by a random sequence of events, so a sampler has real choices
    to make; the same ``seed`` always gives the same prompts.
    """
    import random

    from minidecode import tinyworld

    rng = random.Random(seed)
    return [tinyworld.story(rng).text.split(". ")[0] + "." for _ in range(n)]


def plot_tradeoff(results: dict, sweeps: Sequence[str], title: str = "") -> Any:
    """The quality-diversity figure of ``benchmarks/bench_sampling.py``'s results (a dict as in
    ``benchmarks/results/sampling.json``): judge validity (left) and judge perplexity (right)
    against distinct-2, one line per sweep in ``sweeps`` with 95% bootstrap bars, its first
    parameter value drawn as a larger hollow marker. No text labels on the points, so none can
    overlap; the legend names each sweep and its parameter range. Returns the figure."""
    import matplotlib.pyplot as plt

    rows = (len(sweeps) + 1) // 2
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2 + 0.22 * rows), sharex=True)
    markers = "osD^v<>pPX*h"
    # A rule far left of the rest (greedy's distinct-2 is near 0) would squeeze every other point
    # into a corner: it is drawn at the left edge with its value written next to it.
    sweep_xs = [[results["configs"][c]["distinct_2"][0] for c in results["sweeps"][name]["configs"]]
                for name in sweeps]
    xs = sorted(x for values in sweep_xs for x in values)
    gaps = [(b - a, b) for a, b in zip(xs, xs[1:])]
    cut = max(gaps)[1] if gaps and max(gaps)[0] > 0.5 * (xs[-1] - xs[0]) else xs[0]
    if any(min(values) < cut <= max(values) for values in sweep_xs):
        cut = xs[0]         # only whole sweeps go to the edge: one astride the gap keeps the axis
    x_min = cut - 0.05 * (xs[-1] - cut + 1e-9) - 0.01
    colours = plt.get_cmap("tab10" if len(sweeps) <= 10 else "tab20")
    for i, name in enumerate(sweeps):
        sweep = results["sweeps"][name]
        points = [results["configs"][c] for c in sweep["configs"]]
        x = [p["distinct_2"] for p in points]
        if max(v[0] for v in x) < cut:                      # off the left edge
            for ax, metric in ((left, "validity"), (right, "judge_perplexity")):
                y = points[0][metric][0]
                ax.plot(x_min, y, marker="<", ms=9, color=colours(i), clip_on=False,
                        label=f"{name} (distinct-2 {x[0][0]:.2f}, off the left edge)"
                        if ax is left else None)
                ax.annotate(f"{name}: {x[0][0]:.2f}", (x_min, y), xytext=(6, -14),
                            textcoords="offset points", fontsize=8, color=colours(i))
            continue
        values = [str(p["value"]) for p in points]
        label = name if len(values) == 1 else f"{name}: {sweep['parameter']} " + \
            " → ".join(values)
        for ax, metric in ((left, "validity"), (right, "judge_perplexity")):
            y = [p[metric] for p in points]
            style = dict(color=colours(i), marker=markers[i % len(markers)], ms=5, lw=1.2)
            ax.errorbar([v[0] for v in x], [v[0] for v in y],
                        xerr=[[v[0] - v[1] for v in x], [v[2] - v[0] for v in x]],
                        yerr=[[v[0] - v[1] for v in y], [v[2] - v[0] for v in y]],
                        capsize=2, elinewidth=0.6, label=label if ax is left else None, **style)
            ax.plot(x[0][0], y[0][0], marker=style["marker"], ms=11, mfc="none",
                    color=style["color"])
    left.set_ylabel("judge validity (higher = better)")
    right.set_ylabel("judge perplexity (lower = likelier)")
    for ax in (left, right):
        ax.set_xlim(left=x_min)
        ax.set_xlabel("distinct-2 (higher = more diverse)")
        ax.grid(alpha=0.3)
    fig.legend(loc="lower center", ncol=2, fontsize=8, frameon=False)
    n = results["n_prompts"] * results["per_prompt"]
    fig.suptitle(title or f"{n} samples per point ({results['n_prompts']} prompts x "
                 f"{results['per_prompt']}, up to {results['new_tokens']} tokens); "
                 "bars: 95% bootstrap intervals", fontsize=10)
    fig.tight_layout(rect=(0, 0.03 + 0.22 * rows / fig.get_figheight(), 1, 1))
    return fig
