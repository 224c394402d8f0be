"""`PostToConnection` over one keep-alive httpx client, signed by `sigv4`: no boto3, no threads.

It sends exactly the request botocore's client sends (same URL, same signed headers, same
body), and maps answers and failures onto the delivery errors as `poster.post_blocking`
maps boto3's. Its CPU per post is httpx's own, which is about boto3's: see
`benchmarks/post_cost.py` before choosing it for cost.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import UTC, datetime
from functools import cached_property
from typing import TYPE_CHECKING
from urllib.parse import quote, urlsplit

import httpx
from botocore.exceptions import BotoCoreError

from ..errors import DeliveryError, DeliveryUnreachable, delivery_error
from .sigv4 import Credentials, sign

if TYPE_CHECKING:
    from botocore.credentials import Credentials as BotocoreCredentialSet

__all__ = [
    "DEFAULT_TIMEOUT",
    "BotocoreCredentials",
    "CredentialSource",
    "SignedPoster",
    "aws_error_code",
    "connection_path",
]

CredentialSource = Callable[[], Credentials]

# Short connect and read limits: a post is tiny, and a lane waiting on a dead connection
# holds every later message for that browser. The pool limit bounds waiting for a free
# connection when every one of them is busy.
DEFAULT_TIMEOUT = httpx.Timeout(connect=2.0, read=3.0, write=3.0, pool=3.0)


class BotocoreCredentials:
    """The credentials botocore's chain finds: environment (Lambda), profile, container, role.

    The chain is searched once, on first use, so creating a poster costs nothing at cold
    start. A frozen copy is taken per call, so refreshable role credentials renew themselves
    before they expire (a refresh, when due, blocks the event loop for that call).
    """

    @cached_property
    def _found(self) -> BotocoreCredentialSet | None:
        # Imported here: botocore's session module costs tens of milliseconds to import.
        from botocore.session import get_session

        return get_session().get_credentials()

    def __call__(self) -> Credentials:
        if self._found is None:
            raise DeliveryError("no AWS credentials to sign posts to connections with")
        try:
            frozen = self._found.get_frozen_credentials()
        except BotoCoreError as e:  # the credential endpoint did not answer a refresh
            raise DeliveryUnreachable(
                f"could not refresh AWS credentials: {type(e).__name__}"
            ) from e
        if not frozen.access_key or not frozen.secret_key:
            raise DeliveryError("the AWS credentials found are incomplete")
        return Credentials(frozen.access_key, frozen.secret_key, frozen.token or None)


def connection_path(connection_id: str) -> str:
    """The connection id as one path segment, percent-encoded as botocore encodes it.

    UTF-8 bytes, every byte but ASCII letters, digits and `-._~` as %XX ('=' is '%3D').
    """
    return quote(connection_id, safe="-._~")


def aws_error_code(response: httpx.Response) -> str:
    """The AWS error code of an error answer, read as botocore's rest-json parser reads it.

    The `x-amzn-ErrorType` header wins, then the JSON body's `code` or `__type`; a
    namespace ('aws#Gone') and anything after ':' are dropped.
    """
    code = response.headers.get("x-amzn-errortype")
    if code is None:
        body = _json_object(response.content)
        code = body.get("code") or body.get("Code") or body.get("__type") or ""
    return str(code).split(":", 1)[0].rsplit("#", 1)[-1]


def _json_object(content: bytes) -> dict[str, object]:
    try:
        parsed = json.loads(content)
    except ValueError:  # an HTML page from a load balancer, say
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _host(scheme: str, hostname: str, port: int | None) -> str:
    """The Host header botocore signs: lower-case host, the port only when not the default."""
    host = f"[{hostname}]" if ":" in hostname else hostname
    default = {"http": 80, "https": 443}[scheme]
    return host if port in (None, default) else f"{host}:{port}"


class SignedPoster:
    """The `Poster` for API Gateway's `@connections` API on one pooled keep-alive client.

    `endpoint` is the management endpoint with its stage, as `WS_MANAGEMENT_ENDPOINT`
    names it (`https://{api-id}.execute-api.{region}.amazonaws.com/{stage}`).
    """

    def __init__(
        self,
        endpoint: str,
        region: str,
        *,
        credentials: CredentialSource | None = None,
        max_connections: int = 32,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        parts = urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) endpoint: {endpoint!r}")
        self._region = region
        self._credentials = credentials or BotocoreCredentials()
        self._host = _host(parts.scheme, parts.hostname, parts.port)
        self._origin = f"{parts.scheme}://{self._host}"
        # botocore drops one trailing slash of the endpoint before appending the operation path.
        self._prefix = parts.path.removesuffix("/") + "/@connections/"
        # A slot per pooled connection: a post holding one never waits for the pool.
        self.slots = asyncio.Semaphore(max_connections)
        self._client = httpx.AsyncClient(
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
            timeout=timeout,
            transport=transport,
        )

    async def post(self, connection_id: str, data: bytes) -> None:
        """Deliver `data` to one connection; raise a `DeliveryError` when it cannot."""
        path = self._prefix + connection_path(connection_id)
        headers = sign(
            "POST",
            self._host,
            path,
            data,
            credentials=self._credentials(),
            region=self._region,
            now=datetime.now(UTC),
        )
        try:
            response = await self._client.post(self._origin + path, content=data, headers=headers)
        except httpx.RequestError as e:  # timeouts, refused or reset connections, bad framing
            raise DeliveryUnreachable(
                f"post to connection {connection_id} got no answer: {type(e).__name__}"
            ) from e
        if not response.is_success:
            raise delivery_error(response.status_code, aws_error_code(response), connection_id)

    async def aclose(self) -> None:
        await self._client.aclose()
