"""The explainer protocol behind one object: prompts, sampling params (prefill, stop strings), parsing.

Used by the explain stage (activating examples in, explanation out) and by intervention scoring's
output-side explanations (steered continuations in, explanation out).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from autointerp import saebench_protocol as saebench
from autointerp.cache import CacheReader
from autointerp.config import ExplainerConfig, RunConfig
from autointerp.examples import Example, LatentExamples
from autointerp.examples.recipe import explainer_view_key
from autointerp.examples.render import ShownExample
from autointerp.explain.parse import NEW_TURN, ParseError, parse_explanation
from autointerp.explain.prompts import (
    PROMPT_VERSION,
    build_messages,
    demonstrated_explanations,
    output_messages,
)
from autointerp.llm import LLMRequest, LLMResponse, SamplingParams, with_resolved_backends
from autointerp.rundir import config_hash
from autointerp.texts import TokenTexts

__all__ = ["Explainer", "ParseError"]


class Explainer:
    """Builds explainer requests from a config's `explainer:` section and reads explanations from answers."""

    def __init__(self, cfg: ExplainerConfig):
        self.cfg = cfg
        stop = () if cfg.kind == "saebench" else (NEW_TURN,) if cfg.reasoning else ("\n",)
        self.params = SamplingParams(temperature=cfg.temperature, max_tokens=cfg.max_tokens, stop=stop)

    def request(self, examples: LatentExamples, texts: TokenTexts) -> LLMRequest:
        """Explain one latent from its explainer view (and its negatives, for the contrastive kind)."""
        if self.cfg.kind == "saebench":
            cutoff = self.cfg.highlight_threshold * examples.max_activation
            documents = [
                saebench.render(texts.pieces(e.tokens), (e.activations > cutoff).tolist())
                for e in examples.explain
            ]
            return LLMRequest(saebench.generation_messages(documents), self.params)
        messages = build_messages(
            [_shown(e, texts) for e in examples.explain],
            examples.max_activation,
            show_activations=self.cfg.show_activations,
            threshold=self.cfg.highlight_threshold,
            negatives=[_shown(e, texts) for e in examples.explain_negatives],
            contrastive=self.cfg.kind == "contrastive",
            reasoning=self.cfg.reasoning,
        )
        return LLMRequest(messages, self.params)

    def output_request(
        self, prompts: Sequence[str], continuations: Sequence[str], promoted: Sequence[str]
    ) -> LLMRequest:
        """Explain what steering a latent makes the model write (intervention scoring's output side)."""
        return LLMRequest(output_messages(prompts, continuations, promoted, self.cfg.reasoning), self.params)

    def parse(self, request: LLMRequest, response: LLMResponse) -> str:
        """The explanation in `response` to `request`; raises ParseError when there is none, or when what
        stands there explains nothing (a lead-in ending in a colon, a copy of a demonstration)."""
        if self.cfg.kind == "saebench":
            explanation = saebench.parse_explanation(response.text)
            if not explanation:
                raise ParseError("the answer holds no explanation after 'activates on'")
            return explanation
        last = request.messages[-1]
        answer = last.content + response.text if last.role == "assistant" else response.text
        explanation = parse_explanation(answer, truncated=response.finish_reason == "length")
        if explanation.rstrip().endswith(":"):
            raise ParseError(f"the explanation is a lead-in with nothing after it: {explanation!r}")
        if _normalised(explanation) in {_normalised(e) for e in demonstrated_explanations()}:
            raise ParseError(f"the explanation copies a prompt demonstration: {explanation!r}")
        return explanation

    @staticmethod
    def record_key(config: RunConfig, reader: CacheReader) -> dict[str, Any]:
        """What defines an explanation record: the cache, the explainer view's recipe and the explainer;
        latent selection is not part of it (a sample may grow), nor are keys that shape only the test set."""
        return {
            "cache": reader.manifest["config_hash"],
            **explainer_view_key(config),
            "explainer": Explainer(config.explainer).key(),
        }

    @staticmethod
    def record_hashes(config: RunConfig, reader: CacheReader) -> set[str]:
        """The config hashes of the explanation records that `config` counts as its own: its key's, and the
        one earlier versions wrote here, with an `auto` backend resolved."""
        configs = (config, with_resolved_backends(config))
        return {config_hash(Explainer.record_key(c, reader)) for c in configs}

    def key(self) -> dict[str, Any]:
        """The settings that define explanations made by this explainer; the backend as configured (`auto`
        resolves per machine, and records say which one answered)."""
        cfg = self.cfg
        return {
            "kind": cfg.kind,
            "backend": cfg.backend,
            "model": cfg.model,
            "temperature": cfg.temperature,
            "max_tokens": cfg.max_tokens,
            "show_activations": cfg.show_activations,
            "reasoning": cfg.reasoning,
            "highlight_threshold": cfg.highlight_threshold,
            "prompt_version": PROMPT_VERSION,
        }


def _normalised(text: str) -> str:
    return " ".join(text.lower().strip(" .").split())


def _shown(example: Example, texts: TokenTexts) -> ShownExample:
    return ShownExample(texts.pieces(example.tokens), example.activations)
