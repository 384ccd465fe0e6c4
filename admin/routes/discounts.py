"""The discount desk (admin only): create, edit, pause and resume codes; list them and read one
with its usage report.

Endpoints only parse, call one service of `fulfilment.discounts` and render; the services lock
the code's row, check the settings fit together and write the audit trail.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlmodel import Session

from admin.api import MAX_CENTS, Api, Context, DbId, Schema, UtcTime
from fulfilment import discounts as disc
from models.discounts import CODE_MAX_LENGTH, DiscountCode, DiscountKind
from models.staff import Permission

api = Api()
TAGS = ["discounts"]
CODE = rf"^[A-Za-z0-9][A-Za-z0-9_-]{{0,{CODE_MAX_LENGTH - 1}}}$"
Code = Annotated[str, Field(pattern=CODE)]
MAX_USES = 1_000_000_000
VALUE_HELP = "Basis points for percent (1500 = 15%, at most 10000), cents for fixed."


def _percent_fits(kind: DiscountKind | None, value: int | None) -> None:
    if kind == DiscountKind.PERCENT and value is not None and value > 10_000:
        raise ValueError("a percent value is in basis points: at most 10000 (100%)")


def _dates_fit(starts_at: datetime | None, ends_at: datetime | None) -> None:
    if starts_at is not None and ends_at is not None and ends_at <= starts_at:
        raise ValueError("ends_at must be after starts_at")


class DiscountIn(Schema):
    model_config = ConfigDict(str_strip_whitespace=True, extra="forbid")

    code: Code = Field(description="Letters, digits, - and _; kept upper-case.")
    description: str = Field(default="", max_length=200)
    kind: DiscountKind
    value: int = Field(ge=1, le=MAX_CENTS, description=VALUE_HELP)
    min_spend_cents: int = Field(default=0, ge=0, le=MAX_CENTS, description=(
        "Counted on the items the code applies to, before the discount."))
    starts_at: UtcTime | None = None
    ends_at: UtcTime | None = Field(default=None, description="The first moment it is no "
                                    "longer valid.")
    usage_limit: int | None = Field(default=None, ge=1, le=MAX_USES)
    per_customer_limit: int | None = Field(default=None, ge=1, le=MAX_USES,
                                           description="Uses per email address.")
    product_ids: list[DbId] = Field(default_factory=list, max_length=500)
    category_ids: list[DbId] = Field(default_factory=list, max_length=500)

    @model_validator(mode="after")
    def _fits(self) -> DiscountIn:
        _percent_fits(self.kind, self.value)
        _dates_fit(self.starts_at, self.ends_at)
        return self


class DiscountPatch(Schema):
    model_config = ConfigDict(str_strip_whitespace=True, extra="forbid")

    description: str | None = Field(default=None, max_length=200)
    kind: DiscountKind | None = None
    value: int | None = Field(default=None, ge=1, le=MAX_CENTS, description=VALUE_HELP)
    min_spend_cents: int | None = Field(default=None, ge=0, le=MAX_CENTS)
    starts_at: UtcTime | None = Field(default=None, description="null: valid from now on.")
    ends_at: UtcTime | None = Field(default=None, description="null: no end.")
    usage_limit: int | None = Field(default=None, ge=1, le=MAX_USES,
                                    description="null: no limit.")
    per_customer_limit: int | None = Field(default=None, ge=1, le=MAX_USES,
                                           description="null: no limit.")
    product_ids: list[DbId] | None = Field(default=None, max_length=500)
    category_ids: list[DbId] | None = Field(default=None, max_length=500)

    @model_validator(mode="after")
    def _something_to_change(self) -> DiscountPatch:
        if not self.model_fields_set:
            raise ValueError("give at least one setting to change")
        nulls = [n for n in ("description", "kind", "value", "min_spend_cents")
                 if n in self.model_fields_set and getattr(self, n) is None]
        if nulls:
            raise ValueError(f"{', '.join(nulls)} cannot be null")
        _percent_fits(self.kind, self.value)
        _dates_fit(self.starts_at, self.ends_at)
        return self


class DiscountQuery(Schema):
    search: str | None = Field(default=None, max_length=CODE_MAX_LENGTH,
                               description="Part of a code.")
    paused: bool | None = None
    limit: int = Field(default=50, ge=1, le=200)
    offset: int = Field(default=0, ge=0, le=1_000_000)


class UsageOut(BaseModel):
    uses: int = Field(description="Uses that count against the limits (orders not ended "
                      "unpaid), including orders still waiting for payment.")
    awaiting_payment: int
    released: int = Field(description="Uses freed by orders that ended unpaid.")
    customers: int = Field(description="Distinct email addresses among the uses.")
    discount_cents: int = Field(description="Discount given on those orders (net).")
    revenue_cents: int = Field(description="Those orders' totals, VAT included.")
    remaining: int | None = Field(description="Uses left before the total limit; null: none.")


class DiscountOut(BaseModel):
    code: str
    description: str
    kind: str
    value: int
    currency: str
    min_spend_cents: int
    starts_at: datetime | None
    ends_at: datetime | None
    usage_limit: int | None
    per_customer_limit: int | None
    product_ids: list[int]
    category_ids: list[int]
    paused: bool
    created_by: str
    created_at: datetime
    updated_at: datetime
    usage: UsageOut


class DiscountPage(BaseModel):
    items: list[DiscountOut]
    offset: int
    limit: int


def _out(code: DiscountCode, usage: disc.Usage) -> DiscountOut:
    fields: dict[str, Any] = {name: getattr(code, name) for name in DiscountOut.model_fields
                              if name != "usage"}
    remaining = (max(code.usage_limit - usage.uses, 0) if code.usage_limit is not None
                 else None)
    return DiscountOut(**fields, usage=UsageOut(**usage.__dict__, remaining=remaining))


def _with_usage(session: Session, code: DiscountCode) -> DiscountOut:
    assert code.id is not None
    return _out(code, disc.usage_of(session, [code.id])[code.id])


@api.route("GET", "/api/discounts", access=Permission.DISCOUNTS_MANAGE, query=DiscountQuery,
           response=DiscountPage, tags=TAGS,
           summary="Discount codes by code, each with its usage")
def list_discounts(ctx: Context, query: DiscountQuery) -> DiscountPage:
    with ctx.db.read_session() as session:
        found = disc.list_codes(session, search=query.search, paused=query.paused,
                                limit=query.limit, offset=query.offset)
    return DiscountPage(items=[_out(code, usage) for code, usage in found],
                        offset=query.offset, limit=query.limit)


@api.route("POST", "/api/discounts", access=Permission.DISCOUNTS_MANAGE, body=DiscountIn,
           response=DiscountOut, status_code=201, tags=TAGS, errors=(409,),
           summary="Create a discount code: percent or fixed, minimum spend, validity, usage "
           "limits, products or categories")
def create_discount(ctx: Context, body: DiscountIn) -> DiscountOut:
    fields = body.model_dump(exclude={"code"})
    with ctx.unit_of_work() as uow:
        code = disc.create_code(uow=uow, actor=ctx.actor, code=body.code,
                                fields=disc.DiscountFields(**fields))
        return _with_usage(uow.session, code)


@api.route("GET", "/api/discounts/{code}", access=Permission.DISCOUNTS_MANAGE,
           response=DiscountOut, tags=TAGS,
           summary="One discount code with its usage report: uses, customers, discount "
           "given, revenue of the orders using it")
def get_discount(ctx: Context, code: Code) -> DiscountOut:
    with ctx.db.read_session() as session:
        return _with_usage(session, disc.get_code(session, code))


@api.route("PATCH", "/api/discounts/{code}", access=Permission.DISCOUNTS_MANAGE,
           body=DiscountPatch, response=DiscountOut, tags=TAGS,
           summary="Change a code's settings (not the code); orders placed keep their discount")
def update_discount(ctx: Context, code: Code, body: DiscountPatch) -> DiscountOut:
    changes = body.model_dump(include=body.model_fields_set)
    with ctx.unit_of_work() as uow:
        found = disc.update_code(uow=uow, actor=ctx.actor, code=code, changes=changes)
        return _with_usage(uow.session, found)


@api.route("POST", "/api/discounts/{code}/pause", access=Permission.DISCOUNTS_MANAGE,
           response=DiscountOut, tags=TAGS,
           summary="Pause a code: checkouts refuse it until it is resumed")
def pause_discount(ctx: Context, code: Code) -> DiscountOut:
    with ctx.unit_of_work() as uow:
        found = disc.set_paused(uow=uow, actor=ctx.actor, code=code, paused=True)
        return _with_usage(uow.session, found)


@api.route("POST", "/api/discounts/{code}/resume", access=Permission.DISCOUNTS_MANAGE,
           response=DiscountOut, tags=TAGS, summary="Resume a paused code")
def resume_discount(ctx: Context, code: Code) -> DiscountOut:
    with ctx.unit_of_work() as uow:
        found = disc.set_paused(uow=uow, actor=ctx.actor, code=code, paused=False)
        return _with_usage(uow.session, found)
