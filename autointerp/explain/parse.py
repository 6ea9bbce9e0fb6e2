"""Read the explanation out of an explainer's answer, whatever prose surrounds it."""

from __future__ import annotations

import re

_MARKER = re.compile(r"\[\s*explanation\s*\]\s*[:：]?", re.IGNORECASE)
_DECORATION = "*_`\"' \t“”‘’"


class ParseError(ValueError):
    """The answer holds no usable `[EXPLANATION]:` line."""


def parse_explanation(text: str) -> str:
    """The text after the last `[EXPLANATION]:` marker, on its line (or the next non-empty line).

    Tolerates chain-of-thought before it, markdown emphasis or quotes around it, and trailing prose on
    later lines. Raises ParseError when there is no marker or nothing after it.
    """
    matches = list(_MARKER.finditer(text))
    if not matches:
        raise ParseError("no [EXPLANATION]: line in the answer")
    rest = text[matches[-1].end() :]
    lines = [line.strip(_DECORATION) for line in rest.splitlines()]
    explanation = next((line for line in lines if line), "")
    explanation = re.sub(r"\s+", " ", explanation).strip(_DECORATION)
    if not explanation:
        raise ParseError("the [EXPLANATION]: line is empty")
    return explanation
