"""Posting to one WebSocket connection through the API Gateway management API."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from botocore.exceptions import ClientError

from ..errors import ConnectionGone, PayloadTooLarge, ProxyError, RateLimited

if TYPE_CHECKING:
    from mypy_boto3_apigatewaymanagementapi import ApiGatewayManagementApiClient

# API Gateway's WebSocket message limit.
MAX_MESSAGE_BYTES = 128 * 1024


class Poster(Protocol):
    """Delivers bytes to one connection; blocking. Raises ConnectionGone / RateLimited."""

    def post(self, connection_id: str, data: bytes) -> None: ...


class ManagementApiPoster:
    """`PostToConnection` with API Gateway's errors mapped onto the error tree."""

    def __init__(self, client: ApiGatewayManagementApiClient) -> None:
        self._client = client

    def post(self, connection_id: str, data: bytes) -> None:
        try:
            self._client.post_to_connection(ConnectionId=connection_id, Data=data)
        except self._client.exceptions.GoneException as e:  # a ClientError: catch it first
            raise ConnectionGone(f"connection {connection_id} is gone") from e
        except ClientError as e:
            code = e.response.get("Error", {}).get("Code", "")
            status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            if code in ("LimitExceededException", "TooManyRequestsException") or status == 429:
                raise RateLimited("API Gateway throttled the post") from e
            if code == "PayloadTooLargeException" or status == 413:
                raise PayloadTooLarge("message over the WebSocket limit") from e
            raise ProxyError(f"post to connection failed: {code or status}") from e
