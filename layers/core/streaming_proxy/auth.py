"""App keys (hashed, constant-time compared) and signed subscribe tokens (JWT, HS256, per app)."""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from .channels.names import check_grantable, name_problem
from .config import AppConfig, Settings
from .errors import Forbidden, Unauthorized, ValidationFailed

ALGORITHM = "HS256"
MAX_CHANNELS_PER_TOKEN = 100


def key_digest(api_key: str) -> str:
    """SHA-256 hex of an app key: the only form in which keys are stored or compared."""
    return hashlib.sha256(api_key.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class App:
    """A calling application known to this deployment."""

    app_id: str
    config: AppConfig


@dataclass(frozen=True, slots=True)
class TokenClaims:
    """What a verified subscribe token grants."""

    app_id: str
    channels: frozenset[str]
    expires_at: int

    def covers(self, channel: str) -> bool:
        return channel in self.channels


class AppRegistry:
    """The apps of this deployment; authenticates keys and verifies their tokens."""

    def __init__(self, apps: Mapping[str, AppConfig]) -> None:
        self._apps = {app_id: App(app_id, cfg) for app_id, cfg in apps.items()}

    @classmethod
    def from_settings(cls, settings: Settings) -> AppRegistry:
        return cls(settings.apps)

    def get(self, app_id: str) -> App | None:
        return self._apps.get(app_id)

    def authenticate(self, api_key: str | None) -> App:
        """Return the app owning `api_key`, comparing digests in constant time against all apps."""
        if not api_key:
            raise Unauthorized(
                "missing app key: send it as apiKey, as a bearer token or in x-api-key"
            )
        presented = key_digest(api_key)
        found: App | None = None
        for app in self._apps.values():
            # No early exit: every app is compared so timing says nothing about which matched.
            if hmac.compare_digest(presented, app.config.key_sha256):
                found = app
        if found is None:
            raise Unauthorized("invalid app key")
        return found

    def mint_token(
        self, app: App, channels: Iterable[str], ttl_seconds: int, *, now: float | None = None
    ) -> tuple[str, int]:
        """A subscribe token for `channels`, valid `ttl_seconds`; returns (token, expiresAt)."""
        names = sorted(set(channels))
        if not names:
            raise ValidationFailed("a token needs at least one channel")
        if len(names) > MAX_CHANNELS_PER_TOKEN:
            raise ValidationFailed(f"a token may name at most {MAX_CHANNELS_PER_TOKEN} channels")
        for name in names:
            problem = name_problem(name)
            if problem is not None:
                raise ValidationFailed(f"channel {problem}")
        check_grantable(names)
        if ttl_seconds <= 0:
            raise ValidationFailed("ttl must be positive")
        issued = int(now if now is not None else time.time())
        expires = issued + ttl_seconds
        claims = {"app": app.app_id, "channels": names, "iat": issued, "exp": expires}
        secret = app.config.token_secret.get_secret_value()
        import jwt  # on first use: an LLM Query with the app key has no token (decision 40)

        return jwt.encode(claims, secret, algorithm=ALGORITHM), expires

    def verify_token(self, token: str | None) -> TokenClaims:
        """Verify signature, expiry and app of a subscribe token.

        Missing or expired -> Unauthorized (401: get a new token); tampered, unknown app or
        malformed -> Forbidden (403).
        """
        if not token:
            raise Unauthorized("missing subscribe token")
        import jwt  # on first use; the connections function imports it with its code

        try:
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError as e:
            raise Forbidden("malformed subscribe token") from e
        app_id = unverified.get("app")
        app = self.get(app_id) if isinstance(app_id, str) else None
        if app is None:
            raise Forbidden("subscribe token names an unknown app")
        try:
            claims = jwt.decode(
                token,
                app.config.token_secret.get_secret_value(),
                algorithms=[ALGORITHM],
                options={"require": ["exp", "app", "channels"]},
            )
        except jwt.ExpiredSignatureError as e:
            raise Unauthorized("subscribe token expired") from e
        except jwt.PyJWTError as e:
            raise Forbidden("invalid subscribe token") from e
        channels = claims["channels"]
        if not isinstance(channels, list) or not all(isinstance(c, str) for c in channels):
            raise Forbidden("subscribe token has no valid channel list")
        return TokenClaims(app.app_id, frozenset(channels), int(claims["exp"]))


def presented_key(
    body_key: str | None, authorization: str | None, x_api_key: str | None
) -> str | None:
    """The app key from the body, `Authorization: Bearer`, or `x-api-key`, in that order."""
    if body_key:
        return body_key
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    return x_api_key or None
