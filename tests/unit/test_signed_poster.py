"""SignedPoster: the request botocore sends, and every answer and failure mapped as boto3's.

Answers come off a real socket (a scripted server on 127.0.0.1), and the same answers are
handed to boto3's real client (through botocore's `before-send` event), so both mappings
are compared side by side. Failures are provoked for real: timeouts, refusals, resets,
closes before or inside an answer.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from datetime import UTC, datetime
from typing import Any

import pytest
from botocore.exceptions import (
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)
from urllib3.exceptions import ProtocolError as Urllib3ProtocolError

from streaming_proxy.channels.poster import post_blocking
from streaming_proxy.channels.signed_poster import SignedPoster
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
from tests.unit.loopback import Loopback, Reply, answer

ENDPOINT = "https://a1b2c3d4e5.execute-api.eu-west-1.amazonaws.com/prod"
REGION = "eu-west-1"
CID = "Ld4Zq3xwoAMCJkQ="
KEY = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
TEMPORARY = Credentials("ASIAIOSFODNN7EXAMPLE", "je7MtGbClwBF/2Zp9Utk/h3yCo8nvb", "FwoGZXIv+tok=")
NOW = datetime(2026, 3, 14, 15, 9, 26, tzinfo=UTC)


def poster_for(url: str, credentials: Credentials = KEY, **options: Any) -> SignedPoster:
    return SignedPoster(url, REGION, credentials=lambda: credentials, **options)


async def signed_outcome(*replies: Reply, **options: Any) -> DeliveryError | None:
    """What our poster raises for a post answered by `replies` on a real socket."""
    server = Loopback(list(replies))
    async with server.serving() as url:
        poster = poster_for(url, **options)
        try:
            await poster.post(CID, b'{"type":"delta"}')
        except DeliveryError as e:
            return e
        finally:
            await poster.aclose()
    return None


def boto_outcome(canned_answer: Answer) -> DeliveryError | None:
    client = management_client(ENDPOINT, REGION, KEY, canned_answer)
    try:
        post_blocking(client, CID, b'{"type":"delta"}')
    except DeliveryError as e:
        return e
    return None


def same_outcome(ours: DeliveryError | None, theirs: DeliveryError | None) -> None:
    assert type(ours) is type(theirs)
    if ours is not None and theirs is not None:
        assert (ours.status, ours.code, ours.retryable, ours.kind) == (
            theirs.status,
            theirs.code,
            theirs.retryable,
            theirs.kind,
        )


# --- answers ----------------------------------------------------------------------------------


def aws_error(code: str, message: str = "x") -> tuple[dict[str, str], bytes]:
    return {"x-amzn-ErrorType": code}, b'{"message":"' + message.encode() + b'"}'


ANSWERS = [
    pytest.param(200, {}, b"", None, id="200"),
    pytest.param(204, {}, b"", None, id="204"),
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
    pytest.param(403, {}, b'{"message":"Forbidden"}', DeliveryRejected, id="403-no-code"),
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
    pytest.param(504, {"Content-Type": "text/plain"}, b"timeout", DeliveryServerError, id="504"),
]


@pytest.mark.parametrize(("status", "headers", "body", "expected"), ANSWERS)
async def test_answers_map_as_post_blocking_maps_them(
    status: int, headers: dict[str, str], body: bytes, expected: type[DeliveryError] | None
) -> None:
    ours = await signed_outcome(Reply(answer(status, headers, body)))
    theirs = boto_outcome(canned(status, headers, body))
    assert type(ours) is (expected or type(None))
    same_outcome(ours, theirs)


@pytest.mark.parametrize(
    ("status", "error_type", "expected"),
    [(410, "GoneException", ConnectionGone), (429, "LimitExceededException", DeliveryThrottled)],
)
async def test_a_chunked_json_error_maps_as_boto3_maps_it(
    status: int, error_type: str, expected: type[DeliveryError]
) -> None:
    body = b'{"__type":"' + error_type.encode() + b'","message":"m"}'
    chunked = (
        f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
        "Transfer-Encoding: chunked\r\n\r\n".encode()
        + b"%x\r\n%s\r\n" % (10, body[:10])
        + b"%x\r\n%s\r\n" % (len(body) - 10, body[10:])
        + b"0\r\n\r\n"
    )
    ours = await signed_outcome(Reply(chunked))
    assert type(ours) is expected
    same_outcome(ours, boto_outcome(canned(status, {}, body)))


async def test_statuses_the_publisher_relies_on() -> None:
    """410 gone and 403/413 final, each with its status; 429 and 5xx retried."""
    for status, kind in {410: ConnectionGone, 403: DeliveryRejected, 413: DeliveryRejected}.items():
        outcome = await signed_outcome(Reply(answer(status)))
        assert isinstance(outcome, kind) and outcome.status == status
        assert not outcome.retryable
    for status in (429, 500, 502, 503):
        outcome = await signed_outcome(Reply(answer(status)))
        assert outcome is not None and outcome.retryable


# --- no answer --------------------------------------------------------------------------------

NO_ANSWER = [
    pytest.param(Reply(hold=5), ReadTimeoutError, "ReadTimeout", id="never-answers"),
    pytest.param(Reply(b"", then="reset"), ConnectionClosedError, "Reset", id="reset"),
    pytest.param(Reply(then="silent"), ConnectionClosedError, "ProtocolError", id="closed"),
    pytest.param(
        Reply(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{partial", then="close"),
        Urllib3ProtocolError("Connection broken: IncompleteRead"),
        "ProtocolError",
        id="closed-mid-body",
    ),
    pytest.param(
        Reply(b"HTTP/1.1 502 Bad Gateway\r\nContent-Le", then="close"),
        ConnectionClosedError,
        "ProtocolError",
        id="closed-mid-head",
    ),
    pytest.param(
        Reply(b"SSH-2.0-OpenSSH\r\n\r\n"), ConnectionClosedError, "ProtocolError", id="garbage"
    ),
]


@pytest.mark.parametrize(("reply", "botocore_error", "named"), NO_ANSWER)
async def test_no_answer_is_unreachable_as_boto3_maps_it(
    reply: Reply, botocore_error: Any, named: str
) -> None:
    ours = await signed_outcome(reply, timeout=0.6)
    assert isinstance(ours, DeliveryUnreachable) and ours.retryable
    assert named in ours.message
    if isinstance(botocore_error, Exception):  # an error raised while botocore reads the body
        theirs = boto_outcome(
            canned(200, {"content-length": "100"}, b"{", body_fails_with=botocore_error)
        )
    else:
        theirs = boto_outcome(failing(botocore_error(endpoint_url=ENDPOINT)))
    same_outcome(ours, theirs)


async def test_a_refused_connection_is_unreachable() -> None:
    server = Loopback()
    async with server.serving() as url:
        pass  # the port is free again once the server has closed
    poster = poster_for(url)
    with pytest.raises(DeliveryUnreachable, match="ConnectionRefusedError") as refused:
        await poster.post(CID, b"x")
    await poster.aclose()
    same_outcome(refused.value, boto_outcome(failing(EndpointConnectionError(endpoint_url=url))))


async def test_a_connection_that_never_finishes_tls_times_out() -> None:
    """Plain TCP accepted but no TLS handshake: the connect timeout covers TLS too."""
    server = Loopback(default=Reply(hold=5))
    async with server.serving() as url:
        poster = poster_for(url.replace("http://", "https://"), timeout=0.6)
        started = asyncio.get_running_loop().time()
        with pytest.raises(DeliveryUnreachable, match="ConnectTimeout") as timed_out:
            await poster.post(CID, b"x")
        assert asyncio.get_running_loop().time() - started < 0.5
        await poster.aclose()
    theirs = boto_outcome(failing(ConnectTimeoutError(endpoint_url=url)))
    same_outcome(timed_out.value, theirs)


@pytest.mark.parametrize(
    "reply",
    [Reply(then="silent"), Reply(b"", then="reset"), Reply(hold=5)],
    ids=["closed", "reset", "timeout"],
)
async def test_a_post_without_answer_is_sent_once(reply: Reply) -> None:
    """It may have been delivered: sending it again would post the message twice."""
    server = Loopback([reply])
    async with server.serving() as url:
        poster = poster_for(url, timeout=0.6)
        with pytest.raises(DeliveryUnreachable):
            await poster.post(CID, b"once")
        await poster.aclose()
    assert [r.body for r in server.requests] == [b"once"]


async def test_a_large_error_page_is_not_read_whole() -> None:
    page = b"<html>" + b"x" * 5_000_000 + b"</html>"
    server = Loopback([Reply(answer(502, {"Content-Type": "text/html"}, page))])
    async with server.serving() as url:
        poster = poster_for(url)
        with pytest.raises(DeliveryServerError) as failed:
            await poster.post(CID, b"x")
        assert failed.value.status == 502
        assert poster.connections == 0  # the rest of the page is never read: dropped
        await poster.post(CID, b"y")
        await poster.aclose()
    assert server.connections == 2


# --- the request ------------------------------------------------------------------------------

ENDPOINTS = [
    ENDPOINT,
    "https://q1w2e3r4t5.execute-api.ap-southeast-2.amazonaws.com/v1/",
    "https://ws.example.com",
    "http://127.0.0.1:8081/dev",
    "http://[::1]:8081/dev",
]
CONNECTION_IDS = ["Ld4Zq3xwoAMCJkQ=", "a+b/c=d==", "x-y_z.~", "id with spaces:@!", "ünï-çødé"]


def parse_request(wire: bytes) -> tuple[str, str, dict[str, str], bytes]:
    """(method, target, headers by lower-case name, body) of one request as sent."""
    head, _, body = wire.partition(b"\r\n\r\n")
    request_line, *lines = head.decode("ascii").split("\r\n")
    method, target, version = request_line.split(" ")
    assert version == "HTTP/1.1"
    headers = {n.lower(): v.strip() for n, _, v in (line.partition(":") for line in lines)}
    assert len(headers) == len(lines)  # no header sent twice
    return method, target, headers, body


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("connection_id", CONNECTION_IDS)
@pytest.mark.parametrize("credentials", [KEY, TEMPORARY], ids=["key", "session-token"])
def test_request_is_the_one_botocore_sends(
    endpoint: str, connection_id: str, credentials: Credentials
) -> None:
    data = '{"content":"héllo 👋"}'.encode()
    poster = SignedPoster(endpoint, REGION, credentials=lambda: credentials)
    method, target, headers, body = parse_request(
        poster.request(connection_id, data, NOW.timestamp())
    )
    reference = sent_by_botocore(endpoint, REGION, credentials, connection_id, data, NOW)
    assert (method, body) == (reference.method, reference.body)
    scheme_and_host = reference.url[: reference.url.index("/", len("https://"))]
    assert scheme_and_host + target == reference.url
    signed = botocore_signature("POST", reference.url, data, credentials, REGION, NOW)
    assert headers == {**signed, "content-length": header(reference, "Content-Length")}
    for name in ("Authorization", "X-Amz-Date", "X-Amz-Security-Token"):
        assert headers.get(name.lower()) == header(reference, name)
    assert header(reference, "Content-Type") is None  # botocore sends none: nor do we


async def test_the_wire_carries_the_request_byte_for_byte() -> None:
    data = bytes(range(256))
    server = Loopback()
    async with server.serving() as url:
        poster = poster_for(url, TEMPORARY)
        await poster.post("a+b/c=", data)
        await poster.aclose()
    (sent,) = server.requests
    wire = sent.head + sent.body
    signed_at = datetime.strptime(dict(sent.headers)["x-amz-date"], "%Y%m%dT%H%M%SZ")
    assert wire == poster.request("a+b/c=", data, signed_at.replace(tzinfo=UTC).timestamp())
    assert sent.request_line == b"POST /dev/@connections/a%2Bb%2Fc%3D HTTP/1.1"


async def test_renewed_credentials_sign_the_next_post() -> None:
    """A refreshed (rotated) key is used from the next post on, its token with it."""
    keys = iter([KEY, TEMPORARY, KEY])
    server = Loopback()
    async with server.serving() as url:
        poster = SignedPoster(url, REGION, credentials=lambda: next(keys))
        for n in range(3):
            await poster.post(CID, str(n).encode())
        await poster.aclose()
    sent = [dict(r.headers) for r in server.requests]
    used = [h["authorization"].split("Credential=")[1].split("/")[0] for h in sent]
    assert used == [KEY.access_key, TEMPORARY.access_key, KEY.access_key]
    assert [h.get("x-amz-security-token") for h in sent] == [None, TEMPORARY.token, None]


@pytest.mark.parametrize(
    "credentials",
    [
        Credentials("AKID\r\nx-injected: 1", "secret"),
        Credentials("AKID", "secret", "token\nx-injected: 1"),
        Credentials("AKID", "secret", "tökén"),
    ],
    ids=["key-with-crlf", "token-with-lf", "non-ascii-token"],
)
async def test_credentials_that_cannot_be_a_header_are_refused_unsent(
    credentials: Credentials,
) -> None:
    server = Loopback()
    async with server.serving() as url:
        poster = poster_for(url, credentials)
        with pytest.raises(DeliveryError, match="cannot be sent"):
            await poster.post(CID, b"x")
        await poster.aclose()
    assert server.requests == []


# --- construction -----------------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", ["ftp://example.com/dev", "example.com/dev", "https:///dev"])
def test_an_endpoint_must_be_http(endpoint: str) -> None:
    with pytest.raises(ValueError):
        SignedPoster(endpoint, REGION, credentials=lambda: KEY)


def test_importing_the_poster_loads_no_http_library_and_no_boto3_session() -> None:
    """Cold start: boto3 and botocore's session load only when credentials are first read."""
    check = (
        "import sys, streaming_proxy.channels.signed_poster\n"
        "loaded = {'boto3', 'botocore.session', 'botocore.credentials', 'httpx', 'h11'}\n"
        "loaded &= set(sys.modules)\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", check], check=True)
