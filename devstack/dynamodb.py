"""The local stack's embedded DynamoDB: moto's server app on uvicorn, in a thread of its own.

Two things make it behave as DynamoDB does where the proxy can tell:
- One request at a time (`OneAtATime`): DynamoDB applies each conditional write
  atomically; moto checks the condition and writes in separate steps.
- Connections kept alive: moto's own server (werkzeug's) closes every connection after one
  answer, so each call of the app's DynamoDB client paid a new TCP connection (and left a
  socket in TIME_WAIT) that it never pays against DynamoDB, whose connections botocore
  keeps. uvicorn keeps them, and a2wsgi runs moto's WSGI app under it.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import boto3
import uvicorn
from a2wsgi import WSGIMiddleware
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

from .settings import DevSettings
from .template import create_table

if TYPE_CHECKING:
    from a2wsgi.wsgi_typing import Environ, StartResponse

START_TIMEOUT_SECONDS = 20.0


class OneAtATime:
    """A WSGI app answering one request at a time: two concurrent `ADD ... IF count <
    limit` (the per-app rate limit) or two claims of one detached job cannot both pass."""

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self._app = app
        self._lock = threading.Lock()

    def __call__(self, environ: Environ, start_response: StartResponse) -> list[bytes]:
        with self._lock:
            # moto answers with whole bodies: the request is done when the call returns.
            return list(self._app(environ, start_response))


class EmbeddedDynamoDB:
    """moto on `host:port`, served from a thread with its own event loop; `stop()` ends it."""

    def __init__(self, host: str, port: int) -> None:
        app = WSGIMiddleware(OneAtATime(DomainDispatcherApplication(create_backend_app)))
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            http="httptools",
            lifespan="off",
            log_config=None,  # the process's logging stays as its own servers set it
            log_level=None,
            access_log=False,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._serve, name="embedded-dynamodb", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the embedded DynamoDB could not listen on {host}:{port}")
            time.sleep(0.01)

    def _serve(self) -> None:
        # uvicorn logs why it cannot listen and exits; the thread ends, `started` never set.
        with contextlib.suppress(SystemExit):
            self._server.run()

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)


def start_dynamodb(dev: DevSettings) -> EmbeddedDynamoDB:
    """The embedded DynamoDB on `dev.host:dev.dynamodb_port`, with the table template.yaml
    defines."""
    server = EmbeddedDynamoDB(dev.host, dev.dynamodb_port)
    client = boto3.client(
        "dynamodb",
        region_name="us-east-1",
        endpoint_url=f"http://{dev.host}:{dev.dynamodb_port}",
        aws_access_key_id="local",
        aws_secret_access_key="local",
    )
    create_table(client, dev.table_name)
    client.close()
    return server
