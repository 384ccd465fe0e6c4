"""Helpers every storefront endpoint uses: rendering, the session's cart and flash messages.

Synchronous endpoints run in the thread pool and may use anything here. `async def` endpoints
(the catalogue pages) get the snapshot and the stock through `snapshot_of` and `stock_of`,
which go to the thread pool only when the database must be read, and pass the snapshot to
`render`, so nothing blocks the event loop.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Callable, Collection
from typing import Any, ParamSpec, TypeVar

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.templating import Jinja2Templates

from conveyor.db import Database
from conveyor.settings import Settings
from conveyor.stripe_gateway import PaymentProviderError, StripeGateway, create_gateway
from storefront.catalogue import CatalogueCache, CatalogueSnapshot
from storefront.live_stock import LiveStock
from storefront.security import csrf_token

P = ParamSpec("P")
T = TypeVar("T")

CART_KEY = "cart"
DEVICE_KEY = "device"
ORDER_KEY = "order"
CART_COUNT_KEY = "cart_count"
FLASH_KEY = "flash"


def settings_of(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def db_of(request: Request) -> Database:
    db: Database = request.app.state.db
    return db


def catalogue_of(request: Request) -> CatalogueSnapshot:
    cache: CatalogueCache = request.app.state.catalogue
    return cache.get()


async def snapshot_of(request: Request) -> CatalogueSnapshot:
    """The catalogue snapshot; from the thread pool only when its version check is due."""
    cache: CatalogueCache = request.app.state.catalogue
    snapshot = cache.peek()
    return snapshot if snapshot is not None else await run_in_threadpool(cache.get)


def live_stock_of(request: Request) -> LiveStock:
    stock: LiveStock = request.app.state.live_stock
    return stock


async def stock_of(request: Request, variant_ids: Collection[int]) -> dict[int, int]:
    """Live quantities of these variants; from the thread pool only when some must be read."""
    stock = live_stock_of(request)
    found = stock.cached(variant_ids)
    return found if found is not None else await run_in_threadpool(stock.available, variant_ids)


def gateway_of(request: Request) -> StripeGateway | None:
    """The Stripe gateway, or None when this shop has no Stripe keys configured."""
    state = request.app.state
    if getattr(state, "gateway", None) is None:
        try:
            state.gateway = create_gateway(state.settings)
        except PaymentProviderError:
            return None
    gateway: StripeGateway = state.gateway
    return gateway


async def run_service(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Run a blocking service (database, Stripe) off the event loop."""
    return await run_in_threadpool(fn, *args, **kwargs)


def session_uuid(request: Request, key: str) -> uuid.UUID | None:
    value = request.session.get(key)
    try:
        return uuid.UUID(str(value)) if value else None
    except ValueError:
        request.session.pop(key, None)
        return None


def device_id(request: Request) -> str:
    """A random id for this browser, kept in its session: screening counts orders per device."""
    value = request.session.get(DEVICE_KEY)
    if not isinstance(value, str) or len(value) > 64:
        value = secrets.token_urlsafe(16)
        request.session[DEVICE_KEY] = value
    return value


def flash(request: Request, message: str, level: str = "info") -> None:
    request.session.setdefault(FLASH_KEY, []).append([level, message])


def redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def render(
    request: Request, template: str, context: dict[str, Any] | None = None, *,
    status_code: int = 200, private: bool = False, snapshot: CatalogueSnapshot | None = None,
) -> Response:
    """Render a page with what the layout needs; `private` pages are never cached. Without
    `snapshot`, the catalogue is looked up here, which may read the database: `async def`
    endpoints pass theirs."""
    templates: Jinja2Templates = request.app.state.templates
    flashes = request.session.pop(FLASH_KEY, []) if FLASH_KEY in request.session else []
    snapshot = snapshot or catalogue_of(request)
    page = {
        "csrf_token": lambda: csrf_token(request),
        "flashes": flashes,
        "cart_count": request.session.get(CART_COUNT_KEY, 0),
        "nav_categories": snapshot.categories,
        "query": "",
        **(context or {}),
    }
    response = templates.TemplateResponse(request, template, page, status_code=status_code)
    if private or flashes:
        response.headers["cache-control"] = "no-store"
    return response


def parse_int(raw: object, *, default: int | None = None) -> int | None:
    try:
        text = str(raw).strip()
        if not text or len(text) > 12:
            return default
        return int(text)
    except (TypeError, ValueError):
        return default
