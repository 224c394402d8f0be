"""The AWS credentials posts are signed with, found by botocore's chain and kept between posts."""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import cached_property
from typing import TYPE_CHECKING

from botocore.exceptions import BotoCoreError

from ..errors import DeliveryError, DeliveryUnreachable
from .sigv4 import Credentials

if TYPE_CHECKING:
    from botocore.credentials import Credentials as BotocoreCredentialSet

__all__ = ["REREAD_SECONDS", "BotocoreCredentials", "CredentialSource"]

CredentialSource = Callable[[], Credentials]

# How long a frozen copy of refreshable credentials is used before botocore is asked again.
# botocore renews them 15 minutes before they expire (10 at the latest), so a copy this old
# is always valid for several more minutes; asking per post would cost ~13 us each.
REREAD_SECONDS = 30.0


class BotocoreCredentials:
    """The credentials botocore's chain finds: environment (Lambda), profile, container, role.

    The chain is searched once, on first use, so creating a poster costs nothing at cold
    start. Fixed credentials (Lambda's environment) are frozen once; refreshable ones (a
    role, a container endpoint) are frozen again every `REREAD_SECONDS`, which lets botocore
    renew them before they expire (a renewal, when due, blocks the event loop for that call).
    """

    def __init__(
        self, *, reread_seconds: float = REREAD_SECONDS, clock: Callable[[], float] | None = None
    ) -> None:
        self._reread_seconds = reread_seconds
        self._clock = clock or time.monotonic
        self._frozen: Credentials | None = None
        self._fresh_until = 0.0

    @cached_property
    def _found(self) -> BotocoreCredentialSet | None:
        # Imported here: botocore's session module costs tens of milliseconds to import.
        from botocore.session import get_session

        return get_session().get_credentials()

    @cached_property
    def _refreshable(self) -> bool:
        from botocore.credentials import RefreshableCredentials

        return isinstance(self._found, RefreshableCredentials)

    def __call__(self) -> Credentials:
        now = self._clock()
        if self._frozen is not None and now < self._fresh_until:
            return self._frozen
        self._frozen = self._freeze()
        self._fresh_until = now + self._reread_seconds if self._refreshable else float("inf")
        return self._frozen

    def _freeze(self) -> Credentials:
        if self._found is None:
            raise DeliveryError("no AWS credentials to sign posts to connections with")
        try:
            frozen = self._found.get_frozen_credentials()
        except BotoCoreError as e:  # the credential endpoint did not answer a refresh
            raise DeliveryUnreachable(
                f"could not refresh AWS credentials: {type(e).__name__}"
            ) from e
        if not frozen.access_key or not frozen.secret_key:
            raise DeliveryError("the AWS credentials found are incomplete")
        return Credentials(frozen.access_key, frozen.secret_key, frozen.token or None)
