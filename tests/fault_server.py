"""A real OpenAI-compatible HTTP server on loopback that answers from a script of faults.

`FaultServer.script` holds the next answers to POST requests (then success); `models_script` those to
GET /v1/models (then 200). Actions:

- `("ok",)`: a valid (chat) completion, after `success_delay` seconds;
- `("status", code, headers, payload)`: `payload` as JSON with that status and headers;
- `("raw", code, headers, body_bytes)`: any body, e.g. HTML or truncated JSON;
- `("hang", seconds)`: answer only after `seconds` (success);
- `("slow", seconds)`: send the headers and half the body, stall `seconds`, then the rest;
- `("drop",)`: close the connection without answering.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FaultServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int = 0) -> None:
        super().__init__(("127.0.0.1", port), FaultHandler)
        self.script: list[tuple] = []
        self.models_script: list[tuple] = []
        self.calls: list[dict] = []
        self.probes = 0
        self.success_delay = 0.0
        self.active = self.max_active = 0
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def next_action(self, call: dict) -> tuple:
        with self.lock:
            self.calls.append(call)
            self.active += 1
            self.max_active = max(self.max_active, self.active)
            return self.script.pop(0) if self.script else ("ok",)

    def next_probe(self) -> tuple:
        with self.lock:
            self.probes += 1
            return self.models_script.pop(0) if self.models_script else ("status", 200, {}, {"data": []})

    def done(self) -> None:
        with self.lock:
            self.active -= 1

    def handle_error(self, request, client_address) -> None:
        """Clients that time out close their socket; the late write fails quietly."""


class FaultHandler(BaseHTTPRequestHandler):
    server: FaultServer

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self.act(self.server.next_probe(), {})

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        call = {"path": self.path, "body": body, "headers": dict(self.headers), "time": time.monotonic()}
        action = self.server.next_action(call)
        try:
            self.act(action, body)
        finally:
            self.server.done()

    def act(self, action: tuple, body: dict) -> None:
        kind = action[0]
        if kind == "drop":
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if kind == "status":
            _, status, headers, payload = action
            self.reply(status, json.dumps(payload).encode(), headers)
            return
        if kind == "raw":
            _, status, headers, data = action
            self.reply(status, data, headers)
            return
        if kind == "hang":
            time.sleep(action[1])
        data = json.dumps(success(self.path, body)).encode()
        if kind == "slow":
            self.send_head(200, len(data), {})
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            time.sleep(action[1])
            self.wfile.write(data[len(data) // 2 :])
            return
        time.sleep(self.server.success_delay)
        self.reply(200, data, {})

    def send_head(self, status: int, length: int, headers: dict) -> None:
        self.send_response(status)
        for name, value in {"Content-Type": "application/json", **headers}.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(length))
        self.end_headers()

    def reply(self, status: int, data: bytes, headers: dict | None = None) -> None:
        self.send_head(status, len(data), headers or {})
        self.wfile.write(data)

    def log_message(self, *args) -> None:
        pass


def success(path: str, body: dict) -> dict:
    """A valid answer to `body`: chat or raw completion, with logprobs and prompt logprobs when asked."""
    actual = {"logprob": -1.0, "rank": 3, "decoded_token": "a"}
    prompt_logprobs = [None, {"7": actual, "5": {"logprob": -0.5, "rank": 1, "decoded_token": "b"}}]
    if path.endswith("/chat/completions"):
        tokens = [("hel", -0.1, {"he": -2.5}), ("lo", -0.2, {"la": -3.0})]
        content = [
            {"token": t, "logprob": lp, "top_logprobs": [{"token": a, "logprob": v} for a, v in alts.items()]}
            for t, lp, alts in tokens
        ]
        usage = {"prompt_tokens": 12, "completion_tokens": 2, "prompt_tokens_details": {"cached_tokens": 8}}
        choice = {"message": {"role": "assistant", "content": "hello"}, "finish_reason": "stop"}
        choice["logprobs"] = {"content": content} if body.get("logprobs") else None
        reply = {"choices": [choice], "usage": usage}
        if "prompt_logprobs" in body:
            reply["prompt_logprobs"] = prompt_logprobs
        return reply
    choice = {"text": " world", "finish_reason": "length"}
    choice["logprobs"] = {"tokens": [" world"], "token_logprobs": [-0.3], "top_logprobs": [{" there": -1.2}]}
    if "prompt_logprobs" in body:
        choice["prompt_logprobs"] = prompt_logprobs
    return {"choices": [choice], "usage": {"prompt_tokens": 3, "completion_tokens": 1}}


@contextmanager
def serving(server: FaultServer) -> Iterator[FaultServer]:
    """Serve `server` on a background thread for the block."""
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def blackholed_port() -> Iterator[int]:
    """A loopback port whose accept queue is full, so that new connection attempts hang (dropped SYNs)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    filler = socket.create_connection(("127.0.0.1", port))
    try:
        yield port
    finally:
        filler.close()
        listener.close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
