"""The secrets the fuzzers handed the stack: none of them may come back out."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SecretLedger:
    """Every secret in play: server-held provider keys, the app key, keys and tokens the
    fuzzers sent. None may appear in an answer, a WebSocket reply or the stack's log."""

    _secrets: set[str] = field(default_factory=set)

    def add(self, secret: str) -> str:
        self._secrets.add(secret)
        return secret

    def leaked_in(self, text: str) -> list[str]:
        """The secrets found in `text`, masked so a failure report does not spread them."""
        return sorted(_mask(secret) for secret in self._secrets if secret and secret in text)


def _mask(secret: str) -> str:
    return f"{secret[:4]}...({len(secret)} chars)"
