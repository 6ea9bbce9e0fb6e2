"""Intervention scoring: steer a latent's decoder direction into the subject model at a strength tuned to a
target KL, continue prompts clean and steered, and measure how much more likely the subject (read as a base
LM) finds the explanation after the steered text than after the clean text.

Every coder's decoder writes into the output of its module (SAE: the residual stream; transcoder: the MLP
output; neurons: the down projection's output), so the direction is always added to that module's output.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from autointerp.config import InterventionConfig
from autointerp.subject import ActivationReader, Subject, Tap, find_module

SCORE_TEMPLATE = "\n\nThe text above is about:"
"""Appended to each prompt + continuation, then ` {explanation}`, whose tokens are scored."""
N_PROMOTED = 10
"""Tokens listed in `SteeringEffect.promoted`."""
MAX_TRIALS = 12
"""Forward passes spent tuning one latent's strength."""
KL_TOLERANCE = 0.05
"""Relative distance to the target KL at which the search stops."""
MIN_STRENGTH, MAX_STRENGTH = 1e-3, 256.0
"""Strengths searched, in multiples of the mean norm at the hookpoint."""


@dataclass
class SteeringEffect:
    """What steering one latent did to the subject's predictions on the prompts."""

    latent: int
    strength: float
    """Multiple of the mean norm at the hookpoint added along the unit decoder direction."""
    kl: float
    """Mean over prompts of KL(clean || steered) of the next-token distribution after the prompt (nats)."""
    clean: list[list[int]]
    """Greedy continuation token ids per prompt, unsteered."""
    steered: list[list[int]]
    """Greedy continuation token ids per prompt, steered (at the positions `InterventionConfig.positions`
    says)."""
    promoted: list[tuple[int, float]]
    """Tokens whose next-token log-probability rose most (mean over prompts), with the rise."""


@contextmanager
def added_to_output(
    module: nn.Module, vector: Tensor, start: int = 0, stop: int | None = None
) -> Iterator[None]:
    """Add `vector` to `module`'s output (its hidden-state element, if a tuple) at positions
    `start <= p < stop` (`stop` None: no end). Positions count on across the forward calls made inside the
    block, so a prompt followed by cached one-token generation steps is steered where a full pass would be."""
    seen = 0

    def hook(_module: nn.Module, _args: tuple, output: Tensor | tuple) -> Tensor | tuple:
        nonlocal seen
        hidden = output[0] if isinstance(output, tuple) else output
        length = hidden.shape[-2]
        lo, hi = max(start - seen, 0), length if stop is None else min(stop - seen, length)
        seen += length
        if lo < hi:
            delta = torch.zeros_like(hidden)
            delta[..., lo:hi, :] = vector
            hidden = hidden + delta
        return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

    handle = module.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


class Steering:
    """Steers the latents of one coder on a fixed batch of equal-length prompts."""

    def __init__(
        self,
        subject: Subject,
        module_path: str,
        directions: Tensor,
        cfg: InterventionConfig,
        prompts: Tensor,
        mean_norm: float | None = None,
    ):
        """`module_path`: the coder's module (directions are added to its output); `directions`:
        decoder rows `[num_latents, d]`; `prompts`: token ids `[n_prompts, prompt_tokens]` as the model
        should read them (BOS first if it expects one); `mean_norm`: the activation norm strengths are
        multiples of (None: measured on these prompts)."""
        self.subject = subject
        self.module = find_module(subject.base_model, module_path)
        self.directions = directions
        self.cfg = cfg
        self.prompts = prompts.to(subject.device)
        if mean_norm is None:
            mean_norm = _mean_norm(ActivationReader(subject.base_model, [Tap(module_path)])(self.prompts))
        self.mean_norm = mean_norm
        length = self.prompts.shape[1]
        self.steered_positions = (length - 1, length) if cfg.positions == "last" else (1, None)
        """Where the vector is added: the last prompt position, or every position after the first (BOS /
        attention sink), generated tokens included."""
        self.clean_logprobs, self.clean = self._generate(None)

    @torch.inference_mode()
    def effect(self, latent: int, strength: float | None = None) -> SteeringEffect:
        """Steer `latent` at `strength` (None: tuned to the target KL) and continue every prompt."""
        direction = self.directions[latent].to(self.subject.device, torch.float32)
        direction = (direction / direction.norm().clamp_min(1e-12) * self.mean_norm).to(self.subject.dtype)
        if strength is None:
            strength = self._tune(direction)
        logprobs, steered = self._generate(strength * direction)
        rise = (logprobs - self.clean_logprobs).mean(0)
        top = rise.topk(min(N_PROMOTED, rise.numel()))
        promoted = list(zip(top.indices.tolist(), top.values.tolist(), strict=True))
        kl = _kl(self.clean_logprobs, logprobs)
        return SteeringEffect(latent, strength, kl, self.clean, steered, promoted)

    @torch.inference_mode()
    def explanation_score(self, effect: SteeringEffect, explanation: str) -> tuple[float, list[float]]:
        """Mean over prompts of the per-token log-likelihood of the explanation after the steered text
        minus after the clean text, with the subject as scorer LM; also the per-prompt differences."""
        suffix, n_scored = self._suffix(explanation)
        prompts = self.prompts.tolist()
        rows = [p + c + suffix for p, c in zip(prompts * 2, effect.steered + effect.clean, strict=True)]
        ids = torch.tensor(rows, device=self.subject.device)
        logits = self.subject.model(input_ids=ids, use_cache=False, logits_to_keep=n_scored + 1).logits
        logprobs = logits[:, :-1].float().log_softmax(-1)
        per_row = logprobs.gather(-1, ids[:, -n_scored:, None]).squeeze(-1).mean(-1)
        diffs = (per_row[: len(prompts)] - per_row[len(prompts) :]).tolist()
        return sum(diffs) / len(diffs), diffs

    def _suffix(self, explanation: str) -> tuple[list[int], int]:
        """Template + explanation token ids, and how many trailing ones are the explanation's."""
        if not explanation.strip():
            raise ValueError("the explanation is empty")
        encode = self.subject.tokenizer.encode
        head = encode(SCORE_TEMPLATE, add_special_tokens=False)
        full = encode(f"{SCORE_TEMPLATE} {explanation.strip()}", add_special_tokens=False)
        return full, len(full) - _shared_prefix(head, full)

    def _tune(self, direction: Tensor) -> float:
        """Strength whose KL is closest to the target (log ratio) among the trials of a bracketing search."""
        target = self.cfg.target_kl
        lo: tuple[float, float] | None = None
        hi: tuple[float, float] | None = None
        strength, best = 1.0, (1.0, math.inf)
        for _ in range(MAX_TRIALS):
            kl = self._kl_at(strength * direction)
            if _miss(kl, target) < _miss(best[1], target):
                best = (strength, kl)
            if abs(kl - target) <= KL_TOLERANCE * target:
                break
            if kl < target:
                lo = (strength, kl)
            else:
                hi = (strength, kl)
            if (hi is None and strength >= MAX_STRENGTH) or (lo is None and strength <= MIN_STRENGTH):
                break
            strength = _next_strength(lo, hi, target)
        return best[0]

    def steer(self, vector: Tensor) -> AbstractContextManager[None]:
        """Add `vector` at the steered positions for the forward calls inside the block."""
        return added_to_output(self.module, vector, *self.steered_positions)

    def _kl_at(self, vector: Tensor) -> float:
        with self.steer(vector):
            logits = self.subject.model(input_ids=self.prompts, use_cache=False, logits_to_keep=1).logits
        return _kl(self.clean_logprobs, logits[:, -1].float().log_softmax(-1))

    @torch.inference_mode()
    def _generate(self, vector: Tensor | None) -> tuple[Tensor, list[list[int]]]:
        """Next-token log-probabilities after the prompts `[n, vocab]`, and greedy continuations."""
        model = self.subject.model
        with nullcontext() if vector is None else self.steer(vector):
            out = model(input_ids=self.prompts, use_cache=True, logits_to_keep=1)
            first = out.logits[:, -1].float().log_softmax(-1)
            tokens = [first.argmax(-1)]
            for _ in range(self.cfg.new_tokens - 1):
                cache = out.past_key_values
                out = model(input_ids=tokens[-1][:, None], past_key_values=cache, use_cache=True)
                tokens.append(out.logits[:, -1].argmax(-1))
        return first, torch.stack(tokens, dim=1).tolist()


def _shared_prefix(a: list[int], b: list[int]) -> int:
    """Length of the common prefix (a token merged across the boundary counts as the explanation's)."""
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))


def _mean_norm(acts: dict[Tap, Tensor]) -> float:
    """Mean L2 norm of the activations, leaving out position 0 (BOS / attention sink) when there are more."""
    (x,) = acts.values()
    x = x[:, 1:] if x.shape[1] > 1 else x
    return x.float().norm(dim=-1).mean().item()


def _kl(clean: Tensor, steered: Tensor) -> float:
    """Mean over rows of KL(clean || steered), both given as log-probabilities."""
    return (clean.exp() * (clean - steered)).sum(-1).mean().item()


def _miss(kl: float, target: float) -> float:
    return abs(math.log(max(kl, 1e-12) / target))


def _next_strength(lo: tuple[float, float] | None, hi: tuple[float, float] | None, target: float) -> float:
    """Next trial: grow or shrink by the small-strength law KL ~ strength^2 until the target is bracketed,
    then interpolate log KL linearly in log strength, kept inside the middle of the bracket."""
    if hi is None:
        assert lo is not None
        factor = min(max(math.sqrt(target / max(lo[1], 1e-12)), 2.0), 16.0)
        return min(lo[0] * factor, MAX_STRENGTH)
    if lo is None:
        factor = max(min(math.sqrt(target / hi[1]), 0.5), 1 / 16)
        return max(hi[0] * factor, MIN_STRENGTH)
    x_lo, x_hi = math.log(lo[0]), math.log(hi[0])
    y_lo, y_hi = math.log(max(lo[1], 1e-12)), math.log(hi[1])
    t = (math.log(target) - y_lo) / (y_hi - y_lo) if y_hi > y_lo else 0.5
    return math.exp(x_lo + min(max(t, 0.1), 0.9) * (x_hi - x_lo))
