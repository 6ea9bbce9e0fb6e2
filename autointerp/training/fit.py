"""Fit a sparsify TopK SAE to activations held in memory: Adam over shuffled minibatches.

The model, its FVU and AuxK losses and its decoder-norm constraint are sparsify's own; the loop follows
sparsify's Trainer (decoder bias initialised at the data mean, unit-norm decoder rows with the parallel
gradient removed, linear warmup then linear decay) without its full-model forward pass per step.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from autointerp.config import TrainConfig
from autointerp.errors import ConfigError

if TYPE_CHECKING:
    from sparsify import SparseCoder

DEAD_AFTER_TOKENS = 10_000_000
"""A latent is dead (and trained by AuxK) after this many tokens without firing, or one epoch if shorter."""
WARMUP_FRACTION = 0.05
"""Fraction of the steps over which the learning rate warms up linearly."""
EVAL_BATCH = 4096


@dataclass(frozen=True)
class FitResult:
    """FVUs (fraction of variance unexplained, over whole sets) and costs of one fit."""

    fvu_init: float
    """Held-out FVU at initialisation."""
    fvu_train: float
    fvu_heldout: float
    dead_latents: int
    """Latents that never fire on the training activations after training."""
    steps: int
    tokens_seen: int
    """Training activations processed over all epochs."""
    seconds: float


def fit_sparse_coder(
    train: Tensor,
    heldout: Tensor,
    cfg: TrainConfig,
    device: torch.device,
    advance: Callable[[int], None] | None = None,
) -> tuple[SparseCoder, FitResult]:
    """Train a `sparsify.SparseCoder` on `train` `[tokens, width]`; returns it (on CPU) and a FitResult."""
    from sparsify import SparseCoder, SparseCoderConfig

    num_latents = cfg.num_latents or train.shape[1] * cfg.expansion_factor
    if num_latents < cfg.k:
        raise ConfigError("sparse_coder.train.k", f"is larger than the {num_latents} latents of the SAE")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        coder = SparseCoder(train.shape[1], SparseCoderConfig(num_latents=num_latents, k=cfg.k))
    coder.to(device)
    with torch.no_grad():
        coder.b_dec.copy_(train.mean(0))
    with _decoder_for(device):
        fvu_init = evaluate(coder, heldout)[0]
        started = time.perf_counter()
        steps, batch = _optimize(coder, train, cfg, advance)
        seconds = time.perf_counter() - started
        fvu_train, fired = evaluate(coder, train)
        fvu_heldout = evaluate(coder, heldout)[0]
    result = FitResult(fvu_init, fvu_train, fvu_heldout, int((~fired).sum()), steps, steps * batch, seconds)
    return coder.cpu(), result


def _optimize(
    coder: SparseCoder,
    train: Tensor,
    cfg: TrainConfig,
    advance: Callable[[int], None] | None,
) -> tuple[int, int]:
    """Run all epochs; returns (steps, tokens per step)."""
    batch = min(cfg.batch_size, len(train))
    per_epoch = len(train) // batch
    total = per_epoch * cfg.epochs
    lr = cfg.lr or 2e-4 / math.sqrt(coder.num_latents / 2**14)
    optimizer = torch.optim.Adam(coder.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, _warmup_then_decay(total))
    since_fired = torch.zeros(coder.num_latents, dtype=torch.long, device=coder.device)
    dead_after = min(DEAD_AFTER_TOKENS, len(train))
    generator = torch.Generator().manual_seed(cfg.seed)
    for _ in range(cfg.epochs):
        order = torch.randperm(len(train), generator=generator)
        for step in range(per_epoch):
            x = train[order[step * batch : (step + 1) * batch]].to(coder.device)
            dead = since_fired >= dead_after if cfg.auxk_alpha > 0 else None
            out = coder(x, dead_mask=dead)
            (out.fvu + cfg.auxk_alpha * out.auxk_loss).backward()
            coder.remove_gradient_parallel_to_decoder_directions()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            schedule.step()
            coder.set_decoder_norm_to_unit_norm()
            since_fired += len(x)
            since_fired[out.latent_indices.flatten()] = 0
            if advance:
                advance(len(x))
    return total, batch


def _warmup_then_decay(total: int) -> Callable[[int], float]:
    warmup = max(1, round(total * WARMUP_FRACTION))
    return lambda step: min((step + 1) / warmup, max(0.0, (total - step) / max(1, total - warmup)))


@torch.no_grad()
def evaluate(coder: SparseCoder, x: Tensor) -> tuple[float, Tensor]:
    """FVU of `coder` on all of `x` (squared error over total variance), and which latents fired."""
    mean = x.mean(0)
    chunks = range(0, len(x), EVAL_BATCH)
    variance = sum(float((x[start : start + EVAL_BATCH] - mean).pow(2).sum()) for start in chunks)
    total_variance = torch.tensor(variance, device=coder.device)
    fired = torch.zeros(coder.num_latents, dtype=torch.bool, device=coder.device)
    fvu = 0.0
    for start in chunks:
        out = coder(x[start : start + EVAL_BATCH].to(coder.device), total_variance=total_variance)
        fvu += float(out.fvu)
        fired[out.latent_indices.flatten()] = True
    return fvu, fired.cpu()


@contextmanager
def _decoder_for(device: torch.device) -> Iterator[None]:
    """sparsify decodes with a Triton kernel whenever Triton is installed, which fails on CPU tensors:
    use its eager decoder while training off the GPU."""
    import sparsify.sparse_coder as module
    from sparsify.utils import eager_decode

    saved = module.decoder_impl
    if device.type != "cuda":
        module.decoder_impl = eager_decode
    try:
        yield
    finally:
        module.decoder_impl = saved
