"""The built-in token classes planted as latents: a predicate over a token's text and the true explanation."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from autointerp.errors import UserError


@dataclass(frozen=True)
class TokenClass:
    """A set of tokens defined by their text alone, with the explanation a perfect explainer would give."""

    name: str
    explanation: str
    contains: Callable[[str], bool]
    """Whether a token's text (leading space kept; special tokens are '') belongs to the class."""


def _digits(piece: str) -> bool:
    return piece.strip().isdigit()


def _opening_bracket(piece: str) -> bool:
    return piece.strip()[:1] in ("(", "[", "{")


def _capitalised_word(piece: str) -> bool:
    word = piece.strip()
    return piece[:1] == " " and len(word) > 1 and word.isalpha() and word[0].isupper() and word[1:].islower()


def _newline(piece: str) -> bool:
    return "\n" in piece


def _indentation(piece: str) -> bool:
    return len(piece) > 1 and piece.strip(" ") == ""


def _word(word: str) -> Callable[[str], bool]:
    return lambda piece: piece.strip().lower() == word


def _comma(piece: str) -> bool:
    return piece.strip() == ","


def _full_stop(piece: str) -> bool:
    return piece.strip() == "."


def _quote(piece: str) -> bool:
    return piece.strip()[:1] in ("'", '"', "`")


def _equals(piece: str) -> bool:
    return piece.strip() == "="


BUILTIN_CLASSES: tuple[TokenClass, ...] = (
    TokenClass("digits", "Numbers written with digits, such as 3, 42 or 2024.", _digits),
    TokenClass("opening_bracket", "Opening brackets and parentheses: (, [ and {.", _opening_bracket),
    TokenClass(
        "capitalised_word",
        "Capitalised words: a word that starts with an upper-case letter, like Python or The.",
        _capitalised_word,
    ),
    TokenClass("newline", "Line breaks: the newline at the end of a line.", _newline),
    TokenClass("indentation", "Runs of several spaces, as in the indentation of code.", _indentation),
    TokenClass("the", 'The word "the".', _word("the")),
    TokenClass("comma", "Commas.", _comma),
    TokenClass("full_stop", "Full stops (periods) at the end of a sentence or between names.", _full_stop),
    TokenClass("quote", "Quotation marks and backticks that open or close a quoted string.", _quote),
    TokenClass("equals", 'The equals sign "=" of an assignment.', _equals),
)
CLASS_NAMES = tuple(c.name for c in BUILTIN_CLASSES)


def classes_named(names: Sequence[str] | None) -> tuple[TokenClass, ...]:
    """The built-in classes with these names, in table order; None = all of them."""
    if names is None:
        return BUILTIN_CLASSES
    unknown = [name for name in names if name not in CLASS_NAMES]
    if unknown:
        known = ", ".join(CLASS_NAMES)
        raise UserError(f"--classes: unknown class {unknown[0]!r}; the built-in ones are {known}")
    return tuple(c for c in BUILTIN_CLASSES if c.name in names)


def token_labels(
    classes: Sequence[TokenClass], tokens: np.ndarray, piece: Callable[[int], str]
) -> np.ndarray:
    """Bool `[*tokens.shape, classes]`: which tokens belong to each class (each distinct id decoded once)."""
    ids, inverse = np.unique(tokens, return_inverse=True)
    table = np.array([[c.contains(piece(int(i))) for c in classes] for i in ids], dtype=bool)
    return table.reshape(len(ids), len(classes))[inverse.reshape(tokens.shape)]
