"""botocore as the reference: its signer and its real `apigatewaymanagementapi` client, offline.

Nothing here touches the network: the client's `before-send` event hands back a canned
answer (or raises a canned failure) in place of sending, and the clock botocore signs
with is frozen to the time under test.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any
from unittest import mock

import botocore.auth
import botocore.session
from botocore.awsrequest import AWSRequest, AWSResponse
from botocore.config import Config
from botocore.credentials import Credentials as BotocoreCredentials

from streaming_proxy.channels.sigv4 import Credentials

# What `before-send` hands botocore: a canned answer, or an exception to raise.
Answer = Callable[[AWSRequest], AWSResponse]


def frozen_clock(now: datetime) -> Any:
    """Patch botocore's signing clock to `now` (botocore wants naive UTC)."""
    naive = now.astimezone(UTC).replace(tzinfo=None)
    return mock.patch.object(botocore.auth, "get_current_datetime", return_value=naive)


def botocore_signature(
    method: str,
    url: str,
    body: bytes,
    credentials: Credentials,
    region: str,
    now: datetime,
) -> dict[str, str]:
    """The headers `SigV4Auth` signs and adds for service `execute-api`, lower-cased names.

    `host` is included: botocore signs it but leaves setting it to the HTTP client.
    """
    request = AWSRequest(method=method, url=url, data=body)
    signer = botocore.auth.SigV4Auth(
        BotocoreCredentials(credentials.access_key, credentials.secret_key, credentials.token),
        "execute-api",
        region,
    )
    with frozen_clock(now):
        signer.add_auth(request)
    added = {name.lower(): _text(value) for name, value in request.headers.items()}
    return {"host": signer.headers_to_sign(request)["host"], **added}


def management_client(endpoint: str, region: str, credentials: Credentials, answer: Answer) -> Any:
    """A real botocore `apigatewaymanagementapi` client whose requests go to `answer`."""
    client = botocore.session.get_session().create_client(
        "apigatewaymanagementapi",
        region_name=region,
        endpoint_url=endpoint,
        aws_access_key_id=credentials.access_key,
        aws_secret_access_key=credentials.secret_key,
        aws_session_token=credentials.token,
        # As aws.management_api configures it: no retries of its own.
        config=Config(retries={"max_attempts": 1, "mode": "standard"}),
    )
    client.meta.events.register("before-send", lambda request, **_: answer(request))
    return client


class _Body:
    """The raw stream botocore reads a canned answer's body from."""

    def __init__(self, chunks: list[bytes], then: Exception | None) -> None:
        self._chunks, self._then = chunks, then

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield from self._chunks
        if self._then is not None:
            raise self._then


def canned(
    status: int,
    headers: dict[str, str] | None = None,
    body: bytes = b"",
    *,
    body_fails_with: Exception | None = None,
) -> Answer:
    """An answer botocore parses as if it had come off the wire."""

    def answer(request: AWSRequest) -> AWSResponse:
        raw = _Body([body] if body else [], body_fails_with)
        return AWSResponse(request.url, status, dict(headers or {}), raw)

    return answer


def failing(error: Exception) -> Answer:
    """An answer that never comes: botocore's transport raises `error`."""

    def answer(request: AWSRequest) -> AWSResponse:
        raise error

    return answer


def sent_by_botocore(
    endpoint: str,
    region: str,
    credentials: Credentials,
    connection_id: str,
    data: bytes,
    now: datetime,
) -> AWSRequest:
    """The request botocore's client sends for `PostToConnection` at time `now`."""
    captured: list[AWSRequest] = []

    def capture(request: AWSRequest) -> AWSResponse:
        captured.append(request)
        return canned(200)(request)

    client = management_client(endpoint, region, credentials, capture)
    with frozen_clock(now):
        client.post_to_connection(ConnectionId=connection_id, Data=data)
    (request,) = captured
    return request


def header(request: AWSRequest, name: str) -> str | None:
    value = request.headers.get(name)
    return None if value is None else _text(value)


def _text(value: str | bytes) -> str:
    return value.decode("ascii") if isinstance(value, bytes) else value
