"""Dependencies: the stream function's settings, stores and clients, made once per process."""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property
from typing import TYPE_CHECKING, ParamSpec, TypeVar

import httpx

from . import aws, nethttp, redact
from .auth import AppRegistry
from .blocking import BlockingCalls, dependency_error
from .channels.poster import BotoPoster, Poster
from .channels.publisher import RetryPolicy, SlowConnections
from .channels.store import ConnectionStore
from .config import Settings
from .errors import ProxyError
from .limits import LimitStore
from .observability import get_logger
from .providers import ProviderRegistry
from .streams import StreamStore

if TYPE_CHECKING:
    from .assistants import AssistantStore
    from .providers.imagefetch import ImageFetcher
    from .runs import ThreadRuns
    from .threads import ThreadStore
    from .toolcalls import ToolCallStore
    from .tools.frontend import LocalAnswers
    from .tools.webhook import ToolWebhooks

P = ParamSpec("P")
T = TypeVar("T")

STORE = "the stream store (DynamoDB)"
# Longer than any wait (300 s at most) plus the stream around it.
TOOL_RECORD_TTL_SECONDS = 3600


class Dependencies:
    """The stores and clients every use case shares (service.py); the rarely used ones are
    made on first use."""

    def __init__(
        self,
        settings: Settings,
        *,
        http: httpx.AsyncClient | None = None,
        poster: Poster | None = None,
    ) -> None:
        self.settings = settings
        redact.remember(*settings.secret_values())
        self.apps = AppRegistry.from_settings(settings)
        self._client = client = aws.dynamodb(settings.aws_region, settings.dynamodb_endpoint_url)
        self.connections = ConnectionStore(
            client, settings.table_name, settings.connection_ttl_seconds
        )
        self.streams = StreamStore(client, settings.table_name, settings.stream_ttl_seconds)
        self.limits = LimitStore(client, settings.table_name)
        # DynamoDB work has a pool of its own: posts never queue behind it, nor it behind them.
        self.db = BlockingCalls(settings.db_concurrency, "dynamodb")
        # One trust store for the provider and image clients (each load costs ~17 ms).
        self._tls = tls = httpx.create_ssl_context()
        self.http = http or httpx.AsyncClient(
            timeout=httpx.Timeout(
                connect=settings.connect_timeout_seconds,
                read=settings.idle_timeout_seconds,
                write=30.0,
                pool=10.0,
            ),
            transport=nethttp.transport(
                httpx.Limits(max_connections=200, max_keepalive_connections=50), tls
            ),
            cookies=nethttp.cookieless(),  # the client is every app's
        )
        self.providers = ProviderRegistry(settings, self.http)
        self._poster = poster
        self._retry = RetryPolicy(
            max_retries=settings.post_max_retries,
            post_timeout_seconds=settings.post_timeout_seconds,
            slow_concurrency=max(1, settings.post_concurrency // 4),
        )
        # Shared by every stream of the process: slow connections never hold more posts than
        # its gate, in this stream or the next.
        self._slow = SlowConnections(self._retry.slow_concurrency)

    # What only some requests use (threads, assistants, tools, image URLs) is made, and its
    # modules imported, on its first use: not by every cold start (decision 40).

    @cached_property
    def threads(self) -> ThreadStore:
        from .threads import ThreadStore

        return ThreadStore(self._client, self.settings.table_name)

    @cached_property
    def runs(self) -> ThreadRuns:
        from .runs import ThreadRuns

        return ThreadRuns(self.threads, self.store, self.settings)

    @cached_property
    def assistants(self) -> AssistantStore:
        from .assistants import AssistantStore

        return AssistantStore(self._client, self.settings.table_name)

    @cached_property
    def images(self) -> ImageFetcher:
        from .providers.imagefetch import ImageFetcher

        return ImageFetcher(
            timeout_seconds=self.settings.image_fetch_timeout_seconds,
            max_bytes=self.settings.image_max_bytes,
            allow_private=self.settings.allow_private_image_urls,
            tls=self._tls,
        )

    @cached_property
    def tool_calls(self) -> ToolCallStore:
        from .toolcalls import ToolCallStore

        return ToolCallStore(self._client, self.settings.table_name, TOOL_RECORD_TTL_SECONDS)

    @cached_property
    def tool_answers(self) -> LocalAnswers:
        from .tools.frontend import LocalAnswers

        return LocalAnswers()

    @cached_property
    def webhooks(self) -> ToolWebhooks:
        from .tools.webhook import ToolWebhooks

        return ToolWebhooks(
            self.http,
            timeout_seconds=self.settings.tool_webhook_timeout_seconds,
            max_bytes=self.settings.tool_answer_max_bytes,
        )

    @property
    def poster(self) -> Poster:
        if self._poster is None:
            self._poster = self._make_poster()
        return self._poster

    def _make_poster(self) -> Poster:
        settings = self.settings
        endpoint = settings.ws_management_endpoint
        if not endpoint:
            raise ProxyError("WS_MANAGEMENT_ENDPOINT is not configured")
        if settings.poster == "signed":
            from .channels.signed_poster import SignedPoster

            return SignedPoster(
                endpoint,
                settings.aws_region,
                max_connections=settings.post_concurrency,
                timeout=settings.post_timeout_seconds,
            )
        client = aws.management_api(settings.aws_region, endpoint, settings.post_timeout_seconds)
        return BotoPoster(client, threads=settings.post_concurrency)

    async def aclose(self) -> None:
        """Release clients and threads."""
        await self.http.aclose()
        if "images" in self.__dict__:  # made on first use
            await self.images.aclose()
        if self._poster is not None:
            await self._poster.aclose()
        self.db.shutdown()

    async def store(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """A blocking AWS call on the DynamoDB pool; AWS failures become a 503 (never a 500)."""
        try:
            return await self.db(fn, *args, **kwargs)
        except ProxyError:
            raise
        except Exception as e:
            mapped = dependency_error(e, STORE)
            if mapped is None:
                raise
            get_logger().warning("dependency call failed", exc_info=True)
            raise mapped from e
