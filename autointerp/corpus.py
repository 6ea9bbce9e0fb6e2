"""The text corpus: documents from a dataset, tokenized into fixed-length sequences.

`iter_documents` yields document strings from `builtin:python-docs` (offline, from the Python install)
or any `datasets.load_dataset` source, streamed. `iter_sequences` tokenizes them into a stream
joined by EOS and cuts it into `ctx_len`-token sequences, each starting with BOS when the tokenizer has one.
"""

from __future__ import annotations

import ast
import functools
import glob
import os
import sysconfig
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from autointerp.config import LOCAL_DATASET_FORMATS, DatasetConfig
from autointerp.errors import ConfigError

BUILTIN_PYTHON_DOCS = "builtin:python-docs"
_SKIPPED_DIRS = frozenset({"test", "tests", "site-packages", "__pycache__", "pydoc_data"})
_SKIPPED_PATHS = frozenset({"idlelib/idle_test"})
_DOCUMENTED_NODES = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
_BODY_NODES = (ast.stmt, ast.excepthandler, ast.match_case)


def iter_documents(cfg: DatasetConfig) -> Iterator[str]:
    """Yield the corpus documents in a deterministic order (for streamed hub data, the dataset's order)."""
    if cfg.path == BUILTIN_PYTHON_DOCS:
        yield from python_docs()
    elif cfg.path.startswith("builtin:"):
        raise ConfigError("dataset.path", f"unknown builtin corpus {cfg.path!r}; use {BUILTIN_PYTHON_DOCS!r}")
    else:
        yield from _iter_dataset_texts(cfg)


def data_file_paths(cfg: DatasetConfig) -> list[Path | str]:
    """The files `data_files` names, in the order `datasets` reads them: local ones resolved against the
    working directory, globs expanded (sorted), URLs as given; a pattern that matches nothing stays a path
    (to a missing file)."""
    found: list[Path | str] = []
    for pattern in cfg.data_files or ():
        if "://" in pattern:
            found.append(pattern)
        elif any(char in pattern for char in "*?["):
            matches = sorted(Path(p) for p in glob.glob(os.path.expanduser(pattern), recursive=True))
            found += [p.resolve() for p in matches if p.is_file()] or [Path(pattern).expanduser().resolve()]
        else:
            found.append(Path(pattern).expanduser().resolve())
    return found


def corpus_version(cfg: DatasetConfig) -> dict[str, int]:
    """What identifies the corpus's content beyond the config: the built-in corpus's version."""
    return {"builtin_version": BUILTIN_VERSION} if cfg.path == BUILTIN_PYTHON_DOCS else {}


# --- builtin:python-docs -------------------------------------------------------------------------


BUILTIN_VERSION = 2
"""Version of the built-in corpus's content (2: repeated paragraphs removed), part of the cache key."""
MIN_DEDUPLICATED_PARAGRAPH = 40
"""Paragraphs of at least this many characters are kept only where they first appear."""


@functools.cache
def python_docs() -> tuple[str, ...]:
    """Python's documentation, offline: the pydoc topics, then one document of docstrings per stdlib module.

    A paragraph (text between blank lines) of `MIN_DEDUPLICATED_PARAGRAPH` characters or more that already
    appeared earlier is dropped, so the same text is not two examples (the standard library repeats
    docstrings such as "Internal function." or whole option tables); shorter ones ("Note:") are headings.
    Parsing the standard library takes seconds, so the result (a few MB) is computed once per process.
    """
    from pydoc_data.topics import topics

    documents = [topics[key] for key in sorted(topics)]
    for path in _stdlib_sources(Path(sysconfig.get_paths()["stdlib"])):
        text = _module_docstrings(path)
        if text:
            documents.append(text)
    return tuple(deduplicate_paragraphs(documents))


def deduplicate_paragraphs(
    documents: Iterable[str], min_chars: int = MIN_DEDUPLICATED_PARAGRAPH
) -> list[str]:
    """The documents without the paragraphs of `min_chars` or more characters seen in an earlier place
    (compared without surrounding whitespace); documents left empty are dropped."""
    seen: set[str] = set()
    kept_documents = []
    for document in documents:
        kept = []
        for paragraph in document.split("\n\n"):
            key = paragraph.strip()
            if len(key) >= min_chars:
                if key in seen:
                    continue
                seen.add(key)
            kept.append(paragraph)
        text = "\n\n".join(kept)
        if text.strip():
            kept_documents.append(text)
    return kept_documents


def _stdlib_sources(root: Path) -> Iterator[Path]:
    """The `.py` files under `root` in sorted order, without test suites and installed packages."""
    for dirpath, dirnames, filenames in os.walk(root):
        relative = Path(dirpath).relative_to(root)
        dirnames[:] = sorted(d for d in dirnames if _keep_dir(relative / d))
        for filename in sorted(filenames):
            if filename.endswith(".py"):
                yield Path(dirpath) / filename


def _keep_dir(relative: Path) -> bool:
    return relative.name not in _SKIPPED_DIRS and relative.as_posix() not in _SKIPPED_PATHS


def _module_docstrings(path: Path) -> str:
    """The docstrings of a source file's module, classes and functions in source order, joined by blank lines.

    Empty for files that cannot be read or parsed.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # invalid escape sequences in old stdlib files
            tree = ast.parse(path.read_bytes(), filename=str(path))
    except (SyntaxError, ValueError, OSError):
        return ""
    return "\n\n".join(_docstrings(tree))


def _docstrings(node: ast.AST) -> Iterator[str]:
    """Docstrings of `node` and of the classes and functions nested in its statements, depth first."""
    if isinstance(node, _DOCUMENTED_NODES):
        docstring = ast.get_docstring(node)
        if docstring:
            yield docstring
    for child in ast.iter_child_nodes(node):
        if isinstance(child, _BODY_NODES):
            yield from _docstrings(child)


# --- datasets ------------------------------------------------------------------------------------


def _iter_dataset_texts(cfg: DatasetConfig) -> Iterator[str]:
    """Stream the text column of a `datasets` source, turning its errors into ConfigErrors."""
    rows = iter(_load_streaming(cfg))
    errors = _dataset_errors()
    first = True
    while True:
        try:
            row = next(rows)
        except StopIteration:
            return
        except errors as exc:
            raise _read_error(cfg, exc) from None
        if first:
            _check_text_column(cfg, row)
            first = False
        text = row[cfg.text_column]
        if text is None:
            continue
        if not isinstance(text, str):
            raise ConfigError(
                "dataset.text_column",
                f"column {cfg.text_column!r} holds {type(text).__name__}, not text; name a string column",
            )
        yield text


def _dataset_errors() -> tuple[type[BaseException], ...]:
    """What `datasets` raises for bad paths, files, splits or formats (pyarrow errors are ValueErrors)."""
    from datasets.exceptions import DatasetsError

    return (DatasetsError, OSError, ValueError)


def _load_streaming(cfg: DatasetConfig) -> Any:
    import datasets

    data_files = list(cfg.data_files) if cfg.data_files else None
    try:
        return datasets.load_dataset(
            cfg.path, name=cfg.name, data_files=data_files, split=cfg.split, streaming=True
        )
    except _dataset_errors() as exc:
        raise _load_error(cfg, exc) from None
    except StopIteration:  # `datasets` infers the schema from the first rows: an empty file has none
        raise ConfigError(
            "dataset.data_files",
            f"{', '.join(data_files or [cfg.path])} holds no rows; fill it or fix the path",
        ) from None


def _load_error(cfg: DatasetConfig, exc: BaseException) -> ConfigError:
    reason = _first_line(exc)
    if "split" in reason.lower() and isinstance(exc, ValueError):
        return ConfigError("dataset.split", f"{cfg.split!r} is not available for {cfg.path!r}: {reason}")
    if cfg.data_files and isinstance(exc, FileNotFoundError):
        files = ", ".join(cfg.data_files)
        return ConfigError("dataset.data_files", f"{files}: {reason}; check the paths (globs are allowed)")
    if cfg.path in LOCAL_DATASET_FORMATS:
        return ConfigError("dataset.data_files", f"could not be loaded as {cfg.path}: {reason}")
    return ConfigError(
        "dataset.path",
        f"{cfg.path!r} could not be loaded (offline? not on the hub or not in the local cache?): {reason}",
    )


def _read_error(cfg: DatasetConfig, exc: BaseException) -> ConfigError:
    if cfg.data_files:
        return ConfigError("dataset.data_files", f"could not be read as {cfg.path}: {_first_line(exc)}")
    return ConfigError("dataset.path", f"{cfg.path!r} could not be read: {_first_line(exc)}")


def _check_text_column(cfg: DatasetConfig, row: dict[str, Any]) -> None:
    if cfg.text_column not in row:
        columns = ", ".join(str(c) for c in row)
        raise ConfigError(
            "dataset.text_column", f"column {cfg.text_column!r} not found; columns are: {columns}"
        )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# --- tokenization --------------------------------------------------------------------------------


def special_token_ids(tokenizer: Any) -> list[int]:
    """Sorted unique ids of BOS, EOS, PAD, UNK and every other special token of `tokenizer`."""
    ids = {tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id, tokenizer.unk_token_id}
    ids.update(tokenizer.all_special_ids)
    return sorted(int(i) for i in ids if i is not None)


def iter_sequences(
    documents: Iterable[str], tokenizer: Any, ctx_len: int, batch_docs: int = 64
) -> Iterator[np.ndarray]:
    """Yield int32 token sequences of exactly `ctx_len` tokens cut from the EOS-joined document stream.

    Each sequence is `[BOS]` plus the next `ctx_len - 1` stream tokens when the tokenizer has a BOS token,
    else the next `ctx_len` stream tokens. Empty documents are skipped; the final partial sequence is dropped.
    Holds at most one batch of `batch_docs` documents plus one pending remainder.
    """
    bos = tokenizer.bos_token_id
    body = ctx_len - 1 if bos is not None else ctx_len
    if body < 1:
        raise ValueError(f"ctx_len must leave room for at least one token after BOS, got {ctx_len}")
    pending = np.zeros(0, dtype=np.int32)
    for batch in _batches(documents, batch_docs):
        stream = np.concatenate([pending, _tokenize_batch(batch, tokenizer)])
        n_full = len(stream) // body
        for row in stream[: n_full * body].reshape(n_full, body):
            yield row.copy() if bos is None else np.concatenate([np.array([bos], dtype=np.int32), row])
        pending = stream[n_full * body :]


def _batches(documents: Iterable[str], size: int) -> Iterator[list[str]]:
    batch: list[str] = []
    for document in documents:
        if document:
            batch.append(document)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _tokenize_batch(batch: list[str], tokenizer: Any) -> np.ndarray:
    """Token ids of the documents, each followed by EOS when the tokenizer has one, as one int32 array."""
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    encoded = tokenizer(batch, add_special_tokens=False, verbose=False)["input_ids"]
    pieces = [np.asarray(ids + eos, dtype=np.int32) for ids in encoded if ids]
    return np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int32)
