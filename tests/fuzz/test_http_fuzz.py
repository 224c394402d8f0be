"""Property-based fuzzing of every operation in docs/openapi.yaml against the local stack.

Every answer must keep the product's rules: no 5xx (the built-in mock provider has no
upstream to blame, so not even 502/503/504), an answer within REQUEST_TIMEOUT, no secret
in a body or header, every error a JSON body of the documented shape whose code fits its
status, and what the document declares for the operation (status, Content-Type, headers,
body schema).

Three sources of requests: the document itself (schemathesis, schema-valid and
schema-violating bodies, steered to the mock provider so streams end at once), hand-written
mutations of a valid body (lone surrogates, huge strings, deep nesting, many channels, raw
non-JSON, unicode header values), and requests no route serves (wrong method, unknown path).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from schemathesis.specs.openapi.checks import negative_data_rejection, positive_data_acceptance

from streaming_proxy.toolcalls import ToolCallRecord, ToolCallStore
from tests.conftest import Stack

from .budget import SCALE, seeded
from .hostile import encode
from .http_api import (
    ACCEPTS,
    AUTHS,
    CONFORMANCE,
    FRAMES,
    OPERATIONS,
    Auth,
    Target,
    mock_request,
)
from .http_requests import (
    PATH_PARAMETERS,
    SHAPES,
    cases,
    hostile_requests,
    invalid_only_in_replaced_headers,
    set_field,
    steer,
    steerings,
    unrouted_requests,
)
from .ledger import SecretLedger
from .rules import (
    REQUEST_TIMEOUT,
    NoTimelyAnswer,
    errors_are_documented_json,
    not_a_server_error,
    verify,
)
from .stack_log import LogWindow, assert_no_error_logged, assert_no_secret_logged


@pytest.fixture(scope="module")
def target(stack: Stack, ledger: SecretLedger, log_window: LogWindow) -> Target:
    token = ledger.add(stack.token("fuzz-http"))
    r = httpx.post(
        f"{stack.http}/llm/query",
        json=mock_request(["fuzz-http"]),
        headers={"x-api-key": stack.api_key},
        timeout=REQUEST_TIMEOUT,
    )
    r.raise_for_status()
    wrong_key = ledger.add("wrong-app-key-for-fuzzing-5b1d")
    calls = [
        ToolCallRecord(stack.app_id, f"tc_fuzz_http_{n}", "st_fuzz_tools", "ui_pick", ["fuzz-http"])
        for n in range(20)
    ]
    ToolCallStore(stack.dynamodb_client(), stack.table).open(calls)
    return Target(
        stack,
        ledger,
        token,
        wrong_key,
        stream_id=r.json()["streamId"],
        tool_calls=tuple(c.call_id for c in calls),
    )


# -- requests generated from the document ---------------------------------------------------------


@pytest.mark.parametrize("operation_id", sorted(OPERATIONS))
@seeded(max_examples=60)
@given(data=st.data())
def test_generated_requests_keep_the_rules(
    operation_id: str, target: Target, data: st.DataObject
) -> None:
    operation = OPERATIONS[operation_id]
    case = data.draw(cases(operation), label="case")
    steering = data.draw(steerings(), label="steering")
    valid_once_steered = invalid_only_in_replaced_headers(case)
    headers = steer(operation_id, case, steering, target)
    response, elapsed = target.call(case, headers)
    checks: list[Callable[..., Any]] = list(CONFORMANCE)
    if not valid_once_steered:
        checks.append(negative_data_rejection)
    if steering.auth.valid:
        checks.append(positive_data_acceptance)
    verify(case, response, elapsed, target.ledger, FRAMES, checks)


# -- hand-written hostile requests ---------------------------------------------------------------


@pytest.mark.parametrize("operation_id", sorted(OPERATIONS))
@seeded(max_examples=40)
@given(data=st.data())
def test_hostile_requests_keep_the_rules(
    operation_id: str, target: Target, data: st.DataObject
) -> None:
    operation = OPERATIONS[operation_id]
    hostile = data.draw(hostile_requests(operation_id), label="request")
    auth = data.draw(AUTHS, label="auth")
    accept = data.draw(st.sampled_from(ACCEPTS), label="accept")
    # The hostile bytes replace the body; the case carries the route for the document's checks.
    case = operation.Case(
        media_type="application/json" if operation.body else None,
        path_parameters=PATH_PARAMETERS.get(operation_id),
    )
    headers: dict[str, Any] = {"Accept": accept, **target.credentials(auth), **hostile.headers}
    with_body = operation.method.upper() in ("POST", "PUT")
    kwargs: dict[str, Any] = {"data": hostile.body} if with_body else {}
    response, elapsed = target.call(case, headers, **kwargs)
    verify(case, response, elapsed, target.ledger, FRAMES, CONFORMANCE)


LONE_SURROGATE = "\ud800"
SURROGATE_FIELDS = [
    (operation_id, path)
    for operation_id, shape in sorted(SHAPES.items())
    for path in (*shape.fields, LONE_SURROGATE)
    if shape.fields  # operations without a body have no field to set
]


@pytest.mark.parametrize(("operation_id", "path"), SURROGATE_FIELDS, ids=repr)
def test_a_lone_surrogate_in_any_field_keeps_the_rules(
    target: Target, operation_id: str, path: str
) -> None:
    """Every field of every body set to a lone surrogate (and one as a key): a JSON string
    that Python reads but cannot encode as UTF-8, the cause of several crashes found."""
    operation = OPERATIONS[operation_id]
    body = set_field(SHAPES[operation_id].body, path, LONE_SURROGATE)
    case = operation.Case(
        media_type="application/json", path_parameters=PATH_PARAMETERS.get(operation_id)
    )
    response, elapsed = target.call(
        case, target.credentials(Auth.X_API_KEY), data=encode(body).encode()
    )
    verify(case, response, elapsed, target.ledger, FRAMES, CONFORMANCE)


# -- requests no route serves --------------------------------------------------------------------


@seeded(max_examples=40)
@given(request=unrouted_requests())
def test_unrouted_requests_answer_a_json_error(target: Target, request: tuple[str, str]) -> None:
    method, path = request
    try:
        r = httpx.request(
            method,
            target.stack.http + path,
            content=b"{}" if method != "GET" else None,
            headers={"x-api-key": target.stack.api_key, "content-type": "application/json"},
            timeout=REQUEST_TIMEOUT,
        )
    except httpx.HTTPError as e:
        raise NoTimelyAnswer(f"{method} {path}: no answer ({type(e).__name__})") from None
    not_a_server_error(method, path, r.status_code, set(), r.content)
    assert r.status_code in (404, 405), f"{method} {path} answered {r.status_code}"
    content_type = r.headers.get("content-type", "")
    errors_are_documented_json(path, r.status_code, content_type, r.content)


# -- huge channel lists (last: accepting one may wedge the stack) -------------------------------

HUGE_CHANNELS = [f"c{i}" for i in range(20_000)]
# API Gateway caps request headers at 10 KB: as many names as fit.
HEADER_CHANNELS = ",".join(f"c{i}" for i in range(1_500))
HUGE_CHANNEL_REQUESTS: dict[str, tuple[str, dict[str, Any], dict[str, str]]] = {
    "llm-query-ack": ("llmQuery", mock_request(HUGE_CHANNELS), {"Accept": "application/json"}),
    "chat-sse": ("chatStream", mock_request(HUGE_CHANNELS), {"Accept": "text/event-stream"}),
    "openai-body": (
        "createChatCompletion",
        {
            "model": "mock/echo",
            "messages": [{"role": "user", "content": "hello fuzz"}],
            "providerArgs": {"delayMs": 0},
            "channels": HUGE_CHANNELS,
            "actionName": "onFuzz",
        },
        {},
    ),
    "openai-header": (
        "createChatCompletion",
        SHAPES["createChatCompletion"].body,
        {"X-Channels": HEADER_CHANNELS, "X-Action-Name": "onFuzz"},
    ),
}


@pytest.mark.parametrize("name", list(HUGE_CHANNEL_REQUESTS))
def test_a_huge_channel_list_is_answered_in_time(target: Target, name: str) -> None:
    """Refused (the token endpoint stops at 100 channels) or served, but within the bound."""
    operation_id, body, extra_headers = HUGE_CHANNEL_REQUESTS[name]
    operation = OPERATIONS[operation_id]
    case = operation.Case(media_type="application/json")
    headers = {**target.credentials(Auth.X_API_KEY), **extra_headers}
    response, elapsed = target.call(case, headers, data=encode(body).encode())
    verify(case, response, elapsed, target.ledger, FRAMES, CONFORMANCE)


def test_the_stack_still_serves_after_huge_channel_lists(target: Target) -> None:
    """Whatever the huge lists set going in the background, an ordinary stream still starts."""
    case = OPERATIONS["llmQuery"].Case(media_type="application/json")
    headers = target.credentials(Auth.X_API_KEY)
    response, elapsed = target.call(
        case, headers, data=encode(mock_request(["fuzz-http"])).encode()
    )
    verify(case, response, elapsed, target.ledger, FRAMES, CONFORMANCE)


# -- and the log holds no secret and no error --------------------------------------------------


def test_the_fuzzed_answers_reached_the_waiting_calls(target: Target) -> None:
    """After the generated answers: some got past "no such call" and were recorded (so the
    channel check and the first-answer-wins write were fuzzed), each at most once."""
    if SCALE < 1:
        pytest.skip("FUZZ_SCALE < 1 sends too few answers to expect one recorded")
    store = ToolCallStore(target.stack.dynamodb_client(), target.stack.table)
    records = [store.get(target.stack.app_id, call_id) for call_id in target.tool_calls]
    answered = [r for r in records if r is not None and r.status == "answered"]
    assert answered, "no fuzzed answer reached a waiting tool call"
    assert all(isinstance(r.answer, dict) and r.answered_by for r in answered)


def test_stack_log_holds_no_secret(target: Target, log_window: LogWindow) -> None:
    """Last in this module: the log written while it ran names no secret it used..."""
    assert_no_secret_logged(log_window, target.ledger)


def test_stack_log_holds_no_error(target: Target, log_window: LogWindow) -> None:
    """...and no error: some requests break a stream after it was acknowledged."""
    assert_no_error_logged(log_window)
