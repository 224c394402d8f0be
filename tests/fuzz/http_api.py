"""The HTTP API under test: what docs/openapi.yaml documents, and a client of the local stack
that presents any kind of credentials."""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
import schemathesis
from hypothesis import strategies as st
from schemathesis import Response
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.conftest import Stack

from .event_streams import FrameSchemas
from .ledger import SecretLedger
from .rules import REQUEST_TIMEOUT, NoTimelyAnswer, Operation, Request

ROOT = Path(__file__).resolve().parents[2]
# Schemathesis reads an event stream until it ends or REQUEST_TIMEOUT passes, whatever its length.
# Invalid data may also be refused by its size: a generated body over the 1 MiB limit gets the
# documented 413 before its content is read.
REJECTIONS = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429"]
SCHEMA = schemathesis.openapi.from_path(
    ROOT / "docs" / "openapi.yaml",
    config=schemathesis.Config.from_dict(
        {
            "request-timeout": REQUEST_TIMEOUT,
            "max-stream-events": 1_000_000,
            "checks": {"negative_data_rejection": {"expected-statuses": [*REJECTIONS, "5xx"]}},
        }
    ),
)


def documented_operations() -> dict[str, Operation]:
    """Every operation of the document by its operationId; one schemathesis cannot read
    fails the whole module, as it should."""
    operations: dict[str, Operation] = {}
    for result in SCHEMA.get_all_operations():
        if not isinstance(result, Ok):
            raise result.err()
        operation = result.ok()
        operations[operation.definition.raw["operationId"]] = operation
    return operations


OPERATIONS = documented_operations()
FRAMES = FrameSchemas(SCHEMA.raw_schema)
CONFORMANCE = [
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
ACCEPTS = [
    "application/json",
    "text/event-stream",
    "*/*",
    "text/event-stream;q=0.9, application/json",
]


class Auth(enum.Enum):
    """Where a request carries its credentials."""

    X_API_KEY = "x-api-key"
    BEARER = "bearer"
    BODY = "body"  # Klai style: `apiKey` in the body
    MISSING = "missing"
    WRONG = "wrong"
    TOKEN_AS_KEY = "subscribe token as app key"

    @property
    def valid(self) -> bool:
        return self in (Auth.X_API_KEY, Auth.BEARER, Auth.BODY)


# Mostly valid credentials, so most requests get past authentication.
AUTHS = st.sampled_from(
    [
        Auth.X_API_KEY,
        Auth.BEARER,
        Auth.BODY,
        Auth.X_API_KEY,
        Auth.MISSING,
        Auth.WRONG,
        Auth.TOKEN_AS_KEY,
    ]
)


@dataclass(frozen=True)
class Target:
    """The running stack and what the fuzzers may use against it."""

    stack: Stack
    ledger: SecretLedger
    token: str  # a subscribe token: a secret no answer may repeat
    wrong_key: str
    stream_id: str  # a stream of the dev app, so `stop` finds something
    # Frontend tool calls of the dev app waiting on channel `fuzz-http` (the token's), so
    # answers get past "no such call" to the channel check and the first-answer-wins write.
    tool_calls: tuple[str, ...] = ()

    def tool_call(self, index: int) -> str:
        return self.tool_calls[index % len(self.tool_calls)]

    def call(self, case: Request, headers: dict[str, Any], **kwargs: Any) -> tuple[Response, float]:
        """Send `case`; a transport failure is an answer that never came."""
        started = time.monotonic()
        try:
            response = case.call(
                base_url=self.stack.http, headers=headers, timeout=REQUEST_TIMEOUT, **kwargs
            )
        except requests.RequestException as e:
            raise NoTimelyAnswer(
                f"{case.method} {case.path}: no answer ({type(e).__name__}: {e})"
            ) from None  # the transport's own traceback says nothing about the server
        return response, time.monotonic() - started

    def credentials(self, auth: Auth) -> dict[str, str]:
        match auth:
            case Auth.X_API_KEY:
                return {"x-api-key": self.stack.api_key}
            case Auth.BEARER:
                return {"Authorization": f"Bearer {self.stack.api_key}"}
            case Auth.WRONG:
                return {"x-api-key": self.wrong_key}
            case Auth.TOKEN_AS_KEY:
                return {"Authorization": f"Bearer {self.token}"}
        return {}


def mock_request(channels: list[str]) -> dict[str, Any]:
    """A valid Klai body: the mock provider, no delays, no coalescing."""
    return {
        "channels": channels,
        "actionName": "onFuzz",
        "payload": {
            "provider": "mock",
            "messages": [{"role": "user", "content": "hello fuzz"}],
            "providerArgs": {"delayMs": 0},
        },
        "options": {"flushIntervalMs": 0},
    }
