"""The relay's HTTP side: JSON API, operators' console, customers' home, health, metrics."""

from relay.web.app import create_app, http_socket, serve_http
from relay.web.services import WebServices

__all__ = ["WebServices", "create_app", "http_socket", "serve_http"]
