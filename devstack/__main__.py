"""`python -m devstack` (what `make dev` runs): the whole local stack on its embedded defaults."""

from __future__ import annotations

import asyncio
import contextlib

from .settings import DevSettings
from .stack import LocalStack


def main() -> None:
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(LocalStack(DevSettings()).run())


if __name__ == "__main__":
    main()
