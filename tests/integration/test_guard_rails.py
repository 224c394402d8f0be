"""template.yaml's production guard rails: throttling, concurrency, access logs, tracing, alarms,
dashboard, WebSocket redeploys, table encryption and a table policy no wider than the code.

The template is read as data (CloudFormation tags kept as `{"Fn::X": ...}` mappings);
`test_template.py` runs cfn-lint over it. Conditional properties are checked by resolving
their `Fn::If` for each value of the condition, as CloudFormation would.
"""

from __future__ import annotations

import ast
import json
import re
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
from streaming_proxy.errors import DependencyUnavailable, ProxyError, RateLimited, error_object
from streaming_proxy.observability import NAMESPACE, SERVICE
from streaming_proxy.streams import StreamRecord, StreamStore
from streaming_proxy.toolcalls import ToolCallRecord, ToolCallStore

from .test_template import load_template

ROOT = Path(__file__).resolve().parents[2]
LAYER = ROOT / "layers" / "core" / "streaming_proxy"

GUARD_RAIL_DEFAULTS: dict[str, Any] = {
    "ThrottlingRateLimit": 50,
    "ThrottlingBurstLimit": 100,
    "UsagePlan": "off",
    "UsagePlanQuotaPerDay": 100000,
    "StreamFunctionReservedConcurrency": 0,
    "LogRetentionDays": 30,
    "ApiGatewayLogsRole": "create",
    "Tracing": "Disabled",
    "AlarmNotification": "",
    "FunctionErrorsAlarmThreshold": 5,
    "StreamErrorsAlarmThreshold": 5,
    "PostFailuresAlarmThreshold": 10,
    "Api5xxAlarmPercent": 5,
    "TableKmsKeyArn": "",
}


def resources() -> dict[str, Any]:
    resources: dict[str, Any] = load_template()["Resources"]
    return resources


def props(name: str) -> dict[str, Any]:
    properties: dict[str, Any] = resources()[name]["Properties"]
    return properties


def resolve(value: Any, conditions: dict[str, bool]) -> Any:
    """`value` with every `Fn::If` decided by `conditions` (a branch left out is dropped)."""
    if isinstance(value, dict):
        if set(value) == {"Fn::If"}:
            name, when_true, when_false = value["Fn::If"]
            return resolve(when_true if conditions[name] else when_false, conditions)
        return {
            key: resolve(item, conditions)
            for key, item in value.items()
            if resolve(item, conditions) != {"Ref": "AWS::NoValue"}
        }
    if isinstance(value, list):
        items = [resolve(item, conditions) for item in value]
        return [item for item in items if item != {"Ref": "AWS::NoValue"}]
    return value


def parameter_default(name: str) -> Any:
    return load_template()["Parameters"][name]["Default"]


# --------------------------------------------------------------------------- parameters


@pytest.mark.parametrize("name", sorted(GUARD_RAIL_DEFAULTS))
def test_guard_rail_parameter_has_its_default(name: str) -> None:
    parameter = load_template()["Parameters"].get(name)
    assert parameter is not None, f"parameter {name} missing"
    assert parameter.get("Description"), f"{name} needs a description"
    assert parameter["Default"] == GUARD_RAIL_DEFAULTS[name]
    allowed = parameter.get("AllowedValues")
    assert allowed is None or parameter["Default"] in allowed


def test_optional_parameters_match_their_allowed_patterns() -> None:
    parameters = load_template()["Parameters"]
    examples = {
        "AlarmNotification": (
            ["", "ops@example.com", "arn:aws:sns:eu-west-1:123456789012:ops-alarms"],
            ["not-an-address", "arn:aws:sqs:eu-west-1:123456789012:q", "a@b"],
        ),
        "TableKmsKeyArn": (
            ["", "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"],
            ["alias/aws/dynamodb", "arn:aws:kms:eu-west-1:123456789012:alias/mine"],
        ),
    }
    for name, (good, bad) in examples.items():
        pattern = re.compile(parameters[name]["AllowedPattern"])
        assert all(pattern.fullmatch(value) for value in good), name
        assert not any(pattern.fullmatch(value) for value in bad), name


# --------------------------------------------------------------------------- REST API limits


def test_rest_stage_throttles_every_method_without_logging_bodies() -> None:
    (setting,) = props("StreamApi")["MethodSettings"]
    assert (setting["ResourcePath"], setting["HttpMethod"]) == ("/*", "*")
    assert setting["ThrottlingRateLimit"] == {"Ref": "ThrottlingRateLimit"}
    assert setting["ThrottlingBurstLimit"] == {"Ref": "ThrottlingBurstLimit"}
    # Execution logs and data traces would write prompts, answers and keys to CloudWatch.
    assert setting["DataTraceEnabled"] is False
    assert setting["LoggingLevel"] == "OFF"


@pytest.mark.parametrize(
    ("response_type", "error"),
    [("THROTTLED", RateLimited("x")), ("INTEGRATION_FAILURE", DependencyUnavailable("x"))],
)
def test_gateway_answers_in_the_callers_error_shape(response_type: str, error: ProxyError) -> None:
    """The stage throttle's 429 and a function API Gateway could not invoke (reserved
    concurrency reached) answer like the function does, not `{"message": ...}` or a bare 500."""
    response = props("StreamApi")["GatewayResponses"][response_type]
    assert response["StatusCode"] == str(error.status)
    body = json.loads(response["ResponseTemplates"]["application/json"])
    assert body["success"] is False
    assert body["error"]["code"] == error.status
    assert body["error"]["type"] == error.kind
    assert set(error_object(error)) - {"fields"} <= set(body["error"])
    if error.status == 429:
        assert response["ResponseParameters"]["Headers"]["Retry-After"] == "'1'"


def test_usage_plan_is_optional_and_requires_no_api_key() -> None:
    plan = resources()["StreamApiUsagePlan"]
    assert plan["Condition"] == "HasUsagePlan"
    assert load_template()["Conditions"]["HasUsagePlan"] == {
        "Fn::Equals": [{"Ref": "UsagePlan"}, "on"]
    }
    assert parameter_default("UsagePlan") == "off"
    properties = plan["Properties"]
    assert properties["ApiStages"] == [
        {"ApiId": {"Ref": "StreamApi"}, "Stage": {"Ref": "StreamApi.Stage"}}
    ]
    assert properties["Quota"] == {"Limit": {"Ref": "UsagePlanQuotaPerDay"}, "Period": "DAY"}
    # Apps authenticate with their app key; API Gateway API keys are not part of the stack.
    assert not [r for r in resources().values() if r["Type"] == "AWS::ApiGateway::ApiKey"]
    assert "Auth" not in props("StreamApi")


def test_stream_function_concurrency_is_reserved_only_when_asked() -> None:
    reserved = props("StreamFunction")["ReservedConcurrentExecutions"]
    assert resolve(reserved, {"HasReservedConcurrency": True}) == {
        "Ref": "StreamFunctionReservedConcurrency"
    }
    assert resolve({"r": reserved}, {"HasReservedConcurrency": False}) == {}
    assert load_template()["Conditions"]["HasReservedConcurrency"] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "StreamFunctionReservedConcurrency"}, 0]}]
    }


# --------------------------------------------------------------------------- access logs


# Variables that would put headers, query strings, bodies or keys into the access logs.
SECRET_VARIABLES = re.compile(
    r"\$input|\$context\.identity\.apiKey|requestOverride|responseOverride|header|"
    r"querystring|\$context\.authorizer|\$context\.authorize\.|\$util",
    re.IGNORECASE,
)


def access_log_format(resource: str, setting: str) -> dict[str, str]:
    log_format: str = props(resource)[setting]["Format"]
    assert not SECRET_VARIABLES.search(log_format), f"{resource} logs something secret"
    fields: dict[str, str] = json.loads(log_format)
    return fields


@pytest.mark.parametrize(
    ("resource", "setting", "group", "route"),
    [
        ("StreamApi", "AccessLogSetting", "StreamApiAccessLogGroup", "$context.resourcePath"),
        ("WebSocketStage", "AccessLogSettings", "WebSocketAccessLogGroup", "$context.routeKey"),
    ],
)
def test_access_logs_are_json_without_secrets(
    resource: str, setting: str, group: str, route: str
) -> None:
    assert props(resource)[setting]["DestinationArn"] == {"Fn::GetAtt": [group, "Arn"]}
    assert props(group)["RetentionInDays"] == {"Ref": "LogRetentionDays"}
    fields = access_log_format(resource, setting)
    values = set(fields.values())
    for variable in (
        "$context.requestId",
        "$context.identity.sourceIp",
        "$context.status",
        "$context.integrationLatency",
        "$context.error.message",
        route,
    ):
        assert variable in values, f"{resource} access log lacks {variable}"


def test_function_logs_keep_the_retention_parameter() -> None:
    for group in ("StreamFunctionLogGroup", "ConnectionsFunctionLogGroup"):
        assert props(group)["RetentionInDays"] == {"Ref": "LogRetentionDays"}


def test_stages_wait_for_the_account_logging_role() -> None:
    template = load_template()
    handle = template["Resources"]["ApiGatewayAccountReady"]
    assert handle["Metadata"]["AccountSetting"]["Fn::If"][:2] == [
        "CreatesApiGatewayLogsRole",
        {"Ref": "ApiGatewayAccount"},
    ]
    assert template["Resources"]["StreamApi"]["DependsOn"] == "ApiGatewayAccountReady"
    assert "ApiGatewayAccountReady" in template["Resources"]["WebSocketStage"]["DependsOn"]
    account = template["Resources"]["ApiGatewayAccount"]
    assert account["Condition"] == "CreatesApiGatewayLogsRole"
    assert account["DeletionPolicy"] == "Retain"


# --------------------------------------------------------------------------- tracing


def test_tracing_is_one_switch_for_functions_and_rest_stage() -> None:
    template = load_template()
    assert template["Globals"]["Function"]["Tracing"] == {"Ref": "Tracing"}
    # "Disabled" is SAM's value for no tracing config and no X-Ray policy on the roles.
    assert template["Parameters"]["Tracing"]["AllowedValues"] == ["Disabled", "Active"]
    enabled = props("StreamApi")["TracingEnabled"]
    assert resolve(enabled, {"HasTracing": True}) is True
    assert resolve(enabled, {"HasTracing": False}) is False


# --------------------------------------------------------------------------- alarms


def alarms() -> dict[str, dict[str, Any]]:
    return {
        name: resource["Properties"]
        for name, resource in resources().items()
        if resource["Type"] == "AWS::CloudWatch::Alarm"
    }


@pytest.mark.parametrize("function", ["StreamFunction", "ConnectionsFunction"])
@pytest.mark.parametrize("metric", ["Errors", "Throttles"])
def test_each_function_has_error_and_throttle_alarms(function: str, metric: str) -> None:
    matching = [
        alarm
        for alarm in alarms().values()
        if alarm.get("Namespace") == "AWS/Lambda"
        and alarm.get("MetricName") == metric
        and alarm.get("Dimensions") == [{"Name": "FunctionName", "Value": {"Ref": function}}]
    ]
    assert len(matching) == 1, f"no single {metric} alarm for {function}"


@pytest.mark.parametrize("metric", ["PostFailures", "MessagesDropped", "StreamErrors"])
def test_stream_metric_alarms_use_the_service_aggregate(metric: str) -> None:
    matching = [
        alarm
        for alarm in alarms().values()
        if alarm.get("Namespace") == NAMESPACE and alarm.get("MetricName") == metric
    ]
    assert len(matching) == 1, f"no single alarm on {NAMESPACE}/{metric}"
    # An alarm matches one exact dimension set: the one the code emits for every stream.
    assert matching[0]["Dimensions"] == [{"Name": "service", "Value": SERVICE}]
    assert matching[0]["Statistic"] == "Sum"


def test_rest_5xx_alarm_is_a_rate_of_requests() -> None:
    (alarm,) = [a for a in alarms().values() if "Metrics" in a]
    metrics = {query["Id"]: query for query in alarm["Metrics"]}
    for query_id, name in (("errors", "5XXError"), ("requests", "Count")):
        metric = metrics[query_id]["MetricStat"]["Metric"]
        assert (metric["Namespace"], metric["MetricName"]) == ("AWS/ApiGateway", name)
        assert metric["Dimensions"] == [
            {"Name": "ApiName", "Value": props("StreamApi")["Name"]},
            {"Name": "Stage", "Value": {"Ref": "StageName"}},
        ]
    (returned,) = [query for query in alarm["Metrics"] if query.get("ReturnData")]
    assert "errors / requests" in returned["Expression"]
    assert alarm["Threshold"] == {"Ref": "Api5xxAlarmPercent"}


def test_alarms_notify_the_topic_or_nobody() -> None:
    assert len(alarms()) >= 8
    for name, alarm in alarms().items():
        actions = alarm["AlarmActions"]
        assert resolve({"a": actions}, {"HasAlarmTarget": False}) == {}, name
        assert resolve(actions, {"HasAlarmTarget": True, "AlarmTargetIsEmail": True}) == [
            {"Ref": "AlarmTopic"}
        ], name
        assert resolve(actions, {"HasAlarmTarget": True, "AlarmTargetIsEmail": False}) == [
            {"Ref": "AlarmNotification"}
        ], name
    topic = resources()["AlarmTopic"]
    assert topic["Condition"] == "AlarmTargetIsEmail"
    assert topic["Properties"]["Subscription"] == [
        {"Protocol": "email", "Endpoint": {"Ref": "AlarmNotification"}}
    ]


# --------------------------------------------------------------------------- dashboard


def dashboard() -> dict[str, Any]:
    """The dashboard body with every `${...}` replaced by a placeholder, parsed."""
    body = props("Dashboard")["DashboardBody"]["Fn::Sub"]
    template = load_template()
    known = set(template["Resources"]) | set(template["Parameters"])
    for name in re.findall(r"\$\{([^}]+)\}", body):
        assert name in known or name.startswith("AWS::"), f"dashboard names unknown ${{{name}}}"
    parsed: dict[str, Any] = json.loads(re.sub(r"\$\{[^}]+\}", "x", body))
    return parsed


def test_dashboard_shows_the_key_graphs() -> None:
    widgets = dashboard()["widgets"]
    text = json.dumps(widgets)
    for metric in (
        '"AWS/Lambda", "Invocations"',
        '"AWS/Lambda", "Errors"',
        '"AWS/Lambda", "Duration"',
        '"AWS/Lambda", "Throttles"',
        "TimeToFirstToken",
        "FanoutPosts",
        '"PostFailures"',
        '"4XXError"',
        '"5XXError"',
        '"Latency"',
        '"ConnectCount"',
        '"MessageCount"',
        '"ConsumedReadCapacityUnits"',
        '"ConsumedWriteCapacityUnits"',
        '"ReadThrottleEvents"',
        '"WriteThrottleEvents"',
    ):
        assert metric in text, f"dashboard lacks {metric}"
    for widget in widgets:
        assert widget["properties"]["title"]
        assert widget["properties"]["region"] == "x"


# --------------------------------------------------------------------------- WebSocket stage


def test_websocket_stage_redeploys_when_routes_change() -> None:
    stage = resources()["WebSocketStage"]
    assert stage["Properties"]["AutoDeploy"] is True
    assert "DeploymentId" not in stage["Properties"]
    routes = [n for n, r in resources().items() if r["Type"] == "AWS::ApiGatewayV2::Route"]
    assert set(routes) <= set(stage["DependsOn"])
    assert not [r for r in resources().values() if r["Type"] == "AWS::ApiGatewayV2::Deployment"]


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


@pytest.mark.parametrize("function", ["StreamFunction", "ConnectionsFunction"])
def test_kms_access_only_with_a_key_and_only_through_dynamodb(function: str) -> None:
    policies = props(function)["Policies"]
    without = json.dumps(resolve(policies, {c: False for c in conditions_used(policies)}))
    assert "kms:" not in without
    with_key = resolve(policies, {c: c == "HasTableKmsKey" for c in conditions_used(policies)})
    (statement,) = [s for p in with_key for s in p["Statement"] if "kms:Decrypt" in s["Action"]]
    assert statement["Resource"] == {"Ref": "TableKmsKeyArn"}
    assert "kms:ViaService" in statement["Condition"]["StringEquals"]


def conditions_used(value: Any) -> set[str]:
    text = json.dumps(value)
    return set(re.findall(r'"Fn::If": \["([A-Za-z0-9]+)"', text))


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


def operations_called_by_the_layer() -> set[str]:
    """Every DynamoDB operation the streaming_proxy package calls on a client, by name."""
    methods = dynamodb_operations()
    called: set[str] = set()
    for path in LAYER.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            func = node.func if isinstance(node, ast.Call) else None
            if isinstance(func, ast.Attribute) and func.attr in methods:
                called.add(methods[func.attr])
    return called


def test_no_function_may_scan_or_use_an_index() -> None:
    for function in ("StreamFunction", "ConnectionsFunction"):
        granted = table_actions(function)
        assert "dynamodb:Scan" not in granted
        assert "dynamodb:*" not in granted


def test_stream_function_may_make_exactly_the_calls_the_code_makes() -> None:
    """The stream function runs the whole layer: its grant is every call the layer makes."""
    called = {f"dynamodb:{op}" for op in operations_called_by_the_layer()}
    granted = table_actions("StreamFunction")
    assert granted == called, (
        f"grant {sorted(granted - called)} unused, {sorted(called - granted)} missing: "
        "update StreamFunction's TableItems statement in template.yaml"
    )


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
        client.meta.events.register(
            "before-call.dynamodb", lambda model, **_: operations.add(model.name)
        )
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
    registry = AppRegistry.from_settings(get_settings())
    app = registry.get(APP_ID)
    assert app is not None
    token = registry.mint_token(app, ["ch", "late"], 600)[0]

    routes.connect(CONNECTION, token, None)
    for message in (
        {"action": "subscribe", "channel": "late", "token": token},
        {"action": "unsubscribe", "channel": "late"},
        {"action": "resume", "streamId": "st_1"},
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
        "stopped",
        "ack",
        "pong",
    ]
    assert StreamStore(setup, TABLE).cancel_requested("st_1")
    answered = ToolCallStore(setup, TABLE).get(APP_ID, "tc_1")
    assert answered is not None and answered.status == "answered"
    used = {f"dynamodb:{op}" for op in operations}
    granted = table_actions("ConnectionsFunction")
    assert used == granted, f"unused {sorted(granted - used)}, missing {sorted(used - granted)}"
    assert operations <= operations_called_by_the_layer()
