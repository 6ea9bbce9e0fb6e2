"""Read the explanation out of an explainer's answer, whatever prose surrounds it."""

from __future__ import annotations

import re

_MARKER = re.compile(r"\[\s*explanation\s*\]\s*[:：]?", re.IGNORECASE)
_DECORATION = "*_`\"' \t“”‘’"


NEW_TURN = "\nExcerpts where the latent is"
"""How a rambling model starts inventing the next task; used as a stop string too."""


class ParseError(ValueError):
    """The answer holds no usable `[EXPLANATION]:` line."""


def parse_explanation(text: str, truncated: bool = False) -> str:
    """The text after the last `[EXPLANATION]:` marker, on its line (or the next non-empty line).

    Tolerates chain-of-thought before it, markdown emphasis or quotes around it, and trailing prose on
    later lines. Anything after the model starts inventing a new task (`NEW_TURN`) is ignored. With
    `truncated` (the answer hit max_tokens), an explanation on the unfinished last line is refused.
    Raises ParseError when there is no usable explanation.
    """
    text = text.split(NEW_TURN, 1)[0]
    matches = list(_MARKER.finditer(text))
    if not matches:
        raise ParseError(
            "no [EXPLANATION]: line in the answer" + (" (cut off at max_tokens)" if truncated else "")
        )
    rest = text[matches[-1].end() :]
    lines = rest.splitlines()
    index = next((i for i, line in enumerate(lines) if line.strip(_DECORATION)), None)
    if index is None:
        raise ParseError("the [EXPLANATION]: line is empty")
    if truncated and index == len(lines) - 1 and not rest.endswith("\n"):
        raise ParseError("the explanation was cut off at max_tokens; raise explainer.max_tokens")
    return re.sub(r"\s+", " ", lines[index].strip(_DECORATION)).strip(_DECORATION)
