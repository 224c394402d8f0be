"""sigv4: identical to botocore's SigV4Auth for execute-api, AWS's own vectors, a cached key."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from itertools import product

import httpx
import pytest

from streaming_proxy.channels.signed_poster import connection_path
from streaming_proxy.channels.sigv4 import (
    Credentials,
    Signer,
    amz_date,
    canonical_uri,
    sign,
    signing_key,
)
from tests.unit.aws_reference import botocore_signature

KEY = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
TEMPORARY = Credentials(
    "ASIAIOSFODNN7EXAMPLE",
    "je7MtGbClwBF/2Zp9Utk/h3yCo8nvbEXAMPLEKEY",
    "IQoJb3JpZ2luX2VjEJr//////////wEaCXVzLWVhc3QtMSJHMEUCIQ+token/with=odd+chars",
)
NOW = datetime(2026, 3, 14, 15, 9, 26, tzinfo=UTC)

ENDPOINTS = [
    ("https://a1b2c3d4e5.execute-api.us-east-1.amazonaws.com/dev", "us-east-1"),
    ("https://zz9yy8xx7w.execute-api.eu-west-1.amazonaws.com/production", "eu-west-1"),
    ("https://q1w2e3r4t5.execute-api.ap-southeast-2.amazonaws.com/v1/", "ap-southeast-2"),
    ("https://ws.example.com", "us-west-2"),
    ("http://127.0.0.1:8081/dev", "us-east-1"),
]
CONNECTION_IDS = [
    "Ld4Zq3xwoAMCJkQ=",
    "a+b/c=d==",
    "x-y_z.~",
    "id with spaces:@!",
    "naïve-ünïcode-✓",
]
BODIES = [
    b"",
    b'{"type":"delta","content":"hi"}',
    "héllo wörld — 你好 👋".encode(),
    bytes(range(256)),
]


def url_of(endpoint: str, connection_id: str) -> str:
    return endpoint.removesuffix("/") + "/@connections/" + connection_path(connection_id)


def host_and_path(url: str) -> tuple[str, str, str]:
    parsed = httpx.URL(url)
    host = parsed.host if parsed.port is None else f"{parsed.host}:{parsed.port}"
    return host, parsed.raw_path.decode("ascii").partition("?")[0], parsed.query.decode("ascii")


# --- identical to botocore --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("endpoint", "region", "connection_id", "credentials"),
    [
        (endpoint, region, cid, creds)
        for (endpoint, region), cid, creds in product(ENDPOINTS, CONNECTION_IDS, [KEY, TEMPORARY])
    ],
)
def test_signature_matches_botocore_across_endpoints_and_ids(
    endpoint: str, region: str, connection_id: str, credentials: Credentials
) -> None:
    url = url_of(endpoint, connection_id)
    host, path, _ = host_and_path(url)
    body = b'{"seq":7,"content":"lorem"}'
    ours = sign("POST", host, path, body, credentials=credentials, region=region, now=NOW)
    assert ours == botocore_signature("POST", url, body, credentials, region, NOW)


@pytest.mark.parametrize("body", BODIES, ids=["empty", "json", "utf8", "binary"])
@pytest.mark.parametrize(
    "now",
    [
        NOW,
        datetime(2025, 12, 31, 23, 59, 59, tzinfo=UTC),
        datetime(2028, 2, 29, 0, 0, 0, tzinfo=UTC),
        # Any timezone: what is signed is the same instant in UTC.
        datetime(2026, 1, 1, 1, 30, tzinfo=timezone(timedelta(hours=5, minutes=30))),
    ],
)
def test_signature_matches_botocore_across_bodies_and_dates(body: bytes, now: datetime) -> None:
    url = url_of("https://a1b2c3d4e5.execute-api.us-east-1.amazonaws.com/dev", "Ld4Zq3xwoAMCJkQ=")
    host, path, _ = host_and_path(url)
    for credentials in (KEY, TEMPORARY):
        ours = sign("POST", host, path, body, credentials=credentials, region="us-east-1", now=now)
        assert ours == botocore_signature("POST", url, body, credentials, "us-east-1", now)


@pytest.mark.parametrize(
    "url",
    [
        "https://example.com",
        "https://example.com/dev/./@connections/../@connections/abc%3D",
        "https://example.com//dev//@connections//abc%3D/",
        "https://example.com/dev/@connections/abc%3D?b=2&a=1&a=0&c",
        "https://example.com:8443/dev/@connections/%7Etilde%2Fslash",
    ],
)
def test_paths_and_queries_canonicalised_as_botocore_does(url: str) -> None:
    host, path, query = host_and_path(url)
    ours = sign("GET", host, path, b"", credentials=KEY, region="us-east-1", now=NOW, query=query)
    assert ours == botocore_signature("GET", url, b"", KEY, "us-east-1", NOW)


def test_header_values_are_trimmed_as_botocore_trims_them() -> None:
    spaced = Credentials(KEY.access_key, KEY.secret_key, "  token  with   inner spaces ")
    url = url_of("https://a1b2c3d4e5.execute-api.us-east-1.amazonaws.com/dev", "abc=")
    host, path, _ = host_and_path(url)
    ours = sign("POST", host, path, b"x", credentials=spaced, region="us-east-1", now=NOW)
    assert ours == botocore_signature("POST", url, b"x", spaced, "us-east-1", NOW)


def test_execute_api_canonical_uri_is_encoded_twice() -> None:
    assert canonical_uri("/dev/@connections/Ld4Zq3xwoAMCJkQ%3D") == (
        "/dev/%40connections/Ld4Zq3xwoAMCJkQ%253D"
    )


# --- fixed vectors ----------------------------------------------------------------------------


def test_aws_test_suite_vanilla_vectors() -> None:
    """get-vanilla and post-vanilla from AWS's published SigV4 test suite."""
    example = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
    at = datetime(2015, 8, 30, 12, 36, tzinfo=UTC)
    expected = {
        "GET": "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
        "POST": "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b",
    }
    for method, signature in expected.items():
        headers = sign(
            method,
            "example.amazonaws.com",
            "/",
            b"",
            credentials=example,
            region="us-east-1",
            now=at,
            service="service",
        )
        assert headers["authorization"] == (
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, "
            f"SignedHeaders=host;x-amz-date, Signature={signature}"
        )


def test_aws_documented_signing_key() -> None:
    """The derived key of AWS's "derive a signing key" example (iam, 20120215)."""
    key = signing_key("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "20120215", "us-east-1", "iam")
    assert key.hex() == "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d"


def test_pinned_post_to_connection_vector() -> None:
    """A PostToConnection with a session token, computed once with botocore and pinned."""
    headers = sign(
        "POST",
        "a1b2c3d4e5.execute-api.eu-central-1.amazonaws.com",
        "/prod/@connections/Ld4Zq3xwoAMCJkQ%3D",
        '{"type":"delta","content":"héllo"}'.encode(),
        credentials=TEMPORARY,
        region="eu-central-1",
        now=NOW,
    )
    assert headers == {
        "host": "a1b2c3d4e5.execute-api.eu-central-1.amazonaws.com",
        "x-amz-date": "20260314T150926Z",
        "x-amz-security-token": TEMPORARY.token,
        "authorization": (
            "AWS4-HMAC-SHA256 Credential=ASIAIOSFODNN7EXAMPLE/20260314/eu-central-1/"
            "execute-api/aws4_request, SignedHeaders=host;x-amz-date;x-amz-security-token, "
            "Signature=d2dbd1466d9073ded22262fb982de278ed7d929754ffdf585eb8b19e7b44f21d"
        ),
    }


# --- the signing key cache --------------------------------------------------------------------


def test_signing_key_is_derived_once_per_date_region_and_secret() -> None:
    signing_key.cache_clear()

    def post(credentials: Credentials, region: str, now: datetime) -> None:
        sign("POST", "h", "/x", b"x", credentials=credentials, region=region, now=now)

    post(KEY, "us-east-1", NOW)
    post(KEY, "us-east-1", NOW + timedelta(hours=3))  # same day
    assert (signing_key.cache_info().misses, signing_key.cache_info().hits) == (1, 1)
    post(KEY, "us-east-1", NOW + timedelta(days=1))
    post(KEY, "eu-west-1", NOW)
    post(Credentials(KEY.access_key, "another-secret"), "us-east-1", NOW)
    assert (signing_key.cache_info().misses, signing_key.cache_info().hits) == (4, 1)


def test_signing_keys_differ_by_every_part() -> None:
    base = ("secret", "20260314", "us-east-1", "execute-api")
    keys = {signing_key(*base)}
    for index, other in enumerate(["other", "20260315", "eu-west-1", "apigateway"]):
        changed = list(base)
        changed[index] = other
        keys.add(signing_key(*changed))
    assert len(keys) == 5


# --- time and secrets -------------------------------------------------------------------------


def test_amz_date_needs_a_timezone() -> None:
    assert amz_date(NOW) == "20260314T150926Z"
    with pytest.raises(ValueError):
        amz_date(datetime(2026, 3, 14, 15, 9, 26))  # naive: refused


def test_credentials_never_show_their_secrets() -> None:
    shown = f"{TEMPORARY!r} {TEMPORARY!s} {[TEMPORARY]}"
    assert TEMPORARY.secret_key not in shown and str(TEMPORARY.token) not in shown
    assert TEMPORARY.access_key not in shown


# --- the signer posts use: sign() with what does not change computed once ---------------------


@pytest.mark.parametrize(
    ("endpoint", "region", "connection_id", "credentials"),
    [
        (endpoint, region, cid, creds)
        for (endpoint, region), cid, creds in product(ENDPOINTS, CONNECTION_IDS, [KEY, TEMPORARY])
    ],
)
def test_signer_gives_what_sign_and_botocore_give(
    endpoint: str, region: str, connection_id: str, credentials: Credentials
) -> None:
    url = url_of(endpoint, connection_id)
    host, path, _ = host_and_path(url)
    signer = Signer(credentials, host, region)
    for body in BODIES:
        ours = signer.headers("POST", path, body, NOW.timestamp())
        assert ours == sign(
            "POST", host, path, body, credentials=credentials, region=region, now=NOW
        )
        assert ours == botocore_signature("POST", url, body, credentials, region, NOW)


@pytest.mark.parametrize(
    "url",
    [
        "https://example.com/dev/./@connections/../@connections/abc%3D",
        "https://example.com//dev//@connections//abc%3D/",
        "https://example.com:8443/dev/@connections/%7Etilde%2Fslash",
    ],
)
def test_signer_canonicalises_paths_as_botocore_does(url: str) -> None:
    host, path, _ = host_and_path(url)
    spaced = Credentials(KEY.access_key, KEY.secret_key, "  token  with   inner spaces ")
    ours = Signer(spaced, host, "us-east-1").headers("put", path, b"x", NOW.timestamp())
    assert ours == botocore_signature("PUT", url, b"x", spaced, "us-east-1", NOW)


def test_signer_time_moves_with_every_second_and_day() -> None:
    host, path, _ = host_and_path(url_of("https://h.example.com/dev", "abc="))
    signer = Signer(KEY, host, "us-east-1")
    midnight = datetime(2026, 3, 15, tzinfo=UTC).timestamp()
    for now in (midnight - 1.5, midnight - 1.0, midnight - 0.2, midnight, midnight + 0.9):
        at = datetime.fromtimestamp(int(now), UTC)
        expected = sign("POST", host, path, b"x", credentials=KEY, region="us-east-1", now=at)
        assert signer.headers("POST", path, b"x", now) == expected
    assert signer.amz_date(midnight - 0.2) == "20260314T235959Z"
    assert signer.amz_date(midnight) == "20260315T000000Z"
