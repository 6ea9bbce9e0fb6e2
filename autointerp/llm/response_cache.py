"""LLM responses cached on disk by request hash, so a crashed or rerun stage replays instead of paying again.

Each writer (one per SLURM array task, or the whole run) appends to its own `<shard>.jsonl` and reads only
that file: a task's memory does not grow with the other tasks' answers, and what it holds is an index of
where each answer starts in its file (~200 bytes a key), not the answers. A put is flushed at once (it
survives `kill -9`) and fsynced every `sync_every` puts (it survives a node crash up to the last few):
fsync costs ~4 ms, which would throttle thousands of cached answers per second.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import IO

from autointerp.llm.base import LLMClient
from autointerp.llm.types import LLMRequest, LLMResponse
from autointerp.records import lock_exclusively
from autointerp.rundir import drop_torn_tail, response_cache_file_name

SYNC_EVERY = 64
_KEY = re.compile(rb'\{"key": "([^"\\]*)"')


class ResponseCache:
    """Append-only JSONL store of `key -> LLMResponse` for one shard; a line that does not parse (a torn
    write) is a miss."""

    def __init__(self, directory: Path, shard: str, sync_every: int = SYNC_EVERY):
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / response_cache_file_name(shard)
        self._offsets = _index(self.path) if self.path.is_file() else {}
        self._reader: IO[bytes] | None = None
        self._sync_every = sync_every
        self._unsynced = 0
        self._file: IO[bytes] | None = None

    def __len__(self) -> int:
        return len(self._offsets)

    def get(self, key: str) -> LLMResponse | None:
        offset = self._offsets.get(key)
        if offset is None:
            return None
        if self._reader is None:
            self._reader = self.path.open("rb")
        self._reader.seek(offset)
        return _response(self._reader.readline(), key)

    def put(self, key: str, response: LLMResponse) -> None:
        if self._file is None:
            self._file = self._open_locked()
        offset = self._file.seek(0, os.SEEK_END)
        self._file.write((json.dumps({"key": key, "response": response.to_dict()}) + "\n").encode("utf-8"))
        self._file.flush()
        self._offsets[key] = offset
        self._unsynced += 1
        if self._unsynced >= self._sync_every:
            self.sync()

    def _open_locked(self) -> IO[bytes]:
        """Open the shard's file for appending, locked against a second writer, after any torn line."""
        file = self.path.open("ab")
        try:
            lock_exclusively(file.fileno(), self.path)
            drop_torn_tail(self.path)
        except BaseException:
            file.close()
            raise
        if self._reader is not None:  # it may hold the torn bytes just cut off in its buffer
            self._reader.close()
            self._reader = None
        return file

    def sync(self) -> None:
        """fsync what was written so far."""
        if self._file is not None and self._unsynced:
            os.fsync(self._file.fileno())
            self._unsynced = 0

    def close(self) -> None:
        self.sync()
        for handle in (self._file, self._reader):
            if handle is not None:
                handle.close()
        self._file = self._reader = None


def _index(path: Path) -> dict[str, int]:
    """Key -> offset of its (last) complete line; the key is read off the line's start where it has the
    layout `put` writes."""
    offsets: dict[str, int] = {}
    offset = 0
    with path.open("rb") as lines:
        for line in lines:
            if line.endswith(b"\n"):
                key = _line_key(line)
                if key is not None:
                    offsets[key] = offset
            offset += len(line)
    return offsets


def _line_key(line: bytes) -> str | None:
    found = _KEY.match(line)
    if found is not None:
        return found[1].decode("utf-8", errors="replace")
    try:
        record = json.loads(line)
        return str(record["key"]) if isinstance(record, dict) and "response" in record else None
    except (ValueError, KeyError, TypeError):
        return None


def _response(line: bytes, key: str) -> LLMResponse | None:
    try:
        record = json.loads(line)
        if record["key"] != key:
            return None
        return LLMResponse.from_dict(record["response"])
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


class CachedClient(LLMClient):
    """Answers a request from the cache when its key is there, else asks `client`. The key covers the
    request, the model and the `endpoint` (backend and server), so another server's answers never replay.

    Failures are not cached. `hits` and `misses` count the requests answered each way; a request whose key
    is in `refresh` is asked again (its cached answer could not be used) and its new answer cached.
    """

    def __init__(self, client: LLMClient, cache: ResponseCache, endpoint: str = ""):
        self.client = client
        self.cache = cache
        self.model = client.model
        self.identity = f"{endpoint} {client.model}".strip()
        """What answers: backend, server and model; part of every key."""
        self.max_in_flight = client.max_in_flight
        self.hits = 0
        self.misses = 0
        self.refresh: set[str] = set()

    async def generate(self, request: LLMRequest) -> LLMResponse:
        key = self.key(request)
        cached = None if key in self.refresh else self.cache.get(key)
        if cached is not None:
            self.hits += 1
            return cached
        self.misses += 1
        response = await self.client.generate(request)
        self.cache.put(key, response)
        return response

    def key(self, request: LLMRequest) -> str:
        """The request's cache key."""
        return request.key(self.identity)

    async def aclose(self) -> None:
        self.cache.close()
        await self.client.aclose()
