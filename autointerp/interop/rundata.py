"""A finished run directory as exporters read it: config, explanations, scores, cache statistics, tokens."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from autointerp.cache import CacheReader
from autointerp.config import RunConfig, load_config
from autointerp.errors import UserError
from autointerp.examples.compact import ExampleFiller, unpack
from autointerp.records import read_record_at, record_places
from autointerp.rundir import CONFIG_FILE, EXPLANATIONS_DIR, IMPORT_FILE, SCORES_DIR, cache_dir, read_json
from autointerp.score.registry import get_scorer
from autointerp.texts import TokenTexts, load_tokenizer


class RunData:
    """Reads one run directory; everything is read on first use and kept."""

    def __init__(self, run_dir: Path):
        if not (run_dir / CONFIG_FILE).is_file():
            raise UserError(f"{run_dir} has no {CONFIG_FILE}: pass a run directory made by `autointerp`")
        self.run_dir = run_dir
        try:
            self.raw: dict[str, Any] = yaml.safe_load((run_dir / CONFIG_FILE).read_text()) or {}
        except yaml.YAMLError:
            raise UserError(f"{run_dir / CONFIG_FILE} is not valid YAML") from None

    @functools.cached_property
    def config(self) -> RunConfig:
        return load_config(self.run_dir / CONFIG_FILE)

    @property
    def name(self) -> str:
        return str(self.raw.get("name") or self.run_dir.name)

    @property
    def model(self) -> str:
        return str((self.raw.get("model") or {}).get("path") or "")

    @property
    def hookpoints(self) -> list[str]:
        return list((self.raw.get("sparse_coder") or {}).get("hookpoints") or [])

    @functools.cached_property
    def imported(self) -> dict[str, Any] | None:
        """The import record (`import.json`) of an imported explanation set, else None."""
        path = self.run_dir / IMPORT_FILE
        return read_json(path) if path.is_file() else None

    @functools.cache  # noqa: B019 - one RunData per export, kept for its whole life
    def explanations(self, hookpoint: str, examples: bool = True) -> Mapping[int, dict[str, Any]]:
        """Latent -> explanation record, its examples whole (tokens, activations from the cache), or
        without them (`examples=False`, for the record's other fields); each record is read when it is
        looked up."""

        def filled(latent: int, record: dict[str, Any]) -> dict[str, Any]:
            groups = record.get("examples") or {}
            record["examples"] = {name: self._filled(hookpoint, latent, v) for name, v in groups.items()}
            return record

        places = self._places(EXPLANATIONS_DIR, hookpoint)
        return RecordMap(places, filled if examples else _without_examples)

    @functools.cached_property
    def scorers(self) -> list[str]:
        """Score folders (`detection`, `fuzzing.random_explanation`, ...) holding records, sorted."""
        root = self.run_dir / SCORES_DIR
        if not root.is_dir():
            return []
        return sorted(p.name for p in root.iterdir() if p.is_dir() and any(p.glob("*.jsonl")))

    @functools.cache  # noqa: B019
    def scores(self, scorer: str, hookpoint: str, examples: bool = True) -> Mapping[int, dict[str, Any]]:
        """Latent -> score record, its examples whole (tokens, activations and shown text refilled), or
        without them (`examples=False`); each record is read when it is looked up."""

        def filled(latent: int, record: dict[str, Any]) -> dict[str, Any]:
            record["examples"] = self._filled(hookpoint, latent, record.get("examples"))
            return record

        places = self._places(f"{SCORES_DIR}/{scorer}", hookpoint)
        return RecordMap(places, filled if examples else _without_examples)

    @functools.cache  # noqa: B019
    def _places(self, folder: str, hookpoint: str) -> dict[int, tuple[Path, int, float]]:
        """Where each latent's record is in `folder` of the run (one index for the maps with and without
        examples)."""
        return record_places(self.run_dir / folder, hookpoint)

    def _filled(self, hookpoint: str, latent: int, packed: Any) -> list[dict[str, Any]]:
        examples = unpack(packed)
        if isinstance(packed, list):
            return examples  # written before records were packed: whole already
        return self._filler(hookpoint).fill(latent, examples)

    @functools.cache  # noqa: B019
    def _filler(self, hookpoint: str) -> ExampleFiller:
        return ExampleFiller(self.cache(hookpoint), self.texts)

    @functools.cache  # noqa: B019
    def cache(self, hookpoint: str) -> CacheReader:
        return CacheReader(cache_dir(self.run_dir, hookpoint))

    @functools.cache  # noqa: B019
    def stats(self, hookpoint: str) -> dict[str, Any]:
        return self.cache(hookpoint).stats()

    def num_tokens(self, hookpoint: str) -> int:
        reader = self.cache(hookpoint)
        return reader.num_sequences * reader.ctx_len

    @functools.cached_property
    def texts(self) -> TokenTexts:
        return TokenTexts(load_tokenizer(self.model))

    def latents(self, hookpoint: str) -> list[int]:
        """Every latent with an explanation or a score record, sorted."""
        found = set(self.explanations(hookpoint))
        for scorer in self.scorers:
            found |= set(self.scores(scorer, hookpoint))
        return sorted(found)


def headline(scorer_dir: str) -> str:
    """The headline metric of a score folder (`fuzzing.random_explanation` -> fuzzing's)."""
    return get_scorer(scorer_dir.split(".")[0]).headline


class RecordMap(Mapping[int, dict[str, Any]]):
    """Latent -> its latest record (the one `read_records` gives), in latent order, read from its line when
    looked up: memory holds a file offset per latent, not the records (a million of them, with their
    examples, would not fit). The last record looked up is kept, for the several looks an export takes."""

    def __init__(
        self,
        places: dict[int, tuple[Path, int, float]],
        fill: Callable[[int, dict[str, Any]], dict[str, Any]],
    ):
        self._places = places
        """Latent -> (file, offset, `written`) of its record (`records.record_places`)."""
        self._latents = sorted(places)
        self._fill = fill
        self._last: tuple[int, dict[str, Any]] | None = None

    def __getitem__(self, latent: int) -> dict[str, Any]:
        if self._last is not None and self._last[0] == latent:
            return self._last[1]
        path, offset, written = self._places[latent]
        record = read_record_at(path, offset)
        if record is None or record["latent"] != latent or (record.get("written") or 0) != written:
            raise UserError(f"{path} changed while it was read: rerun the export once its stage has finished")
        try:
            self._last = (latent, self._fill(latent, record))
        except (KeyError, TypeError, ValueError) as exc:  # not a KeyError: `.get(latent)` must not hide it
            raise UserError(f"{path}: the record of latent {latent} is malformed ({exc!r})") from None
        return self._last[1]

    def __iter__(self) -> Iterator[int]:
        return iter(self._latents)

    def __len__(self) -> int:
        return len(self._latents)

    def __contains__(self, latent: object) -> bool:
        return latent in self._places


def _without_examples(latent: int, record: dict[str, Any]) -> dict[str, Any]:
    record.pop("examples", None)
    return record
