"""podium.gcpause: a full collection's survivors are frozen, so the next full pass walks only
what came since; full passes are timed; once ``full_every`` has passed, a full pass walks
everything again (a cycle among frozen objects is collected then)."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from podium.gcpause import GcPauses


class Cycle:
    def __init__(self) -> None:
        self.me = self


@pytest.fixture
def clean_gc() -> Iterator[None]:
    """Only the test's own collections run (an automatic one, due after other tests'
    allocations, would count as a pass too); the test process' objects are given back to
    the collector afterwards."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.unfreeze()
        if enabled:
            gc.enable()
        gc.collect()


def test_full_passes_are_timed_and_their_survivors_frozen(clean_gc: None) -> None:
    watch = GcPauses().install()
    try:
        keep = [[i] for i in range(10_000)]
        gc.collect()  # a full collection: timed, its survivors frozen
        assert len(watch.pauses) == 1 and watch.pauses[0] >= 0
        assert gc.get_freeze_count() >= len(keep)
        gc.collect(1)  # a young one: not a full pass
        assert len(watch.pauses) == 1
        assert watch.figures()["count"] == 1 and watch.figures()["max_ms"] is not None
        watch.reset()
        assert watch.figures() == {"count": 0, "max_ms": None, "total_s": 0}
    finally:
        watch.uninstall()
    assert not watch.installed


def test_a_cycle_frozen_alive_is_collected_by_the_next_pass_over_everything(
    clean_gc: None,
) -> None:
    watch = GcPauses(full_every=3600.0).install()
    try:
        cycle = Cycle()
        alive = weakref.ref(cycle)
        gc.collect()  # the cycle is alive: frozen with the other survivors
        del cycle  # now garbage, but frozen: a full pass within the hour does not see it
        gc.collect()
        assert alive() is not None
        watch.full_every = 0.0  # an hour has passed: the next full pass unfreezes first
        gc.collect()
        assert alive() is None
    finally:
        watch.uninstall()
