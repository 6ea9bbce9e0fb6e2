"""Run-directory layout, atomic writes, config hashing and shard specs.

File names of the public run-directory format live here and nowhere else.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autointerp.errors import UserError

CONFIG_FILE = "config.yaml"
CACHE_DIR = "cache"
MANIFEST_FILE = "manifest.json"
TOKENS_FILE = "tokens.safetensors"
STATS_FILE = "stats.safetensors"
PARTS_DIR = "parts"
FORMAT_VERSION = 1

EXPLANATIONS_DIR = "explanations"
"""`explanations/<hookpoint>[.shard-I-of-N].jsonl`: one explanation record per latent."""
LLM_CACHE_DIR = "llm_cache"
"""The explainer's response cache, one file per task."""
SCORES_DIR = "scores"
"""`scores/<scorer>[.<control>]/<hookpoint>[.shard-I-of-N].jsonl`: one score record per latent."""
SUMMARY_JSON = "summary.json"
SUMMARY_MD = "summary.md"
REPORT_DIR = "report"
REPORT_INDEX = "index.html"
REPORT_PLOTS_DIR = "plots"
COMPARE_DIR = "compare"
COMPARE_HEATMAP = "similarity_matrix.png"
COMPARE_DISTRIBUTIONS = "explanation_similarity.png"
COMPARE_LATENT_HEATMAP = "latent_similarity_matrix.png"
TRAINING_FILE = "training.json"
IMPORTS_DIR = "imports"
"""`imports/<name>/`: a run directory of imported explanations, sharing this run's cache."""
IMPORT_FILE = "import.json"
"""Beside imported explanations: where they came from."""
EXPORT_DIR = "export"
CALIBRATION_DIR = "calibration"
"""`calibration/`: the planted coder, its two runs and `calibration.json` / `.md` / `.html`."""
"""`export/<format>/`: the run in another tool's format (`autointerp export`)."""
"""Beside a trained coder: the settings it was trained with and its FVU."""


def cache_dir(run_dir: Path, hookpoint: str) -> Path:
    """`<run>/cache/<hookpoint>/`: the hookpoint string as given is the folder name."""
    return run_dir / CACHE_DIR / hookpoint


def shard_file_name(start: int, end: int) -> str:
    return f"latents-{start}-{end}.safetensors"


def part_file_name(start: int, end: int) -> str:
    """A cache work unit of sequences [start, end), under `cache/<hookpoint>/parts/`."""
    return f"part-{start}-{end}.safetensors"


def records_file_name(hookpoint: str, suffix: str = "") -> str:
    """`<hookpoint>.jsonl`, or with a shard suffix `<hookpoint>.shard-I-of-N.jsonl` (explanations, scores)."""
    return f"{hookpoint}{suffix}.jsonl"


def records_shards_glob(hookpoint: str) -> str:
    """The pattern of a hookpoint's shard record files."""
    return records_file_name(hookpoint, ".shard-*-of-*")


def explain_stats_file_name(suffix: str = "") -> str:
    """`explanations/stats.json`, or `stats.shard-I-of-N.json` for an array task."""
    return f"stats{suffix}.json"


def compare_partners_file(name: str) -> str:
    """`compare/partners-<run name>.txt`: a run's latents to explain, a `latents.indices_file`."""
    return f"partners-{name}.txt"


def response_cache_file_name(task: str) -> str:
    """`llm_cache/<task>.jsonl`: `whole` or `shard-I-of-N`, so no two tasks append to one file."""
    return f"{task}.jsonl"


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success fsync it and rename it into place.

    A reader never sees a partial file under the final name; on error the temporary file is removed.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def atomic_dir(target: Path) -> Iterator[Path]:
    """Yield a temporary folder beside `target`; rename it into place when the block succeeds.

    If another process finished the same folder first, theirs is kept.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield tmp
        try:
            os.replace(tmp, target)
        except OSError:
            if not target.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_text_atomic(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json_atomic(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2) + "\n")


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def config_hash(key: Mapping[str, Any]) -> str:
    """Stable hash of the config values that define an artifact."""
    canonical = json.dumps(key, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def refuse_stale(
    found: Mapping[str, Any] | None, key: Mapping[str, Any], what: str, fix: str, ignore: Iterable[str] = ()
) -> None:
    """Raise when an artefact was made with another config than `key`, naming the keys that changed.

    `found` is the artefact's recorded key (None: unknown, e.g. an older format); `ignore` lists keys whose
    change leaves the artefact valid; `fix` says what to do about it.
    """
    if found is not None and config_hash(found) == config_hash(key):
        return
    changed = [k for k in changed_keys(found or {}, key) if k not in set(ignore)]
    if found is not None and not changed:
        return
    listed = ", ".join(changed) if found else "format"
    raise UserError(f"{what}: made with a different config ({listed} changed); {fix}")


def changed_keys(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested mappings."""
    changed = []
    for key in sorted(set(old) | set(new)):
        dotted = f"{prefix}.{key}" if prefix else str(key)
        a, b = old.get(key), new.get(key)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            changed += changed_keys(a, b, dotted)
        elif a != b:
            changed.append(dotted)
    return changed


@dataclass(frozen=True)
class ShardSpec:
    """Task `index` of `count` (0-based), as in `--shard I/N` or a SLURM array."""

    index: int = 0
    count: int = 1

    @property
    def is_whole(self) -> bool:
        return self.count == 1

    @property
    def suffix(self) -> str:
        """`""` for the whole job, else `.shard-I-of-N`: added to the names of files this task writes."""
        return "" if self.is_whole else f".shard-{self.index}-of-{self.count}"

    @property
    def name(self) -> str:
        """`whole` or `shard-I-of-N`."""
        return self.suffix.lstrip(".") or "whole"

    def owns(self, item: int) -> bool:
        return item % self.count == self.index

    @staticmethod
    def parse(text: str) -> ShardSpec:
        index, sep, count = text.partition("/")
        if not sep or not index.strip().isdigit() or not count.strip().isdigit():
            raise UserError(f"--shard: expected I/N with 0 <= I < N (e.g. 0/4), got {text!r}")
        spec = ShardSpec(int(index), int(count))
        if spec.count < 1 or spec.index >= spec.count:
            raise UserError(f"--shard: expected I/N with 0 <= I < N (e.g. 0/4), got {text!r}")
        return spec

    @staticmethod
    def from_env(environ: Mapping[str, str] = os.environ) -> ShardSpec:
        """From SLURM_ARRAY_TASK_ID / SLURM_ARRAY_TASK_COUNT (offset by SLURM_ARRAY_TASK_MIN)."""
        if "SLURM_ARRAY_TASK_ID" not in environ or "SLURM_ARRAY_TASK_COUNT" not in environ:
            return ShardSpec()
        try:
            task = int(environ["SLURM_ARRAY_TASK_ID"]) - int(environ.get("SLURM_ARRAY_TASK_MIN", "0"))
            count = int(environ["SLURM_ARRAY_TASK_COUNT"])
        except ValueError:
            raise UserError("SLURM_ARRAY_TASK_ID/SLURM_ARRAY_TASK_COUNT are not integers") from None
        return ShardSpec.parse(f"{task}/{count}")


WHOLE = ShardSpec()
"""The whole job: no sharding."""


_TAIL_CHUNK = 1 << 16


def drop_torn_tail(path: Path) -> None:
    """Cut a partial last line (from a killed writer) so the next append starts on a fresh line."""
    if not path.is_file():
        return
    with path.open("rb+") as file:
        end = file.seek(0, os.SEEK_END)
        position = end
        while position > 0:
            start = max(0, position - _TAIL_CHUNK)
            file.seek(start)
            chunk = file.read(position - start)
            if position == end and chunk.endswith(b"\n"):
                return
            newline = chunk.rfind(b"\n")
            if newline >= 0:
                file.truncate(start + newline + 1)
                return
            position = start
        file.truncate(0)
