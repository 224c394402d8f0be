"""ChaosProxy: relays faithfully and incrementally, injects each fault exactly as scheduled,
and counts what it did, checked with real clients (httpx, botocore) over loopback."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import boto3
import httpx
import pytest
import uvicorn
from botocore.config import Config
from botocore.exceptions import ConnectionClosedError
from moto.server import ThreadedMotoServer
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from devstack.process import free_port
from streaming_proxy.channels.poster import post_blocking
from streaming_proxy.errors import ConnectionGone, DeliveryThrottled, DeliveryUnreachable
from tests.chaos import (
    ChaosProxy,
    Traffic,
    close_after,
    cut_after,
    delay,
    dynamodb_error,
    gone,
    hang,
    reset,
    reset_before_request,
    server_error,
    status,
    throttle,
)

BODY = bytes(range(256)) * 4
# Multi-byte characters everywhere, so cuts land inside a UTF-8 sequence.
TEXT = "Grüße, 日本語 und 🎉 " * 8
AWS = {"region_name": "us-east-1", "aws_access_key_id": "test", "aws_secret_access_key": "test"}
TABLE = "chaos"


class Upstream:
    """The target: echo, fixed-length, chunked and gated SSE answers under uvicorn."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.stream_closed = threading.Event()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        routes = [
            Route("/echo", self.echo, methods=["GET", "POST"]),
            Route("/bytes/{n:int}", self.fixed),
            Route("/chunks", self.chunks),
            Route("/sse", self.sse),
            Route("/close", self.close),
            Route("/broken", self.broken),
        ]
        config = uvicorn.Config(Starlette(routes=routes), log_level="warning")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, daemon=True
        )

    async def echo(self, request: Request) -> Response:
        body = await request.body()
        return JSONResponse({"body": body.decode(), "headers": dict(request.headers)})

    async def fixed(self, request: Request) -> Response:
        return Response(BODY[: request.path_params["n"]])

    async def chunks(self, request: Request) -> Response:
        async def pieces() -> AsyncIterator[bytes]:
            data = TEXT.encode()
            for i in range(0, len(data), 7):
                yield data[i : i + 7]

        return StreamingResponse(pieces(), media_type="text/plain")

    async def sse(self, request: Request) -> Response:
        async def events() -> AsyncIterator[bytes]:
            try:
                yield b"data: first\n\n"
                for _ in range(500):  # the second event waits for the test, 5 s at most
                    if self.release.is_set():
                        break
                    await asyncio.sleep(0.01)
                yield b"data: second\n\n"
            finally:
                self.stream_closed.set()

        return StreamingResponse(events(), media_type="text/event-stream")

    async def close(self, request: Request) -> Response:
        return Response(b"bye", headers={"Connection": "close"})

    async def broken(self, request: Request) -> Response:
        async def pieces() -> AsyncIterator[bytes]:
            yield b"partial"
            raise RuntimeError("the target fell over mid-body (expected by the test)")

        return StreamingResponse(pieces())

    def start(self) -> None:
        self._thread.start()
        while not self._server.started:
            time.sleep(0.01)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=5)


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    server = Upstream()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def proxy(upstream: Upstream) -> Iterator[ChaosProxy]:
    upstream.release.clear()
    upstream.stream_closed.clear()
    with ChaosProxy(upstream.url) as running:
        yield running


@pytest.fixture
def client(proxy: ChaosProxy) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=proxy.base_url, timeout=3) as c:
        yield c


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def read_until_error(client: httpx.Client, path: str) -> tuple[bytes, Exception | None]:
    received = b""
    try:
        with client.stream("GET", path) as response:
            for piece in response.iter_raw():
                received += piece
    except httpx.TransportError as e:
        return received, e
    return received, None


# --- relaying ---------------------------------------------------------------------------------


def test_relays_bodies_both_ways_over_one_kept_alive_connection(
    proxy: ChaosProxy, client: httpx.Client
) -> None:
    assert client.post("/echo", content=b"fixed").json()["body"] == "fixed"
    chunked = client.post("/echo", content=iter([b"chun", b"ked"])).json()
    assert chunked["body"] == "chunked"
    assert chunked["headers"]["transfer-encoding"] == "chunked"
    assert client.get("/bytes/1000").content == BODY[:1000]
    assert client.get("/chunks").text == TEXT

    assert proxy.connections == 1
    assert proxy.traffic() == {
        "POST /echo": Traffic(seen=2, forwarded=2),
        "GET /bytes/1000": Traffic(seen=1, forwarded=1),
        "GET /chunks": Traffic(seen=1, forwarded=1),
    }
    assert [e.status for e in proxy.exchanges(method="POST")] == [200, 200]


def test_connection_close_from_the_target_reaches_the_client(
    proxy: ChaosProxy, client: httpx.Client
) -> None:
    response = client.get("/close")
    assert (response.content, response.headers["connection"]) == (b"bye", "close")
    assert client.get("/bytes/3").content == BODY[:3]
    assert proxy.connections == 2


def test_sse_events_pass_one_by_one(upstream: Upstream, client: httpx.Client) -> None:
    with client.stream("GET", "/sse") as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = response.iter_lines()
        # The target holds its second event until released: reading the first proves that
        # nothing is buffered on the way.
        assert next(lines) == "data: first"
        upstream.release.set()
        assert [line for line in lines if line] == ["data: second"]


def test_a_client_leaving_mid_stream_closes_the_target_stream(
    upstream: Upstream, client: httpx.Client
) -> None:
    with client.stream("GET", "/sse") as response:
        assert next(response.iter_lines()) == "data: first"
    assert upstream.stream_closed.wait(5)
    assert not upstream.release.is_set()


def test_a_target_dying_mid_body_is_not_passed_on_as_a_clean_end(client: httpx.Client) -> None:
    received, error = read_until_error(client, "/broken")
    assert received == b"partial"
    assert isinstance(error, httpx.RemoteProtocolError)


def test_an_unreachable_target_is_a_502() -> None:
    with ChaosProxy(f"http://127.0.0.1:{free_port()}/v1") as proxy:
        assert proxy.base_url.endswith("/v1")
        response = httpx.post(f"{proxy.base_url}/chat/completions", json={})
        assert response.status_code == 502
        assert proxy.traffic() == {"POST /v1/chat/completions": Traffic(seen=1, forwarded=0)}


# --- answers and schedules ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("action", "code", "error_type"),
    [
        (gone(), 410, "GoneException"),
        (throttle(), 429, "LimitExceededException"),
        (server_error(503), 503, None),
        (status(418, b"teapot", {"X-Why": "chaos"}), 418, None),
    ],
)
def test_answers_are_sent_without_forwarding(
    proxy: ChaosProxy, client: httpx.Client, action: Any, code: int, error_type: str | None
) -> None:
    rule = proxy.add_rule(action, path="^/echo$")
    response = client.post("/echo", content=b"x")
    assert response.status_code == code
    assert response.headers.get("x-amzn-errortype") == error_type
    assert client.get("/bytes/2").status_code == 200
    assert (rule.fired, proxy.seen(), proxy.forwarded()) == (1, 2, 1)


@pytest.mark.parametrize(
    ("schedule", "pattern"),
    [
        ({"times": 2}, "XX...."),
        ({"every": 3}, "..X..X"),
        ({"after": 2, "times": 1}, "..X..."),
        ({"after": 1, "every": 2, "times": 2}, "..X.X."),
    ],
)
def test_schedules_pick_the_right_requests(
    proxy: ChaosProxy, client: httpx.Client, schedule: dict[str, int], pattern: str
) -> None:
    rule = proxy.add_rule(status(503), **schedule)
    got = "".join("X" if client.get("/bytes/1").status_code == 503 else "." for _ in pattern)
    assert got == pattern
    assert (rule.matched, rule.fired) == (len(pattern), pattern.count("X"))


def test_probability_is_reproducible_from_the_seed(upstream: Upstream) -> None:
    def run(seed: int) -> str:
        with ChaosProxy(upstream.url, seed=seed) as proxy, httpx.Client() as c:
            rule = proxy.add_rule(status(503), probability=0.5)
            url = f"{proxy.base_url}/bytes/1"
            got = "".join("X" if c.get(url).status_code == 503 else "." for _ in range(40))
            assert rule.fired == got.count("X")
            return got

    first = run(7)
    assert 5 < first.count("X") < 35
    assert run(7) == first
    assert run(8) != first


def test_rules_match_on_method_path_and_headers_and_the_first_to_fire_wins(
    proxy: ChaosProxy, client: httpx.Client
) -> None:
    queries = proxy.add_rule(status(500), operation="Query")
    posts = proxy.add_rule(status(501), method="post", headers={"X-Tenant": "a"})
    later = proxy.add_rule(status(502), path="/echo")

    def code(target: str | None = None, tenant: str = "b", method: str = "POST") -> int:
        headers = {"X-Tenant": tenant}
        if target:
            headers["X-Amz-Target"] = target
        return client.request(method, "/echo", headers=headers).status_code

    assert code("DynamoDB_20120810.Query") == 500
    assert code("DynamoDB_20120810.QueryAll") == 502
    assert code(tenant="a") == 501
    assert code(tenant="a", method="GET") == 502
    assert (queries.fired, posts.fired, later.fired) == (1, 1, 2)
    proxy.remove_rule(later)
    assert code() == 200
    proxy.clear_rules()
    assert code("DynamoDB_20120810.Query", tenant="a") == 200
    assert proxy.traffic()["Query"] == Traffic(seen=2, forwarded=1)


# --- connection faults ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "full"), [("/bytes/1000", BODY[:1000]), ("/chunks", TEXT.encode())]
)
@pytest.mark.parametrize("n", [0, 10, 101])
def test_cut_after_delivers_exactly_n_bytes_then_resets(
    proxy: ChaosProxy, client: httpx.Client, path: str, full: bytes, n: int
) -> None:
    rule = proxy.add_rule(cut_after(n), times=1)
    received, error = read_until_error(client, path)
    assert received == full[:n]
    assert isinstance(error, httpx.ReadError)  # ECONNRESET: the RST arrived
    assert client.get(path).content == full
    assert rule.fired == 1


@pytest.mark.parametrize(
    ("path", "delivered"), [("/bytes/1000", BODY[:999]), ("/chunks", TEXT.encode())]
)
def test_a_cut_beyond_the_body_still_breaks_the_response(
    proxy: ChaosProxy, client: httpx.Client, path: str, delivered: bytes
) -> None:
    proxy.add_rule(cut_after(5000), times=1)
    received, error = read_until_error(client, path)
    assert received == delivered
    assert isinstance(error, httpx.ReadError)
    assert client.get("/bytes/1").status_code == 200


def test_cut_after_can_split_a_utf8_character(proxy: ChaosProxy, client: httpx.Client) -> None:
    proxy.add_rule(cut_after(TEXT.encode().index("日".encode()) + 1))
    received, error = read_until_error(client, "/chunks")
    assert received.endswith("日".encode()[:1])
    assert isinstance(error, httpx.ReadError)


def test_cut_after_can_split_an_sse_frame(
    upstream: Upstream, proxy: ChaosProxy, client: httpx.Client
) -> None:
    upstream.release.set()
    proxy.add_rule(cut_after(len(b"data: first\n\ndata: sec")), path="/sse")
    received, error = read_until_error(client, "/sse")
    assert received == b"data: first\n\ndata: sec"
    assert isinstance(error, httpx.ReadError)


def test_close_after_ends_with_a_clean_fin(proxy: ChaosProxy, client: httpx.Client) -> None:
    proxy.add_rule(close_after(100), path="/bytes")
    received, error = read_until_error(client, "/bytes/1000")
    assert received == BODY[:100]
    # A FIN, not a reset: h11 reports the body as ended early.
    assert isinstance(error, httpx.RemoteProtocolError)


def test_reset_after_the_request_and_before_it(proxy: ChaosProxy, client: httpx.Client) -> None:
    proxy.add_rule(reset(), path="/echo", times=1)
    with pytest.raises(httpx.ReadError):
        client.post("/echo", content=b"lost")
    assert [e.fault for e in proxy.exchanges(path="/echo")] == ["reset"]

    on_accept = proxy.add_rule(reset_before_request(), times=1)
    with httpx.Client(base_url=proxy.base_url) as fresh:
        with pytest.raises(httpx.TransportError):
            fresh.get("/bytes/1")
        assert fresh.get("/bytes/1").status_code == 200
    assert on_accept.fired == 1
    assert proxy.seen("GET /bytes/1") == 1
    with pytest.raises(ValueError, match="cannot match"):
        proxy.add_rule(reset_before_request(), path="/echo")


def test_hang_lasts_until_the_client_gives_up(proxy: ChaosProxy, client: httpx.Client) -> None:
    proxy.add_rule(hang(), times=1)
    with pytest.raises(httpx.ReadTimeout):
        client.get("/bytes/1", timeout=0.3)
    # The proxy lets go of the connection the client dropped, and serves the next one.
    assert wait_until(lambda: proxy.open_connections == 0)
    assert client.get("/bytes/1").status_code == 200
    assert [e.status for e in proxy.exchanges()] == [None, 200]


def test_stop_is_fast_even_with_hung_requests(upstream: Upstream) -> None:
    with ChaosProxy(upstream.url) as proxy, ThreadPoolExecutor(4) as pool:
        proxy.add_rule(hang())
        calls = [pool.submit(httpx.get, f"{proxy.base_url}/bytes/1", timeout=10) for _ in range(4)]
        assert wait_until(lambda: proxy.seen() == 4)
        started = time.monotonic()
        proxy.stop()
        assert time.monotonic() - started < 1
        for call in calls:
            assert isinstance(call.exception(timeout=5), httpx.TransportError)


async def test_async_clients_and_delay(proxy: ChaosProxy) -> None:
    rule = proxy.add_rule(delay(0.4), path="/bytes")
    async with httpx.AsyncClient(base_url=proxy.base_url) as c:
        started = time.monotonic()
        responses = await asyncio.gather(*(c.get("/bytes/5") for _ in range(5)))
        elapsed = time.monotonic() - started
    assert [r.content for r in responses] == [BODY[:5]] * 5
    assert 0.4 <= elapsed < 1.6  # each delayed, side by side (one after another: 2 s)
    assert (rule.fired, proxy.forwarded()) == (5, 5)


def test_a_delayed_request_is_dropped_when_the_client_gives_up(
    proxy: ChaosProxy, client: httpx.Client
) -> None:
    proxy.add_rule(delay(5), times=1)
    with pytest.raises(httpx.ReadTimeout):
        client.post("/echo", content=b"late", timeout=0.3)
    assert wait_until(lambda: proxy.open_connections == 0)
    assert (proxy.seen(), proxy.forwarded()) == (1, 0)


def test_a_restart_on_the_same_port_is_an_outage(upstream: Upstream) -> None:
    proxy = ChaosProxy(upstream.url).start()
    url = f"{proxy.base_url}/bytes/1"
    proxy.stop()
    with pytest.raises(httpx.ConnectError):
        httpx.get(url)
    with proxy:
        assert httpx.get(url).status_code == 200


def test_expect_100_continue_is_answered_by_the_proxy(proxy: ChaosProxy) -> None:
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=3) as sock:
        sock.sendall(
            b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
            b"Expect: 100-continue\r\nConnection: close\r\n\r\n"
        )
        assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"ping")
        answer = b"".join(iter(lambda: sock.recv(4096), b""))
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b'"body":"ping"' in answer


async def test_on_the_callers_loop(upstream: Upstream) -> None:
    async with ChaosProxy(upstream.url) as proxy, httpx.AsyncClient() as c:
        proxy.add_rule(gone(), times=1)
        assert (await c.get(f"{proxy.base_url}/bytes/1")).status_code == 410
        assert (await c.get(f"{proxy.base_url}/bytes/1")).status_code == 200


# --- botocore -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    boto3.client("dynamodb", endpoint_url=url, **AWS).create_table(
        TableName=TABLE,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    yield url
    server.stop()


@pytest.fixture
def dynamodb(moto_url: str) -> Iterator[tuple[ChaosProxy, Callable[[int], Any]]]:
    with ChaosProxy(moto_url) as proxy:

        def client(attempts: int) -> Any:
            config = Config(retries={"total_max_attempts": attempts, "mode": "standard"})
            return boto3.client("dynamodb", endpoint_url=proxy.base_url, config=config, **AWS)

        yield proxy, client


def query(db: Any) -> Any:
    return db.query(
        TableName=TABLE,
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": "a"}},
    )


def test_dynamodb_errors_are_botocores_exceptions(dynamodb: Any) -> None:
    proxy, client = dynamodb
    db = client(1)
    proxy.add_rule(dynamodb_error(), operation="Query", times=1)
    proxy.add_rule(dynamodb_error("InternalServerError", 500), operation="GetItem", times=1)
    with pytest.raises(db.exceptions.ProvisionedThroughputExceededException):
        query(db)
    with pytest.raises(db.exceptions.InternalServerError):
        db.get_item(TableName=TABLE, Key={"pk": {"S": "a"}})
    db.put_item(TableName=TABLE, Item={"pk": {"S": "a"}})
    assert query(db)["Count"] == 1
    assert proxy.traffic() == {
        "Query": Traffic(seen=2, forwarded=1),
        "GetItem": Traffic(seen=1, forwarded=0),
        "PutItem": Traffic(seen=1, forwarded=1),
    }


def test_botocore_retries_match_the_injected_faults(dynamodb: Any) -> None:
    proxy, client = dynamodb
    rule = proxy.add_rule(dynamodb_error(), operation="GetItem", times=2)
    client(3).get_item(TableName=TABLE, Key={"pk": {"S": "a"}})
    assert rule.fired == 2
    assert proxy.traffic()["GetItem"] == Traffic(seen=3, forwarded=1)


def test_reset_is_a_botocore_connection_error(dynamodb: Any) -> None:
    proxy, client = dynamodb
    db = client(1)
    proxy.add_rule(reset(), operation="Query", times=1)
    with pytest.raises(ConnectionClosedError):
        query(db)
    assert query(db)["ResponseMetadata"]["HTTPStatusCode"] == 200


def test_management_api_faults_map_to_the_delivery_errors(proxy: ChaosProxy) -> None:
    api = boto3.client(
        "apigatewaymanagementapi",
        endpoint_url=f"{proxy.base_url}/dev",
        config=Config(retries={"total_max_attempts": 1, "mode": "standard"}),
        **AWS,
    )
    proxy.add_rule(gone(), path="/@connections/", times=2)
    proxy.add_rule(throttle(), path="/@connections/", times=1)
    proxy.add_rule(reset(), path="/@connections/", times=1)
    with pytest.raises(api.exceptions.GoneException):
        api.post_to_connection(ConnectionId="c1", Data=b"{}")
    with pytest.raises(ConnectionGone):
        post_blocking(api, "c2", b"{}")
    with pytest.raises(DeliveryThrottled):
        post_blocking(api, "c3", b"{}")
    with pytest.raises(DeliveryUnreachable):
        post_blocking(api, "c4", b"{}")
    assert proxy.traffic() == {"POST /dev/@connections/{id}": Traffic(seen=4, forwarded=0)}
