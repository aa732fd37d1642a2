"""Semantic uncertainty (chapter 06): the two SE estimators (per-token and total likelihoods),
clustering (with and without an oracle), AUROC and its bootstrap interval, abstaining and switching
to CoT decoding, the windowed measure fixed, the mixed question set, sampling from the main model
(with top-p / min-p), and clear errors for bad input."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

import minidecode
from minidecode.entropy import entropy
from minidecode.sampling import MinP, TopP
from minidecode.semantic_uncertainty import (
    DEFAULT_THRESHOLD,
    ENTITY_THRESHOLD,
    MIXED_PARTS,
    EmbeddingClusterer,
    EntailmentClusterer,
    EntityEmbeddingClusterer,
    ExactMatchClusterer,
    abstention_curve,
    accuracy_rejection_curve,
    analyse,
    answer_or_abstain,
    auroc,
    auroc_interval,
    cluster_greedy,
    cluster_log_probs,
    cot_fallback,
    discrete_semantic_entropy,
    extract_answer,
    held_out_questions,
    is_correct,
    last_hidden_states,
    mixed_questions,
    naive_entropy,
    named_content,
    normalise_answer,
    roc_curve,
    sample_answers,
    score_continuations,
    semantic_entropy,
    sequence_log_likelihood,
    switch_or_abstain,
    windowed_uncertainty,
)
from minidecode.tinyworld.evaluate import encode_prompt


@pytest.fixture(scope="module")
def target():
    model, tokenizer = minidecode.load("main")
    return model.eval(), tokenizer


@pytest.fixture(scope="module")
def questions():
    return held_out_questions(6, 3)


# --------------------------------------------------------------------------- estimators
@pytest.mark.parametrize("n", [2, 5, 10])
def test_discrete_se_is_zero_when_all_agree_and_log_n_when_all_differ(n: int) -> None:
    assert discrete_semantic_entropy([0] * n) == pytest.approx(0.0, abs=1e-12)
    assert discrete_semantic_entropy(list(range(n))) == pytest.approx(math.log(n))
    assert discrete_semantic_entropy([7] * (n - 1) + [3]) <= math.log(n)
    assert discrete_semantic_entropy([7] * n + [3]) < math.log(n + 1)


def test_discrete_se_hand_computation() -> None:
    # clusters of sizes 2, 1, 1 out of 4: -(0.5 ln 0.5 + 2 * 0.25 ln 0.25)
    expected = -(0.5 * math.log(0.5) + 2 * 0.25 * math.log(0.25))
    assert discrete_semantic_entropy([3, 3, 1, 0]) == pytest.approx(expected)


def test_weighted_se_matches_a_hand_computation() -> None:
    ids = [0, 0, 1, 2]
    probs = [0.4, 0.1, 0.2, 0.05]        # p(s_i | x); sum 0.75
    # p(C0) = 0.5 / 0.75, p(C1) = 0.2 / 0.75, p(C2) = 0.05 / 0.75
    p_c = [0.5 / 0.75, 0.2 / 0.75, 0.05 / 0.75]
    expected = -sum(p * math.log(p) for p in p_c)
    assert semantic_entropy(ids, [math.log(p) for p in probs]) == pytest.approx(expected)
    assert cluster_log_probs(ids, [math.log(p) for p in probs]).exp().tolist() == \
        pytest.approx(p_c)


def test_weighted_se_equals_discrete_when_samples_are_equally_likely_and_survives_underflow(
) -> None:
    ids = [0, 1, 1, 2, 2, 2]
    assert semantic_entropy(ids, [-3.0] * 6) == pytest.approx(discrete_semantic_entropy(ids))
    # exp(-900) is 0 in float64: the estimator must work in log space
    assert semantic_entropy([0, 0, 1], [-900.0, -900.0, -900.0 - math.log(2)]) == \
        pytest.approx(-(0.8 * math.log(0.8) + 0.2 * math.log(0.2)))


def test_weighted_se_is_zero_for_one_cluster_and_follows_the_likelihoods() -> None:
    assert semantic_entropy([0, 0, 0], [-1.0, -5.0, -2.0]) == pytest.approx(0.0, abs=1e-12)
    balanced = semantic_entropy([0, 1], [-1.0, -1.0])
    lopsided = semantic_entropy([0, 1], [-1.0, -6.0])
    assert lopsided < balanced == pytest.approx(math.log(2))


def test_weighted_se_length_normalised_as_the_papers_code_and_total_as_an_option() -> None:
    """Clusters [0, 0, 1], log p = [-1, -2, -3] over 1, 2, 3 tokens. Per token every answer has
    log p = -1, so p(C) = (2/3, 1/3); with the totals p(C) = (e^-1 + e^-2, e^-3) / sum."""
    ids, log_liks, lengths = [0, 0, 1], [-1.0, -2.0, -3.0], [1, 2, 3]
    per_token = -(2 / 3 * math.log(2 / 3) + 1 / 3 * math.log(1 / 3))
    assert semantic_entropy(ids, log_liks, lengths) == pytest.approx(per_token, abs=1e-12)
    assert per_token == pytest.approx(0.6365141683, abs=1e-9)
    masses = [math.exp(-1) + math.exp(-2), math.exp(-3)]
    total = -sum(m / sum(masses) * math.log(m / sum(masses)) for m in masses)
    assert semantic_entropy(ids, log_liks) == pytest.approx(total, abs=1e-12)
    assert total == pytest.approx(0.3026085525, abs=1e-9)
    for bad in ([1, 2], [1, 0, 3]):
        with pytest.raises(ValueError, match="lengths"):
            semantic_entropy(ids, log_liks, bad)


def test_naive_entropy_hand_computation() -> None:
    assert naive_entropy([-2.0, -6.0], [2, 3]) == pytest.approx((1.0 + 2.0) / 2)


def test_sequence_log_likelihood_plain_and_normalised() -> None:
    log_probs = torch.tensor([[-1.0, -2.0, -9.0], [-0.5, -0.5, -0.5]])
    mask = torch.tensor([[True, True, False], [True, True, True]])
    assert sequence_log_likelihood(log_probs, mask).tolist() == [-3.0, -1.5]
    assert sequence_log_likelihood(log_probs, mask, True).tolist() == [-1.5, -0.5]


# --------------------------------------------------------------------------- clustering
def test_cluster_greedy_compares_with_each_clusters_first_member() -> None:
    # |a - b| <= 1 is not transitive: 2 joins 1's cluster, 3 is 2 away from 1 and starts its own
    assert cluster_greedy([1, 2, 3, 4, 10], lambda a, b: abs(a - b) <= 1) == [0, 0, 1, 1, 2]
    assert cluster_greedy(["a", "b", "a", "c", "b"], lambda a, b: a == b) == [0, 1, 0, 2, 1]
    assert cluster_greedy([], lambda a, b: True) == []


def test_exact_match_normalises_case_punctuation_and_articles() -> None:
    assert normalise_answer("The Kitchen!") == "kitchen"
    assert normalise_answer("Tom is in the kitchen.") == "tom is in kitchen"
    ids = ExactMatchClusterer()("Where is Tom?", ["The kitchen.", "the Kitchen", "In the kitchen."])
    assert ids == [0, 0, 1]
    parsed = ExactMatchClusterer(lambda t: extract_answer("qa", t))
    assert parsed("", ["The kitchen.", "He is in the kitchen.", "In the park."]) == [0, 0, 1]


def test_minilm_clusters_paraphrases_together_and_other_places_apart() -> None:
    """Threshold 0.9 (the default) on "question + answer": paraphrases >= 0.96, other places
    <= 0.87 (measured; see EmbeddingClusterer's docstring)."""
    answers = ["In the kitchen.", "Tom is in the kitchen.", "In the garden."]
    clusterer = EmbeddingClusterer(threshold=0.9)
    assert DEFAULT_THRESHOLD == 0.9
    assert clusterer("Where is Tom?", answers) == [0, 0, 1]
    sims = clusterer.similarities("Where is Tom?", answers)
    assert sims[0, 1] > 0.9 > sims[0, 2]
    # without the question, the wording dominates: no threshold could separate them
    bare = EmbeddingClusterer(with_question=False).similarities("", answers)
    assert bare[0, 2] > bare[0, 1]
    # threshold 0 puts everything together, threshold 1 keeps distinct texts apart
    assert EmbeddingClusterer(0.0)("Where is Tom?", answers) == [0, 0, 0]
    assert EmbeddingClusterer(1.0)("Where is Tom?", answers) == [0, 1, 2]


def test_entailment_clusterer_needs_entailment_both_ways() -> None:
    def entails(premise: str, hypothesis: str) -> bool:   # a toy "NLI": same last word
        return premise.split()[-1] == hypothesis.split()[-1] or premise == hypothesis

    def one_way(premise: str, hypothesis: str) -> bool:   # "kitchen" entails "house", not back
        return entails(premise, hypothesis) or hypothesis.endswith("house.")

    answers = ["In the kitchen.", "Tom is in the kitchen.", "In the house."]
    assert EntailmentClusterer(entails)("Where is Tom?", answers) == [0, 0, 1]
    assert EntailmentClusterer(one_way)("Where is Tom?", answers) == [0, 0, 1]


def test_named_content_numbers_entities_negation_minus_the_question() -> None:
    assert named_content("He is in the kitchen.", "Where is Tom?") == {"kitchen"}
    assert named_content("Tom is in the kitchen.", "Where is Tom?") == {"kitchen"}
    assert named_content("the kitchen", "Where is Tom?") == {"kitchen"}
    assert named_content("The answer is eleven.") == named_content("11") == {"11"}
    assert named_content("07 and 2.50") == {"7", "2.5"}
    # a name the vocabulary does not know counts when capitalised inside a sentence
    assert named_content("He is with Anna and Bob in the park.", "Where is Tom?") == {
        "anna", "bob", "park"}
    assert named_content("He isn't in the kitchen.", "Where is Tom?") == {"<not>", "kitchen"}
    # the question's own numbers are given, not claimed
    question = "Mia has 7 shells. She wins 9 more. How many shells does Mia have?"
    assert named_content("She wins 9 more, so 7 + 9 = 16. The answer is 16.", question) == {"16"}
    assert named_content("In the attic.", "", vocabulary=["attic"]) == {"attic"}
    with pytest.raises(ValueError, match="text"):
        named_content("  ")


def test_entity_clusterer_separates_numbers_and_places_and_joins_paraphrases() -> None:
    """MiniLM alone (threshold 0.9, with the question) cannot tell "11" from "14"; the named
    numbers and places can, while a full sentence and a bare place stay together."""
    clusterer = EntityEmbeddingClusterer()
    assert clusterer.threshold == ENTITY_THRESHOLD
    arithmetic = "Mia has 7 shells. She wins 4 more. How many shells does Mia have?"
    assert EmbeddingClusterer()(arithmetic, ["11", "14"]) == [0, 0]       # the failure fixed
    assert clusterer(arithmetic, ["11", "14", "The answer is 11."]) == [0, 1, 0]
    where = "Where is Tom?"
    assert clusterer(where, ["He is in the kitchen.", "the kitchen", "the garden",
                             "Tom is in the kitchen.", "In the garden."]) == [0, 0, 1, 0, 1]
    # both directions: naming more (Anna) is not the same meaning, nor is a negation
    assert clusterer(where, ["In the park.", "He is with Anna in the park.",
                             "He is not in the park."]) == [0, 1, 2]
    # the embedding still has a say: threshold 1 keeps different wordings apart
    assert EntityEmbeddingClusterer(1.0)(where, ["In the park.", "The park."]) == [0, 1]
    with pytest.raises(ValueError, match="threshold"):
        EntityEmbeddingClusterer(1.5)


# --------------------------------------------------------------------------- evaluation
@pytest.mark.parametrize("seed", range(5))
def test_auroc_equals_sklearn_on_random_data(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(10, 300))
    labels = rng.integers(0, 2, n)
    labels[:2] = [0, 1]
    scores = rng.normal(size=n) + 0.7 * labels
    if seed % 2:                          # many ties, as discrete SE gives
        scores = np.round(scores)
    assert auroc(scores, labels) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    fpr, tpr = roc_curve(scores, labels)
    assert np.trapezoid(tpr, fpr) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)


def test_auroc_extremes() -> None:
    assert auroc([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1]) == 1.0
    assert auroc([0.9, 0.8, 0.2, 0.1], [0, 0, 1, 1]) == 0.0
    assert auroc([1.0, 1.0, 1.0, 1.0], [0, 1, 0, 1]) == 0.5


def test_accuracy_rejection_curve() -> None:
    correct = np.array([1, 1, 1, 0, 0, 1, 0, 0, 1, 1])
    perfect = 1.0 - correct + np.linspace(0, 0.01, 10)       # every wrong answer most uncertain
    curve = accuracy_rejection_curve(perfect, correct, [0.0, 0.2, 0.4, 0.5])
    assert curve.tolist() == pytest.approx([0.6, 0.75, 1.0, 1.0])
    flat = accuracy_rejection_curve(np.zeros(10), correct, [0.0, 0.3, 0.7])
    assert flat.tolist() == pytest.approx([0.6, 0.6, 0.6])   # ties: the base accuracy
    backwards = accuracy_rejection_curve(-perfect, correct, [0.0, 0.4])
    assert backwards[1] < backwards[0]


def test_auroc_interval_is_the_stratified_percentile_bootstrap() -> None:
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 120)
    scores = np.round(rng.normal(size=120) + labels, 1)             # ties included
    point, low, high = auroc_interval(scores, labels, n_resamples=500, seed=7)
    assert point == auroc(scores, labels) and low < point < high
    # the same resamples, one at a time with auroc
    draws = np.random.default_rng(7)
    pos, neg = scores[labels == 1], scores[labels == 0]
    pos_idx = draws.integers(0, len(pos), (500, len(pos)))
    neg_idx = draws.integers(0, len(neg), (500, len(neg)))
    values = [auroc(np.r_[pos[i], neg[j]], np.r_[np.ones(len(pos)), np.zeros(len(neg))])
              for i, j in zip(pos_idx, neg_idx)]
    assert (low, high) == pytest.approx(tuple(np.quantile(values, [0.025, 0.975])), abs=1e-12)
    # more questions, a narrower interval; perfect separation, no width at all
    many = np.tile(labels, 10), np.tile(scores, 10)
    _, low10, high10 = auroc_interval(many[1], many[0], n_resamples=500)
    assert high10 - low10 < (high - low) / 2
    assert auroc_interval([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1], n_resamples=100) == (1.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="n_resamples"):
        auroc_interval(scores, labels, n_resamples=10)
    with pytest.raises(ValueError, match="level"):
        auroc_interval(scores, labels, level=1.0)


def test_answer_or_abstain() -> None:
    answers = ["In the park.", "The park.", "In the kitchen."]
    se = -(2 / 3 * math.log(2 / 3) + 1 / 3 * math.log(1 / 3))           # 0.637
    decided = answer_or_abstain(answers, [0, 0, 1], threshold=0.7)
    assert decided.answer == "In the park." and not decided.abstained
    assert decided.semantic_entropy == pytest.approx(se) and decided.support == pytest.approx(2 / 3)
    refused = answer_or_abstain(answers, [0, 0, 1], threshold=0.6)
    assert refused.abstained and refused.answer is None
    # the greedy answer is given when passed; the likelihoods decide the majority when given
    assert answer_or_abstain(answers, [0, 0, 1], 0.7, answer="Park.").answer == "Park."
    weighted = answer_or_abstain(answers, [0, 0, 1], 0.7, log_likelihoods=[-6.0, -6.0, -0.1])
    assert weighted.answer == "In the kitchen." and weighted.support > 0.99
    assert answer_or_abstain(answers, [0, 1, 2], 0.0).abstained
    assert not answer_or_abstain(answers, [0, 0, 0], 0.0).abstained
    with pytest.raises(ValueError, match="threshold"):
        answer_or_abstain(answers, [0, 0, 1], -1.0)
    with pytest.raises(ValueError, match="cluster_ids"):
        answer_or_abstain(answers, [0, 0], 0.5)


def test_abstention_curve_rises_only_when_the_entropy_ranks_wrong_answers_last() -> None:
    entropies = [0.0, 0.2, 0.5, 0.9, 1.2, 1.6]
    correct = [1, 1, 1, 0, 1, 0]
    rows = abstention_curve(entropies, correct, [0.0, 0.5, 1.0, 2.0])
    assert [r["answered"] for r in rows] == [1, 3, 4, 6]
    assert [r["rejection_rate"] for r in rows] == pytest.approx([5 / 6, 0.5, 1 / 3, 0.0])
    assert [r["accuracy"] for r in rows] == pytest.approx([1.0, 1.0, 0.75, 4 / 6])
    assert all(r["low"] <= r["accuracy"] <= r["high"] for r in rows)
    assert math.isnan(abstention_curve(entropies, correct, [-1.0])[0]["accuracy"])
    # on many questions, an informative SE lifts accuracy as it refuses more; a random or a
    # constant score does not (so a curve that ignored the ranking would fail here)
    rng = np.random.default_rng(0)
    right = rng.random(2000) < 0.5
    informative = rng.normal(size=2000) + 1.5 * ~right
    fractions = [0.0, 0.5]
    assert np.diff(accuracy_rejection_curve(informative, right, fractions))[0] > 0.2
    for uninformative in (rng.normal(size=2000), np.ones(2000)):
        assert abs(np.diff(accuracy_rejection_curve(uninformative, right, fractions))[0]) < 0.05
    median = float(np.median(informative))
    kept = abstention_curve(informative, right, [median])[0]
    assert kept["accuracy"] > right.mean() + 0.2 and kept["rejection_rate"] == pytest.approx(0.5)


def test_switch_or_abstain_follows_its_thresholds() -> None:
    calls = []

    def fallback():
        calls.append(1)
        return "The answer is 9.", 0.3

    kept = switch_or_abstain(0.2, "The answer is 7.", 0.5, fallback)
    assert (kept.answer, kept.method, calls) == ("The answer is 7.", "greedy", [])
    switched = switch_or_abstain(0.9, "The answer is 7.", 0.5, fallback, abstain_threshold=0.5)
    assert (switched.answer, switched.method, switched.fallback_entropy) == (
        "The answer is 9.", "cot", 0.3)
    refused = switch_or_abstain(0.9, "The answer is 7.", 0.5, fallback, abstain_threshold=0.2)
    assert refused.abstained and refused.method == "abstain" and refused.fallback_entropy == 0.3
    assert switch_or_abstain(0.9, "x", 0.5).abstained                  # no fallback: abstain
    assert not switch_or_abstain(0.9, "x", math.inf).abstained
    for bad in (-0.1, float("nan")):
        with pytest.raises(ValueError, match="switch_threshold must be >= 0"):
            switch_or_abstain(0.9, "x", bad)
        with pytest.raises(ValueError, match="abstain_threshold must be >= 0"):
            switch_or_abstain(0.9, "x", 0.5, fallback, bad)


def test_mixed_questions_interleave_five_parts() -> None:
    questions = mixed_questions(4)
    assert len(questions) == 20 and questions == mixed_questions(4)
    assert [q.part for q in questions[:5]] == list(MIXED_PARTS)
    for q in questions:
        assert q.answerable == (q.part != "qa-unanswerable")
        assert q.family == ("qa" if q.part.startswith("qa") else "arithmetic")
        if q.family == "arithmetic":           # n steps = n numbers after the starting count
            assert len(re.findall(r"\d+", q.question)) - 1 == int(q.part[-1])
            assert "step by step" not in q.prompt
        elif q.answerable:
            assert q.truth in q.prompt
    assert mixed_questions(4)[:10] == mixed_questions(2)
    with pytest.raises(ValueError, match="n_per_part must be an int >= 1"):
        mixed_questions(0)


# --------------------------------------------------------------------------- the model
def test_semantic_entropy_tells_a_known_answer_from_a_guess(target):
    """The main model says where X is when the context does and guesses when it does not: the
    samples of an answerable question agree more (no-oracle clusters). Greedy decoding, one
    answer, would give SE 0 to both."""
    model, tokenizer = target
    questions = mixed_questions(3)
    clusterer = EntityEmbeddingClusterer()
    entropies = {}
    for part in ("qa-answerable", "qa-unanswerable"):
        values = []
        for i, q in enumerate(q for q in questions if q.part == part):
            samples = sample_answers(model, tokenizer, encode_prompt(tokenizer, q.prompt), n=8,
                                     max_new_tokens=12, seed=i)
            values.append(discrete_semantic_entropy(clusterer(q.question, samples.texts)))
        entropies[part] = values
    assert max(entropies["qa-answerable"]) < min(entropies["qa-unanswerable"])


def test_truncated_sampling_and_cot_fallback(target):
    model, tokenizer = target
    question = mixed_questions(1)[3]                                  # a 2-step word problem
    prompt = encode_prompt(tokenizer, question.prompt)
    greedy = sample_answers(model, tokenizer, prompt, greedy=True, max_new_tokens=72)
    only_top = sample_answers(model, tokenizer, prompt, n=3, max_new_tokens=72, seed=1,
                              processors=[MinP(1.0)])                 # keeps the argmax only
    assert only_top.texts == greedy.texts * 3
    nucleus = sample_answers(model, tokenizer, prompt, n=6, max_new_tokens=72, seed=1,
                             processors=[TopP(0.9)])
    assert len(nucleus.texts) == 6 and all(nucleus.texts)
    text, se, result = cot_fallback(model, tokenizer, question, k=4)
    assert len(result.paths) == 4 and text == (result.path.text.strip() or "(no answer)")
    assert 0.0 <= se <= math.log(4) + 1e-9


def test_sampled_answers_differ_are_reproducible_and_scored_correctly(target, questions):
    model, tokenizer = target
    prompt = encode_prompt(tokenizer, questions[0].prompt)
    samples = sample_answers(model, tokenizer, prompt, n=10, temperature=1.0, seed=3)
    again = sample_answers(model, tokenizer, prompt, n=10, temperature=1.0, seed=3)
    greedy = sample_answers(model, tokenizer, prompt, greedy=True)
    assert samples.texts == again.texts
    assert len(samples.texts) == 10 and all(samples.texts)
    # sampling, not greedy decoding: the answers disagree (question 0 is unanswerable: the
    # context never says where Sam is, so the model guesses a place)
    assert len(set(samples.texts)) > 1 and len(greedy.texts) == 1
    assert discrete_semantic_entropy(ExactMatchClusterer()("", samples.texts)) > 0
    # log-likelihood of sample 0, one token at a time, by hand
    answer = samples.tokens[0, : int(samples.lengths[0])].tolist()
    ids = torch.tensor([prompt + answer])
    with torch.no_grad():
        log_probs = torch.log_softmax(model(ids).logits[0].float(), -1)
    by_hand = sum(float(log_probs[len(prompt) - 1 + t, tok]) for t, tok in enumerate(answer))
    assert float(samples.log_likelihoods()[0]) == pytest.approx(by_hand, abs=1e-4)


def test_score_continuations_entropies_match_the_shared_helper(target, questions):
    model, tokenizer = target
    prompt = encode_prompt(tokenizer, questions[1].prompt)
    conts = [tokenizer.encode(" In the park.").ids, tokenizer.encode(" The park.").ids]
    log_probs, entropies, mask = score_continuations(model, prompt, conts)
    assert mask.sum(-1).tolist() == [len(c) for c in conts]
    with torch.no_grad():
        logits = model(torch.tensor([prompt + conts[0]])).logits[0].float()
    want = entropy(logits[len(prompt) - 1: -1])
    assert torch.allclose(entropies[0, : len(conts[0])], want, atol=1e-5)


def test_windowed_uncertainty_matches_a_direct_in_context_computation(target, questions):
    model, tokenizer = target
    ids = torch.tensor([encode_prompt(tokenizer, questions[2].prompt)])
    window = 5
    fast = windowed_uncertainty(model, ids, window)
    logits, hidden = last_hidden_states(model, ids)
    vocab = logits.shape[-1]
    for i in (2 * window, ids.shape[1] - 1):
        current = hidden[0, i - window: i].mean(0)
        distances = [1 - torch.cosine_similarity(current, hidden[0, j: j + window].mean(0), dim=0)
                     for j in range(i - 2 * window, i - window)]
        spread = torch.stack(distances).std(unbiased=False)
        h = entropy(logits[0, i - 1]) / math.log(vocab)
        assert float(fast[i]) == pytest.approx(float(0.6 * h + 0.4 * spread), abs=1e-4)
    assert bool((fast[: 2 * window] == 0).all())
    assert bool((fast >= 0).all()) and bool((fast <= 1).all())


def test_analyse_scores_every_measure(target, questions):
    model, tokenizer = target
    question = questions[-1]                      # a word problem
    result = analyse(model, tokenizer, question, n=4, seed=0)
    assert question.family == "arithmetic" and len(result.samples.texts) == 4
    assert set(result.clusters) == {"exact", "minilm", "entities", "parsed"}
    assert all(math.isfinite(v) for v in result.scores.values())
    assert result.correct == is_correct(question, result.greedy.texts[0])
    samples = result.samples
    for name, ids in result.clusters.items():
        assert result.scores[f"se_discrete_{name}"] == pytest.approx(
            discrete_semantic_entropy(ids))
        assert result.scores[f"se_weighted_{name}"] == pytest.approx(   # per token by default
            semantic_entropy(ids, samples.log_likelihoods(length_normalised=True)))
    total = analyse(model, tokenizer, question, n=4, seed=0, length_normalise=False,
                    clusterers={"exact": ExactMatchClusterer()})
    assert total.scores["se_weighted_exact"] == pytest.approx(
        semantic_entropy(total.clusters["exact"], total.samples.log_likelihoods()))


def test_correctness_and_extraction() -> None:
    qa = held_out_questions(40, 0)
    answerable = next(q for q in qa if q.answerable)
    unanswerable = next(q for q in qa if not q.answerable)
    assert is_correct(answerable, f"He is in the {answerable.truth}.")
    assert not is_correct(answerable, "In the nowhere.")
    assert not is_correct(unanswerable, f"In the {unanswerable.truth}.")
    assert extract_answer("arithmetic", "so 3 + 4 = 7. The answer is 7.") == "7"


# --------------------------------------------------------------------------- bad input
def test_bad_input_gives_clear_errors(target, questions):
    model, tokenizer = target
    prompt = encode_prompt(tokenizer, questions[0].prompt)
    with pytest.raises(ValueError, match=r"n must hold at least 2 samples.*got 1"):
        sample_answers(model, tokenizer, prompt, n=1)
    with pytest.raises(ValueError, match=r"temperature must be > 0.*got 0"):
        sample_answers(model, tokenizer, prompt, n=4, temperature=0.0)
    with pytest.raises(ValueError, match=r"temperature must be > 0.*got -1"):
        sample_answers(model, tokenizer, prompt, n=4, temperature=-1.0)
    with pytest.raises(ValueError, match=r"cluster_ids must hold at least 2 samples"):
        discrete_semantic_entropy([0])
    with pytest.raises(ValueError, match=r"cluster_ids must hold at least 2 samples"):
        semantic_entropy([0], [-1.0])
    with pytest.raises(ValueError, match=r"log_likelihoods must be 3 finite numbers"):
        semantic_entropy([0, 1, 1], [-1.0, float("nan"), -2.0])
    with pytest.raises(ValueError, match=r"answers\[1\] must be a non-empty answer string"):
        ExactMatchClusterer()("Where is Tom?", ["In the park.", "  "])
    with pytest.raises(ValueError, match=r"answers\[0\] must be a non-empty answer string"):
        EmbeddingClusterer()("Where is Tom?", [""])
    with pytest.raises(ValueError, match=r"text must be a non-empty answer string"):
        normalise_answer("")
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match=r"threshold must be in \[0, 1\]"):
            EmbeddingClusterer(threshold=bad)
    with pytest.raises(ValueError, match="auroc needs both classes"):
        auroc([0.1, 0.2], [1, 1])
    with pytest.raises(ValueError, match="rejection_fractions must lie in"):
        accuracy_rejection_curve([0.1, 0.2], [1, 0], [1.0])
    with pytest.raises(ValueError, match="window must be an int >= 1"):
        windowed_uncertainty(model, torch.tensor([prompt]), window=0)


# --------------------------------------------------------------------------- graded exercises
def _entropy_in_bits(cluster_ids):  # log2 instead of the natural log
    n = len(cluster_ids)
    if n < 2:
        raise ValueError("n")
    sizes = [cluster_ids.count(c) for c in set(cluster_ids)]
    return float(-sum(s / n * math.log2(s / n) for s in sizes))


def _auroc_ignoring_ties(scores, labels):  # a tie counts 0 instead of 1/2
    wrong = [s for s, y in zip(scores, labels) if y == 1]
    right = [s for s, y in zip(scores, labels) if y == 0]
    if not wrong or not right:
        raise ValueError("labels")
    return float(sum(w > r for w in wrong for r in right) / (len(wrong) * len(right)))


def _compare_with_last_member(items, equivalent):  # chains merge: 1 ~ 2 ~ 3 ~ 4
    clusters, ids = [], []
    for item in items:
        for k, members in enumerate(clusters):
            if equivalent(members[-1], item):
                members.append(item)
                ids.append(k)
                break
        else:
            clusters.append([item])
            ids.append(len(clusters) - 1)
    return ids


@pytest.mark.parametrize(
    ("exercise_id", "name", "wrong"),
    [
        ("06.1", "discrete_semantic_entropy", _entropy_in_bits),
        ("06.2", "auroc", _auroc_ignoring_ties),
        ("06.3", "cluster_greedy", _compare_with_last_member),
    ],
)
def test_chapter_06_checks_fail_on_the_stub_and_on_a_typical_mistake(exercise_id, name, wrong,
                                                                     check_rejects):
    check_rejects(exercise_id, name, wrong)
