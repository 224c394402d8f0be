"""The local stack's DynamoDB keeps a client's connection for request after request, as
DynamoDB does, and says so when it cannot listen."""

from __future__ import annotations

import http.client
import json
import socket

import pytest

from devstack.dynamodb import EmbeddedDynamoDB
from devstack.process import free_port

LIST_TABLES = {
    "X-Amz-Target": "DynamoDB_20120810.ListTables",
    "Content-Type": "application/x-amz-json-1.0",
    "Authorization": "AWS4-HMAC-SHA256 Credential=local/20260101/us-east-1/dynamodb/"
    "aws4_request, SignedHeaders=host, Signature=0",
}


def test_one_connection_serves_several_requests() -> None:
    port = free_port()
    server = EmbeddedDynamoDB("127.0.0.1", port)
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        for _ in range(3):
            connection.request("POST", "/", body=b"{}", headers=LIST_TABLES)
            answer = connection.getresponse()
            assert answer.status == 200 and "TableNames" in json.loads(answer.read())
            assert not answer.will_close, "the connection was closed after one answer"
        connection.close()
    finally:
        server.stop()


def test_a_port_in_use_is_a_clear_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(RuntimeError, match=f"could not listen on 127.0.0.1:{port}"):
            EmbeddedDynamoDB("127.0.0.1", port)
