"""Planted latents: linear probes fitted to token classes, and random-direction noise latents.

Every latent is `relu(w . (x - mean) + b)` on the hookpoint's activations `x`. A probe's `w` is a
class-balanced logistic regression on standardised activations; its bias is then moved so the latent fires
exactly where the fitted logit passes the threshold with the best F1 on the fitting tokens. A noise latent's
`w` is a random direction whose bias makes it fire on a chosen fraction of the fitting tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

L2 = 1e-4
"""Weight decay of the probes (on standardised activations)."""
MAX_ITER = 300


@dataclass(frozen=True)
class PlantedWeights:
    """A linear encoder with ReLU: `acts = relu((x - mean) @ w.T + bias)`; `w` is `[latents, d_in]`."""

    w: Tensor
    bias: Tensor
    mean: Tensor

    def encode(self, x: Tensor) -> Tensor:
        return torch.relu((x - self.mean) @ self.w.T + self.bias)

    @staticmethod
    def concat(parts: list[PlantedWeights]) -> PlantedWeights:
        return PlantedWeights(
            torch.cat([p.w for p in parts]), torch.cat([p.bias for p in parts]), parts[0].mean
        )


def fit_probes(x: Tensor, labels: np.ndarray, seed: int) -> PlantedWeights:
    """One probe per column of the bool `labels [tokens, classes]` on float32 activations `x [tokens, d]`."""
    torch.manual_seed(seed)
    mean, scale = x.mean(0), x.std(0).clamp_min(1e-6)
    z = (x - mean) / scale
    y = torch.from_numpy(labels).float()
    positives = y.sum(0).clamp_min(1.0)
    pos_weight = (len(y) - positives) / positives
    w = torch.zeros(z.shape[1], y.shape[1], requires_grad=True)
    b = torch.zeros(y.shape[1], requires_grad=True)
    optimizer = torch.optim.LBFGS([w, b], max_iter=MAX_ITER, line_search_fn="strong_wolfe")
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=pos_weight)

    def closure() -> Tensor:
        optimizer.zero_grad()
        loss = loss_fn(z @ w + b, y) + L2 * (w**2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        logits = z @ w + b
        thresholds = torch.tensor([_best_f1_threshold(logits[:, c], labels[:, c]) for c in range(y.shape[1])])
        return PlantedWeights((w / scale[:, None]).T.contiguous(), b - thresholds, mean)


def _best_f1_threshold(logits: Tensor, labels: np.ndarray) -> float:
    """The logit cut (midway between two fitted logits) whose `logit > cut` has the best F1."""
    order = torch.argsort(logits, descending=True)
    sorted_logits = logits[order]
    hits = torch.from_numpy(labels)[order].double().cumsum(0)
    kept = torch.arange(1, len(logits) + 1, dtype=torch.float64)
    f1 = 2 * hits / (kept + float(labels.sum()))
    best = int(torch.argmax(f1))
    below = sorted_logits[best + 1] if best + 1 < len(sorted_logits) else sorted_logits[best] - 1
    return float((sorted_logits[best] + below) / 2)


def noise_latents(x: Tensor, count: int, rate: float, seed: int) -> PlantedWeights:
    """`count` random directions (in standardised space), each firing on a `rate` fraction of `x`."""
    generator = torch.Generator().manual_seed(seed)
    mean, scale = x.mean(0), x.std(0).clamp_min(1e-6)
    directions = torch.randn(count, x.shape[1], generator=generator)
    directions = directions / directions.norm(dim=1, keepdim=True)
    projections = ((x - mean) / scale) @ directions.T
    cuts = torch.quantile(projections, 1.0 - rate, dim=0) if len(x) else torch.zeros(count)
    return PlantedWeights((directions / scale).contiguous(), -cuts, mean)
