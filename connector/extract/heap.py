"""The garbage collector during an extraction: fewer, cheaper collections.

An extraction parses pages of up to a thousand resources, tens of thousands of dicts
and lists each, and keeps a few pages alive while they wait to be stored. CPython's
cyclic collector starts a collection every 700 new containers and, every so often,
walks every object the process holds, imports and all; measured on a REST run of the
default cohort, those walks cost about a quarter of the client's CPU, and on a machine
shared with the server that CPU is the server's. Parsed JSON holds no reference
cycles, so the collector finds nothing in it. For the length of a run, therefore:

- what the process held before the run (modules, the database engine, code sets) is
  moved out of the collector's sight (``gc.freeze``), so walks no longer cover it;
- a collection starts every ``YOUNG_THRESHOLD`` new containers instead of 700.

Both are undone when the last run of the process ends (runs may overlap in threads:
the first to start applies them, the last to end restores the previous settings).
Cycles made meanwhile are still collected, a little later.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

#: New containers between two collections of the youngest generation during a run.
YOUNG_THRESHOLD = 20_000

_lock = threading.Lock()
_active = 0
_saved: tuple[int, ...] = ()


@contextmanager
def parsing_heap() -> Iterator[None]:
    """Collector settings for a run that parses many resources (see the module doc)."""
    global _active, _saved
    with _lock:
        if _active == 0:
            _saved = gc.get_threshold()
            gc.freeze()
            gc.set_threshold(YOUNG_THRESHOLD, *_saved[1:])
        _active += 1
    try:
        yield
    finally:
        with _lock:
            _active -= 1
            if _active == 0:
                gc.set_threshold(*_saved)
                gc.unfreeze()
