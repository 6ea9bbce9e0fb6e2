"""Content digests of the files a run is made from: corpus files, local model folders, coder weights.

A file's sha256 is memoised in a small JSON index keyed by its resolved path and checked against its size
and mtime, so that a large model folder is read once per run directory rather than at every stage start.
The index is a cache and nothing more: a damaged one is ignored and rebuilt, one that cannot be written is
skipped, and concurrent writers (array tasks) each replace it atomically, which costs a rehash at most.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from autointerp.rundir import CACHE_DIR, DIGESTS_FILE, read_json, write_json_atomic

BLOCK_BYTES = 4 << 20
"""Bytes read at a time while hashing."""


class Digests:
    """sha256 of files, memoised in the JSON index at `index` (None: not memoised)."""

    def __init__(self, index: Path | None = None):
        self.index = index
        self._known = self._read()
        self._computed: dict[str, dict[str, Any]] = {}

    def file(self, path: Path) -> str:
        """The sha256 of a file's content (read only when its size or mtime differ from the index's)."""
        resolved = path.resolve()
        stat = resolved.stat()  # before reading: a file changed meanwhile gets another mtime, so is rehashed
        ident = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
        entry = self._computed.get(str(resolved)) or self._known.get(str(resolved))
        if isinstance(entry, dict) and all(entry.get(k) == v for k, v in ident.items()):
            digest = entry.get("sha256")
            if isinstance(digest, str):
                return digest
        digest = sha256_file(resolved)
        self._computed[str(resolved)] = {**ident, "sha256": digest}
        self._write()
        return digest

    def named(self, paths: Iterable[Path]) -> dict[str, str]:
        """File name -> sha256, for files of one folder."""
        return {path.name: self.file(path) for path in paths}

    def _read(self) -> dict[str, Any]:
        if self.index is None:
            return {}
        try:
            entries = read_json(self.index)
        except (OSError, ValueError):
            return {}
        return entries if isinstance(entries, dict) else {}

    def _write(self) -> None:
        """Merge this process's digests into the index on disk; an index that cannot be written is skipped."""
        if self.index is None:
            return
        try:
            write_json_atomic(self.index, self._read() | self._computed)
        except OSError:
            pass


def run_digests(run_dir: Path) -> Digests:
    """The digests memoised for one run directory, in `cache/digests.json`."""
    return Digests(run_dir / CACHE_DIR / DIGESTS_FILE)


def sha256_file(path: Path) -> str:
    """The sha256 of a file, read in blocks of `BLOCK_BYTES`."""
    digest = hashlib.sha256()
    buffer = bytearray(BLOCK_BYTES)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as f:
        while read := f.readinto(buffer):
            digest.update(view[:read])
    return digest.hexdigest()
