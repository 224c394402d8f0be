"""A page on its own origin may call the two routes meant for pages (`POST /llm/tool-response`,
`POST /llm/query/stop`): the browser's CORS preflight is answered, and every answer, errors
included, carries `Access-Control-Allow-Origin` for an origin in ALLOWED_ORIGINS. Routes an
app key authenticates answer no CORS at all (real HTTP against the local stack)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from devstack.process import start_stack
from streaming_proxy.toolcalls import ToolCallRecord, ToolCallStore
from tests.conftest import Stack, stack_env
from tests.fake_llm import FakeLlm
from tests.fake_webhook import FakeWebhook

PAGE_ROUTES = ("/llm/tool-response", "/llm/query/stop")
PAGE = "https://pages.example"
OTHER = "https://elsewhere.example"
PREFLIGHT = {
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "content-type,x-subscribe-token",
}


@pytest.fixture(scope="module")
def listed_stack(
    tmp_path_factory: pytest.TempPathFactory, fake_llm: FakeLlm, webhook: FakeWebhook
) -> Iterator[Stack]:
    """A stack whose ALLOWED_ORIGINS lists one page origin."""
    env = {**stack_env(fake_llm, webhook), "ALLOWED_ORIGINS": f"{PAGE}, https://admin.example"}
    running = start_stack(tmp_path_factory.mktemp("cors-stack"), env)
    try:
        yield running
    finally:
        running.stop()


def preflight(stack: Stack, path: str, origin: str, **headers: str) -> httpx.Response:
    return httpx.options(
        f"{stack.http}{path}", headers={"Origin": origin, **PREFLIGHT, **headers}, timeout=10
    )


def post(stack: Stack, path: str, origin: str | None, body: Any, **headers: str) -> httpx.Response:
    sent = {"Origin": origin, **headers} if origin else headers
    return httpx.post(f"{stack.http}{path}", json=body, headers=sent, timeout=30)


def cors_headers(r: httpx.Response) -> dict[str, str]:
    return {k: v for k, v in r.headers.items() if k.startswith("access-control-")}


def assert_klai_error(r: httpx.Response, status: int, kind: str) -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["success"] is False and body["error"]["type"] == kind, body


@pytest.mark.parametrize("path", PAGE_ROUTES)
def test_a_preflight_from_any_origin_is_allowed_by_default(stack: Stack, path: str) -> None:
    r = preflight(stack, path, PAGE)
    assert r.status_code == 204 and r.content == b""
    assert r.headers["access-control-allow-origin"] == "*"
    assert r.headers["access-control-allow-methods"] == "POST"
    allowed = {h.strip().lower() for h in r.headers["access-control-allow-headers"].split(",")}
    assert {"content-type", "x-subscribe-token"} <= allowed
    assert r.headers["access-control-max-age"] == "600"
    assert "access-control-allow-credentials" not in r.headers


def test_success_and_error_answers_carry_the_allow_origin_header(stack: Stack) -> None:
    token = stack.token("cors-page")
    call = ToolCallRecord(stack.app_id, "tc_cors_page_1", "st_cors_page", "ui_pick", ["cors-page"])
    ToolCallStore(stack.dynamodb_client(), stack.table).open([call])
    answers = {
        "accepted": post(
            stack,
            "/llm/tool-response",
            PAGE,
            {"toolCallId": call.call_id, "success": True, "message": "picked"},
            **{"X-Subscribe-Token": token},
        ),
        "stop": post(stack, "/llm/query/stop", PAGE, {"streamId": "st_nope", "token": token}),
        "not_found": post(
            stack,
            "/llm/tool-response",
            PAGE,
            {"toolCallId": "tc_nobody_waits", "success": True, "message": "x", "token": token},
        ),
        "unauthorized": post(stack, "/llm/query/stop", PAGE, {"streamId": "st_nope"}),
        "invalid_request": post(stack, "/llm/tool-response", PAGE, {"token": token}),
    }
    assert answers["accepted"].json()["status"] == "accepted"
    assert answers["stop"].json()["status"] == "not_found"
    assert_klai_error(answers["not_found"], 404, "not_found")
    assert_klai_error(answers["unauthorized"], 401, "unauthorized")
    assert_klai_error(answers["invalid_request"], 400, "invalid_request")
    for name, r in answers.items():
        assert r.headers.get("access-control-allow-origin") == "*", name


@pytest.mark.parametrize("path", PAGE_ROUTES)
def test_an_options_that_is_no_preflight_is_still_method_not_allowed(
    stack: Stack, path: str
) -> None:
    r = httpx.options(f"{stack.http}{path}", timeout=10)
    assert_klai_error(r, 405, "method_not_allowed")
    assert r.headers["allow"] == "POST"


@pytest.mark.parametrize("path", ["/llm/query", "/v1/chat/completions", "/stream/create"])
def test_routes_an_app_key_authenticates_answer_no_cors(stack: Stack, path: str) -> None:
    refused = preflight(stack, path, PAGE)
    assert refused.status_code == 405
    assert cors_headers(refused) == {}
    answered = post(stack, path, PAGE, {}, **{"x-api-key": stack.api_key})
    assert answered.status_code == 400, answered.text
    assert cors_headers(answered) == {}


@pytest.mark.parametrize("path", PAGE_ROUTES)
def test_a_listed_origin_is_named_in_the_answers(listed_stack: Stack, path: str) -> None:
    allowed = preflight(listed_stack, path, PAGE)
    assert allowed.status_code == 204
    assert allowed.headers["access-control-allow-origin"] == PAGE
    assert "Origin" in allowed.headers["vary"]
    answered = post(listed_stack, path, PAGE, {"token": "not-a-token"})
    assert answered.status_code in (400, 403), answered.text
    assert answered.headers["access-control-allow-origin"] == PAGE
    assert "Origin" in answered.headers["vary"]


@pytest.mark.parametrize("path", PAGE_ROUTES)
def test_an_origin_not_listed_gets_no_allow_header(listed_stack: Stack, path: str) -> None:
    refused = preflight(listed_stack, path, OTHER)
    assert_klai_error(refused, 403, "forbidden")
    assert cors_headers(refused) == {}
    assert "Origin" in refused.headers["vary"]
    answered = post(listed_stack, path, OTHER, {"token": "not-a-token"})
    assert "access-control-allow-origin" not in answered.headers
    assert "Origin" in answered.headers["vary"]


def test_a_preflight_asking_for_another_header_or_method_is_refused(listed_stack: Stack) -> None:
    for asked in (
        {"Access-Control-Request-Headers": "content-type,x-api-key"},
        {"Access-Control-Request-Method": "DELETE"},
    ):
        r = preflight(listed_stack, "/llm/tool-response", PAGE, **asked)
        assert_klai_error(r, 403, "forbidden")
        assert cors_headers(r) == {}
