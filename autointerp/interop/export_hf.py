"""A Hugging Face dataset folder: Parquet files of explanations (with every score) and of per-example detail,
and a dataset card whose YAML front matter declares both as configs.

```
<out>/README.md                         dataset card (configs: explanations [default], examples)
<out>/explanations/data.parquet         one row per (hookpoint, latent)
<out>/examples/<hookpoint>-<n>.parquet  one row per scored example (or intruder trial)
<out>/config.yaml, summary.json         the run's, as they are
```
Push it with `huggingface-cli upload <user>/<dataset> <out> . --repo-type dataset`.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from autointerp.interop.export import ExportOptions
from autointerp.interop.rundata import RunData, headline
from autointerp.rundir import CONFIG_FILE

EXAMPLE_ROWS_PER_FILE = 200_000
EXAMPLE_SCHEMA = pa.schema(
    [
        ("hookpoint", pa.string()),
        ("latent", pa.int64()),
        ("scorer", pa.string()),
        ("explanation", pa.string()),
        ("example", pa.int64()),
        ("kind", pa.string()),
        ("label", pa.int64()),
        ("prediction", pa.int64()),
        ("probability", pa.float64()),
        ("value", pa.float64()),
        ("text", pa.string()),
        ("tokens", pa.list_(pa.int32())),
        ("activations", pa.list_(pa.float32())),
        ("sequence", pa.int64()),
        ("start", pa.int64()),
        ("quantile", pa.int64()),
        ("error", pa.string()),
        ("detail", pa.string()),
    ]
)
_EXAMPLE_KEYS = {"kind", "label", "prediction", "probability", "value", "shown", "tokens", "activations"}
_EXAMPLE_KEYS |= {"sequence", "start", "quantile", "error"}
_BASE_COLUMNS = [
    ("hookpoint", pa.string()),
    ("latent", pa.int64()),
    ("explanation", pa.string()),
    ("explanation_error", pa.string()),
    ("skipped", pa.string()),
    ("num_activations", pa.int64()),
    ("max_activation", pa.float64()),
    ("explainer_model", pa.string()),
    ("source_format", pa.string()),
]


def export_hf(run: RunData, out: Path, options: ExportOptions) -> None:
    """Both Parquet configs, the dataset card, and the run's config and summary."""
    (out / "explanations").mkdir(parents=True)
    (out / "examples").mkdir()
    table = explanations_table(run)
    pq.write_table(table, out / "explanations" / "data.parquet")
    example_count = _write_examples(run, out / "examples")
    for name in (CONFIG_FILE, "summary.json"):
        if (run.run_dir / name).is_file():
            shutil.copyfile(run.run_dir / name, out / name)
    (out / "README.md").write_text(dataset_card(run, table, example_count))


def score_columns(run: RunData) -> dict[str, list[str]]:
    """Score folder -> its numeric metric names (over every hookpoint and latent)."""
    columns: dict[str, list[str]] = {}
    for scorer in run.scorers:
        names: dict[str, None] = {}
        for hookpoint in run.hookpoints:
            for record in run.scores(scorer, hookpoint, examples=False).values():
                for name, value in (record.get("metrics") or {}).items():
                    if isinstance(value, (int, float)) and not isinstance(value, bool):
                        names[name] = None
        columns[scorer] = list(names)
    return columns


def _column(scorer: str, metric: str | None = None) -> str:
    base = scorer.replace(".", "_")
    return f"{base}_{metric}" if metric else f"{base}_score"


def explanations_table(run: RunData) -> pa.Table:
    """One row per latent of every hookpoint: the explanation, then each scorer's score, error and metrics."""
    metrics = score_columns(run)
    fields = list(_BASE_COLUMNS)
    for scorer, names in metrics.items():
        fields += [(_column(scorer), pa.float64()), (_column(scorer, "error"), pa.string())]
        fields += [(_column(scorer, name), pa.float64()) for name in names]
    rows: dict[str, list[Any]] = {name: [] for name, _ in fields}
    for hookpoint in run.hookpoints:
        for latent in run.latents(hookpoint):
            record = run.explanations(hookpoint, examples=False).get(latent) or {}
            values = {
                "hookpoint": hookpoint,
                "latent": latent,
                "explanation": record.get("explanation"),
                "explanation_error": record.get("error"),
                "skipped": record.get("skipped"),
                "num_activations": record.get("num_activations"),
                "max_activation": record.get("max_activation"),
                "explainer_model": (record.get("explainer") or {}).get("model"),
                "source_format": (record.get("source") or {}).get("format"),
            }
            for scorer, names in metrics.items():
                score = run.scores(scorer, hookpoint, examples=False).get(latent) or {}
                values[_column(scorer)] = score.get("score")
                values[_column(scorer, "error")] = score.get("error") or score.get("skipped")
                for name in names:
                    value = (score.get("metrics") or {}).get(name)
                    values[_column(scorer, name)] = None if isinstance(value, bool) else value
            for name in rows:
                rows[name].append(values[name])
    schema = pa.schema(fields)
    return pa.table({name: pa.array(rows[name], type=schema.field(name).type) for name in rows}, schema)


def _write_examples(run: RunData, folder: Path) -> int:
    """Per-example rows, in files of at most EXAMPLE_ROWS_PER_FILE rows; returns the row count."""
    total = 0
    for hookpoint in run.hookpoints:
        number, batch = 0, []
        for row in _example_rows(run, hookpoint):
            batch.append(row)
            if len(batch) == EXAMPLE_ROWS_PER_FILE:
                _write_example_file(folder / f"{hookpoint}-{number:05d}.parquet", batch)
                total, number, batch = total + len(batch), number + 1, []
        if batch:
            _write_example_file(folder / f"{hookpoint}-{number:05d}.parquet", batch)
            total += len(batch)
    if total == 0:
        _write_example_file(folder / "empty-00000.parquet", [])
    return total


def _example_rows(run: RunData, hookpoint: str) -> Iterator[dict[str, Any]]:
    for scorer in run.scorers:
        for latent, record in run.scores(scorer, hookpoint).items():
            for position, example in enumerate(record.get("examples") or []):
                detail = {k: v for k, v in example.items() if k not in _EXAMPLE_KEYS}
                yield {
                    "hookpoint": hookpoint,
                    "latent": latent,
                    "scorer": scorer,
                    "explanation": record.get("explanation"),
                    "example": position,
                    "kind": example.get("kind"),
                    "label": _int(example.get("label")),
                    "prediction": _int(example.get("prediction")),
                    "probability": example.get("probability"),
                    "value": example.get("value"),
                    "text": example.get("shown"),
                    "tokens": example.get("tokens"),
                    "activations": example.get("activations"),
                    "sequence": example.get("sequence"),
                    "start": example.get("start"),
                    "quantile": example.get("quantile"),
                    "error": example.get("error"),
                    "detail": json.dumps(detail, ensure_ascii=False) if detail else None,
                }


def _int(value: Any) -> int | None:
    return None if value is None or isinstance(value, (list, dict)) else int(value)


def _write_example_file(path: Path, rows: list[dict[str, Any]]) -> None:
    columns = {f.name: pa.array([r[f.name] for r in rows], type=f.type) for f in EXAMPLE_SCHEMA}
    pq.write_table(pa.table(columns, EXAMPLE_SCHEMA), path)


def dataset_card(run: RunData, table: pa.Table, example_count: int) -> str:
    """README.md: YAML front matter declaring the two configs, then what the columns hold."""
    front = (
        "---\n"
        "configs:\n"
        "- config_name: explanations\n"
        "  data_files:\n"
        "  - split: train\n"
        "    path: explanations/*.parquet\n"
        "  default: true\n"
        "- config_name: examples\n"
        "  data_files:\n"
        "  - split: train\n"
        "    path: examples/*.parquet\n"
        "tags:\n- sparse-autoencoder\n- interpretability\n- autointerp\n"
        "---\n"
    )
    scorers = ", ".join(f"`{s}` ({headline(s)})" for s in run.scorers) or "none"
    source = run.imported["source"] if run.imported else None
    origin = (
        f"Explanations imported from a {source['format']} file (sha256 `{source['sha256'][:12]}`); the "
        "examples their explainer saw are unknown, so the test examples could not be checked to be "
        "disjoint from them."
        if source
        else "Explanations made by autointerp's explain stage; scored on held-out examples disjoint from "
        "the explainer's."
    )
    lines = [
        front,
        f"# {run.name}: explanations and scores of sparse-coder latents\n",
        f"Subject model `{run.model}`, hookpoints {', '.join(f'`{h}`' for h in run.hookpoints)}. "
        f"{table.num_rows:,} latents, {example_count:,} scored examples. Scorers: {scorers}.\n",
        origin + "\n",
        "## Configs\n",
        "- `explanations` (default): one row per latent: `hookpoint`, `latent`, `explanation`, "
        "`explanation_error`, `skipped`, `num_activations`, `max_activation`, `explainer_model`, "
        "`source_format`; then per score folder `<scorer>_score` (the headline metric), `<scorer>_error` "
        "and `<scorer>_<metric>` for every metric (controls such as `detection_random_explanation_*` score "
        "another latent's explanation).",
        "- `examples`: one row per scored example: `hookpoint`, `latent`, `scorer`, `explanation`, "
        "`example` (position in the record), `kind`, `label`, `prediction`, `probability`, `value`, "
        "`text` (as shown to the scorer), `tokens`, `activations`, `sequence`, `start`, `quantile`, "
        "`error`, and `detail` (JSON of any other fields, e.g. intruder trials).\n",
        "```python\nfrom datasets import load_dataset\n"
        'explanations = load_dataset("<user>/<dataset>", "explanations")\n```\n',
        "`config.yaml` is the run's config and `summary.json` its across-latent summary (means with 95% "
        "bootstrap CIs, chance levels).\n",
    ]
    return "\n".join(lines)
