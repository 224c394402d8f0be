"""The rules every HTTP answer of the product keeps, whatever it was sent.

One exception class per rule, so Hypothesis reports each broken rule as a bug of its own (it
tells failures apart by exception type and origin).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from schemathesis import APIOperation, Case, Response
from schemathesis.specs.openapi.checks import response_schema_conformance

from .event_streams import FrameSchemas, check_frames
from .ledger import SecretLedger

Operation = APIOperation[Any, Any, Any, Any]
Request = Case[Any]
REQUEST_TIMEOUT = 10.0
OPENAI_PREFIX = "/v1/"
# No route answers a 5xx of its own choosing: every one is a bug or an upstream's.
DELIBERATE_5XX: set[int] = set()


class RuleBroken(AssertionError):
    """A rule every answer of the product must keep."""


class ServerErrorAnswer(RuleBroken):
    """A 5xx that no upstream provider caused."""


class NoTimelyAnswer(RuleBroken):
    """No complete answer in REQUEST_TIMEOUT: a hang, a dropped connection, an endless stream."""


class SecretEchoed(RuleBroken):
    """A server key, the app key, a provider key or a token the client sent came back."""


class MalformedError(RuleBroken):
    """An error answer that is not JSON of the documented shape, or whose code misstates it."""


def answered_in_time(case: Request, response: Response, elapsed: float) -> None:
    if response.stream_cut_short or elapsed > REQUEST_TIMEOUT:
        raise NoTimelyAnswer(
            f"{case.method} {case.path}: answer not complete after {elapsed:.1f} s "
            f"(status {response.status_code}, {len(response.content)} bytes read)"
        )


def not_a_server_error(
    method: str, path: str, status: int, documented: set[str], body: bytes
) -> None:
    if status in DELIBERATE_5XX and str(status) in documented:
        return
    if status >= 500:
        excerpt = body[:300].decode("utf-8", "replace")
        raise ServerErrorAnswer(f"{method} {path} answered {status}: {excerpt}")


def no_secret_echoed(response: Response, ledger: SecretLedger) -> None:
    headers = "\n".join(f"{k}: {v}" for k, values in response.headers.items() for v in values)
    leaked = ledger.leaked_in(headers + "\n" + response.content.decode("utf-8", "replace"))
    if leaked:
        raise SecretEchoed(f"answer {response.status_code} carries {leaked}")


def errors_are_documented_json(path: str, status: int, content_type: str, body: bytes) -> None:
    """Klai routes answer `{success: false, error: {message, code, details, type}}` with
    Klai's types (`code` the status, a number; `details` a string), the OpenAI face
    `{error: {message, type, param, code}}`; the kind names the failure, so only a 500 may
    say `internal_error`."""
    if status < 400:
        return
    where = f"{status} on {path}"
    if not content_type.startswith("application/json"):
        raise MalformedError(f"{where}: Content-Type {content_type!r}, not JSON")
    try:
        answer = json.loads(body)
    except ValueError as e:
        raise MalformedError(f"{where}: body is not JSON: {body[:200]!r}") from e
    error = answer.get("error") if isinstance(answer, dict) else None
    if not isinstance(error, dict):
        raise MalformedError(f"{where}: no `error` object in {body[:200]!r}")
    if not isinstance(error.get("message"), str) or not isinstance(error.get("type"), str):
        raise MalformedError(f"{where}: error.message and error.type must be strings: {error}")
    if path.startswith(OPENAI_PREFIX):
        param = error.get("param", 0)
        if not isinstance(error.get("code"), str) or not (param is None or isinstance(param, str)):
            raise MalformedError(f"{where}: not OpenAI's error shape: {error}")
        kind = error["code"]
    else:
        if answer.get("success") is not False:
            raise MalformedError(f"{where}: `success: false` missing: {answer}")
        code = error.get("code")
        # A provider's failure may carry the provider's own status instead of ours.
        provider_code = error["type"].startswith("upstream_") and type(code) is int
        if not (code == status or provider_code) or not isinstance(error.get("details"), str):
            raise MalformedError(f"{where}: error.code must be a number, details a string: {error}")
        kind = error["type"]
    if kind == "internal_error" and status != 500:
        raise MalformedError(f"{where}: code `internal_error` misnames a {status}: {error}")


def verify(
    case: Request,
    response: Response,
    elapsed: float,
    ledger: SecretLedger,
    frames: FrameSchemas,
    checks: list[Callable[..., Any]],
) -> None:
    """Every rule, most telling first; then what the document declares (schemathesis' checks,
    and the frames of an event stream)."""
    answered_in_time(case, response, elapsed)
    documented = set(case.operation.responses.status_codes)
    not_a_server_error(case.method, case.path, response.status_code, documented, response.content)
    no_secret_echoed(response, ledger)
    content_type = ",".join(response.headers.get("content-type", []))
    errors_are_documented_json(case.path, response.status_code, content_type, response.content)
    if content_type.startswith("text/event-stream"):
        validator = frames.validator(case.path, case.method, response.status_code)
        if validator is not None:
            check_frames(validator, response.content, named=not case.path.startswith(OPENAI_PREFIX))
            # Schemathesis would read the stream's `type: string` schema as each event's.
            checks = [check for check in checks if check is not response_schema_conformance]
    case.validate_response(response, checks=checks)
