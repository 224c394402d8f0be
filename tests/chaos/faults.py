"""The faults a rule can inject, and helpers shaped like the errors of the real targets."""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

DYNAMODB_ERROR_PREFIX = "com.amazonaws.dynamodb.v20120810#"


class Call(Protocol):
    """One intercepted request, as an action sees it. Each method returns whether the
    client connection may carry another request."""

    async def forward(self, *, cut_after: int | None = None, reset: bool = True) -> bool:
        """Relay to the target; with `cut_after`, end the connection after that many body
        bytes (RST when `reset`, else FIN)."""
        ...

    async def answer(self, status: int, headers: Mapping[str, str], body: bytes) -> bool: ...

    async def client_gone(self) -> None:
        """Returns once the client has closed or reset its connection."""
        ...

    async def pause(self, seconds: float) -> bool:
        """Wait, unless the client leaves first; whether it is still there."""
        ...

    def reset(self) -> bool:
        """Abort the client connection with a TCP RST."""
        ...


class Action(ABC):
    """What a rule does to a request it picks."""

    # Whether the request still reaches the target: the traffic log counts it as forwarded.
    forwards = False
    # Decided when a connection is accepted, before any byte of a request is read.
    on_accept = False

    @property
    @abstractmethod
    def name(self) -> str: ...

    @abstractmethod
    async def apply(self, call: Call) -> bool: ...


class Forward(Action):
    """No fault: what happens to a request no rule picks."""

    forwards = True
    name = "forward"

    async def apply(self, call: Call) -> bool:
        return await call.forward()


@dataclass(frozen=True)
class Answer(Action):
    """Answer without forwarding."""

    status: int
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)
    label: str = ""

    @property
    def name(self) -> str:
        return self.label or f"status({self.status})"

    async def apply(self, call: Call) -> bool:
        return await call.answer(self.status, self.headers, self.body)


@dataclass(frozen=True)
class Delay(Action):
    """Hold the request, then forward it."""

    seconds: float
    forwards = True

    @property
    def name(self) -> str:
        return f"delay({self.seconds})"

    async def apply(self, call: Call) -> bool:
        # A client that gave up during the delay has no request left to forward.
        return await call.pause(self.seconds) and await call.forward()


class Hang(Action):
    """Read the request and never answer, until the client gives up or the proxy stops."""

    name = "hang"

    async def apply(self, call: Call) -> bool:
        await call.client_gone()
        return False


class Reset(Action):
    """Read the request, then abort the connection with a TCP RST."""

    name = "reset"

    async def apply(self, call: Call) -> bool:
        return call.reset()


class ResetBeforeRequest(Reset):
    """Accept a connection and reset it at once. Only new connections can be picked: a
    client reusing a kept-alive connection is never affected."""

    name = "reset_before_request"
    on_accept = True


@dataclass(frozen=True)
class CutBody(Action):
    """Forward, then end the connection once `after` bytes of the response body are out."""

    after: int
    reset: bool
    forwards = True

    def __post_init__(self) -> None:
        if self.after < 0:
            raise ValueError("a cut comes after zero or more bytes")

    @property
    def name(self) -> str:
        return f"{'cut' if self.reset else 'close'}_after({self.after})"

    async def apply(self, call: Call) -> bool:
        return await call.forward(cut_after=self.after, reset=self.reset)


def status(code: int, body: bytes = b"", headers: Mapping[str, str] | None = None) -> Answer:
    """Answer `code` with this body and headers (Content-Length is added)."""
    return Answer(code, body, dict(headers or {}))


def _json(code: int, document: Mapping[str, object], headers: dict[str, str], label: str) -> Answer:
    return Answer(code, json.dumps(document).encode(), headers, label)


def _apigateway_error(code: int, error_type: str, label: str) -> Answer:
    # What botocore's rest-json parser needs to raise `client.exceptions.<error_type>`.
    headers = {"Content-Type": "application/json", "x-amzn-ErrorType": error_type}
    return _json(code, {"message": f"{error_type} injected by ChaosProxy"}, headers, label)


def gone() -> Answer:
    """410 GoneException, as the @connections API answers for a closed connection."""
    return _apigateway_error(410, "GoneException", "gone")


def throttle() -> Answer:
    """429 LimitExceededException, the @connections API's rate limit."""
    return _apigateway_error(429, "LimitExceededException", "throttle")


def server_error(code: int = 500) -> Answer:
    """A plain 5xx with a JSON body, for any target."""
    headers = {"Content-Type": "application/json"}
    return _json(
        code, {"message": "server error injected by ChaosProxy"}, headers, f"server_error({code})"
    )


def dynamodb_error(
    error_type: str = "ProvisionedThroughputExceededException", code: int = 400
) -> Answer:
    """A DynamoDB JSON-protocol error; botocore raises `client.exceptions.<error_type>`."""
    headers = {"Content-Type": "application/x-amz-json-1.0"}
    document = {
        "__type": DYNAMODB_ERROR_PREFIX + error_type,
        "message": f"{error_type} injected by ChaosProxy",
    }
    return _json(code, document, headers, error_type)


def delay(seconds: float) -> Delay:
    return Delay(seconds)


def hang() -> Hang:
    return Hang()


def reset() -> Reset:
    return Reset()


def reset_before_request() -> ResetBeforeRequest:
    return ResetBeforeRequest()


def cut_after(n_bytes: int) -> CutBody:
    """Forward, and reset (RST) the connection after `n_bytes` of the response body."""
    return CutBody(n_bytes, reset=True)


def close_after(n_bytes: int) -> CutBody:
    """Forward, and close (FIN) the connection after `n_bytes` of the response body."""
    return CutBody(n_bytes, reset=False)
