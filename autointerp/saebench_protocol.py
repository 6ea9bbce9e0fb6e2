"""SAEBench's autointerp protocol (sae_bench 0.6.0, `evals/autointerp/main.py`): its explainer and scorer
prompts, how it reads their answers, and how it renders a sequence. Shared by the `saebench` explainer kind
and the `saebench` scorer, so both speak exactly as SAEBench does."""

from __future__ import annotations

import random
from collections.abc import Sequence

from autointerp.llm.types import Message

EXPLANATION_MAX_TOKENS = 30
"""SAEBench's `max_tokens_in_explanation`."""

_GENERATION_SYSTEM = (
    "We're studying neurons in a neural network. Each neuron activates on some particular "
    "word/words/substring/concept in a short document. The activating words in each document are indicated "
    "with << ... >>. We will give you a list of documents on which the neuron activates, in order from most "
    "strongly activating to least strongly activating. Look at the parts of the document the neuron "
    "activates for and summarize in a single sentence what the neuron is activating on. Try not to be overly "
    "specific in your explanation. Note that some neurons will activate only on specific words or "
    "substrings, but others will activate on most/all words in a sentence provided that sentence contains "
    "some particular concept. Your explanation should cover most or all activating words (for example, don't "
    "give an explanation which is specific to a single word if all words in a sentence cause the neuron to "
    "activate). Pay attention to things like the capitalization and punctuation of the activating words or "
    "concepts, if that seems relevant. Keep the explanation as short and simple as possible, limited to 20 "
    "words or less. Omit punctuation and formatting. You should avoid giving long lists of words."
    ' Some examples: "This neuron activates on the word \'knows\' in rhetorical questions", and "This '
    'neuron activates on verbs related to decision-making and preferences", and "This neuron activates on '
    "the substring 'Ent' at the start of words\", and \"This neuron activates on text about government "
    'economic policy".'
)


SHOWN_AS = "saebench"
"""Marks a scored example shown in SAEBench's rendering (`render`), so its text is refilled the same way."""


def render(pieces: Sequence[str], active: Sequence[bool] | None = None) -> str:
    """A sequence as SAEBench shows it: active tokens in << >>, newlines as ↵, replacement chars dropped."""
    marks = active if active is not None else [False] * len(pieces)
    text = "".join(f"<<{p}>>" if on else p for p, on in zip(pieces, marks, strict=True))
    return text.replace("\ufffd", "").replace("\n", "↵")


def generation_messages(documents: Sequence[str]) -> tuple[Message, ...]:
    """SAEBench's explainer prompt over rendered, marked documents (most strongly activating first)."""
    listing = "\n".join(f"{i}. {doc}" for i, doc in enumerate(documents, start=1))
    user = f"The activating documents are given below:\n\n{listing}"
    return (Message("system", _GENERATION_SYSTEM), Message("user", user))


def parse_explanation(answer: str) -> str:
    """SAEBench's reading of an explanation: what follows the last "activates on"."""
    return answer.split("activates on")[-1].rstrip(".").strip()


def scoring_messages(
    explanation: str, documents: Sequence[str], n_correct: int, seed: int
) -> tuple[Message, ...]:
    """SAEBench's scorer prompt: the explanation and the numbered documents; the example answer in the
    instructions lists `n_correct` random indices (seeded here, SAEBench's is unseeded)."""
    n = len(documents)
    example = ", ".join(str(i) for i in sorted(random.Random(seed).sample(range(1, n + 1), k=n_correct)))
    system = (
        "We're studying neurons in a neural network. Each neuron activates on some particular "
        "word/words/substring/concept in a short document. You will be given a short explanation of what "
        f"this neuron activates for, and then be shown {n} example sequences in random order. You will have "
        "to return a comma-separated list of the examples where you think the neuron should activate at "
        "least once, on ANY of the words or substrings in the document. For example, your response might "
        f'look like "{example}". Try not to be overly specific in your interpretation of the explanation. '
        "If you think there are no examples where the neuron will activate, you should just respond with "
        '"None". You should include nothing else in your response other than comma-separated numbers or the '
        'word "None" - this is important.'
    )
    listing = "\n".join(f"{i}. {doc}" for i, doc in enumerate(documents, start=1))
    user = (
        f"Here is the explanation: this neuron fires on {explanation}.\n\nHere are the examples:\n\n{listing}"
    )
    return (Message("system", system), Message("user", user))


def prediction_max_tokens(n_documents: int) -> int:
    """SAEBench's `max_tokens_in_prediction`."""
    return 2 * n_documents + 5


def parse_predictions(answer: str) -> list[int] | None:
    """SAEBench's reading of a scorer answer: 1-based indices, `[]` for "None", None when unreadable."""
    parts = answer.strip().rstrip(".").replace("and", ",").replace("None", "").split(",")
    items = [p.strip() for p in parts if p.strip()]
    if not all(item.isdigit() for item in items):
        return None
    return [int(item) for item in items]
