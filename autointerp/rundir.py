"""Run-directory layout, atomic writes, config hashing and shard specs.

File names of the public run-directory format live here and nowhere else.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autointerp.errors import UserError

CONFIG_FILE = "config.yaml"
CACHE_DIR = "cache"
MANIFEST_FILE = "manifest.json"
DIGESTS_FILE = "digests.json"
"""`cache/digests.json`: the memoised sha256 of input files (model, corpus, coders), by path, size, mtime."""
TOKENS_FILE = "tokens.safetensors"
STATS_FILE = "stats.safetensors"
PARTS_DIR = "parts"
COMPARE_MARKER = ".autointerp-compare"
"""Marks a folder as one `autointerp compare` wrote, which a later comparison may replace."""
RUN_MARKER = ".autointerp-run"
"""Marks a folder as a run directory written by autointerp; others are never written into."""
FORMAT_VERSION = 1
_RUN_ENTRIES = ("cache", "explanations", "scores")

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
REPORT_ROWS_DIR = "rows"
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
def atomic_dir(target: Path, replace: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside `target`; fsync it and rename it into place when the block succeeds.

    If another process finished the same folder first, theirs is kept; with `replace`, an existing
    `target` is replaced instead (only once the new folder is complete, so a failure keeps the old one).
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    old = tmp.with_name(tmp.name.removesuffix(".tmp") + ".old.tmp")
    try:
        yield tmp
        _fsync_tree(tmp)
        if replace and target.exists():
            os.replace(target, old)
        try:
            os.replace(tmp, target)
        except OSError:
            if not target.is_dir():
                raise
        _fsync_dir(target.parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


def _fsync_tree(root: Path) -> None:
    """fsync every file and folder under `root`, so a renamed folder never holds empty files after a crash."""
    for folder, _, files in os.walk(root):
        for name in files:
            with open(os.path.join(folder, name), "rb") as f:
                os.fsync(f.fileno())
        _fsync_dir(Path(folder))


_UNSUPPORTED_FSYNC = (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EBADF, errno.EACCES)


def _fsync_dir(directory: Path) -> None:
    """fsync a folder's entries; file systems that cannot (some FUSE, SMB, object stores) are skipped."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError as exc:
        if exc.errno in _UNSUPPORTED_FSYNC:
            return
        raise
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in _UNSUPPORTED_FSYNC:
            raise
    finally:
        os.close(fd)


def sweep_stale_temporaries(folder: Path, older_than: float = 3600.0) -> int:
    """Remove `.<name>.*.tmp` files and folders left in `folder` by killed writers; returns how many.

    Only those untouched for `older_than` seconds go, so that a concurrent task's live ones are kept.
    """
    if not folder.is_dir():
        return 0
    removed, cutoff = 0, time.time() - older_than
    for entry in folder.iterdir():
        if not (entry.name.startswith(".") and entry.name.endswith((".tmp", ".raw"))):
            continue
        try:
            if entry.lstat().st_mtime > cutoff:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
            removed += 1
        except FileNotFoundError:
            continue
    return removed


def claim_run_dir(run_dir: Path) -> None:
    """Make sure `run_dir` is autointerp's to write: new, empty, marked, or a run directory from before the
    marker existed (then it is marked). A folder holding other files is refused."""
    marker = run_dir / RUN_MARKER
    if marker.is_file():
        return
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"out_dir: {run_dir} is a file, not a folder; set out_dir to a new or run folder")
    run_dir.mkdir(parents=True, exist_ok=True)
    entries = sorted(p.name for p in run_dir.iterdir())
    if RUN_MARKER in entries:
        return  # another task claimed it meanwhile (the marker comes before anything else)
    if entries and not _is_unmarked_run_dir(run_dir):
        shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
        raise UserError(
            f"out_dir: {run_dir} is not an autointerp run directory (it holds {shown}) and would be "
            "overwritten; set out_dir (or name) to a new or empty folder"
        )
    try:
        fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return  # another task claimed it at the same moment
    with os.fdopen(fd, "w") as f:
        json.dump({"format_version": FORMAT_VERSION, "tool": "autointerp"}, f)
        f.write("\n")


def require_run_dir(run_dir: Path) -> None:
    """A folder read as a run directory must be one (marked, or an unmarked one from an older version)."""
    if (run_dir / RUN_MARKER).is_file() or _is_unmarked_run_dir(run_dir):
        return
    raise UserError(f"{run_dir}: not an autointerp run directory (no {RUN_MARKER}); give a run's out_dir")


def _is_unmarked_run_dir(run_dir: Path) -> bool:
    """A run directory written before markers existed: a cache manifest or explanation records inside."""
    return any(run_dir.glob(f"{CACHE_DIR}/*/{MANIFEST_FILE}")) or any(run_dir.glob("explanations/*.jsonl"))


def write_text_atomic(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(path: Path, data: Any) -> None:
    """Strict JSON (NaN and infinities written as null), replaced atomically."""
    write_text_atomic(path, json.dumps(finite(data), indent=2, allow_nan=False) + "\n")


def finite(value: Any) -> Any:
    """`value` with NaN and infinities (in floats, nested dicts, lists and tuples) as None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def read_json_file(path: Path, fix: str) -> Any:
    """Parse a JSON file this tool wrote; a damaged one is a UserError naming the file and `fix`."""
    try:
        return read_json(path)
    except (ValueError, OSError) as exc:
        reason = type(exc).__name__ if isinstance(exc, OSError) else "not valid JSON"
        raise UserError(f"{path}: {reason} (damaged?); {fix}") from None


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
    if not found:
        raise UserError(f"{what}: made with a different config (format changed); {fix}")
    added = set(unrecorded_keys(found, key))
    listed = []
    if set(changed) - added:
        listed.append(f"{', '.join(k for k in changed if k not in added)} changed")
    if set(changed) & added:
        listed.append(f"{', '.join(k for k in changed if k in added)} not recorded when it was made")
    raise UserError(f"{what}: made with a different config ({'; '.join(listed)}); {fix}")


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


def unrecorded_keys(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys of `new` that `old` does not hold (keys added since `old` was recorded)."""
    found = []
    for key, value in new.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if key not in old:
            found.append(dotted)
        elif isinstance(old[key], Mapping) and isinstance(value, Mapping):
            found += unrecorded_keys(old[key], value, dotted)
    return found


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
        """From SLURM_ARRAY_TASK_ID / _COUNT, offset by _MIN and divided by _STEP (`--array=0-14:2`).

        Arrays whose ids do not map onto 0..COUNT-1 (`--array=1,5,9`), and a single resubmitted task
        (`--array=3`, which SLURM reports as an array of one), are refused: pass `--shard I/N` instead.
        """
        if "SLURM_ARRAY_TASK_ID" not in environ or "SLURM_ARRAY_TASK_COUNT" not in environ:
            return ShardSpec()
        try:
            task_id = int(environ["SLURM_ARRAY_TASK_ID"])
            offset = task_id - int(environ.get("SLURM_ARRAY_TASK_MIN", "0"))
            step = int(environ.get("SLURM_ARRAY_TASK_STEP", "1") or "1")
            count = int(environ["SLURM_ARRAY_TASK_COUNT"])
            last = int(environ["SLURM_ARRAY_TASK_MAX"]) if "SLURM_ARRAY_TASK_MAX" in environ else None
        except ValueError:
            raise UserError("SLURM_ARRAY_TASK_ID/SLURM_ARRAY_TASK_COUNT are not integers") from None
        if count == 1 and task_id != 0:
            raise UserError(
                f"--shard: this is SLURM array task {task_id} alone (a resubmitted task?); pass --shard "
                f"{task_id}/N with the N of the original array"
            )
        if (
            step < 1
            or offset % step
            or offset // step >= count
            or not _spans(task_id - offset, last, step, count)
        ):
            raise UserError(
                f"--shard: SLURM array task {task_id} does not map onto tasks 0..{count - 1} (a sparse "
                "--array list?); submit --array=0-N-1, or pass --shard I/N"
            )
        return ShardSpec(offset // step, count)


def _spans(first: int, last: int | None, step: int, count: int) -> bool:
    """Whether ids first, first+step, ..., last are exactly `count` tasks (unknown `last`: assume so)."""
    return last is None or ((last - first) % step == 0 and (last - first) // step + 1 == count)


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


@contextmanager
def replacing_dir(target: Path) -> Iterator[Path]:
    """Yield a temporary folder beside `target`; when the block succeeds it replaces `target`."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; a report is for reading
    try:
        yield tmp
        old = tmp.with_name(f"{tmp.name}.old")
        if target.exists():
            os.replace(target, old)
        os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def require_compare_dir(out: Path) -> None:
    """Refuse an existing `--out` that holds files and is not a folder `compare` wrote (it is replaced)."""
    if not out.exists():
        return
    if not out.is_dir():
        raise UserError(
            f"--out {out}: is a file; give a new or empty folder, or one `autointerp compare` wrote"
        )
    earlier = (out / "runs.csv").is_file() and (out / SUMMARY_JSON).is_file()  # made before the marker
    if (out / COMPARE_MARKER).is_file() or earlier or not any(out.iterdir()):
        return
    raise UserError(
        f"--out {out}: holds files `autointerp compare` did not write (no {COMPARE_MARKER}), and a "
        "comparison replaces its folder; give a new or empty folder"
    )
