"""Activations to train on: module outputs of the subject model over token sequences, minus special tokens."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from autointerp.corpus import special_token_ids
from autointerp.subject import ActivationReader, Subject, Tap

Advance = Callable[[int], None]
"""Called with the number of tokens just processed."""


def collect_activations(
    subject: Subject,
    module_paths: Sequence[str],
    tokens: Tensor,
    batch_size: int,
    advance: Advance | None = None,
) -> dict[str, Tensor]:
    """Float32 CPU activations `[unmasked tokens, width]` at the output of each module, in token order.

    `tokens` is `[sequences, ctx_len]`; the forward pass stops after the deepest module, and positions
    holding special tokens (BOS, EOS, pad) are run but not returned.
    """
    reader = ActivationReader(subject.base_model, [Tap(path) for path in module_paths])
    special = torch.tensor(special_token_ids(subject.tokenizer), dtype=torch.long)
    keep = ~torch.isin(tokens.long(), special)
    rows = int(keep.sum())
    collected: dict[str, Tensor] = {}
    filled = 0
    for start in range(0, len(tokens), batch_size):
        batch = tokens[start : start + batch_size].long()
        batch_keep = keep[start : start + batch_size].reshape(-1).to(subject.device)
        captured = reader(batch.to(subject.device))
        for path in module_paths:
            x = captured[Tap(path)].reshape(batch.numel(), -1)[batch_keep]
            if path not in collected:
                collected[path] = torch.empty(rows, x.shape[-1], dtype=torch.float32)
            collected[path][filled : filled + len(x)] = x.float().cpu()
        filled += int(batch_keep.sum())
        if advance:
            advance(batch.numel())
    return collected
