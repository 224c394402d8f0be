"""Running blocking (boto3) calls from async code, on a pool of their own, errors mapped."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

from botocore.exceptions import BotoCoreError, ClientError

from .errors import DependencyUnavailable

P = ParamSpec("P")
T = TypeVar("T")


class BlockingCalls:
    """One thread pool for one kind of blocking work (DynamoDB work, posts to connections),
    so it never waits behind another kind."""

    def __init__(self, threads: int, name: str) -> None:
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix=name)

    async def __call__(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def dependency_error(error: Exception, what: str) -> DependencyUnavailable | None:
    """An AWS failure as a 503 naming `what` failed (never a 500), or None if not AWS's."""
    if isinstance(error, ClientError):
        code = str(error.response.get("Error", {}).get("Code", "")) or "error"
        return DependencyUnavailable(f"{what} is unavailable ({code}); try again shortly")
    if isinstance(error, BotoCoreError):
        return DependencyUnavailable(
            f"{what} is unavailable ({type(error).__name__}); try again shortly"
        )
    return None
