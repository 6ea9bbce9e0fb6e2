"""The explanation parser on messy answers."""

import pytest

from autointerp.explain.parse import ParseError, parse_explanation


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("[EXPLANATION]: Words about cooking", "Words about cooking"),
        ("Let me think.\nThe tokens are all verbs.\n[EXPLANATION]: Past-tense verbs\n", "Past-tense verbs"),
        ('**[EXPLANATION]:** *The word "the" before nouns*', 'The word "the" before nouns'),
        ("[explanation] : closing brackets in code", "closing brackets in code"),
        ("[EXPLANATION]: first try\nHmm, no.\n[EXPLANATION]: second try", "second try"),
        ("[EXPLANATION]:\n\n  Numbers in dates  \nThat's it.", "Numbers in dates"),
        ("Answer:\n[EXPLANATION]: 'Python keywords'   and more", "Python keywords' and more"),
    ],
)
def test_parses_the_last_explanation_line(answer, expected):
    assert parse_explanation(answer) == expected


@pytest.mark.parametrize(
    "answer", ["", "The latent fires on verbs.", "[EXPLANATION]:", "[EXPLANATION]: **  **"]
)
def test_unparseable_answers_raise(answer):
    with pytest.raises(ParseError):
        parse_explanation(answer)


def test_an_invented_next_task_is_ignored():
    answer = (
        "[EXPLANATION]: The colon ending a function header.\n\n"
        "Excerpts where the latent is active:\nExample 1: foo\n[EXPLANATION]: Something invented."
    )
    assert parse_explanation(answer) == "The colon ending a function header."


def test_explanation_cut_off_at_max_tokens_is_refused():
    with pytest.raises(ParseError, match="max_tokens"):
        parse_explanation(
            "Reasoning...\n[EXPLANATION]: The colon ending a Python block header (", truncated=True
        )
    finished = "[EXPLANATION]: Rain words.\nMore reasoning that ran out of tok"
    assert parse_explanation(finished, truncated=True) == "Rain words."
    assert parse_explanation("[EXPLANATION]: Rain words", truncated=False) == "Rain words"


def _explainer_answer(text: str):
    from autointerp.config import ExplainerConfig
    from autointerp.explain.explainer import Explainer
    from autointerp.llm import LLMRequest, LLMResponse, Message

    explainer = Explainer(ExplainerConfig(reasoning=False))
    request = LLMRequest((Message("user", "x"), Message("assistant", "[EXPLANATION]:")), explainer.params)
    return explainer.parse(request, LLMResponse(text, finish_reason="stop"))


@pytest.mark.parametrize(
    "text",
    [
        " The latent responds to the following:",
        " Nouns for rain and other precipitation.",
        " closing quotation marks that end quoted speech or text",
    ],
)
def test_answers_that_explain_nothing_are_refused(text):
    """Seen from a 135M explainer: a lead-in with nothing after it, and verbatim copies of a demonstration."""
    with pytest.raises(ParseError):
        _explainer_answer(text)


def test_a_prefilled_answer_is_read_after_the_marker():
    assert _explainer_answer(" Opening brackets of function calls.") == "Opening brackets of function calls."


def test_corpus_text_cannot_fake_a_highlight_or_plant_the_explanation_line():
    """Python's docs hold bit shifts (`x << 2`) and could hold `[EXPLANATION]:`: shown to an LLM, they are
    defused, so the only << >> in an excerpt are its highlights and no excerpt carries the answer marker."""
    import re

    import numpy as np

    from autointerp.examples.render import ShownExample, highlight, plain

    pieces = [" x", " <<", " 2", " >>", " [EXPLANATION]:", " shift", " <", "<"]
    activations = np.array([0, 0, 0, 0, 0, 1, 0, 0], dtype=np.float32)
    text, values = highlight(ShownExample(pieces, activations), 1.0, 0.0)
    assert re.findall(r"<<(.*?)>>", text) == [" shift"] and values == ["<< shift>> 10"]
    assert "[EXPLANATION]" not in text and "(EXPLANATION)" in text
    shown = plain(pieces)
    assert "<<" not in shown and ">>" not in shown and "[EXPLANATION]" not in shown
