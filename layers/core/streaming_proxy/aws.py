"""Lazily created, cached boto3 clients (created on first use so moto can start first)."""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING

import boto3
from botocore.config import Config

if TYPE_CHECKING:
    from mypy_boto3_apigatewaymanagementapi import ApiGatewayManagementApiClient
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_lambda import LambdaClient

_CONFIG = Config(
    retries={"max_attempts": 3, "mode": "standard"},
    max_pool_connections=64,
    connect_timeout=3,
    read_timeout=10,
)


@cache
def dynamodb(region: str, endpoint_url: str | None) -> DynamoDBClient:
    return boto3.client("dynamodb", region_name=region, endpoint_url=endpoint_url, config=_CONFIG)


@cache
def management_api(region: str, endpoint_url: str) -> ApiGatewayManagementApiClient:
    """The @connections client. Retries are ours (410 must not be retried, 429 backs off)."""
    return boto3.client(
        "apigatewaymanagementapi",
        region_name=region,
        endpoint_url=endpoint_url,
        config=_CONFIG.merge(Config(retries={"max_attempts": 1, "mode": "standard"})),
    )


@cache
def lambda_client(region: str) -> LambdaClient:
    return boto3.client("lambda", region_name=region, config=_CONFIG)
