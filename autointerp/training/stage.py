"""`autointerp train`: train the missing sparsify coders of a config once; later runs reuse them.

Each coder is written in sparsify's own format (`cfg.json`, `sae.safetensors`) to
`<sparse_coder.path>/<hookpoint>` through a temporary folder that is renamed into place, so a killed run
leaves no partial coder. `training.json` beside it records the settings that made it (a hash compared on
every later run: a coder trained with other settings is refused until `autointerp train --force`) and its FVU.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from autointerp.coders import FORMATS
from autointerp.config import RunConfig
from autointerp.corpus import iter_documents, iter_sequences
from autointerp.errors import ConfigError, UserError
from autointerp.rundir import (
    TRAINING_FILE,
    atomic_dir,
    config_hash,
    read_json,
    refuse_stale,
    write_json_atomic,
)
from autointerp.subject import Subject, load_subject
from autointerp.training.activations import collect_activations
from autointerp.training.fit import fit_sparse_coder

if TYPE_CHECKING:
    from sparsify import SparseCoder

KEY_VERSION = 1
HELDOUT_FRACTION = 0.05
"""Fraction of the collected sequences (at least one) held out to measure FVU."""

ProgressFn = Callable[[int, int], None]
"""Called with (tokens just processed, total tokens to process: collected once plus trained per epoch)."""

log = logging.getLogger(__name__)


@dataclass
class TrainReport:
    """What `ensure_coders` did per hookpoint, for the CLI to show."""

    status: dict[str, str] = field(default_factory=dict)
    records: dict[str, dict[str, Any]] = field(default_factory=dict)
    """`training.json` of each hookpoint trained now or before."""
    warnings: list[str] = field(default_factory=list)

    @property
    def trained(self) -> list[str]:
        """Hookpoints trained by this call."""
        return [name for name, status in self.status.items() if status == "trained"]


def ensure_coders(config: RunConfig, force: bool = False, progress: ProgressFn | None = None) -> TrainReport:
    """Train a TopK SAE for every hookpoint of `config` without a coder under `sparse_coder.path`.

    Coders trained before with the same settings are kept; with other settings they are an error unless
    `force` (then retrained). Coders not trained by autointerp (no `training.json`) are always kept.
    """
    if not config.sparse_coder.train.enabled:
        raise ConfigError(
            "sparse_coder.train.enabled",
            "is false: the coders at sparse_coder.path are read, not trained; set it to true to train them",
        )
    report = TrainReport()
    path = config.sparse_coder.path
    assert isinstance(path, str)  # the config refuses training into several paths
    root = Path(path).expanduser()
    todo = [hp for hp in config.sparse_coder.hookpoints if _needs_training(config, root, hp, force, report)]
    if todo:
        _require_sparsify()
        _train(config, root, todo, report, progress)
    return report


def training_key(config: RunConfig, hookpoint: str) -> dict[str, Any]:
    """The settings that define a trained coder, nested as config keys; a coder with another key is stale."""
    train = asdict(config.sparse_coder.train)
    del train["enabled"]
    return {
        "version": KEY_VERSION,
        "model": {"path": config.model.path},
        "dataset": config.to_dict()["dataset"],
        "sparse_coder": {"hookpoint": hookpoint, "train": train},
    }


def _needs_training(config: RunConfig, root: Path, hookpoint: str, force: bool, report: TrainReport) -> bool:
    """Whether `hookpoint` needs a coder trained; a stale one is replaced when `force` (once the new one
    is saved, so that a failed retraining keeps it)."""
    folder = root / hookpoint
    if not folder.exists():
        if len(config.sparse_coder.hookpoints) == 1 and _holds_coder(root):
            report.status[hookpoint] = f"kept: the coder in {root}"
            return False
        return True
    if not (folder / TRAINING_FILE).is_file():
        if not _holds_coder(folder):
            raise UserError(f"{folder} exists but holds no sparse coder; delete it to train one there")
        report.status[hookpoint] = "kept: not trained by autointerp"
        return False
    record = read_json(folder / TRAINING_FILE)
    key = training_key(config, hookpoint)
    if record.get("key_hash") == config_hash(key):
        report.status[hookpoint] = "already trained"
        report.records[hookpoint] = record
        return False
    if not force:
        refuse_stale(
            record.get("key"),
            key,
            f"the coder in {folder}",
            "run `autointerp train CONFIG --force` to retrain it, delete it, or set another "
            "sparse_coder.path",
        )
    return True


def _holds_coder(folder: Path) -> bool:
    """Whether the loader finds a coder of a file format directly in `folder`."""
    return any(fmt.detect(folder) for fmt in FORMATS.values() if fmt.detect)


def _require_sparsify() -> None:
    try:
        import sparsify  # noqa: F401
    except ImportError:
        raise UserError(
            "training sparse coders needs eai-sparsify: pip install eai-sparsify (or autointerp[demo])"
        ) from None


def _train(
    config: RunConfig, root: Path, todo: list[str], report: TrainReport, progress: ProgressFn | None
) -> None:
    """Collect every hookpoint's activations in one pass over the corpus, then fit and save each coder."""
    cfg = config.sparse_coder.train
    subject = load_subject(config.model)
    tokens = _corpus_tokens(config, subject, report)
    n_heldout = max(1, round(len(tokens) * HELDOUT_FRACTION))
    counter = _Counter(progress, tokens.numel() + len(todo) * cfg.epochs * tokens[:-n_heldout].numel())
    started = time.perf_counter()
    batch = config.cache.batch_size
    train = collect_activations(subject, todo, tokens[:-n_heldout], batch, counter.advance)
    heldout = collect_activations(subject, todo, tokens[-n_heldout:], batch, counter.advance)
    collected = {"collect_seconds": time.perf_counter() - started, "collected_tokens": tokens.numel()}
    counter.total = counter.done + len(todo) * cfg.epochs * _per_epoch(len(train[todo[0]]), cfg.batch_size)
    for hookpoint in todo:
        coder, fit = fit_sparse_coder(
            train[hookpoint], heldout[hookpoint], cfg, subject.device, counter.advance
        )
        record = {
            "key": training_key(config, hookpoint),
            "key_hash": config_hash(training_key(config, hookpoint)),
            "d_in": coder.d_in,
            "num_latents": coder.num_latents,
            "train_tokens": len(train[hookpoint]),
            "heldout_tokens": len(heldout[hookpoint]),
            **asdict(fit),
            **collected,
            "device": str(subject.device),
        }
        _save(root / hookpoint, coder, record)
        log.info("trained %s: FVU %.3f train, %.3f held out", hookpoint, fit.fvu_train, fit.fvu_heldout)
        report.status[hookpoint] = "trained"
        report.records[hookpoint] = record


def _save(folder: Path, coder: SparseCoder, record: dict[str, Any]) -> None:
    """Write the coder in sparsify's format plus `training.json` to a temporary folder, then rename it.

    A folder trained with other settings (retraining with --force) is replaced; one that another task
    trained with the same settings meanwhile is kept.
    """
    previous = folder / TRAINING_FILE
    stale = previous.is_file() and read_json(previous).get("key_hash") != record["key_hash"]
    with atomic_dir(folder, replace=stale) as tmp:
        coder.save_to_disk(tmp)
        write_json_atomic(tmp / TRAINING_FILE, record)


class _Counter:
    """Forwards progress with a total that is refined once the activations are collected."""

    def __init__(self, progress: ProgressFn | None, total: int):
        self.progress, self.total, self.done = progress, total, 0

    def advance(self, amount: int) -> None:
        self.done += amount
        if self.progress:
            self.progress(amount, max(self.total, self.done))


def _per_epoch(rows: int, batch_size: int) -> int:
    """Activations trained on per epoch (whole minibatches only)."""
    batch = min(batch_size, rows)
    return rows // batch * batch


def _corpus_tokens(config: RunConfig, subject: Subject, report: TrainReport) -> Tensor:
    """The first `train.n_tokens` corpus tokens as `[sequences, ctx_len]`."""
    cfg = config.sparse_coder.train
    wanted = -(-cfg.n_tokens // cfg.ctx_len)
    sequences = iter_sequences(iter_documents(config.dataset), subject.tokenizer, cfg.ctx_len)
    rows = list(islice(sequences, wanted))
    if len(rows) < 2:
        raise ConfigError(
            "dataset.path",
            f"{config.dataset.path!r} yields fewer than two sequences of {cfg.ctx_len} tokens to train on; "
            "use a larger corpus or a smaller sparse_coder.train.ctx_len",
        )
    if len(rows) < wanted:
        report.warnings.append(
            f"the corpus holds {len(rows) * cfg.ctx_len:,} tokens, fewer than sparse_coder.train.n_tokens="
            f"{cfg.n_tokens:,}; training on all of it"
        )
    return torch.from_numpy(np.stack(rows))
