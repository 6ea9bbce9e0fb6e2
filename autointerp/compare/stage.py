"""The compare stage: match latents of every two runs, compare their explanations and scores, write it all."""

from __future__ import annotations

from collections.abc import Callable
from itertools import combinations
from pathlib import Path

from autointerp.compare.interpretability import Pairing, compare_interpretability
from autointerp.compare.latent_similarity import LatentSimilarity, random_decoder, shifted_activations
from autointerp.compare.matching import (
    DEFAULT_CANDIDATES,
    IDENTITY,
    Matching,
    identity_matching,
    match_activations,
    match_decoders,
)
from autointerp.compare.output import write_outputs
from autointerp.compare.partners import partner_latents, partners_path, reachable_pairs
from autointerp.compare.result import CompareReport, PairResult
from autointerp.compare.runs import Run, resolve_runs
from autointerp.compare.similarity import MIN_PAIRS, Embed, ExplanationVectors, explanation_similarity
from autointerp.errors import UserError
from autointerp.rundir import COMPARE_DIR, require_compare_dir

DECODER, CORRELATION = "decoder", "correlation"

Progress = Callable[[int, int], None]
"""Called with (pairs just done, total pairs)."""


def run_compare(
    inputs: list[Path],
    out_dir: Path | None = None,
    *,
    scorers: list[str] | None = None,
    embed: Embed | None = None,
    candidates: int = DEFAULT_CANDIDATES,
    seed: int = 0,
    progress: Progress | None = None,
) -> CompareReport:
    """Compare runs (run directories or configs) pairwise and write `out_dir` (default `<first run>/compare`).

    `embed` embeds explanations; default: `embedding.model` of the first run with a config (null or no
    config: the packaged MiniLM).
    """
    runs, notes = resolve_runs(inputs)
    require_compare_dir(out_dir or runs[0].run_dir / COMPARE_DIR)
    plans = [(a, b, _method(a, b, notes)) for a, b in combinations(runs, 2)]
    embed = embed or _default_embedder(runs)
    vectors = {run.label: ExplanationVectors.embed(run.explanations, embed) for run in runs}
    pairs = []
    for a, b, method in plans:
        matching = _match(a, b, method, candidates)
        latents = LatentSimilarity.of(matching, _null_match(a, b, method, candidates, seed))
        similarity = explanation_similarity(
            matching.a, matching.b, vectors[a.label], vectors[b.label], seed, matching.similarity
        )
        pairs.append(PairResult(a, b, matching, latents, similarity, reachable_pairs(a, b, matching)))
        if progress is not None:
            progress(1, len(plans))
    out = out_dir or runs[0].run_dir / COMPARE_DIR
    partners = partner_latents(runs, [(p.a, p.b, p.matching) for p in pairs])
    few = [pair for pair in pairs if len(pair.similarity.values) < MIN_PAIRS]
    notes += [_few_pairs_note(pair) for pair in few if pair.a.explanations or pair.b.explanations]
    helps = any(pair.reachable > len(pair.similarity.values) for pair in few)
    commands = [
        command
        for item in partners
        if helps and item.missing
        for command in item.commands(partners_path(out, item))
    ]
    interpretability = compare_interpretability(runs, [_pairing(pair) for pair in pairs], scorers)
    report = CompareReport(out, runs, pairs, interpretability, notes, partners, commands)
    report.files = write_outputs(report)
    return report


def _few_pairs_note(pair: PairResult) -> str:
    """Why the explanation similarity of a pair with few pairs explained on both sides is unreliable."""
    n = len(pair.similarity.values)
    head = f"{pair.a.label} vs {pair.b.label}: {n} matched pairs explained on both sides"
    head += f" (fewer than {MIN_PAIRS})"
    if not pair.reachable:
        return f"{head}; neither run explains a matched latent: run `autointerp explain` on one of them"
    if pair.reachable == n:
        return f"{head}, so the explanation similarity and its CI are unreliable"
    return (
        f"{head}, so the explanation similarity and its CI are unreliable; explaining the matched partners "
        f"(partners-*.txt, commands below) makes it {pair.reachable}"
    )


def _method(a: Run, b: Run, notes: list[str]) -> str:
    """How two runs' latents are matched; checked for every pair before any heavy work."""
    if a.same_coder(b):
        return IDENTITY
    if a.space == b.space:
        (decoder_a, why_a), (decoder_b, why_b) = a.decoder, b.decoder
        if decoder_a is not None and decoder_b is not None and decoder_a.shape[1] == decoder_b.shape[1]:
            return DECODER
        reason = why_a or why_b or "the decoders differ in width"
        notes.append(
            f"{a.label} vs {b.label}: matched by activation correlation, not decoder cosine: {reason}"
        )
    if a.tokens_digest != b.tokens_digest:
        raise UserError(
            f"{a.label} and {b.label} must be matched by activation correlation, but their caches hold "
            "different tokens: cache both runs with the same dataset and cache settings (n_tokens, ctx_len)"
        )
    return CORRELATION


def _match(a: Run, b: Run, method: str, candidates: int) -> Matching:
    if method == IDENTITY:
        return identity_matching(a.num_latents)
    if method == DECODER:
        decoders = a.decoder[0], b.decoder[0]
        assert decoders[0] is not None and decoders[1] is not None  # the method is chosen only then
        return match_decoders(decoders[0], decoders[1], candidates)
    return match_activations(a.activations, b.activations, candidates)


def _null_match(a: Run, b: Run, method: str, candidates: int, seed: int) -> Matching | None:
    """The same matching against a coder unrelated to `a` (see latent_similarity); None for one coder."""
    if method == IDENTITY:
        return None
    if method == DECODER:
        decoders = a.decoder[0], b.decoder[0]
        assert decoders[0] is not None and decoders[1] is not None
        return match_decoders(decoders[0], random_decoder(decoders[1].shape, seed), candidates)
    return match_activations(a.activations, shifted_activations(b.activations, b.reader.ctx_len), candidates)


def _pairing(pair: PairResult) -> Pairing:
    kind = "shared latents" if pair.matching.method == IDENTITY else "matched latents"
    return Pairing(pair.a.label, pair.b.label, pair.matching.a, pair.matching.b, kind)


def _default_embedder(runs: list[Run]) -> Embed:
    from autointerp.embedding import Embedder  # loads sentence-transformers: only when needed

    config = next((run.config for run in runs if run.config is not None), None)
    if config is None:
        return Embedder()
    return Embedder(config.embedding.model, batch_size=config.embedding.batch_size)
