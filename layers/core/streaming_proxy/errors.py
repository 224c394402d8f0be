"""One typed error tree; `api/answers.py` and the relay turn these into answers and events."""

from __future__ import annotations

from typing import Any

from .redact import bounded, scrub

# Provider messages are cut to this many characters (some answer with whole documents).
UPSTREAM_MESSAGE_CHARS = 500


class ProxyError(Exception):
    """Base of every error the proxy reports to a caller.

    `status` is the HTTP status the error maps to, `code` a stable machine-readable
    name, `details` optional structured context (never secrets).
    """

    status: int = 500
    code: str = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        details: Any = None,
        status: int | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        if status is not None:
            self.status = status
        if code is not None:
            self.code = code


class BadRequest(ProxyError):
    status = 400
    code = "bad_request"


class Unauthorized(ProxyError):
    status = 401
    code = "unauthorized"


class Forbidden(ProxyError):
    status = 403
    code = "forbidden"


class NotFound(ProxyError):
    status = 404
    code = "not_found"


class Conflict(ProxyError):
    """The request loses a race it may not win twice (a tool call already answered)."""

    status = 409
    code = "conflict"


class PayloadTooLarge(ProxyError):
    status = 413
    code = "payload_too_large"


class ValidationFailed(ProxyError):
    status = 422
    code = "invalid_request"


class UnknownProvider(ValidationFailed):
    code = "unknown_provider"


class ImageUrlRefused(BadRequest):
    """An image URL the proxy will not or could not fetch (SSRF guard, size, type, timeout)."""

    code = "image_url_refused"


class ProviderNotConfigured(Unauthorized):
    """No provider key on the server and none in the request."""

    code = "provider_key_missing"


class RateLimited(ProxyError):
    status = 429
    code = "rate_limited"


class UpstreamError(ProxyError):
    """The LLM provider answered with an error (HTTP status or an in-stream error).

    The message is bounded and scrubbed of secrets here, once, because it may quote what
    a provider (or a proxy in front of it) said, and some echo the request, keys included.
    """

    status = 502
    code = "upstream_error"

    def __init__(
        self,
        message: str,
        *,
        upstream_status: int | None = None,
        details: Any = None,
    ) -> None:
        # Without a provider status the class's own status stands (502, or 504 for timeouts).
        status = upstream_http_status(upstream_status) if upstream_status is not None else None
        message = bounded(scrub(message), UPSTREAM_MESSAGE_CHARS)
        super().__init__(message, details=details, status=status)
        self.upstream_status = upstream_status


class UpstreamTimeout(UpstreamError):
    status = 504
    code = "upstream_timeout"


class DependencyUnavailable(ProxyError):
    """A service the proxy needs (DynamoDB, Lambda) did not answer or refused for now."""

    status = 503
    code = "dependency_unavailable"


# -- delivery to WebSocket connections -------------------------------------------------------
# Kept apart from request errors, as a connection failure is kept apart from a status error:
# the publisher retries the retryable ones and counts every post that still fails.


class DeliveryError(ProxyError):
    """A post to one WebSocket connection failed."""

    status = 502
    code = "delivery_failed"
    retryable = False


class ConnectionGone(DeliveryError):
    """The connection no longer exists (API Gateway 410): delete it, never retry."""

    status = 410
    code = "gone"


class DeliveryThrottled(DeliveryError):
    """API Gateway throttled the post (429 LimitExceededException): back off, retry."""

    status = 429
    code = "delivery_throttled"
    retryable = True


class DeliveryRejected(DeliveryError):
    """API Gateway refused the post for good (403 Forbidden, 413 too large, other 4xx)."""

    code = "delivery_rejected"


class DeliveryServerError(DeliveryError):
    """The management API answered 5xx: retry."""

    code = "delivery_server_error"
    retryable = True


class DeliveryUnreachable(DeliveryError):
    """No answer: timeout, refused or reset connection. Retry."""

    status = 504
    code = "delivery_unreachable"
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


class NotSupported(ProxyError):
    """A contract endpoint this deployment does not offer."""

    status = 501
    code = "not_supported"
