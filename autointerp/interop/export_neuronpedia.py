"""Neuronpedia's dataset export layout, which its webapp imports (`/api/admin/import`).

```
<out>/<modelId>/<sourceId>/features/batch-<n>.jsonl.gz          one Feature (table Neuron) per line
<out>/<modelId>/<sourceId>/activations/batch-<n>.jsonl.gz       one Activation per line
<out>/<modelId>/<sourceId>/explanations/batch-<n>.jsonl.gz      one Explanation per line
<out>/<modelId>/<sourceId>/explanation_scores/batch-<n>.jsonl.gz  one ExplanationScore per line
<out>/config/explanation_type.jsonl, explanation_model_type.jsonl, explanation_score_type.jsonl,
             explanation_score_model.jsonl                      the lookup rows the above refer to
```
Keys are the column names of Neuronpedia's tables (`utils/neuronpedia-utils/neuronpedia_utils/db_models`
and `apps/webapp/prisma/schema.prisma`): the import copies each JSON line into the table as it is.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
from collections.abc import Iterable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from autointerp.errors import UserError
from autointerp.interop.export import ExportOptions
from autointerp.interop.hookpoints import site
from autointerp.interop.rundata import RunData, headline

BATCH_ROWS = 4096
CLASSIFIERS = ("detection", "fuzzing")
_KIND_WORDS = {"res": "res", "mlp": "mlp", "attn": "att"}


def export_neuronpedia(run: RunData, out: Path, options: ExportOptions) -> None:
    """Features, activations, explanations and explanation scores of every hookpoint, plus lookup rows."""
    model_id = options.model_id or _model_id(run.model)
    created = datetime.now(timezone.utc).isoformat()
    lookups: dict[str, dict[str, dict[str, Any]]] = {}
    for hookpoint in run.hookpoints:
        source_id = source_id_for(hookpoint, options.source_set)
        rows = _Rows(run, hookpoint, model_id, source_id, options.creator_id, created, lookups)
        folder = out / model_id / source_id
        _write_batches(folder / "features", rows.features())
        _write_batches(folder / "activations", rows.activations())
        _write_batches(folder / "explanations", rows.explanations())
        _write_batches(folder / "explanation_scores", rows.scores())
    for table, entries in lookups.items():
        lines = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in entries.values())
        (out / "config").mkdir(parents=True, exist_ok=True)
        (out / "config" / f"{table}.jsonl").write_text(lines)


def source_id_for(hookpoint: str, source_set: str) -> str:
    """`layers.6` -> `6-res-<set>`, `layers.6.mlp` -> `6-mlp-<set>`, `layers.6.self_attn` -> `6-att-<set>`."""
    where = site(hookpoint)
    if where is None:
        raise UserError(
            f"--format neuronpedia: hookpoint {hookpoint} has no layer number, which Neuronpedia source ids "
            "(<layer>-<set>) need"
        )
    return f"{where[0]}-{_KIND_WORDS[where[1]]}-{source_set}"


def _model_id(model_path: str) -> str:
    name = Path(model_path.rstrip("/")).name or model_path
    return re.sub(r"[^a-z0-9.-]+", "-", name.lower()).strip("-") or "model"


def stable_id(*parts: object) -> str:
    """A 25-character id in cuid shape, the same for the same parts (a rerun replaces, never duplicates)."""
    return "c" + hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:24]


class _Rows:
    """The rows of one hookpoint (one Neuronpedia source)."""

    def __init__(self, run, hookpoint, model_id, source_id, creator_id, created, lookups):
        self.run, self.hookpoint = run, hookpoint
        self.model_id, self.source_id, self.creator, self.created = model_id, source_id, creator_id, created
        self.lookups = lookups
        self.base = {"modelId": model_id, "layer": source_id}

    def features(self) -> Iterator[dict[str, Any]]:
        stats = self.run.stats(self.hookpoint)
        tokens = self.run.num_tokens(self.hookpoint)
        for latent in self.run.latents(self.hookpoint):
            yield self.base | {
                "index": str(latent),
                "creatorId": self.creator,
                "createdAt": self.created,
                "maxActApprox": float(stats["max_activation"][latent]),
                "frac_nonzero": float(stats["firing_count"][latent]) / tokens if tokens else 0.0,
            }

    def activations(self) -> Iterator[dict[str, Any]]:
        texts = self.run.texts
        for latent in self.run.latents(self.hookpoint):
            for example in self._activating_windows(latent):
                values = [float(v) for v in example["activations"]]
                peak = max(range(len(values)), key=values.__getitem__)
                window = (example["sequence"], example["start"])
                yield self.base | {
                    "id": stable_id(self.model_id, self.source_id, latent, *window),
                    "index": str(latent),
                    "tokens": texts.pieces(example["tokens"]),
                    "values": values,
                    "maxValue": values[peak],
                    "maxValueTokenIndex": peak,
                    "minValue": min(values),
                    "dataIndex": str(example["sequence"]),
                    "creatorId": self.creator,
                    "createdAt": self.created,
                }

    def _activating_windows(self, latent: int) -> list[dict[str, Any]]:
        """The windows shown to the explainer, then the held-out activating ones scored, each once."""
        record = self.run.explanations(self.hookpoint).get(latent) or {}
        windows = list((record.get("examples") or {}).get("explain") or [])
        for scorer in self.run.scorers:
            score = self.run.scores(scorer, self.hookpoint).get(latent) or {}
            windows += [e for e in score.get("examples") or [] if e.get("kind") == "activating"]
        seen, unique = set(), []
        for window in windows:
            key = (window["sequence"], window["start"])
            if key not in seen and "tokens" in window:
                seen.add(key)
                unique.append(window)
        return unique

    def explanations(self) -> Iterator[dict[str, Any]]:
        for latent, record in self.run.explanations(self.hookpoint, examples=False).items():
            if not record.get("explanation"):
                continue
            type_name, model_name = self._explainer(record)
            yield self.base | {
                "id": self.explanation_id(latent, record["explanation"]),
                "index": str(latent),
                "description": record["explanation"],
                "authorId": self.creator,
                "typeName": type_name,
                "explanationModelName": model_name,
                "notes": _notes(record),
                "createdAt": self.created,
            }

    def explanation_id(self, latent: int, explanation: str) -> str:
        return stable_id(self.model_id, self.source_id, latent, explanation)

    def _explainer(self, record: dict[str, Any]) -> tuple[str, str]:
        explainer = record.get("explainer") or {}
        fields = (record.get("source") or {}).get("fields") or {}
        type_name = fields.get("typeName") or f"autointerp-{explainer.get('kind') or 'default'}"
        model_name = fields.get("explanationModelName") or explainer.get("model") or "unknown"
        self._lookup("explanation_type", type_name, {"creatorId": self.creator})
        self._lookup("explanation_model_type", model_name, {})
        return type_name, model_name

    def scores(self) -> Iterator[dict[str, Any]]:
        explained = self.run.explanations(self.hookpoint, examples=False)
        for scorer in (s for s in self.run.scorers if "." not in s):  # controls score other explanations
            for latent, record in self.run.scores(scorer, self.hookpoint).items():
                own = explained.get(latent) or {}
                if record.get("score") is None or not own.get("explanation"):
                    continue
                type_name, model_name = self._score_kind(scorer, record)
                yield {
                    "id": stable_id("score", self.model_id, self.source_id, latent, scorer),
                    "value": float(record["score"]),
                    "explanationId": self.explanation_id(latent, own["explanation"]),
                    "explanationScoreTypeName": type_name,
                    "explanationScoreModelName": model_name,
                    "initiatedByUserId": self.creator,
                    "jsonDetails": json.dumps(self._details(scorer, record), ensure_ascii=False),
                    "createdAt": self.created,
                }

    def _score_kind(self, scorer: str, record: dict[str, Any]) -> tuple[str, str]:
        settings = (record.get("config_key") or {}).get("settings") or {}
        model = settings.get("model") or settings.get("embedding_model") or "autointerp-default"
        type_name = f"autointerp_{scorer}"
        description = f"autointerp {scorer} score ({headline(scorer)})"
        self._lookup(
            "explanation_score_type", type_name, {"creatorId": self.creator, "scoreDescription": description}
        )
        self._lookup("explanation_score_model", model, {})
        return type_name, model

    def _details(self, scorer: str, record: dict[str, Any]) -> Any:
        """eleuther-style items for detection and fuzzing (as Neuronpedia's scorer stores them), else the
        metrics."""
        if scorer not in CLASSIFIERS:
            return {"metrics": record.get("metrics")}
        texts = self.run.texts
        return [
            {
                "text": e.get("shown"),
                "distance": e.get("quantile") if e.get("quantile") is not None else -1,
                "ground_truth": bool(e["label"]),
                "prediction": None if e.get("prediction") is None else bool(e["prediction"]),
                "highlighted": scorer == "fuzzing",
                "correct": None if e.get("prediction") is None else e["prediction"] == e["label"],
                "probability": e.get("probability"),
                "activations": e.get("activations"),
                "str_tokens": texts.pieces(e["tokens"]) if "tokens" in e else None,
            }
            for e in record.get("examples") or []
        ]

    def _lookup(self, table: str, name: str, extra: dict[str, Any]) -> None:
        entries = self.lookups.setdefault(table, {})
        if name not in entries:
            entries[name] = {
                "name": name,
                "displayName": name,
                "description": f"{name} (written by autointerp)",
                "creatorName": "autointerp",
                "createdAt": self.created,
                "updatedAt": self.created,
            } | extra


def _notes(record: dict[str, Any]) -> str | None:
    source = record.get("source")
    return f"imported from {source['format']} ({Path(source['file']).name})" if source else None


def _write_batches(folder: Path, rows: Iterable[dict[str, Any]]) -> None:
    """`batch-0.jsonl.gz`, `batch-1.jsonl.gz`, ... of BATCH_ROWS lines each; nothing for no rows."""
    folder.mkdir(parents=True, exist_ok=True)
    batch: list[str] = []
    number = 0
    for row in rows:
        batch.append(json.dumps(row, ensure_ascii=False))
        if len(batch) == BATCH_ROWS:
            _write_gz(folder / f"batch-{number}.jsonl.gz", batch)
            batch, number = [], number + 1
    if batch:
        _write_gz(folder / f"batch-{number}.jsonl.gz", batch)


def _write_gz(path: Path, lines: list[str]) -> None:
    with gzip.open(path, "wt", encoding="utf-8", compresslevel=5) as f:
        f.write("\n".join(lines) + "\n")
