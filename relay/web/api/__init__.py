"""The HTTP API's routers (JSON, under /v1)."""
