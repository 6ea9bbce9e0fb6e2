"""Reading scorer answers: digit probabilities from logprobs, and lists of 0/1 from text."""

from __future__ import annotations

import math
import re

from autointerp.llm.types import LLMResponse, TokenLogprob

_SYNONYMS = {"yes": "1", "no": "0", "true": "1", "false": "0"}
_LIST = re.compile(r"\[([^\[\]]*)\]")


class AnswerError(ValueError):
    """The answer could not be read; the example (or batch) is counted as failed."""


def digit_probabilities(position: TokenLogprob | None, digits: tuple[str, ...]) -> dict[str, float]:
    """Probability mass of each digit among a position's top alternatives (` 1`, `1`; for a 0/1 answer
    also `Yes`/`No`)."""
    mass = dict.fromkeys(digits, 0.0)
    if position is None:
        return mass
    binary = digits == ("0", "1")
    for token, logprob in position.top.items():
        text = token.strip().lower()
        if binary:
            text = _SYNONYMS.get(text, text)
        if text in mass:
            mass[text] += math.exp(logprob)
    return mass


def first_token_choice(response: LLMResponse, digits: tuple[str, ...]) -> dict[str, float]:
    """Normalised probabilities of `digits` as the first answer token; falls back to the text's first digit.

    Raises AnswerError when neither the logprobs nor the text name one of the digits.
    """
    soft = logprob_choice(response, digits)
    return soft if soft is not None else text_choice(response, digits)


def logprob_choice(response: LLMResponse, digits: tuple[str, ...]) -> dict[str, float] | None:
    """Normalised probabilities of `digits` as the first answer token; None when the logprobs name none."""
    position = _first_word(response.logprobs or [])
    if position is None:
        return None
    mass = digit_probabilities(position, digits)
    total = sum(mass.values())
    return {digit: p / total for digit, p in mass.items()} if total > 0 else None


def text_choice(response: LLMResponse, digits: tuple[str, ...]) -> dict[str, float]:
    """Probability 1 for the first of `digits` in the text; AnswerError when it holds none."""
    found = next((c for c in response.text if c in digits), None)
    if found is None:
        shown = response.text.strip()[:40] or "an empty answer"
        raise AnswerError(f"no answer among {'/'.join(digits)} in the top logprobs or in {shown!r}")
    return {digit: float(digit == found) for digit in digits}


def _first_word(positions: list[TokenLogprob]) -> TokenLogprob | None:
    """The first generated position whose token is not whitespace (many tokenizers write " 1" as " ", "1")."""
    return next((p for p in positions if p.token.strip()), positions[0] if positions else None)


def parse_binary_list(text: str, expected: int) -> list[int]:
    """The last bracketed list of 0/1 answers in `text`, which must have `expected` entries."""
    lists = _LIST.findall(text)
    if not lists:
        raise AnswerError(f"no [..] list of answers in {text.strip()[:60]!r}")
    items = [item.strip() for item in lists[-1].split(",") if item.strip()]
    values = [_SYNONYMS.get(item.lower(), item) for item in items]
    if any(value not in ("0", "1") for value in values):
        raise AnswerError(f"answers must be 0 or 1, got [{lists[-1]}]")
    if len(values) != expected:
        raise AnswerError(f"expected {expected} answers, got {len(values)}")
    return [int(value) for value in values]
