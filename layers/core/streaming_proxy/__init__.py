"""streaming_proxy: the domain package shared by both Lambda functions (the core layer)."""

__version__ = "0.1.0"
