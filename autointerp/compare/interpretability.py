"""Interpretability compared across runs: score distributions, paired tests, scorer agreement."""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

import numpy as np
from scipy.stats import spearmanr, wilcoxon

from autointerp.compare.runs import Run
from autointerp.compare.similarity import MIN_PAIRS
from autointerp.errors import UserError
from autointerp.score.metrics import aggregate

Scores = dict[str, dict[str, dict[int, float]]]
"""Scorer -> run label -> latent -> headline score."""
NO_SCORES = "no run has scores: run `autointerp score` on the runs for the interpretability comparison"


@dataclass(frozen=True)
class Pairing:
    """Latent `latents_a[i]` of run `a` paired with `latents_b[i]` of run `b`."""

    a: str
    b: str
    latents_a: np.ndarray
    latents_b: np.ndarray
    kind: str
    """"shared latents" (one coder) or "matched latents"."""


@dataclass
class Interpretability:
    scores: Scores
    summaries: list[dict[str, Any]] = field(default_factory=list)
    paired_tests: list[dict[str, Any]] = field(default_factory=list)
    agreement: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def compare_interpretability(
    runs: list[Run], pairings: list[Pairing], scorers: list[str] | None = None
) -> Interpretability:
    """Per-scorer summaries per run, paired Wilcoxon tests per pairing, Spearman agreement per run.

    `scorers` (default: every scorer any run has) must each be scored in at least one run.
    """
    scores, notes = collect_scores(runs, scorers)
    result = Interpretability(scores, notes=notes)
    for scorer, by_run in scores.items():
        result.summaries += [
            {"scorer": scorer, "run": run, **aggregate(list(v.values()))} for run, v in by_run.items()
        ]
        for pairing in pairings:
            if pairing.a in by_run and pairing.b in by_run:
                test = paired_test(scorer, pairing, by_run[pairing.a], by_run[pairing.b])
                result.paired_tests.append(test)
                if test["warning"]:
                    result.notes.append(f"{scorer}, {pairing.a} vs {pairing.b}: {test['warning']}")
    for run in runs:
        result.agreement += scorer_agreement(run.label, scores)
    return result


def collect_scores(runs: list[Run], scorers: list[str] | None) -> tuple[Scores, list[str]]:
    """The scores of each wanted scorer in each run, and notes on the runs without them."""
    available = {run.label: run.scorers() for run in runs}
    wanted = scorers or sorted(set().union(*available.values()))
    if not wanted:
        return {}, [NO_SCORES]
    scores: Scores = {}
    notes = []
    for scorer in wanted:
        by_run = {run.label: run.scores(scorer) for run in runs if scorer in available[run.label]}
        by_run = {label: values for label, values in by_run.items() if values}
        if not by_run and scorers:
            raise UserError(
                f"no run has {scorer} scores: run `autointerp score` with {scorer} in `scorers`, "
                f"or leave out --scorer {scorer}"
            )
        notes += [
            f"{label} has no {scorer} scores; left out for {scorer}"
            for label in available
            if label not in by_run
        ]
        if by_run:
            scores[scorer] = by_run
    return scores, notes


def paired_test(
    scorer: str, pairing: Pairing, scores_a: dict[int, float], scores_b: dict[int, float]
) -> dict[str, Any]:
    """Wilcoxon signed-rank test of the scores of paired latents scored in both runs."""
    pairs = np.array(
        [
            (scores_a[int(a)], scores_b[int(b)])
            for a, b in zip(pairing.latents_a, pairing.latents_b, strict=True)
            if int(a) in scores_a and int(b) in scores_b
        ],
        dtype=np.float64,
    ).reshape(-1, 2)
    x, y = pairs[:, 0], pairs[:, 1]
    statistic = p_value = None
    if np.count_nonzero(x - y) > 0:
        result = wilcoxon(x, y)
        statistic, p_value = float(result.statistic), float(result.pvalue)
    return {
        "scorer": scorer,
        "run_a": pairing.a,
        "run_b": pairing.b,
        "pairing": pairing.kind,
        "n": len(pairs),
        "mean_a": _mean(x),
        "mean_b": _mean(y),
        "mean_difference": _mean(x - y),
        "wilcoxon": statistic,
        "p_value": p_value,
        "warning": few_pairs_warning(len(pairs), "Wilcoxon test"),
    }


def few_pairs_warning(n: int, what: str) -> str | None:
    """A warning for a statistic over fewer than MIN_PAIRS pairs; None from MIN_PAIRS on."""
    if n >= MIN_PAIRS:
        return None
    return f"{what} over only {n} pairs (fewer than {MIN_PAIRS}): not reliable"


def scorer_agreement(label: str, scores: Scores) -> list[dict[str, Any]]:
    """Spearman rank correlation between every two scorers over the latents both scored in one run.

    Controls (`<scorer>.random_explanation`) are left out.
    """
    present = [scorer for scorer, by_run in scores.items() if label in by_run and "." not in scorer]
    rows = []
    for first, second in combinations(present, 2):
        a, b = scores[first][label], scores[second][label]
        shared = sorted(set(a) & set(b))
        x = np.array([a[latent] for latent in shared])
        y = np.array([b[latent] for latent in shared])
        rho = p_value = None
        if len(shared) >= 3 and np.ptp(x) > 0 and np.ptp(y) > 0:
            result = spearmanr(x, y)
            rho, p_value = float(result.statistic), float(result.pvalue)
        rows.append(
            {
                "run": label,
                "scorer_a": first,
                "scorer_b": second,
                "spearman": rho,
                "p_value": p_value,
                "n": len(shared),
            }
        )
    return rows


def _mean(values: np.ndarray) -> float | None:
    return float(values.mean()) if len(values) else None
