"""The stream function's HTTP face: a Starlette app (uvicorn locally, Lambda Web Adapter in AWS)."""
