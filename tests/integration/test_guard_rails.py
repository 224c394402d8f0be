"""template.yaml's production guard rails: throttling, concurrency, access logs, tracing, alarms,
dashboard and WebSocket redeploys (the table's encryption and grants: test_table_access.py).

The template is read as data (CloudFormation tags kept as `{"Fn::X": ...}` mappings);
`test_template.py` runs cfn-lint over it. Conditional properties are checked by resolving
their `Fn::If` for each value of the condition, as CloudFormation would.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from streaming_proxy.errors import DependencyUnavailable, ProxyError, RateLimited, error_object
from streaming_proxy.observability import NAMESPACE, SERVICE

from .template_data import parameter_default, props, resolve, resources
from .test_template import load_template

GUARD_RAIL_DEFAULTS: dict[str, Any] = {
    "ThrottlingRateLimit": 50,
    "ThrottlingBurstLimit": 100,
    "UsagePlan": "off",
    "UsagePlanQuotaPerDay": 100000,
    "StreamFunctionReservedConcurrency": 0,
    "RelayFunctionReservedConcurrency": 0,
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
    [
        ("THROTTLED", RateLimited("x", retry_after=1)),
        ("INTEGRATION_FAILURE", DependencyUnavailable("x")),
    ],
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
    headers = response["ResponseParameters"]["Headers"]
    for name, value in error.headers().items():  # Retry-After on the 429, as the code sends
        assert headers[name] == f"'{value}'"
    # A page calling the page routes reads these too (fixed texts, nothing else in them).
    assert headers["Access-Control-Allow-Origin"] == "'*'"
    exposed = headers.get("Access-Control-Expose-Headers", "''").strip("'").split(",")
    assert set(error.headers()) <= {name.strip() for name in exposed if name}


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


@pytest.mark.parametrize(
    ("function", "condition"),
    [
        ("StreamFunction", "HasReservedConcurrency"),
        ("RelayFunction", "HasRelayReservedConcurrency"),
    ],
)
def test_function_concurrency_is_reserved_only_when_asked(function: str, condition: str) -> None:
    parameter = f"{function}ReservedConcurrency"
    reserved = props(function)["ReservedConcurrentExecutions"]
    assert resolve(reserved, {condition: True}) == {"Ref": parameter}
    assert resolve({"r": reserved}, {condition: False}) == {}
    assert load_template()["Conditions"][condition] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": parameter}, 0]}]
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


@pytest.mark.parametrize("function", ["StreamFunction", "ConnectionsFunction", "RelayFunction"])
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


@pytest.mark.parametrize(
    "metric", ["PostFailures", "MessagesDropped", "StreamErrors", "RecordFailures"]
)
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


def alarm_on(namespace: str, metric: str, dimension: dict[str, Any]) -> dict[str, Any]:
    (alarm,) = [
        a
        for a in alarms().values()
        if (a.get("Namespace"), a.get("MetricName")) == (namespace, metric)
        and a.get("Dimensions") == [dimension]
    ]
    return alarm


def test_lost_detached_relays_raise_alarms() -> None:
    """A relay Lambda gave up on (told to its browsers by the dead-letter handler), one that
    could not even reach the queue, and dead letters the handler cannot clear."""
    queue = {"Name": "QueueName", "Value": {"Fn::GetAtt": ["DeadLetterQueue", "QueueName"]}}
    lost = alarm_on("AWS/SQS", "NumberOfMessagesSent", queue)
    assert (lost["Statistic"], lost["Threshold"]) == ("Sum", 1)
    backlog = alarm_on("AWS/SQS", "ApproximateAgeOfOldestMessage", queue)
    # Longer than the queue's visibility timeout: a record that came back at least once.
    visibility = props("DeadLetterQueue")["VisibilityTimeout"]
    assert backlog["Statistic"] == "Maximum" and backlog["Threshold"] > visibility
    relay = {"Name": "FunctionName", "Value": {"Ref": "RelayFunction"}}
    assert alarm_on("AWS/Lambda", "DestinationDeliveryFailures", relay)["Threshold"] == 1
    handler = {"Name": "FunctionName", "Value": {"Ref": "DeadLetterFunction"}}
    assert alarm_on("AWS/Lambda", "Errors", handler)["Threshold"] == 1
    # Dead letters without a job to read: streams nobody could tell (deadletter.py).
    unread = alarm_on(NAMESPACE, "DeadLettersUnread", {"Name": "service", "Value": SERVICE})
    assert (unread["Statistic"], unread["Threshold"]) == ("Sum", 1)


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
    assert len(alarms()) >= 14
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
        resource = name.split(".", 1)[0]  # `${Queue.QueueName}`: an attribute of a resource
        assert resource in known or name.startswith("AWS::"), f"dashboard names unknown ${{{name}}}"
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
        '"NumberOfMessagesSent"',
        '"DestinationDeliveryFailures"',
        '"DeadLettersUnread"',
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
