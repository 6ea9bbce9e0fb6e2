"""The stages' freeze of long-lived objects: undone on exit, an outer freeze left alone."""

from __future__ import annotations

import gc

import pytest

from autointerp.heap import frozen_heap


def test_the_heap_is_frozen_inside_and_unfrozen_after_even_on_error():
    assert gc.get_freeze_count() == 0
    with pytest.raises(RuntimeError), frozen_heap():
        assert gc.get_freeze_count() > 0
        raise RuntimeError("a stage failed")
    assert gc.get_freeze_count() == 0


def test_an_outer_freeze_is_left_to_its_owner():
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        with frozen_heap(), frozen_heap():
            assert gc.get_freeze_count() >= frozen
        assert gc.get_freeze_count() == frozen
    finally:
        gc.unfreeze()
