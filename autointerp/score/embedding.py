"""Embedding scoring: is the explanation closer to activating excerpts than to non-activating ones?

The explanation is embedded as a retrieval query (with the model's query prompt, as the paper does with
stella) and each excerpt as a document; the score is the AUROC of their
cosine similarity, activating vs non-activating. No LLM is involved.
"""

from __future__ import annotations

from autointerp.embedding import Embedder
from autointerp.score.base import Outcome
from autointerp.score.items import ScoredExample
from autointerp.score.metrics import auroc


def embedding_outcome(
    embed: Embedder, explanation: str, items: list[ScoredExample], query_prompt: str | None = None
) -> Outcome:
    """Similarity of each excerpt (a document) to the explanation (a query, with the model's query prompt
    unless `query_prompt` is given), and their AUROC."""
    query = embed([explanation], prompt=embed.query_prompt(query_prompt))[0]
    documents = embed([item.shown for item in items])
    values = [float(similarity) for similarity in documents @ query]
    for item, value in zip(items, values, strict=True):
        item.value = value
    labels = [item.label for item in items]
    metrics = {"auroc": auroc(labels, values), "n_examples": len(items), "n_failed": 0}
    error = None if metrics["auroc"] is not None else "auroc undefined: one class of excerpts is missing"
    return Outcome(metrics, [item.to_dict() for item in items], error)
