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
