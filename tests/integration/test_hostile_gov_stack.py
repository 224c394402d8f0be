"""Hostile cases of per-app governance on the running stack, through the routes that fill a
request from stored state (a named assistant, a thread) and through other spellings of a
provider key: the `governed` app (tests/conftest.py GOVERNED_APPS) stays inside its
`models` map and never sends a key of its own, whatever it stored or however it spells it;
and the one name a caller writes into a stream's analytics records stays bounded."""

from __future__ import annotations

from typing import Any

import httpx

from tests.conftest import FAKE_OPENAI_KEY, Stack, governed_key
from tests.fake_llm import FakeLlm
from tests.integration.test_bad_input import assert_klai_error

HI = [{"role": "user", "content": "Hi"}]
KEY = governed_key("governed")


async def post(client: httpx.AsyncClient, path: str, body: dict[str, Any]) -> httpx.Response:
    return await client.post(path, json=body, headers={"x-api-key": KEY})


def governed_rows(stack: Stack) -> list[dict[str, Any]]:
    """The table's items of the governed app other than its named assistants."""
    rows = stack.dynamodb_client().scan(TableName=stack.table)["Items"]
    return [
        row
        for row in rows
        if "#governed#" in row["pk"]["S"] and not row["pk"]["S"].startswith("ASSISTANT")
    ]


async def test_a_stored_assistant_cannot_carry_a_run_outside_the_apps_models(
    stack: Stack, fake_llm: FakeLlm
) -> None:
    """The app may store an assistant naming any model; running it is what the policy
    judges: an unlisted model, a provider left out of the map, on LLM Query and on the
    Assistants route (a new thread), is 403 before any provider request or thread."""
    async with httpx.AsyncClient(base_url=stack.http, timeout=30) as client:
        made = []
        for fields in ({"provider": "openai", "model": "gpt-4o"}, {"provider": "mock"}):
            r = await post(client, "/assistants", {"name": "Sneaky", **fields})
            assert r.status_code == 201, r.text
            made.append(r.json()["assistant"]["id"])
        before, rows_before = len(fake_llm.requests), len(governed_rows(stack))
        answers = []
        for assistant_id in made:
            payload = {"assistant_id": assistant_id, "messages": HI, "stream": False}
            answers.append(await post(client, "/llm/query", {"payload": payload}))
            run = {"channels": ["gov-runs"], "actionName": "onRun", "payload": payload}
            run["payload"] = {**payload, "stream": True}
            answers.append(await post(client, "/stream/create/assistants", run))
    for r in answers:
        assert_klai_error(r, 403, "model_not_allowed")
    assert len(fake_llm.requests) == before, "a refused run reached the provider"
    assert len(governed_rows(stack)) == rows_before, "a refused run wrote a thread or stream"


async def test_a_provider_key_in_another_spelling_never_reaches_the_provider(
    stack: Stack, fake_llm: FakeLlm
) -> None:
    """`payload.api_key` is `payload.apiKey` by another name: refused (403). Other
    spellings are not a key field at all: served, with the server's key upstream."""
    secret = "caller-provider-key-" + "x" * 12
    payload = {"provider": "openai", "model": "fake-text", "stream": False, "messages": HI}
    async with httpx.AsyncClient(base_url=stack.http, timeout=30) as client:
        snake = await post(client, "/llm/query", {"payload": {**payload, "api_key": secret}})
        assert_klai_error(snake, 403, "provider_key_refused")
        for field in ("APIKey", "apikey", "api-key", "key"):
            r = await post(client, "/llm/query", {"payload": {**payload, field: secret}})
            assert r.status_code == 200, (field, r.text)
            sent = fake_llm.last("/chat/completions")
            assert sent.headers["authorization"] == f"Bearer {FAKE_OPENAI_KEY}", field
            assert secret not in str(sent.body), field
        face = await post(
            client,
            "/v1/chat/completions",
            {"model": "openai/fake-text", "messages": HI, "providerArgs": {"api_key": secret}},
        )
        assert face.status_code == 200, face.text
        assert fake_llm.last("/chat/completions").headers["authorization"] == (
            f"Bearer {FAKE_OPENAI_KEY}"
        )
    assert secret not in snake.text
