"""The cold start of a function's code: imported with the cyclic garbage collector paused.

Importing either function creates ~95,000 objects (modules, classes, pydantic schemas)
that live as long as the process, and under a thousand that are garbage. While they are
made, every 700 allocations start a collection, and the older generations are searched
again and again: 15-20 % of the import time. So collection is paused while the
code is imported, and what the import made is then frozen (`gc.freeze`): moved out of
the collector's generations, so neither the first request nor any later one searches it.

pydantic also reads every installed distribution's entry points for plugins when it
builds its first model (~2.5 ms in the deployed layer, more where more is installed); the
proxy uses none, so the entries turn that search off unless the environment says otherwise
(docs/architecture.md decision 40).
"""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def importing_code() -> Iterator[None]:
    """Pause collection for the `with` body, then freeze what it made and resume; no
    pydantic plugins unless PYDANTIC_DISABLE_PLUGINS is set already."""
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if was_enabled:
            gc.enable()
