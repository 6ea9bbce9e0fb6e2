"""Write a comparison to its folder: summary.md, summary.json, CSV tables and PNG plots."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from autointerp.compare import plots
from autointerp.compare.interpretability import few_pairs_warning
from autointerp.compare.partners import partners_path
from autointerp.compare.result import CompareReport, PairResult
from autointerp.compare.tables import Table, all_tables
from autointerp.rundir import (
    COMPARE_DISTRIBUTIONS,
    COMPARE_HEATMAP,
    COMPARE_LATENT_HEATMAP,
    COMPARE_MARKER,
    SUMMARY_JSON,
    SUMMARY_MD,
    replacing_dir,
    write_json_atomic,
    write_text_atomic,
)


def write_outputs(report: CompareReport) -> list[Path]:
    """Write every file of the comparison into a new folder that replaces `report.out_dir` when all are
    written (files of an earlier comparison never stay beside new ones); returns their final paths."""
    final = report.out_dir
    with replacing_dir(final) as staging:
        files = _write_all(dataclasses.replace(report, out_dir=staging))
        (staging / COMPARE_MARKER).write_text("")
    return [final / path.relative_to(staging) for path in files]


def _write_all(report: CompareReport) -> list[Path]:
    out = report.out_dir
    tables = all_tables(report)
    files = [_write(out / f"{table.name}.csv", table.csv()) for table in tables]
    files += [_write_matches(out, report, pair) for pair in report.pairs]
    files += [_write(partners_path(out, item), item.text()) for item in report.partners]
    files += _plot(report)
    write_json_atomic(out / SUMMARY_JSON, _summary(report, tables))
    files += [out / SUMMARY_JSON, _write(out / SUMMARY_MD, _markdown(report, tables))]
    return files


def matches_file(report: CompareReport, pair: PairResult) -> str:
    """`matches-<i>-<j>.csv`, with i, j the runs' indices in runs.csv."""
    index = {run.label: i for i, run in enumerate(report.runs)}
    return f"matches-{index[pair.a.label]}-{index[pair.b.label]}.csv"


def _write(path: Path, text: str) -> Path:
    write_text_atomic(path, text)
    return path


def _write_matches(out: Path, report: CompareReport, pair: PairResult) -> Path:
    """Every matched pair: latents, how similar they are, and both explanations with their cosine."""
    cosine = dict(zip(pair.similarity.a.tolist(), pair.similarity.values.tolist(), strict=True))
    rows = []
    for a, b, match in zip(pair.matching.a, pair.matching.b, pair.matching.similarity, strict=True):
        a, b = int(a), int(b)
        rows.append(
            [
                a,
                b,
                float(match),
                cosine.get(a),
                pair.a.explanations.get(a, ""),
                pair.b.explanations.get(b, ""),
            ]
        )
    columns = [
        "latent_a",
        "latent_b",
        "match_similarity",
        "explanation_similarity",
        "explanation_a",
        "explanation_b",
    ]
    return _write(out / matches_file(report, pair), Table("matches", "", columns, rows).csv())


def _plot(report: CompareReport) -> list[Path]:
    out = report.out_dir
    labels = [run.label for run in report.runs]
    plots.similarity_heatmap(labels, report.similarity_matrix(), out / COMPARE_HEATMAP)
    plots.similarity_heatmap(
        labels,
        report.latent_similarity_matrix(),
        out / COMPARE_LATENT_HEATMAP,
        title="Latent similarity",
        label="mean similarity of matched latents",
    )
    series = [
        (f"{p.a.label} vs {p.b.label}", p.similarity.values, p.similarity.baseline) for p in report.pairs
    ]
    plots.similarity_distributions(series, out / COMPARE_DISTRIBUTIONS)
    files = [out / COMPARE_HEATMAP, out / COMPARE_LATENT_HEATMAP, out / COMPARE_DISTRIBUTIONS]
    for scorer, by_run in report.interpretability.scores.items():
        path = out / f"scores-{scorer}.png"
        plots.score_distributions(scorer, {run: list(v.values()) for run, v in by_run.items()}, path)
        files.append(path)
    return files


def _summary(report: CompareReport, tables: list[Table]) -> dict[str, Any]:
    interp = report.interpretability
    return {
        "runs": [dict(zip(tables[0].columns, row, strict=True)) for row in tables[0].rows],
        "pairs": [
            {
                "run_a": p.a.label,
                "run_b": p.b.label,
                "method": p.matching.method,
                "matching": p.matching.describe(),
                "candidates": p.matching.candidates,
                "matched": len(p.matching.a),
                "unmatched_a": p.matching.unmatched,
                "unmatched_b": p.matching.num_b - len(p.matching.b),
                "approximate": p.matching.candidates < p.matching.num_b,
                "negative_matches": int((p.matching.similarity < 0).sum()),
                "latent_similarity": {
                    **p.latents.summary,
                    "measure": p.matching.method,
                    "baseline": p.latents.baseline_summary,
                    "baseline_method": p.latents.describe_baseline(),
                },
                "similarity": p.similarity.summary,
                "similarity_by_latent_similarity": p.similarity.by_latent_similarity,
                "baseline": p.similarity.baseline_summary,
                "explained_pairs_with_partners": p.reachable,
                "warning": few_pairs_warning(p.similarity.summary["n"], "explanation similarity"),
                "matches_file": matches_file(report, p),
            }
            for p in report.pairs
        ],
        "latent_similarity_matrix": {
            "runs": [r.label for r in report.runs],
            "values": report.latent_similarity_matrix().tolist(),
        },
        "similarity_matrix": {
            "runs": [r.label for r in report.runs],
            "values": report.similarity_matrix().tolist(),
        },
        "partners": [
            {
                "run_dir": str(item.run_dir),
                "file": partners_path(report.out_dir, item).name,
                "latents": sum(len(latents) for latents in item.latents.values()),
                "not_explained": item.missing,
            }
            for item in report.partners
        ],
        "next_commands": report.next_commands,
        "interpretability": {
            "scores": interp.summaries,
            "paired_tests": interp.paired_tests,
            "scorer_agreement": interp.agreement,
        },
        "notes": report.notes + interp.notes,
    }


def _markdown(report: CompareReport, tables: list[Table]) -> str:
    parts = ["# autointerp compare", ""]
    for table in tables:
        parts += [f"## {table.title}", "", table.markdown(), ""]
    if not report.interpretability.scores:
        parts += ["## Interpretability", "", *report.interpretability.notes, ""]
    parts += [
        "## Plots",
        "",
        f"![latent similarity matrix]({COMPARE_LATENT_HEATMAP})",
        f"![explanation similarity matrix]({COMPARE_HEATMAP})",
        f"![matched vs random]({COMPARE_DISTRIBUTIONS})",
    ]
    parts += [f"![{scorer}](scores-{scorer}.png)" for scorer in report.interpretability.scores]
    notes = report.notes + report.interpretability.notes
    if notes:
        parts += ["", "## Notes", "", *(f"- {note}" for note in notes)]
    if report.next_commands:
        parts += ["", "## Next: explain the matched partners", "", "```bash", *report.next_commands, "```"]
    return "\n".join(parts) + "\n"
