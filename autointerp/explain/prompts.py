"""Explainer prompts: highlighted examples, few-shot demonstrations, default and contrastive variants."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from autointerp.llm.types import Message

PROMPT_VERSION = "explain-v2"

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


@dataclass(frozen=True)
class ShownExample:
    """An example as the explainer sees it: token texts and this latent's activation at each."""

    pieces: Sequence[str]
    activations: np.ndarray


def highlight(example: ShownExample, max_activation: float, threshold: float) -> tuple[str, list[str]]:
    """The excerpt with active runs wrapped in << >>, and `<<run>> value` strings on a 0-10 scale."""
    cutoff = threshold * max_activation
    text, values, run, run_peak = [], [], [], 0.0
    for piece, act in zip(example.pieces, example.activations, strict=True):
        if act > cutoff and act > 0:
            run.append(piece)
            run_peak = max(run_peak, float(act))
            continue
        if run:
            text.append(f"<<{''.join(run)}>>")
            values.append(f"<<{''.join(run)}>> {scale(run_peak, max_activation)}")
            run, run_peak = [], 0.0
        text.append(piece)
    if run:
        text.append(f"<<{''.join(run)}>>")
        values.append(f"<<{''.join(run)}>> {scale(run_peak, max_activation)}")
    return _one_line("".join(text)), values


def scale(activation: float, max_activation: float) -> int:
    """Integer 0-10 relative to the latent's maximum."""
    if max_activation <= 0:
        return 0
    return int(min(10, max(0, round(10 * activation / max_activation))))


def _one_line(text: str) -> str:
    return text.replace("\r", "").replace("\n", "\\n").strip()


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
    system = _SYSTEM.format(
        activations=_ACTIVATIONS if show_activations else "", contrast=_CONTRAST if contrastive else ""
    )
    messages = [Message("system", system)]
    for lines, values, inactive, answer in _FEW_SHOT:
        shown_values = [[v] for v in values] if show_activations else None
        inactive_text = _excerpts(inactive, None) if contrastive else ""
        turn = _user_turn(_excerpts(lines, shown_values), inactive_text, contrastive)
        messages.append(Message("user", turn))
        messages.append(Message("assistant", answer if reasoning else answer[answer.index(ANSWER_MARKER) :]))
    rendered = [highlight(example, max_activation, threshold) for example in examples]
    lines = [text for text, _ in rendered]
    values = [v for _, v in rendered] if show_activations else None
    negative_text = _excerpts([_one_line("".join(n.pieces)) for n in negatives], None) if contrastive else ""
    messages.append(Message("user", _user_turn(_excerpts(lines, values), negative_text, contrastive)))
    if not reasoning:
        messages.append(Message("assistant", ANSWER_MARKER))
    return tuple(messages)


def _user_turn(active: str, inactive: str, contrastive: bool) -> str:
    turn = f"Excerpts where the latent is active:\n{active}"
    if contrastive:
        turn += f"\n\nExcerpts where the latent is not active:\n{inactive or '(none)'}"
    return turn + "\n\nWhat does this latent respond to?"
