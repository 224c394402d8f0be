"""One typed error tree; `api/answers.py` and the relay turn these into answers and events."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypedDict

from pydantic import ValidationError

from .redact import bounded, scrub

# Provider messages are cut to this many characters (some answer with whole documents).
UPSTREAM_MESSAGE_CHARS = 500


class FieldProblem(TypedDict):
    """One invalid field of a request or message: its dotted path and what is wrong."""

    field: str
    message: str


class ProxyError(Exception):
    """Base of every error the proxy reports to a caller.

    `status` is the HTTP status it maps to; `kind` a stable machine-readable name (sent as
    `error.type`); `code` Klai's numeric `error.code` (the status, or a provider's own);
    `details` one short sentence with the specifics ("" when none, never secrets); `fields`
    the per-field problems of an invalid request (its `details` by default).
    """

    status: int = 500
    kind: str = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        details: str = "",
        fields: Sequence[FieldProblem] = (),
        status: int | None = None,
        kind: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.fields = list(fields)
        self.details = details or describe(self.fields)
        if status is not None:
            self.status = status
        if kind is not None:
            self.kind = kind
        self.code: int = self.status

    def headers(self) -> dict[str, str]:
        """HTTP headers the answer carries besides its body (none but for a 429's wait)."""
        return {}


def describe(fields: Sequence[FieldProblem], limit: int = 5) -> str:
    """`field: problem; field: problem` for the first `limit` problems."""
    shown = "; ".join(f"{p['field']}: {p['message']}" for p in fields[:limit])
    more = len(fields) - limit
    return shown + (f"; and {more} more" if more > 0 else "")


def field_problems(error: ValidationError, skip: int = 0) -> list[FieldProblem]:
    """Pydantic's errors as field problems (never echoing the values sent); `skip` drops
    leading path parts (a union's tag)."""
    return [
        {"field": ".".join(str(p) for p in err["loc"][skip:]) or "(body)", "message": err["msg"]}
        for err in error.errors(include_input=False, include_url=False)
    ]


def error_object(error: ProxyError) -> dict[str, Any]:
    """The one error object of every Klai answer, `error` event and action error:
    Klai's `{message, code (number), details (string)}` plus `type` and `fields`."""
    body: dict[str, Any] = {
        "message": scrub(error.message),
        "code": error.code,
        "details": scrub(error.details),
        "type": error.kind,
    }
    if error.fields:
        body["fields"] = [
            {"field": scrub(p["field"]), "message": scrub(p["message"])} for p in error.fields
        ]
    return body


class BadRequest(ProxyError):
    status = 400
    kind = "bad_request"


class Unauthorized(ProxyError):
    status = 401
    kind = "unauthorized"


class Forbidden(ProxyError):
    status = 403
    kind = "forbidden"


class NotFound(ProxyError):
    status = 404
    kind = "not_found"


class Conflict(ProxyError):
    """The request loses a race it may not win twice (a tool call already answered)."""

    status = 409
    kind = "conflict"


class PayloadTooLarge(ProxyError):
    status = 413
    kind = "payload_too_large"


class ValidationFailed(ProxyError):
    """A field is missing, of the wrong type or out of range: 400, as Klai answers."""

    status = 400
    kind = "invalid_request"


def invalid_request(error: ValidationError) -> ValidationFailed:
    """A body's validation failure as the 400 listing each invalid field."""
    problems = field_problems(error)
    return ValidationFailed(f"invalid request: {describe(problems)}", fields=problems)


class UnknownProvider(ValidationFailed):
    kind = "unknown_provider"


class ImageUrlRefused(BadRequest):
    """An image URL the proxy will not or could not fetch (SSRF guard, size, type, timeout)."""

    kind = "image_url_refused"


class ProviderNotConfigured(Unauthorized):
    """No provider key on the server and none in the request."""

    kind = "provider_key_missing"


class ModelNotAllowed(Forbidden):
    """The app's `models` entry does not allow this provider or model (policy.py)."""

    kind = "model_not_allowed"


class ProviderKeyRefused(Forbidden):
    """The app's entry says `allowClientProviderKey: false` and the request brought a key."""

    kind = "provider_key_refused"


class RateLimited(ProxyError):
    """The app is over its `rateLimit` (requests per minute, limits.py); `retry_after`: the
    seconds to the next window, sent as `Retry-After`."""

    status = 429
    kind = "rate_limited"

    def __init__(self, message: str, *, retry_after: int, details: str = "") -> None:
        super().__init__(message, details=details)
        self.retry_after = max(1, retry_after)

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class QuotaExceeded(RateLimited):
    """The app used its `tokenQuota` for the day (UTC); `retry_after` runs to midnight."""

    kind = "quota_exceeded"


class UpstreamError(ProxyError):
    """The LLM provider answered with an error (HTTP status or an in-stream error).

    The message is bounded and scrubbed of secrets here, once, because it may quote what
    a provider (or a proxy in front of it) said, and some echo the request, keys included.
    """

    status = 502
    kind = "upstream_error"

    def __init__(
        self,
        message: str,
        *,
        upstream_status: int | None = None,
        details: str = "",
    ) -> None:
        # Without a provider status the class's own status stands (502, or 504 for timeouts).
        status = upstream_http_status(upstream_status) if upstream_status is not None else None
        message = bounded(scrub(message), UPSTREAM_MESSAGE_CHARS)
        super().__init__(message, details=details, status=status)
        self.upstream_status = upstream_status
        # Klai's `error.code` is the provider's own number when there is one.
        if upstream_status is not None:
            self.code = upstream_status


class UpstreamTimeout(UpstreamError):
    status = 504
    kind = "upstream_timeout"


class DependencyUnavailable(ProxyError):
    """A service the proxy needs (DynamoDB, Lambda) did not answer or refused for now."""

    status = 503
    kind = "dependency_unavailable"


class StreamLost(DependencyUnavailable):
    """A detached relay Lambda gave up on (its event aged out, or its run died): told to
    the stream's channels by the dead-letter handler (deadletter.py)."""


# -- delivery to WebSocket connections -------------------------------------------------------
# Kept apart from request errors, as a connection failure is kept apart from a status error:
# the publisher retries the retryable ones and counts every post that still fails.


class DeliveryError(ProxyError):
    """A post to one WebSocket connection failed."""

    status = 502
    kind = "delivery_failed"
    retryable = False


class ConnectionGone(DeliveryError):
    """The connection no longer exists (API Gateway 410): delete it, never retry."""

    status = 410
    kind = "gone"


class DeliveryThrottled(DeliveryError):
    """API Gateway throttled the post (429 LimitExceededException): back off, retry."""

    status = 429
    kind = "delivery_throttled"
    retryable = True


class DeliveryRejected(DeliveryError):
    """API Gateway refused the post for good (403 Forbidden, 413 too large, other 4xx)."""

    kind = "delivery_rejected"


class DeliveryServerError(DeliveryError):
    """The management API answered 5xx: retry."""

    kind = "delivery_server_error"
    retryable = True


class DeliveryUnreachable(DeliveryError):
    """No answer: timeout, refused or reset connection. Retry."""

    status = 504
    kind = "delivery_unreachable"
    retryable = True


def delivery_error(status: int, error_code: str, connection_id: str) -> DeliveryError:
    """The one mapping from a `@connections` answer (HTTP status, AWS error code) to the tree."""
    where = f"post to connection {connection_id}"
    # botocore names an error without a code after its status: say the status once.
    answer = f"HTTP {status}" + (
        f" {error_code}" if error_code and error_code != str(status) else ""
    )
    if status == 410 or error_code == "GoneException":
        return ConnectionGone(f"connection {connection_id} is gone")
    if status == 429 or error_code in ("LimitExceededException", "TooManyRequestsException"):
        return DeliveryThrottled(f"{where} throttled ({answer})")
    if status >= 500:
        return DeliveryServerError(f"{where} failed: {answer}", status=status)
    return DeliveryRejected(f"{where} refused: {answer}", status=status if status else 502)


def upstream_http_status(upstream_status: int | None) -> int:
    """Map a provider's HTTP status to ours: client errors pass through, the rest is 502."""
    if upstream_status is None:
        return 502
    if upstream_status in (400, 401, 403, 404, 408, 409, 413, 422, 429):
        return upstream_status
    if upstream_status == 504:
        return 504
    return 502
