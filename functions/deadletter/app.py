"""DeadLetterFunction: lost detached relays (the stream function's on-failure queue)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from functools import cache
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from streaming_proxy.config import get_settings
from streaming_proxy.deadletter import DeadLetters
from streaming_proxy.observability import get_logger
from streaming_proxy.service import StreamService

Handler = Callable[[dict[str, Any], LambdaContext], dict[str, Any]]
logger = get_logger()


@cache
def runner() -> asyncio.Runner:
    """One event loop for the process: the service's clients and gates outlive a batch."""
    return asyncio.Runner()


@cache
def default_dead_letters() -> DeadLetters:
    service = StreamService(get_settings())
    return DeadLetters(service.streams, service.publisher, service.db, service.runs)


def make_handler(dead_letters: Callable[[], DeadLetters]) -> Handler:
    """The SQS handler over `dead_letters` (tests pass their own)."""

    @logger.inject_lambda_context(clear_state=True)
    def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
        def seconds_left() -> float:
            return context.get_remaining_time_in_millis() / 1000

        return runner().run(dead_letters().handle_batch(event, seconds_left))

    return handler


handler = make_handler(default_dead_letters)
