"""The staff API: `create_app(settings)` builds it; nothing connects before a request."""

from __future__ import annotations

import logging
import re
import time
import uuid
from contextvars import ContextVar

import redis
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from admin.api import Api, openapi_document
from admin.errors import ApiError, error_response
from admin.routes import (
    audit_log,
    auth,
    catalogue,
    customers,
    discounts,
    finance,
    middle_office,
    orders,
    reports,
    returns,
    stock,
    support,
    warehouse,
)
from conveyor.db import Database
from conveyor.settings import Settings

log = logging.getLogger("admin")
access_log = logging.getLogger("admin.access")
current_request_id: ContextVar[str] = ContextVar("request_id", default="-")


class RequestIdFilter(logging.Filter):
    """Puts the current request's id on every log record (as `request_id`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = current_request_id.get()
        return True


API = Api.merge(auth.api, orders.api, middle_office.api, catalogue.api, audit_log.api,
                stock.api, warehouse.api, reports.api, finance.api, returns.api, support.api,
                discounts.api, customers.api)
REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "content-security-policy": "default-src 'none'; frame-ancestors 'none'",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
    "cross-origin-resource-policy": "same-origin",
}


class RequestContextMiddleware:
    """A request id for every request (the caller's X-Request-ID if sane), echoed in the
    response with the security headers; also put on log lines of the request."""

    def __init__(self, app: ASGIApp, *, https: bool) -> None:
        self.app = app
        headers = dict(HEADERS)
        if https:
            headers["strict-transport-security"] = "max-age=63072000; includeSubDomains"
        self.headers = [(k.encode(), v.encode()) for k, v in headers.items()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        supplied = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        request_id = supplied if REQUEST_ID.fullmatch(supplied) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        token = current_request_id.set(request_id)
        started = time.perf_counter()
        status = 500

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                present = {name.lower() for name, _ in message.get("headers", [])}
                extra = [(k, v) for k, v in self.headers if k not in present]
                message["headers"] = [*message.get("headers", []), *extra,
                                      (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            access_log.info("%s %s %s %.1fms", scope["method"], scope["path"], status,
                            (time.perf_counter() - started) * 1000)
            current_request_id.reset(token)


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    codes = {404: ("not_found", "No such endpoint."),
             405: ("method_not_allowed", "This endpoint does not take that method.")}
    code, message = codes.get(exc.status_code, ("http_error", str(exc.detail)))
    return error_response(ApiError(exc.status_code, code, message))


async def server_error(request: Request, exc: Exception) -> Response:
    request_id = request.scope.get("state", {}).get("request_id", "")
    log.exception("unhandled error on %s %s (request %s)", request.method, request.url.path,
                  request_id, exc_info=exc)
    return JSONResponse({"error": {"code": "internal_error",
                                   "message": "Something went wrong on our side.",
                                   "details": {"request_id": request_id}}}, status_code=500)


def create_app(settings: Settings, *, db: Database | None = None) -> Starlette:
    document = openapi_document(API, title="Conveyor admin API", version="1.0.0")

    async def openapi(request: Request) -> Response:
        return JSONResponse(document)

    openapi.access = "public"  # type: ignore[attr-defined]
    routes = [*API.routes(), Route("/api/openapi.json", openapi, methods=["GET"]),
              *warehouse.page_routes()]
    app = Starlette(
        routes=routes,
        middleware=[
            Middleware(RequestContextMiddleware, https=settings.serves_https),
            Middleware(CORSMiddleware, allow_origins=settings.cors_origins,
                       allow_methods=["GET", "POST", "PATCH", "DELETE"],
                       allow_headers=["Authorization", "Content-Type", "X-Request-ID"],
                       expose_headers=["X-Request-ID", "Retry-After"], max_age=600),
        ],
        exception_handlers={HTTPException: http_error, 500: server_error},
    )
    app.state.settings = settings
    app.state.db = db or Database.for_web_app(settings)
    app.state.openapi = document
    app.state.redis = redis.Redis.from_url(settings.redis_url, socket_timeout=5,
                                           socket_connect_timeout=2)
    return app


def app_from_env() -> Starlette:
    """The factory uvicorn calls (`conveyor admin`): settings from the environment."""
    return create_app(Settings())
