"""The Lambda Web Adapter's pass-through path: async self-invokes that run a detached relay.

Each job runs once: the relay claims it on the stream record first, and a second delivery
of the same event (Lambda may deliver one more than once) is answered `duplicate`.
"""

from __future__ import annotations

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..errors import BadRequest, NotFound, ProxyError
from ..jobs import StreamJob
from ..observability import get_logger
from .answers import error_response, read_json, service_of


async def pass_through(request: Request) -> Response:
    service = service_of(request)
    if service.settings.detach_mode != "lambda":
        # Only the adapter, inside the function, may post here.
        return error_response(NotFound("not found"))
    try:
        data = await read_json(request, 6 * 1024 * 1024)
        job = StreamJob.from_event(data)
    except ProxyError as e:
        return error_response(e)
    except (KeyError, ValidationError):
        # Never echo the event: it carries the job, provider key included.
        get_logger().error("pass-through event is not a stream job")
        return error_response(BadRequest("not a stream job event"))
    try:
        outcome = await service.lambda_detach.run_claimed(job)
    except ProxyError as e:
        # A 5xx fails the invocation (AWS_LWA_ERROR_STATUS_CODES): the dead-letter queue
        # gets the event, and its handler tells the channels (deadletter.py).
        return error_response(e)
    if outcome is None:
        return JSONResponse({"streamId": job.stream_id, "duplicate": True})
    return JSONResponse({"streamId": job.stream_id, "finish_reason": outcome.finish_reason})
