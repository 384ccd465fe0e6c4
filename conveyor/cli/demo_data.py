"""`conveyor demo-data`: a believable shop to click through.

Six departments, 48 products with 1-4 variants each, sale prices with past, running and future
windows, a generated SVG picture per product, and stock spread over two warehouses (Berlin and
Rotterdam) in bins with pick sequences; a few variants are nearly or fully sold out so every
availability label shows. Deterministic: the same data on every machine.
"""

from __future__ import annotations

import random
import zlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from html import escape
from pathlib import Path

from sqlmodel import func, select

from conveyor import audit
from conveyor.db import Database, UnitOfWork
from conveyor.settings import Settings
from fulfilment.discounts import DiscountFields, create_code, find_code
from fulfilment.inventory import receive_stock
from models.base import utcnow
from models.catalog import CatalogueVersion, Category, Product, Variant
from models.discounts import DiscountKind
from models.inventory import Location, StockItem, Warehouse

DEMO_CODE = "WELCOME10"  # shown by `make run`, so a new user can try a code at checkout


@dataclass(frozen=True)
class Department:
    slug: str
    name: str
    description: str
    hue: int
    products: tuple[tuple[str, int, str], ...]  # name, price in cents, variant scheme


SCHEMES: dict[str, tuple[str, ...]] = {
    "one": ("Standard",),
    "size": ("Small", "Medium", "Large"),
    "colour": ("Slate", "Sand", "Forest"),
    "apparel": ("S", "M", "L", "XL"),
    "pack": ("Single", "Pack of 3"),
    "weight": ("250 g", "500 g", "1 kg"),
}

DEPARTMENTS: tuple[Department, ...] = (
    Department("kitchen", "Kitchen", "Pans, knives and tools that last.", 12, (
        ("Cast Iron Skillet", 4990, "size"), ("Chef's Knife", 8900, "one"),
        ("Walnut Cutting Board", 3990, "size"), ("Enamel Dutch Oven", 12900, "colour"),
        ("Stainless Mixing Bowls", 2990, "pack"), ("Linen Tea Towel", 1290, "colour"),
        ("Pepper Mill", 3490, "colour"), ("Silicone Spatula", 990, "pack"),
    )),
    Department("home", "Home & Living", "Things that make a room feel lived in.", 200, (
        ("Wool Throw Blanket", 7900, "colour"), ("Stoneware Vase", 3290, "size"),
        ("Linen Cushion Cover", 2490, "colour"), ("Beeswax Candle", 1490, "pack"),
        ("Oak Picture Frame", 2190, "size"), ("Cotton Bath Towel", 1990, "colour"),
        ("Ceramic Table Lamp", 8900, "colour"), ("Jute Door Mat", 2790, "one"),
    )),
    Department("outdoor", "Outdoor", "For walks, camps and long days outside.", 110, (
        ("Insulated Bottle", 2990, "colour"), ("Trail Backpack 28L", 9900, "colour"),
        ("Camping Mug", 1490, "colour"), ("Merino Hiking Socks", 1990, "apparel"),
        ("Folding Camp Chair", 5490, "one"), ("Headlamp 300lm", 3490, "one"),
        ("Rain Shell Jacket", 14900, "apparel"), ("Picnic Blanket", 3990, "colour"),
    )),
    Department("stationery", "Stationery", "Paper, pens and the joy of writing.", 45, (
        ("Dot Grid Notebook", 1590, "size"), ("Fountain Pen", 4900, "colour"),
        ("Brass Ruler", 1890, "one"), ("Ink Bottle 50ml", 1190, "colour"),
        ("Desk Organiser", 3290, "colour"), ("Kraft Envelopes", 690, "pack"),
        ("Mechanical Pencil", 1290, "colour"), ("Leather Pen Case", 2990, "colour"),
    )),
    Department("tea-coffee", "Tea & Coffee", "Good beans, fine leaves, the right kit.", 25, (
        ("House Espresso Beans", 1390, "weight"), ("Single Origin Filter Coffee", 1690, "weight"),
        ("Sencha Green Tea", 1190, "weight"), ("Earl Grey Loose Leaf", 990, "weight"),
        ("Pour-Over Dripper", 2490, "colour"), ("Hand Coffee Grinder", 6900, "one"),
        ("Glass Teapot", 3490, "size"), ("Milk Frothing Jug", 1990, "size"),
    )),
    Department("bags", "Bags & Accessories", "Carry what matters, well made.", 280, (
        ("Canvas Tote Bag", 2490, "colour"), ("Leather Wallet", 5900, "colour"),
        ("Weekender Duffel", 13900, "colour"), ("Laptop Sleeve", 3990, "size"),
        ("Wool Beanie", 2290, "colour"), ("Cotton Scarf", 2990, "colour"),
        ("Waxed Cap", 3290, "apparel"), ("Key Organiser", 1690, "colour"),
    )),
)

WAREHOUSES = (("BER", "Berlin warehouse"), ("RTM", "Rotterdam warehouse"))
ZONES = ("A", "B")


def catalogue_is_empty(settings: Settings) -> bool:
    db = Database.from_settings(settings, pool_size=1)
    try:
        with db.read_session() as session:
            return session.exec(select(func.count()).select_from(Product)).one() == 0
    finally:
        db.dispose()


def product_svg(name: str, department: str, hue: int, seed: int) -> str:
    """A simple, distinct picture: a coloured field, a few shapes, the product's initials."""
    rng = random.Random(seed)
    shapes = []
    for _ in range(5):
        x, y, r = rng.randint(0, 320), rng.randint(0, 240), rng.randint(20, 90)
        light = rng.randint(55, 80)
        shapes.append(f'<circle cx="{x}" cy="{y}" r="{r}" fill="hsl({hue},45%,{light}%)" '
                      f'fill-opacity="0.55"/>')
    initials = "".join(word[0] for word in name.split()[:2]).upper()
    return (
        '<svg xmlns="http://www.w3.org/2000/svg" width="320" height="240" viewBox="0 0 320 240">'
        f'<rect width="320" height="240" fill="hsl({hue},35%,88%)"/>{"".join(shapes)}'
        f'<text x="160" y="138" font-family="Georgia, serif" font-size="64" '
        f'fill="hsl({hue},40%,28%)" text-anchor="middle">{escape(initials)}</text>'
        f'<text x="160" y="222" font-family="sans-serif" font-size="13" '
        f'fill="hsl({hue},30%,30%)" text-anchor="middle">{escape(department)}</text></svg>'
    )


def _slug(text: str) -> str:
    return "-".join("".join(c if c.isalnum() else " " for c in text.lower()).split())


def _locations(uow: UnitOfWork) -> dict[str, list[Location]]:
    bins: dict[str, list[Location]] = {}
    for code, name in WAREHOUSES:
        warehouse = Warehouse(code=code, name=name)
        uow.session.add(warehouse)
        uow.flush()
        assert warehouse.id is not None
        sequence = 0
        for zone in ZONES:
            for aisle in range(1, 5):
                for shelf in range(1, 4):
                    sequence += 10
                    location = Location(
                        warehouse_id=warehouse.id, code=f"{zone}-{aisle:02d}-{shelf}",
                        zone=zone, aisle=f"{aisle:02d}", shelf=str(shelf),
                        pick_sequence=sequence,
                    )
                    uow.session.add(location)
                    bins.setdefault(code, []).append(location)
        uow.flush()
    return bins


def load_demo_data(settings: Settings, *, force: bool = False) -> str:
    """Load the demo shop; returns a one-line summary. Skips when products exist, unless forced."""
    if not force and not catalogue_is_empty(settings):
        return "demo data: the catalogue already has products; nothing loaded"
    rng = random.Random(2026)
    now = utcnow().replace(second=0, microsecond=0)
    images = settings.media_dir / "products"
    images.mkdir(parents=True, exist_ok=True)
    db = Database.from_settings(settings, pool_size=1)
    counts = {"categories": 0, "products": 0, "variants": 0, "units": 0}
    try:
        with db.unit_of_work() as uow:
            session = uow.session
            bins = _locations(uow) if session.exec(select(Warehouse)).first() is None else {
                w.code: list(session.exec(select(Location).where(Location.warehouse_id == w.id)))
                for w in session.exec(select(Warehouse))
            }
            for position, department in enumerate(DEPARTMENTS):
                category = Category(slug=department.slug, name=department.name,
                                    description=department.description, position=position)
                session.add(category)
                session.flush()
                assert category.id is not None
                counts["categories"] += 1
                for index, (name, base_price, scheme) in enumerate(department.products):
                    slug = _slug(name)
                    _write_image(images / f"{slug}.svg",
                                 product_svg(name, department.name, department.hue,
                                             seed=zlib.crc32(slug.encode()) + index))
                    product = Product(
                        slug=slug, name=name, category_id=category.id,
                        image_path=f"products/{slug}.svg",
                        description=_description(name, department, rng),
                        created_at=now - timedelta(days=90 - counts["products"]),
                    )
                    session.add(product)
                    session.flush()
                    assert product.id is not None
                    counts["products"] += 1
                    sale = _sale_window(counts["products"], now)
                    for v_index, variant_name in enumerate(SCHEMES[scheme]):
                        price = base_price + v_index * _step(scheme, base_price)
                        variant = Variant(
                            product_id=product.id, name=variant_name, position=v_index,
                            sku=f"{department.slug[:3].upper()}-{product.id:03d}-{v_index + 1}",
                            price_cents=price,
                        )
                        if sale is not None:
                            variant.sale_price_cents = price * (100 - sale[0]) // 100
                            variant.sale_starts_at, variant.sale_ends_at = sale[1], sale[2]
                        session.add(variant)
                        session.flush()
                        assert variant.id is not None
                        session.add(StockItem(variant_id=variant.id))
                        session.flush()
                        counts["variants"] += 1
                        counts["units"] += _stock(uow, variant.id, bins, rng, counts["variants"])
            if find_code(session, DEMO_CODE) is None:
                create_code(uow=uow, actor=audit.Actor(email="demo-data"), code=DEMO_CODE,
                            fields=DiscountFields(
                                kind=DiscountKind.PERCENT, value=1000, min_spend_cents=3000,
                                per_customer_limit=1,
                                description="10% off an order of 30 EUR or more, once each"))
            version = session.get(CatalogueVersion, 1) or CatalogueVersion(id=1)
            version.version += 1
            version.changed_at = utcnow()
            session.add(version)
    finally:
        db.dispose()
    return (f"demo data: {counts['categories']} categories, {counts['products']} products, "
            f"{counts['variants']} variants, {counts['units']} units in stock "
            f"in {len(WAREHOUSES)} warehouses; discount code {DEMO_CODE}")


def _write_image(path: Path, svg: str) -> None:
    path.write_text(svg, encoding="utf-8")


def _step(scheme: str, base_price: int) -> int:
    if scheme in ("size", "weight", "pack"):
        return max(100, base_price // 3 // 10 * 10)
    return 0


def _sale_window(n: int, now: datetime) -> tuple[int, datetime, datetime] | None:
    """Every 5th product is on sale now; every 11th starts soon; every 13th ended last week."""
    if n % 5 == 0:
        return 20, now - timedelta(days=2), now + timedelta(days=12)
    if n % 11 == 0:
        return 15, now + timedelta(days=3), now + timedelta(days=10)
    if n % 13 == 0:
        return 25, now - timedelta(days=14), now - timedelta(days=7)
    return None


def _stock(uow: UnitOfWork, variant_id: int, bins: dict[str, list[Location]],
           rng: random.Random, n: int) -> int:
    """Receive stock into one or two warehouses; a few variants are scarce or sold out."""
    if n % 17 == 0:
        return 0  # sold out
    quantity = rng.randint(2, 4) if n % 7 == 0 else rng.randint(12, 60)
    warehouses = list(bins)
    placed = 0
    targets = warehouses if quantity > 8 and n % 2 == 0 else [warehouses[n % len(warehouses)]]
    for i, code in enumerate(targets):
        share = quantity // len(targets) + (quantity % len(targets) if i == 0 else 0)
        location = bins[code][(variant_id * 7 + i) % len(bins[code])]
        assert location.id is not None
        receive_stock(uow=uow, variant_id=variant_id, location_id=location.id, quantity=share,
                      actor="demo-data", reason="opening stock", document_type="demo")
        placed += share
    return placed


def _description(name: str, department: Department, rng: random.Random) -> str:
    openers = [
        f"Our {name.lower()} is made to be used every day and to last for years.",
        f"A {name.lower()} chosen by our {department.name.lower()} buyers for how well it works.",
        f"The {name.lower()} we would buy ourselves: simple, sturdy and good to look at.",
    ]
    details = [
        "Made in small batches by a family workshop in Portugal.",
        "Designed in Rotterdam and made in Europe from responsibly sourced materials.",
        "Tested by our team for a season before we added it to the shop.",
        "Packed without plastic and shipped from our Berlin or Rotterdam warehouse.",
    ]
    care = [
        "Care: wipe clean with a damp cloth.",
        "Care: hand wash only, dry naturally.",
        "Comes with a two-year guarantee.",
    ]
    return "\n\n".join([rng.choice(openers), rng.choice(details), rng.choice(care)])
