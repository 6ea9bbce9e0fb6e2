"""Per-latent JSONL records (explanations, scores): sharded writers, merged readers, resume.

A stage writes one object per latent to `<dir>/<hookpoint>.jsonl`, or, as task I of N, to
`<dir>/<hookpoint>.shard-I-of-N.jsonl`, so no two tasks ever write the same file. Readers merge every
file of a hookpoint; a latent redone later (a retried failure) has a later record, whose `written` time
wins. Each line is flushed as soon as it is written (a kill of the process loses nothing written) and
fsynced in batches (`RecordWriter`); a torn last line (a kill mid-write) is ignored and that latent is
redone. A damaged line elsewhere (not JSON, not UTF-8, not a record with an
integer `latent`) is skipped with a warning, so its latent is redone too. Lines are ASCII (non-ASCII text
is escaped), and a writer holds an exclusive lock on its file.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import re
import time
from collections.abc import Callable, Collection, Iterator
from pathlib import Path
from typing import Any, Protocol, TypeVar

from autointerp.errors import UserError
from autointerp.rundir import (
    ShardSpec,
    drop_torn_tail,
    records_file_name,
    records_shards_glob,
    refuse_stale,
)

log = logging.getLogger(__name__)
T = TypeVar("T")


def records_file(directory: Path, hookpoint: str, shard: ShardSpec) -> Path:
    return directory / records_file_name(hookpoint, shard.suffix)


def hookpoint_files(directory: Path, hookpoint: str) -> list[Path]:
    """Every record file of a hookpoint: the whole-run file and the shard files."""
    whole = directory / records_file_name(hookpoint)
    shards = sorted(directory.glob(records_shards_glob(hookpoint)))
    return ([whole] if whole.is_file() else []) + shards


def iter_records(
    path: Path, wanted: Wanted | None = None, on_damaged: Callable[[int, float], None] | None = None
) -> Iterator[dict[str, Any]]:
    """The records of a JSONL file; a torn final line and damaged lines are skipped (with one warning).
    With `wanted(latent, written)`, lines it declines are skipped without being parsed. `on_damaged` is told
    the latent and `written` stamp of each damaged line whose start and end are intact."""
    for _, record in _iter_placed(path, wanted, on_damaged):
        yield record


def _iter_placed(
    path: Path, wanted: Wanted | None = None, on_damaged: Callable[[int, float], None] | None = None
) -> Iterator[tuple[int, dict[str, Any]]]:
    """(byte offset of its line, record) for the records of `iter_records`."""
    damaged: list[int] = []
    for number, offset, line in _complete_lines(path):
        stamp = _peek(line) if wanted is not None or on_damaged is not None else None
        if wanted is not None and stamp is not None and not wanted(stamp[0], stamp[1]):
            continue
        record = _parse_line(line)
        if record is None:
            if line.strip():
                damaged.append(number)
                if on_damaged is not None and stamp is not None:
                    on_damaged(stamp[0], stamp[1])
            continue
        if wanted is None or wanted(record["latent"], record.get("written") or 0):
            yield offset, record
    if damaged:
        log.warning(
            "%s: skipped %d damaged line(s) (first: line %d); their latents are redone on the next run",
            path,
            len(damaged),
            damaged[0],
        )


Wanted = Callable[[int, float], bool]
"""Whether a record is wanted, from its latent and `written` stamp."""


def iter_stamps(path: Path) -> Iterator[tuple[int, float, str | None]]:
    """(latent, written, config_hash) of each record of a file, read off the line where it has the layout
    `RecordWriter` writes (the whole line is parsed otherwise); damaged lines are skipped."""
    for _, _, line in _complete_lines(path):
        stamp = _peek(line)
        if stamp is None:
            record = _parse_line(line)
            if record is None:
                continue
            stamp = (record["latent"], record.get("written") or 0, record.get("config_hash"))
        yield stamp


def _complete_lines(path: Path) -> Iterator[tuple[int, int, bytes]]:
    """(line number, byte offset, line) of each complete line."""
    offset = 0
    with open(path, "rb") as f:
        for number, line in enumerate(f, start=1):
            if not line.endswith(b"\n"):
                return  # torn by a kill mid-write: that latent is redone
            yield number, offset, line
            offset += len(line)


_HEAD = re.compile(rb'\{"latent":(\d+),')
_TAIL = re.compile(rb',"written":(\d+(?:\.\d+)?)\}\n\Z')
_HASH_KEY = b'"config_hash":"'
_HASH_VALUE = re.compile(rb'([0-9a-f]*)"')


def _peek(line: bytes) -> tuple[int, float, str | None] | None:
    """(latent, written, config_hash) from a line `record_line` wrote: `latent` first, `written` last. In
    JSON text a quote inside a string is always escaped, so `"config_hash":"` can only be that key."""
    head, tail = _HEAD.match(line), _TAIL.search(line)
    at = line.find(_HASH_KEY)
    if head is None or tail is None or at < 0 or line.find(_HASH_KEY, at + 1) >= 0:
        return None
    value = _HASH_VALUE.match(line, at + len(_HASH_KEY))
    return None if value is None else (int(head[1]), float(tail[1]), value[1].decode())


def _parse_line(line: bytes) -> dict[str, Any] | None:
    """A record: a JSON object with a non-negative integer `latent`; None for anything else."""
    try:
        record = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(record, dict):
        return None
    latent = record.get("latent")
    if not isinstance(latent, int) or isinstance(latent, bool) or latent < 0:
        return None
    return record


def read_records(
    directory: Path,
    hookpoint: str,
    fields: tuple[str, ...] | None = None,
    project: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> dict[int, dict[str, Any]]:
    """Latent -> its latest record (by `written`; of equal ones, the first in file order), merged over the
    whole-run file and every shard file; with `fields`, only those keys (plus `latent`, `config_hash` and
    `written`) are kept, which bounds memory, and `project` adds keys computed from the full record (e.g. a
    digest of its examples).

    A latent whose latest line is damaged (its start and end intact) has no record here, so a rerun redoes
    it, as `latest_stamps` and `iter_latest` (the summary and the report) count it pending; an older record
    of it is not taken for its current one."""

    def keep(full: dict[str, Any], path: Path, offset: int) -> dict[str, Any]:
        record = full
        if fields is not None:
            record = {name: full.get(name) for name in ("latent", "config_hash", "written", *fields)}
        return record | project(full) if project is not None else record

    return _latest(directory, hookpoint, keep)


def record_places(directory: Path, hookpoint: str) -> dict[int, tuple[Path, int, float]]:
    """Latent -> (file, byte offset, `written`) of the line of the record `read_records` gives, to read it
    on demand (`read_record_at`) instead of holding every record."""
    return _latest(directory, hookpoint, lambda full, path, offset: (path, offset, full.get("written") or 0))


def read_record_at(path: Path, offset: int) -> dict[str, Any] | None:
    """The record on the line at `offset` of `path`; None when there is none (the file changed)."""
    with open(path, "rb") as f:
        f.seek(offset)
        line = f.readline()
    return _parse_line(line) if line.endswith(b"\n") else None


def _latest(directory: Path, hookpoint: str, keep: Callable[[dict[str, Any], Path, int], T]) -> dict[int, T]:
    """Latent -> `keep(record, file, offset)` of its latest record, by the rules of `read_records`."""
    kept: dict[int, T] = {}
    written: dict[int, float] = {}
    damaged: dict[int, float] = {}

    def note_damaged(latent: int, stamp: float) -> None:
        damaged[latent] = max(stamp, damaged.get(latent, stamp))

    for path in hookpoint_files(directory, hookpoint):
        for offset, full in _iter_placed(path, on_damaged=note_damaged):
            latent, stamp = int(full["latent"]), full.get("written") or 0
            if latent not in written or stamp > written[latent]:
                kept[latent], written[latent] = keep(full, path, offset), stamp
    for latent, stamp in damaged.items():
        if latent in kept and stamp > written[latent]:
            del kept[latent]
    return kept


def latest_stamps(
    directory: Path, hookpoint: str, current: Collection[str] | None = None
) -> tuple[dict[int, float], int]:
    """Latent -> the `written` stamp of its latest record, for latents whose latest record's config hash is
    one of `current` (any, when None); and how many latents' latest records were made with another config.
    Streams the files, keeping two numbers per latent (a million latents: ~100 MB)."""
    written: dict[int, float] = {}
    other: set[int] = set()
    for path in hookpoint_files(directory, hookpoint):
        for latent, stamp, record_hash in iter_stamps(path):
            if latent in written and stamp <= written[latent]:  # of equal stamps, the first
                continue
            written[latent] = stamp
            if current is None or record_hash in current:
                other.discard(latent)
            else:
                other.add(latent)
    for latent in other:
        del written[latent]
    return written, len(other)


class Stamps(Protocol):
    """Latent -> `written` stamp of the record wanted (a dict is one)."""

    def get(self, latent: int, /) -> float | None: ...

    def pop(self, latent: int, /) -> float: ...


def iter_latest(directory: Path, hookpoint: str, stamps: Stamps) -> Iterator[dict[str, Any]]:
    """The full records named by `stamps` (latent -> `written`, from `latest_stamps`), each latent once, in
    file order: one record in memory at a time; other lines are not parsed. Consumes `stamps` (each latent
    found is popped, which is how a latent is yielded once)."""

    def wanted(latent: int, written: float) -> bool:
        return stamps.get(latent) == written

    for path in hookpoint_files(directory, hookpoint):
        for record in iter_records(path, wanted):
            stamps.pop(record["latent"])
            yield record


def stale_record(directory: Path, hookpoint: str, current: Collection[str]) -> dict[str, Any] | None:
    """The first complete record of a hookpoint whose config hash is not one of `current`, if any."""
    for path in hookpoint_files(directory, hookpoint):
        for record in iter_records(path):
            if record.get("config_hash") not in current:
                return record
    return None


def check_config(
    directory: Path,
    hookpoint: str,
    records: dict[int, dict[str, Any]],
    key: dict[str, Any],
    current: Collection[str],
    what: str,
) -> None:
    """Refuse records whose config hash is not one of `current`, naming what changed against `key` (from
    the first such record's key, read again from the files)."""
    if any(r.get("config_hash") not in current for r in records.values()):
        stale = stale_record(directory, hookpoint, current) or {}
        refuse_stale(
            stale.get("config_key"), key, what, "pass --force to replace them, or set another out_dir"
        )


def remove_hookpoint(directory: Path, hookpoint: str) -> None:
    for path in hookpoint_files(directory, hookpoint):
        path.unlink(missing_ok=True)


class RecordWriter:
    """Appends records to one file under an exclusive lock of the file: each line is flushed as it is
    written (it survives a kill of the process) and fsynced with the first record written `SYNC_SECONDS`
    or more after the last fsync, and on close: a machine crash can lose the records written since the
    last fsync (about a second's worth while records come quickly), which a rerun redoes.

    A second writer of the same file (two runs of one config, a requeued task overlapping the old one) is
    refused instead of interleaving lines.
    """

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.file = open(path, "a", encoding="ascii")  # noqa: SIM115 - closed in close()
        self.synced = time.monotonic()
        try:
            lock_exclusively(self.file.fileno(), path)
            drop_torn_tail(path)
        except BaseException:
            self.file.close()
            raise

    def write(self, record: dict[str, Any]) -> None:
        """Append one record, stamped with when it was `written` (a redone latent's later record wins)."""
        stamped = {**record, "written": round(time.time(), 6)}
        self.file.write(record_line(stamped))
        self.file.flush()
        if time.monotonic() - self.synced >= SYNC_SECONDS:
            self.sync()

    def sync(self) -> None:
        """fsync what was written so far."""
        os.fsync(self.file.fileno())
        self.synced = time.monotonic()

    def close(self) -> None:
        try:
            if not self.file.closed:
                self.file.flush()
                self.sync()
        finally:
            self.file.close()

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


SYNC_SECONDS = 1.0
"""Longest time a written record waits for its fsync (an fsync per record costs ~1 ms, as much as the rest
of explaining a latent)."""


def record_line(record: dict[str, Any]) -> str:
    """A record as its JSONL line: ASCII, no spaces between items."""
    return json.dumps(record, ensure_ascii=True, separators=(",", ":")) + "\n"


def lock_exclusively(fd: int, path: Path) -> None:
    """Take an exclusive lock on an open file, or raise UserError if another process holds one.

    File systems without locks (some network mounts) are written without one.
    """
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise UserError(
            f"{path}: another autointerp process is writing this file (the same run or shard started "
            "twice?); wait for it to finish or stop it, then rerun"
        ) from None
    except OSError as exc:
        if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL):
            raise
