"""A local transformers model behind the LLMClient interface, for small models and tests.

Requests are queued and one worker task answers them in left-padded batches of the same sampling params;
`generate` runs in a thread so the event loop stays free. Token texts in logprobs are decoded like vLLM:
`convert_ids_to_tokens`, then `convert_tokens_to_string` on each token alone.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

from autointerp.config import LLMSettings
from autointerp.llm.base import LLMClient
from autointerp.llm.chat import encode_prompt
from autointerp.llm.types import LLMError, LLMRequest, LLMResponse, SamplingParams, TokenLogprob
from autointerp.modelpath import resolve_model_path

BATCH_SIZE = 16


@dataclass(frozen=True)
class _Item:
    params: SamplingParams
    prompt: list[int]
    future: asyncio.Future


class TransformersClient(LLMClient):
    """Float32 on CPU, bfloat16 on CUDA; greedy at temperature 0, else sampling (seeded if `seed` is set)."""

    max_in_flight = 256

    def __init__(self, settings: LLMSettings, batch_size: int = BATCH_SIZE):
        if not settings.model:
            raise settings.missing("model", "a hub id, local folder, .gguf file or package:NAME")
        path = resolve_model_path(settings.model, settings.key("model"))
        self.model: str = settings.model
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        dtype = torch.bfloat16 if self.device.type == "cuda" else torch.float32
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.lm = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(self.device).eval()
        eos = self.lm.generation_config.eos_token_id
        self._eos_ids = _as_list(self.tokenizer.eos_token_id if eos is None else eos)
        self._pad_id = _first_not_none(self.tokenizer.pad_token_id, *self._eos_ids, 0)
        self._context = getattr(self.lm.config.get_text_config(), "max_position_embeddings", None)
        self._batch_size = batch_size
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue[_Item] = asyncio.Queue()
        self._worker: asyncio.Task | None = None
        self._futures: set[asyncio.Future] = set()

    async def generate(self, request: LLMRequest) -> LLMResponse:
        prompt = encode_prompt(self.tokenizer, request)
        if self._context is not None and len(prompt) + request.params.max_tokens > self._context:
            raise LLMError(
                f"prompt of {len(prompt)} tokens plus max_tokens {request.params.max_tokens} exceeds "
                f"the model's context of {self._context} tokens",
                kind="rejected",
            )
        future = asyncio.get_running_loop().create_future()
        self._futures.add(future)
        try:
            self._start_worker().put_nowait(_Item(request.params, prompt, future))
            return await future
        finally:
            self._futures.discard(future)

    async def aclose(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
        self._worker = self._loop = None
        for future in self._futures:
            if not future.done():
                future.set_exception(LLMError("the transformers client was closed"))
        if self.device.type == "cuda":
            self.lm.to("cpu")
            torch.cuda.empty_cache()

    def _start_worker(self) -> asyncio.Queue[_Item]:
        """The request queue of the running event loop's worker (a new loop gets a new worker)."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._loop, self._queue = loop, asyncio.Queue()
            self._worker = loop.create_task(self._serve())
        return self._queue

    async def _serve(self) -> None:
        while True:
            items = [await self._queue.get()]
            while len(items) < self._batch_size and not self._queue.empty():
                items.append(self._queue.get_nowait())
            groups: dict[SamplingParams, list[_Item]] = {}
            for item in items:
                groups.setdefault(item.params, []).append(item)
            for params, group in groups.items():
                await self._answer(params, [item for item in group if not item.future.done()])

    async def _answer(self, params: SamplingParams, items: list[_Item]) -> None:
        if not items:
            return
        try:
            responses = await asyncio.to_thread(self.generate_batch, [item.prompt for item in items], params)
        except Exception as exc:
            for item in items:
                if not item.future.done():
                    item.future.set_exception(exc)
            return
        for item, response in zip(items, responses, strict=True):
            if not item.future.done():
                item.future.set_result(response)

    @torch.inference_mode()
    def generate_batch(self, prompts: list[list[int]], params: SamplingParams) -> list[LLMResponse]:
        """Answer token-id prompts with the same params in one left-padded `generate` call (blocking)."""
        start = time.perf_counter()
        input_ids, mask = self._left_pad(prompts)
        output = self._run_generate(input_ids, mask, params)
        completions = output.sequences[:, input_ids.shape[1] :].tolist()
        step_logprobs = None
        if params.logprobs is not None:
            step_logprobs = torch.stack(output.logits, dim=1).float().log_softmax(-1)
        responses = []
        for row, (prompt, completion) in enumerate(zip(prompts, completions, strict=True)):
            row_logprobs = None if step_logprobs is None else step_logprobs[row]
            response = self._response(completion, row_logprobs, params)
            if params.prompt_logprobs is not None:
                response.prompt_logprobs = self._prompt_logprobs(prompt, params.prompt_logprobs)
            response.prompt_tokens = len(prompt)
            responses.append(response)
        latency = time.perf_counter() - start
        for response in responses:
            response.latency = latency
        return responses

    def _left_pad(self, prompts: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(p) for p in prompts)
        input_ids = torch.tensor([[self._pad_id] * (width - len(p)) + p for p in prompts], device=self.device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=self.device)
        return input_ids, mask

    def _run_generate(self, input_ids: torch.Tensor, mask: torch.Tensor, params: SamplingParams) -> Any:
        kwargs = dict(
            input_ids=input_ids,
            attention_mask=mask,
            generation_config=self._generation_config(params),
            tokenizer=self.tokenizer if params.stop else None,
        )
        if params.seed is None:
            return self.lm.generate(**kwargs)
        devices = [torch.cuda.current_device()] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(params.seed)
            return self.lm.generate(**kwargs)

    def _generation_config(self, params: SamplingParams) -> GenerationConfig:
        """Every sampling knob set explicitly, so the model's own generation defaults never leak in."""
        sampling = params.temperature > 0
        return GenerationConfig(
            max_new_tokens=params.max_tokens,
            do_sample=sampling,
            temperature=params.temperature if sampling else 1.0,
            top_k=0,
            top_p=1.0,
            repetition_penalty=1.0,
            stop_strings=list(params.stop) or None,
            eos_token_id=self._eos_ids,
            pad_token_id=self._pad_id,
            return_dict_in_generate=True,
            output_logits=params.logprobs is not None,
        )

    def _response(
        self, completion: list[int], logprobs: torch.Tensor | None, params: SamplingParams
    ) -> LLMResponse:
        length, stopped = self._completion_length(completion, params.stop)
        tokens = completion[:length]
        text = self.tokenizer.decode(tokens, skip_special_tokens=True)
        cut = _stop_index(text, params.stop)
        return LLMResponse(
            text=text if cut is None else text[:cut],
            logprobs=None
            if logprobs is None
            else self._token_logprobs(tokens, logprobs, params.logprobs or 0),
            completion_tokens=length,
            finish_reason="stop" if stopped else "length",
        )

    def _completion_length(self, completion: list[int], stop: tuple[str, ...]) -> tuple[int, bool]:
        """Tokens up to and including EOS or the one completing a stop string; whether it stopped."""
        for index, token in enumerate(completion):
            if token in self._eos_ids:
                return index + 1, True
            if stop and _stop_index(self.tokenizer.decode(completion[: index + 1]), stop) is not None:
                return index + 1, True
        return len(completion), False

    def _prompt_logprobs(self, prompt: list[int], k: int) -> list[TokenLogprob | None]:
        """Logprob of each prompt token given the ones before (one unpadded forward pass), plus top-k."""
        ids = torch.tensor([prompt], device=self.device)
        logprobs = self.lm(input_ids=ids).logits[0, :-1].float().log_softmax(-1)
        return [None, *self._token_logprobs(prompt[1:], logprobs, k)]

    def _token_logprobs(self, tokens: list[int], logprobs: torch.Tensor, k: int) -> list[TokenLogprob]:
        """`logprobs[i]` is the distribution that gave `tokens[i]`; `top` holds the token and the top k."""
        logprobs = logprobs[: len(tokens)]
        chosen = logprobs[torch.arange(len(tokens)), torch.tensor(tokens, device=logprobs.device)].tolist()
        top_values, top_ids = logprobs.topk(k, dim=-1)
        result = []
        for piece, logprob, values, ids in zip(
            self._pieces(tokens), chosen, top_values.tolist(), top_ids.tolist(), strict=True
        ):
            top = dict(zip(self._pieces(ids), values, strict=True))
            result.append(TokenLogprob(token=piece, logprob=logprob, top={**top, piece: logprob}))
        return result

    def _pieces(self, ids: list[int]) -> list[str]:
        tokens = self.tokenizer.convert_ids_to_tokens(ids)
        return [self.tokenizer.convert_tokens_to_string([token]) for token in tokens]


def _stop_index(text: str, stop: tuple[str, ...]) -> int | None:
    """Where the earliest stop string starts in `text`; None when it holds none."""
    found = [i for i in (text.find(s) for s in stop) if i >= 0]
    return min(found) if found else None


def _as_list(value: int | list[int] | None) -> list[int]:
    if value is None:
        return []
    return [value] if isinstance(value, int) else list(value)


def _first_not_none(*values: int | None) -> int:
    return next(v for v in values if v is not None)
