"""The OpenAI wire format: request bodies, strict parsing of answers and error bodies, rate-limit headers.

Parsing never trusts the server: every field is checked for its type, and anything unexpected raises
`MalformedAnswer` (a ValueError) naming the field, so a broken proxy costs one request, not the stage.
"""

from __future__ import annotations

import email.utils
import importlib
import json
import math
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from types import ModuleType
from typing import Any

from autointerp.llm.types import LLMRequest, LLMResponse, TokenLogprob

MESSAGE_CHARS = 300


def _orjson() -> ModuleType | None:
    try:
        return importlib.import_module("orjson")
    except ImportError:
        return None


_ORJSON = _orjson()
"""orjson when it is installed (an optional speed-up), else None: the standard library's json is used."""


def dump_json(value: Any) -> bytes:
    """`value` as a JSON request body."""
    return _ORJSON.dumps(value) if _ORJSON else json.dumps(value).encode()


def read_json(body: bytes) -> Any:
    """The JSON value of an answer's body, or None when it is not JSON.

    What orjson refuses but the standard library reads (NaN, Infinity, a BOM, lone surrogates, UTF-16) is
    read all the same, so only integers beyond 64 bits depend on whether orjson is installed (it reads
    them as floats). Nesting too deep to read is not JSON either.
    """
    if _ORJSON:
        try:
            return _ORJSON.loads(body)
        except ValueError:
            pass
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        return None


class MalformedAnswer(ValueError):
    """A 200 answer whose body does not have the shape of a (chat) completion."""


def request_payload(model: str, request: LLMRequest) -> tuple[str, dict[str, Any]]:
    """The endpoint path and JSON body for `request` (chat or raw completion)."""
    params = request.params
    body: dict[str, Any] = {
        "model": model,
        "temperature": params.temperature,
        "max_tokens": params.max_tokens,
    }
    if params.stop:
        body["stop"] = list(params.stop)
    if params.seed is not None:
        body["seed"] = params.seed
    if params.prompt_logprobs is not None:
        body["prompt_logprobs"] = params.prompt_logprobs  # vLLM extension
    if request.raw:
        body["prompt"] = request.messages[0].content
        if params.logprobs is not None:
            body["logprobs"] = params.logprobs
        return "/completions", body
    body["messages"] = [{"role": m.role, "content": m.content} for m in request.messages]
    if request.messages[-1].role == "assistant":  # a prefill to continue (vLLM extension)
        body.update(continue_final_message=True, add_generation_prompt=False)
    if params.logprobs is not None:
        body.update(logprobs=True, top_logprobs=params.logprobs)
    return "/chat/completions", body


def parse_response(data: Any, request: LLMRequest, latency: float) -> LLMResponse:
    """An LLMResponse from a (chat) completion body; `latency` is that of the successful attempt.

    Raises MalformedAnswer when the body is not a completion of the expected shape.
    """
    data = _object(data, "the answer")
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices:
        raise MalformedAnswer(f"'choices' must be a non-empty list, got {_kind(choices)}")
    choice = _object(choices[0], "choices[0]")
    usage = _object(data.get("usage") or {}, "usage")
    details = _object(usage.get("prompt_tokens_details") or {}, "usage.prompt_tokens_details")
    if request.raw:
        text = _text(choice.get("text"), "choices[0].text")
        logprobs = _completion_logprobs(choice.get("logprobs"))
    else:
        message = _object(choice.get("message") or {}, "choices[0].message")
        text = _text(message.get("content"), "choices[0].message.content")
        logprobs = _chat_logprobs(choice.get("logprobs"))
    prompt_logprobs = choice.get("prompt_logprobs", data.get("prompt_logprobs"))
    finish_reason = choice.get("finish_reason")
    if finish_reason is not None and not isinstance(finish_reason, str):
        raise MalformedAnswer(f"'choices[0].finish_reason' must be a string, got {_kind(finish_reason)}")
    return LLMResponse(
        text=text,
        logprobs=logprobs if request.params.logprobs is not None else None,
        prompt_logprobs=None if prompt_logprobs is None else _prompt_logprobs(prompt_logprobs),
        prompt_tokens=_count(usage, "prompt_tokens"),
        cached_tokens=_count(details, "cached_tokens"),
        completion_tokens=_count(usage, "completion_tokens"),
        latency=latency,
        finish_reason=finish_reason,
    )


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise MalformedAnswer(f"{where!r} must be an object, got {_kind(value)}")
    return value


def _list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise MalformedAnswer(f"{where!r} must be a list, got {_kind(value)}")
    return value


def _text(value: Any, where: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise MalformedAnswer(f"{where!r} must be a string, got {_kind(value)}")
    return value


def _count(usage: dict[str, Any], key: str) -> int:
    value = usage.get(key)
    if value is None:
        return 0
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise MalformedAnswer(f"'usage.{key}' must be a count, got {value!r}")
    return value


def _number(value: Any, where: str) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or math.isnan(value):
        raise MalformedAnswer(f"{where!r} must be a number, got {_kind(value)}")
    return float(value)


def _chat_logprobs(data: Any) -> list[TokenLogprob] | None:
    if not data or _object(data, "choices[0].logprobs").get("content") is None:
        return None
    items = _list(data["content"], "choices[0].logprobs.content")
    logprobs = []
    for i, item in enumerate(items):
        where = f"choices[0].logprobs.content[{i}]"
        item = _object(item, where)
        alternatives = {}
        for top in _list(item.get("top_logprobs") or [], f"{where}.top_logprobs"):
            top = _object(top, f"{where}.top_logprobs[]")
            alternatives[_text(top.get("token"), f"{where}.top_logprobs[].token")] = _number(
                top.get("logprob"), f"{where}.top_logprobs[].logprob"
            )
        token = _text(item.get("token"), f"{where}.token")
        logprobs.append(_token_logprob(token, _number(item.get("logprob"), f"{where}.logprob"), alternatives))
    return logprobs


def _completion_logprobs(data: Any) -> list[TokenLogprob] | None:
    if not data or _object(data, "choices[0].logprobs").get("tokens") is None:
        return None
    tokens = _list(data["tokens"], "choices[0].logprobs.tokens")
    values = _list(data.get("token_logprobs"), "choices[0].logprobs.token_logprobs")
    tops = _list(data.get("top_logprobs") or [None] * len(tokens), "choices[0].logprobs.top_logprobs")
    if not len(tokens) == len(values) == len(tops):
        raise MalformedAnswer("'choices[0].logprobs' lists of different lengths")
    logprobs = []
    for token, value, top in zip(tokens, values, tops, strict=True):
        top = _object(top or {}, "choices[0].logprobs.top_logprobs[]")
        alternatives = {
            _text(k, "top_logprobs key"): _number(v, "top_logprobs value") for k, v in top.items()
        }
        where = "choices[0].logprobs"
        logprobs.append(
            _token_logprob(_text(token, f"{where}.tokens[]"), _number(value, where), alternatives)
        )
    return logprobs


def _prompt_logprobs(data: Any) -> list[TokenLogprob | None]:
    return [_vllm_logprob(entry) for entry in _list(data, "prompt_logprobs")]


def _vllm_logprob(entry: Any) -> TokenLogprob | None:
    """A vLLM prompt-logprob entry `{token_id: {logprob, rank, decoded_token}}`, real token first."""
    if entry is None:
        return None
    items = [_object(item, "prompt_logprobs[][]") for item in _object(entry, "prompt_logprobs[]").values()]
    if not items:
        raise MalformedAnswer("'prompt_logprobs[]' is an empty object")
    top = {
        _text(item.get("decoded_token"), "decoded_token"): _number(item.get("logprob"), "logprob")
        for item in items
    }
    first = items[0]
    return _token_logprob(
        _text(first.get("decoded_token"), "decoded_token"), _number(first.get("logprob"), "logprob"), top
    )


def _token_logprob(token: str, logprob: float, top: dict[str, float]) -> TokenLogprob:
    """The chosen token is always among the alternatives, as with the vLLM and transformers backends."""
    return TokenLogprob(token=token, logprob=logprob, top={**top, token: top.get(token, logprob)})


@dataclass(frozen=True)
class ServerError:
    """What an error body says: its message on one line, and its `code`/`type` fields when present."""

    message: str
    code: str = ""
    type: str = ""

    @property
    def status(self) -> int | None:
        """An HTTP-like status embedded in the body (`"code": 502` from proxies), if any."""
        return int(self.code) if self.code.isdigit() and 100 <= int(self.code) <= 599 else None


def server_error(data: Any, text: str) -> ServerError:
    """The error of an OpenAI, vLLM, llama.cpp or proxy error body (`text` when it is not JSON)."""
    message: Any = text
    code = kind = ""
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict):
            message = error.get("message") or error
            code, kind = str(error.get("code") or ""), str(error.get("type") or "")
        elif error:
            message = error
        else:
            message = data.get("message") or data
        code = code or str(data.get("code") or data.get("status") or "")
    return ServerError(one_line(str(message)), code, kind)


def one_line(text: str) -> str:
    """`text` on one line, cut to MESSAGE_CHARS characters."""
    line = " ".join(text.split())
    return line if len(line) <= MESSAGE_CHARS else line[: MESSAGE_CHARS - 3] + "..."


def _plain_seconds(value: str) -> float | None:
    """A header value that is a plain number of seconds, clamped at 0; None if it is not a finite number."""
    try:
        seconds = float(value)
    except ValueError:
        return None
    return max(0.0, seconds) if math.isfinite(seconds) else None


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (delay in seconds or an HTTP date); None if absent or bad."""
    if not value:
        return None
    if (seconds := _plain_seconds(value)) is not None:
        return seconds
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")


def parse_reset_duration(value: str | None) -> float | None:
    """Seconds from an `x-ratelimit-reset-*` header: `1s`, `6m0s`, `20ms`, `1h2m3.5s` or plain seconds."""
    if not value:
        return None
    value = value.strip()
    if (seconds := _plain_seconds(value)) is not None:
        return seconds
    parts = _DURATION.findall(value)
    if not parts or "".join(number + unit for number, unit in parts) != value:
        return None
    scale = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    return sum(float(number) * scale[unit] for number, unit in parts)
