"""Catalogue management: categories, products, variants, prices and sale windows."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field, model_validator

from admin import catalogue as cat
from admin.api import Api, Context, DbId, Schema, UtcTime
from models.catalog import Category, Product, Variant
from models.staff import Permission

api = Api()
TAGS = ["catalogue"]
SKU = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
SLUG = r"^[a-z0-9]+(-[a-z0-9]+)*$"
MAX_PRICE = 100_000_000


class CategoryIn(Schema):
    name: str = Field(min_length=1, max_length=120)
    slug: str | None = Field(default=None, max_length=80, pattern=SLUG)
    description: str = Field(default="", max_length=2000)
    position: int = Field(default=0, ge=0, le=10_000)


class CategoryOut(BaseModel):
    id: int
    slug: str
    name: str
    description: str
    position: int


class CategoryList(BaseModel):
    items: list[CategoryOut]


class VariantIn(Schema):
    sku: str = Field(pattern=SKU)
    name: str = Field(min_length=1, max_length=120)
    price_cents: int = Field(ge=0, le=MAX_PRICE)
    sale_price_cents: int | None = Field(default=None, ge=0, le=MAX_PRICE)
    sale_starts_at: UtcTime | None = None
    sale_ends_at: UtcTime | None = None

    def fields(self) -> cat.VariantFields:
        return cat.VariantFields(**self.model_dump())


class VariantPatch(Schema):
    name: str | None = Field(default=None, min_length=1, max_length=120)
    price_cents: int | None = Field(default=None, ge=0, le=MAX_PRICE)
    sale_price_cents: int | None = Field(default=None, ge=0, le=MAX_PRICE)
    sale_starts_at: UtcTime | None = None
    sale_ends_at: UtcTime | None = None
    active: bool | None = None

    @model_validator(mode="after")
    def _no_nulls_for_required(self) -> VariantPatch:
        for name in ("name", "price_cents", "active"):
            if name in self.model_fields_set and getattr(self, name) is None:
                raise ValueError(f"{name} cannot be null")
        return self


class VariantOut(BaseModel):
    id: int
    sku: str
    name: str
    price_cents: int
    sale_price_cents: int | None
    sale_starts_at: datetime | None
    sale_ends_at: datetime | None
    currency: str
    position: int
    active: bool


class ProductIn(Schema):
    name: str = Field(min_length=1, max_length=200)
    slug: str | None = Field(default=None, max_length=120, pattern=SLUG)
    category_id: int = Field(ge=1, le=2_147_483_647)
    description: str = Field(default="", max_length=20_000)
    image_path: str = Field(default="", max_length=200, pattern=r"^[A-Za-z0-9._/-]*$")
    variants: list[VariantIn] = Field(min_length=1, max_length=100)


class ProductPatch(Schema):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    slug: str | None = Field(default=None, max_length=120, pattern=SLUG)
    category_id: int | None = Field(default=None, ge=1, le=2_147_483_647)
    description: str | None = Field(default=None, max_length=20_000)
    image_path: str | None = Field(default=None, max_length=200, pattern=r"^[A-Za-z0-9._/-]*$")
    active: bool | None = None

    @model_validator(mode="after")
    def _no_nulls(self) -> ProductPatch:
        nulls = [n for n in self.model_fields_set if getattr(self, n) is None]
        if nulls:
            raise ValueError(f"{', '.join(sorted(nulls))} cannot be null")
        return self


class ProductOut(BaseModel):
    id: int
    slug: str
    name: str
    category_id: int
    description: str
    image_path: str
    active: bool
    created_at: datetime
    variants: list[VariantOut]


class ProductQuery(Schema):
    category_id: int | None = Field(default=None, ge=1, le=2_147_483_647)
    active: bool | None = None
    q: str | None = Field(default=None, max_length=100)
    offset: int = Field(default=0, ge=0, le=1_000_000)
    limit: int = Field(default=50, ge=1, le=200)


class ProductPage(BaseModel):
    items: list[ProductOut]
    total: int
    offset: int
    limit: int


def _category_out(category: Category) -> CategoryOut:
    return CategoryOut.model_validate(category, from_attributes=True)


def _product_out(product: Product, variants: list[Variant]) -> ProductOut:
    data: dict[str, Any] = product.model_dump()
    data["variants"] = [VariantOut.model_validate(v, from_attributes=True) for v in variants]
    return ProductOut(**data)


@api.route("GET", "/api/categories", access=Permission.CATALOGUE_READ, response=CategoryList,
           tags=TAGS, summary="All categories")
def list_categories(ctx: Context) -> CategoryList:
    with ctx.db.read_session() as session:
        return CategoryList(items=[_category_out(c) for c in cat.list_categories(session)])


@api.route("POST", "/api/categories", access=Permission.CATALOGUE_WRITE, body=CategoryIn,
           response=CategoryOut, status_code=201, tags=TAGS, errors=(409,),
           summary="Create a category")
def create_category(ctx: Context, body: CategoryIn) -> CategoryOut:
    with ctx.unit_of_work() as uow:
        category = cat.create_category(uow=uow, actor=ctx.actor, **body.model_dump())
    return _category_out(category)


@api.route("GET", "/api/products", access=Permission.CATALOGUE_READ, query=ProductQuery,
           response=ProductPage, tags=TAGS, summary="Products with their variants")
def list_products(ctx: Context, query: ProductQuery) -> ProductPage:
    with ctx.db.read_session() as session:
        products, total = cat.list_products(session, category_id=query.category_id,
                                            active=query.active, query=query.q,
                                            offset=query.offset, limit=query.limit)
        variants = cat.variants_of(session, [p.id for p in products if p.id is not None])
    return ProductPage(items=[_product_out(p, variants[p.id]) for p in products
                              if p.id is not None],
                       total=total, offset=query.offset, limit=query.limit)


@api.route("GET", "/api/products/{product_id}", access=Permission.CATALOGUE_READ,
           response=ProductOut, tags=TAGS, summary="One product with its variants")
def get_product(ctx: Context, product_id: DbId) -> ProductOut:
    with ctx.db.read_session() as session:
        product = cat.get_product(session, product_id)
        return _product_out(product, cat.variants_of(session, [product_id])[product_id])


@api.route("POST", "/api/products", access=Permission.CATALOGUE_WRITE, body=ProductIn,
           response=ProductOut, status_code=201, tags=TAGS, errors=(409,),
           summary="Create a product with its variants (each with an empty stock row)")
def create_product(ctx: Context, body: ProductIn) -> ProductOut:
    with ctx.unit_of_work() as uow:
        product, variants = cat.create_product(
            uow=uow, actor=ctx.actor, name=body.name, slug=body.slug,
            category_id=body.category_id, description=body.description,
            image_path=body.image_path, variants=[v.fields() for v in body.variants])
        return _product_out(product, variants)


@api.route("PATCH", "/api/products/{product_id}", access=Permission.CATALOGUE_WRITE,
           body=ProductPatch, response=ProductOut, tags=TAGS, errors=(409,),
           summary="Change a product's name, slug, category, description, image or activity")
def update_product(ctx: Context, product_id: DbId, body: ProductPatch) -> ProductOut:
    changes = body.model_dump(include=body.model_fields_set)
    with ctx.unit_of_work() as uow:
        product = cat.update_product(uow=uow, actor=ctx.actor, product_id=product_id,
                                     changes=changes)
        return _product_out(product, cat.variants_of(uow.session, [product_id])[product_id])


@api.route("POST", "/api/products/{product_id}/deactivate", access=Permission.CATALOGUE_WRITE,
           response=ProductOut, tags=TAGS,
           summary="Take a product off the storefront (orders keep their snapshot)")
def deactivate_product(ctx: Context, product_id: DbId) -> ProductOut:
    with ctx.unit_of_work() as uow:
        product = cat.update_product(uow=uow, actor=ctx.actor, product_id=product_id,
                                     changes={"active": False})
        return _product_out(product, cat.variants_of(uow.session, [product_id])[product_id])


@api.route("POST", "/api/products/{product_id}/variants", access=Permission.CATALOGUE_WRITE,
           body=VariantIn, response=VariantOut, status_code=201, tags=TAGS, errors=(409,),
           summary="Add a variant (own SKU and price) to a product")
def add_variant(ctx: Context, product_id: DbId, body: VariantIn) -> VariantOut:
    with ctx.unit_of_work() as uow:
        variant = cat.add_variant(uow=uow, actor=ctx.actor, product_id=product_id,
                                  fields=body.fields())
        return VariantOut.model_validate(variant, from_attributes=True)


@api.route("PATCH", "/api/variants/{variant_id}", access=Permission.CATALOGUE_WRITE,
           body=VariantPatch, response=VariantOut, tags=TAGS,
           summary="Change a variant's name, price, sale price and window (null clears), or "
           "activity")
def update_variant(ctx: Context, variant_id: DbId, body: VariantPatch) -> VariantOut:
    changes = body.model_dump(include=body.model_fields_set)
    with ctx.unit_of_work() as uow:
        variant = cat.update_variant(uow=uow, actor=ctx.actor, variant_id=variant_id,
                                     changes=changes)
        return VariantOut.model_validate(variant, from_attributes=True)
