"""Browsing: home, categories, search and product pages.

These endpoints run on the event loop: the snapshot and the stock come from memory, and only a
due catalogue check, stock not in the cache or a search goes to the thread pool.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from conveyor.db import Database
from models.base import utcnow
from storefront.catalogue import (
    SORTS,
    PriceList,
    ProductEntry,
    paginate,
    search_product_ids,
)
from storefront.presenters import ProductCard, product_cards, variant_choices
from storefront.web import (
    db_of,
    parse_int,
    render,
    run_service,
    settings_of,
    snapshot_of,
    stock_of,
)


async def _cards(request: Request, prices: PriceList,
                 entries: list[ProductEntry]) -> list[ProductCard]:
    stock = await stock_of(request, [vid for e in entries for vid in e.variant_ids])
    return product_cards(entries, stock, prices, settings_of(request).low_stock_threshold)


async def home(request: Request) -> Response:
    snapshot = await snapshot_of(request)
    prices = snapshot.prices(utcnow())
    newest = snapshot.newest(8)
    on_sale = list(prices.on_sale[:4])
    cards = await _cards(request, prices, [*newest, *on_sale])
    return render(request, "storefront/home.html", {
        "newest": cards[:len(newest)], "on_sale": cards[len(newest):],
        "categories": snapshot.categories,
    }, snapshot=snapshot)


async def category(request: Request) -> Response:
    snapshot = await snapshot_of(request)
    found = snapshot.category(request.path_params["slug"])
    if found is None or found.id is None:
        raise HTTPException(404)
    sort = request.query_params.get("sort", "name")
    if sort not in SORTS:
        sort = "name"
    prices = snapshot.prices(utcnow())
    entries = snapshot.listing(found.id, sort, prices)
    page = paginate(entries, parse_int(request.query_params.get("page"), default=1) or 1)
    return render(request, "storefront/listing.html", {
        "title": found.name, "category": found,
        "cards": await _cards(request, prices, page.entries),
        "page": page, "sort": sort, "sorts": SORTS, "base_url": f"/c/{found.slug}",
    }, snapshot=snapshot)


def _search(db: Database, query: str) -> list[int]:
    with db.read_session() as session:
        return search_product_ids(session, query)


async def search(request: Request) -> Response:
    query = " ".join(request.query_params.get("q", "").split())[:100]
    snapshot = await snapshot_of(request)
    entries: list[ProductEntry] = []
    if query:
        ids = await run_service(_search, db_of(request), query)
        entries = [snapshot.by_id[i] for i in ids if i in snapshot.by_id]
    page = paginate(entries, parse_int(request.query_params.get("page"), default=1) or 1)
    return render(request, "storefront/listing.html", {
        "title": f"Search: {query}" if query else "Search", "category": None, "query": query,
        "cards": await _cards(request, snapshot.prices(utcnow()), page.entries), "page": page,
        "sort": None, "sorts": {}, "base_url": "/search",
    }, snapshot=snapshot)


async def product(request: Request) -> Response:
    snapshot = await snapshot_of(request)
    entry = snapshot.products.get(request.path_params["slug"])
    if entry is None:
        raise HTTPException(404)
    stock = await stock_of(request, entry.variant_ids)
    choices = variant_choices(entry, stock, snapshot.prices(utcnow()),
                              settings_of(request).low_stock_threshold)
    wanted = parse_int(request.query_params.get("variant"))
    selected = next((c for c in choices if c.variant.id == wanted), None) or next(
        (c for c in choices if c.in_stock), choices[0])
    return render(request, "storefront/product.html", {
        "entry": entry, "choices": choices, "selected": selected,
        "max_quantity": settings_of(request).max_line_quantity,
    }, snapshot=snapshot)
