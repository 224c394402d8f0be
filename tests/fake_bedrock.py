"""A fake `bedrock-runtime` client for BedrockProvider: no HTTP fake can stand in for Bedrock
(boto3 parses AWS event-stream framing), so tests plug this in with
`BedrockProvider(settings, client_factory=fake.factory)`.

`FakeBedrock` plays the tool-loop models of tests/fake_tool_loop.py in Converse's format and
records every `converse_stream` call; a request in the wrong format raises the
ValidationException (HTTP 400) Bedrock would.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

from botocore.exceptions import ClientError

from tests.fake_tool_loop import TOOL_LOOP_MODELS, WrongFormat, next_turn
from tests.fake_wire import converse_events


class FakeEventStream:
    """Yields parsed events (the dicts botocore's EventStream yields); an exception in the
    list is raised there; `hold` blocks after the last one like a read from a slow model."""

    def __init__(self, items: list[Any], hold: bool = False) -> None:
        self.items = items
        self.hold = hold
        self.closed = threading.Event()
        self.finished = threading.Event()

    def __iter__(self) -> Iterator[Any]:
        try:
            for item in self.items:
                if isinstance(item, BaseException):
                    raise item
                yield item
            if self.hold:  # the read only returns once the socket is closed
                self.closed.wait(5)
                raise OSError("connection closed")
        finally:
            self.finished.set()

    def close(self) -> None:
        self.closed.set()


class FakeBedrock:
    """`converse_stream` answering the tool-loop models; `calls` holds every request."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.streams: list[FakeEventStream] = []

    def factory(self, region: str, endpoint_url: str | None) -> FakeBedrock:
        """A `client_factory` for BedrockProvider: every region gets this client."""
        return self

    def converse_stream(self, **kwargs: Any) -> dict[str, Any]:
        self.calls.append(kwargs)
        model = str(kwargs.get("modelId"))
        if model not in TOOL_LOOP_MODELS:
            raise _validation_exception("The provided model identifier is invalid.")
        try:
            turn = next_turn("converse", model, kwargs)
        except WrongFormat as e:
            raise _validation_exception(f"fake-tool-loop: {e}") from e
        stream = FakeEventStream(converse_events(turn))
        self.streams.append(stream)
        return {"stream": stream}


def _validation_exception(message: str) -> ClientError:
    error = {"Code": "ValidationException", "Message": message}
    response: Any = {"Error": error, "ResponseMetadata": {"HTTPStatusCode": 400}}
    return ClientError(response, "ConverseStream")
