"""The connections function on real-shaped API Gateway WebSocket events, over moto's DynamoDB."""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from moto import mock_aws

from devstack.gateway import LambdaContext
from devstack.stack import load_function_module
from devstack.template import create_table
from streaming_proxy import aws
from streaming_proxy.auth import AppRegistry
from streaming_proxy.channels.session import ConnectionRoutes
from streaming_proxy.config import AppConfig, get_settings
from streaming_proxy.errors import DeliveryRejected, PayloadTooLarge
from streaming_proxy.streams import StreamRecord, StreamStatus, StreamStore
from streaming_proxy.tablekeys import conn_key, tool_key
from streaming_proxy.toolcalls import ToolCallRecord, ToolCallStore
from streaming_proxy.tools.answers import accept_answer

ROOT = Path(__file__).resolve().parents[2]
EVENTS = ROOT / "events"
TABLE = "streaming-proxy-test"
SECRET = "unit-test-token-secret-0123456789"
APPS = {"app1": {"keySha256": "0" * 64, "tokenSecret": SECRET}}
CID = "Ld4Zq3xwoAMCJkQ="  # the connection id of every events/ws-*.json


APP = load_function_module("connections")


class Replies:
    """A recording reply poster: moto cannot prove what a connection received."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, connection_id: str, message: dict[str, Any]) -> bool:
        self.sent.append((connection_id, message))
        return True

    def only(self, to: str = CID) -> dict[str, Any]:
        assert len(self.sent) == 1, self.sent
        connection_id, message = self.sent[0]
        assert connection_id == to
        return message


@dataclass
class Stack:
    db: Any
    replies: Replies
    invoke: Callable[[dict[str, Any]], dict[str, Any]]
    registry: AppRegistry

    def token(self, *channels: str, ttl: int = 600, now: float | None = None) -> str:
        app = self.registry.get("app1")
        assert app
        return self.registry.mint_token(app, channels, ttl, now=now)[0]

    def rows(self) -> list[tuple[str, str]]:
        items = self.db.scan(TableName=TABLE)["Items"]
        return sorted((item["pk"]["S"], item["sk"]["S"]) for item in items)

    def connect(self, *channels: str, connection_id: str = CID) -> dict[str, Any]:
        event = connect_event(self.token(*channels))
        event["requestContext"]["connectionId"] = connection_id
        return self.invoke(event)

    def send(self, body: dict[str, Any] | str, connection_id: str = CID) -> dict[str, Any]:
        self.replies.sent.clear()
        text = body if isinstance(body, str) else json.dumps(body)
        event = load_event("ws-ping.json")
        event["body"] = text
        event["requestContext"]["connectionId"] = connection_id
        self.invoke(event)
        return self.replies.only(connection_id)


def load_event(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((EVENTS / name).read_text())
    return data


def connect_event(token: str) -> dict[str, Any]:
    event = load_event("ws-connect.json")
    event["queryStringParameters"]["token"] = token
    event["multiValueQueryStringParameters"]["token"] = [token]
    return event


def clear_caches() -> None:
    get_settings.cache_clear()
    aws.dynamodb.cache_clear()
    aws.management_api.cache_clear()
    APP.default_routes.cache_clear()


@pytest.fixture
def stack(monkeypatch: pytest.MonkeyPatch) -> Iterator[Stack]:
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
        "TABLE_NAME": TABLE,
        "APPS": json.dumps(APPS),
        "WS_MANAGEMENT_ENDPOINT": "https://a1b2c3d4e5.execute-api.us-east-1.amazonaws.com/dev",
        "ALLOWED_ORIGINS": "*",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("DYNAMODB_ENDPOINT_URL", raising=False)
    clear_caches()
    with mock_aws():
        db = boto3.client("dynamodb", region_name="us-east-1")
        create_table(db, TABLE)
        replies = Replies()
        routes = ConnectionRoutes.from_settings(get_settings(), reply=replies)
        handler = APP.make_handler(lambda: routes)
        yield Stack(
            db=db,
            replies=replies,
            invoke=lambda event: handler(copy.deepcopy(event), LambdaContext()),
            registry=AppRegistry.from_settings(get_settings()),
        )
    clear_caches()


def membership(*channels: str, app: str = "app1") -> list[tuple[str, str]]:
    rows = [("CONN#" + CID, "META")]
    for channel in channels:
        scoped = f"CHANNEL#{app}#{channel}"
        rows += [(scoped, "CONN#" + CID), ("CONN#" + CID, scoped)]
    return sorted(rows)


# --- $connect -------------------------------------------------------------------------------


def test_connect_with_valid_token_joins_token_channels_and_private_channel(stack: Stack) -> None:
    assert stack.connect("user-42", "team-7") == {"statusCode": 200}
    assert stack.rows() == membership("user-42", "team-7", f"tab|{CID}")


def test_connect_without_token_is_401_and_stores_nothing(stack: Stack) -> None:
    answer = stack.invoke(load_event("ws-connect-no-token.json"))
    assert answer["statusCode"] == 401
    assert json.loads(answer["body"])["error"]["type"] == "unauthorized"
    assert stack.rows() == []


def test_connect_with_expired_token_is_401(stack: Stack) -> None:
    token = stack.token("user-42", ttl=60, now=time.time() - 3600)
    assert stack.invoke(connect_event(token))["statusCode"] == 401
    assert stack.rows() == []


def test_connect_with_tampered_token_is_403(stack: Stack) -> None:
    header, payload, signature = stack.token("user-42").split(".")
    forged = f"{header}.{payload}.{signature[:-4]}AAAA"
    assert stack.invoke(connect_event(forged))["statusCode"] == 403
    assert stack.rows() == []


def test_connect_with_token_of_unknown_app_is_403(stack: Stack) -> None:
    stranger = AppRegistry({"ghost": AppConfig(key_sha256="1" * 64, token_secret=SECRET)})
    app = stranger.get("ghost")
    assert app
    token, _ = stranger.mint_token(app, ["user-42"], 600)
    assert stack.invoke(connect_event(token))["statusCode"] == 403
    assert stack.rows() == []


def test_connect_from_origin_not_allowed_is_403(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ALLOWED_ORIGINS", "https://other.example.com")
    get_settings.cache_clear()
    routes = ConnectionRoutes.from_settings(get_settings(), reply=stack.replies)
    event = connect_event(stack.token("user-42"))
    assert APP.make_handler(lambda: routes)(event, LambdaContext())["statusCode"] == 403
    event["headers"]["Origin"] = "https://other.example.com"
    assert APP.make_handler(lambda: routes)(event, LambdaContext())["statusCode"] == 200


# --- $disconnect ----------------------------------------------------------------------------


def test_disconnect_leaves_no_rows(stack: Stack) -> None:
    stack.connect("user-42", "team-7")
    stack.send({"action": "subscribe", "channel": "late", "token": stack.token("late")})
    assert stack.invoke(load_event("ws-disconnect.json")) == {"statusCode": 200}
    assert stack.rows() == []


# --- $default: subscribe / unsubscribe / ping -----------------------------------------------


def test_subscribe_event_with_covering_token_adds_channel(stack: Stack) -> None:
    stack.connect("user-42")
    event = load_event("ws-subscribe.json")
    body = json.loads(event["body"])
    event["body"] = json.dumps({**body, "token": stack.token("team-7"), "channel": "team-7"})
    assert stack.invoke(event) == {"statusCode": 200}
    assert stack.replies.only() == {"type": "subscribed", "channel": "team-7"}
    assert stack.rows() == membership("user-42", "team-7", f"tab|{CID}")


def test_subscribe_reads_the_connection_once_and_its_rows_expire_with_it(stack: Stack) -> None:
    stack.connect("user-42")
    db = aws.dynamodb("us-east-1", None)
    reads: list[dict[str, Any]] = []

    def count(params: dict[str, Any], **_: Any) -> None:
        reads.append(params)

    db.meta.events.register("provide-client-params.dynamodb.GetItem", count)
    try:
        reply = stack.send({"action": "subscribe", "channel": "t7", "token": stack.token("t7")})
    finally:
        db.meta.events.unregister("provide-client-params.dynamodb.GetItem", count)
    assert reply == {"type": "subscribed", "channel": "t7"}
    assert [(r["Key"], r.get("ConsistentRead")) for r in reads] == [(conn_key(CID), True)]
    items = stack.db.scan(TableName=TABLE)["Items"]
    expiry = {item["expiresAt"]["N"] for item in items if item["sk"]["S"] != "META"}
    meta = stack.db.get_item(TableName=TABLE, Key=conn_key(CID))["Item"]
    assert expiry == {meta["expiresAt"]["N"]}


def test_subscribe_to_channel_the_token_does_not_cover_is_refused(stack: Stack) -> None:
    stack.connect("channel-a")
    reply = stack.send({"action": "subscribe", "channel": "channel-b", "token": stack.token("a")})
    assert reply["type"] == "error"
    assert reply["error"]["type"] == "forbidden"
    assert ("CHANNEL#channel-b", "CONN#" + CID) not in stack.rows()


def test_subscribe_without_or_with_expired_token_is_unauthorized(stack: Stack) -> None:
    stack.connect("user-42")
    missing = stack.send({"action": "subscribe", "channel": "team-7"})
    assert missing["error"]["type"] == "unauthorized"
    old = stack.token("team-7", ttl=60, now=time.time() - 3600)
    expired = stack.send({"action": "subscribe", "channel": "team-7", "token": old})
    assert expired["error"]["type"] == "unauthorized"
    assert stack.rows() == membership("user-42", f"tab|{CID}")


def test_subscribe_from_unknown_connection_is_forbidden(stack: Stack) -> None:
    reply = stack.send({"action": "subscribe", "channel": "x", "token": stack.token("x")})
    assert reply["error"]["type"] == "forbidden"
    assert stack.rows() == []


def test_unsubscribe_leaves_channel_but_never_the_private_one(stack: Stack) -> None:
    stack.connect("user-42", "team-7")
    assert stack.send({"action": "unsubscribe", "channel": "team-7"}) == {
        "type": "unsubscribed",
        "channel": "team-7",
    }
    refused = stack.send({"action": "unsubscribe", "channel": f"tab|{CID}"})
    assert refused["error"]["type"] == "forbidden"
    assert stack.rows() == membership("user-42", f"tab|{CID}")


def test_ping_event_gets_pong_echoing_id(stack: Stack) -> None:
    stack.invoke(load_event("ws-ping.json"))
    assert stack.replies.only() == {"type": "pong", "connectionId": CID, "id": "p1"}


@pytest.mark.parametrize("ping_id", ["a" * 257, 2**53, -(2**53)])
def test_a_ping_id_too_long_to_echo_is_refused(stack: Stack, ping_id: object) -> None:
    # Echoed whole, a 128 KB id made a pong over the gateway's message limit: the post was
    # refused and the route failed (the page got API Gateway's own error, no reply).
    reply = stack.send({"action": "ping", "id": ping_id})
    assert reply["type"] == "error" and reply["error"]["type"] == "invalid_request"
    assert reply["error"]["fields"][0]["field"].startswith("id")
    assert stack.send({"action": "ping", "id": "a" * 256})["id"] == "a" * 256
    assert stack.send({"action": "ping", "id": 2**53 - 1})["id"] == 2**53 - 1


# --- $default: malformed input --------------------------------------------------------------


@pytest.mark.parametrize(
    ("event_name", "code"),
    [("ws-malformed.json", "bad_request"), ("ws-unknown-action.json", "bad_request")],
)
def test_bad_messages_get_error_reply_not_exception(
    stack: Stack, event_name: str, code: str
) -> None:
    assert stack.invoke(load_event(event_name)) == {"statusCode": 200}
    reply = stack.replies.only()
    assert reply["type"] == "error"
    assert reply["error"]["type"] == code
    assert reply["error"]["message"]


def test_a_message_event_without_a_body_gets_an_error_reply(stack: Stack) -> None:
    # API Gateway leaves `body` out of a frame with no text: the route still answers.
    event = load_event("ws-ping.json")
    del event["body"]
    assert stack.invoke(event) == {"statusCode": 200}
    reply = stack.replies.only()
    assert reply["type"] == "error" and reply["error"]["type"] == "bad_request"


@pytest.mark.parametrize(
    "body",
    [
        "[1, 2]",
        '"ping"',
        "",
        json.dumps({"channel": "x"}),
        json.dumps({"action": "subscribe"}),
        json.dumps({"action": "subscribe", "channel": 42, "token": "t"}),
        json.dumps({"action": "stop"}),
        json.dumps({"action": "resume", "streamId": "st_1", "afterSeq": "x"}),
        json.dumps({"action": "llmToolCallResponse", "toolCallId": "c1", "success": "yes"}),
    ],
)
def test_invalid_messages_get_error_reply(stack: Stack, body: str) -> None:
    reply = stack.send(body)
    assert reply["type"] == "error"
    assert reply["error"]["type"] in ("bad_request", "invalid_request")
    assert reply["error"]["code"] == 400 and isinstance(reply["error"]["details"], str)


def test_an_invalid_field_is_named_in_the_action_error(stack: Stack) -> None:
    reply = stack.send(json.dumps({"action": "resume", "streamId": "st_1", "afterSeq": "x"}))
    # The same error object as the HTTP answers: Klai's types plus `type` and `fields`.
    error = reply["error"]
    assert error["type"] == "invalid_request" and error["code"] == 400
    assert [p["field"] for p in error["fields"]] == ["afterSeq"]
    assert error["details"].startswith("afterSeq: ")
    unknown = stack.send(json.dumps({"action": "dance"}))["error"]
    assert unknown["type"] == "bad_request" and "subscribe" in unknown["details"]
    assert "fields" not in unknown


# --- $default: stop / resume ----------------------------------------------------------------


def make_stream(
    stream_id: str,
    channels: list[str],
    text: str = "Hello",
    app: str = "app1",
    status: StreamStatus = "done",
) -> None:
    store = StreamStore(aws.dynamodb("us-east-1", None), TABLE)
    store.create(StreamRecord(stream_id, app, "onLlmMessage", channels))
    if status == "streaming":
        store.mark_started(stream_id)
        store.save_progress(stream_id, text, 7)
        return
    store.save_final(
        stream_id,
        text,
        7,
        status,
        finish_reason="stop",
        usage={"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5, "estimated": False},
    )


def cancel_flag(stream_id: str) -> bool:
    return StreamStore(aws.dynamodb("us-east-1", None), TABLE).poll(stream_id).cancel


def test_stop_event_on_shared_channel_cancels_stream(stack: Stack) -> None:
    stack.connect("user-42")
    make_stream("st_demo0000000000000000", ["other", "user-42"], status="streaming")
    stack.invoke(load_event("ws-stop.json"))
    assert stack.replies.only() == {
        "type": "stopped",
        "streamId": "st_demo0000000000000000",
        "streamStatus": "streaming",
    }
    assert cancel_flag("st_demo0000000000000000")


def test_stop_of_a_finished_stream_answers_gracefully_and_changes_nothing(stack: Stack) -> None:
    stack.connect("user-42")
    make_stream("st_ended", ["user-42"], status="done")
    reply = stack.send({"action": "stop", "streamId": "st_ended"})
    assert reply == {"type": "stopped", "streamId": "st_ended", "streamStatus": "done"}
    assert not cancel_flag("st_ended")


def test_stop_on_foreign_channel_is_forbidden_and_cancels_nothing(stack: Stack) -> None:
    stack.connect("user-42")
    make_stream("st_x", ["user-99"])
    reply = stack.send({"action": "stop", "streamId": "st_x"})
    assert reply["error"]["type"] == "forbidden"
    assert not cancel_flag("st_x")


def test_another_apps_stream_on_the_same_channel_name_does_not_exist_for_a_connection(
    stack: Stack,
) -> None:
    stack.connect("user-42")
    make_stream("st_other_app", ["user-42"], app="app2", status="streaming")
    for action in ("stop", "resume"):
        reply = stack.send({"action": action, "streamId": "st_other_app"})
        assert reply == {"type": "not_found", "streamId": "st_other_app"}
    assert not cancel_flag("st_other_app")


def test_stop_and_resume_of_unknown_stream_are_not_found(stack: Stack) -> None:
    stack.connect("user-42")
    assert stack.send({"action": "stop", "streamId": "st_nope"}) == {
        "type": "not_found",
        "streamId": "st_nope",
    }
    assert stack.send({"action": "resume", "streamId": "st_nope", "afterSeq": 3}) == {
        "type": "not_found",
        "streamId": "st_nope",
    }


def test_resume_on_shared_channel_sends_snapshot(stack: Stack) -> None:
    stack.connect("user-42")
    make_stream("st_r", ["elsewhere", "user-42"], text="Hello, wörld 👋")
    assert stack.send({"action": "resume", "streamId": "st_r", "afterSeq": 2}) == {
        "type": "snapshot",
        "actionName": "onLlmMessage",
        "channel": "user-42",
        "streamId": "st_r",
        "seq": 7,
        "content": "Hello, wörld 👋",
        "status": "done",
        "finish_reason": "stop",
        "usage": {
            "prompt_tokens": 3,
            "completion_tokens": 2,
            "total_tokens": 5,
            "estimated": False,
        },
    }


def test_resume_on_foreign_channel_is_forbidden(stack: Stack) -> None:
    stack.connect("user-42")
    make_stream("st_f", ["user-99"])
    reply = stack.send({"action": "resume", "streamId": "st_f", "afterSeq": -1})
    assert reply["error"]["type"] == "forbidden"


def test_large_snapshot_is_split_on_character_boundaries(stack: Stack) -> None:
    stack.connect("user-42")
    # Two-, three- and four-byte characters plus quotes that JSON escapes: ~290 KB.
    text = ('é€👋"\n' * 20_000)[:100_000]
    make_stream("st_big", ["user-42"], text=text)
    stack.replies.sent.clear()
    stack.invoke(
        {
            **load_event("ws-ping.json"),
            "body": json.dumps({"action": "resume", "streamId": "st_big"}),
        }
    )
    parts = [message for _, message in stack.replies.sent]
    assert len(parts) >= 3
    for i, part in enumerate(parts):
        encoded = json.dumps(part, ensure_ascii=False, separators=(",", ":")).encode()
        assert len(encoded) <= 120_000
        assert (part["type"], part["seq"], part["part"], part["parts"]) == (
            "snapshot",
            7,
            i,
            len(parts),
        )
    assert "".join(part["content"] for part in parts) == text


# --- $default: tool call responses ----------------------------------------------------------


def open_call(call_id: str, channels: list[str], app: str = "app1") -> ToolCallStore:
    store = ToolCallStore(aws.dynamodb("us-east-1", None), TABLE)
    store.open([ToolCallRecord(app, call_id, "st_tools", "ui_pick", channels)])
    return store


def tool_answer(call_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "action": "llmToolCallResponse",
        "toolCallId": call_id,
        "success": True,
        "message": "done",
        **extra,
    }


def test_a_tool_answer_is_recorded_once_with_its_extra_keys(stack: Stack) -> None:
    stack.connect("user-42")
    store = open_call("tc_1", ["user-42"])
    body = tool_answer("tc_1", data={"rows": [1, 2]}, colour="red")
    assert stack.send(body) == {"type": "ack", "toolCallId": "tc_1"}
    record = store.get("app1", "tc_1")
    assert record is not None and record.status == "answered"
    assert record.answer == {
        "toolCallId": "tc_1",
        "success": True,
        "message": "done",
        "data": {"rows": [1, 2]},
        "colour": "red",  # Klai keeps keys it does not know; so do we
    }
    assert record.answered_by == CID
    # The same tab repeating its answer (its ack was lost) is acked again.
    assert stack.send(body) == {"type": "ack", "toolCallId": "tc_1"}
    # Another tab with the very same answer ran the tool too: it is told it lost the race.
    stack.connect("user-42", connection_id="OtherTab000=")
    same = stack.send(body, "OtherTab000=")
    assert same["type"] == "error" and same["error"]["type"] == "conflict"
    # A different answer is told the call was answered already.
    again = stack.send({**body, "message": "again"})
    assert again["type"] == "error" and again["error"]["type"] == "conflict"
    record = store.get("app1", "tc_1")
    assert record is not None and record.answer is not None
    assert record.answer["message"] == "done"


def test_a_tab_resending_its_answer_after_a_reconnect_is_known_by_its_answer_id(
    stack: Stack,
) -> None:
    stack.connect("user-42")
    store = open_call("tc_2", ["user-42"])
    body = tool_answer("tc_2", answerId="a-7f3e")
    assert stack.send(body) == {"type": "ack", "toolCallId": "tc_2"}
    # The ack was lost; the tab reconnects (a new connection id) and sends the same message.
    stack.connect("user-42", connection_id="Reconnected0=")
    assert stack.send(body, "Reconnected0=") == {"type": "ack", "toolCallId": "tc_2"}
    # Another tab, with its own answer id, loses the race even with the same answer.
    other = stack.send({**body, "answerId": "b-91c2"}, "Reconnected0=")
    assert other["type"] == "error" and other["error"]["type"] == "conflict"
    record = store.get("app1", "tc_2")
    assert record is not None and record.answer is not None
    assert "answerId" not in record.answer  # the sender's id is not the model's business


@pytest.mark.parametrize(
    ("call_channels", "app", "code"),
    [
        (["user-99"], "app1", "forbidden"),  # a stream on channels this tab is not in
        (["user-42"], "app2", "not_found"),  # another app's call with the same id
    ],
)
def test_a_tool_answer_from_outside_the_streams_channels_or_app_is_refused(
    stack: Stack, call_channels: list[str], app: str, code: str
) -> None:
    stack.connect("user-42")
    store = open_call("tc_2", call_channels, app=app)
    reply = stack.send(tool_answer("tc_2"))
    assert reply["type"] == "error" and reply["error"]["type"] == code
    record = store.get(app, "tc_2")
    assert record is not None and record.status == "waiting"


def test_an_answer_to_no_waiting_call_or_too_large_is_refused(stack: Stack) -> None:
    """70 KB reaches `$default` only from a client that fragments (API Gateway takes up to
    128 KB in frames of 32 KB); a browser's one-frame message over 32 KB closes the
    connection before the handler (tests/integration/test_gateway_limits.py)."""
    stack.connect("user-42")
    assert stack.send(tool_answer("tc_unknown"))["error"]["type"] == "not_found"
    open_call("tc_big", ["user-42"])
    reply = stack.send(tool_answer("tc_big", data="x" * 70_000))
    assert reply["type"] == "error" and reply["error"]["type"] == "payload_too_large"


def test_the_answer_limit_counts_the_answer_as_compact_json(stack: Stack) -> None:
    # Measured with `json.dumps`' default ", " and ": ", an answer of exactly 64 KB as
    # compact JSON was refused as 8 bytes over.
    answer: dict[str, Any] = {"success": True, "message": "done", "data": {"a": 1, "b": ""}}
    room = 65_536 - len(json.dumps(answer, separators=(",", ":")).encode())
    answer["data"]["b"] = "x" * room
    store = open_call("tc_edge", ["user-42"])
    accept_answer(store, "app1", "tc_edge", answer, channels=None, by="k", max_bytes=65_536)
    answer["data"]["b"] += "x"
    store = open_call("tc_over", ["user-42"])
    with pytest.raises(PayloadTooLarge):
        accept_answer(store, "app1", "tc_over", answer, channels=None, by="k", max_bytes=65_536)


def outage(at: str) -> Stubber:
    """A stubbed table that answers the route's calls as the real one would, until `at`
    fails (throttled past botocore's retries)."""
    db = aws.dynamodb("us-east-1", None)
    meta = db.get_item(TableName=TABLE, Key=conn_key(CID), ConsistentRead=True)
    joined = db.query(
        TableName=TABLE,
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": "CONN#" + CID}},
        ProjectionExpression="pk, sk",
    )
    call = db.get_item(TableName=TABLE, Key=tool_key("app1", "tc_out"), ConsistentRead=True)
    stub = Stubber(db)
    answers: list[tuple[str, Any]] = [
        ("get_item", meta),  # the connection's app
        ("query", joined),  # its channels
        ("get_item", call),  # the waiting call
        ("update_item", None),  # the answer
    ]
    for operation, answer in answers:
        if operation == at:
            stub.add_client_error(
                operation, "ProvisionedThroughputExceededException", http_status_code=400
            )
            return stub
        answer.pop("ResponseMetadata")
        stub.add_response(operation, answer)
    raise AssertionError(f"no {at} on the route")


@pytest.mark.parametrize("at", ["get_item", "update_item"], ids=["read", "answer-write"])
def test_a_tool_answer_during_a_dynamodb_outage_is_unavailable_then_acked_when_resent(
    stack: Stack, at: str
) -> None:
    """As over HTTP (503 dependency_unavailable): the page learns to send it again, which
    it does once the table answers, and the resent answer is taken."""
    stack.connect("user-42")
    store = open_call("tc_out", ["user-42"])
    with outage(at) as stub:
        reply = stack.send(tool_answer("tc_out"))
        stub.assert_no_pending_responses()
    assert reply["type"] == "error"
    assert reply["error"]["type"] == "dependency_unavailable"
    assert "ProvisionedThroughputExceededException" in reply["error"]["message"]
    record = store.get("app1", "tc_out")
    assert record is not None and record.status == "waiting"
    assert stack.send(tool_answer("tc_out")) == {"type": "ack", "toolCallId": "tc_out"}
    record = store.get("app1", "tc_out")
    assert record is not None and record.status == "answered" and record.answered_by == CID


# --- the default reply poster ---------------------------------------------------------------


def test_reply_to_gone_connection_removes_its_rows(stack: Stack) -> None:
    stack.connect("user-42")
    routes = ConnectionRoutes.from_settings(get_settings())  # management API reply
    client = aws.management_api("us-east-1", get_settings().ws_management_endpoint or "")
    with Stubber(client) as stub:
        stub.add_client_error("post_to_connection", "GoneException", http_status_code=410)
        routes.message(CID, json.dumps({"action": "ping"}))
        stub.assert_no_pending_responses()
    assert stack.rows() == []


def test_a_reply_the_api_refuses_is_told_as_an_action_error_and_fails_no_route(
    stack: Stack,
) -> None:
    class RefusesFirst(Replies):
        def __call__(self, connection_id: str, message: dict[str, Any]) -> bool:
            if not self.sent:
                self.sent.append((connection_id, {"refused": message}))
                raise DeliveryRejected("post refused: HTTP 413 PayloadTooLarge", status=413)
            return super().__call__(connection_id, message)

    stack.connect("user-42")
    replies = RefusesFirst()
    routes = ConnectionRoutes.from_settings(get_settings(), reply=replies)
    handler = APP.make_handler(lambda: routes)
    event = load_event("ws-ping.json")
    assert handler(event, LambdaContext()) == {"statusCode": 200}
    (_, refused), (_, told) = replies.sent
    assert refused == {"refused": {"type": "pong", "connectionId": CID, "id": "p1"}}
    assert told["type"] == "error" and told["error"]["code"] == 413
    assert told["request"] == {"action": "ping", "id": "p1"}


def test_a_snapshot_in_parts_stops_at_the_first_410(stack: Stack) -> None:
    stack.connect("user-42")
    make_stream("st_gone", ["user-42"], text="é€👋" * 40_000)  # ~360 KB: four parts or more
    routes = ConnectionRoutes.from_settings(get_settings())  # management API reply
    client = aws.management_api("us-east-1", get_settings().ws_management_endpoint or "")
    with Stubber(client) as stub:
        stub.add_response("post_to_connection", {})
        stub.add_client_error("post_to_connection", "GoneException", http_status_code=410)
        # Any further post would find no stubbed answer and fail the route.
        routes.message(CID, json.dumps({"action": "resume", "streamId": "st_gone"}))
        stub.assert_no_pending_responses()
    # The gone connection's rows are removed; the stream's record (and text) stays.
    assert {pk for pk, _ in stack.rows()} == {"STREAM#st_gone"}


def test_a_tool_answer_without_data_reaches_the_model_without_data(stack: Stack) -> None:
    stack.connect("user-42")
    store = open_call("tc_3", ["user-42"])
    assert stack.send(tool_answer("tc_3"))["type"] == "ack"
    record = store.get("app1", "tc_3")
    assert record is not None
    assert record.answer == {"toolCallId": "tc_3", "success": True, "message": "done"}
