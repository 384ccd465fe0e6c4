"""Security middleware for the storefront: headers with a strict CSP, and CSRF on every POST.

CSRF uses a per-session token (synchroniser pattern): every form carries it in a hidden
`csrf_token` field (or an `X-CSRF-Token` header for scripts) and every unsafe request without
the session's token is refused before it reaches an endpoint. Only signed Stripe webhooks are
exempt.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from conveyor.settings import Settings

CSRF_SESSION_KEY = "csrf"
CSRF_FIELD = "csrf_token"
MAX_FORM_BYTES = 64 * 1024
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def csrf_token(request: Request) -> str:
    token = request.session.get(CSRF_SESSION_KEY)
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        request.session[CSRF_SESSION_KEY] = token
    return token


def content_security_policy(settings: Settings) -> str:
    stripe = " ".join(sorted({settings.stripe_js_origin, settings.stripe_api_origin}))
    return "; ".join([
        "default-src 'self'",
        f"script-src 'self' {stripe}",
        f"connect-src 'self' {stripe}",
        f"frame-src {stripe}",
        "img-src 'self' data:",
        "style-src 'self'",
        "font-src 'self'",
        "object-src 'none'",
        "base-uri 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ])


class SecurityHeadersMiddleware:
    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        headers = {
            "content-security-policy": content_security_policy(settings),
            "x-content-type-options": "nosniff",
            "x-frame-options": "DENY",
            "referrer-policy": "strict-origin-when-cross-origin",
            "permissions-policy": "camera=(), microphone=(), geolocation=(), payment=(self)",
            "cross-origin-opener-policy": "same-origin",
        }
        if settings.serves_https:
            headers["strict-transport-security"] = "max-age=63072000; includeSubDomains"
        self.headers = [(k.encode(), v.encode()) for k, v in headers.items()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                extra = [(k, v) for k, v in self.headers if k not in present]
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, send_with_headers)


NUL_MARKERS = (b"\x00", b"%00")


def _bad_request() -> HTMLResponse:
    return HTMLResponse("<!doctype html><meta charset=utf-8><title>Bad request</title>"
                        "<h1>We could not read that request</h1>"
                        "<p>It contains characters that have no place in a web address or "
                        "form. <a href=\"/\">Back to the shop</a></p>", status_code=400)


class RejectNulMiddleware:
    """NUL characters cannot be stored in text columns; refuse them in URLs at the door."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            raw = scope.get("query_string", b"") + scope.get("path", "").encode(
                "utf-8", "surrogateescape")
            if any(marker in raw for marker in NUL_MARKERS):
                await _bad_request()(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _forbidden(reason: str) -> HTMLResponse:
    body = (
        "<!doctype html><meta charset=utf-8><title>Form expired</title>"
        "<h1>This form has expired</h1>"
        f"<p>{reason} Please go back, reload the page and try again.</p>"
    )
    return HTMLResponse(body, status_code=403)


class CSRFMiddleware:
    """Refuses unsafe requests that do not carry the session's CSRF token.

    Sits inside SessionMiddleware. Form bodies are read here (at most MAX_FORM_BYTES) and
    replayed to the endpoint unchanged.
    """

    def __init__(self, app: ASGIApp, exempt_paths: Iterable[str] = ()) -> None:
        self.app = app
        self.exempt = frozenset(exempt_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] != "http" or scope["method"] not in UNSAFE_METHODS
                or scope["path"] in self.exempt):
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        expected = scope.get("session", {}).get(CSRF_SESSION_KEY)
        supplied = request.headers.get("x-csrf-token")
        body = b""
        if supplied is None:
            content_type = request.headers.get("content-type", "").split(";")[0].strip()
            if content_type != "application/x-www-form-urlencoded":
                await _forbidden("This form was sent in a way we do not accept.")(
                    scope, receive, send)
                return
            body, too_large = await _read_body(receive)
            if too_large:
                response = HTMLResponse("<h1>That form is too large</h1>", status_code=413)
                await response(scope, receive, send)
                return
            if any(marker in body for marker in NUL_MARKERS):
                await _bad_request()(scope, receive, send)
                return
            supplied = _field(body, CSRF_FIELD)
        if not expected or not supplied or not secrets.compare_digest(str(expected), supplied):
            await _forbidden("Your session has changed since this page was loaded.")(
                scope, receive, send)
            return
        await self.app(scope, _replay(body, receive) if body else receive, send)


async def _read_body(receive: Receive) -> tuple[bytes, bool]:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_FORM_BYTES:
            return b"", True
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks), False


def _field(body: bytes, name: str) -> str | None:
    try:
        values = parse_qs(body.decode("utf-8"), max_num_fields=200).get(name)
    except (UnicodeDecodeError, ValueError):
        return None
    return values[0] if values else None


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return dict(await receive())

    return replay
