"""template.yaml: lint clean, Lambda-target dependencies resolve, wiring matches the code.

These tests read the SAM template as data. They need cfn-lint (dev dependency) and, for the
dependency check, access to the package index pip is configured with (PyPI by default).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from devstack.template import load_template as template_data
from streaming_proxy.config import Settings
from streaming_proxy.runs import EVENT_MAX_AGE_SECONDS

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"

# The HTTP contract: every (method, path) the stream function serves through API Gateway.
CONTRACT_ROUTES = {
    ("POST", "/stream/create"),
    ("POST", "/stream/create/assistants"),
    ("POST", "/stream/create/assistants/stop"),
    ("GET", "/threads/{thread_id}/messages"),
    ("DELETE", "/threads/{thread_id}"),
    ("POST", "/assistants"),
    ("GET", "/assistants"),
    ("GET", "/assistants/{assistant_id}"),
    ("PUT", "/assistants/{assistant_id}"),
    ("DELETE", "/assistants/{assistant_id}"),
    ("POST", "/llm/query"),
    ("POST", "/llm/query/stop"),
    ("POST", "/llm/tool-response"),
    # CORS preflights: only the two routes a page calls from its own origin (api/pagecors.py).
    ("OPTIONS", "/llm/query/stop"),
    ("OPTIONS", "/llm/tool-response"),
    ("POST", "/message/send"),
    ("POST", "/channels/token"),
    ("POST", "/v1/chat/completions"),
    ("GET", "/v1/models"),
    # Every other /v1 path: the function answers OpenAI's 404/405 (API Gateway's own 403
    # would not be in OpenAI's shape).
    ("ANY", "/v1/{proxy+}"),
    ("GET", "/health"),
}
WEBSOCKET_ROUTE_KEYS = {"$connect", "$disconnect", "$default"}

# Variables read by the Lambda Web Adapter or Powertools, not by streaming_proxy.config.
# LOG_LEVEL: read by observability.get_logger, which exists before Settings do.
EXTERNAL_ENV_EXACT = {"AWS_LAMBDA_EXEC_WRAPPER", "LOG_LEVEL"}
EXTERNAL_ENV_PREFIXES = ("AWS_LWA_", "POWERTOOLS_")


@cache
def load_template() -> dict[str, Any]:
    return template_data(TEMPLATE)


def resources_of_type(resource_type: str) -> dict[str, dict[str, Any]]:
    resources = load_template()["Resources"]
    return {
        name: resource
        for name, resource in resources.items()
        if resource.get("Type") == resource_type
    }


def function_setting(function: dict[str, Any], key: str) -> Any:
    """A function property, falling back to Globals.Function like SAM does."""
    properties = function.get("Properties", {})
    if key in properties:
        return properties[key]
    return load_template().get("Globals", {}).get("Function", {}).get(key)


def function_env_names(function: dict[str, Any]) -> set[str]:
    names: set[str] = set()
    global_env = load_template().get("Globals", {}).get("Function", {}).get("Environment", {})
    for env in (global_env, function.get("Properties", {}).get("Environment", {})):
        names.update((env or {}).get("Variables", {}) or {})
    return names


def template_python_version() -> str:
    """The Lambda runtime's Python version ("3.12"), from the template, for every function."""
    versions: set[str] = set()
    for name, function in resources_of_type("AWS::Serverless::Function").items():
        runtime = function_setting(function, "Runtime")
        match = re.fullmatch(r"python(\d+\.\d+)", str(runtime))
        assert match, f"{name}: runtime {runtime!r} is not a pythonX.Y runtime"
        versions.add(match.group(1))
    for name, layer in resources_of_type("AWS::Serverless::LayerVersion").items():
        for runtime in layer.get("Properties", {}).get("CompatibleRuntimes", []):
            match = re.fullmatch(r"python(\d+\.\d+)", str(runtime))
            assert match, f"{name}: compatible runtime {runtime!r} is not pythonX.Y"
            versions.add(match.group(1))
        # A makefile build names no version: its Makefile's PYTHON_VERSION is checked
        # against this one (tests/unit/test_bytecode_build.py).
        build_method = str(layer.get("Metadata", {}).get("BuildMethod", "makefile"))
        if build_method != "makefile":
            versions.add(build_method.removeprefix("python"))
    assert len(versions) == 1, f"functions and layers disagree on the Python version: {versions}"
    return versions.pop()


# --------------------------------------------------------------------------- lint


def cfn_lint_command() -> list[str]:
    script = Path(sys.executable).with_name("cfn-lint")
    if script.exists():
        return [str(script)]
    found = shutil.which("cfn-lint")
    if found:
        return [found]
    # cfnlint has no __main__ module; call its console entry point directly.
    return [sys.executable, "-c", "import sys; from cfnlint.runner import main; sys.exit(main())"]


def test_cfn_lint_is_clean() -> None:
    result = subprocess.run(
        [*cfn_lint_command(), str(TEMPLATE)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, (
        f"cfn-lint exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    )


# --------------------------------------------------------------------------- dependencies

REQUIREMENT_SETS = {
    "core-layer": ["layers/core/requirements.txt"],
    "stream-function": ["functions/stream/requirements.txt"],
    # Layer and function share one interpreter at run time: they must resolve together.
    "layer+function": ["layers/core/requirements.txt", "functions/stream/requirements.txt"],
}

NETWORK_HINTS = (
    "connection",
    "network",
    "temporary failure in name resolution",
    "max retries exceeded",
    "timed out",
    "ssl",
    "proxy",
)


@pytest.mark.parametrize("files", REQUIREMENT_SETS.values(), ids=REQUIREMENT_SETS.keys())
def test_requirements_resolve_for_lambda_arm64(files: list[str], tmp_path: Path) -> None:
    """Every pin has an arm64 Linux wheel for the template's Python (what `sam build` needs)."""
    python_version = template_python_version()
    requirement_args: list[str] = []
    for relative in files:
        path = ROOT / relative
        assert path.is_file(), f"missing {relative}"
        requirement_args += ["-r", str(path)]
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--disable-pip-version-check",
        "--no-input",
        "--only-binary=:all:",
        "--platform",
        "manylinux2014_aarch64",
        "--implementation",
        "cp",
        "--python-version",
        python_version,
        *requirement_args,
        "-d",
        str(tmp_path),
    ]
    try:
        result = subprocess.run(
            command, cwd=ROOT, capture_output=True, text=True, timeout=900, check=False
        )
    except subprocess.TimeoutExpired:
        pytest.fail(
            "pip download timed out after 900 s: this test needs the package index "
            "(PyPI or the index configured for pip) to be reachable."
        )
    if result.returncode != 0:
        output = f"{result.stdout}\n{result.stderr}"
        tail = "\n".join(output.strip().splitlines()[-25:])
        lowered = output.lower()
        if any(hint in lowered for hint in NETWORK_HINTS):
            reason = (
                "the package index looks unreachable (no network?); this test needs PyPI "
                "or the index configured for pip"
            )
        elif "(from versions: none)" in lowered:
            reason = (
                "pip saw no versions at all for a requirement: the package index is probably "
                "unreachable (no network?) or the name is wrong; this test needs PyPI or the "
                "index configured for pip"
            )
        else:
            reason = (
                f"some pin has no manylinux2014_aarch64 / cp{python_version} wheel "
                "or the pins conflict"
            )
        pytest.fail(
            f"pip download for {', '.join(files)} failed ({reason}).\n"
            f"command: {' '.join(command)}\n{tail}"
        )


# --------------------------------------------------------------------------- wiring


def settings_env_names() -> set[str]:
    """Upper-cased names Settings reads: field names plus every validation alias."""
    names: set[str] = set()
    for field_name, field in Settings.model_fields.items():
        names.add(field_name.upper())
        alias = field.validation_alias
        choices = getattr(alias, "choices", None)
        if isinstance(alias, str):
            names.add(alias.upper())
        elif choices is not None:
            names.update(choice.upper() for choice in choices if isinstance(choice, str))
        if field.alias:
            names.add(field.alias.upper())
    return names


def test_template_python_version_is_consistent() -> None:
    assert template_python_version() == "3.12"


@pytest.mark.parametrize("function_name", sorted(resources_of_type("AWS::Serverless::Function")))
def test_function_environment_is_known(function_name: str) -> None:
    function = resources_of_type("AWS::Serverless::Function")[function_name]
    known = settings_env_names()
    unknown = sorted(
        name
        for name in function_env_names(function)
        if name.upper() not in known
        and name not in EXTERNAL_ENV_EXACT
        and not name.startswith(EXTERNAL_ENV_PREFIXES)
    )
    assert not unknown, (
        f"{function_name} sets environment variables that neither streaming_proxy.config."
        f"Settings nor the Lambda Web Adapter / Powertools read: {unknown}"
    )


@pytest.mark.parametrize("function_name", sorted(resources_of_type("AWS::Serverless::Function")))
def test_functions_are_arm64(function_name: str) -> None:
    function = resources_of_type("AWS::Serverless::Function")[function_name]
    assert function_setting(function, "Architectures") == ["arm64"]


def test_stream_function_runs_behind_the_web_adapter() -> None:
    function = load_template()["Resources"]["StreamFunction"]
    properties = function["Properties"]
    variables = properties["Environment"]["Variables"]
    assert properties["Handler"] == "run.sh"
    assert variables["AWS_LAMBDA_EXEC_WRAPPER"] == "/opt/bootstrap"
    assert variables["AWS_LWA_INVOKE_MODE"] == "response_stream"
    assert variables["AWS_LWA_PASS_THROUGH_PATH"] == "/events"
    assert variables["DETACH_MODE"] == "lambda"
    adapter_layers = [
        layer for layer in properties["Layers"] if "LambdaAdapterLayerArm64" in str(layer)
    ]
    assert len(adapter_layers) == 1, "the arm64 Lambda Web Adapter layer must be attached"
    assert {"Ref": "CoreLayer"} in properties["Layers"]
    # uvicorn listens on the port the adapter forwards to: one variable, set in the template.
    run_sh = (ROOT / "functions" / "stream" / "run.sh").read_text(encoding="utf-8")
    assert '--port "${AWS_LWA_PORT:-8080}"' in run_sh and variables["AWS_LWA_PORT"] == "8080"


def test_table_matches_single_table_design() -> None:
    table = load_template()["Resources"]["Table"]
    assert table["Type"] == "AWS::DynamoDB::Table"
    properties = table["Properties"]
    assert properties["BillingMode"] == "PAY_PER_REQUEST"
    assert sorted(
        (item["AttributeName"], item["AttributeType"])
        for item in properties["AttributeDefinitions"]
    ) == [("pk", "S"), ("sk", "S")]
    assert [(item["AttributeName"], item["KeyType"]) for item in properties["KeySchema"]] == [
        ("pk", "HASH"),
        ("sk", "RANGE"),
    ]
    assert properties["TimeToLiveSpecification"] == {
        "AttributeName": "expiresAt",
        "Enabled": True,
    }


def api_events() -> list[tuple[str, str, dict[str, Any]]]:
    events: list[tuple[str, str, dict[str, Any]]] = []
    for function_name, function in resources_of_type("AWS::Serverless::Function").items():
        for event_name, event in (function["Properties"].get("Events") or {}).items():
            if event.get("Type") in {"Api", "HttpApi"}:
                events.append((function_name, event_name, event["Properties"]))
    return events


def test_every_route_is_a_contract_endpoint() -> None:
    routes = {(props["Method"].upper(), props["Path"]) for _, _, props in api_events()}
    assert routes <= CONTRACT_ROUTES, f"routes outside the contract: {routes - CONTRACT_ROUTES}"
    assert routes == CONTRACT_ROUTES, f"contract endpoints not routed: {CONTRACT_ROUTES - routes}"


def test_only_the_page_routes_take_preflights_routed_as_their_posts() -> None:
    events = {(props["Method"].upper(), props["Path"]): props for _, _, props in api_events()}
    preflights = {path for method, path in events if method == "OPTIONS"}
    assert preflights == {"/llm/query/stop", "/llm/tool-response"}
    for path in preflights:
        assert {**events[("OPTIONS", path)], "Method": "POST"} == events[("POST", path)], path


def test_every_route_streams_through_the_stream_api() -> None:
    for function_name, event_name, props in api_events():
        where = f"{function_name}.{event_name}"
        assert function_name == "StreamFunction", f"{where}: only StreamFunction serves HTTP"
        assert props.get("RestApiId") == {"Ref": "StreamApi"}, where
        assert props.get("ResponseTransferMode") == "RESPONSE_STREAM", where


def test_websocket_routes() -> None:
    routes = resources_of_type("AWS::ApiGatewayV2::Route")
    keys = {route["Properties"]["RouteKey"] for route in routes.values()}
    assert keys == WEBSOCKET_ROUTE_KEYS
    # The stage auto-deploys (test_guard_rails.py): its first deployment follows the routes.
    (stage,) = resources_of_type("AWS::ApiGatewayV2::Stage").values()
    assert set(routes) <= set(stage.get("DependsOn", [])), "stage must follow routes"


# --------------------------------------------------------------------------- detached relays


def statements(function_name: str) -> list[dict[str, Any]]:
    """The inline policy statements of a function (conditional ones included)."""
    found: list[dict[str, Any]] = []
    for policy in load_template()["Resources"][function_name]["Properties"]["Policies"]:
        if "Fn::If" in policy:
            policy = policy["Fn::If"][1]
        found += policy.get("Statement", []) if isinstance(policy, dict) else []
    return found


def test_detached_relays_run_in_a_function_in_buffered_invoke_mode() -> None:
    """The adapter applies its invoke mode to every invocation and its maintainers advise
    against response_stream for non-HTTP events (docs/deploy.md): the stream function's
    async invokes go to RelayFunction, the same code in buffered mode."""
    resources = load_template()["Resources"]
    stream = resources["StreamFunction"]["Properties"]
    relay = resources["RelayFunction"]["Properties"]
    variables = relay["Environment"]["Variables"]
    assert relay["FunctionName"] == {"Fn::Sub": "${AWS::StackName}-relay"}
    assert stream["Environment"]["Variables"]["SELF_FUNCTION_NAME"] == relay["FunctionName"]
    assert (relay["CodeUri"], relay["Handler"]) == (stream["CodeUri"], stream["Handler"])
    assert relay["Layers"] == stream["Layers"] and relay["Timeout"] == stream["Timeout"]
    assert variables["AWS_LWA_INVOKE_MODE"] == "buffered"
    assert variables["AWS_LWA_PASS_THROUGH_PATH"] == "/events"
    assert variables["DETACH_MODE"] == "lambda"
    # A 5xx from /events (the job could not be claimed) fails the invocation: dead letter.
    assert variables["AWS_LWA_ERROR_STATUS_CODES"] == "500-599"
    assert not relay.get("Events"), "RelayFunction serves no HTTP route"
    (invoke,) = [s for s in statements("StreamFunction") if s["Action"] == "lambda:InvokeFunction"]
    assert all("-relay" in arn["Fn::Sub"] for arn in invoke["Resource"])


def test_lost_detached_relays_reach_the_dead_letter_queue() -> None:
    config = load_template()["Resources"]["RelayFunction"]["Properties"]["EventInvokeConfig"]
    # A retried relay would post the same stream twice.
    assert config["MaximumRetryAttempts"] == 0
    assert config["MaximumEventAgeInSeconds"] == EVENT_MAX_AGE_SECONDS  # runs' leases cover it
    assert config["DestinationConfig"]["OnFailure"] == {
        "Type": "SQS",
        "Destination": {"Fn::GetAtt": ["DeadLetterQueue", "Arn"]},
    }
    queue = load_template()["Resources"]["DeadLetterQueue"]
    assert queue["Type"] == "AWS::SQS::Queue"
    assert queue["Properties"]["SqsManagedSseEnabled"] is True  # records hold provider keys
    # SQS's maximum: a record over the queue's size arrives without its job (detached.py).
    assert queue["Properties"]["MaximumMessageSize"] == 1_048_576


def test_the_dead_letter_function_consumes_its_queue_with_least_privilege() -> None:
    resources = load_template()["Resources"]
    function = resources["DeadLetterFunction"]["Properties"]
    assert (function["CodeUri"], function["Handler"]) == ("functions/deadletter/", "app.handler")
    assert function["Layers"] == [{"Ref": "CoreLayer"}]
    assert (ROOT / "functions" / "deadletter" / "app.py").is_file()
    (mapping,) = resources_of_type("AWS::Lambda::EventSourceMapping").values()
    assert mapping["Properties"]["FunctionName"] == {"Ref": "DeadLetterFunction"}
    assert mapping["Properties"]["EventSourceArn"] == {"Fn::GetAtt": ["DeadLetterQueue", "Arn"]}
    assert mapping["Properties"]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    visibility = resources["DeadLetterQueue"]["Properties"]["VisibilityTimeout"]
    assert visibility >= 6 * function["Timeout"]
    granted = {
        action: statement["Resource"]
        for statement in statements("DeadLetterFunction")
        for action in ([statement["Action"]] if isinstance(statement["Action"], str) else [])
        + (statement["Action"] if isinstance(statement["Action"], list) else [])
    }
    queue, table = {"Fn::GetAtt": ["DeadLetterQueue", "Arn"]}, {"Fn::GetAtt": ["Table", "Arn"]}
    assert {a for a, r in granted.items() if a.startswith("sqs:")} == {
        "sqs:ReceiveMessage",
        "sqs:DeleteMessage",
        "sqs:ChangeMessageVisibility",
        "sqs:GetQueueAttributes",
    }
    assert all(r == queue for a, r in granted.items() if a.startswith("sqs:"))
    assert {a for a in granted if a.startswith("dynamodb:")} == {
        "dynamodb:GetItem",
        "dynamodb:UpdateItem",
        "dynamodb:Query",
        "dynamodb:BatchWriteItem",
    }
    assert all(r == table for a, r in granted.items() if a.startswith("dynamodb:"))
    assert "execute-api:ManageConnections" in granted
    # With TableKmsKeyArn, the table's key through DynamoDB (test_table_access.py).
    kms = {a for a in granted if a.startswith("kms:")}
    assert kms == {"kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey*", "kms:DescribeKey"}
    assert len(granted) == 9 + len(kms), f"nothing more: {sorted(granted)}"
