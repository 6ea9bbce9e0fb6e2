"""Tests of the corpus: the builtin Python docs, `datasets` sources and sequence packing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from tokenizer_factory import make_tokenizer
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from autointerp import corpus
from autointerp.config import DatasetConfig
from autointerp.corpus import iter_documents, iter_sequences, special_token_ids
from autointerp.errors import ConfigError

CTX_LEN = 16


@pytest.fixture(scope="module")
def builtin_docs() -> list[str]:
    return list(iter_documents(DatasetConfig()))


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> PreTrainedTokenizerBase:
    return make_tokenizer(tmp_path_factory.mktemp("tokenizer"))


@pytest.fixture(scope="module")
def documents(builtin_docs: list[str]) -> list[str]:
    return builtin_docs[:20] + ["", "short", "é ü ✓ unicode", "last document"]


def stream_of(documents: list[str], tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """The expected token stream: each non-empty document's tokens followed by EOS."""
    stream: list[int] = []
    for document in documents:
        if document:
            stream += tokenizer(document, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return stream


# --- builtin:python-docs -------------------------------------------------------------------------


def test_builtin_corpus_is_large_and_known(builtin_docs: list[str]) -> None:
    assert len(builtin_docs) > 500
    assert all(isinstance(doc, str) and doc for doc in builtin_docs)
    assert sum(len(doc) for doc in builtin_docs) > 1_000_000
    assert any("assert" in doc and "debugging assertions" in doc for doc in builtin_docs)
    assert any(doc.startswith("Heap queue algorithm") for doc in builtin_docs)  # heapq's docstring


def test_builtin_corpus_is_deterministic(builtin_docs: list[str]) -> None:
    """Parsing is deterministic; the order comes from `_stdlib_sources`, checked without the parse cost."""
    assert list(iter_documents(DatasetConfig())) == builtin_docs
    root = Path(corpus.sysconfig.get_paths()["stdlib"])
    assert list(corpus._stdlib_sources(root)) == list(corpus._stdlib_sources(root))


def test_stdlib_sources_are_sorted_and_skip_tests() -> None:
    root = Path(corpus.sysconfig.get_paths()["stdlib"])
    paths = [p.relative_to(root) for p in corpus._stdlib_sources(root)]
    assert Path("heapq.py") in paths
    assert not any({"test", "tests", "site-packages"} & set(p.parts) for p in paths)
    assert not any(p.as_posix().startswith("idlelib/idle_test/") for p in paths)
    for before, after in zip(paths, paths[1:], strict=False):
        if before.parent == after.parent:
            assert before.name < after.name


def test_module_docstrings_in_source_order(tmp_path: Path) -> None:
    source = '''"""Module doc."""
class A:
    """Class doc."""
    if True:
        def f(self):
            """Method doc."""
async def g():
    """Coroutine doc."""
'''
    (tmp_path / "m.py").write_text(source)
    (tmp_path / "bad.py").write_text("def broken(:\n")
    expected = "Module doc.\n\nClass doc.\n\nMethod doc.\n\nCoroutine doc."
    assert corpus._module_docstrings(tmp_path / "m.py") == expected
    assert corpus._module_docstrings(tmp_path / "bad.py") == ""


def test_unknown_builtin_is_config_error() -> None:
    with pytest.raises(ConfigError, match="dataset.path"):
        list(iter_documents(DatasetConfig(path="builtin:nope")))


# --- tokenization --------------------------------------------------------------------------------


def test_special_token_ids(tokenizer: PreTrainedTokenizerBase) -> None:
    assert special_token_ids(tokenizer) == sorted({tokenizer.bos_token_id, tokenizer.eos_token_id, 2})
    assert special_token_ids(tokenizer) == [0, 1, 2]


@pytest.mark.parametrize("batch_docs", [1, 3, 64])
def test_sequences_start_with_bos_and_preserve_the_stream(
    tokenizer: PreTrainedTokenizerBase, documents: list[str], batch_docs: int
) -> None:
    sequences = list(iter_sequences(documents, tokenizer, CTX_LEN, batch_docs=batch_docs))
    stream = stream_of(documents, tokenizer)
    body = CTX_LEN - 1
    assert len(sequences) == len(stream) // body
    for sequence in sequences:
        assert sequence.dtype == np.int32 and sequence.shape == (CTX_LEN,)
        assert sequence[0] == tokenizer.bos_token_id
        assert tokenizer.bos_token_id not in sequence[1:].tolist()
    joined = np.concatenate([s[1:] for s in sequences]).tolist()
    assert joined == stream[: len(joined)]


def test_documents_are_separated_by_eos_in_order(tokenizer: PreTrainedTokenizerBase) -> None:
    documents = [f"document number {i} says hello" for i in range(30)]
    sequences = list(iter_sequences(documents, tokenizer, CTX_LEN, batch_docs=4))
    joined = np.concatenate([s[1:] for s in sequences]).tolist()
    eos = tokenizer.eos_token_id
    pieces, current = [], []
    for token in joined:
        if token == eos:
            pieces.append(tokenizer.decode(current))
            current = []
        else:
            current.append(token)
    assert len(pieces) >= 20
    assert pieces == documents[: len(pieces)]


def test_sequences_without_bos(
    tokenizer: PreTrainedTokenizerBase, documents: list[str], tmp_path: Path
) -> None:
    tokenizer.save_pretrained(tmp_path)
    no_bos = AutoTokenizer.from_pretrained(tmp_path)
    no_bos.bos_token = None
    assert no_bos.bos_token_id is None
    sequences = list(iter_sequences(documents, no_bos, CTX_LEN))
    stream = stream_of(documents, no_bos)
    assert len(sequences) == len(stream) // CTX_LEN
    assert all(s.shape == (CTX_LEN,) and s.dtype == np.int32 for s in sequences)
    assert np.concatenate(sequences).tolist() == stream[: len(sequences) * CTX_LEN]


def test_short_corpus_yields_nothing(tokenizer: PreTrainedTokenizerBase) -> None:
    assert list(iter_sequences(["hi"], tokenizer, CTX_LEN)) == []
    assert list(iter_sequences([], tokenizer, CTX_LEN)) == []


# --- datasets ------------------------------------------------------------------------------------

TEXTS = ["first document", "second document", "third, with a comma"]


def write_local(tmp_path: Path, fmt: str) -> Path:
    if fmt == "json":
        path = tmp_path / "data.jsonl"
        path.write_text("".join(json.dumps({"text": t, "id": i}) + "\n" for i, t in enumerate(TEXTS)))
    elif fmt == "text":
        path = tmp_path / "data.txt"
        path.write_text("\n".join(TEXTS) + "\n")
    else:
        path = tmp_path / "data.csv"
        path.write_text("text,id\n" + "".join(f'"{t}",{i}\n' for i, t in enumerate(TEXTS)))
    return path


@pytest.mark.parametrize("fmt", ["json", "text", "csv"])
def test_local_dataset_files(tmp_path: Path, fmt: str) -> None:
    path = write_local(tmp_path, fmt)
    assert list(iter_documents(DatasetConfig(path=fmt, data_files=(str(path),)))) == TEXTS


def test_wrong_text_column(tmp_path: Path) -> None:
    path = write_local(tmp_path, "json")
    cfg = DatasetConfig(path="json", data_files=(str(path),), text_column="body")
    with pytest.raises(ConfigError, match="dataset.text_column") as info:
        list(iter_documents(cfg))
    assert "'body' not found; columns are: text, id" in str(info.value)


def test_missing_data_file(tmp_path: Path) -> None:
    cfg = DatasetConfig(path="json", data_files=(str(tmp_path / "missing.jsonl"),))
    with pytest.raises(ConfigError, match="dataset.data_files"):
        list(iter_documents(cfg))


def test_malformed_data_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text("this is not json\n")
    with pytest.raises(ConfigError, match="dataset.data_files"):
        list(iter_documents(DatasetConfig(path="json", data_files=(str(path),))))


def test_missing_split(tmp_path: Path) -> None:
    cfg = DatasetConfig(path="json", data_files=(str(write_local(tmp_path, "json")),), split="validation")
    with pytest.raises(ConfigError, match="dataset.split"):
        list(iter_documents(cfg))


def test_hub_dataset_unavailable_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets.config
    import huggingface_hub.constants

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ConfigError, match="dataset.path") as info:
        list(iter_documents(DatasetConfig(path="no-such-org/no-such-dataset")))
    assert "could not be loaded (offline?" in str(info.value)


def test_builtin_corpus_repeats_no_paragraph(builtin_docs: list[str]) -> None:
    """The standard library repeats docstrings ("Internal function.", whole option tables); each long
    paragraph is kept once, so one text cannot be both an explainer and a test example."""
    paragraphs = [p.strip() for doc in builtin_docs for p in doc.split("\n\n")]
    long = [p for p in paragraphs if len(p) >= corpus.MIN_DEDUPLICATED_PARAGRAPH]
    assert len(long) == len(set(long)) > 10_000


def test_deduplicate_paragraphs_keeps_the_first_and_short_headings() -> None:
    repeated = "A paragraph long enough to count as real content, repeated."
    documents = [f"Note:\n\n{repeated}", f"Note:\n\n{repeated}\n\nNew text here.", repeated]
    assert corpus.deduplicate_paragraphs(documents) == [
        f"Note:\n\n{repeated}",
        "Note:\n\nNew text here.",
    ]
    assert corpus.corpus_version(DatasetConfig()) == {"builtin_version": corpus.BUILTIN_VERSION}
    assert corpus.corpus_version(DatasetConfig(path="json", data_files=("x.json",))) == {}


def test_eos_shows_as_a_document_separator(tokenizer: PreTrainedTokenizerBase) -> None:
    """Documents are joined by EOS in the cache: a window across the join shows where one ends."""
    from autointerp.texts import DOCUMENT_SEPARATOR, TokenTexts

    texts = TokenTexts(tokenizer)
    first = tokenizer("first document.", add_special_tokens=False)["input_ids"]
    second = tokenizer("Second one", add_special_tokens=False)["input_ids"]
    window = [tokenizer.bos_token_id, *first, tokenizer.eos_token_id, *second]
    assert texts.text(window) == f"first document.{DOCUMENT_SEPARATOR}Second one"
    assert texts.piece(tokenizer.pad_token_id) == ""
