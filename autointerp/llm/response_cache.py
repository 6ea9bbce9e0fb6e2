"""LLM responses cached on disk by request hash, so a crashed or rerun stage replays instead of paying again.

Each writer (one per SLURM array task) appends to its own `<shard>.jsonl`; every reader loads all shards.
A put is flushed at once (it survives `kill -9`) and fsynced every `sync_every` puts (it survives a node crash
up to the last few): fsync costs ~4 ms, which would throttle thousands of cached answers per second.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import IO

from autointerp.llm.base import LLMClient
from autointerp.llm.types import LLMRequest, LLMResponse
from autointerp.records import lock_exclusively
from autointerp.rundir import drop_torn_tail, response_cache_file_name

SYNC_EVERY = 64


class ResponseCache:
    """Append-only JSONL store of `key -> LLMResponse`; a line that does not parse (torn write) is a miss."""

    def __init__(self, directory: Path, shard: str, sync_every: int = SYNC_EVERY):
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / response_cache_file_name(shard)
        self._entries: dict[str, LLMResponse] = {}
        for file in sorted(directory.glob("*.jsonl")):
            self._entries.update(_read(file))
        self._sync_every = sync_every
        self._unsynced = 0
        self._file: IO[str] | None = None

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> LLMResponse | None:
        return self._entries.get(key)

    def put(self, key: str, response: LLMResponse) -> None:
        if self._file is None:
            self._file = self._open_locked()
        self._file.write(json.dumps({"key": key, "response": response.to_dict()}) + "\n")
        self._file.flush()
        self._entries[key] = response
        self._unsynced += 1
        if self._unsynced >= self._sync_every:
            self.sync()

    def _open_locked(self) -> IO[str]:
        """Open the shard's file for appending, locked against a second writer, after any torn line."""
        file = self.path.open("a", encoding="utf-8")
        try:
            lock_exclusively(file.fileno(), self.path)
            drop_torn_tail(self.path)
        except BaseException:
            file.close()
            raise
        return file

    def sync(self) -> None:
        """fsync what was written so far."""
        if self._file is not None and self._unsynced:
            os.fsync(self._file.fileno())
            self._unsynced = 0

    def close(self) -> None:
        self.sync()
        if self._file is not None:
            self._file.close()
            self._file = None


def _read(path: Path) -> dict[str, LLMResponse]:
    entries = {}
    with path.open(encoding="utf-8", errors="replace") as lines:
        for line in lines:
            try:
                record = json.loads(line)
                entries[record["key"]] = LLMResponse.from_dict(record["response"])
            except (ValueError, KeyError, TypeError):
                continue
    return entries


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
