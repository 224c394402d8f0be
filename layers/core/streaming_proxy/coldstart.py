"""The cold start of a function's code: imported with the cyclic garbage collector paused.

Importing either function creates ~95,000 objects (modules, classes, pydantic schemas)
that live as long as the process, and under a thousand that are garbage. While they are
made, every 700 allocations start a collection, and the older generations are searched
again and again: 15-20 % of the import time. So collection is paused while the
code is imported, and what the import made is then frozen (`gc.freeze`): moved out of
the collector's generations, so neither the first request nor any later one searches it.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def importing_code() -> Iterator[None]:
    """Pause collection for the `with` body, then freeze what it made and resume."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if was_enabled:
            gc.enable()
