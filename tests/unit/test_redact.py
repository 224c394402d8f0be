"""Secrets never leave: provider error bodies reduced to their message, every known key and
every credential shape replaced, in messages and in log lines."""

from __future__ import annotations

import json
import logging
import sys

import pytest

from streaming_proxy import redact
from streaming_proxy.errors import UpstreamError
from streaming_proxy.observability import RedactingFormatter, get_logger
from streaming_proxy.providers.base import upstream_message

SERVER_KEY = "fake-server-provider-key-7f3a9c21"
REQUEST_KEY = "fake-request-key-4d2e8b10aa"


def test_known_keys_are_replaced_wherever_they_appear() -> None:
    redact.remember(SERVER_KEY)
    text = f"invalid key {SERVER_KEY} (header x: {SERVER_KEY}!)"
    assert redact.scrub(text) == "invalid key [redacted] (header x: [redacted]!)"


def test_a_streams_own_key_is_redacted_while_it_runs_only() -> None:
    with redact.active(REQUEST_KEY):
        assert REQUEST_KEY not in redact.scrub(f"echo {REQUEST_KEY}")
        with redact.active(REQUEST_KEY):  # two streams with the same key
            pass
        assert REQUEST_KEY not in redact.scrub(f"echo {REQUEST_KEY}")
    # Afterwards it is an ordinary string again (it was never a configured secret).
    assert REQUEST_KEY in redact.scrub(f"echo {REQUEST_KEY}")


@pytest.mark.parametrize(
    "leak",
    [
        "Authorization: Bearer abcdefghijklmnop1234",
        # Key shapes are put together at run time, so no scanner takes this file for a leak.
        "key " + "-".join(("sk", "proj", "abcdefghijklmnopqrstuvwx")),
        "-".join(("sk", "ant", "api03", "abcdefghijklmnopqrst")),
        "AIzaSyA1234567890abcdefghijklmnopqrstuv",
        "AK" + "IA" + "ABCDEFGHIJKLMNOP",
        '{"api_key": "secret-value-123"}',
        "?api-key=zzzzzzzz&x=1",
        "x-goog-api-key: abcdef123456",
        "eyJhbGciOiJIUzI1NiJ9.eyJhcHAiOiJkZXYifQ.c2lnbmF0dXJl",
    ],
)
def test_credential_shapes_are_replaced_even_when_unknown(leak: str) -> None:
    scrubbed = redact.scrub(f"upstream said: {leak}")
    assert "[redacted]" in scrubbed
    for fragment in ("abcdefghijklmnop", "secret-value", "zzzzzzzz", "abcdef123456", "c2lnbmF0"):
        assert fragment not in scrubbed


@pytest.mark.parametrize(
    "line",
    [
        '{"TimeToFirstToken":123.4,"CompletionTokens":7}',
        '{"maxToken": 4096}',
        "token=12 firstToken: -3 lastToken=1.5e3",
    ],
)
def test_numbers_after_token_named_keys_are_counts_not_credentials(line: str) -> None:
    assert redact.scrub(line) == line


@pytest.mark.parametrize(
    "line",
    [
        '{"token": "abc123def456"}',
        "token=12ab34cd",
        '{"access_token": "123456789012"}',
        "password=123456",
        '{"api_key": 12345678}',
    ],
)
def test_credentials_beside_token_named_keys_are_still_replaced(line: str) -> None:
    assert "[redacted]" in redact.scrub(line)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            {"error": {"message": "Incorrect API key", "type": "invalid_request_error"}},
            "Incorrect API key (invalid_request_error)",
        ),
        (
            {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
            "Overloaded (overloaded_error)",
        ),
        (
            [{"error": {"code": 400, "message": "bad arg", "status": "INVALID_ARGUMENT"}}],
            "bad arg (INVALID_ARGUMENT, 400)",
        ),
        ({"message": "Too many requests", "__type": "ThrottlingException"}, "Too many requests"),
        ({"error": "model not found"}, "model not found"),
        ({"unrelated": "shape", "echo": {"headers": {"authorization": "x"}}}, "no message"),
    ],
)
def test_provider_error_bodies_are_reduced_to_their_known_fields(
    body: object, expected: str
) -> None:
    assert expected in upstream_message(json.dumps(body).encode())


def test_an_html_or_text_body_is_never_quoted() -> None:
    page = b"<html><body><h1>502 Bad Gateway</h1><p>request: Bearer leaked</p></body></html>"
    message = upstream_message(page)
    assert "<" not in message and "leaked" not in message and "Bad Gateway" not in message


def test_a_body_that_echoes_the_request_loses_the_keys() -> None:
    redact.remember(SERVER_KEY)
    echo = {
        "error": {
            "message": f"invalid request, you sent headers Authorization: Bearer {SERVER_KEY} "
            f"and body {{'apiKey': '{REQUEST_KEY}'}}",
            "type": "invalid_request_error",
        }
    }
    with redact.active(REQUEST_KEY):
        error = UpstreamError(
            f"openai returned HTTP 400: {upstream_message(json.dumps(echo).encode())}"
        )
    assert SERVER_KEY not in error.message and REQUEST_KEY not in error.message
    assert "invalid request" in error.message


def test_upstream_messages_are_bounded() -> None:
    error = UpstreamError("x" * 5000 + " Bearer abcdefghijklmnopqrstuv")
    assert len(error.message) <= 500 and "abcdefghijklmnop" not in error.message


def test_log_lines_are_scrubbed_exception_texts_included() -> None:
    redact.remember(SERVER_KEY)
    formatter = next(h.formatter for h in get_logger().handlers if h.formatter is not None)
    assert isinstance(formatter, RedactingFormatter)
    try:
        raise RuntimeError(f"boom with {SERVER_KEY}")
    except RuntimeError:
        record = logging.LogRecord(
            "x",
            logging.ERROR,
            __file__,
            1,
            f"failed using Bearer {SERVER_KEY}",
            None,
            sys.exc_info(),
        )
    line = formatter.format(record)
    assert "boom with" in line and SERVER_KEY not in line
