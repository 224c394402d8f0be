"""SignedPoster: answers and failures mapped as post_blocking maps them, signed as botocore signs.

Answers come from `httpx.MockTransport`, and the same answers are handed to boto3's real
client (through botocore's `before-send` event) so both mappings are compared side by side.
Connection reuse, pool bounds and real socket failures use a raw HTTP server on loopback.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from botocore.exceptions import (
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)
from urllib3.exceptions import ProtocolError

from streaming_proxy.channels.poster import post_blocking
from streaming_proxy.channels.signed_poster import BotocoreCredentials, SignedPoster
from streaming_proxy.channels.sigv4 import Credentials
from streaming_proxy.errors import (
    ConnectionGone,
    DeliveryError,
    DeliveryRejected,
    DeliveryServerError,
    DeliveryThrottled,
    DeliveryUnreachable,
)
from tests.unit.aws_reference import (
    Answer,
    botocore_signature,
    canned,
    failing,
    header,
    management_client,
    sent_by_botocore,
)

ENDPOINT = "https://a1b2c3d4e5.execute-api.eu-west-1.amazonaws.com/prod"
REGION = "eu-west-1"
CID = "Ld4Zq3xwoAMCJkQ="
KEY = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
TEMPORARY = Credentials("ASIAIOSFODNN7EXAMPLE", "je7MtGbClwBF/2Zp9Utk/h3yCo8nvb", "FwoGZXIv+tok=")

Handler = Callable[[httpx.Request], httpx.Response]


def mock_poster(handler: Handler, credentials: Credentials = KEY) -> SignedPoster:
    return SignedPoster(
        ENDPOINT, REGION, credentials=lambda: credentials, transport=httpx.MockTransport(handler)
    )


async def signed_outcome(handler: Handler) -> DeliveryError | None:
    poster = mock_poster(handler)
    try:
        await poster.post(CID, b'{"type":"delta"}')
    except DeliveryError as e:
        return e
    finally:
        await poster.aclose()
    return None


def boto_outcome(answer: Answer) -> DeliveryError | None:
    client = management_client(ENDPOINT, REGION, KEY, answer)
    try:
        post_blocking(client, CID, b'{"type":"delta"}')
    except DeliveryError as e:
        return e
    return None


def same_outcome(ours: DeliveryError | None, theirs: DeliveryError | None) -> None:
    assert type(ours) is type(theirs)
    if ours is not None and theirs is not None:
        assert (ours.status, ours.code, ours.retryable) == (
            theirs.status,
            theirs.code,
            theirs.retryable,
        )


# --- answers ----------------------------------------------------------------------------------


def aws_error(code: str, message: str = "x") -> tuple[dict[str, str], bytes]:
    return {"x-amzn-ErrorType": code}, b'{"message":"' + message.encode() + b'"}'


ANSWERS = [
    pytest.param(200, {}, b"", None, id="200"),
    pytest.param(
        410, *aws_error("GoneException", "Connection is gone"), ConnectionGone, id="410-gone"
    ),
    pytest.param(
        410, {}, b'{"__type":"com.amazonaws#GoneException"}', ConnectionGone, id="410-body-type"
    ),
    pytest.param(
        403,
        *aws_error("ForbiddenException:http://internal.amazon.com/coral/"),
        DeliveryRejected,
        id="403-forbidden",
    ),
    pytest.param(413, *aws_error("PayloadTooLargeException"), DeliveryRejected, id="413-too-large"),
    pytest.param(400, *aws_error("BadRequestException"), DeliveryRejected, id="400-bad-request"),
    pytest.param(429, *aws_error("LimitExceededException"), DeliveryThrottled, id="429-limit"),
    pytest.param(400, *aws_error("LimitExceededException"), DeliveryThrottled, id="400-limit-code"),
    pytest.param(
        400,
        {},
        b'{"__type":"com.amazonaws.apigw#LimitExceededException:extra"}',
        DeliveryThrottled,
        id="400-limit-in-body-type",
    ),
    pytest.param(500, *aws_error("InternalServerErrorException"), DeliveryServerError, id="500"),
    pytest.param(502, {}, b"<html>Bad Gateway</html>", DeliveryServerError, id="502-html"),
    pytest.param(503, {}, b"", DeliveryServerError, id="503-empty"),
]


@pytest.mark.parametrize(("status", "headers", "body", "expected"), ANSWERS)
async def test_answers_map_as_post_blocking_maps_them(
    status: int, headers: dict[str, str], body: bytes, expected: type[DeliveryError] | None
) -> None:
    ours = await signed_outcome(lambda _: httpx.Response(status, headers=headers, content=body))
    theirs = boto_outcome(canned(status, headers, body))
    assert type(ours) is (expected or type(None))
    same_outcome(ours, theirs)


async def test_statuses_the_publisher_relies_on() -> None:
    """410 gone and 403/413 final, each with its status; 429 and 5xx retried."""
    for status, kind in {410: ConnectionGone, 403: DeliveryRejected, 413: DeliveryRejected}.items():
        outcome = await signed_outcome(lambda _, s=status: httpx.Response(s))
        assert isinstance(outcome, kind) and outcome.status == status
        assert not outcome.retryable
    for status in (429, 500, 504):
        outcome = await signed_outcome(lambda _, s=status: httpx.Response(s))
        assert outcome is not None and outcome.retryable


# --- no answer --------------------------------------------------------------------------------


def raising(error: Exception) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        raise error

    return handler


FAILURES = [
    pytest.param(
        httpx.ConnectTimeout("connect timed out"),
        ConnectTimeoutError(endpoint_url=ENDPOINT),
        id="connect-timeout",
    ),
    pytest.param(
        httpx.ReadTimeout("read timed out"),
        ReadTimeoutError(endpoint_url=ENDPOINT),
        id="read-timeout",
    ),
    pytest.param(
        httpx.ConnectError("connection refused"),
        EndpointConnectionError(endpoint_url=ENDPOINT),
        id="refused",
    ),
    pytest.param(
        httpx.RemoteProtocolError("server disconnected"),
        ConnectionClosedError(endpoint_url=ENDPOINT),
        id="reset",
    ),
]


@pytest.mark.parametrize(("httpx_error", "botocore_error"), FAILURES)
async def test_failures_map_as_post_blocking_maps_them(
    httpx_error: Exception, botocore_error: Exception
) -> None:
    ours = await signed_outcome(raising(httpx_error))
    assert isinstance(ours, DeliveryUnreachable) and ours.retryable
    same_outcome(ours, boto_outcome(failing(botocore_error)))


@pytest.mark.parametrize(
    "error",
    [
        httpx.WriteTimeout("write timed out"),
        httpx.PoolTimeout("no free connection"),
        httpx.ReadError("connection reset by peer"),
        httpx.WriteError("broken pipe"),
    ],
    ids=type,
)
async def test_every_transport_failure_is_unreachable(error: Exception) -> None:
    outcome = await signed_outcome(raising(error))
    assert isinstance(outcome, DeliveryUnreachable)
    assert outcome.__cause__ is error


class _BrokenBody(httpx.AsyncByteStream):
    """A response body that breaks after its first bytes, as a reset connection does."""

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield b'{"message":"Internal'
        raise httpx.ReadError("connection reset mid-body")


async def test_read_error_mid_response_is_unreachable() -> None:
    outcome = await signed_outcome(lambda _: httpx.Response(502, stream=_BrokenBody()))
    assert isinstance(outcome, DeliveryUnreachable)


def test_post_blocking_maps_a_read_error_mid_response() -> None:
    broken = canned(
        502,
        {"content-length": "64"},
        b'{"message":"Internal',
        body_fails_with=(ProtocolError("Connection broken: IncompleteRead")),
    )
    assert isinstance(boto_outcome(broken), DeliveryUnreachable)


# --- signing ----------------------------------------------------------------------------------


def recording(sent: list[httpx.Request]) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200)

    return handler


def signed_at(request: httpx.Request) -> datetime:
    return datetime.strptime(request.headers["x-amz-date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)


@pytest.mark.parametrize("credentials", [KEY, TEMPORARY], ids=["key", "session-token"])
async def test_request_is_the_one_botocore_sends(credentials: Credentials) -> None:
    data = '{"content":"héllo 👋"}'.encode()
    sent: list[httpx.Request] = []
    poster = mock_poster(recording(sent), credentials)
    await poster.post("a+b/c=", data)
    await poster.aclose()
    (request,) = sent
    now = signed_at(request)
    reference = sent_by_botocore(ENDPOINT, REGION, credentials, "a+b/c=", data, now)
    assert (request.method, str(request.url), request.content) == (
        reference.method,
        reference.url,
        reference.body,
    )
    for name in ("Authorization", "X-Amz-Date", "X-Amz-Security-Token"):
        assert request.headers.get(name) == header(reference, name)
    assert request.headers.get("x-amz-security-token") == credentials.token


async def test_authorization_verifies_with_botocore_signer() -> None:
    sent: list[httpx.Request] = []
    poster = mock_poster(recording(sent), TEMPORARY)
    await poster.post(CID, bytes(range(256)))
    await poster.aclose()
    (request,) = sent
    expected = botocore_signature(
        "POST", str(request.url), request.content, TEMPORARY, REGION, signed_at(request)
    )
    assert {name: request.headers[name] for name in expected} == expected


async def test_credentials_are_read_for_every_post() -> None:
    """A refreshed (rotated) key is used from the next post on."""
    keys = iter([KEY, TEMPORARY])
    sent: list[httpx.Request] = []
    poster = SignedPoster(
        ENDPOINT,
        REGION,
        credentials=lambda: next(keys),
        transport=httpx.MockTransport(recording(sent)),
    )
    await poster.post(CID, b"1")
    await poster.post(CID, b"2")
    await poster.aclose()
    used = [r.headers["authorization"].split("Credential=")[1].split("/")[0] for r in sent]
    assert used == [KEY.access_key, TEMPORARY.access_key]
    assert "x-amz-security-token" not in sent[0].headers
    assert sent[1].headers["x-amz-security-token"] == TEMPORARY.token


# --- default credentials: botocore's chain ----------------------------------------------------


@pytest.fixture
def no_aws_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> Iterator[None]:
    """Only what a test puts in the environment is found: no files, no metadata service."""
    for name in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_SECURITY_TOKEN",
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_ROLE_ARN",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    yield


def test_default_credentials_come_from_botocore_chain(
    no_aws_config: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "ASIAENVEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "env-secret")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "env-token")
    assert BotocoreCredentials()() == Credentials("ASIAENVEXAMPLE", "env-secret", "env-token")


def test_no_credentials_is_a_delivery_error(no_aws_config: None) -> None:
    with pytest.raises(DeliveryError, match="no AWS credentials"):
        BotocoreCredentials()()


def test_importing_the_poster_leaves_boto3_and_botocore_sessions_unloaded() -> None:
    """Cold start: boto3 and botocore's session machinery load only when credentials are read."""
    check = (
        "import sys, streaming_proxy.channels.signed_poster\n"
        "loaded = {'boto3', 'botocore.session', 'botocore.credentials'} & set(sys.modules)\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", check], check=True)


# --- real sockets on loopback -----------------------------------------------------------------

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"


class Loopback:
    """A raw HTTP/1.1 server on 127.0.0.1: counts connections, answers each request with `reply`.

    `hold` seconds pass before each answer; `close_after_reply` hangs up after one answer.
    """

    def __init__(self, reply: bytes = OK, *, hold: float = 0.0, close_after_reply: bool = False):
        self.reply, self.hold, self.close_after_reply = reply, hold, close_after_reply
        self.connections = 0
        self.bodies: list[bytes] = []
        self._handlers: set[asyncio.Task[None]] = set()

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[str]:
        server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            yield f"http://127.0.0.1:{port}/dev"
        finally:
            server.close()
            for task in self._handlers:
                task.cancel()
            await asyncio.gather(*self._handlers, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":")[1])
                    for line in head.lower().split(b"\r\n")
                    if line.startswith(b"content-length:")
                )
                self.bodies.append(await reader.readexactly(length))
                await asyncio.sleep(self.hold)
                writer.write(self.reply)
                await writer.drain()
                if self.close_after_reply:
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            writer.close()


def loopback_poster(url: str, **options: Any) -> SignedPoster:
    return SignedPoster(url, "us-east-1", credentials=lambda: KEY, **options)


async def test_connections_are_kept_alive_across_posts() -> None:
    server = Loopback()
    async with server.serving() as url:
        poster = loopback_poster(url)
        for n in range(5):
            await poster.post(CID, f"message {n}".encode())
        await poster.aclose()
    assert server.connections == 1
    assert server.bodies == [f"message {n}".encode() for n in range(5)]


async def test_the_pool_bounds_open_connections() -> None:
    server = Loopback(hold=0.05)
    async with server.serving() as url:
        poster = loopback_poster(url, max_connections=2)
        await asyncio.gather(*(poster.post(CID, b"x") for _ in range(6)))
        await poster.aclose()
    assert (server.connections, len(server.bodies)) == (2, 6)


async def test_a_connection_closed_mid_answer_is_unreachable() -> None:
    truncated = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{partial"
    async with Loopback(truncated, close_after_reply=True).serving() as url:
        poster = loopback_poster(url)
        with pytest.raises(DeliveryUnreachable):
            await poster.post(CID, b"x")
        await poster.aclose()


async def test_an_answer_that_never_comes_times_out() -> None:
    async with Loopback(hold=30).serving() as url:
        poster = loopback_poster(url, timeout=httpx.Timeout(0.2))
        with pytest.raises(DeliveryUnreachable, match="ReadTimeout"):
            await poster.post(CID, b"x")
        await poster.aclose()


async def test_a_refused_connection_is_unreachable() -> None:
    async with Loopback().serving() as url:
        pass  # the port is free again once the server has closed
    poster = loopback_poster(url)
    with pytest.raises(DeliveryUnreachable, match="ConnectError"):
        await poster.post(CID, b"x")
    await poster.aclose()


# --- construction and closing -----------------------------------------------------------------


@pytest.mark.parametrize("endpoint", ["ftp://example.com/dev", "example.com/dev", "https:///dev"])
def test_an_endpoint_must_be_http(endpoint: str) -> None:
    with pytest.raises(ValueError):
        SignedPoster(endpoint, REGION, credentials=lambda: KEY)


async def test_aclose_closes_the_transport() -> None:
    closed: list[bool] = []

    class Transport(httpx.MockTransport):
        async def aclose(self) -> None:
            closed.append(True)

    poster = SignedPoster(
        ENDPOINT, REGION, credentials=lambda: KEY, transport=Transport(recording([]))
    )
    await poster.aclose()
    assert closed == [True]
