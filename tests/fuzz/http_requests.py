"""Requests for the HTTP fuzzers: generated ones steered to the mock provider, hand-written
hostile ones, and ones no route serves."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st
from schemathesis import GenerationMode

from streaming_proxy.providers.sampling import ALIASES

from .hostile import Deep, encode, hostile_values
from .http_api import ACCEPTS, AUTHS, OPERATIONS, Auth, Target, mock_request
from .rules import Operation, Request

# Each spelling of a sampling setting -> the setting (providers/sampling.py reads them all).
SETTING_OF = {alias: name for name, aliases in ALIASES.items() for alias in aliases}

KLAI_STREAM_OPERATIONS = {"chatStream", "llmQuery", "assistantsStream"}
ASSISTANT_WRITES = {"createAssistant", "replaceAssistant"}
# Mock providerArgs that inject failures: real upstream-style 5xx answers, not what is fuzzed here.
MOCK_FAILURE_ARGS = ("failAfter", "failBeforeFirstByte", "failStatus")


# -- generated from the document -----------------------------------------------------------------


@dataclass(frozen=True)
class Steering:
    """The drawn choices applied to a generated request."""

    auth: Auth
    accept: str
    known_stream: bool  # name the known stream or a waiting tool call (where the route has one)
    provider_key: str
    tool_call: int  # which waiting tool call


def steerings() -> st.SearchStrategy[Steering]:
    return st.builds(
        Steering,
        auth=AUTHS,
        accept=st.sampled_from(ACCEPTS),
        known_stream=st.booleans(),
        tool_call=st.integers(min_value=0, max_value=99),
        provider_key=st.text("abcdef0123456789", min_size=12, max_size=12).map(
            lambda suffix: f"fuzz-provider-key-{suffix}"
        ),
    )


def cases(operation: Operation) -> st.SearchStrategy[Request]:
    """Schema-valid and schema-violating requests (an operation without inputs: valid only)."""
    positive = operation.as_strategy(generation_mode=GenerationMode.POSITIVE)
    if not operation.body and not list(operation.iter_parameters()):
        return positive
    return positive | operation.as_strategy(generation_mode=GenerationMode.NEGATIVE)


REPLACED_HEADERS = ("Authorization", "x-api-key", "Accept")


def invalid_only_in_replaced_headers(case: Request) -> bool:
    """A schema-violating case whose only violation is in a header `steer` replaces (the
    credentials, Accept): once steered it is a valid request, so it must not be held to
    "invalid data is rejected"."""
    if case.meta is None or case.meta.generation.mode.is_positive:
        return False
    negative = {where.value for where, c in case.meta.components.items() if not c.mode.is_positive}
    others = set(case.headers or {}) - set(REPLACED_HEADERS)
    return negative <= {"header"} and not others


def steer(operation_id: str, case: Request, steering: Steering, target: Target) -> dict[str, str]:
    """Point a generated request at the mock provider (no network, streams that end at once),
    put the drawn credentials in place; returns the headers to send.

    No change here turns a schema-valid request invalid or the reverse (a string stays a
    string, an object an object), so schemathesis' positive/negative checks stay right."""
    for name in REPLACED_HEADERS:
        case.headers.pop(name, None)
    body = case.body
    if isinstance(body, dict):
        _steer_credentials(body, steering.auth, target)
        if operation_id in KLAI_STREAM_OPERATIONS:
            _steer_klai_stream(body, steering, target, _positive(case))
        elif operation_id == "createChatCompletion":
            model = body.get("model")
            if isinstance(model, str) and model:
                body["model"] = "mock/" + model.removeprefix("mock/")
            _fast_mock(body)
            if _positive(case):
                _settings_agree(body, body.get("providerArgs"))
            _name_the_action_for_header_channels(case)
        elif operation_id in ASSISTANT_WRITES and isinstance(body.get("provider"), str):
            body["provider"] = "mock"  # a provider name the deployment knows stays valid
        elif operation_id == "llmQueryStop" and steering.known_stream and _positive(case):
            body["streamId"] = target.stream_id  # a valid id stays valid: no check is misled
        elif operation_id == "llmToolResponse" and steering.known_stream and _positive(case):
            body["toolCallId"] = target.tool_call(steering.tool_call)
    return {"Accept": steering.accept, **target.credentials(steering.auth)}


def _name_the_action_for_header_channels(case: Request) -> None:
    """Channels named in `X-Channels` need an action name from the body or `X-Action-Name`:
    a rule across a header and the body, which the document states in words only. A valid
    request keeps it (a valid header value is added), so positive cases stay valid."""
    body = case.body if isinstance(case.body, dict) else {}
    channels = str(case.headers.get("X-Channels", "")).strip(", ")
    if _positive(case) and channels and not body.get("actionName"):
        case.headers.setdefault("X-Action-Name", "onFuzz")


def _positive(case: Request) -> bool:
    return case.meta is not None and case.meta.generation.mode.is_positive


def _steer_credentials(body: dict[str, Any], auth: Auth, target: Target) -> None:
    """The body key wins over headers: make it the drawn one (a key that is not a string is
    left as generated: it is what makes the request invalid)."""
    key = body.get("apiKey", "")
    if not isinstance(key, str):
        return
    if auth is Auth.BODY:
        body["apiKey"] = target.stack.api_key
    elif auth is Auth.WRONG and "apiKey" in body:
        body["apiKey"] = target.wrong_key
    else:
        body.pop("apiKey", None)


def _steer_klai_stream(
    body: dict[str, Any], steering: Steering, target: Target, positive: bool
) -> None:
    payload = body.get("payload")
    if isinstance(payload, dict):
        if isinstance(payload.get("provider", "mock"), str):
            payload["provider"] = "mock"
        if isinstance(payload.get("apiKey"), str):
            payload["apiKey"] = target.ledger.add(steering.provider_key)
        _fast_mock(payload)
        if positive:
            _settings_agree(payload, payload.get("providerArgs"), payload.get("generationConfig"))
    options = body.setdefault("options", {"flushIntervalMs": 0})
    if isinstance(options, dict):
        flush = options.get("flushIntervalMs")
        if isinstance(flush, int) and not isinstance(flush, bool) and 0 <= flush <= 1000:
            options["flushIntervalMs"] = flush % 21


def _settings_agree(*sources: Any) -> None:
    """A setting given under several names (`top_k` and `topK`, at the top and in
    providerArgs) must have one value: a rule across fields, which the document states in
    words only. A valid request keeps it: every later spelling takes the first one's value
    (of the same type, so the request stays valid)."""
    chosen: dict[str, Any] = {}
    for source in sources:
        if not isinstance(source, dict):
            continue
        for key, value in source.items():
            name = SETTING_OF.get(key)
            if name is None or value is None:
                continue
            if name in chosen:
                source[key] = chosen[name]
            else:
                chosen[name] = value


def _fast_mock(container: dict[str, Any]) -> None:
    """`providerArgs` that make the mock answer at once and never inject a failure."""
    args = container.setdefault("providerArgs", {})
    if isinstance(args, dict):
        for name in MOCK_FAILURE_ARGS:
            args.pop(name, None)
        args["delayMs"] = 0


# -- hand-written hostile requests ---------------------------------------------------------------


@dataclass(frozen=True)
class Shape:
    """A valid request of one operation and the body fields worth breaking."""

    body: dict[str, Any]
    fields: tuple[str, ...]


KLAI_STREAM_FIELDS = (
    "apiKey",
    "channels",
    "channels.0",
    "actionName",
    "payload",
    "payload.provider",
    "payload.apiKey",
    "payload.stream",
    "payload.model",
    "payload.messages",
    "payload.messages.0",
    "payload.messages.0.role",
    "payload.messages.0.content",
    "payload.messages.0.name",
    "payload.providerArgs",
    "payload.providerArgs.text",
    "payload.providerArgs.toolCalls",
    "payload.tools",
    "payload.toolChoice",
    "payload.generationConfig",
    "options",
    "options.flushIntervalMs",
    "extra",
)
ASSISTANT = {
    "name": "Fuzz",
    "instructions": "Be brief.",
    "provider": "mock",
    "model": "echo",
    "tools": [{"type": "function", "function": {"name": "lookup"}}],
    "providerArgs": {"delayMs": 0},
}
ASSISTANT_FIELDS = (
    "apiKey",
    "name",
    "instructions",
    "provider",
    "model",
    "tools",
    "tools.0",
    "providerArgs",
    "extra",
)
SHAPES: dict[str, Shape] = {
    "health": Shape({}, ()),
    "listModels": Shape({}, ()),
    "mintChannelToken": Shape(
        {"channels": ["fuzz-token"], "ttl": 60},
        ("apiKey", "channels", "channels.0", "ttl", "extra"),
    ),
    "chatStream": Shape(mock_request(["fuzz-http"]), KLAI_STREAM_FIELDS),
    "llmQuery": Shape(mock_request(["fuzz-http"]), KLAI_STREAM_FIELDS),
    "llmQueryStop": Shape({"streamId": "st_nope"}, ("apiKey", "streamId", "token", "extra")),
    # CORS preflights carry no body: hostile headers and bodies still must not break them.
    "llmQueryStopPreflight": Shape({}, ()),
    "llmToolResponsePreflight": Shape({}, ()),
    "llmToolResponse": Shape(
        {"toolCallId": "tc_nope", "success": True, "message": "fuzz"},
        ("toolCallId", "success", "message", "data", "answerId", "token", "apiKey", "extra"),
    ),
    "messageSend": Shape(
        {"channels": ["fuzz-http"], "actionName": "onFuzz", "message": {"text": "fuzz"}},
        ("apiKey", "channels", "channels.0", "actionName", "message", "extra"),
    ),
    "assistantsStream": Shape(
        mock_request(["fuzz-http"]),
        (*KLAI_STREAM_FIELDS, "payload.thread_id", "payload.instructions", "payload.assistant_id"),
    ),
    "createAssistant": Shape(ASSISTANT, ASSISTANT_FIELDS),
    "replaceAssistant": Shape(ASSISTANT, ASSISTANT_FIELDS),
    # No body: the assistant's id is in the path (PATH_PARAMETERS), the page in the query.
    "listAssistants": Shape({}, ()),
    "getAssistant": Shape({}, ()),
    "deleteAssistant": Shape({}, ()),
    "assistantsStop": Shape(
        {"threadId": "thread_fuzzNobodyHas1", "runId": "run_fuzzNobodyHas1"},
        ("apiKey", "threadId", "runId", "extra"),
    ),
    # No body: the thread's id is in the path (PATH_PARAMETERS).
    "threadMessages": Shape({}, ()),
    "deleteThread": Shape({}, ()),
    "createChatCompletion": Shape(
        {
            "model": "mock/echo",
            "messages": [{"role": "user", "content": "hello fuzz"}],
            "providerArgs": {"delayMs": 0},
        },
        (
            "model",
            "messages",
            "messages.0",
            "messages.0.content",
            "messages.0.role",
            "stream",
            "stream_options",
            "stream_options.include_usage",
            "tools",
            "tool_choice",
            "channels",
            "channels.0",
            "actionName",
            "temperature",
            "max_tokens",
            "stop",
            "n",
            "providerArgs",
            "providerArgs.text",
        ),
    ),
}
# Path parameters of the hand-written requests: a well-formed id no app has.
PATH_PARAMETERS: dict[str, dict[str, str]] = {
    "threadMessages": {"thread_id": "thread_fuzzNobodyHas1"},
    "deleteThread": {"thread_id": "thread_fuzzNobodyHas1"},
    "getAssistant": {"assistant_id": "asst_fuzzNobodyHas1"},
    "replaceAssistant": {"assistant_id": "asst_fuzzNobodyHas1"},
    "deleteAssistant": {"assistant_id": "asst_fuzzNobodyHas1"},
}
# Raw bodies no JSON encoder writes. Each must be refused (400/413), never crash a route.
RAW_BODIES = [
    b"",
    b"{",
    b"null",
    b"[]",
    b'"a string"',
    b"1e999",
    b"NaN",
    b"\xef\xbb\xbf{}",
    b"\xff\xfe{\x00}\x00",
    b'{"a": "\xed\xa0\x80"}',  # a surrogate encoded as UTF-8 bytes: invalid UTF-8
    b'{"a": 1, "a": 2}',
    b'{"channels": [' + b"9" * 5000 + b"]}",  # an integer over Python's 4300-digit limit
    b"x" * (1024 * 1024 + 1),
]


@dataclass(frozen=True, repr=False)
class Hostile:
    """One hostile request: the body bytes and the headers to send."""

    body: bytes
    headers: dict[str, str | bytes]
    description: str

    def __repr__(self) -> str:  # what a failure report shows: the change, not 1 MiB of bytes
        return f"Hostile({self.description})"


def set_field(body: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of `body` with the field at `path` (dots; digits index lists) set to `value`."""
    copy: dict[str, Any] = json.loads(json.dumps(body))
    *parents, last = path.split(".")
    node: Any = copy
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return copy


def header_values() -> st.SearchStrategy[str | bytes]:
    """Header values HTTP allows: visible ASCII, Latin-1, or UTF-8 bytes (obs-text)."""
    visible = st.characters(min_codepoint=0x21, max_codepoint=0x7E)
    return st.one_of(
        st.text(visible, min_size=1, max_size=30),
        st.text(st.characters(min_codepoint=0xA1, max_codepoint=0xFF), min_size=1, max_size=10),
        st.text(st.characters(categories=["L", "N", "So"]), min_size=1, max_size=10).map(
            lambda text: text.encode("utf-8")
        ),
    )


def hostile_requests(operation_id: str) -> st.SearchStrategy[Hostile]:
    """A valid body with one field broken, a raw body no encoder writes, a body nested far too
    deep, or the valid body with an odd header value."""
    shape = SHAPES[operation_id]
    encoded = encode(shape.body).encode()
    raw = st.sampled_from(RAW_BODIES).map(
        lambda body: Hostile(body, {}, f"raw body {body[:40]!r} ({len(body)} bytes)")
    )
    whole = st.builds(Deep, st.integers(64, 200_000), st.sampled_from(["[", "{"])).map(
        lambda deep: Hostile(deep.text().encode(), {}, f"body nested {deep.depth} deep")
    )
    headers = st.tuples(
        st.sampled_from(["Accept", "X-Action-Name", "X-Channels", "Content-Type", "x-api-key"]),
        header_values(),
    ).map(
        lambda header: Hostile(
            encoded, {header[0]: header[1]}, f"header {header[0]}: {header[1]!r}"[:120]
        )
    )
    if not shape.fields:
        return st.one_of(raw, whole, headers)
    return st.one_of(broken_fields(shape), raw, whole, headers)


def broken_fields(shape: Shape) -> st.SearchStrategy[Hostile]:
    """The valid body with one field set to a hostile value (or added, for `extra`)."""
    return st.tuples(st.sampled_from(shape.fields), hostile_values()).map(
        lambda change: Hostile(
            encode(set_field(shape.body, *change)).encode(),
            {},
            f"{change[0]} = {_describe(change[1])}",
        )
    )


def _describe(value: Any) -> str:
    if isinstance(value, Deep):
        return f"{value.kind}x{value.depth}"
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:60]}... ({len(text)} chars)"


# -- requests no route serves --------------------------------------------------------------------


def unrouted_requests() -> st.SearchStrategy[tuple[str, str]]:
    """(method, path): a wrong method on a documented path, or a path nothing serves (the
    local stack's own demo routes `/`, `/demo/*` and `/web/*` are left out: never deployed)."""
    documented: dict[str, set[str]] = {}
    for op in OPERATIONS.values():
        documented.setdefault(op.path, set()).add(op.method.upper())
    wrong_method = st.tuples(
        st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]),
        st.sampled_from(sorted(documented)),
    ).filter(lambda request: request[0] not in documented[request[1]])
    unknown_path = st.tuples(
        st.sampled_from(["GET", "POST", "DELETE"]),
        # Segments start with a letter or digit: a client folds `.` and `..` away.
        st.from_regex(r"\A(/[a-zA-Z0-9][a-zA-Z0-9_.~-]{0,11}){1,4}\Z").filter(
            lambda path: path not in documented and not path.startswith(("/web", "/demo"))
        ),
    )
    internal = st.just(("POST", "/events"))  # Lambda-only self-invocations: 404 elsewhere
    return st.one_of(wrong_method, unknown_path, internal)
