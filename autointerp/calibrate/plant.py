"""Fit the planted coder of a config: probes for the token classes on the first part of the corpus, plus
noise latents, written as a sparsify folder with its latent table (`planted.json`)."""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import torch

from autointerp.calibrate.classes import TokenClass, token_labels
from autointerp.calibrate.coder import read_planted, write_planted_coder
from autointerp.calibrate.probes import PlantedWeights, fit_probes, noise_latents
from autointerp.config import RunConfig
from autointerp.corpus import iter_documents, iter_sequences, special_token_ids
from autointerp.errors import ConfigError, UserError
from autointerp.rundir import changed_keys, config_hash
from autointerp.subject import load_subject
from autointerp.texts import TokenTexts
from autointerp.training.activations import collect_activations

KEY_VERSION = 1
MIN_FIT_POSITIVES = 10
"""A class with fewer fitting tokens than this is not planted (listed as dropped, with its count)."""


@dataclass(frozen=True)
class PlantSettings:
    """What defines the planted latents besides the config's model, corpus and cache."""

    hookpoint: str
    classes: tuple[TokenClass, ...]
    noise: int = 4
    """Random-direction noise latents."""
    fit_fraction: float = 0.25
    """Fraction of the cached sequences (the first ones) the probes are fitted on; the rest check them."""

    def __post_init__(self) -> None:
        if not 0.0 < self.fit_fraction < 1.0:
            raise UserError(f"--fit-fraction: must be between 0 and 1 (exclusive), got {self.fit_fraction}")
        if self.noise < 0:
            raise UserError(f"--noise: must be 0 or more, got {self.noise}")
        if not self.classes:
            raise UserError("--classes: name at least one token class")


def plant_key(config: RunConfig, settings: PlantSettings) -> dict[str, Any]:
    """The settings a planted coder was made with; a coder with another key is stale."""
    return {
        "version": KEY_VERSION,
        "model": {"path": config.model.path, "dtype": config.model.dtype},
        "dataset": config.to_dict()["dataset"],
        "cache": {"n_tokens": config.cache.n_tokens, "ctx_len": config.cache.ctx_len},
        "seed": config.seed,
        "calibrate": {
            "hookpoint": settings.hookpoint,
            "classes": [c.name for c in settings.classes],
            "explanations": [c.explanation for c in settings.classes],
            "noise": settings.noise,
            "fit_fraction": settings.fit_fraction,
        },
    }


def ensure_planted_coder(config: RunConfig, settings: PlantSettings, folder: Path, force: bool) -> dict:
    """The latent table of the planted coder in `folder`, fitted now unless one with the same key exists."""
    key = plant_key(config, settings)
    planted = read_planted(folder)
    if planted is not None and planted.get("key_hash") == config_hash(key):
        return planted
    if folder.exists():
        if not force:
            changed = ", ".join(changed_keys((planted or {}).get("key", {}), key)) or "format"
            raise UserError(
                f"{folder} holds a planted coder made with other settings ({changed} changed): "
                "pass --force to refit it, or set another out_dir"
            )
        shutil.rmtree(folder)
    weights, planted = fit_planted(config, settings)
    planted |= {"key": key, "key_hash": config_hash(key)}
    write_planted_coder(folder, weights, planted)
    return planted


def fit_planted(config: RunConfig, settings: PlantSettings) -> tuple[PlantedWeights, dict[str, Any]]:
    """Fit the probes and noise latents on the first `fit_fraction` of the cached sequences."""
    subject = load_subject(config.model)
    tokens = _corpus_tokens(config, subject.tokenizer)
    n_fit = max(1, min(len(tokens) - 1, int(len(tokens) * settings.fit_fraction)))
    fit = tokens[:n_fit]
    activations = collect_activations(subject, [settings.hookpoint], fit, config.cache.batch_size)
    x = activations[settings.hookpoint]
    special = torch.tensor(special_token_ids(subject.tokenizer), dtype=torch.long)
    kept_tokens = fit[~torch.isin(fit.long(), special)].numpy()
    labels = token_labels(settings.classes, kept_tokens, TokenTexts(subject.tokenizer).piece)
    counts = labels.sum(0)
    kept = [i for i, count in enumerate(counts) if count >= MIN_FIT_POSITIVES]
    if not kept:
        raise UserError(
            f"calibrate: no token class has {MIN_FIT_POSITIVES} tokens in the first {n_fit} sequences "
            "(the fitting part of the corpus): cache more tokens (cache.n_tokens) or raise --fit-fraction"
        )
    probes = fit_probes(x, labels[:, kept], config.seed)
    rate = float(np.median(counts[kept])) / len(labels)
    parts = [probes] + ([noise_latents(x, settings.noise, rate, config.seed)] if settings.noise else [])
    weights = PlantedWeights.concat(parts)
    fired = (weights.encode(x) > 0).numpy()
    latents = [
        {
            "latent": latent,
            "kind": "probe",
            "class": settings.classes[c].name,
            "explanation": settings.classes[c].explanation,
            "fit": precision_recall(fired[:, latent], labels[:, c]),
        }
        for latent, c in enumerate(kept)
    ]
    latents += [
        {
            "latent": len(kept) + i,
            "kind": "noise",
            "fit": {"firing_rate": float(fired[:, len(kept) + i].mean())},
        }
        for i in range(settings.noise)
    ]
    dropped = [
        {"class": settings.classes[i].name, "fit_tokens": int(counts[i])}
        for i in range(len(settings.classes))
        if i not in kept
    ]
    planted = {
        "hookpoint": settings.hookpoint,
        "fit_sequences": n_fit,
        "fit_tokens": len(labels),
        "fit_tokens_sha256": tokens_digest(fit),
        "latents": latents,
        "dropped": dropped,
    }
    return weights, planted


def _corpus_tokens(config: RunConfig, tokenizer) -> torch.Tensor:
    """The sequences the cache stage will cache, `[sequences, ctx_len]` (tokenized the same way)."""
    wanted = -(-config.cache.n_tokens // config.cache.ctx_len)
    sequences = iter_sequences(iter_documents(config.dataset), tokenizer, config.cache.ctx_len)
    rows = list(islice(sequences, wanted))
    if len(rows) < 2:
        raise ConfigError(
            "cache.n_tokens",
            f"calibrate needs at least two sequences of {config.cache.ctx_len} tokens (one to fit the probes "
            "on, one to check them); use a larger corpus or cache more tokens",
        )
    return torch.from_numpy(np.stack(rows))


def tokens_digest(tokens: torch.Tensor) -> str:
    """A short hash of int32 token rows (to check the cache holds the sequences the probes were fitted on)."""
    return hashlib.sha256(np.ascontiguousarray(tokens.numpy(), dtype=np.int32).tobytes()).hexdigest()[:16]


def precision_recall(fired: np.ndarray, truth: np.ndarray) -> dict[str, Any]:
    """Tokens of the class, tokens fired on, precision and recall of `fired` against `truth` (bools)."""
    hits = int((fired & truth).sum())
    return {
        "tokens": int(truth.sum()),
        "fired": int(fired.sum()),
        "precision": hits / int(fired.sum()) if fired.any() else None,
        "recall": hits / int(truth.sum()) if truth.any() else None,
    }
