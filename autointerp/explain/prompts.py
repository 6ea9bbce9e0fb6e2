"""Explainer prompts: highlighted examples, few-shot demonstrations, default and contrastive variants."""

from __future__ import annotations

import functools
from collections.abc import Sequence

from autointerp.examples.render import ShownExample, highlight, highlight_text, one_line
from autointerp.llm.types import Message

PROMPT_VERSION = "explain-v3"

_SYSTEM = (
    'You are studying one internal feature (a "latent") of a language model.\n'
    "You will see text excerpts from the model's input. In each excerpt, the tokens where "
    "the latent is active are wrapped in << and >>.{activations}{contrast}\n"
    "Find what the highlighted tokens have in common, and what in their context makes the "
    "latent fire. Write a short, specific explanation: a phrase or one sentence, not a list "
    "of examples. Do not mention the markers or the example numbers.\n"
    "You may reason briefly first, but end your answer with exactly one line of the form:\n"
    "[EXPLANATION]: <your explanation>"
)
_ACTIVATIONS = (
    "\nAfter each excerpt, its highlighted tokens are listed with their activation strength on a 0-10 scale "
    "(10 = the strongest activation seen for this latent)."
)
_CONTRAST = (
    "\nYou will also see excerpts where the latent is NOT active. Use them to rule out explanations that are "
    "too broad."
)

# Demonstrations written for this project: (excerpts, values, non-activating excerpts, answer).
_FEW_SHOT: tuple[tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...], str], ...] = (
    (
        (
            "the forecast says heavy <<rain>> will reach the coast by Tuesday",
            "we waited under the awning until the <<downpour>> stopped",
            "a light <<drizzle>> fell all afternoon over the harbour",
            "roads were closed after the <<snow>>fall overnight",
        ),
        ("<<rain>> 9", "<<downpour>> 10", "<<drizzle>> 6", "<<snow>> 5"),
        ("the sun stayed out over the harbour all day", "she bought a new umbrella stand for the hall"),
        "Every highlighted token is a noun for water falling from the sky; rain-like words are strongest.\n"
        "[EXPLANATION]: Nouns for rain and other precipitation.",
    ),
    (
        (
            'he looked up and said, "I will be there by noon<<.">>',
            '"Nobody knows<<,">> she replied, "where it went<<.">>',
            'the sign on the door read "closed for repairs<<">> in red letters',
            '"Run<<!">> shouted the guard at the gate',
        ),
        ('<<.">> 9', '<<,">> 7, <<.">> 10', '<<">> 6', '<<!">> 8'),
        ("she spoke quietly about the weather all morning", "the report lists three causes of the delay"),
        "Each highlight is the quotation mark that closes a quoted utterance, usually with the punctuation "
        "just before it.\n"
        "[EXPLANATION]: Closing quotation marks that end quoted speech or text.",
    ),
)


def _excerpts(lines: Sequence[str], values: Sequence[Sequence[str]] | None) -> str:
    out = []
    for number, line in enumerate(lines, start=1):
        out.append(f"Example {number}: {line}")
        if values is not None:
            out.append(f"Activations: {', '.join(values[number - 1]) or 'none'}")
    return "\n".join(out)


ANSWER_MARKER = "[EXPLANATION]:"


def build_messages(
    examples: Sequence[ShownExample],
    max_activation: float,
    *,
    show_activations: bool,
    threshold: float,
    negatives: Sequence[ShownExample] = (),
    contrastive: bool = False,
    reasoning: bool = True,
) -> tuple[Message, ...]:
    """System prompt, two demonstrations, then this latent's numbered examples.

    Without `reasoning`, the demonstrations answer with the explanation line alone and the answer is
    prefilled with the marker, so the model only completes the explanation.
    """
    messages = list(_demonstrations(show_activations, contrastive, reasoning))
    if show_activations:
        rendered = [highlight(example, max_activation, threshold) for example in examples]
        lines, values = [text for text, _ in rendered], [v for _, v in rendered]
    else:
        lines, values = [highlight_text(e, max_activation, threshold) for e in examples], None
    negative_text = _excerpts([one_line("".join(n.pieces)) for n in negatives], None) if contrastive else ""
    messages.append(Message("user", _user_turn(_excerpts(lines, values), negative_text, contrastive)))
    if not reasoning:
        messages.append(Message("assistant", ANSWER_MARKER))
    return tuple(messages)


@functools.cache
def _demonstrations(show_activations: bool, contrastive: bool, reasoning: bool) -> tuple[Message, ...]:
    """The system prompt and the two demonstrations: the same for every latent."""
    system = _SYSTEM.format(
        activations=_ACTIVATIONS if show_activations else "", contrast=_CONTRAST if contrastive else ""
    )
    messages = [Message("system", system)]
    for shot_lines, shot_values, inactive, answer in _FEW_SHOT:
        shown_values = [[v] for v in shot_values] if show_activations else None
        inactive_text = _excerpts(inactive, None) if contrastive else ""
        turn = _user_turn(_excerpts(shot_lines, shown_values), inactive_text, contrastive)
        messages.append(Message("user", turn))
        messages.append(Message("assistant", answer if reasoning else answer[answer.index(ANSWER_MARKER) :]))
    return tuple(messages)


def demonstrated_explanations() -> list[str]:
    """The explanations the few-shot demonstrations give (an answer that repeats one explains nothing)."""
    return [answer.split(ANSWER_MARKER, 1)[1].strip() for *_, answer in _FEW_SHOT]


def _user_turn(active: str, inactive: str, contrastive: bool) -> str:
    turn = f"Excerpts where the latent is active:\n{active}"
    if contrastive:
        turn += f"\n\nExcerpts where the latent is not active:\n{inactive or '(none)'}"
    return turn + "\n\nWhat does this latent respond to?"


def output_messages(
    prompts: Sequence[str], continuations: Sequence[str], promoted: Sequence[str], reasoning: bool = True
) -> tuple[Message, ...]:
    """Ask what amplifying a latent makes the model write: each prompt with its steered continuation, and
    the tokens whose probability rose most. Without `reasoning`, the answer is prefilled with the marker."""
    examples = "\n".join(
        f"Example {i}: {_flat(prompt)}<<{_flat(continuation)}>>"
        for i, (prompt, continuation) in enumerate(zip(prompts, continuations, strict=True), start=1)
    )
    rising = ", ".join(f'"{_flat(token)}"' for token in promoted)
    user = (
        f"Continuations written while the latent is amplified:\n{examples}\n\n"
        f"Tokens whose probability rose most: {rising}\n\n"
        "What does amplifying this latent make the model write? End your answer with exactly one line:\n"
        f"{ANSWER_MARKER} <your explanation>"
    )
    messages = [Message("system", _OUTPUT_SYSTEM), Message("user", user)]
    if not reasoning:
        messages.append(Message("assistant", ANSWER_MARKER))
    return tuple(messages)


_OUTPUT_SYSTEM = (
    'You are studying one internal feature (a "latent") of a language model by amplifying it and watching '
    "what the model writes.\n"
    "You will see prompts, each followed by the continuation the model wrote with the latent amplified, "
    "wrapped in << and >>, and the tokens whose probability rose most when the latent was amplified.\n"
    "Describe what the amplified latent makes the model write: the topic, kind of words or tokens it "
    "promotes. Write a short, specific phrase, not a list of examples. Do not mention the markers.\n"
    "You may reason briefly first, but end your answer with exactly one line of the form:\n"
    f"{ANSWER_MARKER} <your explanation>"
)


def _flat(text: str) -> str:
    return text.replace("\r", "").replace("\n", "\\n")
