"""Every scorer, described once: its headline metric, chance level, phase, whether it scores an explanation
and has a random-explanation control, what defines its records, how it builds a latent's task, and its
pooled metrics.

Adding a scorer is one module (its task) and one `register(Scorer(...))` entry here; the config's
`ScorerName` lists the same names (a test checks that they agree).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from autointerp.config import RunConfig
from autointerp.embedding import Embedder
from autointerp.errors import ConfigError
from autointerp.llm import resolve_backend
from autointerp.score.base import Outcome, ScoringTask, TaskInputs
from autointerp.score.embedding import embedding_outcome
from autointerp.score.items import detection_items, fuzzing_items, intruder_trials
from autointerp.score.metrics import chance_level
from autointerp.score.pooled import (
    Examples,
    no_pooled,
    pooled_accuracy,
    pooled_auroc,
    pooled_classification,
    pooled_pearson,
)
from autointerp.score.saebench import SAEBenchTask
from autointerp.score.simulation import SimulationTask
from autointerp.score.surprisal import SurprisalTask
from autointerp.score.tasks import ClassificationTask, IntruderTask

Phase = Literal["scorer_llm", "surprisal", "embedding", "intervention"]
"""What a scorer needs loaded: the scorer LLM, the surprisal base LM (both: `task` builds LLM requests),
the embedding model (`embed` scores with it), or the steered subject model (the intervention phase)."""
PHASES: tuple[Phase, ...] = ("scorer_llm", "surprisal", "embedding", "intervention")
"""The order phases run in."""
LLM_PHASES: tuple[Phase, ...] = ("scorer_llm", "surprisal")


def _no_settings(config: RunConfig) -> dict[str, Any]:
    return {}


def _no_warnings(config: RunConfig) -> list[str]:
    return []


def _default_chance(metric: str, positive_fraction: float, config: RunConfig) -> float | None:
    return chance_level(metric, positive_fraction)


@dataclass(frozen=True)
class Scorer:
    name: str
    """The name in `scorers:` and the folder `scores/<name>/`."""
    headline: str
    """The metric reported as the latent's score."""
    phase: Phase
    needs_explanation: bool = True
    """False: scores the latent's examples alone (the intruder)."""
    controllable: bool = True
    """Whether `controls.random_explanation` scores it with another latent's explanation too."""
    settings: Callable[[RunConfig], dict[str, Any]] = _no_settings
    """The config values that define its records (beside the explanations and the test set)."""
    task: Callable[[TaskInputs], ScoringTask] | None = None
    """One latent's LLM requests and how their answers become metrics (LLM phases)."""
    embed: Callable[[Embedder, TaskInputs], Outcome] | None = None
    """One latent's outcome from the embedding model (embedding phase)."""
    pooled: Callable[[Examples], dict[str, Any]] = no_pooled
    """A metric over the examples of many latents at once (a sample of at most 2,000 latents)."""
    pooled_needs_activations: bool = False
    """Whether `pooled` reads the examples' activations (refilled from the cache: records leave them out)."""
    chance: Callable[[str, float, RunConfig], float | None] = _default_chance
    """What a random guesser gets on a metric, given the positive fraction of the excerpts."""
    warnings: Callable[[RunConfig], list[str]] = _no_warnings
    """Caveats of this config for this scorer, printed with the score report (e.g. far from the paper)."""


SCORERS: dict[str, Scorer] = {}
"""Name -> scorer, in the order summaries and reports list them."""


def register(scorer: Scorer) -> Scorer:
    """Add a scorer to the table; a second scorer of the same name is refused."""
    if scorer.name in SCORERS:
        raise ValueError(f"a scorer named {scorer.name!r} is already registered")
    if scorer.phase in LLM_PHASES and scorer.task is None:
        raise ValueError(f"scorer {scorer.name!r} runs in the {scorer.phase} phase but builds no task")
    if scorer.phase == "embedding" and scorer.embed is None:
        raise ValueError(f"scorer {scorer.name!r} runs in the embedding phase but has no embed function")
    SCORERS[scorer.name] = scorer
    return scorer


def get_scorer(name: str) -> Scorer:
    """The registered scorer of this name; an unknown name is a config error listing the valid ones."""
    if name not in SCORERS:
        raise ConfigError("scorers", f"unknown scorer {name!r}; registered: {', '.join(SCORERS)}")
    return SCORERS[name]


def answering_backend(config: RunConfig, scorer: Scorer) -> str | None:
    """The backend that answers the scorer's LLM requests on this machine (None: it asks no LLM); keys hold
    the configured one, which may be `auto`."""
    if scorer.phase == "scorer_llm":
        return resolve_backend(config.scorer_llm.backend)
    if scorer.phase == "surprisal":
        return resolve_backend(config.surprisal_llm.backend)
    return None


def _scorer_llm(config: RunConfig) -> dict[str, Any]:
    settings = config.scorer_llm
    return {"backend": settings.backend, "model": settings.model}


def _classification_settings(config: RunConfig) -> dict[str, Any]:
    settings = _scorer_llm(config) | {"examples_per_prompt": config.scorer.examples_per_prompt}
    if config.scorer.examples_per_prompt > 1:
        settings["max_tokens"] = config.scorer.max_tokens
    return settings


def _classification(inputs: TaskInputs, items: list) -> ClassificationTask:
    scorer = inputs.config.scorer
    return ClassificationTask(
        inputs.target.scorer,
        inputs.explanation,
        items,
        scorer.examples_per_prompt,
        inputs.rng("batches"),
        scorer.max_tokens,
    )


def _detection_task(inputs: TaskInputs) -> ScoringTask:
    return _classification(inputs, detection_items(inputs.examples, inputs.texts))


def _highlight_tell(config: RunConfig) -> list[str]:
    """Held-out windows centred like the explainer's put a correct highlight on the middle token, which a
    wrong one in an activating excerpt never covers: a positional tell (0.93 balanced accuracy)."""
    examples = config.examples
    if (
        examples.test_windows == "like_explain"
        and examples.center
        and config.scorer.fuzzing_mode == "activating"
    ):
        return [
            "fuzzing with examples.test_windows: like_explain, examples.center: true and "
            "scorer.fuzzing_mode: activating leaks the label by position (correct highlights always cover "
            "the middle token); use test_windows: random or fuzzing_mode: non_activating"
        ]
    return []


def _fuzzing_task(inputs: TaskInputs) -> ScoringTask:
    mode, threshold = inputs.config.scorer.fuzzing_mode, inputs.config.explainer.highlight_threshold
    items = fuzzing_items(inputs.examples, inputs.texts, mode, inputs.rng("fuzz"), threshold)
    return _classification(inputs, items)


def _simulation_task(inputs: TaskInputs) -> ScoringTask:
    items = detection_items(inputs.examples, inputs.texts)
    return SimulationTask(inputs.explanation, items, inputs.texts, inputs.config.scorer.simulation_logprobs)


def _intruder_task(inputs: TaskInputs) -> ScoringTask:
    size, threshold = inputs.config.scorer.intruder_size, inputs.config.explainer.highlight_threshold
    return IntruderTask(
        intruder_trials(inputs.examples, inputs.texts, size, inputs.rng("intruder"), threshold)
    )


def _intruder_chance(metric: str, positive_fraction: float, config: RunConfig) -> float | None:
    if metric in ("accuracy", "mean_probability") or metric.startswith("accuracy_quantile_"):
        return 1 / config.scorer.intruder_size  # the intruder is one of intruder_size candidates
    return chance_level(metric, positive_fraction)


def _surprisal_task(inputs: TaskInputs) -> ScoringTask:
    items = detection_items(inputs.examples, inputs.texts)
    neutral = inputs.config.surprisal.neutral_prefix
    return SurprisalTask(inputs.explanation, items, neutral, inputs.texts)


def _surprisal_warnings(config: RunConfig) -> list[str]:
    if config.surprisal.model is not None:
        return []
    return [
        "surprisal.model is not set, so the subject model reads the excerpts; the paper used a large base LM "
        "(Llama-3.1-70B): a small model's surprisal AUROCs sit near 0.5 whatever the explanation"
    ]


def _surprisal_settings(config: RunConfig) -> dict[str, Any]:
    llm = config.surprisal_llm
    return {
        "backend": llm.backend,
        "model": llm.model,
        "neutral_prefix": config.surprisal.neutral_prefix,
        "dtype": config.model.dtype,
    }


def _embedding_outcome(embedder: Embedder, inputs: TaskInputs) -> Outcome:
    items = detection_items(inputs.examples, inputs.texts)
    return embedding_outcome(embedder, inputs.explanation, items, inputs.config.embedding.query_prompt)


def _intervention_chance(metric: str, positive_fraction: float, config: RunConfig) -> float | None:
    """The gain over a random latent's steering is 0 for an explanation that steering does not single out;
    the raw scores have no known null (steered text shifts the likelihood of any explanation)."""
    return 0.0 if metric == "score_gain" else None


def _intervention_settings(config: RunConfig) -> dict[str, Any]:
    return {"intervention": config.to_dict()["intervention"] | {"dtype": config.model.dtype}}


register(
    Scorer(
        "detection",
        "balanced_accuracy",
        "scorer_llm",
        settings=_classification_settings,
        task=_detection_task,
        pooled=pooled_classification,
    )
)
register(
    Scorer(
        "fuzzing",
        "balanced_accuracy",
        "scorer_llm",
        settings=lambda c: _classification_settings(c) | {"fuzzing_mode": c.scorer.fuzzing_mode},
        task=_fuzzing_task,
        pooled=pooled_classification,
        warnings=_highlight_tell,
    )
)
register(
    Scorer(
        "simulation",
        "pearson",
        "scorer_llm",
        settings=lambda c: _scorer_llm(c) | {"simulation_logprobs": c.scorer.simulation_logprobs},
        task=_simulation_task,
        pooled=pooled_pearson,
        pooled_needs_activations=True,
    )
)
register(
    Scorer(
        "embedding",
        "auroc",
        "embedding",
        settings=lambda c: {"embedding_model": c.embedding.model, "query_prompt": c.embedding.query_prompt},
        embed=_embedding_outcome,
        pooled=pooled_auroc,
    )
)
register(
    Scorer(
        "surprisal",
        "auroc",
        "surprisal",
        settings=_surprisal_settings,
        task=_surprisal_task,
        warnings=_surprisal_warnings,
        pooled=pooled_auroc,
    )
)
register(
    Scorer(
        "intervention",
        "score_gain",  # score minus the random-latent control's: 0 when steering says nothing specific
        "intervention",
        controllable=False,  # it has its own random-latent control
        settings=_intervention_settings,
        chance=_intervention_chance,
    )
)
register(
    Scorer(
        "intruder",
        "accuracy",
        "scorer_llm",
        needs_explanation=False,
        controllable=False,
        settings=lambda c: _scorer_llm(c) | {"intruder_size": c.scorer.intruder_size},
        task=_intruder_task,
        pooled=pooled_accuracy,
        chance=_intruder_chance,
    )
)


def _saebench_task(inputs: TaskInputs) -> ScoringTask:
    items = detection_items(inputs.examples, inputs.texts)
    return SAEBenchTask(inputs.explanation, items, inputs.texts, inputs.rng("order"))


def _majority_chance(metric: str, positive_fraction: float, config: RunConfig) -> float | None:
    """SAEBench's baseline: answering "None" classifies every non-activating sequence right."""
    if metric in ("score", "accuracy"):
        return 1 - positive_fraction
    return chance_level(metric, positive_fraction)


register(
    Scorer(
        "saebench",
        "score",
        "scorer_llm",
        settings=_scorer_llm,
        task=_saebench_task,
        pooled=pooled_classification,
        chance=_majority_chance,
    )
)
