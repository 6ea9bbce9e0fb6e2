"""The explainer view and the held-out view of a latent: which keys shape which, end to end."""

from __future__ import annotations

import dataclasses

import pytest
from openai_stub import StubServer
from test_score import HP, answers_by_hash, explained_run, run, stub_overrides  # noqa: F401 - fixtures

from autointerp.config import ExamplesConfig, load_config
from autointerp.errors import UserError
from autointerp.examples.recipe import EXPLAINER_VIEW_KEYS, HELD_OUT_VIEW_KEYS
from autointerp.explain import run_explain
from autointerp.score import run_score


def test_every_examples_key_shapes_one_named_view():
    names = {f.name for f in dataclasses.fields(ExamplesConfig)}
    assert EXPLAINER_VIEW_KEYS | HELD_OUT_VIEW_KEYS == names
    assert not EXPLAINER_VIEW_KEYS & HELD_OUT_VIEW_KEYS
    assert HELD_OUT_VIEW_KEYS == {
        "n_test",
        "n_negative",
        "min_test",
        "test_windows",
        "test_sampling",
        "n_test_top",
    }


def test_held_out_keys_keep_explanations_and_redo_scores(run):  # noqa: F811
    """Changing n_test or n_negative after explain needs no new explanations, and rescores every latent."""
    with StubServer(answers_by_hash) as stub:
        overrides = stub_overrides(stub, "scorers=[detection]", f"explainer.base_url={stub.base_url}")
        run_score(load_config(run, overrides))
        changed = load_config(run, [*overrides, "examples.n_test=3", "examples.n_negative=5"])
        explained = run_explain(changed)
        assert all(t.explained == 0 and t.failed == 0 for t in explained.tallies.values())
        assert stub.calls > 0
        calls = stub.calls
        with pytest.raises(UserError, match=r"test_view\.examples\.n_negative, test_view\.examples\.n_test"):
            run_score(changed)
        rescored = run_score(changed, force=True)
    assert rescored.tallies[("detection", HP)].already_done == 0
    assert stub.calls > calls
    with pytest.raises(UserError, match=r"examples\.window"):  # the explainer view changed
        run_explain(load_config(run, [*overrides, "examples.window=6"]))


@pytest.mark.parametrize(
    ("override", "changed"),
    [("model.path=another-model", "model.path"), ("cache.n_tokens=4096", "cache.n_tokens")],
)
def test_explain_and_score_refuse_a_cache_made_from_other_inputs(run, override, changed):  # noqa: F811
    """Changing the model or the cache settings without re-caching is refused by the stages that read the
    cache (they would render the old token ids with another tokenizer, or claim a corpus not cached)."""
    config = load_config(run, [override])
    with pytest.raises(UserError, match=rf"the cache of .*: made with a different config \(.*{changed}"):
        run_explain(config)
    with pytest.raises(UserError, match=changed):
        run_score(config)


def test_the_summary_leaves_out_score_folders_made_with_another_config(run):  # noqa: F811
    """Scores of old explanations (fuzzing, scored before the explanations were redone) are not
    summarised as current: they are counted as left out, with a note."""
    from autointerp.score import write_summary

    with StubServer(answers_by_hash) as stub:
        overrides = stub_overrides(stub, f"explainer.base_url={stub.base_url}")
        run_score(load_config(run, [*overrides, "scorers=[fuzzing]"]))
        redone = load_config(run, [*overrides, "explainer.max_tokens=150", "scorers=[detection]"])
        run_explain(redone, force=True)
        run_score(redone)
    summary = write_summary(redone, redone.run_dir / "scores")
    assert "headline" in summary["scorers"]["detection"][HP]
    fuzzing = summary["scorers"]["fuzzing"][HP]
    assert "headline" not in fuzzing and fuzzing["left_out"] > 0
    assert "scores/fuzzing/" in (redone.run_dir / "summary.md").read_text()
