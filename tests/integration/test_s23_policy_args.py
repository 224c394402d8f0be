"""An app's `models` map holds for every model a request names, not only `payload.model`:
the providerArgs with which a gateway picks models (OpenRouter's `models` fallback list and
`route`, `fallbacks`, `preset`, a `model` beside payload.model) are checked against it on
the running stack, on LLM Query, the stream route and `/v1` (where any unknown body field
is a providerArgs key). A refused request reaches no provider and writes nothing; allowed
lists pass through to the provider as they were sent; an app without a map is unaffected."""

from __future__ import annotations

from typing import Any

import httpx

from tests.conftest import Stack, governed_key
from tests.fake_llm import FakeLlm
from tests.integration.test_bad_input import assert_klai_error
from tests.integration.test_governance import assert_openai_error
from tests.integration.test_hostile_gov_stack import governed_rows

HI = [{"role": "user", "content": "Hi"}]
KEY = governed_key("governed")  # models: openai fake-text and fake-tool*; anthropic pinned


def query(provider: str = "openai", **args: Any) -> dict[str, Any]:
    payload = {"provider": provider, "model": "fake-text", "stream": False, "messages": HI}
    return {"payload": payload | {"providerArgs": args}}


async def post(
    client: httpx.AsyncClient, path: str, body: dict[str, Any], key: str = KEY
) -> httpx.Response:
    return await client.post(path, json=body, headers={"x-api-key": key})


async def test_a_fallback_list_naming_a_model_outside_the_map_is_refused_before_the_provider(
    stack: Stack, fake_llm: FakeLlm
) -> None:
    """OpenRouter's `models`: every entry is judged like payload.model; the first one the
    map does not allow is the 403's field, on the Klai routes and on /v1."""
    outside = ["fake-text", "gpt-4o"]
    streamed = query(models=outside) | {"channels": ["s23-args"], "actionName": "onLlm"}
    streamed["payload"]["stream"] = True
    async with httpx.AsyncClient(base_url=stack.http, timeout=30) as client:
        before, rows_before = len(fake_llm.requests), len(governed_rows(stack))
        klai = await post(client, "/llm/query", query(models=outside))
        stream = await post(client, "/stream/create", streamed)
        face = await post(
            client,
            "/v1/chat/completions",
            {"model": "openai/fake-text", "messages": HI, "models": outside},
        )
        explicit = await post(
            client,
            "/v1/chat/completions",
            {"model": "openai/fake-text", "messages": HI, "providerArgs": {"models": outside}},
        )
    for r in (klai, stream):
        error = assert_klai_error(r, 403, "model_not_allowed")
        assert error["fields"][0]["field"] == "payload.providerArgs.models[1]", error
        assert "'gpt-4o'" in error["message"] and "fake-tool*" in error["message"], error
    for r in (face, explicit):
        assert_openai_error(r, 403, "permission_error", "model_not_allowed")
        assert r.json()["error"]["param"] == "models[1]"
    assert len(fake_llm.requests) == before, "a refused request reached the provider"
    assert len(governed_rows(stack)) == rows_before, "a refused stream wrote a record"


async def test_other_model_choosing_args_are_refused_or_checked(
    stack: Stack, fake_llm: FakeLlm
) -> None:
    """`fallbacks` (names or `{model}` objects) and `model` are judged too; `preset` and a
    `route` without a `models` list let the gateway choose, so they are refused; a
    model-naming key of another shape cannot be judged (400)."""
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"fallbacks": ["fake-tools", "claude-opus"]}, 403, "payload.providerArgs.fallbacks[1]"),
        ({"fallbacks": [{"model": "gpt-4o"}]}, 403, "payload.providerArgs.fallbacks[0].model"),
        ({"model": "gpt-4o"}, 403, "payload.providerArgs.model"),
        ({"route": "fallback"}, 403, "payload.providerArgs.route"),
        ({"preset": "anything-goes"}, 403, "payload.providerArgs.preset"),
        ({"models": "gpt-4o"}, 400, "payload.providerArgs.models"),
        ({"models": [{"name": "gpt-4o"}]}, 400, "payload.providerArgs.models[0].model"),
    ]
    async with httpx.AsyncClient(base_url=stack.http, timeout=30) as client:
        before = len(fake_llm.requests)
        answers = [await post(client, "/llm/query", query(**args)) for args, _, _ in cases]
        face = await post(
            client,
            "/v1/chat/completions",
            {"model": "openai/fake-text", "messages": HI, "route": "fallback"},
        )
    for r, (args, status, field) in zip(answers, cases, strict=True):
        kind = "model_not_allowed" if status == 403 else "invalid_request"
        error = assert_klai_error(r, status, kind)
        assert error["fields"][0]["field"] == field, (args, error)
    assert_openai_error(face, 403, "permission_error", "model_not_allowed")
    assert face.json()["error"]["param"] == "route"
    assert len(fake_llm.requests) == before, "a refused request reached the provider"


async def test_allowed_lists_pass_through_to_the_provider_unchanged(
    stack: Stack, fake_llm: FakeLlm
) -> None:
    """Entries the map allows (names and `*` prefixes) reach the gateway as they were sent,
    with `route` beside a list; null keys are no choice at all."""
    allowed = ["fake-text", "fake-tools", "fake-tool-x"]
    async with httpx.AsyncClient(base_url=stack.http, timeout=30) as client:
        klai = await post(
            client, "/llm/query", query(models=allowed, route="fallback", preset=None)
        )
        assert klai.status_code == 200, klai.text
        sent = fake_llm.last("/chat/completions").body
        assert (sent["model"], sent["models"], sent["route"]) == (
            "fake-text",
            allowed,
            "fallback",
        )
        assert "preset" not in sent
        face = await post(
            client,
            "/v1/chat/completions",
            {"model": "openai/fake-text", "messages": HI, "fallbacks": [{"model": "fake-tools"}]},
        )
        assert face.status_code == 200, face.text
        assert fake_llm.last("/chat/completions").body["fallbacks"] == [{"model": "fake-tools"}]


async def test_a_pinned_provider_holds_its_fallbacks_to_the_pinned_model(
    stack: Stack, fake_llm: FakeLlm
) -> None:
    """Anthropic is pinned to fake-text: a list naming only it passes (the Messages body
    takes it as it is), one naming any other model is 403 naming the pin."""
    async with httpx.AsyncClient(base_url=stack.http, timeout=30) as client:
        same = query("anthropic", fallbacks=[{"model": "fake-text"}])
        del same["payload"]["model"]  # the pin fills it in
        ok = await post(client, "/llm/query", same)
        assert ok.status_code == 200, ok.text
        sent = fake_llm.last("/messages").body
        assert (sent["model"], sent["fallbacks"]) == ("fake-text", [{"model": "fake-text"}])
        before = len(fake_llm.requests)
        other = await post(client, "/llm/query", query("anthropic", models=["claude-opus"]))
        shadow = await post(client, "/llm/query", query("anthropic", model="claude-opus"))
    for r, field in ((other, "models[0]"), (shadow, "model")):
        error = assert_klai_error(r, 403, "model_not_allowed")
        assert "pinned to anthropic model 'fake-text', not 'claude-opus'" in error["message"]
        assert error["fields"][0]["field"] == "payload.providerArgs." + field
    assert len(fake_llm.requests) == before, "a refused request reached the provider"


async def test_an_app_without_a_models_map_sends_any_list_as_before(
    stack: Stack, fake_llm: FakeLlm
) -> None:
    """Without a map nothing is judged: the dev app's lists and routes reach the gateway."""
    args = {"models": ["fake-text", "gpt-4o"], "route": "fallback", "preset": "mine"}
    async with httpx.AsyncClient(base_url=stack.http, timeout=30) as client:
        klai = await post(client, "/llm/query", query(**args), key=stack.api_key)
        assert klai.status_code == 200, klai.text
        sent = fake_llm.last("/chat/completions").body
        assert {k: sent[k] for k in args} == args
        face = await post(
            client,
            "/v1/chat/completions",
            {"model": "openai/fake-text", "messages": HI, **args},
            key=stack.api_key,
        )
        assert face.status_code == 200, face.text
        sent = fake_llm.last("/chat/completions").body
        assert {k: sent[k] for k in args} == args
