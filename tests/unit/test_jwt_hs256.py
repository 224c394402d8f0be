"""Subscribe tokens: the proxy's own HS256 code makes and judges them exactly as PyJWT does."""

from __future__ import annotations

import base64
import json
import time
import warnings
from typing import Any

import jwt
import pytest

from streaming_proxy import jwt_hs256

SECRET = "a-token-secret-long-enough-for-hs256-keys"
REQUIRED = ("exp", "app", "channels")


def claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"app": "app1", "channels": ["a", "b"], "iat": now, "exp": now + 600, **changes}


def pyjwt_verdict(token: str, secret: str = SECRET) -> str:
    try:
        jwt.decode(token, secret, algorithms=["HS256"], options={"require": list(REQUIRED)})
    except jwt.ExpiredSignatureError:
        return "expired"
    except jwt.PyJWTError:
        return "invalid"
    return "valid"


def our_verdict(token: str, secret: str = SECRET) -> str:
    try:
        jwt_hs256.verify(token, secret, required=REQUIRED)
    except jwt_hs256.ExpiredToken:
        return "expired"
    except jwt_hs256.InvalidToken:
        return "invalid"
    return "valid"


def segment(value: Any) -> str:
    raw = json.dumps(value).encode() if not isinstance(value, bytes) else value
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@pytest.mark.parametrize(
    "payload",
    [
        claims(),
        claims(channels=["ünïcode", "x" * 300]),
        {"app": "a", "exp": 1, "nested": {"k": [1]}},
    ],
)
def test_tokens_are_byte_for_byte_pyjwts(payload: dict[str, Any]) -> None:
    assert jwt_hs256.encode(payload, SECRET) == jwt.encode(payload, SECRET, algorithm="HS256")


def test_a_pyjwt_token_verifies_to_the_same_claims() -> None:
    token = jwt.encode(claims(), SECRET, algorithm="HS256")
    assert jwt_hs256.verify(token, SECRET, required=REQUIRED) == jwt.decode(
        token, SECRET, algorithms=["HS256"]
    )
    assert jwt_hs256.unverified_claims(token) == jwt.decode(
        token, options={"verify_signature": False}
    )


def _tampered() -> str:
    header, _, signature = jwt_hs256.encode(claims(), SECRET).split(".")
    return f"{header}.{segment(claims(channels=['admin']))}.{signature}"


def _hs512() -> str:
    """The right key under another algorithm (short for HS512 on purpose: PyJWT warns)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jwt.warnings.InsecureKeyLengthWarning)
        return jwt.encode(claims(), SECRET, algorithm="HS512")


def _alg_none() -> str:
    return f"{segment({'alg': 'none', 'typ': 'JWT'})}.{segment(claims())}."


NOW = int(time.time())
CASES: dict[str, tuple[str, str]] = {
    "good": (jwt_hs256.encode(claims(), SECRET), "valid"),
    "other key": (jwt_hs256.encode(claims(), SECRET + "x"), "invalid"),
    "tampered claims": (_tampered(), "invalid"),
    "alg none": (_alg_none(), "invalid"),
    "HS512": (_hs512(), "invalid"),
    "missing channels": (jwt_hs256.encode({"app": "a", "exp": NOW + 60}, SECRET), "invalid"),
    "null exp": (jwt_hs256.encode(claims(exp=None), SECRET), "invalid"),
    "expired": (jwt_hs256.encode(claims(exp=NOW - 5), SECRET), "expired"),
    "exp not a number": (jwt_hs256.encode(claims(exp="soon"), SECRET), "invalid"),
    "issued in the future": (jwt_hs256.encode(claims(iat=NOW + 3600), SECRET), "invalid"),
    "not before later": (jwt_hs256.encode(claims(nbf=NOW + 3600), SECRET), "invalid"),
    "an audience": (jwt_hs256.encode(claims(aud="someone"), SECRET), "invalid"),
    "two segments": ("abc.def", "invalid"),
    "four segments": (jwt_hs256.encode(claims(), SECRET) + ".x", "invalid"),
    "claims not JSON": (f"{segment({'alg': 'HS256'})}.{segment(b'{no')}.sig", "invalid"),
    "claims an array": (f"{segment({'alg': 'HS256'})}.{segment([1])}.sig", "invalid"),
    "not ASCII": ("é.é.é", "invalid"),
    "empty": ("", "invalid"),
}


@pytest.mark.parametrize("name", CASES)
def test_each_token_gets_pyjwts_verdict(name: str) -> None:
    token, expected = CASES[name]
    assert our_verdict(token) == expected
    assert pyjwt_verdict(token) == expected


def test_expiry_is_exclusive_of_its_second() -> None:
    token = jwt_hs256.encode(claims(iat=1000, exp=2000), SECRET)
    assert jwt_hs256.verify(token, SECRET, now=1999.5)["exp"] == 2000
    with pytest.raises(jwt_hs256.ExpiredToken):
        jwt_hs256.verify(token, SECRET, now=2000)


@pytest.mark.parametrize("token", ["abc", "a.b", "e30.e30.e30.e30", "!!.!!.!!", "W10.e30.x"])
def test_unverified_claims_refuse_what_is_not_a_token(token: str) -> None:
    with pytest.raises(jwt_hs256.InvalidToken):
        jwt_hs256.unverified_claims(token)


def test_claims_nested_past_the_parsers_depth_are_refused_not_a_crash() -> None:
    deep = "[" * 100_000 + "]" * 100_000
    token = f"{segment({'alg': 'HS256'})}.{segment(deep.encode())}.sig"
    with pytest.raises(jwt_hs256.InvalidToken):
        jwt_hs256.unverified_claims(token)
