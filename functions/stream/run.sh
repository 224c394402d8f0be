#!/bin/bash
# Lambda Web Adapter entry point: LWA proxies invocations to this uvicorn server.
# The adapter forwards to AWS_LWA_PORT (template.yaml sets it): uvicorn listens there.
# uvloop and httptools by name, not uvicorn's "auto": a missing one fails the start instead
# of falling back to the slower pure-Python loop and parser.
PATH=$PATH:$LAMBDA_TASK_ROOT/bin:/opt/python/bin \
PYTHONPATH=$PYTHONPATH:/opt/python:$LAMBDA_RUNTIME_DIR \
exec python -m uvicorn --host 127.0.0.1 --port "${AWS_LWA_PORT:-8080}" --no-access-log \
  --loop uvloop --http httptools --timeout-keep-alive 900 app:app
