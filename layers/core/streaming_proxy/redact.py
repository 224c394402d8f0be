"""Keeping secrets out of everything the proxy says: HTTP answers, stream events, logs.

Two nets. Every key the process knows (server provider keys, `COMPAT_ENDPOINTS` keys,
token secrets, and each running stream's `payload.apiKey` while it runs) is replaced
wherever it appears, as it is or in the forms an echo writes it in (JSON-escaped, as an
error quoting the request's JSON does, `/` escaped too, and URL-encoded); and anything
shaped like a credential (bearer tokens, OpenAI- and Anthropic-style secret keys, Google
and AWS keys, JWTs, `api_key=...` pairs) is replaced even when nobody told us it was one,
since a provider or a proxy in front of it may echo what it was sent.
"""

from __future__ import annotations

import json
import re
import threading
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from urllib.parse import quote, quote_plus

from pydantic import SecretStr

REDACTED = "[redacted]"
# Shorter values are too likely to be ordinary words to replace everywhere.
MIN_SECRET_CHARS = 8

_SHAPES = re.compile(
    r"(?i:bearer)\s+[A-Za-z0-9._~+/=-]{8,}"  # Authorization: Bearer <token>
    r"|\b(?:sk|pk|rk)-[A-Za-z0-9_-]{12,}"  # OpenAI / Anthropic style keys
    r"|\bAIza[0-9A-Za-z_-]{20,}"  # Google API keys
    r"|\bA(?:KI|SI)A[0-9A-Z]{16}\b"  # AWS access key ids (long-term, temporary)
    r"|\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*"  # JWTs
)
_PAIRS = re.compile(
    r"(?i)((?:x-)?(?:api[-_]?key|access[-_]?token|secret(?:[-_]?key)?|password|"
    r"authorization|x-goog-api-key|(?P<token>token))[\"']?\s*[:=]\s*[\"']?)([^\"'\s,;&}]+)"
)
# A bare `...token` key whose value is a number names a count or a time (`TimeToFirstToken`,
# `maxToken`), not a credential: no token a provider or AWS issues is a plain number.
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")


class _Secrets:
    """Every secret value the process knows; values of running streams are counted in/out."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._permanent: set[str] = set()
        self._active: Counter[str] = Counter()
        self._pattern: re.Pattern[str] | None = None
        self._frozen: frozenset[str] | None = None

    def remember(self, values: Iterable[str | SecretStr | None]) -> None:
        with self._lock:
            before = len(self._permanent)
            self._permanent.update(forms(values))
            if len(self._permanent) != before:
                self._pattern = self._frozen = None

    @contextmanager
    def active(self, values: Iterable[str | SecretStr | None]) -> Iterator[None]:
        plain = forms(values)
        with self._lock:
            self._active.update(plain)
            self._pattern = None
        try:
            yield
        finally:
            with self._lock:
                self._active.subtract(plain)
                self._active += Counter()  # drop the values that reached zero
                self._pattern = None

    def permanent(self) -> frozenset[str]:
        """The forms of the values remembered for the life of the process (the same object
        until one more is remembered: a cache key that hashes once)."""
        with self._lock:
            if self._frozen is None:
                self._frozen = frozenset(self._permanent)
            return self._frozen

    def pattern(self) -> re.Pattern[str] | None:
        with self._lock:
            if self._pattern is None:
                values = self._permanent | set(self._active)
                if not values:
                    return None
                # Longest first, so a key containing another key is replaced whole.
                ordered = sorted(values, key=len, reverse=True)
                self._pattern = re.compile("|".join(re.escape(v) for v in ordered))
            return self._pattern


def forms(values: Iterable[str | SecretStr | None]) -> list[str]:
    """Each secret long enough to replace, in every form text may hold it: as it is,
    JSON-escaped (once and twice: an error quoting a request that quoted it), with `/`
    escaped as PHP writes it, and URL-encoded (upper- and lower-case hex, `+` or `%20`)."""
    forms: list[str] = []
    for value in _plain(values):
        if len(value) < MIN_SECRET_CHARS:
            continue
        escaped = json.dumps(value)[1:-1]
        url = quote(value, safe="")
        variants = {
            value,
            escaped,
            json.dumps(value, ensure_ascii=False)[1:-1],
            escaped.replace("/", "\\/"),
            json.dumps(escaped)[1:-1],
            url,
            _LOWER_HEX.sub(lambda m: m.group().lower(), url),
            quote_plus(value, safe=""),
        }
        forms.extend(sorted(variants))
    return forms


_LOWER_HEX = re.compile(r"%[0-9A-F]{2}")


def _plain(values: Iterable[str | SecretStr | None]) -> Iterator[str]:
    for value in values:
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        if value:
            yield value


SECRETS = _Secrets()


def remember(*values: str | SecretStr | None) -> None:
    """Redact these values everywhere, for the life of the process."""
    SECRETS.remember(values)


def active(*values: str | SecretStr | None) -> AbstractContextManager[None]:
    """Redact these values everywhere while the block runs (a request's own provider key)."""
    return SECRETS.active(values)


def scrub(text: str, *extra: str | SecretStr | None) -> str:
    """`text` with every known secret and every credential-shaped string replaced."""
    for value in sorted(forms(extra), key=len, reverse=True):
        text = text.replace(value, REDACTED)
    known = SECRETS.pattern()
    if known is not None:
        text = known.sub(REDACTED, text)
    text = _SHAPES.sub(REDACTED, text)
    return _PAIRS.sub(_redact_pair, text)


def _redact_pair(match: re.Match[str]) -> str:
    key, value = match.group(1), match.group(3)
    if match.group("token") is not None and _NUMBER.fullmatch(value):
        return key + value
    return key + REDACTED


def bounded(text: str, limit: int = 300) -> str:
    """One line of at most `limit` characters (provider messages can be whole documents)."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"
