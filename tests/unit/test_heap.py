"""app/heap.py: start-up's collector set-up (held, then ended with a freeze, or released)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from app import heap


@pytest.fixture(autouse=True)
def collector() -> Iterator[tuple[int, int, int]]:
    """Whatever a test does, the process's collector is as it was afterwards."""
    before = gc.get_threshold()
    try:
        yield before
    finally:
        heap.release_startup_collections()
        gc.unfreeze()
        gc.set_threshold(*before)


def test_held_collections_are_rarer_until_start_up_ends(collector: tuple[int, int, int]) -> None:
    heap.hold_startup_collections()
    assert heap.startup_held()
    assert gc.get_threshold() == (heap.STARTUP_THRESHOLD, collector[1], collector[2])
    heap.hold_startup_collections()  # twice: the first thresholds are still the ones kept
    assert heap.end_startup() > 0
    assert gc.get_threshold() == collector
    assert gc.get_freeze_count() > 0
    assert not heap.startup_held()


def test_ending_a_start_up_that_was_not_held_does_nothing(
    collector: tuple[int, int, int],
) -> None:
    assert heap.end_startup() == 0
    assert gc.get_freeze_count() == 0
    assert gc.get_threshold() == collector


def test_a_start_up_that_stops_early_is_released_without_a_freeze(
    collector: tuple[int, int, int],
) -> None:
    heap.hold_startup_collections()
    heap.release_startup_collections()
    assert gc.get_threshold() == collector
    assert gc.get_freeze_count() == 0
    assert heap.end_startup() == 0  # nothing left to end
