"""Secrets in the forms an echo writes them in: a provider error quoting the request's JSON
escapes a key's `"` and `\\`, a PHP gateway escapes `/`, a proxy URL-encodes. A key the
proxy knows must be replaced in each form, whole: no tail of it may reach anyone.
"""

from __future__ import annotations

import json
import re
from urllib.parse import quote, quote_plus

import httpx
import pytest

from streaming_proxy import redact
from tests.conftest import Stack

# The part after the characters JSON escapes: what leaked when only the plain key was known.
TAIL = "tail7f3a9c21e5"
QUOTED_KEY = 'hostile-"quoted\\' + TAIL


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
@pytest.mark.parametrize("sse", [False, True], ids=["json", "sse"])
async def test_a_request_key_echoed_json_escaped_is_redacted_whole(
    stack: Stack, provider: str, sse: bool
) -> None:
    payload = {
        "provider": provider,
        "apiKey": QUOTED_KEY,
        "stream": sse,
        "model": "fake-echo-json",
        "messages": [{"role": "user", "content": "hi"}],
    }
    body = {"actionName": "onEcho", "channels": ["echo-ch"], "payload": payload}
    headers = {"x-api-key": stack.api_key, "accept": "text/event-stream" if sse else "*/*"}
    async with httpx.AsyncClient(base_url=stack.http, timeout=30) as client:
        answer = await client.post("/llm/query", json=body, headers=headers)
    assert answer.status_code == 400, answer.text
    assert "[redacted]" in answer.text
    assert TAIL not in answer.text
    assert TAIL not in stack.logs()


KEY = "hostile/server key+0123456789&more"


def lower_hex(text: str) -> str:
    return re.sub(r"%[0-9A-F]{2}", lambda m: m.group().lower(), text)


@pytest.mark.parametrize(
    "form",
    [
        json.dumps(KEY)[1:-1].replace("/", "\\/"),  # PHP's json_encode
        quote(KEY, safe=""),
        lower_hex(quote(KEY, safe="")),
        quote_plus(KEY, safe=""),
        json.dumps(json.dumps(QUOTED_KEY)[1:-1])[1:-1],  # escaped twice
    ],
    ids=["slash-escaped", "url", "url-lower-hex", "url-plus", "json-twice"],
)
def test_a_known_key_is_replaced_in_every_escaped_form(form: str) -> None:
    with redact.active(KEY, QUOTED_KEY):
        text = redact.scrub(f"upstream said: k={form} and more")
    assert text == "upstream said: k=[redacted] and more"
