"""HS256 JSON Web Tokens (RFC 7519, compact form): the only kind the proxy signs and reads.

Written out rather than taken from PyJWT: `import jwt` loads every algorithm PyJWT knows,
with `cryptography` when it is installed, and its JWKS client (30-70 ms of each cold
start), for one HMAC. Tokens are byte for byte what PyJWT's `encode(claims, secret,
algorithm="HS256")` makes, and `verify` checks what PyJWT's `decode` checks on them:
the algorithm, the signature, the required claims, then `iat`, `nbf`, `exp` and `aud`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from typing import Any

ALGORITHM = "HS256"


class InvalidToken(ValueError):
    """Malformed, signed with another key or algorithm, or a claim that does not hold."""


class ExpiredToken(InvalidToken):
    """Well formed and signed, but its `exp` has passed."""


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(segment: str) -> bytes:
    data = segment.encode("ascii")
    return base64.urlsafe_b64decode(data + b"=" * (-len(data) % 4))


def _compact_json(value: dict[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode("utf-8")


_HEADER = _b64encode(_compact_json({"alg": ALGORITHM, "typ": "JWT"}))


def _signature(signing_input: str, secret: str) -> bytes:
    key = secret.encode("utf-8")
    return hmac.new(key, signing_input.encode("ascii"), hashlib.sha256).digest()


def encode(claims: dict[str, Any], secret: str) -> str:
    """`claims` signed with `secret`."""
    signing_input = f"{_HEADER}.{_b64encode(_compact_json(claims))}"
    return f"{signing_input}.{_b64encode(_signature(signing_input, secret))}"


def _parts(token: str) -> tuple[dict[str, Any], dict[str, Any], str, bytes]:
    """Header, claims, signing input and signature; InvalidToken when any is malformed."""
    segments = token.split(".")
    if len(segments) != 3:
        raise InvalidToken("a token has three segments")
    header_segment, claims_segment, signature = segments
    try:
        header = json.loads(_b64decode(header_segment))
        claims = json.loads(_b64decode(claims_segment))
        raw_signature = _b64decode(signature)
    # ValueError covers UnicodeError and JSONDecodeError; RecursionError is JSON nested
    # deeper than the parser goes (a crafted token: a refusal, not a crash).
    except (ValueError, binascii.Error, RecursionError) as e:
        raise InvalidToken("malformed segment") from e
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise InvalidToken("header and claims must be JSON objects")
    return header, claims, f"{header_segment}.{claims_segment}", raw_signature


def unverified_claims(token: str) -> dict[str, Any]:
    """The claims of a well-formed token, signature NOT checked (to pick the key)."""
    return _parts(token)[1]


def verify(
    token: str, secret: str, *, required: tuple[str, ...] = (), now: float | None = None
) -> dict[str, Any]:
    """The claims of `token` once its signature with `secret` and its claims hold."""
    header, claims, signing_input, signature = _parts(token)
    if header.get("alg") != ALGORITHM:
        raise InvalidToken("the algorithm is not allowed")
    if not hmac.compare_digest(signature, _signature(signing_input, secret)):
        raise InvalidToken("signature verification failed")
    _check_claims(claims, required, time.time() if now is None else now)
    return claims


def _check_claims(claims: dict[str, Any], required: tuple[str, ...], now: float) -> None:
    for name in required:
        if claims.get(name) is None:
            raise InvalidToken(f'token is missing the "{name}" claim')
    if "iat" in claims and _integer(claims, "iat") > now:
        raise InvalidToken("the token is not yet valid (iat)")
    if "nbf" in claims and _integer(claims, "nbf") > now:
        raise InvalidToken("the token is not yet valid (nbf)")
    if "exp" in claims and _integer(claims, "exp") <= now:
        raise ExpiredToken("signature has expired")
    if "aud" in claims:  # no audience is expected, so a token naming one is not for us
        raise InvalidToken("invalid audience")


def _integer(claims: dict[str, Any], name: str) -> int:
    try:
        return int(claims[name])
    except (ValueError, TypeError, OverflowError) as e:
        raise InvalidToken(f"the {name} claim must be an integer") from e
