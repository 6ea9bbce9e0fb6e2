"""Gather a run directory into plain rows: latents, explanations, scores, firing frequency, summary."""

from __future__ import annotations

import json
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from autointerp.cache import CacheReader
from autointerp.config import RunConfig, ScorerName, load_config
from autointerp.errors import UserError
from autointerp.records import iter_latest, latest_stamps, record_line
from autointerp.rundir import (
    CONFIG_FILE,
    EXPLANATIONS_DIR,
    MANIFEST_FILE,
    SCORES_DIR,
    SUMMARY_JSON,
    cache_dir,
    read_json,
)
from autointerp.score.plan import current_stamps

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
class LatentPage:
    """A latent that gets a page: its table row, and its records kept as their JSON lines until the page is
    rendered (2,000 pages of parsed records would hold ~250 MB)."""

    table: LatentTable
    row: int
    explain_record: str | None
    score_records: dict[str, str]

    @property
    def hookpoint(self) -> str:
        return self.table.hookpoints[self.row]

    @property
    def latent(self) -> int:
        return int(self.table.latents[self.row])

    def full(self) -> LatentRow:
        """The latent's row with its records parsed."""
        explain = json.loads(self.explain_record) if self.explain_record is not None else None
        scores = {name: json.loads(line) for name, line in self.score_records.items()}
        return _latent_row(self.table, self.row, explain, scores)


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


class TextColumn:
    """Optional strings, one per row, kept in one UTF-8 buffer: a million explanations take ~70 MB here,
    ~110 MB as Python strings."""

    def __init__(self, n: int):
        self._buffer = bytearray()
        self._start = np.full(n, -1, dtype=np.int64)
        self._length = np.zeros(n, dtype=np.int64)

    def __len__(self) -> int:
        return len(self._start)

    def __getitem__(self, row: int) -> str | None:
        start = int(self._start[row])
        if start < 0:
            return None
        return self._buffer[start : start + int(self._length[row])].decode("utf-8")

    def __setitem__(self, row: int, text: str | None) -> None:
        if text is None:
            self._start[row] = -1
            return
        data = text.encode("utf-8")
        self._start[row], self._length[row] = len(self._buffer), len(data)
        self._buffer += data

    @classmethod
    def joined(cls, columns: list[TextColumn]) -> TextColumn:
        """The rows of `columns`, one after another."""
        result = cls(sum(len(c) for c in columns))
        row = 0
        for column in columns:
            for i in range(len(column)):
                result[row] = column[i]
                row += 1
        return result


@dataclass
class LatentTable:
    """Every latent with an explanation or a score, one row each (hookpoint, then latent order), as columns:
    a few numbers and the explanation per latent, so a million latents fit in a few hundred MB."""

    hookpoints: list[str]
    latents: np.ndarray
    statuses: list[str]
    explanations: TextColumn
    scores: dict[str, np.ndarray]
    """Scorer folder -> headline score per row (NaN: no score: failed, skipped or not scored)."""
    firing_frequency: np.ndarray
    """Per row; NaN without a finished cache."""
    max_activation: np.ndarray
    problems: dict[int, list[str]]
    """Row -> why something is missing (only rows with problems)."""

    def __len__(self) -> int:
        return len(self.latents)

    def score(self, scorer: str, row: int) -> float | None:
        value = float(self.scores[scorer][row])
        return None if np.isnan(value) else value


MAX_PAGES = 2000
"""Latents that get a page of their own by default; beyond it, the best and worst per scorer."""


@dataclass(frozen=True)
class ReportData:
    """What the report shows: the latent table of the whole run, and full rows of the latents with pages."""

    run_dir: Path
    config: RunConfig
    scorers: list[str]
    table: LatentTable
    pages: list[LatentPage]
    """The latents that get a page of their own (all, or a bounded choice: see `choose_pages`)."""
    summary: list[SummaryRow] | None
    """None when summary.json is absent (no scores yet)."""
    headlines: dict[str, str]
    """Scorer -> headline metric name, where the summary names it."""


def gather(run_dir: Path, max_pages: int = MAX_PAGES) -> ReportData:
    """Read a run directory, streaming its records; a directory with neither explanations nor scores is a
    UserError."""
    config_path = run_dir / CONFIG_FILE
    if not config_path.is_file():
        raise UserError(f"{run_dir} has no {CONFIG_FILE}: pass a run directory made by `autointerp`")
    config = load_config(config_path)
    scorers = _scorer_names(run_dir / SCORES_DIR)
    parts = [_HookpointData(config, run_dir, hp, scorers) for hp in config.sparse_coder.hookpoints]
    table = _concat([part.table() for part in parts], scorers)
    if not len(table):
        raise UserError(
            f"{run_dir} has no explanations or scores yet: run `autointerp explain` (and `score`) first"
        )
    chosen = choose_pages(table, scorers, max_pages)
    pages = []
    offset = 0
    for part in parts:
        end = offset + len(part.latents)
        pages += part.rows(table, offset, [row for row in chosen if offset <= row < end])
        offset = end
    summary, headlines = _read_summary(run_dir / SUMMARY_JSON)
    return ReportData(run_dir, config, scorers, table, pages, summary, headlines)


def choose_pages(table: LatentTable, scorers: list[str], max_pages: int) -> list[int]:
    """Rows that get a page: every row when there are at most `max_pages`, else, per scorer, its
    highest- and lowest-scoring latents (equal shares), then the first rows to fill what is left."""
    if len(table) <= max_pages:
        return list(range(len(table)))
    chosen: dict[int, None] = {}
    share = max_pages // max(1, 2 * len(scorers))
    for scorer in scorers:
        scored = np.flatnonzero(~np.isnan(table.scores[scorer]))
        order = scored[np.argsort(table.scores[scorer][scored], kind="stable")]
        for row in [*order[::-1][:share], *order[:share]]:
            chosen.setdefault(int(row), None)
    for row in range(len(table)):
        if len(chosen) >= max_pages:
            break
        chosen.setdefault(row, None)
    return sorted(chosen)


def _scorer_names(scores_dir: Path) -> list[str]:
    """Scorer folders in the canonical scorer order, each control after its scorer."""
    if not scores_dir.is_dir():
        return []
    names = [path.name for path in scores_dir.iterdir() if path.is_dir()]

    def order(name: str) -> tuple[int, str]:
        base = name.split(".")[0]
        return (SCORER_ORDER.index(base) if base in SCORER_ORDER else len(SCORER_ORDER), name)

    return sorted(names, key=order)


class _HookpointData:
    """One hookpoint's records, read in streaming passes: which latents have records (their `written`
    stamps), the table's columns, then the full records of the latents that get a page. Score records
    made with another config (stale folders from earlier runs) are left out, as the summary leaves them."""

    def __init__(self, config: RunConfig, run_dir: Path, hookpoint: str, scorers: list[str]):
        self.run_dir, self.hookpoint, self.scorers = run_dir, hookpoint, scorers
        self.reader = (
            CacheReader(cache_dir(run_dir, hookpoint))
            if (cache_dir(run_dir, hookpoint) / MANIFEST_FILE).is_file()
            else None
        )
        self.explained = _Stamps(latest_stamps(run_dir / EXPLANATIONS_DIR, hookpoint)[0])
        self.scored = {
            name: _Stamps(
                current_stamps(config, self.reader, self._score_dir(name), hookpoint)[0]
                if self.reader
                else {}
            )
            for name in scorers
        }
        sources = [self.explained, *self.scored.values()]
        self.latents = np.unique(np.concatenate([source.latents for source in sources]))
        self.stats = _cache_stats(run_dir, hookpoint)

    def table(self) -> LatentTable:
        n = len(self.latents)
        table = LatentTable(
            hookpoints=[self.hookpoint] * n,
            latents=self.latents,
            statuses=["not explained"] * n,
            explanations=TextColumn(n),
            scores={name: np.full(n, np.nan) for name in self.scorers},
            firing_frequency=np.full(n, np.nan),
            max_activation=np.full(n, np.nan),
            problems={},
        )
        for record in iter_latest(self.run_dir / EXPLANATIONS_DIR, self.hookpoint, self.explained.all()):
            row = self._row_of(record["latent"])
            table.statuses[row] = _status(record)
            table.explanations[row] = _text(record.get("explanation"))
            if isinstance(record.get("max_activation"), (int, float)):
                table.max_activation[row] = record["max_activation"]
            self._add_problems(table, row, "explain", record)
        for name in self.scorers:
            for record in iter_latest(self._score_dir(name), self.hookpoint, self.scored[name].all()):
                row = self._row_of(record["latent"])
                if isinstance(record.get("score"), (int, float)) and not isinstance(record["score"], bool):
                    table.scores[name][row] = record["score"]
                unexplained = table.statuses[row] == "not explained" and table.explanations[row] is None
                if unexplained and not record.get("control"):
                    table.explanations[row] = _text(record.get("explanation"))
                self._add_problems(table, row, name, record)
        if self.stats is not None:
            counts = self.stats["firing_count"][self.latents].astype(float)
            table.firing_frequency[:] = counts / self.stats["num_tokens"]
            missing = np.isnan(table.max_activation)
            table.max_activation[missing] = self.stats["max_activation"][self.latents[missing]]
        return table

    def rows(self, table: LatentTable, offset: int, rows: list[int]) -> list[LatentPage]:
        """The pages of these table rows (this hookpoint's from `offset` on), their records read in one
        more streaming pass."""
        if not rows:
            return []
        wanted = {int(self.latents[r - offset]): r for r in rows}
        explained = self._records(self.run_dir / EXPLANATIONS_DIR, self.explained, wanted)
        scored = {
            name: self._records(self._score_dir(name), self.scored[name], wanted) for name in self.scorers
        }
        return [
            LatentPage(
                table,
                row,
                explained.get(latent),
                {name: scored[name][latent] for name in self.scorers if latent in scored[name]},
            )
            for latent, row in wanted.items()
        ]

    def _records(self, directory: Path, stamps: _Stamps, wanted: dict[int, int]) -> dict[int, str]:
        found = iter_latest(directory, self.hookpoint, stamps.of(list(wanted)))
        return {r["latent"]: record_line(r) for r in found}

    def _row_of(self, latent: int) -> int:
        return int(np.searchsorted(self.latents, latent))

    def _score_dir(self, name: str) -> Path:
        return self.run_dir / SCORES_DIR / name

    @staticmethod
    def _add_problems(table: LatentTable, row: int, name: str, record: dict[str, Any]) -> None:
        if problems := [f"{name}: {p}" for p in _problems(record)]:
            table.problems.setdefault(row, []).extend(problems)


class _Stamps:
    """Latent -> `written` stamp of its current record, kept as two sorted arrays and a mask of the latents
    a pass has taken (17 bytes a latent; a dict costs ~100). Each pass over the records (`iter_latest`)
    gets its own view (`all`, `of`)."""

    def __init__(self, stamps: dict[int, float]):
        latents = np.fromiter(stamps.keys(), dtype=np.int64, count=len(stamps))
        written = np.fromiter(stamps.values(), dtype=np.float64, count=len(stamps))
        order = np.argsort(latents)
        self.latents, self.written = latents[order], written[order]
        self.taken = np.ones(len(latents), dtype=bool)

    def all(self) -> _Stamps:
        """A view of every latent, none taken yet."""
        return self._view(np.zeros(len(self.latents), dtype=bool))

    def of(self, latents: list[int]) -> _Stamps:
        """A view of these latents only."""
        taken = np.ones(len(self.latents), dtype=bool)
        if len(self.latents):
            wanted = np.asarray(latents, dtype=np.int64)
            at = np.searchsorted(self.latents, wanted).clip(max=len(self.latents) - 1)
            taken[at[self.latents[at] == wanted]] = False
        return self._view(taken)

    def get(self, latent: int) -> float | None:
        at = int(np.searchsorted(self.latents, latent))
        if at < len(self.latents) and self.latents[at] == latent and not self.taken[at]:
            return float(self.written[at])
        return None

    def pop(self, latent: int) -> float:
        at = int(np.searchsorted(self.latents, latent))
        self.taken[at] = True
        return float(self.written[at])

    def _view(self, taken: np.ndarray) -> _Stamps:
        view = object.__new__(_Stamps)
        view.latents, view.written, view.taken = self.latents, self.written, taken
        return view


def _concat(tables: list[LatentTable], scorers: list[str]) -> LatentTable:
    offsets = np.cumsum([0] + [len(t) for t in tables])
    return LatentTable(
        hookpoints=[hp for t in tables for hp in t.hookpoints],
        latents=np.concatenate([t.latents for t in tables]) if tables else np.zeros(0, np.int64),
        statuses=[s for t in tables for s in t.statuses],
        explanations=TextColumn.joined([t.explanations for t in tables]),
        scores={n: np.concatenate([t.scores[n] for t in tables]) if tables else np.zeros(0) for n in scorers},
        firing_frequency=np.concatenate([t.firing_frequency for t in tables]) if tables else np.zeros(0),
        max_activation=np.concatenate([t.max_activation for t in tables]) if tables else np.zeros(0),
        problems={
            int(o) + row: p for t, o in zip(tables, offsets, strict=False) for row, p in t.problems.items()
        },
    )


def _latent_row(
    table: LatentTable,
    row: int,
    explain_record: dict[str, Any] | None,
    score_records: dict[str, dict[str, Any]],
) -> LatentRow:
    frequency, peak = float(table.firing_frequency[row]), float(table.max_activation[row])
    return LatentRow(
        hookpoint=table.hookpoints[row],
        latent=int(table.latents[row]),
        explanation=table.explanations[row],
        status=table.statuses[row],
        problems=table.problems.get(row, []),
        firing_frequency=None if np.isnan(frequency) else frequency,
        max_activation=None if np.isnan(peak) else peak,
        scores={name: record.get("score") for name, record in score_records.items()},
        explain_record=explain_record,
        score_records=score_records,
    )


def _text(value: Any) -> str | None:
    """A record's text field; anything but a string (a hand-edited record) is shown as its JSON."""
    return value if isinstance(value, str) or value is None else json.dumps(value)


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
