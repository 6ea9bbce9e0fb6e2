"""What a calibration found: the probes' held-out precision and recall, each scorer's scores under the true,
shuffled and explainer's explanations with their separation, and how close the explainer came to the truth."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from autointerp.cache import CacheReader
from autointerp.calibrate.classes import BUILTIN_CLASSES, token_labels
from autointerp.calibrate.plant import precision_recall
from autointerp.calibrate.runs import EXPLAINER_RUN, TRUTH_RUN, explanation_free
from autointerp.calibrate.stats import ALPHA, mean_ci, paired_difference, unpaired_difference
from autointerp.records import read_records
from autointerp.rundir import SCORES_DIR
from autointerp.score.base import scorer_dir
from autointerp.score.plan import CONTROL

SECOND_METRIC = "auroc"


def heldout_quality(reader: CacheReader, planted: dict[str, Any], piece: Callable[[int], str]) -> list[dict]:
    """Each planted latent's precision and recall on the cached sequences after the fitting ones."""
    start = planted["fit_sequences"]
    tokens = reader.tokens(start).numpy()
    offset = start * reader.ctx_len
    by_name = {c.name: c for c in BUILTIN_CLASSES}
    probes = [e for e in planted["latents"] if e["kind"] == "probe"]
    labels = token_labels([by_name[e["class"]] for e in probes], tokens.reshape(-1), piece)
    rows = []
    for entry in planted["latents"]:
        found = reader.latent(entry["latent"]).token_index
        fired = np.zeros(tokens.size, dtype=bool)
        fired[found[found >= offset] - offset] = True
        row = {"latent": entry["latent"], "kind": entry["kind"], "class": entry.get("class")}
        if entry["kind"] == "probe":
            row |= precision_recall(fired, labels[:, probes.index(entry)])
        else:
            row["firing_rate"] = float(fired.mean())
        rows.append(row)
    return rows


def scorer_results(
    scorers: Sequence[str],
    runs: dict[str, Path],
    hookpoint: str,
    planted: dict[str, Any],
    summaries: dict[str, dict[str, Any]],
    seed: int,
) -> dict[str, dict[str, Any]]:
    """Per scorer: each condition's mean with CI, true minus shuffled (paired), probes minus noise, and a
    verdict."""
    probes = [e["latent"] for e in planted["latents"] if e["kind"] == "probe"]
    noise = [e["latent"] for e in planted["latents"] if e["kind"] == "noise"]
    results = {}
    for scorer in scorers:
        records = {
            "true": _records(runs[TRUTH_RUN], scorer, hookpoint, probes),
            "shuffled": _records(runs[TRUTH_RUN], scorer_dir(scorer, CONTROL), hookpoint, probes),
            "explainer": _records(runs[EXPLAINER_RUN], scorer, hookpoint, probes),
            "explainer_noise": _records(runs[EXPLAINER_RUN], scorer, hookpoint, noise),
        }
        summary = _summary_of(summaries, scorer, hookpoint)
        headline = summary.get("headline") or "score"
        result: dict[str, Any] = {
            "metric": headline,
            "chance": (summary.get("metrics", {}).get(headline) or {}).get("chance"),
            "conditions": {name: _condition(recs, seed) for name, recs in records.items()},
        }
        if headline != SECOND_METRIC and _has_metric(records["true"], SECOND_METRIC):
            result["auroc"] = {
                name: mean_ci(_values(recs, SECOND_METRIC), seed) for name, recs in records.items()
            }
        pairs = sorted(set(_scored(records["true"])) & set(_scored(records["shuffled"])))
        result["separation"] = (
            paired_difference(
                [records["true"][i]["score"] for i in pairs],
                [records["shuffled"][i]["score"] for i in pairs],
                seed,
            )
            if pairs
            else None
        )
        result["probes_vs_noise"] = unpaired_difference(
            _values(records["explainer"], "score"), _values(records["explainer_noise"], "score"), seed
        )
        result["verdict"] = verdict(result, explanation_free(scorer))
        results[scorer] = result
    return results


def verdict(result: dict[str, Any], explanation_free: bool = False) -> str:
    """One plain sentence on whether the scorer tells true explanations from shuffled ones."""
    separation = result["separation"]
    noise = result["probes_vs_noise"]
    if explanation_free:
        if noise["mean"] is None:
            return "reads no explanation; no scores of both planted and noise latents to compare"
        where = "scores" if noise["significant"] else "does NOT score"
        return f"reads no explanation; it {where} planted latents above noise latents ({_difference(noise)})"
    if separation is None or separation["mean"] is None:
        return "no paired true/shuffled scores: nothing to compare (see the failures in the runs' summaries)"
    if separation["significant"]:
        return f"separates true from shuffled explanations ({_difference(separation)})"
    if separation["ci_low"] is None or 0.5 ** separation["n"] >= ALPHA:
        return (
            f"cannot tell: {separation['n']} paired probes are too few for a test at p < {ALPHA} "
            "(plant more classes, or cache more tokens so fewer are dropped)"
        )
    return (
        f"CANNOT separate true from shuffled explanations ({_difference(separation)}): its scores do not "
        "show whether an explanation is right"
    )


def _difference(d: dict[str, Any]) -> str:
    ci = f" [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}]" if d["ci_low"] is not None else ""
    return f"difference {d['mean']:+.3f}{ci}, p = {d['p_value']:.3g}"


def explainer_similarity(
    planted: dict[str, Any],
    explanations: dict[int, str | None],
    embed: Callable[[list[str]], np.ndarray],
    seed: int,
) -> dict[str, Any]:
    """Cosine between each probe's explainer explanation and its true explanation, against random pairs
    (the explanation and another probe's truth), with a permutation p-value and top-1 retrieval."""
    probes = [e for e in planted["latents"] if e["kind"] == "probe"]
    truths = [e["explanation"] for e in probes]
    explained = [(i, text) for i, e in enumerate(probes) if (text := explanations.get(e["latent"]))]
    result: dict[str, Any] = {"n_explained": len(explained), "n_probes": len(probes)}
    if len(explained) < 2 or len(truths) < 2:
        return result | {"note": "fewer than two explained probes: no comparison"}
    rows = [i for i, _ in explained]
    cos = embed([text for _, text in explained]) @ embed(truths).T
    matched = cos[np.arange(len(rows)), rows]
    off = np.ones_like(cos, dtype=bool)
    off[np.arange(len(rows)), rows] = False
    result["matched"] = mean_ci(matched, seed)
    result["random_pairs"] = mean_ci(cos[off], seed)
    rng = np.random.default_rng(seed)
    null = np.array(
        [cos[np.arange(len(rows)), rng.permutation(len(truths))[: len(rows)]].mean() for _ in range(10_000)]
    )
    result["p_value"] = float((1 + (null >= matched.mean() - 1e-12).sum()) / (len(null) + 1))
    result["top1_accuracy"] = float(np.mean(cos.argmax(axis=1) == np.array(rows)))
    result["top1_chance"] = 1.0 / len(truths)
    result["pairs"] = [
        {"class": probes[i]["class"], "truth": truths[i], "explanation": text, "cosine": float(c)}
        for (i, text), c in zip(explained, matched, strict=True)
    ]
    return result


def _records(run_dir: Path, name: str, hookpoint: str, latents: list[int]) -> dict[int, dict[str, Any]]:
    records = read_records(run_dir / SCORES_DIR / name, hookpoint)
    return {latent: records[latent] for latent in latents if latent in records}


def _summary_of(summaries: dict[str, dict[str, Any]], scorer: str, hookpoint: str) -> dict[str, Any]:
    for summary in summaries.values():
        found = summary.get("scorers", {}).get(scorer, {}).get(hookpoint)
        if found:
            return found
    return {}


def _scored(records: dict[int, dict[str, Any]]) -> list[int]:
    return [latent for latent, r in records.items() if r.get("score") is not None]


def _values(records: dict[int, dict[str, Any]], metric: str) -> list[float]:
    values = [
        r["score"] if metric == "score" else (r.get("metrics") or {}).get(metric) for r in records.values()
    ]
    return [float(v) for v in values if isinstance(v, (int, float))]


def _has_metric(records: dict[int, dict[str, Any]], metric: str) -> bool:
    return any(isinstance((r.get("metrics") or {}).get(metric), (int, float)) for r in records.values())


def _condition(records: dict[int, dict[str, Any]], seed: int) -> dict[str, Any]:
    scored = [records[i]["score"] for i in _scored(records)]
    stats = mean_ci(scored, seed)
    return stats | {
        "latents": len(records),
        "failed": sum(1 for r in records.values() if r.get("error")),
        "skipped": sum(1 for r in records.values() if r.get("skipped")),
    }
