"""Across-latent summary of the score records: means with bootstrap CIs, chance levels, counts, pooled
metrics and cost, written as `summary.json` and `summary.md` in the run directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from autointerp.cache import CacheReader
from autointerp.config import RunConfig
from autointerp.examples import run_latents
from autointerp.interop.imports import import_provenance
from autointerp.rundir import SUMMARY_JSON, SUMMARY_MD, cache_dir, write_json_atomic, write_text_atomic
from autointerp.score.metrics import aggregate, mean_with_ci
from autointerp.score.plan import current_records
from autointerp.score.registry import Scorer, get_scorer


def write_summary(config: RunConfig, scores_dir: Path) -> dict[str, Any]:
    """Summarise every scorer directory under `scores_dir` for the config's hookpoints; write both files."""
    summary: dict[str, Any] = {"scorers": summarize(config, scores_dir)}
    if provenance := import_provenance(config.run_dir):
        summary["explanations"] = provenance
    write_json_atomic(config.run_dir / SUMMARY_JSON, summary)
    write_text_atomic(config.run_dir / SUMMARY_MD, summary_markdown(summary))
    return summary


def summarize(config: RunConfig, scores_dir: Path) -> dict[str, dict[str, Any]]:
    result: dict[str, dict[str, Any]] = {}
    if not scores_dir.is_dir():
        return result
    readers = {hp: CacheReader(cache_dir(config.run_dir, hp)) for hp in config.sparse_coder.hookpoints}
    selected = {hp: set(run_latents(config, reader, hp).latents) for hp, reader in readers.items()}
    for directory in sorted(p for p in scores_dir.iterdir() if p.is_dir()):
        for hp, reader in readers.items():
            records, stale = current_records(config, reader, directory, hp)
            kept = [r for latent, r in sorted(records.items()) if latent in selected[hp]]
            if not kept:
                if stale:
                    result.setdefault(directory.name, {})[hp] = {"left_out": stale}
                continue
            entry = summarize_records(kept, len(selected[hp]), config) | {"left_out": stale}
            result.setdefault(directory.name, {})[hp] = entry
    return result


def summarize_records(records: list[dict[str, Any]], selected: int, config: RunConfig) -> dict[str, Any]:
    """Aggregates of one scorer on one hookpoint."""
    scorer = get_scorer(records[0]["scorer"])
    scored = [r for r in records if r["score"] is not None]
    metrics = {}
    for name in _metric_names(scored):
        stats = aggregate([r["metrics"].get(name) for r in scored], seed=config.seed)
        metrics[name] = stats | {"chance": _chance(name, scored, config, scorer)}
    usable = [[e for e in r["examples"] if e.get("error") is None] for r in scored]
    return {
        "scorer": scorer.name,
        "headline": scorer.headline,
        "selected": selected,
        "scored": len(scored),
        "skipped": sum(1 for r in records if r.get("skipped")),
        "failed": sum(1 for r in records if r.get("error")),
        "failed_by_kind": _failure_kinds(records),
        "pending": selected - len(records),
        "failed_examples": int(sum(r["metrics"].get("n_failed", 0) or 0 for r in records)),
        "flags": _flag_counts(scored),
        "metrics": metrics,
        "pooled": scorer.pooled(usable),
        "cost": _cost(records),
    }


def _failure_kinds(records: list[dict[str, Any]]) -> dict[str, int]:
    """Failed latents by why (`transient`: a rerun retries them; the others on request)."""
    counts: dict[str, int] = {}
    for record in records:
        if record.get("error"):
            kind = record.get("error_kind") or "unknown"
            counts[kind] = counts.get(kind, 0) + 1
    return counts


def _flag_counts(records: list[dict[str, Any]]) -> dict[str, int]:
    """Scored latents carrying each caveat flag (e.g. `kl_missed`)."""
    counts: dict[str, int] = {}
    for record in records:
        for flag in record.get("flags") or []:
            counts[flag] = counts.get(flag, 0) + 1
    return counts


def _metric_names(records: list[dict[str, Any]]) -> list[str]:
    names: dict[str, None] = {}
    for record in records:
        for name, value in record["metrics"].items():
            counted = name.startswith("n_")  # counts (n_examples, n_failed, ...) are not averaged as scores
            if not counted and isinstance(value, (int, float)) and not isinstance(value, bool):
                names[name] = None
    return list(names)


def _chance(name: str, records: list[dict[str, Any]], config: RunConfig, scorer: Scorer) -> float | None:
    """The mean over latents of each latent's chance level on `name` (its own share of positives)."""
    levels = [
        scorer.chance(name, _positive_fraction(r), config)
        for r in records
        if r["metrics"].get(name) is not None
    ]
    known = [level for level in levels if level is not None]
    if not levels or len(known) < len(levels):
        return None
    return float(np.mean(known))


def _positive_fraction(record: dict[str, Any]) -> float:
    labels = [e["label"] for e in record["examples"] if e.get("kind") != "trial" and "label" in e]
    return float(np.mean(labels)) if labels else 0.5


def _cost(records: list[dict[str, Any]]) -> dict[str, Any]:
    usages = [r["usage"] for r in records if r.get("usage")]
    if not usages:
        return {}
    prompt = sum(u["prompt_tokens"] for u in usages)
    return {
        "latents_with_llm_calls": len(usages),
        "requests_per_latent": sum(u["requests"] for u in usages) / len(usages),
        "prompt_tokens_per_latent": prompt / len(usages),
        "cached_fraction": sum(u["cached_tokens"] for u in usages) / prompt if prompt else None,
        "completion_tokens_per_latent": sum(u["completion_tokens"] for u in usages) / len(usages),
        "llm_seconds_per_latent": sum(u["seconds"] for u in usages) / len(usages),
    }


def summary_rows(summary: dict[str, Any]) -> list[dict[str, str]]:
    """One display row per scorer and hookpoint: the headline metric with its CI, counts and cost."""
    rows = []
    for name, hookpoints in summary["scorers"].items():
        for hp, s in hookpoints.items():
            if "headline" not in s:
                continue  # only records made with another config
            m = s["metrics"].get(s["headline"], {})
            cost = s["cost"]
            rows.append(
                {
                    "scorer": name,
                    "hookpoint": hp,
                    "metric": s["headline"],
                    "mean [95% CI]": mean_with_ci(m),
                    "chance": _num(m.get("chance")),
                    "median": _num(m.get("median")),
                    "scored": str(s["scored"]),
                    "skipped": str(s["skipped"]),
                    "failed": str(s["failed"]),
                    "pending": str(s["pending"]),
                    "failed examples": str(s["failed_examples"]),
                    "prompt tok/latent": _num(cost.get("prompt_tokens_per_latent"), ",.0f"),
                    "cached": _num(cost.get("cached_fraction"), ".0%"),
                    "out tok/latent": _num(cost.get("completion_tokens_per_latent"), ",.0f"),
                }
            )
    return rows


def summary_markdown(summary: dict[str, Any]) -> str:
    rows = summary_rows(summary)
    if not rows:
        return "# Scores\n\nNo scores yet.\n"
    header = list(rows[0])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row[h] for h in header) + " |" for row in rows]
    note = (
        "Mean over latents with a 95% CI (percentile bootstrap; Student's t below 20 latents). Chance is "
        "what a scorer answering at random gets (averaged over latents, each with its own share of "
        "positives). Skipped latents (too few activating windows or held-out examples, not explained) and "
        "failed latents (no usable answer, too few examples of a class) are counted, never scored; "
        "`pending` latents have no record yet."
    )
    if "explanations" in summary:
        note += "\n\n" + summary["explanations"]["note"]
    for line in left_out_notes(summary):
        note += f"\n\n{line}"
    return "# Scores\n\n" + "\n".join(lines) + "\n\n" + note + "\n"


def left_out_notes(summary: dict[str, Any]) -> list[str]:
    """One line per scorer folder and hookpoint holding records made with another config."""
    return [
        f"scores/{name}/{hp}: {s['left_out']} records made with another config (other explanations or "
        "scorer settings) are left out; score with this config to redo them"
        for name, hookpoints in summary["scorers"].items()
        for hp, s in hookpoints.items()
        if s.get("left_out")
    ]


def _num(value: float | None, fmt: str = ".3f") -> str:
    return "-" if value is None else format(value, fmt)
