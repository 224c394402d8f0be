"""streaming_proxy: the domain package shared by both Lambda functions (the core layer)."""

import sys

__version__ = "0.1.0"

# httpx imports its command-line client (click, pygments, rich: ~50 ms) whenever those
# happen to be installed, and falls back to a stub when the import fails. The proxy never
# runs that CLI; a None entry makes the import fail at once (Python's documented way to
# block one module), so the cold start does not depend on what else is installed.
if "httpx" not in sys.modules:
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
