"""One typed error tree; `api/answers.py` and the relay turn these into answers and events."""

from __future__ import annotations

from typing import Any


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


class PayloadTooLarge(ProxyError):
    status = 413
    code = "payload_too_large"


class ValidationFailed(ProxyError):
    status = 422
    code = "invalid_request"


class UnknownProvider(ValidationFailed):
    code = "unknown_provider"


class ProviderNotConfigured(Unauthorized):
    """No provider key on the server and none in the request."""

    code = "provider_key_missing"


class RateLimited(ProxyError):
    status = 429
    code = "rate_limited"


class UpstreamError(ProxyError):
    """The LLM provider answered with an error (HTTP status or an in-stream error)."""

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
        super().__init__(message, details=details, status=status)
        self.upstream_status = upstream_status


class UpstreamTimeout(UpstreamError):
    status = 504
    code = "upstream_timeout"


class ConnectionGone(ProxyError):
    """A WebSocket connection no longer exists (API Gateway 410)."""

    status = 410
    code = "gone"


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
