"""Named assistants through the real stack: stored per app with the app key, listed page by
page, replaced and deleted; a run naming one by `assistant_id` sends the stored
instructions, model and settings to the provider (asserted on the fake upstream), and the
payload's own fields win, field by field."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.conftest import RIVAL_KEY, Stack, governed_key
from tests.delivery import assert_complete
from tests.fake_llm import TEXT, FakeLlm
from tests.integration.test_threads import call, run, run_body
from tests.wsclient import Subscriber

WRITER = {
    "name": "Writer",
    "instructions": "Answer in one line.",
    "provider": "openai",
    "model": "fake-text",
    "providerArgs": {"temperature": 0.25},
}


async def create(stack: Stack, fields: dict[str, Any], key: str | None = None) -> dict[str, Any]:
    r = await call(stack, "POST", "/assistants", fields, key=key)
    assert r.status_code == 201, r.text
    assistant: dict[str, Any] = r.json()["assistant"]
    return assistant


async def test_create_read_replace_list_and_delete(stack: Stack) -> None:
    tool = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}
    made = await create(stack, {**WRITER, "tools": [tool]})
    assert made["id"].startswith("asst_") and len(made["id"]) > 20
    assert {k: made[k] for k in WRITER} == WRITER
    assert made["tools"] == [tool] and made["createdAt"] == made["updatedAt"]

    read = await call(stack, "GET", f"/assistants/{made['id']}")
    assert read.status_code == 200 and read.json()["assistant"] == made

    replaced = await call(stack, "PUT", f"/assistants/{made['id']}", {"name": "Terse"})
    assert replaced.status_code == 200, replaced.text
    now = replaced.json()["assistant"]
    # PUT replaces every field: what the body leaves out is gone.
    assert (now["name"], now["createdAt"]) == ("Terse", made["createdAt"])
    assert "instructions" not in now and "tools" not in now

    ids = {made["id"]} | {(await create(stack, {"name": f"n{i}"}))["id"] for i in range(4)}
    seen: list[str] = []
    cursor = ""
    while True:
        page = (await call(stack, "GET", f"/assistants?limit=2{cursor}")).json()
        assert len(page["assistants"]) <= 2
        seen += [a["id"] for a in page["assistants"]]
        if page["nextCursor"] is None:
            break
        cursor = f"&cursor={page['nextCursor']}"
    assert ids <= set(seen) and len(seen) == len(set(seen)) and seen == sorted(seen)

    deleted = await call(stack, "DELETE", f"/assistants/{made['id']}")
    assert deleted.status_code == 200 and deleted.json()["deleted"] is True
    assert (await call(stack, "GET", f"/assistants/{made['id']}")).status_code == 404
    assert (await call(stack, "DELETE", f"/assistants/{made['id']}")).status_code == 404


async def test_invalid_assistants_are_refused_with_the_field_named(stack: Stack) -> None:
    cases = [
        ({"instructions": "no name"}, 400, "name"),
        ({"name": "x", "provider": "nosuch"}, 400, "provider"),
        ({"name": "x", "tools": [{"type": "function", "function": {}}]}, 400, "tools.0"),
        ({"name": "x", "instructoins": "typo"}, 400, "instructoins"),
        ({"name": "x", "instructions": "é" * 200_000}, 413, None),
    ]
    for body, status, field in cases:
        r = await call(stack, "POST", "/assistants", body)
        assert r.status_code == status, (body, r.text)
        error = r.json()["error"]
        if field is not None:
            assert any(f["field"].startswith(field) for f in error["fields"]), error
    assert (await call(stack, "GET", "/assistants?limit=0")).status_code == 400
    assert (await call(stack, "GET", "/assistants/not-an-id")).status_code == 404
    unauthorised = await call(stack, "GET", "/assistants", key="wrong-key-for-this-test")
    assert unauthorised.status_code == 401


async def test_a_run_uses_the_stored_assistant_and_inline_fields_win(
    stack: Stack, fake_llm: FakeLlm
) -> None:
    assistant = await create(stack, WRITER)
    channel = "assistant-runs"
    sub = await Subscriber.open(stack.ws, stack.token(channel))
    try:
        # No provider in the payload: the run is the assistant's (openai, fake-text).
        body = run_body(channel, "Hi", assistant_id=assistant["id"])
        del body["payload"]["provider"], body["payload"]["providerArgs"]
        ack, first = await run(stack, sub, body)
        assert_complete(first, TEXT)
        sent = fake_llm.last("/chat/completions").body
        assert sent["model"] == "fake-text" and sent["temperature"] == 0.25
        assert sent["messages"][0] == {"role": "system", "content": "Answer in one line."}

        # Inline instructions and providerArgs replace the stored ones whole.
        body = run_body(channel, "Again", ack["threadId"], assistant_id=assistant["id"])
        body["payload"] |= {"instructions": "Be loud.", "providerArgs": {"top_p": 0.5}}
        del body["payload"]["provider"]
        await run(stack, sub, body)
        sent = fake_llm.last("/chat/completions").body
        assert sent["messages"][0] == {"role": "system", "content": "Be loud."}
        assert sent["top_p"] == 0.5 and "temperature" not in sent
        assert [m["content"] for m in sent["messages"][1:]] == ["Hi", TEXT, "Again"]

        # An inline provider wins too: the mock echoes, and no request reaches the fake.
        before = len(fake_llm.requests)
        _, mocked = await run(
            stack, sub, run_body(channel, "echo me", assistant_id=assistant["id"])
        )
        assert_complete(mocked, "echo me")
        assert len(fake_llm.requests) == before

        # LLM Query without a thread sends the assistant's instructions first as well.
        query = run_body(channel, "Plain query", assistant_id=assistant["id"])
        del query["payload"]["provider"], query["payload"]["providerArgs"]
        r = await call(stack, "POST", "/llm/query", query)
        assert r.status_code == 200, r.text
        await sub.stream(r.json()["streamId"], within=20)
        sent = fake_llm.last("/chat/completions").body
        assert [m["role"] for m in sent["messages"]] == ["system", "user"]
    finally:
        await sub.close()


async def test_unknown_and_other_apps_assistants_are_not_found(stack: Stack) -> None:
    mine = await create(stack, WRITER)
    theirs = await create(stack, {"name": "Rival"}, key=RIVAL_KEY)
    path = f"/assistants/{theirs['id']}"
    assert (await call(stack, "GET", path)).status_code == 404
    assert (await call(stack, "PUT", path, {"name": "taken"})).status_code == 404
    assert (await call(stack, "DELETE", path)).status_code == 404
    listed = (await call(stack, "GET", "/assistants?limit=100", key=RIVAL_KEY)).json()
    rivals = {a["id"] for a in listed["assistants"]}
    assert theirs["id"] in rivals and mine["id"] not in rivals

    channel = "assistant-unknown"
    sub = await Subscriber.open(stack.ws, stack.token(channel))
    try:
        for assistant_id in (theirs["id"], "asst_nobodyHasThisOne1"):
            for route in ("/stream/create/assistants", "/llm/query"):
                body = run_body(channel, "x", assistant_id=assistant_id)
                r = await call(stack, "POST", route, body)
                assert r.status_code == 404, r.text
                assert r.json()["error"]["type"] == "not_found"
        chat = await call(
            stack, "POST", "/stream/create", run_body(channel, "x", assistant_id=mine["id"])
        )
        assert chat.status_code == 400
        await asyncio.sleep(0.5)
        assert sub.messages == []  # nothing was published for a refused run
    finally:
        await sub.close()
    assert (
        await call(stack, "GET", f"/assistants/{theirs['id']}", key=RIVAL_KEY)
    ).status_code == 200


async def test_an_app_stores_at_most_its_limit_and_a_delete_frees_a_place(stack: Stack) -> None:
    key = governed_key("capped")  # maxAssistants 3
    made = [await create(stack, {"name": f"c{i}"}, key=key) for i in range(3)]
    refused = await call(stack, "POST", "/assistants", {"name": "one too many"}, key=key)
    assert refused.status_code == 409, refused.text
    error = refused.json()["error"]
    assert error["type"] == "conflict" and "3 assistants" in error["message"]
    assert (await call(stack, "POST", "/assistants", {"name": "dev app"})).status_code == 201

    assert (await call(stack, "DELETE", f"/assistants/{made[0]['id']}", key=key)).status_code == 200
    again = await create(stack, {"name": "in its place"}, key=key)
    # A delete of an absent assistant frees nothing.
    assert (await call(stack, "DELETE", f"/assistants/{made[0]['id']}", key=key)).status_code == 404
    refused = await call(stack, "POST", "/assistants", {"name": "still too many"}, key=key)
    assert refused.status_code == 409
    listed = (await call(stack, "GET", "/assistants?limit=100", key=key)).json()
    assert {a["id"] for a in listed["assistants"]} == {made[1]["id"], made[2]["id"], again["id"]}


async def test_concurrent_creates_never_pass_the_limit(stack: Stack) -> None:
    key = governed_key("crowded")  # maxAssistants 5
    answers = await asyncio.gather(
        *(call(stack, "POST", "/assistants", {"name": f"r{i}"}, key=key) for i in range(12))
    )
    assert sorted(r.status_code for r in answers) == [201] * 5 + [409] * 7
    listed = (await call(stack, "GET", "/assistants?limit=100", key=key)).json()
    created = {r.json()["assistant"]["id"] for r in answers if r.status_code == 201}
    assert {a["id"] for a in listed["assistants"]} == created


async def test_ids_not_shaped_like_ids_name_nothing(stack: Stack) -> None:
    """A path id of the wrong shape (another kind of id, a traversal, too long) is a 404, as
    an unknown id is, whatever the method; never a 400 or 500 that tells ids apart."""
    odd = ["thread_abcdefghijk", "asst_..%2F..%2Fx", "asst_" + "a" * 200, "asst_short"]
    for assistant_id in odd:
        for method in ("GET", "PUT", "DELETE"):
            body = {"name": "x"} if method == "PUT" else None
            r = await call(stack, method, f"/assistants/{assistant_id}", body)
            assert r.status_code == 404, (method, assistant_id, r.text)
            assert r.json()["error"]["type"] == "not_found"
    for thread_id in ("asst_abcdefghijk", "thread_" + "a" * 200, "thread_x"):
        for method, path in (("GET", "/messages"), ("DELETE", "")):
            r = await call(stack, method, f"/threads/{thread_id}{path}")
            assert r.status_code == 404, (method, thread_id, r.text)
            assert r.json()["error"]["type"] == "not_found"
