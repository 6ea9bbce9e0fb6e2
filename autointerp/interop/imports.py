"""Explanations made elsewhere, scored here: read them, map their hookpoints, write an explanation set.

Formats: this tool's own explanation records (JSONL), delphi's `explanations/<module>_latent<i>.txt` files,
Neuronpedia explanation rows (`modelId`, `layer`, `index`, `description`; JSONL, JSONL.gz, a JSON array or an
export folder of `explanations/batch-<n>.jsonl.gz`) and plain tables (CSV or JSONL of hookpoint, latent,
explanation).

An imported set is a run directory of its own inside the run, `<run>/imports/<name>/`: its `config.yaml` is
the run's config with `out_dir` pointing there and `latents.indices` set to the imported latents, `cache` is a
link to the run's cache, `explanations/<hookpoint>.jsonl` holds explanation records (the explain stage's
schema, each with a `source`), and `import.json` says where they came from. The score stage, the report,
`compare` and `export` then read it like any run; the run's own explanations and scores are never touched.
"""

from __future__ import annotations

import csv
import dataclasses
import gzip
import hashlib
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from autointerp.cache import CacheReader
from autointerp.config import RunConfig, dump_config
from autointerp.errors import UserError
from autointerp.interop.folders import replacing
from autointerp.interop.hookpoints import HookpointMapper
from autointerp.rundir import (
    CACHE_DIR,
    CONFIG_FILE,
    EXPLANATIONS_DIR,
    IMPORT_FILE,
    IMPORTS_DIR,
    cache_dir,
    config_hash,
    read_json,
    write_json_atomic,
    write_text_atomic,
)

ImportFormat = Literal["autointerp", "delphi", "neuronpedia", "table"]
FORMATS: tuple[str, ...] = ("autointerp", "delphi", "neuronpedia", "table")
DISJOINTNESS_NOTE = (
    "the explainer's examples are unknown, so it cannot be checked that the test examples are disjoint "
    "from the examples the explanations were made from"
)
_LATENT_KEYS = ("latent", "index", "feature", "feature_index", "latent_index")
_HOOKPOINT_KEYS = ("hookpoint", "layer", "module", "hook_name")
_TEXT_KEYS = ("explanation", "description", "label")


@dataclass(frozen=True)
class Row:
    """One explanation as read from a foreign file."""

    name: str | None
    """Its hookpoint or layer name in the file (None when the file names none)."""
    latent: int
    explanation: str
    where: str
    """Where it is in the file, for messages: `line 3`, `file layers.6_latent3.txt`."""
    fields: dict[str, Any] = field(default_factory=dict)
    """Other fields kept from the row (explainer model, type, ...)."""


@dataclass
class ImportResult:
    config: RunConfig
    """The imported set's config: score it with `run_score`."""
    format: str
    counts: dict[str, int]
    """Hookpoint -> explanations imported."""
    without_explanation: int
    """Rows with an empty explanation (or a failed one in this tool's records), left out."""
    warnings: list[str] = field(default_factory=list)


def import_explanations(
    config: RunConfig,
    path: Path,
    fmt: str | None = None,
    name: str | None = None,
    mapping: dict[str, str] | None = None,
) -> ImportResult:
    """Read `path`, map its hookpoints onto `config`'s and write the set `<run>/imports/<name>/`."""
    if not path.exists():
        raise UserError(f"--explanations: {path} does not exist")
    fmt = fmt or detect_format(path)
    if fmt not in FORMATS:
        raise UserError(f"--explanations-format: {fmt!r} is not one of {', '.join(FORMATS)}")
    rows, empty = _split_empty(read_rows(path, fmt))
    by_hookpoint = _assign(rows, HookpointMapper(config.sparse_coder.hookpoints, mapping), path)
    if not by_hookpoint:
        raise UserError(f"--explanations: {path} holds no explanations")
    source = {"format": fmt, "file": str(path.resolve()), "sha256": content_sha256(path)}
    set_dir = config.run_dir / IMPORTS_DIR / _set_name(name, path)
    set_config = _set_config(config, set_dir, by_hookpoint)
    _write_set(config, set_config, by_hookpoint, source, len(empty))
    counts = {hp: len(latents) for hp, latents in by_hookpoint.items()}
    return ImportResult(set_config, fmt, counts, len(empty), _cache_warnings(config, by_hookpoint))


def import_provenance(run_dir: Path) -> dict[str, Any] | None:
    """What the summary says of a run whose explanations were imported; None for the tool's own."""
    path = run_dir / IMPORT_FILE
    if not path.is_file():
        return None
    info = read_json(path)
    source = info["source"]
    note = (
        f"Explanations imported from a {source['format']} file ({source['file']}, sha256 "
        f"{source['sha256'][:12]}): {DISJOINTNESS_NOTE}."
    )
    return {"imported": True, "source": source, "disjointness_checked": False, "note": note}


def detect_format(path: Path) -> str:
    """The format of a file or folder, from its layout or its first record."""
    if path.is_dir():
        if _batch_files(path):
            return "neuronpedia"
        if _delphi_files(path):
            return "delphi"
        if _autointerp_files(path):
            return "autointerp"
        raise UserError(
            f"--explanations: cannot tell the format of folder {path} (no delphi *_latent<i>.txt files, no "
            "Neuronpedia batch-<n>.jsonl.gz, no *.jsonl): pass --explanations-format"
        )
    if _suffix(path) in (".csv", ".tsv"):
        return "table"
    first = next(_json_records(path), None)
    if first is None:
        raise UserError(f"--explanations: {path} holds no records")
    record = first[1]
    if "config_key" in record or "explainer" in record:
        return "autointerp"
    if {"layer", "index", "description"} <= set(record):
        return "neuronpedia"
    if _first_key(record, _LATENT_KEYS) and _first_key(record, _TEXT_KEYS):
        return "table"
    raise UserError(
        f"--explanations: cannot tell the format of {path} from its first record (keys "
        f"{', '.join(sorted(record)[:8])}): pass --explanations-format"
    )


def read_rows(path: Path, fmt: str) -> list[Row]:
    """Every explanation row of `path` in format `fmt`."""
    readers = {
        "autointerp": _autointerp_rows,
        "delphi": _delphi_rows,
        "neuronpedia": _neuronpedia_rows,
        "table": _table_rows,
    }
    return list(readers[fmt](path))


def content_sha256(path: Path) -> str:
    """SHA-256 of a file, or of a folder's files (relative names and contents, in sorted order)."""
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            digest.update(str(file.relative_to(path)).encode() + b"\0")
        with open(file, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


# --- readers -------------------------------------------------------------------------------------------


def _autointerp_files(path: Path) -> list[Path]:
    """A run's `explanations/*.jsonl`, given the run or that folder."""
    inner = path / "explanations"
    return sorted((inner if inner.is_dir() else path).glob("*.jsonl"))


def _in_folder(path: Path, file: Path, where: str) -> str:
    """`where` with the file's name when `path` is a folder of several files."""
    return f"{file.relative_to(path)} {where}" if path.is_dir() else where


def _autointerp_rows(path: Path) -> Iterator[Row]:
    for file in _autointerp_files(path) if path.is_dir() else [path]:
        for line, record in _json_records(file):
            where = _in_folder(path, file, line)
            fields = {"explainer": record.get("explainer")} if record.get("explainer") else {}
            cache = (record.get("config_key") or {}).get("cache")
            if cache:
                fields["cache"] = cache
            yield Row(
                _required(record, ("hookpoint",), path, where, optional=True),
                _latent(_required(record, ("latent",), path, where), path, where),
                record.get("explanation") or "",
                where,
                fields,
            )


def _delphi_rows(path: Path) -> Iterator[Row]:
    for file in _delphi_files(path):
        module, _, index = file.stem.rpartition("_latent")
        try:
            text = json.loads(file.read_bytes())
        except json.JSONDecodeError:
            raise UserError(f"--explanations: {file} is not a JSON string as delphi writes it") from None
        if not isinstance(text, str):
            kind = type(text).__name__
            raise UserError(f"--explanations: {file} holds a {kind}, not an explanation string")
        yield Row(module.replace("--", "/"), _latent(index, file, "its name"), text, f"file {file.name}")


def _neuronpedia_rows(path: Path) -> Iterator[Row]:
    files = _batch_files(path) if path.is_dir() else [path]
    for file in files:
        for line, record in _json_records(file):
            where = _in_folder(path, file, line)
            fields = {
                key: record[key]
                for key in ("modelId", "typeName", "explanationModelName", "authorId", "id")
                if record.get(key) is not None
            }
            yield Row(
                str(_required(record, ("layer",), path, where)),
                _latent(_required(record, ("index",), path, where), path, where),
                str(record.get("description") or ""),
                where,
                fields,
            )


def _table_rows(path: Path) -> Iterator[Row]:
    records = _csv_records(path) if _suffix(path) in (".csv", ".tsv") else _json_records(path)
    for where, record in records:
        name = _required(record, _HOOKPOINT_KEYS, path, where, optional=True)
        yield Row(
            str(name) if name not in (None, "") else None,
            _latent(_required(record, _LATENT_KEYS, path, where), path, where),
            str(_required(record, _TEXT_KEYS, path, where) or ""),
            where,
        )


def _json_records(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, record) of a JSONL, JSONL.gz or JSON-array file."""
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            head = f.read(4096).lstrip()
            f.seek(0)
            if head.startswith("["):
                for i, record in enumerate(json.load(f), start=1):
                    yield f"item {i}", _mapping(record, path, f"item {i}")
                return
            for number, line in enumerate(f, start=1):
                if line.strip():
                    yield f"line {number}", _mapping(json.loads(line), path, f"line {number}")
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as exc:
        raise UserError(f"--explanations: {path} is not JSON Lines or a JSON array ({exc})") from None


def _csv_records(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    with open(path, newline="", encoding="utf-8") as f:
        dialect = "excel-tab" if _suffix(path) == ".tsv" else "excel"
        for number, record in enumerate(csv.DictReader(f, dialect=dialect), start=2):
            yield f"line {number}", record


def _mapping(record: Any, path: Path, where: str) -> dict[str, Any]:
    if not isinstance(record, dict):
        raise UserError(f"--explanations: {path} {where} is a {type(record).__name__}, not an object")
    return record


def _required(record: dict[str, Any], keys: tuple[str, ...], path: Path, where: str, optional: bool = False):
    key = _first_key(record, keys)
    if key is None:
        if optional:
            return None
        raise UserError(f"--explanations: {path} {where} has no {' / '.join(keys)} field")
    return record[key]


def _first_key(record: dict[str, Any], keys: tuple[str, ...]) -> str | None:
    return next((key for key in keys if key in record), None)


def _latent(value: Any, path: Path, where: str) -> int:
    text = str(value).strip()
    if not text.isdigit():
        raise UserError(f"--explanations: {path} {where}: latent index {value!r} is not a whole number")
    return int(text)


def _batch_files(path: Path) -> list[Path]:
    """`batch-<n>.jsonl.gz` in `path`, else every `explanations/batch-<n>.jsonl.gz` below it (an export
    folder: `<modelId>/<sourceId>/explanations/`)."""
    files = list(path.glob("batch-*.jsonl.gz")) or list(path.glob("**/explanations/batch-*.jsonl.gz"))
    return sorted(files, key=lambda p: (str(p.parent), _batch_number(p.name)))


def _batch_number(name: str) -> int:
    match = re.match(r"batch-(\d+)", name)
    return int(match[1]) if match else 0


def _delphi_files(path: Path) -> list[Path]:
    inner = path / "explanations"
    folder = inner if inner.is_dir() else path
    return sorted(p for p in folder.glob("*_latent*.txt") if p.stem.rpartition("_latent")[2].isdigit())


def _suffix(path: Path) -> str:
    return path.suffix.lower()


# --- mapping and writing -------------------------------------------------------------------------------


def _split_empty(rows: list[Row]) -> tuple[list[Row], list[Row]]:
    kept = [row for row in rows if row.explanation.strip()]
    return kept, [row for row in rows if not row.explanation.strip()]


def _assign(rows: list[Row], mapper: HookpointMapper, path: Path) -> dict[str, dict[int, Row]]:
    """Hookpoint -> latent -> row; a name that does not map, or a latent explained twice, is an error."""
    result: dict[str, dict[int, Row]] = {}
    for row in rows:
        hookpoint = mapper.map(row.name)
        if hookpoint is None:
            shown = repr(row.name) if row.name else "(none given)"
            raise UserError(
                f"--explanations: {path} {row.where}: hookpoint {shown} does not map onto this config's "
                f"hookpoints ({', '.join(mapper.hookpoints)}): pass --map-hookpoint "
                f"{row.name or 'NAME'}=<hookpoint>"
            )
        latents = result.setdefault(hookpoint, {})
        if row.latent in latents:
            raise UserError(
                f"--explanations: {path}: latent {row.latent} of {hookpoint} is explained twice "
                f"({latents[row.latent].where} and {row.where}): keep one explanation per latent"
            )
        latents[row.latent] = row
    return result


def _cache_warnings(config: RunConfig, by_hookpoint: dict[str, dict[int, Row]]) -> list[str]:
    """This tool's records name the cache they were made on: another cache may mean other latents."""
    warnings = []
    for hookpoint, rows in by_hookpoint.items():
        ours = CacheReader(cache_dir(config.run_dir, hookpoint)).manifest.get("config_hash")
        theirs = {row.fields["cache"] for row in rows.values() if "cache" in row.fields} - {ours}
        if theirs:
            warnings.append(
                f"explanations of {hookpoint} were made on another cache ({', '.join(sorted(theirs))}, this "
                f"run's is {ours}): latent indices match only if the model and sparse coder are the same"
            )
    return warnings


def _set_name(name: str | None, path: Path) -> str:
    stem = path.name.split(".")[0] if path.is_file() else path.name
    cleaned = re.sub(r"[^A-Za-z0-9_-]+", "-", name or stem).strip("-")
    if not cleaned:
        raise UserError("--explanations-name: give a name made of letters, digits, - or _")
    return cleaned


def _set_config(config: RunConfig, set_dir: Path, by_hookpoint: dict[str, dict[int, Row]]) -> RunConfig:
    latents = sorted({latent for rows in by_hookpoint.values() for latent in rows})
    selection = dataclasses.replace(config.latents, indices=tuple(latents), sample=None)
    return dataclasses.replace(config, out_dir=str(set_dir), latents=selection)


def _write_set(
    config: RunConfig,
    set_config: RunConfig,
    by_hookpoint: dict[str, dict[int, Row]],
    source: dict[str, Any],
    without_explanation: int,
) -> None:
    """Every record is built (and checked) first; then the explanations folder is swapped in whole."""
    texts = {}
    for hookpoint in config.sparse_coder.hookpoints:
        rows = by_hookpoint.get(hookpoint, {})
        reader = CacheReader(cache_dir(config.run_dir, hookpoint))
        stats = reader.stats() if rows else {}
        records = [_record(hookpoint, row, reader, stats, source) for _, row in sorted(rows.items())]
        texts[f"{hookpoint}.jsonl"] = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    set_dir = set_config.run_dir
    _link_cache(config.run_dir, set_dir)
    _replace_folder(set_dir / EXPLANATIONS_DIR, texts)
    counts = {hp: len(rows) for hp, rows in by_hookpoint.items()}
    write_json_atomic(
        set_dir / IMPORT_FILE,
        {"source": source, "imported": counts, "without_explanation": without_explanation},
    )
    write_text_atomic(set_dir / CONFIG_FILE, dump_config(set_config))


def _replace_folder(folder: Path, files: dict[str, str]) -> None:
    """Make `folder` hold exactly `files` (name -> text), swapped in whole. A folder that holds them already
    (another array task imported the same file) is left as it is."""
    if _holds(folder, files):
        return
    try:
        with replacing(folder) as tmp:
            for name, text in files.items():
                (tmp / name).write_text(text, encoding="utf-8")
    except UserError:
        if not _holds(folder, files):
            raise


def _holds(folder: Path, files: dict[str, str]) -> bool:
    if not folder.is_dir() or {p.name for p in folder.iterdir()} != set(files):
        return False
    return all((folder / name).read_text(encoding="utf-8") == text for name, text in files.items())


def _link_cache(run_dir: Path, set_dir: Path) -> None:
    """`<set>/cache` -> `../../cache`, so the set reads the run's activations."""
    link = set_dir / CACHE_DIR
    set_dir.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() or link.exists():
        if link.resolve() != (run_dir / CACHE_DIR).resolve():
            raise UserError(f"{link} exists and is not a link to {run_dir / CACHE_DIR}: remove it")
        return
    try:
        os.symlink(os.path.relpath(run_dir / CACHE_DIR, set_dir), link, target_is_directory=True)
    except OSError as exc:
        raise UserError(f"cannot link {link} to the run's cache ({exc.strerror})") from None


def _record(
    hookpoint: str, row: Row, reader: CacheReader, stats: dict[str, Any], source: dict[str, Any]
) -> dict[str, Any]:
    """An explanation record in the explain stage's schema, marked with its source."""
    if not 0 <= row.latent < reader.num_latents:
        raise UserError(
            f"--explanations: {source['file']} {row.where}: latent {row.latent} is out of range: "
            f"{hookpoint} has {reader.num_latents} latents (0 to {reader.num_latents - 1})"
        )
    origin = {**source, "where": row.where, "name": row.name, "fields": row.fields}
    key = {"source": {"format": source["format"], "sha256": source["sha256"]}}
    explainer = (row.fields.get("explainer") or {}) | {"kind": "imported"}
    if "explanationModelName" in row.fields:
        explainer["model"] = row.fields["explanationModelName"]
    return {
        "latent": row.latent,
        "hookpoint": hookpoint,
        "explanation": row.explanation.strip(),
        "error": None,
        "skipped": None,
        "num_activations": int(stats["firing_count"][row.latent]),
        "max_activation": float(stats["max_activation"][row.latent]),
        "explainer": explainer,
        "answer": None,
        "examples": {"explain": [], "explain_negatives": []},
        "usage": None,
        "source": origin,
        "config_hash": config_hash(key),
        "config_key": key,
    }
