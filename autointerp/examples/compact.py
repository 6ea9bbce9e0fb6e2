"""Per-example detail of a record in compact columnar form, and the cache-backed refill of what it leaves out.

A record's examples (the explainer's windows, a scorer's verdicts) are stored as columns: one list per
field, a constant once, a text field as codes into its distinct values, nested excerpt lists (intruder
trials) as packed tables of their own, floats to 6 decimal places. A window's `tokens`, `activations` and
`shown` text are left out (its `width` is kept): they are the cache's tokens and this latent's activations
over `sequence` / `start` / `width`, and the shown text follows from them (and `highlighted`, or
`shown_as: saebench` for SAEBench's rendering). That keeps a
score record of 200 verdicts near 6 KB instead of ~115 KB. `unpack` gives back the example dicts without
those three fields; `ExampleFiller` puts them back from the run's cache and tokenizer.

Records written before this layout hold a plain list of full example dicts; `unpack` reads both.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from autointerp.cache.reader import CacheReader, LatentActivations
from autointerp.examples.render import mark, plain
from autointerp.saebench_protocol import SHOWN_AS, render
from autointerp.texts import TokenTexts

DERIVED = ("tokens", "activations", "shown")
"""Window fields left out of a packed record and refilled from the cache."""
NESTED = "excerpts"
"""A field holding a list of example dicts of its own (an intruder trial's excerpts)."""
FLOAT_DECIMALS = 6


def pack(examples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The examples as `{"n": count, "columns": {field: column}}`, derived window fields left out."""
    rows = [_slim(example) for example in examples]
    fields = list(dict.fromkeys(key for row in rows for key in row))
    return {"n": len(rows), "columns": {f: _pack_column([row.get(f) for row in rows], f) for f in fields}}


def unpack(packed: dict[str, Any] | list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """The example dicts of a packed record (a pre-packing record's plain list is returned as it is)."""
    if packed is None:
        return []
    if isinstance(packed, list):
        return packed
    n = int(packed["n"])
    columns = {f: _unpack_column(column, n) for f, column in packed["columns"].items()}
    return [{f: values[i] for f, values in columns.items()} for i in range(n)]


def column(packed: dict[str, Any] | list[dict[str, Any]] | None, field: str) -> list[Any]:
    """One field of every example (None where absent), without building the example dicts."""
    if packed is None:
        return []
    if isinstance(packed, list):
        return [example.get(field) for example in packed]
    values = packed["columns"].get(field)
    return [None] * int(packed["n"]) if values is None else _unpack_column(values, int(packed["n"]))


def _slim(example: dict[str, Any]) -> dict[str, Any]:
    row = dict(example)
    if _is_window(row):
        row["width"] = len(row["tokens"])
        for key in DERIVED:
            row.pop(key, None)
    if isinstance(row.get(NESTED), list):
        row[NESTED] = pack(row[NESTED])
    return row


def _is_window(example: dict[str, Any]) -> bool:
    return "sequence" in example and "start" in example and isinstance(example.get("tokens"), list)


def _pack_column(values: list[Any], field: str) -> Any:
    if field == NESTED:
        return {"tables": values}
    values = [round(v, FLOAT_DECIMALS) if isinstance(v, float) else v for v in values]
    kinds = set(map(type, values))
    if len(kinds) == 1 and values.count(values[0]) == len(values):
        return {"const": values[0]}
    if kinds <= {str, type(None)}:
        codes: dict[Any, int] = {}
        return {"codes": [codes.setdefault(v, len(codes)) for v in values], "values": list(codes)}
    return values


def _unpack_column(column: Any, n: int) -> list[Any]:
    if isinstance(column, list):
        return column
    if "const" in column:
        return [column["const"]] * n
    if "codes" in column:
        return [column["values"][code] for code in column["codes"]]
    return [None if table is None else unpack(table) for table in column["tables"]]


class ExampleFiller:
    """Puts a window's `tokens`, `activations` (and, given the tokenizer's texts, `shown`) back from the
    cache the record was made from."""

    def __init__(self, reader: CacheReader, texts: TokenTexts | None = None):
        self.reader, self.texts = reader, texts
        self._latent: LatentActivations | None = None
        self._token_rows: np.ndarray | None = None

    def fill(self, latent: int, examples: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The examples (unpacked) with their derived window fields, nested excerpts included."""
        return [self._fill_one(latent, example) for example in examples]

    def activations(self, latent: int, sequence: int, start: int, width: int) -> np.ndarray:
        """This latent's activations over one window, float32."""
        acts = self._activations(latent)
        first = int(sequence) * self.reader.ctx_len + int(start)
        lo, hi = np.searchsorted(acts.token_index, [first, first + int(width)])
        values = np.zeros(int(width), dtype=np.float32)
        values[acts.token_index[lo:hi] - first] = acts.activation[lo:hi]
        return values

    def _fill_one(self, latent: int, example: dict[str, Any]) -> dict[str, Any]:
        example = dict(example)
        if isinstance(example.get(NESTED), list):
            example[NESTED] = self.fill(latent, example[NESTED])
        if example.get("width") is None or "tokens" in example:
            return example
        sequence, start, width = int(example["sequence"]), int(example["start"]), int(example["width"])
        tokens = self._tokens(sequence)[start : start + width].tolist()
        example["tokens"] = tokens
        example["activations"] = self.activations(latent, sequence, start, width).tolist()
        if self.texts is not None:
            pieces = self.texts.pieces(tokens)
            saebench = example.get("shown_as") == SHOWN_AS
            example["shown"] = render(pieces) if saebench else shown_text(pieces, example.get("highlighted"))
        return example

    def _tokens(self, sequence: int) -> np.ndarray:
        """One token row, from the token file mapped once."""
        if self._token_rows is None:
            self._token_rows = self.reader.token_array()
        if not 0 <= sequence < len(self._token_rows):
            raise IndexError(f"sequence {sequence} is not in the cache ({len(self._token_rows)} sequences)")
        return self._token_rows[sequence]

    def _activations(self, latent: int) -> LatentActivations:
        if self._latent is None or self._latent.latent != latent:
            self._latent = self.reader.latent(latent)
        return self._latent


def shown_text(pieces: Sequence[str], highlighted: Sequence[int] | None) -> str:
    """An excerpt as a scorer was shown it: plain, or with the `highlighted` positions marked."""
    if highlighted is None:
        return plain(pieces)
    mask = np.zeros(len(pieces), dtype=bool)
    mask[list(highlighted)] = True
    return mark(pieces, mask)
