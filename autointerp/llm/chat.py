"""Turn an LLMRequest into the prompt text (and token ids) a local model sees; shared by local backends."""

from __future__ import annotations

from typing import Any

from autointerp.llm.types import LLMRequest, Message

TURN_SEPARATOR = "\n\n"


def render_prompt(tokenizer: Any, request: LLMRequest) -> str:
    """The prompt text for `request`.

    Raw requests are sent as `messages[0].content`. Chat requests use the tokenizer's chat template when it
    has one, else a plain rendering for base models (see `plain_prompt`). A final assistant message is a
    prefill: the model continues it instead of starting a new turn.
    """
    if request.raw:
        return request.messages[0].content
    if not has_chat_template(tokenizer):
        return plain_prompt(request.messages)
    prefill = request.messages[-1].role == "assistant"
    return tokenizer.apply_chat_template(
        [{"role": m.role, "content": m.content} for m in request.messages],
        tokenize=False,
        add_generation_prompt=not prefill,
        continue_final_message=prefill,
    )


def encode_prompt(tokenizer: Any, request: LLMRequest) -> list[int]:
    """Token ids of the rendered prompt.

    As in vLLM, special tokens (BOS) are added to raw and plain-rendered prompts but not to chat-template
    output, which carries its own.
    """
    text = render_prompt(tokenizer, request)
    add_special = request.raw or not has_chat_template(tokenizer)
    return tokenizer(text, add_special_tokens=add_special)["input_ids"]


def has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def plain_prompt(messages: tuple[Message, ...]) -> str:
    """Base-model rendering: each turn's text (system first) separated by blank lines.

    The text ends with a blank line, ready for the answer, unless the last turn is an assistant prefill.
    """
    text = TURN_SEPARATOR.join(m.content for m in messages)
    return text if messages[-1].role == "assistant" else text + TURN_SEPARATOR
