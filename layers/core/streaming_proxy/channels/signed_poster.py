"""`PostToConnection` signed by `sigv4`, sent on keep-alive connections: no boto3, no threads.

It sends exactly the request botocore's client sends (same method, path, signed headers and
body; none of botocore's unsigned telemetry headers), and maps answers and failures onto the
delivery errors as `poster.post_blocking` maps boto3's. Per post it signs (the signing key
is derived once per day), writes one buffer and parses one answer: about a tenth of boto3's
client CPU (`benchmarks/post_cost.py`).
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from functools import lru_cache
from urllib.parse import quote, urlsplit

from ..errors import DeliveryError, DeliveryUnreachable, delivery_error
from .credentials import BotocoreCredentials, CredentialSource
from .http1 import Answer
from .keepalive import KeepAlivePool, Origin
from .sigv4 import Credentials, Signer

__all__ = ["DEFAULT_TIMEOUT_SECONDS", "SignedPoster", "aws_error_code", "connection_path"]

# A post is tiny, and a lane waiting on a dead connection holds every later message for that
# browser: connect and read together give up within this, as boto3's poster does.
DEFAULT_TIMEOUT_SECONDS = 3.0


@lru_cache(maxsize=4096)
def connection_path(connection_id: str) -> str:
    """The connection id as one path segment, percent-encoded as botocore encodes it.

    UTF-8 bytes, every byte but ASCII letters, digits and `-._~` as %XX ('=' is '%3D').
    """
    return quote(connection_id, safe="-._~")


def aws_error_code(answer: Answer) -> str:
    """The AWS error code of an error answer, read as botocore's rest-json parser reads it.

    The `x-amzn-ErrorType` header wins, then the JSON body's `code` or `__type`; a
    namespace ('aws#Gone') and anything after ':' are dropped.
    """
    code: object = answer.headers.get("x-amzn-errortype")
    if code is None:
        body = _json_object(answer.body)
        code = body.get("code") or body.get("Code") or body.get("__type") or ""
    return str(code).split(":", 1)[0].rsplit("#", 1)[-1]


def _json_object(content: bytes) -> dict[str, object]:
    try:
        parsed = json.loads(content)
    except ValueError:  # an HTML page from a load balancer, say, or a cut body
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _host(scheme: str, hostname: str, port: int | None) -> str:
    """The Host header botocore signs: lower-case host, the port only when not the default."""
    host = f"[{hostname}]" if ":" in hostname else hostname
    default = {"http": 80, "https": 443}[scheme]
    return host if port in (None, default) else f"{host}:{port}"


class SignedPoster:
    """The `Poster` for API Gateway's `@connections` API on a pool of keep-alive connections.

    `endpoint` is the management endpoint with its stage, as `WS_MANAGEMENT_ENDPOINT`
    names it (`https://{api-id}.execute-api.{region}.amazonaws.com/{stage}`). Each post
    gives up within `timeout` seconds once it has a connection: a third of it (1 s at
    most) to connect, the rest for the answer, as `aws.management_api` splits boto3's.
    """

    def __init__(
        self,
        endpoint: str,
        region: str,
        *,
        credentials: CredentialSource | None = None,
        max_connections: int = 32,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        parts = urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) endpoint: {endpoint!r}")
        self._region = region
        self._credentials = credentials or BotocoreCredentials()
        self._host = _host(parts.scheme, parts.hostname, parts.port)
        # The signer of the current credentials and their session-token header line.
        self._signing: tuple[Signer, str] | None = None
        # botocore drops one trailing slash of the endpoint before appending the operation path.
        self._prefix = parts.path.removesuffix("/") + "/@connections/"
        https = parts.scheme == "https"
        connect = min(1.0, timeout / 3)
        self._pool = KeepAlivePool(
            Origin(parts.hostname, parts.port or (443 if https else 80), https),
            size=max_connections,
            connect_timeout=connect,
            read_timeout=timeout - connect,
            tls=tls,
        )
        # A slot per pooled connection: a post holding one never waits for the pool.
        self.slots = asyncio.Semaphore(max_connections)

    @property
    def connections(self) -> int:
        """Connections open now."""
        return self._pool.connections

    async def post(self, connection_id: str, data: bytes) -> None:
        """Deliver `data` to one connection; raise a `DeliveryError` when it cannot."""
        request = self.request(connection_id, data, time.time())
        try:
            answer = await self._pool.request(request)
        except OSError as e:  # timeouts, refused or reset connections, TLS, a cut answer
            raise DeliveryUnreachable(
                f"post to connection {connection_id} got no answer: {type(e).__name__}"
            ) from e
        if not 200 <= answer.status < 300:
            raise delivery_error(answer.status, aws_error_code(answer), connection_id)

    def request(self, connection_id: str, data: bytes, now: float) -> bytes:
        """The whole request for one post signed at `now` (epoch seconds), as sent.

        Exactly the headers botocore signs and sends, in one buffer with the body.
        """
        path = self._prefix + connection_path(connection_id)
        signer, token_line = self._signing_with(self._credentials())
        timestamp = signer.amz_date(now)
        authorization = signer.authorization("POST", path, data, timestamp)
        return (
            f"POST {path} HTTP/1.1\r\nhost: {self._host}\r\nx-amz-date: {timestamp}\r\n"
            f"{token_line}authorization: {authorization}\r\n"
            f"content-length: {len(data)}\r\n\r\n"
        ).encode("ascii") + data

    def _signing_with(self, credentials: Credentials) -> tuple[Signer, str]:
        signing = self._signing
        if signing is None or signing[0].credentials != credentials:  # first post, or renewed
            sent = (credentials.access_key, credentials.token or "")
            if not all(value.isascii() and value.isprintable() for value in sent):
                raise DeliveryError("the AWS credentials found cannot be sent in a header")
            token = credentials.token
            token_line = f"x-amz-security-token: {token}\r\n" if token else ""
            signing = self._signing = (Signer(credentials, self._host, self._region), token_line)
        return signing

    async def aclose(self) -> None:
        """Close every connection; posts still waiting for an answer fail as unreachable."""
        await self._pool.aclose()
