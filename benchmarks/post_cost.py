"""The client-side cost of one PostToConnection: the product's lean SignedPoster against boto3.

Each poster posts from a fresh process of its own, so the CPU counted is the whole
posting side (event loop, worker threads, signing, HTTP) and nothing else: the stack
(gateway emulator) is another process and the subscriber stays in this one. The emulator
speaks plain HTTP; one more row posts over TLS, as in AWS, to a loopback server of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import json
import multiprocessing
import ssl
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import boto3
import uvloop
from botocore.config import Config
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from streaming_proxy.channels.http1 import ResponseParser
from streaming_proxy.channels.poster import BotoPoster, post_blocking
from streaming_proxy.channels.signed_poster import SignedPoster
from streaming_proxy.channels.sigv4 import Credentials

from .common import Result, close_all, ms, open_subscribers, summary
from .stack import Stack

if TYPE_CHECKING:
    from mypy_boto3_apigatewaymanagementapi import ApiGatewayManagementApiClient

POSTS = 1000
WARMUP = 50
REGION = "us-east-1"
# A session token, as Lambda's role credentials carry one: it is signed and sent with each post.
CREDENTIALS = Credentials("local", "local", "local-session-token-" + "x" * 600)
# A typical coalesced delta envelope (a few tokens).
MESSAGE = json.dumps(
    {
        "actionName": "onBench",
        "channel": "bench-post",
        "streamId": "st_0123456789abcdefghijkl",
        "seq": 7,
        "type": "delta",
        "content": "lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod",
    },
    separators=(",", ":"),
).encode()

# What API Gateway answers a delivered post with.
ANSWER = (
    b"HTTP/1.1 200 OK\r\nDate: Sat, 21 Nov 2026 18:00:00 GMT\r\n"
    b"Content-Type: application/json\r\nContent-Length: 0\r\nConnection: keep-alive\r\n"
    b"x-amzn-RequestId: 0f3c2a51-6c1e-4b5e-9f0e-2f6b7f3b1c9a\r\n"
    b"x-amz-apigw-id: Ab1Cd2Ef3Gh4Ij5=\r\n\r\n"
)

# (key, label, posts reach the subscriber)
POSTERS = [
    ("signed", "`SignedPoster` (sigv4, keep-alive HTTP/1.1 on uvloop): the product", True),
    ("signed_no_io", "`SignedPoster`'s own work, no I/O: signing, request bytes, parsing", False),
    ("signed_loopback", "`SignedPoster`, plain HTTP to a loopback server answering 200", False),
    ("signed_tls", "`SignedPoster`, HTTPS to the same loopback server (as in AWS)", False),
    ("boto3", "boto3 `BotoPoster` (async, own thread pool): `POSTER=boto3`", True),
    ("boto3_blocking", "boto3 `post_blocking`, called in one thread", True),
]
PRODUCT = "signed"

Post = Callable[[str, bytes], Awaitable[None]]


def _boto3_client(endpoint: str) -> ApiGatewayManagementApiClient:
    return boto3.client(
        "apigatewaymanagementapi",
        region_name=REGION,
        endpoint_url=endpoint,
        aws_access_key_id=CREDENTIALS.access_key,
        aws_secret_access_key=CREDENTIALS.secret_key,
        aws_session_token=CREDENTIALS.token,
        config=Config(retries={"max_attempts": 1, "mode": "standard"}),
    )


def _poster(kind: str, endpoint: str, ca: str) -> tuple[Post, Callable[[], Awaitable[None]]]:
    """(post, close) for one kind of poster; `ca` is the TLS server's certificate."""
    if kind == "boto3_blocking":
        client = _boto3_client(endpoint)

        async def post(connection_id: str, data: bytes) -> None:
            post_blocking(client, connection_id, data)

        async def close() -> None:
            return None

        return post, close
    if kind == "boto3":
        poster = BotoPoster(_boto3_client(endpoint))
        return poster.post, poster.aclose
    tls = ssl.create_default_context(cafile=ca) if kind == "signed_tls" else None
    signed = SignedPoster(endpoint, REGION, credentials=lambda: CREDENTIALS, tls=tls)
    if kind == "signed_no_io":
        parser = ResponseParser()

        async def no_io(connection_id: str, data: bytes) -> None:
            signed.request(connection_id, data, time.time())
            if parser.feed(ANSWER) is None:
                raise AssertionError("the canned answer did not parse")

        return no_io, signed.aclose
    return signed.post, signed.aclose


async def _post_loop(
    kind: str, endpoint: str, ca: str, connection_id: str
) -> tuple[list[float], float]:
    post, close = _poster(kind, endpoint, ca)
    try:
        for _ in range(WARMUP):
            await post(connection_id, MESSAGE)
        walls = []
        cpu_started = time.process_time()
        for _ in range(POSTS):
            started = time.perf_counter()
            await post(connection_id, MESSAGE)
            walls.append(time.perf_counter() - started)
        return walls, (time.process_time() - cpu_started) / POSTS
    finally:
        await close()


def _measure_in_child(
    kind: str, endpoint: str, ca: str, connection_id: str
) -> tuple[list[float], float]:
    """Runs in a fresh process: (wall time of each post, that process's CPU per post), on
    uvloop, the stream function's event loop (run.sh)."""
    return uvloop.run(_post_loop(kind, endpoint, ca, connection_id))


async def _in_fresh_process(
    kind: str, endpoint: str, ca: str, connection_id: str
) -> tuple[list[float], float]:
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as pool:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            pool, _measure_in_child, kind, endpoint, ca, connection_id
        )


# -- a TLS server answering every post as API Gateway does, in a process of its own ----------


def _certificate(directory: Path) -> tuple[Path, Path]:
    """A throwaway self-signed certificate for 127.0.0.1: (certificate, key) files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "post_cost benchmark")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert, key_file = directory / "cert.pem", directory / "key.pem"
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert, key_file


async def _answer_posts(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = head.lower().split(b"content-length:")[1].split(b"\r\n")[0]
            await reader.readexactly(int(length))
            writer.write(ANSWER)
    except (asyncio.IncompleteReadError, ConnectionError):
        writer.close()


def _serve(cert: str, key: str, ports: multiprocessing.SimpleQueue[int]) -> None:
    """One plain and one TLS listener, both answering every post with `ANSWER`."""

    async def serve() -> None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        servers = [
            await asyncio.start_server(_answer_posts, "127.0.0.1", 0, ssl=tls)
            for tls in (None, context)
        ]
        for server in servers:
            ports.put(server.sockets[0].getsockname()[1])
        await asyncio.gather(*(server.serve_forever() for server in servers))

    asyncio.run(serve())


@contextlib.contextmanager
def _loopback_server() -> Iterator[tuple[str, str, str]]:
    """(plain endpoint, TLS endpoint, certificate file) of a server running in the block."""
    spawn = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory() as directory:
        cert, key = _certificate(Path(directory))
        ports: multiprocessing.SimpleQueue[int] = spawn.SimpleQueue()
        server = spawn.Process(target=_serve, args=(str(cert), str(key), ports), daemon=True)
        server.start()
        try:
            plain, tls = ports.get(), ports.get()
            yield f"http://127.0.0.1:{plain}/dev", f"https://127.0.0.1:{tls}/dev", str(cert)
        finally:
            server.terminate()
            server.join(5)


async def _measure(stack: Stack) -> tuple[dict[str, tuple[list[float], float]], int]:
    (sub,) = await open_subscribers(stack, "bench-post", 1)
    try:
        await sub.ws.send(json.dumps({"action": "ping", "id": "whoami"}))
        _, pong = await sub.wait_for(lambda m: m.get("id") == "whoami", 10)
        measured = {}
        with _loopback_server() as (plain, tls, ca):
            endpoints = {"signed_loopback": plain, "signed_tls": tls}
            for kind, _, _ in POSTERS:
                endpoint = endpoints.get(kind, stack.http_ws_management)
                measured[kind] = await _in_fresh_process(kind, endpoint, ca, pong["connectionId"])
        expected = (POSTS + WARMUP) * sum(delivers for _, _, delivers in POSTERS)
        await sub.wait_for(lambda m: len(sub.messages) >= expected + 1, 10)
        received = len(sub.messages) - 1
    finally:
        await close_all([sub])
    return measured, received


def run(stack: Stack) -> Result:
    measured, received = asyncio.run(asyncio.wait_for(_measure(stack), 180))
    expected = (POSTS + WARMUP) * sum(delivers for _, _, delivers in POSTERS)
    if received != expected:
        raise AssertionError(f"subscriber got {received} of {expected} posts")
    rows = []
    data: dict[str, object] = {}
    for kind, label, _ in POSTERS:
        walls, cpu = measured[kind]
        stats = summary(walls)
        rows.append(
            [
                label,
                f"{cpu * 1000:.3f}",
                f"{ms(stats['median'])} / {ms(stats['p95'])}",
                f"{1 / cpu:,.0f}",
            ]
        )
        data[kind] = {"wall": stats, "cpu": cpu}
    # `cpu` stays the product's poster: the reading's fan-out ceiling is computed from it.
    data["cpu"] = measured[PRODUCT][1]
    return Result(
        key="post_cost",
        title="Cost of one PostToConnection (client side): SignedPoster and boto3",
        method=(
            f"Each poster posts a {len(MESSAGE)}-byte delta envelope to one live connection "
            f"of the gateway emulator: {POSTS} sequential posts after {WARMUP} warm-up posts, "
            "awaited one at a time through the async `Poster` interface, from a fresh process "
            "of its own (spawned, one per poster), on uvloop as in the stream function. Client "
            "CPU is that process's user+system "
            "time over the measured posts (`time.process_time`), divided by the posts: it "
            "counts the event loop, boto3's worker threads, signing and HTTP, and none of the "
            "emulator (a separate process) or of the subscriber (this process). Every post "
            "that reaches the emulator is checked as received. Credentials carry a session "
            "token, as a Lambda role's do. The no-I/O row builds each signed request and "
            "parses a canned 200 answer in-process: the poster's own work, without the event "
            "loop and the socket calls that the first row adds. The two loopback rows post the "
            "same way to a small server of their own (another process) that answers 200 as "
            "API Gateway does, once over plain HTTP and once over HTTPS with the certificate "
            "verified: their difference is what TLS adds in AWS. The emulator does more work "
            "per post than that server, which costs the client too (caches), so compare the "
            "loopback rows with each other."
        ),
        columns=["poster", "client CPU ms per post", "wall ms: median / p95", "posts/s per vCPU"],
        rows=rows,
        data=data,
    )
