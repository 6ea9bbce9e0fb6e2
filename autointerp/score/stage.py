"""Stage 3, `autointerp score`: every configured scorer on this task's share of the explained latents.

The held-out examples are rebuilt from the cache with the explain stage's recipe and seeds (so they are
disjoint from what the explainer saw). `plan` decides what is left to score, `phases` loads each model once
and scores its scorers' latents, `writer` records each latent as soon as it is done, so a killed run resumes
with the latents it had not finished.
"""

from __future__ import annotations

import time

from autointerp.config import RunConfig, dump_config
from autointerp.errors import UserError
from autointerp.heap import frozen_heap
from autointerp.rundir import CONFIG_FILE, WHOLE, ShardSpec, write_text_atomic
from autointerp.score.base import ScoreReport
from autointerp.score.phases import run_phases
from autointerp.score.plan import Plan
from autointerp.score.writer import ProgressFn, ScoreWriter


def run_score(
    config: RunConfig,
    shard: ShardSpec = WHOLE,
    force: bool = False,
    progress: ProgressFn | None = None,
    retry_unparseable: bool = False,
) -> ScoreReport:
    """Score this task's share of the selected latents with every configured scorer.

    Latents recorded before are kept, except those that failed for a transient reason (redone); with
    `retry_unparseable` also those whose answers could not be read or whose requests were rejected.
    """
    if not config.scorers:
        raise UserError("scorers is empty: list at least one, e.g. scorers: [detection, fuzzing, embedding]")
    plan = Plan(config, shard, force, retry_unparseable)
    if not plan.targets:
        return plan.report
    write_text_atomic(config.run_dir / CONFIG_FILE, dump_config(config))
    started = time.perf_counter()
    writer = ScoreWriter(config, plan, shard, progress)
    try:
        with frozen_heap():
            run_phases(config, plan, writer, shard)
    finally:
        writer.close()
    plan.report.seconds = time.perf_counter() - started
    return plan.report
