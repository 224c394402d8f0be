"""`python -m devstack` (what `make dev` runs): the whole local stack on its embedded defaults."""

from __future__ import annotations

import contextlib
import sys

from .servers import run_loop
from .settings import DevSettings
from .stack import LocalStack, PortInUse


def main() -> None:
    try:
        with contextlib.suppress(KeyboardInterrupt):
            run_loop(LocalStack(DevSettings()).run())
    except PortInUse as e:
        print(e.code, file=sys.stderr, flush=True)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
