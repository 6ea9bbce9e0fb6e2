"""Across-latent summary of the score records: means with bootstrap CIs, chance levels, counts, pooled
metrics and cost, written as `summary.json` and `summary.md` in the run directory."""

from __future__ import annotations

import heapq
import math
from array import array
from pathlib import Path
from typing import Any

import numpy as np

from autointerp.cache import CacheReader
from autointerp.config import RunConfig
from autointerp.examples import run_latents
from autointerp.examples.compact import ExampleFiller, column, unpack
from autointerp.interop.imports import import_provenance
from autointerp.records import iter_latest
from autointerp.rundir import SUMMARY_JSON, SUMMARY_MD, cache_dir, write_json_atomic, write_text_atomic
from autointerp.score.metrics import aggregate, mean_with_ci
from autointerp.score.plan import current_stamps
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
    """Scorer folder -> hookpoint -> aggregates, streamed over the records (one in memory at a time)."""
    result: dict[str, dict[str, Any]] = {}
    if not scores_dir.is_dir():
        return result
    readers = {hp: CacheReader(cache_dir(config.run_dir, hp)) for hp in config.sparse_coder.hookpoints}
    selected = {hp: np.asarray(run_latents(config, reader, hp).latents) for hp, reader in readers.items()}
    for directory in sorted(p for p in scores_dir.iterdir() if p.is_dir()):
        for hp, reader in readers.items():
            stamps, stale = current_stamps(config, reader, directory, hp)
            latents = np.fromiter(stamps, dtype=np.int64, count=len(stamps))
            for latent in latents[~np.isin(latents, selected[hp])].tolist():
                del stamps[latent]
            del latents
            if not stamps:
                if stale:
                    result.setdefault(directory.name, {})[hp] = {"left_out": stale}
                continue
            tally = ScorerSummary(get_scorer(directory.name.partition(".")[0]), config, ExampleFiller(reader))
            for record in iter_latest(directory, hp, stamps):
                tally.add(record)
            entry = tally.result(len(selected[hp])) | {"left_out": stale}
            result.setdefault(directory.name, {})[hp] = entry
    return result


def summarize_records(records: list[dict[str, Any]], selected: int, config: RunConfig) -> dict[str, Any]:
    """Aggregates of one scorer's records on one hookpoint (records held in memory; `summarize` streams)."""
    tally = ScorerSummary(get_scorer(records[0]["scorer"]), config)
    for record in records:
        tally.add(record)
    return tally.result(selected)


class ScorerSummary:
    """Aggregates of one scorer on one hookpoint, fed one record at a time; memory grows by a few numbers
    per latent (its metrics), plus the bounded sample of latents the pooled metrics are computed on."""

    def __init__(self, scorer: Scorer, config: RunConfig, filler: ExampleFiller | None = None):
        self.scorer, self.config, self.filler = scorer, config, filler
        self.records = self.scored = self.skipped = self.failed = self.failed_examples = 0
        self.failed_by_kind: dict[str, int] = {}
        self.flags: dict[str, int] = {}
        self.table = _MetricTable()
        self.pool = _LatentPool(POOLED_LATENTS, config.seed)
        self.cost = _Cost()

    def add(self, record: dict[str, Any]) -> None:
        """Count one latent's record."""
        self.records += 1
        self.skipped += bool(record.get("skipped"))
        self.failed_examples += int((record.get("metrics") or {}).get("n_failed", 0) or 0)
        self.cost.add(record.get("usage"))
        if record.get("error"):
            self.failed += 1
            kind = record.get("error_kind") or "unknown"
            self.failed_by_kind[kind] = self.failed_by_kind.get(kind, 0) + 1
        if record["score"] is None:
            return
        self.scored += 1
        for flag in record.get("flags") or []:
            self.flags[flag] = self.flags.get(flag, 0) + 1
        self.table.add(record["latent"], _positive_fraction(record.get("examples")), record["metrics"])
        if self.pool.admits(record["latent"]):  # examples unpacked only for the latents the sample keeps
            examples = self._pooled_examples(record, unpack(record.get("examples")))
            self.pool.add(record["latent"], [_slim(e) for e in examples if e.get("error") is None])

    def result(self, selected: int) -> dict[str, Any]:
        """The summary entry: counts, each metric's mean with its CI and chance, pooled metrics, cost."""
        seed = self.config.seed
        order = self.table.latent_order()
        positives = self.table.column(self.table.positives, order)
        metrics = {}
        for name, values in self.table.metrics.items():
            column = self.table.column(values, order)
            scored = ~np.isnan(column)
            fractions, counts = np.unique(positives[scored], return_counts=True)  # few distinct shares
            levels = [self.scorer.chance(name, p, self.config) for p in fractions.tolist()]
            known = [
                (level, n) for level, n in zip(levels, counts.tolist(), strict=True) if level is not None
            ]
            exact = math.fsum(level * n for level, n in known) / int(counts.sum()) if known else None
            chance = exact if len(known) == len(levels) else None
            metrics[name] = aggregate(column[scored], seed=seed) | {"chance": chance}
        pooled = self.scorer.pooled(self.pool.examples())
        return {
            "scorer": self.scorer.name,
            "headline": self.scorer.headline,
            "selected": selected,
            "scored": self.scored,
            "skipped": self.skipped,
            "failed": self.failed,
            "failed_by_kind": self.failed_by_kind,
            "pending": selected - self.records,
            "failed_examples": self.failed_examples,
            "flags": self.flags,
            "metrics": metrics,
            "pooled": pooled | self.pool.provenance(),
            "cost": self.cost.result(),
        }

    def _pooled_examples(
        self, record: dict[str, Any], examples: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        if self.scorer.pooled_needs_activations and self.filler is not None:
            return self.filler.fill(record["latent"], examples)
        return examples


POOLED_LATENTS = 2000
"""Pooled metrics are computed over every scored latent up to this many, else over a seeded uniform
sample of this many (reservoir sampling), which bounds the summary's memory at any number of latents."""


class _LatentPool:
    """A seeded uniform sample of at most `size` latents' example lists that does not depend on the order
    the records come in (shards, retries): the latents whose seeded hash is smallest."""

    def __init__(self, size: int, seed: int):
        self.size, self.seed, self.seen = size, seed, 0
        self.kept: dict[int, list[dict[str, Any]]] = {}
        self.heap: list[tuple[int, int]] = []
        """(-priority, latent) of the kept latents: the highest priority first."""

    def admits(self, latent: int) -> bool:
        """Whether this latent goes into the sample (decided before its examples are prepared)."""
        self.seen += 1
        return len(self.heap) < self.size or self._priority(latent) < -self.heap[0][0]

    def add(self, latent: int, examples: list[dict[str, Any]]) -> None:
        entry = (-self._priority(latent), latent)
        if len(self.heap) < self.size:
            heapq.heappush(self.heap, entry)
        else:
            _, dropped = heapq.heapreplace(self.heap, entry)
            del self.kept[dropped]
        self.kept[latent] = examples

    def examples(self) -> list[list[dict[str, Any]]]:
        """The sampled latents' examples, in latent order."""
        return [self.kept[latent] for latent in sorted(self.kept)]

    def provenance(self) -> dict[str, Any]:
        return {"latents_pooled": len(self.kept), "latents_scored": self.seen}

    def _priority(self, latent: int) -> int:
        """splitmix64 of (seed, latent): a seeded uniform order of the latents."""
        z = (self.seed * 0x9E3779B97F4A7C15 + latent + 1) * 0x9E3779B97F4A7C15 & _MASK
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9 & _MASK
        z = (z ^ (z >> 27)) * 0x94D049BB133111EB & _MASK
        return z ^ (z >> 31)


_MASK = (1 << 64) - 1


class _MetricTable:
    """Each scored latent's metrics and share of positives, as columns of numbers (NaN: the latent has no
    such metric), read in latent order so the summary does not depend on how records lie in files."""

    def __init__(self) -> None:
        self.latents, self.positives = array("q"), array("d")
        self.metrics: dict[str, array[float]] = {}

    def add(self, latent: int, positives: float, metrics: dict[str, Any]) -> None:
        row = len(self.latents)
        self.latents.append(latent)
        self.positives.append(positives)
        for name, value in metrics.items():
            if name.startswith("n_") or not isinstance(value, (int, float)) or isinstance(value, bool):
                continue  # counts (n_examples, n_failed, ...) are not averaged as scores
            if name not in self.metrics:
                self.metrics[name] = array("d", [math.nan]) * row  # the latents before had no such metric
            self.metrics[name].append(float(value))
        for values in self.metrics.values():
            if len(values) == row:
                values.append(math.nan)

    def latent_order(self) -> np.ndarray:
        return np.argsort(np.frombuffer(self.latents, dtype=np.int64), kind="stable")

    @staticmethod
    def column(values: array[float], order: np.ndarray) -> np.ndarray:
        return np.frombuffer(values, dtype=np.float64)[order]


class _Cost:
    """Token and time totals over the latents that called an LLM."""

    def __init__(self) -> None:
        self.latents = 0
        self.totals = dict.fromkeys(
            ("requests", "prompt_tokens", "cached_tokens", "completion_tokens", "seconds"), 0.0
        )

    def add(self, usage: dict[str, Any] | None) -> None:
        if not usage:
            return
        self.latents += 1
        for key in self.totals:
            self.totals[key] += usage[key]

    def result(self) -> dict[str, Any]:
        if not self.latents:
            return {}
        n, t = self.latents, self.totals
        return {
            "latents_with_llm_calls": n,
            "requests_per_latent": t["requests"] / n,
            "prompt_tokens_per_latent": t["prompt_tokens"] / n,
            "cached_fraction": t["cached_tokens"] / t["prompt_tokens"] if t["prompt_tokens"] else None,
            "completion_tokens_per_latent": t["completion_tokens"] / n,
            "llm_seconds_per_latent": t["seconds"] / n,
        }


POOLED_FIELDS = ("label", "prediction", "probability", "value", "predicted", "activations")
"""What the pooled metrics read of an example; the sample keeps only these."""


def _slim(example: dict[str, Any]) -> dict[str, Any]:
    return {key: example[key] for key in POOLED_FIELDS if key in example}


def _positive_fraction(packed: Any) -> float:
    kinds, labels = column(packed, "kind"), column(packed, "label")
    labels = [y for kind, y in zip(kinds, labels, strict=True) if kind != "trial" and y is not None]
    return float(np.mean(labels)) if labels else 0.5


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
        "Mean over latents with a 95% CI (percentile bootstrap; Student's t below 20 latents, the normal"
        " interval from 100,000). Chance is what a scorer answering at random gets (averaged over "
        "latents, each with its own share of positives). Skipped latents (too few activating windows or "
        "held-out examples, not explained) and failed latents (no usable answer, too few examples of a "
        "class) are counted, never scored; `pending` latents have no record yet."
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
