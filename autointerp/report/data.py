"""Gather a run directory into plain rows: latents, explanations, scores, firing frequency, summary."""

from __future__ import annotations

import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autointerp.cache import CacheReader
from autointerp.config import RunConfig, ScorerName, load_config
from autointerp.errors import UserError
from autointerp.records import read_records
from autointerp.rundir import (
    CONFIG_FILE,
    EXPLANATIONS_DIR,
    MANIFEST_FILE,
    SCORES_DIR,
    SUMMARY_JSON,
    cache_dir,
    read_json,
)
from autointerp.score.plan import current_records

SCORER_ORDER = typing.get_args(ScorerName)


@dataclass(frozen=True)
class LatentRow:
    """One latent of one hookpoint, with its explain record and one score record per scorer."""

    hookpoint: str
    latent: int
    explanation: str | None
    status: str
    """explained, failed, skipped or "not explained" (scores without an explain record)."""
    problems: list[str]
    """Why something is missing: the explain error or skip reason, then each scorer's."""
    firing_frequency: float | None
    max_activation: float | None
    scores: dict[str, float | None]
    """Scorer folder name -> headline score (None when it failed or was skipped)."""
    explain_record: dict[str, Any] | None
    score_records: dict[str, dict[str, Any]]


@dataclass(frozen=True)
class SummaryRow:
    """The headline metric of one scorer on one hookpoint, from summary.json."""

    scorer: str
    hookpoint: str
    metric: str
    mean: float | None
    ci_low: float | None
    ci_high: float | None
    chance: float | None
    selected: int | None
    scored: int | None
    skipped: int | None
    failed: int | None
    pending: int | None
    """Selected latents without a score record yet (a run still going)."""


@dataclass(frozen=True)
class ReportData:
    """Everything the report shows, read once from the run directory."""

    run_dir: Path
    config: RunConfig
    scorers: list[str]
    latents: list[LatentRow]
    summary: list[SummaryRow] | None
    """None when summary.json is absent (no scores yet)."""
    headlines: dict[str, str]
    """Scorer -> headline metric name, where the summary names it."""


def gather(run_dir: Path) -> ReportData:
    """Read a run directory; a directory with neither explanations nor scores is a UserError."""
    config_path = run_dir / CONFIG_FILE
    if not config_path.is_file():
        raise UserError(f"{run_dir} has no {CONFIG_FILE}: pass a run directory made by `autointerp`")
    config = load_config(config_path)
    scorers = _scorer_names(run_dir / SCORES_DIR)
    latents = [
        row
        for hookpoint in config.sparse_coder.hookpoints
        for row in _hookpoint_rows(config, run_dir, hookpoint, scorers)
    ]
    if not latents:
        raise UserError(
            f"{run_dir} has no explanations or scores yet: run `autointerp explain` (and `score`) first"
        )
    summary, headlines = _read_summary(run_dir / SUMMARY_JSON)
    return ReportData(run_dir, config, scorers, latents, summary, headlines)


def _scorer_names(scores_dir: Path) -> list[str]:
    """Scorer folders in the canonical scorer order, each control after its scorer."""
    if not scores_dir.is_dir():
        return []
    names = [path.name for path in scores_dir.iterdir() if path.is_dir()]

    def order(name: str) -> tuple[int, str]:
        base = name.split(".")[0]
        return (SCORER_ORDER.index(base) if base in SCORER_ORDER else len(SCORER_ORDER), name)

    return sorted(names, key=order)


def _hookpoint_rows(config: RunConfig, run_dir: Path, hookpoint: str, scorers: list[str]) -> list[LatentRow]:
    """One row per latent with an explanation or a score; score records made with another config (stale
    folders from earlier runs) are left out, as the summary leaves them out."""
    explained = read_records(run_dir / EXPLANATIONS_DIR, hookpoint)
    reader = (
        CacheReader(cache_dir(run_dir, hookpoint))
        if (cache_dir(run_dir, hookpoint) / MANIFEST_FILE).is_file()
        else None
    )
    scored = {
        name: current_records(config, reader, run_dir / SCORES_DIR / name, hookpoint)[0] if reader else {}
        for name in scorers
    }
    latents = sorted(set(explained).union(*scored.values()))
    stats = _cache_stats(run_dir, hookpoint)
    rows = []
    for latent in latents:
        score_records = {name: scored[name][latent] for name in scorers if latent in scored[name]}
        rows.append(_row(hookpoint, latent, explained.get(latent), score_records, stats))
    return rows


def _row(
    hookpoint: str,
    latent: int,
    explain_record: dict[str, Any] | None,
    score_records: dict[str, dict[str, Any]],
    stats: dict[str, Any] | None,
) -> LatentRow:
    problems = [f"explain: {p}" for p in _problems(explain_record)] if explain_record else []
    for name, record in score_records.items():
        problems += [f"{name}: {p}" for p in _problems(record)]
    max_activation = explain_record.get("max_activation") if explain_record else None
    if max_activation is None and stats is not None:
        max_activation = float(stats["max_activation"][latent])
    return LatentRow(
        hookpoint=hookpoint,
        latent=latent,
        explanation=_explanation(explain_record, score_records),
        status=_status(explain_record),
        problems=problems,
        firing_frequency=float(stats["firing_count"][latent]) / stats["num_tokens"] if stats else None,
        max_activation=max_activation,
        scores={name: record.get("score") for name, record in score_records.items()},
        explain_record=explain_record,
        score_records=score_records,
    )


def _problems(record: dict[str, Any]) -> list[str]:
    problems = [f"error: {record['error']}"] if record.get("error") else []
    return problems + ([f"skipped: {record['skipped']}"] if record.get("skipped") else [])


def _status(record: dict[str, Any] | None) -> str:
    if record is None:
        return "not explained"
    if record.get("error"):
        return "failed"
    if record.get("skipped") or record.get("explanation") is None:
        return "skipped"
    return "explained"


def _explanation(
    explain_record: dict[str, Any] | None, score_records: dict[str, dict[str, Any]]
) -> str | None:
    """The latent's own explanation: from the explain record, else from a non-control score record."""
    if explain_record is not None:
        return explain_record.get("explanation")
    own = (r.get("explanation") for r in score_records.values() if not r.get("control"))
    return next((e for e in own if e is not None), None)


def _cache_stats(run_dir: Path, hookpoint: str) -> dict[str, Any] | None:
    """Per-latent firing counts and max activations, plus the token count; None without a finished cache."""
    directory = cache_dir(run_dir, hookpoint)
    if not (directory / MANIFEST_FILE).is_file() or not read_json(directory / MANIFEST_FILE).get("complete"):
        return None
    reader = CacheReader(directory)
    return {**reader.stats(), "num_tokens": reader.num_sequences * reader.ctx_len}


def _read_summary(path: Path) -> tuple[list[SummaryRow] | None, dict[str, str]]:
    if not path.is_file():
        return None, {}
    rows: list[SummaryRow] = []
    headlines: dict[str, str] = {}
    for scorer, by_hookpoint in read_json(path).get("scorers", {}).items():
        for hookpoint, entry in by_hookpoint.items():
            if "headline" not in entry:
                continue  # only records made with another config
            metric = entry.get("headline") or ""
            headlines.setdefault(scorer, metric)
            values = entry.get("metrics", {}).get(metric, {})
            rows.append(
                SummaryRow(
                    scorer=scorer,
                    hookpoint=hookpoint,
                    metric=metric,
                    mean=values.get("mean"),
                    ci_low=values.get("ci_low"),
                    ci_high=values.get("ci_high"),
                    chance=values.get("chance"),
                    selected=entry.get("selected"),
                    scored=entry.get("scored"),
                    skipped=entry.get("skipped"),
                    failed=entry.get("failed"),
                    pending=entry.get("pending"),
                )
            )
    return rows, headlines
