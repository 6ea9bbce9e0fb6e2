"""Scorer prompts: detection, fuzzing (one example or a numbered batch), intruder and simulation.

The explanation comes first and the example last, so every prompt of a latent shares one long prefix
(system prompt + explanation) that vLLM's prefix cache computes once.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

from autointerp.llm.types import Message

PROMPT_VERSION = "score-v5"
ANSWER_PREFILL = "Answer:"
"""Prefilled start of the scorer's reply: its next token is the answer digit."""
_ANSWER_PREFILL = Message("assistant", ANSWER_PREFILL)
INTRUDER_PREFILL = "Answer: Excerpt"
"""The intruder's reply starts by naming an excerpt, so its next word is the number (small models otherwise
start to spell out "Excerpt" and never reach it)."""

_DETECTION = (
    "You are checking an explanation of a feature of a language model. The explanation describes the "
    "text where the feature is active.\n"
    "You will see the explanation and then {what}. {task}\n"
    "Answer 1 if it does and 0 if it does not."
)
_DETECTION_WHAT = ("one text excerpt", "several numbered text excerpts")
_DETECTION_TASK = "Decide whether the excerpt contains what the explanation describes."
_FUZZING_WHAT = (
    "one text excerpt with some tokens wrapped in << and >>",
    "several numbered text excerpts, each with some tokens wrapped in << and >>",
)
_FUZZING_TASK = "Decide whether the wrapped tokens are what the explanation describes."
_BATCH_FORMAT = "\nGive one answer per excerpt, in order, as a list on one line, for example [1, 0, 0, 1, 0]."
_INTRUDER = (
    "You will see {k} numbered text excerpts. In all but one of them, the same feature of a language model "
    "is active on the tokens wrapped in << and >>. One excerpt, the intruder, does not share that feature "
    "(its wrapped tokens are unrelated).\nAnswer with the number of the intruder."
)
_SIMULATION = (
    "You are predicting how strongly a feature of a language model fires on each token of a text, given an "
    "explanation of the feature.\n"
    "Each line holds one token, a tab, and the feature's activation on it: 0 (not active) to 9 (strongest). "
    "Most tokens are 0."
)
_SIMULATION_TEXT = "\nWrite the lines for every token of the excerpt, in order, one per line."


def classification_messages(
    kind: str, explanation: str, excerpts: Sequence[str], batched: bool, prefill: bool = True
) -> tuple[Message, ...]:
    """A detection or fuzzing prompt for one excerpt (single-token answer) or a numbered batch (a list
    answer, even when the last batch holds one excerpt)."""
    if batched:
        body = "\n\n".join(f"Excerpt {i + 1}: {text}" for i, text in enumerate(excerpts))
    else:
        body = f"Excerpt: {excerpts[0]}"
    user = Message("user", f"Explanation: {explanation}\n\n{body}")
    if prefill and not batched:
        return (_classification_system(kind, batched), user, _ANSWER_PREFILL)
    return (_classification_system(kind, batched), user)


@functools.cache
def _classification_system(kind: str, batched: bool) -> Message:
    what = (_FUZZING_WHAT if kind == "fuzzing" else _DETECTION_WHAT)[batched]
    task = _FUZZING_TASK if kind == "fuzzing" else _DETECTION_TASK
    return Message("system", _DETECTION.format(what=what, task=task) + (_BATCH_FORMAT if batched else ""))


def intruder_messages(excerpts: Sequence[str], prefill: bool = True) -> tuple[Message, ...]:
    """Find-the-intruder prompt over numbered excerpts (answer: one digit)."""
    body = "\n\n".join(f"Excerpt {i + 1}: {text}" for i, text in enumerate(excerpts))
    messages = [Message("system", _INTRUDER.format(k=len(excerpts))), Message("user", body)]
    if prefill:
        messages.append(Message("assistant", INTRUDER_PREFILL))
    return tuple(messages)


SIMULATION_PLACEHOLDER = "unknown"
"""What the prefilled reply holds where a value goes (Bills et al.): not a digit, so the model never sees a
fake activation to copy."""

# Demonstrations written for this project: (explanation, [(token, activation 0-9), ...]).
_SIMULATION_FEW_SHOT: tuple[tuple[str, tuple[tuple[str, int], ...]], ...] = (
    (
        "Nouns for rain and other precipitation.",
        (
            ("We", 0),
            (" waited", 0),
            (" until", 0),
            (" the", 0),
            (" rain", 9),
            (" stopped", 0),
            (",", 0),
            (" then", 0),
            (" the", 0),
            (" snow", 6),
            (" began", 0),
            (".", 0),
        ),
    ),
    (
        "Closing quotation marks that end quoted speech.",
        (
            ('"', 0),
            ("Run", 0),
            ('!"', 8),
            (" shouted", 0),
            (" the", 0),
            (" guard", 0),
            (",", 0),
            (' "', 0),
            ("now", 0),
            ('."', 9),
            (" Nobody", 0),
            (" moved", 0),
            (".", 0),
        ),
    ),
)


def simulation_messages(explanation: str, pieces: Sequence[str], placeholders: bool) -> tuple[Message, ...]:
    """Simulation prompt ("all at once", Bills et al.): two demonstrations with their true activations,
    then the excerpt. With `placeholders` the reply is prefilled with one `token<TAB>unknown` line per
    token, and the model's distribution over digits at each placeholder is read from prompt logprobs."""
    system = _SIMULATION + ("" if placeholders else _SIMULATION_TEXT)
    messages = [Message("system", system)]
    for shot_explanation, records in _SIMULATION_FEW_SHOT:
        text = "".join(token for token, _ in records)
        messages.append(Message("user", _simulation_turn(shot_explanation, text)))
        lines = "\n".join(f"{simulation_token(token)}\t{value}" for token, value in records)
        messages.append(Message("assistant", lines))
    messages.append(Message("user", _simulation_turn(explanation, "".join(pieces))))
    if placeholders:
        lines = "\n".join(f"{simulation_token(piece)}\t{SIMULATION_PLACEHOLDER}" for piece in pieces)
        messages.append(Message("assistant", lines))
    return tuple(messages)


def _simulation_turn(explanation: str, text: str) -> str:
    return f"Explanation: {explanation}\n\nExcerpt: {text}"


def simulation_token(piece: str) -> str:
    """A token as written on a simulation line (tabs and newlines made visible)."""
    return piece.replace("\t", "\\t").replace("\n", "\\n") or " "
