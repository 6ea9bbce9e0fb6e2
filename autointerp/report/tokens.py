"""Token ids to the strings the report shows: the subject tokenizer's pieces, or the ids themselves."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from autointerp.texts import TokenTexts, load_tokenizer

Pieces = Callable[[Sequence[int]], list[str]]
"""Token ids -> one display string per token."""


def load_pieces(model_path: str) -> tuple[Pieces, str | None]:
    """The tokenizer's pieces; if it cannot be loaded, bracketed token ids and a note saying why."""
    try:
        return TokenTexts(load_tokenizer(model_path)).pieces, None
    except Exception as exc:  # noqa: BLE001 - tokenizers fail in many ways; the ids still make a report
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return _ids, f"the tokenizer of {model_path} could not be loaded ({reason}); showing token ids"


def _ids(tokens: Sequence[int]) -> list[str]:
    return [f"[{int(t)}]" for t in tokens]
