"""Unit fixtures: AWS faked in-process by moto (no network), with the project's table."""

from __future__ import annotations

from collections.abc import Iterator

import boto3
import pytest
from moto import mock_aws

from devstack.template import create_table
from streaming_proxy import aws

MOTO_TABLE = "t"


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Fake credentials and region, moto running, and table `MOTO_TABLE` created from
    template.yaml; cached boto3 clients are dropped before and after."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    aws.dynamodb.cache_clear()
    with mock_aws():
        create_table(boto3.client("dynamodb", region_name="us-east-1"), MOTO_TABLE)
        yield
    aws.dynamodb.cache_clear()
