"""The async client interface, and running many requests through it with bounded concurrency."""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Iterable

from autointerp.llm.types import LLMError, LLMFatalError, LLMRequest, LLMResponse


class LLMClient(ABC):
    """One LLM behind one async call. Backends: vllm, openai, transformers."""

    model: str
    """The model's name as recorded in outputs and response-cache keys."""
    max_in_flight: int = 1024
    """How many requests callers may keep in flight (the backend batches or throttles below that)."""

    @abstractmethod
    async def generate(self, request: LLMRequest) -> LLMResponse:
        """Answer one request; raises LLMError when it fails for good, LLMFatalError when nothing can work."""

    @abstractmethod
    async def aclose(self) -> None:
        """Release the engine, server connections or model."""


async def run_requests(
    client: LLMClient, requests: Iterable[LLMRequest]
) -> AsyncIterator[tuple[int, LLMResponse | LLMError]]:
    """Submit every request (at most `client.max_in_flight` at once); yield `(index, result)` as they finish.

    A request that fails yields its LLMError instead of a response; LLMFatalError propagates.
    """
    queue = iter(enumerate(requests))
    pending: set[asyncio.Task] = set()

    def submit() -> bool:
        item = next(queue, None)
        if item is None:
            return False
        index, request = item
        pending.add(asyncio.ensure_future(_indexed(client, index, request)))
        return True

    while len(pending) < client.max_in_flight and submit():
        pass
    try:
        while pending:
            done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                pending.discard(task)
                yield task.result()
                submit()
    finally:
        for task in pending:
            task.cancel()


async def _indexed(client: LLMClient, index: int, request: LLMRequest) -> tuple[int, LLMResponse | LLMError]:
    try:
        return index, await client.generate(request)
    except LLMFatalError:
        raise
    except LLMError as exc:
        return index, exc
