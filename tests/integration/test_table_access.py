"""The table's guard rails in template.yaml: encrypted with the AWS owned key unless a KMS key
is given, and each function granted exactly the DynamoDB calls its code makes (no Scan, no
index), checked against the layer's source and against the calls the WebSocket routes send.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import botocore.session
import pytest
from botocore import xform_name
from moto import mock_aws

from devstack.template import create_table
from streaming_proxy import aws
from streaming_proxy.auth import AppRegistry
from streaming_proxy.channels.session import ConnectionRoutes
from streaming_proxy.config import get_settings
from streaming_proxy.streams import StreamRecord, StreamStore
from streaming_proxy.threads import RunStart, ThreadStore
from streaming_proxy.toolcalls import ToolCallRecord, ToolCallStore

from .template_data import conditions_used, parameter_default, props, resolve

ROOT = Path(__file__).resolve().parents[2]
LAYER = ROOT / "layers" / "core" / "streaming_proxy"


# --------------------------------------------------------------------------- encryption


def test_table_uses_the_aws_owned_key_unless_a_kms_key_is_given() -> None:
    sse = props("Table")["SSESpecification"]
    # SSEEnabled true without a key is the AWS *managed* key aws/dynamodb; false is AWS owned.
    assert resolve(sse, {"HasTableKmsKey": False}) == {"SSEEnabled": False}
    assert resolve(sse, {"HasTableKmsKey": True}) == {
        "SSEEnabled": True,
        "SSEType": "KMS",
        "KMSMasterKeyId": {"Ref": "TableKmsKeyArn"},
    }
    assert parameter_default("TableKmsKeyArn") == ""


FUNCTIONS = ["StreamFunction", "RelayFunction", "ConnectionsFunction", "DeadLetterFunction"]


@pytest.mark.parametrize("function", FUNCTIONS)
def test_kms_access_only_with_a_key_and_only_through_dynamodb(function: str) -> None:
    policies = props(function)["Policies"]
    without = json.dumps(resolve(policies, {c: False for c in conditions_used(policies)}))
    assert "kms:" not in without
    with_key = resolve(policies, {c: c == "HasTableKmsKey" for c in conditions_used(policies)})
    (statement,) = [s for p in with_key for s in p["Statement"] if "kms:Decrypt" in s["Action"]]
    assert statement["Resource"] == {"Ref": "TableKmsKeyArn"}
    assert "kms:ViaService" in statement["Condition"]["StringEquals"]


# --------------------------------------------------------------------------- table policy


def table_actions(function: str) -> set[str]:
    """DynamoDB actions granted to a function's role (any condition branch), on the table."""
    policies = props(function)["Policies"]
    assert not any(isinstance(p, dict) and "DynamoDBCrudPolicy" in p for p in policies)
    found: set[str] = set()
    for policy in policies:
        for branch in (True, False):
            chosen = resolve(policy, {c: branch for c in conditions_used(policy)})
            if not isinstance(chosen, dict):
                continue
            for statement in chosen.get("Statement", []):
                actions = statement["Action"]
                actions = [actions] if isinstance(actions, str) else actions
                dynamodb = {a for a in actions if a.startswith("dynamodb:")}
                if dynamodb:
                    assert statement["Resource"] == {"Fn::GetAtt": ["Table", "Arn"]}, (
                        "table actions only on the table itself (no index, no wildcard)"
                    )
                found |= dynamodb
    return found


def dynamodb_operations() -> dict[str, str]:
    """boto3 method name -> DynamoDB API operation (get_item -> GetItem)."""
    model = botocore.session.get_session().get_service_model("dynamodb")
    return {xform_name(name): name for name in model.operation_names}


# IAM has no action for a transaction: each of its items is authorised as the operation it
# runs (AWS: "Using IAM with DynamoDB transactions").
TRANSACTION_ITEMS = {
    "Put": "PutItem",
    "Update": "UpdateItem",
    "Delete": "DeleteItem",
    "ConditionCheck": "ConditionCheckItem",
}
TRANSACTIONS = {"TransactWriteItems", "TransactGetItems"}


def layer_sources(leave_out: frozenset[str] = frozenset()) -> list[Path]:
    """The package's modules, but those whose paths (relative to it) are in `leave_out`."""
    return [p for p in LAYER.rglob("*.py") if p.relative_to(LAYER).as_posix() not in leave_out]


def operations_called_by_the_layer(leave_out: frozenset[str] = frozenset()) -> set[str]:
    """Every DynamoDB operation the streaming_proxy package calls on a client, by name."""
    methods = dynamodb_operations()
    called: set[str] = set()
    for path in layer_sources(leave_out):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            func = node.func if isinstance(node, ast.Call) else None
            if isinstance(func, ast.Attribute) and func.attr in methods:
                called.add(methods[func.attr])
    return called


def item_kinds_in_the_layer(leave_out: frozenset[str] = frozenset()) -> set[str]:
    """The operations the layer's transaction items run: every dict written with a `Put`,
    `Update`, `Delete` or `ConditionCheck` key (how a transaction item is spelled)."""
    kinds: set[str] = set()
    for path in layer_sources(leave_out):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Dict):
                for key in node.keys:
                    if isinstance(key, ast.Constant) and key.value in TRANSACTION_ITEMS:
                        kinds.add(TRANSACTION_ITEMS[key.value])
    return kinds


def iam_actions(operations: set[str], item_kinds: set[str]) -> set[str]:
    """What IAM must grant for these calls: transactions become their items' operations."""
    plain = operations - TRANSACTIONS
    if operations & TRANSACTIONS:
        plain |= item_kinds
    return {f"dynamodb:{op}" for op in plain}


def test_no_function_may_scan_or_use_an_index() -> None:
    for function in FUNCTIONS:
        granted = table_actions(function)
        assert "dynamodb:Scan" not in granted
        assert "dynamodb:*" not in granted


def test_stream_function_may_make_exactly_the_calls_the_code_makes() -> None:
    """The stream function runs the whole layer: its grant is every call the layer makes."""
    called = iam_actions(operations_called_by_the_layer(), item_kinds_in_the_layer())
    granted = table_actions("StreamFunction")
    assert granted == called, (
        f"grant {sorted(granted - called)} unused, {sorted(called - granted)} missing: "
        "update StreamFunction's TableItems statement in template.yaml"
    )


# Named assistants are kept by HTTP routes only: no detached relay creates or deletes one.
ASSISTANT_ROUTES = frozenset({"assistants.py", "api/assistants.py"})


def test_relay_function_may_make_the_calls_of_all_but_the_assistant_routes() -> None:
    """RelayFunction runs only detached relays (`/events`): its grant is every call the
    layer makes but those only the named assistants' routes make (DeleteItem)."""
    called = iam_actions(
        operations_called_by_the_layer(ASSISTANT_ROUTES), item_kinds_in_the_layer(ASSISTANT_ROUTES)
    )
    granted = table_actions("RelayFunction")
    assert granted == called, (
        f"grant {sorted(granted - called)} unused, {sorted(called - granted)} missing: "
        "update RelayFunction's TableItems statement in template.yaml"
    )
    assert granted < table_actions("StreamFunction")


APP_ID = "app1"
CONNECTION = "Ld4Zq3xwoAMCJkQ="
TABLE = "guard-rails"


Recorded = tuple[ConnectionRoutes, set[str], list[dict[str, Any]]]


@pytest.fixture
def recorded_routes(monkeypatch: pytest.MonkeyPatch) -> Iterator[Recorded]:
    """Connection routes over moto whose DynamoDB client records every operation it sends,
    with the replies they send to the browser."""
    secret = "guard-rails-token-secret-0123456789"
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
        "TABLE_NAME": TABLE,
        "APPS": json.dumps({APP_ID: {"keySha256": "0" * 64, "tokenSecret": secret}}),
        "ALLOWED_ORIGINS": "*",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("DYNAMODB_ENDPOINT_URL", raising=False)
    get_settings.cache_clear()
    aws.dynamodb.cache_clear()
    with mock_aws():
        create_table(boto3.client("dynamodb", region_name="us-east-1"), TABLE)
        operations: set[str] = set()
        client = aws.dynamodb("us-east-1", None)

        def record(model: Any, params: dict[str, Any], **_: Any) -> None:
            operations.add(model.name)
            for item in params.get("TransactItems", []):
                operations.update(TRANSACTION_ITEMS[kind] for kind in item)

        client.meta.events.register("before-call.dynamodb", record)
        replies: list[dict[str, Any]] = []

        def reply(_connection_id: str, message: dict[str, Any]) -> bool:
            replies.append(message)
            return True

        routes = ConnectionRoutes.from_settings(get_settings(), reply=reply)
        yield routes, operations, replies
    get_settings.cache_clear()
    aws.dynamodb.cache_clear()


def test_connections_function_may_make_exactly_the_calls_its_routes_make(
    recorded_routes: Recorded,
) -> None:
    routes, operations, replies = recorded_routes
    setup = boto3.client("dynamodb", region_name="us-east-1")  # not recorded
    StreamStore(setup, TABLE).create(StreamRecord("st_1", APP_ID, "onLlmMessage", ["ch"]))
    ToolCallStore(setup, TABLE).open([ToolCallRecord(APP_ID, "tc_1", "st_1", "ui_pick", ["ch"])])
    threads = ThreadStore(setup, TABLE)
    run = RunStart("thread_guardRails1", "run_guardRails1", "st_1", True, 2**31, 600, ("ch",))
    threads.start_run(APP_ID, run)
    threads.finish_run(APP_ID, run, [{"role": "user", "content": "hi"}], "done")
    registry = AppRegistry.from_settings(get_settings())
    app = registry.get(APP_ID)
    assert app is not None
    token = registry.mint_token(app, ["ch", "late"], 600)[0]

    routes.connect(CONNECTION, token, None)
    for message in (
        {"action": "subscribe", "channel": "late", "token": token},
        {"action": "unsubscribe", "channel": "late"},
        {"action": "resume", "streamId": "st_1"},
        {"action": "history", "threadId": "thread_guardRails1"},
        {"action": "stop", "streamId": "st_1"},
        {"action": "llmToolCallResponse", "toolCallId": "tc_1", "success": True, "message": "ok"},
        {"action": "ping"},
    ):
        routes.message(CONNECTION, json.dumps(message))
    routes.disconnect(CONNECTION)

    # The routes did their work: no refusal, the stop and the tool answer reached the table.
    assert [reply["type"] for reply in replies] == [
        "subscribed",
        "unsubscribed",
        "snapshot",
        "history",
        "stopped",
        "ack",
        "pong",
    ]
    assert StreamStore(setup, TABLE).poll("st_1").cancel
    answered = ToolCallStore(setup, TABLE).get(APP_ID, "tc_1")
    assert answered is not None and answered.status == "answered"
    used = {f"dynamodb:{op}" for op in operations - TRANSACTIONS}
    granted = table_actions("ConnectionsFunction")
    assert used == granted, f"unused {sorted(granted - used)}, missing {sorted(used - granted)}"
    assert operations <= (operations_called_by_the_layer() | item_kinds_in_the_layer())
