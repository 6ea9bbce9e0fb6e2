"""Scoring metrics against scikit-learn and numpy/scipy; bootstrap statistics; chance levels."""

from __future__ import annotations

import warnings
from types import SimpleNamespace

import numpy as np
import pytest
from scipy.stats import pearsonr
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)

from autointerp.score.metrics import (
    aggregate,
    auroc,
    binary_metrics,
    bootstrap_ci,
    chance_level,
    mean_with_ci,
    pearson,
    pooled_binary_metrics,
)

CLASSIFICATION = ("balanced_accuracy", "accuracy", "f1", "precision", "recall")


def sklearn_metrics(labels, predictions, probabilities=None) -> dict:
    """The oracle: scikit-learn on the non-failed examples."""
    kept = [i for i, p in enumerate(predictions) if p is not None]
    y = [labels[i] for i in kept]
    yhat = [predictions[i] for i in kept]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = {
            "balanced_accuracy": balanced_accuracy_score(y, yhat),
            "accuracy": accuracy_score(y, yhat),
            "f1": f1_score(y, yhat, zero_division=0),
            "precision": precision_score(y, yhat, zero_division=0),
            "recall": recall_score(y, yhat, zero_division=0),
        }
    scored = [i for i in kept if probabilities is not None and probabilities[i] is not None]
    classes = {labels[i] for i in scored}
    result["auroc"] = (
        roc_auc_score([labels[i] for i in scored], [probabilities[i] for i in scored])
        if len(classes) == 2
        else None
    )
    return result


def random_latent(rng: np.random.Generator, n: int, kind: str):
    """Labels, predictions (some failed) and probabilities (coarse, so with ties; some missing)."""
    positive_fraction = {"balanced": 0.5, "imbalanced": 0.08, "all_one": 0.3}[kind]
    labels = (rng.random(n) < positive_fraction).astype(int).tolist()
    if kind == "all_one":
        predictions: list[int | None] = [1] * n
    else:
        predictions = [int(p) for p in (rng.random(n) < 0.5 * np.array(labels) + 0.25)]
    probabilities: list[float | None] = [
        round(float(p), 1) for p in rng.random(n) * 0.5 + 0.4 * np.array(labels)
    ]
    for i in rng.choice(n, size=n // 10, replace=False):
        predictions[i] = None
    for i in rng.choice(n, size=n // 20, replace=False):
        probabilities[i] = None
    return labels, predictions, probabilities


def assert_matches(ours: dict, theirs: dict) -> None:
    for name, expected in theirs.items():
        if expected is None:
            assert ours[name] is None, name
        else:
            assert ours[name] == pytest.approx(expected, abs=1e-12), name


@pytest.mark.parametrize("kind", ["balanced", "imbalanced", "all_one"])
@pytest.mark.parametrize("seed", range(15))
def test_binary_metrics_match_sklearn(kind, seed):
    rng = np.random.default_rng(seed)
    labels, predictions, probabilities = random_latent(rng, int(rng.integers(5, 80)), kind)
    ours = binary_metrics(labels, predictions, probabilities, min_per_class=1)
    kept = [i for i, p in enumerate(predictions) if p is not None]
    if len({labels[i] for i in kept}) == 2:
        assert_matches(ours, sklearn_metrics(labels, predictions, probabilities))
    else:  # a class is missing: sklearn would silently report one class's recall
        assert all(ours[name] is None for name in (*CLASSIFICATION, "auroc")) and ours["undefined"]
    assert ours["n_failed"] == predictions.count(None)
    assert ours["n_examples"] == len(kept)
    assert ours["n_positive"] == sum(labels[i] for i in kept)
    assert ours["n_negative"] == len(kept) - ours["n_positive"]


@pytest.mark.parametrize(
    ("labels", "predictions"),
    [
        ([1, 1, 0, 0], [0, 0, 0, 0]),  # nothing predicted positive: precision, recall, f1 are 0
        ([1, 1, 0, 0], [1, 1, 1, 1]),
        ([1, 0], [1, 0]),
    ],
)
def test_degenerate_cases_follow_sklearn(labels, predictions):
    assert_matches(binary_metrics(labels, predictions), sklearn_metrics(labels, predictions))


@pytest.mark.parametrize(
    ("labels", "predictions", "why"),
    [
        ([1] * 100 + [0] * 100, [1] * 100 + [None] * 100, "0 negatives scored, 10 needed"),
        ([1] * 100, [1] * 100, "0 negatives scored, 1 needed"),  # none given at all
        ([0, 0, 0], [0, 1, 0], "0 positives scored, 1 needed"),
        ([1] * 100 + [0] * 100, [1] * 100 + [0] * 9 + [None] * 91, "9 negatives scored, 10 needed"),
        ([1] * 20 + [0] * 20, [None] * 15 + [1] * 25, "5 positives scored, 10 needed"),
    ],
)
def test_a_class_below_its_minimum_gives_no_metrics(labels, predictions, why):
    """An always-"yes" scorer whose negatives all failed (or were never drawn) gets no score, not 1.0."""
    ours = binary_metrics(labels, predictions, [0.9 if p else 0.1 for p in predictions])
    assert all(ours[name] is None for name in (*CLASSIFICATION, "auroc"))
    assert why in ours["undefined"]


def test_failures_are_counted_per_class():
    ours = binary_metrics([1] * 30 + [0] * 30, [1] * 28 + [None] * 2 + [0] * 20 + [None] * 10)
    assert (ours["n_failed_positive"], ours["n_failed_negative"], ours["n_failed"]) == (2, 10, 12)
    assert ours["balanced_accuracy"] == 1.0 and "undefined" not in ours


def test_failed_examples_are_excluded_and_counted():
    labels = [1, 1, 0, 0, 1, 0]
    predictions = [1, None, 0, None, 0, 1]
    probabilities = [0.9, 0.0, 0.2, 1.0, 0.4, 0.6]
    ours = binary_metrics(labels, predictions, probabilities, min_per_class=1)
    clean = binary_metrics([1, 0, 1, 0], [1, 0, 0, 1], [0.9, 0.2, 0.4, 0.6])
    assert ours == clean | {"n_failed": 2, "n_failed_positive": 1, "n_failed_negative": 1}
    assert ours["n_examples"] == 4


def test_everything_failed_gives_no_metrics():
    ours = binary_metrics([1, 0], [None, None], [0.5, 0.5])
    assert all(ours[name] is None for name in (*CLASSIFICATION, "auroc"))
    assert (ours["n_examples"], ours["n_failed"], ours["n_positive"], ours["n_negative"]) == (0, 2, 0, 0)


def test_auroc_is_none_without_probabilities_or_a_class():
    assert binary_metrics([1, 0], [1, 0])["auroc"] is None
    assert binary_metrics([1, 0], [1, 0], [0.3, None])["auroc"] is None
    assert binary_metrics([1, 0], [1, None], [0.3, 0.9])["auroc"] is None


def test_invalid_inputs_raise():
    with pytest.raises(ValueError):
        binary_metrics([1, 0], [1])
    with pytest.raises(ValueError):
        binary_metrics([1, 2], [1, 0])
    with pytest.raises(ValueError):
        binary_metrics([1, 0], [1, 0], [0.5])
    with pytest.raises(ValueError):
        auroc([1, 0], [0.5, float("nan")])


@pytest.mark.parametrize("seed", range(20))
def test_auroc_matches_sklearn_with_ties(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 200))
    labels = (rng.random(n) < rng.uniform(0.05, 0.95)).astype(int)
    labels[:2] = [0, 1]
    scores = rng.integers(0, int(rng.integers(1, 6)), n) + 0.3 * labels  # few distinct values: many ties
    assert auroc(labels.tolist(), scores.tolist()) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)


def test_auroc_edge_cases():
    assert auroc([1, 1, 1], [0.1, 0.2, 0.3]) is None
    assert auroc([0, 1], [0.5, 0.5]) == 0.5
    assert auroc([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4]) == 1.0
    assert auroc([0, 0, 1, 1], [0.4, 0.3, 0.2, 0.1]) == 0.0


@pytest.mark.parametrize("seed", range(10))
def test_pearson_matches_numpy_and_scipy(seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=int(rng.integers(2, 100)))
    y = rng.uniform(-1, 1) * x + rng.normal(size=len(x))
    expected = pearsonr(x, y).statistic
    assert pearson(x.tolist(), y.tolist()) == pytest.approx(expected, abs=1e-12)
    assert pearson(x.tolist(), y.tolist()) == pytest.approx(np.corrcoef(x, y)[0, 1], abs=1e-12)


def test_pearson_undefined_cases():
    assert pearson([1.0], [2.0]) is None
    assert pearson([], []) is None
    assert pearson([0.1, 0.1, 0.1], [1.0, 2.0, 3.0]) is None
    assert pearson([1.0, 2.0, 3.0], [5.0, 5.0, 5.0]) is None
    assert pearson([1.0, 2.0, 3.0], [2.0, 4.0, 6.0]) == pytest.approx(1.0)
    assert pearson([1.0, 2.0], [2.0, 1.0]) == pytest.approx(-1.0)


def test_bootstrap_ci_contains_the_mean_and_is_deterministic():
    rng = np.random.default_rng(0)
    for _ in range(20):
        values = rng.exponential(size=int(rng.integers(2, 60))).tolist()
        low, high = bootstrap_ci(values, seed=3)
        assert low <= np.mean(values) <= high
        assert bootstrap_ci(values, seed=3) == (low, high)
    values = rng.normal(size=30).tolist()
    assert bootstrap_ci(values, seed=1) != bootstrap_ci(values, seed=2)
    assert bootstrap_ci([0.7]) == (None, None)  # one latent: no interval, never a zero-width one
    with pytest.raises(ValueError):
        bootstrap_ci([])


@pytest.mark.parametrize("n", [2, 3, 5, 10])
def test_small_sample_intervals_keep_their_coverage(n):
    """The percentile bootstrap of 2-10 values covers far less than 95% (n = 2 gives (min, max)); below
    SMALL_SAMPLE the interval is Student's t, which is exact for normal data."""
    rng = np.random.default_rng(n)
    trials = 400
    covered = 0
    for seed in range(trials):
        low, high = bootstrap_ci(rng.normal(loc=1.0, size=n).tolist(), n_resamples=500, seed=seed)
        covered += low <= 1.0 <= high
    assert 0.92 <= covered / trials <= 0.98


def test_mean_with_ci_formats_a_single_value_without_an_interval():
    assert mean_with_ci(aggregate([0.9])) == "0.900 (n = 1)"
    assert mean_with_ci(aggregate([])) == "-"
    assert mean_with_ci({"mean": 0.5, "ci_low": 0.4, "ci_high": 0.6, "n": 3}) == "0.500 [0.400, 0.600]"


def test_bootstrap_ci_narrows_with_more_data_and_lower_level():
    rng = np.random.default_rng(1)
    small = rng.normal(size=40)
    large = rng.normal(size=4000)

    def width(values: np.ndarray, level: float = 0.95) -> float:
        low, high = bootstrap_ci(values, level=level)
        return high - low

    assert width(large) < width(small) / 5
    assert width(small, level=0.5) < width(small, level=0.95)


def test_bootstrap_ci_chunked_resampling_is_complete():
    values = np.random.default_rng(2).normal(size=100_000)  # more than one chunk of resamples
    low, high = bootstrap_ci(values, n_resamples=200)
    assert low < values.mean() < high
    assert high - low == pytest.approx(2 * 1.96 / np.sqrt(len(values)), rel=0.3)


def test_bootstrap_ci_coverage_is_about_95_percent():
    rng = np.random.default_rng(3)
    trials = 300
    covered = 0
    for seed in range(trials):
        low, high = bootstrap_ci(rng.normal(loc=2.0, size=60).tolist(), n_resamples=1000, seed=seed)
        covered += low <= 2.0 <= high
    assert 0.90 <= covered / trials <= 0.985


def test_aggregate_ignores_none():
    result = aggregate([0.5, None, 0.7, 0.9, None])
    assert result["n"] == 3
    assert result["mean"] == pytest.approx(0.7)
    assert result["median"] == pytest.approx(0.7)
    assert result["std"] == pytest.approx(np.std([0.5, 0.7, 0.9], ddof=1))
    assert (result["ci_low"], result["ci_high"]) == bootstrap_ci([0.5, 0.7, 0.9])
    assert aggregate([None, None]) == {
        "mean": None,
        "ci_low": None,
        "ci_high": None,
        "median": None,
        "std": None,
        "n": 0,
    }
    single = aggregate([0.4])
    assert (single["mean"], single["ci_low"], single["ci_high"], single["std"], single["n"]) == (
        0.4,
        None,
        None,
        None,
        1,
    )


def test_pooled_metrics_concatenate_latents():
    rng = np.random.default_rng(4)
    latents = [random_latent(rng, 30, kind) for kind in ("balanced", "imbalanced", "all_one")]
    latents.append(([1, 0, 1], [1, 1, None], None))
    labels = [x for latent in latents for x in latent[0]]
    predictions = [x for latent in latents for x in latent[1]]
    probabilities = [x for latent in latents for x in (latent[2] or [None] * len(latent[0]))]
    pooled = pooled_binary_metrics(iter(latents))
    assert pooled == binary_metrics(labels, predictions, probabilities)
    assert_matches(pooled, sklearn_metrics(labels, predictions, probabilities))
    assert pooled["n_failed"] == predictions.count(None)
    assert pooled_binary_metrics([([1, 0], [1, 0], None)])["auroc"] is None
    with pytest.raises(ValueError):
        pooled_binary_metrics([([1, 0], [1, 0], [0.5])])


@pytest.mark.parametrize("positive_fraction", [0.1, 0.5, 0.8])
def test_chance_levels_are_what_a_random_guesser_gets(positive_fraction):
    rng = np.random.default_rng(5)
    n = 200_000
    labels = (rng.random(n) < positive_fraction).astype(int)
    guesses = (rng.random(n) < 0.5).astype(int)
    result = binary_metrics(labels.tolist(), guesses.tolist(), rng.random(n).tolist())
    for name in (*CLASSIFICATION, "auroc"):
        assert result[name] == pytest.approx(chance_level(name, positive_fraction), abs=0.01), name
    assert pearson(rng.random(n).tolist(), labels.tolist()) == pytest.approx(
        chance_level("pearson"), abs=0.01
    )


def test_chance_level_for_intruder_and_unknown_metrics():
    from autointerp.score.registry import get_scorer

    rng = np.random.default_rng(6)
    intruder_size = 4
    picks = rng.integers(0, intruder_size, 100_000)
    intruders = rng.integers(0, intruder_size, 100_000)
    config = SimpleNamespace(scorer=SimpleNamespace(intruder_size=intruder_size))
    assert np.mean(picks == intruders) == pytest.approx(
        get_scorer("intruder").chance("accuracy", 0.5, config), abs=0.01
    )
    assert get_scorer("detection").chance("accuracy", 0.5, config) == 0.5
    assert chance_level("score") is None, "the raw intervention score has no known null"
    assert chance_level("f1", 0.5) == pytest.approx(0.5)
    assert chance_level("no_such_metric") is None
    with pytest.raises(ValueError):
        chance_level("precision", positive_fraction=1.5)


def test_chance_levels_are_per_latent():
    """Precision's chance is each latent's own share of positives, averaged: a latent scored on 47
    positives against 100 negatives has chance 0.32, not the 0.5 of a balanced one."""
    from autointerp.config import ModelConfig, RunConfig, SparseCoderConfig
    from autointerp.score.summary import summarize_records

    config = RunConfig(ModelConfig(path="m"), SparseCoderConfig(path="c", hookpoints=("h",)))

    def record(n_positive: int, n_negative: int) -> dict:  # latent: n_positive, distinct here
        labels = [1] * n_positive + [0] * n_negative
        examples = [
            {"label": label, "prediction": label, "probability": None, "kind": "x", "error": None}
            for label in labels
        ]
        metrics = binary_metrics(labels, labels)
        return {"latent": n_positive, "scorer": "detection", "score": metrics["balanced_accuracy"],
                "metrics": metrics, "examples": examples, "skipped": None, "error": None}  # fmt: skip

    summary = summarize_records([record(47, 100), record(100, 100)], 2, config)
    assert summary["metrics"]["precision"]["chance"] == pytest.approx((47 / 147 + 0.5) / 2)
    assert summary["metrics"]["balanced_accuracy"]["chance"] == 0.5


@pytest.mark.parametrize(
    ("n_positive", "n_negative", "tpr", "tnr"), [(47, 100, 0.8, 0.7), (100, 100, 0.95, 0.9)]
)
def test_a_latents_balanced_accuracy_comes_with_an_interval_that_covers(n_positive, n_negative, tpr, tnr):
    """A balanced accuracy from 47 against 100 excerpts is less certain than one from 100 against 100; the
    per-latent interval says so and covers the true value about 95% of the time."""
    rng = np.random.default_rng(n_positive)
    truth = (tpr + tnr) / 2
    covered = 0
    for _ in range(500):
        labels = [1] * n_positive + [0] * n_negative
        hits = np.r_[rng.random(n_positive) < tpr, rng.random(n_negative) < tnr]
        predictions = [int(h) if y else int(not h) for y, h in zip(labels, hits, strict=True)]
        low, high = binary_metrics(labels, predictions)["balanced_accuracy_interval"]
        covered += low <= truth <= high
    assert 0.92 <= covered / 500 <= 0.985
    assert binary_metrics([1] * 20 + [0] * 20, [1] * 20 + [0] * 20)["balanced_accuracy_interval"][0] < 1.0


def test_pooled_metrics_over_many_latents_use_a_bounded_uniform_sample(monkeypatch):
    """Past `POOLED_LATENTS` scored latents the pooled metrics are computed on a seeded uniform sample of
    that many latents (the summary's memory stays bounded), and the summary says so; the per-latent means
    still count every latent."""
    from autointerp.score import summary as summary_module

    config = _summary_config()
    labels = [1] * 10 + [0] * 10
    wrong = [1 - y for y in labels]
    records = [_detection_record(latent, labels, labels if latent % 2 else wrong) for latent in range(400)]
    everything = summary_module.summarize_records(records, 400, config)
    assert everything["pooled"]["latents_pooled"] == 400 == everything["pooled"]["latents_scored"]
    assert everything["pooled"]["accuracy"] == pytest.approx(0.5)
    monkeypatch.setattr(summary_module, "POOLED_LATENTS", 100)
    sampled = summary_module.summarize_records(records, 400, config)
    assert sampled["pooled"]["latents_pooled"] == 100 and sampled["pooled"]["latents_scored"] == 400
    assert sampled["metrics"] == everything["metrics"]  # every latent, not the sample
    assert 0.35 < sampled["pooled"]["accuracy"] < 0.65 and sampled["pooled"]["accuracy"] != 0.5
    assert summary_module.summarize_records(records, 400, config) == sampled  # seeded


def test_the_summary_does_not_depend_on_the_order_of_the_records(monkeypatch):
    """The same records in another order (shards, retried latents appended) give the same summary: CIs,
    chance levels and the pooled sample alike."""
    from autointerp.score import summary as summary_module

    config = _summary_config()
    rng = np.random.default_rng(3)
    labels = [1] * 10 + [0] * 10
    noisy = [[int(y if rng.random() < 0.7 else 1 - y) for y in labels] for _ in range(300)]
    records = [_detection_record(latent, labels, noisy[latent]) for latent in range(300)]
    shuffled = [records[i] for i in np.random.default_rng(0).permutation(len(records))]
    monkeypatch.setattr(summary_module, "POOLED_LATENTS", 50)
    in_order = summary_module.summarize_records(records, 300, config)
    assert summary_module.summarize_records(shuffled, 300, config) == in_order
    assert in_order["pooled"]["latents_pooled"] == 50


def _summary_config():
    from autointerp.config import ModelConfig, RunConfig, SparseCoderConfig

    return RunConfig(ModelConfig(path="m"), SparseCoderConfig(path="c", hookpoints=("h",)))


def _detection_record(latent: int, labels: list[int], predictions: list[int]) -> dict:
    """A detection score record as the writer stores it (examples packed)."""
    from autointerp.examples.compact import pack

    examples = [{"label": y, "prediction": p, "probability": float(p), "error": None}
                for y, p in zip(labels, predictions, strict=True)]  # fmt: skip
    metrics = binary_metrics(labels, predictions)
    return {"latent": latent, "scorer": "detection", "score": metrics["balanced_accuracy"],
            "metrics": metrics, "examples": pack(examples), "skipped": None, "error": None}  # fmt: skip
