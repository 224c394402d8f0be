"""docs/openapi.yaml stays true to the app: routes, request models, errors, envelopes."""

from __future__ import annotations

import inspect
import json
import re
import typing
from functools import cache
from pathlib import Path
from typing import Any, get_args

import annotated_types
import pytest
import yaml
from pydantic import BaseModel

from devstack.template import load_template
from streaming_proxy import errors, relay, relayend, relaystart, relaystops
from streaming_proxy.api import klai, runanswers
from streaming_proxy.api.app import routes
from streaming_proxy.api.messages import MessageSendRequest
from streaming_proxy.channels.browser import ACTIONS
from streaming_proxy.contract import (
    AssistantBody,
    RunStopRequest,
    StopRequest,
    StreamRequest,
    TokenRequest,
)
from streaming_proxy.jobs import StreamJob, StreamKind, ThreadRun
from streaming_proxy.openai_format import ChatCompletionRequest
from streaming_proxy.streams import StreamStatus
from streaming_proxy.threads import RunStatus

ROOT = Path(__file__).resolve().parents[2]
SPEC_PATH = ROOT / "docs" / "openapi.yaml"
EVENTS_DOC = ROOT / "docs" / "events.md"

# Served by the app but not public: Lambda Web Adapter self-invocations.
INTERNAL_PATHS = {"/events"}
# API Gateway's catch-all under /v1: the app answers every such path with OpenAI's 404/405.
GATEWAY_CATCH_ALL = {("/v1/{proxy+}", "any")}
HTTP_METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}

REQUEST_MODELS: dict[str, type[BaseModel]] = {
    "/channels/token": TokenRequest,
    "/assistants": AssistantBody,
    "/stream/create": StreamRequest,
    "/llm/query": StreamRequest,
    "/stream/create/assistants": StreamRequest,
    "/stream/create/assistants/stop": RunStopRequest,
    "/llm/query/stop": StopRequest,
    "/message/send": MessageSendRequest,
    "/v1/chat/completions": ChatCompletionRequest,
}
KLAI_STREAM_PATHS = ("/stream/create", "/llm/query", "/stream/create/assistants")
ENVELOPE_TYPES = {"threadInfo", "delta", "thinking", "function_call", "llmToolCall", "error", "end"}
# Statuses that never reach an HTTP caller: 410 (a gone WebSocket), 499 (a cancelled stream),
# 500 (kept generic, and not part of the contract's list).
NOT_HTTP_ANSWERS = {410, 499, 500}


@cache
def spec() -> dict[str, Any]:
    loaded = yaml.safe_load(SPEC_PATH.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def resolve(node: Any) -> Any:
    """Follow `$ref`s (local JSON pointers) until a node without one."""
    seen: set[str] = set()
    while isinstance(node, dict) and "$ref" in node:
        ref = node["$ref"]
        assert ref not in seen, f"$ref cycle at {ref}"
        seen.add(ref)
        node = pointer(ref)
    return node


def pointer(ref: str) -> Any:
    assert ref.startswith("#/"), f"only local $refs are used: {ref}"
    node: Any = spec()
    for raw in ref[2:].split("/"):
        key = raw.replace("~1", "/").replace("~0", "~")
        assert isinstance(node, dict) and key in node, f"unresolvable $ref {ref}"
        node = node[key]
    return node


def walk(node: Any, path: str = "#") -> typing.Iterator[tuple[str, Any]]:
    yield path, node
    if isinstance(node, dict):
        for key, value in node.items():
            yield from walk(value, f"{path}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from walk(value, f"{path}/{i}")


def request_schema(path: str) -> dict[str, Any]:
    """A path's request body schema; an `allOf` narrowing a base schema (Chat's request
    narrows StreamRequest) reads as its base, whose properties it documents."""
    body = spec()["paths"][path]["post"]["requestBody"]
    schema = resolve(body["content"]["application/json"]["schema"])
    while isinstance(schema, dict) and "properties" not in schema and "allOf" in schema:
        schema = resolve(schema["allOf"][0])
    assert isinstance(schema, dict)
    return schema


def object_schemas(schema: Any) -> list[dict[str, Any]]:
    """The object schemas a property schema may stand for (through refs, arrays, unions)."""
    schema = resolve(schema)
    if not isinstance(schema, dict):
        return []
    found = [schema] if "properties" in schema else []
    if "items" in schema:
        found += object_schemas(schema["items"])
    for key in ("oneOf", "anyOf", "allOf"):
        for branch in schema.get(key, []):
            found += object_schemas(branch)
    return found


def nested_models(annotation: Any) -> list[type[BaseModel]]:
    """Pydantic models inside a field annotation (`list[Tool] | None` -> [Tool])."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found: list[type[BaseModel]] = []
    for arg in typing.get_args(annotation):
        found += nested_models(arg)
    return found


def types_of(schema: dict[str, Any]) -> set[str]:
    declared = schema.get("type", [])
    return {declared} if isinstance(declared, str) else set(declared)


def expected_bounds(metadata: list[Any], schema: dict[str, Any]) -> dict[str, Any]:
    """The JSON Schema keywords a field's pydantic constraints translate to."""
    is_array = "array" in types_of(schema)
    bounds: dict[str, Any] = {}
    for item in metadata:
        if isinstance(item, annotated_types.Ge):
            bounds["minimum"] = item.ge
        elif isinstance(item, annotated_types.Le):
            bounds["maximum"] = item.le
        elif isinstance(item, annotated_types.Gt):
            bounds["exclusiveMinimum"] = item.gt
        elif isinstance(item, annotated_types.Lt):
            bounds["exclusiveMaximum"] = item.lt
        elif isinstance(item, annotated_types.MinLen):
            bounds["minItems" if is_array else "minLength"] = item.min_length
        elif isinstance(item, annotated_types.MaxLen):
            bounds["maxItems" if is_array else "maxLength"] = item.max_length
    return bounds


def model_drift(model: type[BaseModel], schema: dict[str, Any], where: str) -> list[str]:
    """Every way the schema falls short of the model: missing fields, required, bounds."""
    problems: list[str] = []
    properties = schema.get("properties", {})
    required = set(schema.get("required", []))
    for name, field in model.model_fields.items():
        key = field.alias or name
        if key not in properties:
            problems.append(f"{where}: property {key!r} of {model.__name__} is not documented")
            continue
        if field.is_required() and key not in required:
            problems.append(f"{where}: {key!r} is required by {model.__name__}, not in the doc")
        prop = resolve(properties[key])
        for keyword, value in expected_bounds(field.metadata, prop).items():
            if prop.get(keyword) != value:
                problems.append(f"{where}.{key}: expected {keyword}={value}, doc says {prop}")
        for inner in nested_models(field.annotation):
            candidates = object_schemas(properties[key])
            if not candidates:
                problems.append(f"{where}.{key}: no object schema for {inner.__name__}")
                continue
            # The best-matching branch must document the nested model completely.
            drifts = [model_drift(inner, c, f"{where}.{key}") for c in candidates]
            best: list[str] = min(drifts, key=len)
            problems += best
    return problems


def test_the_document_is_openapi_3_1_with_the_basics() -> None:
    doc = spec()
    assert str(doc["openapi"]).startswith("3.1.")
    assert doc["info"]["title"] and doc["info"]["version"]
    assert doc["paths"] and doc["components"]["schemas"]


def test_every_public_route_is_documented_and_nothing_else() -> None:
    served = {
        (route.path, method.lower())
        for route in routes()
        if route.path not in INTERNAL_PATHS
        for method in (route.methods or set())
        if method != "HEAD"  # Starlette adds HEAD to every GET route
    }
    documented = {
        (path, method)
        for path, item in spec()["paths"].items()
        for method in item
        if method in HTTP_METHODS
    }
    assert documented == served


def test_the_internal_route_is_only_mentioned() -> None:
    assert INTERNAL_PATHS.isdisjoint(spec()["paths"])
    for path in INTERNAL_PATHS:
        assert path in spec()["info"]["description"]
    assert {route.path for route in routes()} >= INTERNAL_PATHS


def test_api_gateway_exposes_exactly_the_documented_routes() -> None:
    template = load_template()
    exposed = {
        (event["Properties"]["Path"], event["Properties"]["Method"].lower())
        for resource in template["Resources"].values()
        for event in resource.get("Properties", {}).get("Events", {}).values()
        if event.get("Type") == "Api"
    } - GATEWAY_CATCH_ALL
    documented = {
        (path, method)
        for path, item in spec()["paths"].items()
        for method in item
        if method in HTTP_METHODS
    }
    assert exposed == documented
    assert not any(path in INTERNAL_PATHS for path, _ in exposed)


def test_every_ref_resolves() -> None:
    refs = [node["$ref"] for _, node in walk(spec()) if isinstance(node, dict) and "$ref" in node]
    assert len(refs) > 50
    for ref in refs:
        assert isinstance(ref, str)
        pointer(ref)


def test_every_component_is_used() -> None:
    text = SPEC_PATH.read_text(encoding="utf-8")
    # SnapshotMessage is the WebSocket-only reply documented for docs/events.md.
    standalone = {"SnapshotMessage"}
    for kind, entries in spec()["components"].items():
        for name in entries:
            if kind == "securitySchemes" or name in standalone:
                continue
            used = f'"#/components/{kind}/{name}"' in text
            assert used, f"unused component {kind}/{name}"


def test_operations_have_unique_ids_and_security_schemes_exist() -> None:
    doc = spec()
    ids = [
        op["operationId"]
        for item in doc["paths"].values()
        for method, op in item.items()
        if method in HTTP_METHODS
    ]
    assert len(ids) == len(set(ids))
    schemes = doc["components"]["securitySchemes"]
    assert schemes["bearerAuth"] == {**schemes["bearerAuth"], "type": "http", "scheme": "bearer"}
    assert schemes["appKeyHeader"]["in"] == "header"
    assert schemes["appKeyHeader"]["name"] == "x-api-key"
    for requirement in doc["security"]:
        assert set(requirement) <= set(schemes)
    assert doc["paths"]["/health"]["get"]["security"] == []


@pytest.mark.parametrize("path", sorted(REQUEST_MODELS))
def test_request_schema_documents_every_model_field(path: str) -> None:
    model = REQUEST_MODELS[path]
    assert model_drift(model, request_schema(path), path) == []


def test_the_app_key_field_is_in_every_klai_body() -> None:
    for path in ("/channels/token", *KLAI_STREAM_PATHS, "/llm/query/stop"):
        assert "apiKey" in request_schema(path)["properties"], path


def test_the_streaming_rule_is_stated_in_the_schema() -> None:
    schema = resolve(pointer("#/components/schemas/StreamRequest"))
    stream = schema["if"]["properties"]["payload"]["properties"]["stream"]
    assert stream == {"const": False}
    assert set(schema["else"]["required"]) == {"channels", "actionName"}
    assert schema["else"]["properties"]["channels"]["minItems"] == 1


def request_examples(path: str) -> list[Any]:
    content = spec()["paths"][path]["post"]["requestBody"]["content"]["application/json"]
    examples = [content["example"]] if "example" in content else []
    examples += [resolve(e)["value"] for e in content.get("examples", {}).values()]
    return examples


@pytest.mark.parametrize("path", sorted(REQUEST_MODELS))
def test_request_examples_are_accepted_by_the_model(path: str) -> None:
    examples = request_examples(path)
    assert examples, f"{path} has no request example"
    for example in examples:
        REQUEST_MODELS[path].model_validate(example)


def ack_job(kind: StreamKind, thread: bool = False) -> StreamJob:
    run = ThreadRun(
        thread_id="thread_example1",
        run_id="run_example1",
        new=True,
        lease_until=0,
        ttl_seconds=60,
        added=0,
    )
    return StreamJob(
        stream_id="st_example",
        app_id="dev",
        kind=kind,
        action_name="onLlmMessage",
        payload={"messages": [{"role": "user", "content": "hi"}]},
        flush_interval_ms=0,
        thread=run if thread else None,
    )


def test_acknowledgements_match_what_the_handlers_answer() -> None:
    schemas = spec()["components"]["schemas"]
    kinds: tuple[tuple[StreamKind, str], ...] = (("chat", "ChatAck"), ("llm", "LlmQueryAck"))
    statuses = schemas["AckStreamStatus"]["enum"]
    assert statuses == list(get_args(StreamStatus))
    for kind, name in kinds:
        for status in statuses:
            answer = klai._ack(ack_job(kind), status)
            assert set(schemas[name]["required"]) == set(answer)
            message = answer["message"] if kind == "chat" else answer["data"]["message"]
            assert message in schemas["AckMessage"]["enum"]
    threaded = klai._ack(ack_job("llm", thread=True), "streaming")
    assert set(schemas["LlmQueryAck"]["properties"]) == set(threaded)
    assert set(schemas["ChatAck"]["properties"]) == set(klai._ack(ack_job("chat"), "done"))
    data = klai._ack(ack_job("llm"), "pending")["data"]
    assert set(schemas["LlmQueryAck"]["properties"]["data"]["required"]) == set(data)
    created = runanswers.run_created(ack_job("assistants", thread=True), "pending")
    assert set(schemas["AssistantsAck"]["properties"]) == set(created)
    assert set(schemas["AssistantsAck"]["required"]) == set(created)


def error_statuses() -> set[int]:
    found = set()
    for _, cls in inspect.getmembers(errors, inspect.isclass):
        # Delivery errors concern a browser's connection, never an HTTP caller.
        if issubclass(cls, errors.ProxyError) and not issubclass(cls, errors.DeliveryError):
            found.add(cls.status)
    return found - NOT_HTTP_ANSWERS


def responses_of(path: str) -> dict[str, Any]:
    responses: dict[str, Any] = spec()["paths"][path]["post"]["responses"]
    return responses


@pytest.mark.parametrize("path", [*KLAI_STREAM_PATHS, "/v1/chat/completions"])
def test_stream_routes_document_every_error_status(path: str) -> None:
    # 409 is a run on a busy thread: the routes that take threads only.
    statuses = error_statuses()
    if path in ("/stream/create", "/v1/chat/completions"):
        statuses -= {errors.Conflict.status}
    assert statuses <= {400, 401, 403, 404, 409, 413, 429, 502, 503, 504}
    documented = {int(code) for code in responses_of(path) if code != "200"}
    assert documented == statuses
    shape = "OpenAIError" if path.startswith("/v1/") else "Error"
    for code, response in responses_of(path).items():
        if code == "200":
            continue
        schema = resolve(response)["content"]["application/json"]["schema"]
        assert schema == {"$ref": f"#/components/schemas/{shape}"}, (path, code)


def test_thread_routes_document_their_answers() -> None:
    paths = spec()["paths"]
    stop = paths["/stream/create/assistants/stop"]["post"]["responses"]
    assert set(stop) == {"200", "400", "401", "404", "413", "503"}
    status = pointer("#/components/schemas/RunStopResult")["properties"]["status"]
    assert set(status["enum"]) == {"cancelling", *get_args(RunStatus)} - {"running"}
    read = paths["/threads/{thread_id}/messages"]["get"]["responses"]
    assert set(read) == {"200", "400", "401", "404", "503"}
    erase = paths["/threads/{thread_id}"]["delete"]["responses"]
    assert set(erase) == {"200", "401", "404", "409", "503"}


def test_assistant_routes_document_their_answers() -> None:
    paths = spec()["paths"]
    listed, one = paths["/assistants"], paths["/assistants/{assistant_id}"]
    assert set(listed["post"]["responses"]) == {"201", "400", "401", "409", "413", "503"}
    assert set(listed["get"]["responses"]) == {"200", "400", "401", "503"}
    assert set(one["get"]["responses"]) == {"200", "401", "404", "503"}
    assert set(one["put"]["responses"]) == {"200", "400", "401", "404", "413", "503"}
    assert set(one["delete"]["responses"]) == {"200", "401", "404", "503"}
    body = pointer("#/components/schemas/AssistantRequest")
    assert body["additionalProperties"] is False  # the model refuses unknown fields too


def test_stop_answers_200_for_stopped_and_not_found() -> None:
    responses = responses_of("/llm/query/stop")
    assert "404" not in responses
    examples = responses["200"]["content"]["application/json"]["examples"]
    assert {e["value"]["status"] for e in examples.values()} == {"stopped", "not_found"}
    status = pointer("#/components/schemas/StopResult")["properties"]["status"]
    assert set(status["enum"]) == {"stopped", "not_found"}


def test_klai_stream_routes_offer_json_and_event_stream() -> None:
    for path in (*KLAI_STREAM_PATHS, "/v1/chat/completions"):
        content = responses_of(path)["200"]["content"]
        assert set(content) == {"application/json", "text/event-stream"}, path


def test_error_shapes() -> None:
    schemas = spec()["components"]["schemas"]
    error = schemas["Error"]
    assert set(error["required"]) == {"success", "error"}
    assert set(error["properties"]) == {"success", "actionName", "error"}
    assert error["properties"]["error"] == {"$ref": "#/components/schemas/ErrorObject"}
    body = schemas["ErrorObject"]
    assert set(body["required"]) == {"message", "code", "details", "type"}
    assert (body["properties"]["code"]["type"], body["properties"]["details"]["type"]) == (
        "integer",
        "string",
    )
    assert schemas["ErrorEvent"]["allOf"][1]["properties"]["error"] == error["properties"]["error"]
    openai_error = schemas["OpenAIError"]["properties"]["error"]
    assert set(openai_error["required"]) == {"message", "type", "param", "code"}


def test_usage_has_the_contract_fields() -> None:
    usage = pointer("#/components/schemas/Usage")
    fields = {"prompt_tokens", "completion_tokens", "total_tokens", "estimated"}
    assert set(usage["required"]) == set(usage["properties"]) == fields


def test_every_event_type_has_a_component() -> None:
    envelope = pointer("#/components/schemas/Envelope")
    mapping = envelope["discriminator"]["mapping"]
    assert set(mapping) == ENVELOPE_TYPES
    assert {b["$ref"] for b in envelope["oneOf"]} == set(mapping.values())
    for type_, ref in mapping.items():
        variant = resolve({"$ref": ref})
        declared = next(
            part["properties"]["type"]["const"]
            for part in variant["allOf"]
            if "type" in part.get("properties", {})
        )
        assert declared == type_
        assert variant["example"]["type"] == type_


def test_the_relay_emits_only_documented_event_types() -> None:
    source = "".join(inspect.getsource(m) for m in (relay, relaystart, relaystops, relayend))
    emitted = set(re.findall(r"_(?:emit|text|numbered)\(\"(\w+)\"", source))
    assert {"threadInfo", "delta", "end"} <= emitted
    assert emitted <= ENVELOPE_TYPES


def test_the_websocket_reference_covers_every_action_and_event() -> None:
    text = EVENTS_DOC.read_text(encoding="utf-8")
    headings = set(re.findall(r"^### (\w+)$", text, flags=re.MULTILINE))
    assert headings >= ACTIONS
    assert headings >= ENVELOPE_TYPES
    for fact in ("tab|", "?token=", "128 KB", "2 hours", "10 minutes", "afterSeq", "parts"):
        assert fact in text


# -- examples against their own schemas (jsonschema comes with the dev dependencies) --

SPEC_URI = "urn:streaming-proxy:openapi"


def schema_errors(schema: Any, instance: Any) -> list[str]:
    import jsonschema
    import referencing
    from referencing.jsonschema import DRAFT202012

    resource = referencing.Resource.from_contents(spec(), default_specification=DRAFT202012)
    registry = referencing.Registry().with_resource(SPEC_URI, resource)
    rooted = json.loads(json.dumps(schema).replace('"#/', f'"{SPEC_URI}#/'))
    validator = jsonschema.Draft202012Validator(rooted, registry=registry)
    return [e.message for e in validator.iter_errors(instance)]


def media_examples() -> list[tuple[str, Any, Any]]:
    """(where, schema, example) for every JSON example under a media type."""
    found = []
    for where, node in walk(spec()):
        if not (where.endswith("/application/json") and isinstance(node, dict)):
            continue
        examples = [node["example"]] if "example" in node else []
        examples += [e["value"] for e in node.get("examples", {}).values()]
        found += [(where, node["schema"], example) for example in examples]
    return found


def test_json_examples_match_their_schemas() -> None:
    examples = media_examples()
    assert len(examples) > 20
    for where, schema, example in examples:
        assert schema_errors(schema, example) == [], where


def test_component_examples_match_their_schemas() -> None:
    for name, schema in spec()["components"]["schemas"].items():
        if "example" in schema:
            assert (
                schema_errors({"$ref": f"#/components/schemas/{name}"}, schema["example"]) == []
            ), name


def test_event_stream_examples_carry_valid_frames() -> None:
    frame_schema = {
        "KlaiEventStream": {"$ref": "#/components/schemas/Envelope"},
        "ChunkEventStream": {"$ref": "#/components/schemas/ChatCompletionChunk"},
    }
    for path in (*KLAI_STREAM_PATHS, "/v1/chat/completions"):
        media = responses_of(path)["200"]["content"]["text/event-stream"]
        schema = frame_schema[media["schema"]["$ref"].rsplit("/", 1)[-1]]
        lines = media["example"].splitlines()
        assert lines[0] == ": stream open"
        assert any(line.startswith("data: ") for line in lines)
        event = None
        for line in lines:
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: ") and line != "data: [DONE]":
                frame = json.loads(line[6:])
                assert schema_errors(schema, frame) == [], (path, frame)
                if event is not None:
                    assert frame["type"] == event
