#!/bin/bash
# Lambda Web Adapter entry point: LWA proxies invocations to this uvicorn server.
# PORT is set by the adapter's environment (AWS_LWA_PORT / PORT, default 8080).
PATH=$PATH:$LAMBDA_TASK_ROOT/bin:/opt/python/bin \
PYTHONPATH=$PYTHONPATH:/opt/python:$LAMBDA_RUNTIME_DIR \
exec python -m uvicorn --host 127.0.0.1 --port "${PORT:-8080}" --no-access-log \
  --timeout-keep-alive 900 app:app
