"""The comparison as tables: one builder per table, rendered to CSV, markdown and the console."""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from typing import Any

from rich.markup import escape
from rich.table import Table as RichTable

from autointerp.compare.interpretability import Interpretability, few_pairs_warning
from autointerp.compare.result import CompareReport, PairResult
from autointerp.compare.similarity import MIN_PAIRS
from autointerp.score.metrics import mean_with_ci


@dataclass(frozen=True)
class Table:
    name: str
    """File stem of the CSV."""
    title: str
    columns: list[str]
    rows: list[list[Any]]

    def csv(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(self.columns)
        writer.writerows([[_csv_cell(value) for value in row] for row in self.rows])
        return out.getvalue()

    def markdown(self) -> str:
        lines = [f"| {' | '.join(self.columns)} |", f"|{'---|' * len(self.columns)}"]
        lines += [f"| {' | '.join(_cell(value).replace('|', '/') for value in row)} |" for row in self.rows]
        return "\n".join(lines)


def all_tables(report: CompareReport) -> list[Table]:
    """Every table of the comparison, in the order of summary.md."""
    interp = report.interpretability
    tables = [runs_table(report), pairs_table(report), latent_matrix_table(report), matrix_table(report)]
    if interp.scores:
        tables += [scores_table(interp), paired_tests_table(interp), agreement_table(interp)]
    return tables


def runs_table(report: CompareReport) -> Table:
    rows = [
        [i, run.label, str(run.run_dir), run.hookpoint, run.num_latents, len(run.explanations)]
        for i, run in enumerate(report.runs)
    ]
    return Table("runs", "Runs", ["index", "run", "run_dir", "hookpoint", "latents", "explained"], rows)


def pairs_table(report: CompareReport) -> Table:
    columns = [
        "run_a", "run_b", "matching", "matched", "unmatched_a",
        "latent_similarity_mean", "latent_similarity_ci_low", "latent_similarity_ci_high",
        "latent_baseline_mean",
        "explained_pairs", "similarity_mean", "similarity_ci_low", "similarity_ci_high", "similarity_median",
        "baseline_mean", "baseline_ci_low", "baseline_ci_high", "difference",
        "explained_pairs_with_partners", "warning",
    ]  # fmt: skip
    return Table(
        "pairs", "Latent matching, latent similarity and explanation similarity", columns,
        [_pair_row(p) for p in report.pairs],
    )  # fmt: skip


def _pair_row(pair: PairResult) -> list[Any]:
    matching, sim, base = pair.matching, pair.similarity.summary, pair.similarity.baseline_summary
    latents = pair.latents.summary
    return [
        pair.a.label, pair.b.label, matching.describe(), len(matching.a), matching.unmatched,
        latents["mean"], latents["ci_low"], latents["ci_high"], pair.latents.baseline_summary["mean"],
        sim["n"], sim["mean"], sim["ci_low"], sim["ci_high"], sim["median"],
        base["mean"], base["ci_low"], base["ci_high"], _difference(sim["mean"], base["mean"]),
        pair.reachable, few_pairs_warning(sim["n"], "explanation similarity"),
    ]  # fmt: skip


def _difference(mean: float | None, baseline: float | None) -> float | None:
    return None if mean is None or baseline is None else mean - baseline


def latent_matrix_table(report: CompareReport) -> Table:
    labels = [escape(run.label) for run in report.runs]
    matrix = report.latent_similarity_matrix()
    rows = [[label, *matrix[i]] for i, label in enumerate(labels)]
    title = "Latent similarity matrix: mean similarity of matched latents (method per pair in pairs.csv)"
    return Table("latent_similarity_matrix", title, ["run", *labels], rows)


def matrix_table(report: CompareReport) -> Table:
    labels = [escape(run.label) for run in report.runs]
    matrix = report.similarity_matrix()
    rows = [[label, *matrix[i]] for i, label in enumerate(labels)]
    return Table(
        "similarity_matrix", "Explanation similarity matrix (1 on the diagonal)", ["run", *labels], rows
    )


def scores_table(interp: Interpretability) -> Table:
    columns = ["scorer", "run", "mean", "ci_low", "ci_high", "median", "std", "n"]
    return Table("scores", "Scores per run", columns, [[row[c] for c in columns] for row in interp.summaries])


def paired_tests_table(interp: Interpretability) -> Table:
    columns = [
        "scorer",
        "run_a",
        "run_b",
        "pairing",
        "n",
        "mean_a",
        "mean_b",
        "mean_difference",
        "wilcoxon",
        "p_value",
        "warning",
    ]
    rows = [[row[c] for c in columns] for row in interp.paired_tests]
    return Table("paired_tests", "Paired tests (Wilcoxon signed-rank)", columns, rows)


def agreement_table(interp: Interpretability) -> Table:
    columns = ["run", "scorer_a", "scorer_b", "spearman", "p_value", "n"]
    rows = [[row[c] for c in columns] for row in interp.agreement]
    return Table(
        "scorer_agreement", "Scorer agreement (Spearman rank correlation across latents)", columns, rows
    )


def headline_tables(report: CompareReport) -> list[RichTable]:
    """Console tables: latent similarity and explanation similarity per run pair, the latent similarity
    matrix (three runs or more), and each scorer's mean per run."""
    tables = [_latents_headline(report), _explanations_headline(report)]
    if len(report.runs) > 2:
        tables.append(_matrix_headline(report))
    if report.interpretability.summaries:
        tables.append(_scores_headline(report.interpretability))
    return tables


def _latents_headline(report: CompareReport) -> RichTable:
    table = RichTable(title=escape(f"compare: {report.out_dir}") + "\nlatent similarity of matched latents")
    for column in ("run A", "run B", "matched by", "matched", "mean [95% CI]", "random"):
        table.add_column(column)
    for pair in report.pairs:
        table.add_row(
            escape(pair.a.label),
            escape(pair.b.label),
            pair.matching.method,
            f"{len(pair.matching.a):,}",
            mean_with_ci(pair.latents.summary),
            _cell(pair.latents.baseline_summary["mean"]),
        )
    return table


def _explanations_headline(report: CompareReport) -> RichTable:
    table = RichTable(title="explanation similarity of matched latents explained on both sides")
    for column in ("run A", "run B", "both explained", "mean [95% CI]", "random"):
        table.add_column(column)
    for pair in report.pairs:
        sim, base = pair.similarity.summary, pair.similarity.baseline_summary
        few = f" (< {MIN_PAIRS}!)" if sim["n"] < MIN_PAIRS else ""
        table.add_row(
            escape(pair.a.label),
            escape(pair.b.label),
            f"{sim['n']:,}{few}",
            mean_with_ci(sim),
            _cell(base["mean"]),
        )
    return table


def _matrix_headline(report: CompareReport) -> RichTable:
    table = RichTable(title="latent similarity matrix (mean over matched latents)")
    labels = [escape(run.label) for run in report.runs]
    for column in ("run", *labels):
        table.add_column(column)
    for label, row in zip(labels, report.latent_similarity_matrix(), strict=True):
        table.add_row(label, *(_cell(float(value)) for value in row))
    return table


def _scores_headline(interp: Interpretability) -> RichTable:
    runs = list(dict.fromkeys(row["run"] for row in interp.summaries))
    table = RichTable(title="mean score per latent [95% CI]")
    for column in ("scorer", *(escape(run) for run in runs)):
        table.add_column(escape(column))
    for scorer in dict.fromkeys(row["scorer"] for row in interp.summaries):
        by_run = {row["run"]: row for row in interp.summaries if row["scorer"] == scorer}
        table.add_row(scorer, *(mean_with_ci(by_run[run]) if run in by_run else "" for run in runs))
    return table


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.2e}" if 0 < abs(value) < 1e-3 else f"{value:.3f}"
    return str(value)


def _csv_cell(value: Any) -> Any:
    """A CSV cell; text that a spreadsheet would run as a formula (LLM or corpus text starting with =, +,
    -, @, tab or CR) is prefixed with `'`, as OWASP advises."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, str) and value[:1] in FORMULA_STARTS:
        return "'" + value
    return f"{value:.6g}" if isinstance(value, float) else value


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
