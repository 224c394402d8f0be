"""Posting to one WebSocket connection through the API Gateway management API.

`Poster` is what delivery code sees: one async `post`, failures raised as `DeliveryError`s
(errors.py maps every answer in one function). `BotoPoster` wraps boto3's blocking client
once, on a thread pool of its own, so posts never wait behind DynamoDB work.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Protocol

from botocore.exceptions import BotoCoreError, ClientError
from urllib3.exceptions import HTTPError as Urllib3Error

from ..blocking import BlockingCalls
from ..errors import DeliveryUnreachable, delivery_error

if TYPE_CHECKING:
    from mypy_boto3_apigatewaymanagementapi import ApiGatewayManagementApiClient

# API Gateway's WebSocket message limit.
MAX_MESSAGE_BYTES = 128 * 1024


class Poster(Protocol):
    """Delivers one message to one connection; raises a `DeliveryError` when it cannot.

    `slots` counts its workers (threads, pooled connections). Callers take a slot before
    they start timing a post: waiting for a worker is queueing, not a slow connection.
    """

    slots: asyncio.Semaphore

    async def post(self, connection_id: str, data: bytes) -> None: ...

    async def aclose(self) -> None: ...


def post_blocking(client: ApiGatewayManagementApiClient, connection_id: str, data: bytes) -> None:
    """`PostToConnection` with boto3, every failure mapped onto the delivery errors."""
    try:
        client.post_to_connection(ConnectionId=connection_id, Data=data)
    except ClientError as e:
        code = str(e.response.get("Error", {}).get("Code", ""))
        status = int(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        raise delivery_error(status, code, connection_id) from e
    except (BotoCoreError, Urllib3Error, OSError) as e:
        # Every way of getting no (whole) answer: timeouts, refused or reset connections, TLS,
        # and urllib3 errors raised while botocore reads the body (it does not wrap those).
        raise DeliveryUnreachable(
            f"post to connection {connection_id} got no answer: {type(e).__name__}"
        ) from e


class BotoPoster:
    """boto3's `apigatewaymanagementapi` client behind the async `Poster` interface."""

    def __init__(self, client: ApiGatewayManagementApiClient, *, threads: int = 32) -> None:
        self._client = client
        self._calls = BlockingCalls(threads, "post")
        self.slots = asyncio.Semaphore(threads)  # one per thread: a slot is a free thread

    async def post(self, connection_id: str, data: bytes) -> None:
        await self._calls(post_blocking, self._client, connection_id, data)

    async def aclose(self) -> None:
        self._calls.shutdown()
