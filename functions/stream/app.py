"""Stream function entry: the ASGI app that run.sh serves under the Lambda Web Adapter."""

from streaming_proxy.coldstart import importing_code

with importing_code():
    from streaming_proxy.api.app import create_app

    app = create_app()
