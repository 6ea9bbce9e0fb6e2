"""An OpenAI-compatible chat-completions server on loopback that answers at once, for measuring what the
pipeline itself costs per request.

A request that asks for `top_logprobs` (a scorer prompt) gets the single token `1` with top logprobs for
`1` and `0`; any other chat request (an explainer prompt) gets one `[EXPLANATION]: ...` line. Answers are
fixed byte strings; the request body is not parsed, only searched for `"top_logprobs"`. HTTP/1.1 keep-alive,
one asyncio protocol per connection, so one core serves thousands of requests a second.

`GET /stats` answers `{"explain": N, "score": N, "cpu_s": S}` (requests served by kind, and this process's
CPU seconds); `GET /sample/<kind>` the first request body of that kind as it was received.

    python scripts/instant_llm.py --port 8123
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

EXPLANATION = "[EXPLANATION]: the token 'def' at the start of a Python function definition"
USAGE = {"prompt_tokens": 0, "completion_tokens": 1, "total_tokens": 1}


def _body(choice: dict) -> bytes:
    answer = {"id": "instant", "object": "chat.completion", "model": "instant", "choices": [choice]}
    return json.dumps({**answer, "usage": USAGE}).encode()


SCORE_ANSWER = _body(
    {
        "index": 0,
        "message": {"role": "assistant", "content": "1"},
        "finish_reason": "length",
        "logprobs": {
            "content": [
                {
                    "token": "1",
                    "logprob": -0.35667,
                    "top_logprobs": [
                        {"token": "1", "logprob": -0.35667},
                        {"token": "0", "logprob": -1.20397},
                    ],
                }
            ]
        },
    }
)
EXPLAIN_ANSWER = _body(
    {"index": 0, "message": {"role": "assistant", "content": EXPLANATION}, "finish_reason": "stop"}
)


class Counters:
    def __init__(self) -> None:
        self.served = {"explain": 0, "score": 0}
        self.samples: dict[str, bytes] = {}


class InstantProtocol(asyncio.Protocol):
    """Parses pipelined HTTP/1.1 requests out of the byte stream and answers each at once."""

    def __init__(self, counters: Counters) -> None:
        self.counters = counters
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            head_end = self.buffer.find(b"\r\n\r\n")
            if head_end < 0:
                return
            head = self.buffer[:head_end].decode("latin-1")
            length = 0
            for line in head.split("\r\n")[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value.strip())
            end = head_end + 4 + length
            if len(self.buffer) < end:
                return
            body, self.buffer = self.buffer[head_end + 4 : end], self.buffer[end:]
            self.answer(head.split(" ", 2), body)

    def answer(self, request_line: list[str], body: bytes) -> None:
        method, path = request_line[0], request_line[1]
        if method == "GET":
            payload = self.get(path)
            status = "200 OK" if payload is not None else "404 Not Found"
            self.send(status, payload or b"{}")
            return
        kind = "score" if b'"top_logprobs"' in body else "explain"
        self.counters.served[kind] += 1
        self.counters.samples.setdefault(kind, body)
        self.send("200 OK", SCORE_ANSWER if kind == "score" else EXPLAIN_ANSWER)

    def get(self, path: str) -> bytes | None:
        if path.endswith("/stats"):
            return json.dumps({**self.counters.served, "cpu_s": time.process_time()}).encode()
        if "/sample/" in path:
            return self.counters.samples.get(path.rsplit("/", 1)[1])
        if path.endswith("/models"):
            return json.dumps({"object": "list", "data": [{"id": "instant", "object": "model"}]}).encode()
        return None

    def send(self, status: str, payload: bytes) -> None:
        assert self.transport is not None
        head = (
            f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
        )
        self.transport.write(head.encode() + payload)


async def serve(port: int) -> None:
    counters = Counters()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: InstantProtocol(counters), "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--port", type=int, required=True)
    asyncio.run(serve(parser.parse_args().port))


if __name__ == "__main__":
    main()
