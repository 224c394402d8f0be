"""The Lambda Web Adapter's pass-through path: async self-invokes that run a detached relay."""

from __future__ import annotations

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..errors import BadRequest, NotFound
from ..jobs import StreamJob
from ..observability import get_logger
from .answers import error_response, read_json, service_of


async def pass_through(request: Request) -> Response:
    service = service_of(request)
    if service.settings.detach_mode != "lambda":
        # Only the adapter, inside the function, may post here.
        return error_response(NotFound("not found"))
    data = await read_json(request, 6 * 1024 * 1024)
    try:
        job = StreamJob.from_event(data)
    except (KeyError, ValidationError) as e:
        get_logger().error("pass-through event is not a stream job")
        return error_response(
            BadRequest("not a stream job event") if isinstance(e, KeyError) else BadRequest(str(e))
        )
    outcome = await service.run(service.relay(job))
    return JSONResponse({"streamId": job.stream_id, "finish_reason": outcome.finish_reason})
