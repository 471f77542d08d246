"""The garbage collector in a long-running process (a leaf).

A full collection walks every tracked object; in the gateway that is the start-up heap
(the imported modules, pydantic's schemas, the session: about 170,000 objects, a 64 ms
pause here), walked again at every full collection while requests wait. Collected once
and frozen when the server is up (``gc.freeze``), it is never walked again: a full
collection then walks only what the requests left alive.

Start-up itself pays the same walk over and over: importing Textual and building the
workbench allocate hundreds of thousands of objects, and with CPython's default
thresholds (a young collection every 700 allocations, an older one every 10 of those)
the collector ran ~110 times between building the workbench and its first frame here, a
full collection among them: ~50 ms of walking a heap that is nearly all keepers (more
when modules compile from source). :func:`hold_startup_collections` makes young
collections rarer until :func:`end_startup` collects once, freezes what start-up built
and puts the thresholds back. Collections still run meanwhile (only rarer), so a
start-up that never ends keeps collecting.
"""

from __future__ import annotations

import gc

#: the young generation's threshold while a process starts (CPython's default is 700):
#: the workbench reaches its first frame without a collection
STARTUP_THRESHOLD = 200_000

#: the thresholds :func:`hold_startup_collections` replaced, until :func:`end_startup`
_held: tuple[int, int, int] | None = None


def freeze_startup_heap() -> int:
    """Collect, then move every object alive now out of the collector's reach (it is
    kept, never freed). Returns how many objects were frozen."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


def thaw_heap() -> None:
    """Give the frozen objects back to the collector (the server stopped: what it kept
    alive may now be garbage, cycles included)."""
    gc.unfreeze()


def hold_startup_collections() -> None:
    """Collect rarely until :func:`end_startup` (called before the heavy imports)."""
    global _held
    if _held is None:
        _held = gc.get_threshold()
        gc.set_threshold(STARTUP_THRESHOLD, _held[1], _held[2])


def startup_held() -> bool:
    return _held is not None


def end_startup() -> int:
    """Start-up is over: collect once, freeze what it built, and collect as usual from
    now on. Returns how many objects were frozen; 0 (and nothing done) when collections
    were not held."""
    global _held
    if _held is None:
        return 0
    thresholds, _held = _held, None
    frozen = freeze_startup_heap()
    gc.set_threshold(*thresholds)
    return frozen


def release_startup_collections() -> None:
    """Put the thresholds back without freezing anything (a start-up that stopped before
    :func:`end_startup`: a usage error, a quit while the session was opening)."""
    global _held
    if _held is not None:
        thresholds, _held = _held, None
        gc.set_threshold(*thresholds)
