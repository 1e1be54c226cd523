"""The HTTP app: JSON API, operators' console, customers' home, health and metrics.

`create_app` takes the service objects (built once per process, `WebServices.build`) and the
key that signs session cookies; `serve_http` runs it on uvicorn inside the relay's own event
loop, as one more part of `relay run`.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator
from typing import Any

import structlog
import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.sessions import SessionMiddleware

from relay.config import HttpSettings
from relay.content.errors import KeptAsEvidence, ReleaseRefused
from relay.errors import ConfigError, InvalidInput, NotFound, RelayError, StoreUnavailable
from relay.web import api, pages
from relay.web.api.deps_apps import AppServices
from relay.web.errors import Unauthenticated, WebError
from relay.web.middleware import Guards
from relay.web.services import WebServices
from relay.web.templating import render
from reputation import NotAllowed

__all__ = ["create_app", "http_socket", "serve_http", "server_config"]

log = structlog.get_logger("relay.web")

SESSION_COOKIE = "relay_session"


def create_app(
    services: WebServices, *, secret: bytes, apps: AppServices, metrics: Any = None
) -> FastAPI:
    """The app over these services; `apps`: the applications' send API's (its
    `SubmissionService` is the one SMTP uses). `metrics`: a callable returning the
    Prometheus text (None: no `/metrics`)."""
    http = services.settings.http
    app = FastAPI(
        title="relay",
        version="1",
        description="Operators' and customers' API of the relay (outbound SMTP).",
        docs_url="/api/docs",
        redoc_url=None,
        openapi_url="/api/openapi.json",
    )
    app.state.services = services
    app.state.apps = apps
    app.add_middleware(
        SessionMiddleware,
        secret_key=secret.decode("ascii", "replace"),
        session_cookie=SESSION_COOKIE,
        max_age=int(http.session_max_age.seconds),
        same_site="strict",
        https_only=http.secure_cookies,
    )
    # outermost: bounds bodies before the session is read
    large = 2 * services.settings.submission.max_message_size
    app.add_middleware(Guards, large=api.LARGE_BODIES, large_max=large)
    app.router.routes.insert(0, api.SEND_ROUTE)  # matched first: the hot route
    for router in api.ROUTERS:
        app.include_router(router)
    for router in pages.ROUTERS:
        app.include_router(router)

    @app.get("/healthz", tags=["health"], include_in_schema=True)
    async def healthz() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"])
    async def readyz() -> JSONResponse:
        """Readiness: Redis answers and the spool takes a file."""
        problems = await services.ready()
        if problems:
            return JSONResponse({"status": "not ready", "problems": problems}, status_code=503)
        return JSONResponse({"status": "ready"})

    if metrics is not None:

        @app.get("/metrics", tags=["health"], response_class=PlainTextResponse)
        async def metrics_page() -> Response:
            """Prometheus text: every process's counters, and the queue read from Redis."""
            body, content_type = await asyncio.to_thread(metrics, await _queue_gauges(services))
            return Response(body, media_type=content_type)

    _install_error_handlers(app)
    return app


async def _queue_gauges(services: WebServices) -> str:
    depth = await services.queue.count()
    oldest = await services.queue.list_messages(1)
    age = max(0.0, services.clock.now() - oldest[0].created_at) if oldest else 0.0
    return (
        "# HELP relay_queue_depth Messages in the queue (the whole cluster's)\n"
        "# TYPE relay_queue_depth gauge\n"
        f"relay_queue_depth {depth}\n"
        "# HELP relay_queue_oldest_seconds Age of the oldest queued message\n"
        "# TYPE relay_queue_oldest_seconds gauge\n"
        f"relay_queue_oldest_seconds {age:.3f}\n"
    )


def _wants_json(request: Request) -> bool:
    return request.url.path.startswith("/api/") or "text/html" not in request.headers.get(
        "accept", ""
    )


def _status_of(exc: RelayError) -> int:
    if isinstance(exc, WebError):
        return exc.status
    if isinstance(exc, KeptAsEvidence):  # malware, asked for by its sender
        return 403
    if isinstance(exc, ReleaseRefused):  # over the quota, another node's, being released
        return 409
    if isinstance(exc, NotFound):
        return 404
    if isinstance(exc, StoreUnavailable):
        return 503
    if isinstance(exc, InvalidInput):
        return 400
    return 400


def _install_error_handlers(app: FastAPI) -> None:
    """Every error is one line: JSON `{"error": ...}` for the API, a page for the browser."""

    def answer(request: Request, status: int, message: str) -> Response:
        if _wants_json(request):
            headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
            return JSONResponse({"error": message}, status_code=status, headers=headers)
        if status == 401:
            path = request.url.path
            context = {"error": "", "next": path, "operator": path.startswith("/console")}
            return render(request, "login.html", context, 401)
        return render(request, "error.html", {"status": status, "message": message}, status)

    @app.exception_handler(RelayError)
    async def relay_error(request: Request, exc: RelayError) -> Response:
        status = _status_of(exc)
        if isinstance(exc, StoreUnavailable):
            log.error("web.store_unavailable", path=request.url.path, error=str(exc))
        return answer(request, status, str(exc))

    @app.exception_handler(NotAllowed)
    async def not_allowed(request: Request, exc: NotAllowed) -> Response:
        return answer(request, 409, str(exc))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if isinstance(exc.detail, dict):  # the applications' API: {"detail": {"code", ...}}
            return JSONResponse({"detail": exc.detail}, exc.status_code, exc.headers)
        return answer(request, exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return answer(request, 422, f"{where}: {first.get('msg', 'invalid')}")

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        log.error("web.error", path=request.url.path, error=repr(exc), exc_info=exc)
        return answer(request, 500, "internal error (logged)")

    _ = Unauthenticated  # raised by the dependencies, answered by relay_error


def http_socket(settings: HttpSettings, *, reuse_port: bool) -> socket.socket:
    """The listening socket, bound here so that a busy port is one clear line at start;
    with `reuse_port`, each process of the node binds its own (SO_REUSEPORT)."""
    host, port = settings.listen.host, settings.listen.port
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(
            f"http.listen: cannot listen on {settings.listen}: {exc.strerror or exc}"
        ) from None
    sock.listen(512)
    sock.setblocking(False)
    return sock


class _Server(uvicorn.Server):
    """uvicorn's server without its signal handlers: `relay run` owns SIGTERM/SIGINT (they
    set `stop`, which stops this server with the other parts)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def server_config(app: FastAPI, **extra: Any) -> uvicorn.Config:
    """How `relay run` has uvicorn serve the app: with httptools, in the loop it runs in
    (uvloop, `run.uvloop`)."""
    return uvicorn.Config(
        app,
        http="httptools",  # a dependency: uvicorn's pure-Python h11 parser costs far more
        log_config=None,
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=5,
        server_header=False,
        **extra,
    )


async def serve_http(app: FastAPI, sock: socket.socket, stop: asyncio.Event, **extra: Any) -> None:
    """Serve until `stop` (then let requests in flight end, 5 s at most). Raises when the
    server ends without being asked: the part dies and the process is restarted. `extra`:
    more uvicorn options (the bench adds TLS)."""
    server = _Server(server_config(app, **extra))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    stopping = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
        if not task.done():
            server.should_exit = True
            with contextlib.suppress(asyncio.CancelledError):
                await task
    if not stop.is_set():
        error = task.exception()
        raise ConnectionAbortedError(
            f"the HTTP server stopped: {error}" if error else "the HTTP server stopped"
        )
