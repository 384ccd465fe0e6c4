"""The yardstick for bench/storefront.py: the storefront's catalogue pages, rendered bare.

A plain Starlette app that renders the storefront's own templates (home.html, listing.html,
product.html) with the storefront's Jinja environment and the same context objects (product
cards, variant choices, pages). The contexts are built once, at start-up, from the database;
after that a request touches no database, no session, no CSRF or security middleware: it is
routing plus template rendering, the least any server could do to send these pages.

Run from the project root, with the shop's environment variables (DATABASE_URL, VAR_DIR):

    .venv/bin/python -m bench.bare_app --port 8001
"""

from __future__ import annotations

import argparse
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates

from conveyor.db import Database
from conveyor.settings import Settings
from conveyor.templating import create_environment
from fulfilment.inventory import available_quantities
from models.base import utcnow
from storefront.catalogue import SORTS, CatalogueSnapshot, load_snapshot, paginate
from storefront.presenters import product_cards, variant_choices

CSRF_TOKEN = "bare-app-has-no-session"  # noqa: S105 (a placeholder: the bare app takes no POSTs)

Context = dict[str, Any]


def page_contexts(snapshot: CatalogueSnapshot, stock: dict[int, int],
                  settings: Settings) -> dict[str, tuple[str, Context]]:
    """Template and context of every home, category (first page, by name) and product page,
    built the way storefront/views/catalogue.py builds them, keyed by URL path."""
    prices = snapshot.prices(utcnow())
    low = settings.low_stock_threshold
    layout: Context = {
        "csrf_token": lambda: CSRF_TOKEN, "flashes": [], "cart_count": 0,
        "nav_categories": snapshot.categories, "query": "",
    }
    pages: dict[str, tuple[str, Context]] = {}

    pages["/"] = ("storefront/home.html", {
        **layout,
        "newest": product_cards(snapshot.newest(8), stock, prices, low),
        "on_sale": product_cards(list(prices.on_sale[:4]), stock, prices, low),
        "categories": snapshot.categories,
    })
    for category in snapshot.categories:
        assert category.id is not None
        page = paginate(snapshot.listing(category.id, "name", prices), 1)
        pages[f"/c/{category.slug}"] = ("storefront/listing.html", {
            **layout, "title": category.name, "category": category,
            "cards": product_cards(page.entries, stock, prices, low), "page": page,
            "sort": "name", "sorts": SORTS,
            "base_url": f"/c/{category.slug}",
        })
    for slug, entry in snapshot.products.items():
        choices = variant_choices(entry, stock, prices, low)
        selected = next((c for c in choices if c.in_stock), choices[0])
        pages[f"/p/{slug}"] = ("storefront/product.html", {
            **layout, "entry": entry, "choices": choices, "selected": selected,
            "max_quantity": settings.max_line_quantity,
        })
    return pages


def create_bare_app(settings: Settings) -> Starlette:
    db = Database.from_settings(settings, pool_size=1)
    try:
        with db.read_session() as session:
            snapshot = load_snapshot(session)
            stock = available_quantities(session, snapshot.variants)
    finally:
        db.dispose()
    pages = page_contexts(snapshot, stock, settings)
    templates = Jinja2Templates(env=create_environment())

    async def page(request: Request) -> Response:
        found = pages.get(request.url.path)
        if found is None:
            return PlainTextResponse("Not found", status_code=404)
        template, context = found
        return templates.TemplateResponse(request, template, context)

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok")

    return Starlette(routes=[
        Route("/", page), Route("/c/{slug}", page), Route("/p/{slug}", page),
        Route("/healthz", healthz),
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    args = parser.parse_args()
    settings = Settings()
    # The same server settings as `conveyor storefront` (uvloop and httptools when installed).
    uvicorn.run(create_bare_app(settings), host=args.host, port=args.port, proxy_headers=True,
                access_log=False, log_level=settings.log_level.lower())


if __name__ == "__main__":
    main()
