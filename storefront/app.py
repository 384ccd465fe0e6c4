"""The public storefront: `create_app(settings)` builds it; nothing connects before a request
except, once the app has started, the stock listener (storefront/live_stock.py)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from anyio import to_thread
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from conveyor.db import WEB_THREADS, Database
from conveyor.settings import PROJECT_ROOT, Settings
from conveyor.stripe_gateway import StripeGateway
from conveyor.templating import create_environment
from storefront.catalogue import CatalogueCache
from storefront.live_stock import LiveStock
from storefront.security import CSRFMiddleware, RejectNulMiddleware, SecurityHeadersMiddleware
from storefront.views import (
    account,
    after_sales,
    cart,
    catalogue,
    checkout,
    documents,
    orders,
    webhooks,
)
from storefront.web import render, snapshot_of

log = logging.getLogger(__name__)
STATIC_DIR = PROJECT_ROOT / "storefront" / "static"
WEBHOOK_PATH = "/stripe/webhook"
MESSAGES = {
    400: ("Bad request", "We could not understand that request."),
    404: ("Page not found", "We could not find that page. It may have moved or sold out."),
    405: ("Not allowed", "That page cannot be used this way."),
}


def healthz(request: Request) -> Response:
    return PlainTextResponse("ok")


def routes(settings: Settings) -> list[Route | Mount]:
    settings.media_dir.mkdir(parents=True, exist_ok=True)
    return [
        Route("/", catalogue.home, name="home"),
        Route("/c/{slug}", catalogue.category, name="category"),
        Route("/search", catalogue.search, name="search"),
        Route("/p/{slug}", catalogue.product, name="product"),
        Route("/cart", cart.show, name="cart"),
        Route("/cart/add", cart.add, methods=["POST"], name="cart_add"),
        Route("/cart/update", cart.update, methods=["POST"], name="cart_update"),
        Route("/cart/remove", cart.remove, methods=["POST"], name="cart_remove"),
        Route("/checkout", checkout.show, name="checkout"),
        Route("/checkout", checkout.pay, methods=["POST"], name="pay"),
        Route("/checkout/summary", checkout.summary, name="checkout_summary"),
        Route("/checkout/discount", checkout.apply_discount, methods=["POST"],
              name="apply_discount"),
        Route("/checkout/authenticated", checkout.authenticated, methods=["POST"],
              name="authenticated"),
        Route("/checkout/confirmation/{token}", orders.confirmation, name="confirmation"),
        Route("/orders/{token}", orders.status, name="order_status"),
        Route("/orders/{token}/returns", after_sales.request_return, methods=["POST"],
              name="order_return"),
        Route("/orders/{token}/returns/{number}/withdraw", after_sales.withdraw_return,
              methods=["POST"], name="withdraw_return"),
        Route("/orders/{token}/cancel", after_sales.request_cancel, methods=["POST"],
              name="order_cancel"),
        Route("/orders/{token}/messages", after_sales.post_message, methods=["POST"],
              name="order_message"),
        Route("/documents/{token}", documents.download, name="document"),
        *account.ROUTES,  # /account...: sign-up, sign-in, the customer's pages
        Route(WEBHOOK_PATH, webhooks.receive, methods=["POST"], name="stripe_webhook"),
        Route("/healthz", healthz),
        Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
        Mount("/media", StaticFiles(directory=settings.media_dir, check_dir=False),
              name="media"),
    ]


async def http_error(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    title, message = MESSAGES.get(status, ("Something went wrong", "Please try again."))
    return render(request, "storefront/error.html", {"title": title, "message": message},
                  status_code=status, snapshot=await snapshot_of(request))


async def server_error(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    try:
        return render(request, "storefront/error.html", {
            "title": "Something went wrong",
            "message": "Sorry, something went wrong on our side. Nothing was charged twice; "
                       "please try again in a moment.",
        }, status_code=500, snapshot=await snapshot_of(request))
    except Exception:
        return PlainTextResponse("Something went wrong on our side.", status_code=500)


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    # The pool holds a connection per thread (Database.for_web_app): pin the thread pool's
    # size to the same number rather than trust anyio's default to stay 40.
    to_thread.current_default_thread_limiter().total_tokens = WEB_THREADS
    live_stock: LiveStock = app.state.live_stock
    live_stock.start()
    try:
        yield
    finally:
        await run_in_threadpool(live_stock.stop)


def create_app(
    settings: Settings, *, db: Database | None = None, gateway: StripeGateway | None = None,
) -> Starlette:
    app = Starlette(
        routes=routes(settings),
        lifespan=lifespan,
        middleware=[
            Middleware(SecurityHeadersMiddleware, settings=settings),
            Middleware(RejectNulMiddleware),
            Middleware(SessionMiddleware, secret_key=settings.session_secret,
                       session_cookie="conveyor_session", max_age=14 * 24 * 3600,
                       same_site="lax", https_only=settings.serves_https),
            Middleware(CSRFMiddleware, exempt_paths=[WEBHOOK_PATH]),
        ],
        exception_handlers={HTTPException: http_error, 500: server_error},
    )
    app.state.settings = settings
    app.state.db = db or Database.for_web_app(settings)
    app.state.gateway = gateway
    env = create_environment()
    app.state.templates = Jinja2Templates(env=env)
    app.state.catalogue = CatalogueCache(app.state.db,
                                         check_seconds=settings.catalogue_check_seconds)
    app.state.live_stock = LiveStock(app.state.db)
    return app


def app_from_env() -> Starlette:
    """The factory uvicorn calls (`conveyor storefront`): settings from the environment."""
    return create_app(Settings())
