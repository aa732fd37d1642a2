"""diversity.plot_tradeoff: the quality-diversity figure of chapters 01-03 shows every point."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402

from minidecode.diversity import plot_tradeoff  # noqa: E402


def _results(sweeps: dict[str, list[float]]) -> dict:
    """A results dict shaped like benchmarks/results/sampling.json, distinct-2 values given."""
    configs, named = {}, {}
    for name, xs in sweeps.items():
        named[name] = {"parameter": "p", "configs": [f"{name} {i}" for i in range(len(xs))],
                       "chapter": 1}
        for i, x in enumerate(xs):
            configs[f"{name} {i}"] = {"value": i, "distinct_2": [x, x - 0.01, x + 0.01],
                                      "validity": [1.0, 0.99, 1.0],
                                      "judge_perplexity": [2.4, 2.3, 2.5]}
    return {"configs": configs, "sweeps": named, "n_prompts": 24, "per_prompt": 4,
            "new_tokens": 48}


def test_a_rule_far_left_is_drawn_at_the_edge() -> None:
    results = _results({"greedy": [0.05], "a": [0.66, 0.68, 0.70], "b": [0.65, 0.69]})
    figure = plot_tradeoff(results, ["greedy", "a", "b"])
    left = figure.axes[0].get_xlim()[0]
    plt.close(figure)
    assert 0.05 < left < 0.65


def test_a_sweep_astride_the_gap_keeps_all_its_points() -> None:
    # "typical" spans the gap between 0.54 and the cluster at 0.65-0.70: nothing may be cut off.
    results = _results({"typical": [0.54, 0.65, 0.69], "a": [0.66, 0.68, 0.70],
                        "b": [0.67, 0.69]})
    figure = plot_tradeoff(results, ["typical", "a", "b"])
    left = figure.axes[0].get_xlim()[0]
    plt.close(figure)
    assert left < 0.54
