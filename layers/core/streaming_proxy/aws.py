"""Lazily created, cached AWS clients (created on first use so moto can start first).

Made with botocore's own session API: `import boto3` also imports s3transfer and boto3's
resource layer, which the proxy never uses (~50-90 ms of every cold start)."""

from __future__ import annotations

import threading
from functools import cache
from typing import TYPE_CHECKING, Any, cast

from botocore.config import Config
from botocore.session import Session, get_session

from .config import MAX_POST_CONCURRENCY

if TYPE_CHECKING:
    from mypy_boto3_apigatewaymanagementapi import ApiGatewayManagementApiClient
    from mypy_boto3_bedrock_runtime import BedrockRuntimeClient
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_lambda import LambdaClient
    from mypy_boto3_secretsmanager import SecretsManagerClient

# botocore's `max_attempts` counts retries after the first try; `total_max_attempts` counts
# every try, so it says exactly how many requests one call may make.
_CONFIG = Config(
    # DynamoDB and Lambda: up to 3 tries with botocore's standard backoff, for throttling and
    # transient 5xx/connection errors, then the caller maps the failure (503 or a retry).
    retries={"total_max_attempts": 3, "mode": "standard"},
    max_pool_connections=64,
    connect_timeout=3,
    read_timeout=10,
)

# Every service the proxy makes a client for. The layer's build keeps botocore's data for
# these and for CREDENTIAL_SERVICES only (deploy/trim_botocore.py reads both tuples from
# this file): a client of any other service would not find its model in Lambda, so
# `_client` refuses one here, where the tests see it.
BOTOCORE_SERVICES = (
    "dynamodb",
    "apigatewaymanagementapi",
    "lambda",
    "bedrock-runtime",
    "secretsmanager",
)
# The services botocore's own credential and token providers may call (web identity and
# assume-role, SSO, console sign-in). Lambda gives credentials in the environment, so none
# is called there; kept so the layer's botocore resolves credentials as anywhere else.
CREDENTIAL_SERVICES = ("sts", "sso", "sso-oidc", "signin")

# A botocore session is not safe to use from several threads at once; one shared session
# (its loader caches the service models) behind a lock is.
_SESSION_LOCK = threading.Lock()


@cache
def _session() -> Session:
    return get_session()


def _client(service: str, **options: Any) -> Any:
    if service not in BOTOCORE_SERVICES:
        raise LookupError(f"{service}: not in BOTOCORE_SERVICES, so not in the deployed layer")
    with _SESSION_LOCK:
        return _session().create_client(service, **options)


@cache
def dynamodb(region: str, endpoint_url: str | None) -> DynamoDBClient:
    client = _client("dynamodb", region_name=region, endpoint_url=endpoint_url, config=_CONFIG)
    return cast("DynamoDBClient", client)


@cache
def management_api(
    region: str,
    endpoint_url: str,
    timeout_seconds: float = 3.0,
    pool_connections: int = MAX_POST_CONCURRENCY,
) -> ApiGatewayManagementApiClient:
    """The @connections client: exactly one try per call. Retries are the publisher's (410
    must never be retried, 429/5xx/timeouts back off), and a post waits `timeout_seconds`
    at most so a connection that does not read cannot hold a thread for long.

    `pool_connections` should be at least the threads posting with it (POST_CONCURRENCY),
    so each keeps its keep-alive connection; the default covers every allowed value, and
    urllib3 opens connections only when needed, so a large pool costs nothing unused."""
    # Invariant: connect + read timeouts == timeout_seconds, inside the publisher's net
    # (RetryPolicy.post_deadline_seconds, a second longer). A thread the net gave up on
    # could otherwise still deliver after the publisher retried: the message twice.
    connect = min(1.0, timeout_seconds / 3)
    client = _client(
        "apigatewaymanagementapi",
        region_name=region,
        endpoint_url=endpoint_url,
        config=Config(
            retries={"total_max_attempts": 1, "mode": "standard"},
            max_pool_connections=pool_connections,
            connect_timeout=connect,
            read_timeout=timeout_seconds - connect,
        ),
    )
    return cast("ApiGatewayManagementApiClient", client)


@cache
def lambda_client(region: str) -> LambdaClient:
    return cast("LambdaClient", _client("lambda", region_name=region, config=_CONFIG))


@cache
def bedrock_runtime(region: str, endpoint_url: str | None) -> BedrockRuntimeClient:
    """`bedrock-runtime`: a long read timeout, as a model may think before its first token."""
    client = _client(
        "bedrock-runtime",
        region_name=region,
        endpoint_url=endpoint_url,
        config=Config(connect_timeout=10, read_timeout=60, retries={"mode": "standard"}),
    )
    return cast("BedrockRuntimeClient", client)


def secretsmanager(region: str) -> SecretsManagerClient:
    """Read once per process, at settings time, so not cached."""
    return cast("SecretsManagerClient", _client("secretsmanager", region_name=region))
