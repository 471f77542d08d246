"""The garbage collector in a long-running process (a leaf).

A full collection walks every tracked object; in the gateway that is the start-up heap
(the imported modules, pydantic's schemas, the session: about 170,000 objects, a 64 ms
pause here), walked again at every full collection while requests wait. Collected once
and frozen when the server is up (``gc.freeze``), it is never walked again: a full
collection then walks only what the requests left alive.
"""

from __future__ import annotations

import gc


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
