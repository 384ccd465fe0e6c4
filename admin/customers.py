"""Customer files and the segments report (middle office reading), and the note service.

**Who is a customer.** A customer is an email address, compared lower-cased: guests have
files too. An order belongs to the file of its account's current email when it is joined to
a live account (`orders.customer_id`), else to the file of its own email; an account with
no orders yet has a file as well. Orders of an erased account stay joined to its anonymised
row and belong to no file, so its old email finds nothing (the segments report still counts
them, as one customer known only by the account id).

**How a file is addressed.** Never by a raw email (paths and query strings end up in logs,
and the audit trail can never be erased): a file's `ref` is its live account's id for
account holders, and for guests `g` + the first 32 hex digits of HMAC-SHA256(SECRET_KEY,
lower-cased email): stable, opaque and not reversible. As neither the database nor anyone
else can turn such a ref back into an email, each guest ref the search hands out is kept in
`customer_file_ref` (ref -> email) to find the file again. Changing SECRET_KEY changes the
guest refs (the next search hands out and remembers the new ones). Search cursors carry a
sort value and a row id, never an email.

**Figures.** An order counts once it was paid for (authorised). Lifetime value is what was
captured less what was refunded, over the paying payments of the file's orders; the average
order is the lifetime value over the orders with a capture. The returns rate is units
returned (lines of returns not rejected or cancelled) over units shipped (items of parcels
handed to a carrier).

**Segments.** Over a period of UTC days, the orders that count as sales are those whose
payment was captured in it (as in `admin/reports.py`); their revenue is the amount captured
(VAT and shipping included, refunds not taken off: those are in the margin report). A
customer is *new* when they had no sale captured before the period, *returning* otherwise.
Value bands are by order total: under 25, 25 to under 50, 50 to under 100, 100 to under 250,
and 250 EUR or more. Category revenue is the goods' line totals per category (shipping is in
no category); a customer's category mix is how many categories they bought from in the period.
Each section is one grouped query; nothing loops over orders in Python.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Integer,
    String,
    Subquery,
    and_,
    case,
    cast,
    literal,
    null,
    or_,
    text,
    tuple_,
    union_all,
)
from sqlalchemy import select as sql
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import aliased
from sqlmodel import Session, col, func, select

from admin import cursors
from conveyor.db import UnitOfWork
from conveyor.errors import NotFound
from models.after_sales import (
    ReturnLine,
    ReturnRequest,
    ReturnStatus,
    SupportThread,
    ThreadStatus,
)
from models.base import UTCDateTime, utcnow
from models.catalog import Category, Product, Variant
from models.customers import Customer, CustomerFileRef, CustomerNote
from models.finance import Refund, RefundStatus
from models.orders import Order, OrderLine
from models.payments import Payment
from models.screening import Screening
from models.warehouse import Parcel, ParcelItem

GUEST_REF = re.compile(r"^g[0-9a-f]{32}$")
REF_PATTERN = (r"^(g[0-9a-f]{32}|[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-"
               r"[0-9a-fA-F]{4}-[0-9a-fA-F]{12})$")
SORTS = ("-last_order", "last_order", "-lifetime_value", "lifetime_value")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)  # the sort value of "no order yet"
FILE_ORDERS_LIMIT = 500
NOT_COUNTED_RETURNS = (ReturnStatus.REJECTED.value, ReturnStatus.CANCELLED.value)
# (label, lowest total in cents, first total above the band or None), in order.
VALUE_BANDS: tuple[tuple[str, int, int | None], ...] = (
    ("under 25", 0, 2_500), ("25-50", 2_500, 5_000), ("50-100", 5_000, 10_000),
    ("100-250", 10_000, 25_000), ("250+", 25_000, None))


# -- References -----------------------------------------------------------------------------------


def normal_email(email: str) -> str:
    return email.strip().lower()


def guest_ref(secret: str, email: str) -> str:
    """The opaque, stable reference of the file of `email` (see the module's docstring)."""
    digest = hmac.new(secret.encode(), b"conveyor:customer-file:" + normal_email(email).encode(),
                      hashlib.sha256).hexdigest()
    return "g" + digest[:32]


def remember_refs(*, uow: UnitOfWork, refs: dict[str, str]) -> None:
    """Keep ref -> lower-cased email for guest refs handed out, so they lead back to their
    file. Idempotent and safe under concurrent searches (an upsert on the email: a ref made
    with a new SECRET_KEY replaces the old one)."""
    if not refs:
        return
    table = CustomerFileRef.__table__  # type: ignore[attr-defined]
    dialect = postgresql if uow.session.get_bind().dialect.name == "postgresql" else sqlite
    now = utcnow()
    statement = dialect.insert(table).values(
        [{"ref": ref, "email": email, "created_at": now} for ref, email in sorted(refs.items())])
    statement = statement.on_conflict_do_update(index_elements=["email"],
                                                set_={"ref": statement.excluded.ref})
    uow.session.execute(statement)


@dataclass(frozen=True)
class Identity:
    """Whose file: the lower-cased email, its canonical ref, and the live account if any."""

    email: str
    ref: str
    account: Customer | None


def _live_account(session: Session, email: str) -> Customer | None:
    return session.exec(select(Customer).where(func.lower(Customer.email) == email,
                                               col(Customer.deleted_at).is_(None))).first()


def resolve_ref(session: Session, ref: str, secret: str) -> Identity:
    """The file a ref names; NotFound for refs never handed out, erased accounts, and guest
    refs made with another SECRET_KEY."""
    email: str | None = None
    if GUEST_REF.fullmatch(ref):
        row = session.get(CustomerFileRef, ref)
        if row is not None and hmac.compare_digest(guest_ref(secret, row.email), ref):
            email = row.email
    else:
        try:
            account_id = uuid.UUID(ref)
        except ValueError:
            account_id = None
        account = session.get(Customer, account_id) if account_id else None
        if account is not None and account.deleted_at is None:
            email = normal_email(account.email)
    if email is None:
        raise NotFound("No such customer.")
    account = _live_account(session, email)
    return Identity(email, str(account.id) if account else guest_ref(secret, email), account)


def _without_jit(session: Session) -> None:
    """PostgreSQL's estimates for joins on the customer key are far too high and made it
    spend more time compiling the segments query (JIT) than running it: off for the read's
    own transaction."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SET LOCAL jit = off"))


# -- Which orders are whose -------------------------------------------------------------------


def _owner_key(order: Any, owner: Any, *, erased: str = "none") -> ColumnElement[Any]:
    """The customer an order belongs to, for `order` outer-joined to its account `owner` on
    `orders.customer_id` (see `_order_owner`): the account's lower-cased email while the
    account lives, else the order's own lower-cased email. An order of an erased account
    belongs to no file (NULL) or, with `erased="id"`, to `erased:<account id>`: one
    customer, counted without knowing who (the segments report)."""
    gone: Any = (literal("erased:") + cast(owner.id, String)) if erased == "id" else null()
    return case((col(owner.id).is_(None), func.lower(order.email)),
                (col(owner.deleted_at).is_(None), func.lower(owner.email)),
                else_=gone)


def _order_owner(name: str = "owner", order: Any = Order, *,
                 erased: str = "none") -> tuple[Any, ColumnElement[Any], ColumnElement[bool]]:
    """(an alias of the account, the customer key of `order`, the join condition)."""
    owner = aliased(Customer, name=name)
    return (owner, _owner_key(order, owner, erased=erased),
            col(owner.id) == order.customer_id)


# -- Search ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CustomerRow:
    ref: str
    email: str
    name: str
    account_id: uuid.UUID | None
    orders: int
    lifetime_value_cents: int
    last_order_at: datetime | None


def _facts(query: str | None) -> Subquery:
    """One row per order (its owner, whether it counts, what it kept, its date) and one per
    live account (so that accounts without orders are found too); grouped per customer."""
    owner, key, joined = _order_owner()
    placed = col(Order.authorized_at).is_not(None)
    orders = (
        sql(key.label("email"),
               cast(Order.id, String).label("row_id"),
               case((placed, 1), else_=0).label("placed"),
               func.coalesce(col(Payment.captured_cents) - col(Payment.refunded_cents), 0)
               .label("kept"),
               case((placed, Order.created_at), else_=null()).label("at"),
               func.lower(Order.email).label("raw_email"),
               func.lower(Order.full_name).label("name"))
        .select_from(Order)
        .outerjoin(owner, joined)
        .outerjoin(Payment, col(Payment.id) == Order.payment_id)
        .where(key.is_not(None)))
    accounts = (
        sql(func.lower(Customer.email), cast(Customer.id, String), literal(0), literal(0),
               null(), func.lower(Customer.email), func.lower(Customer.full_name))
        .where(col(Customer.deleted_at).is_(None)))
    facts = union_all(orders, accounts).subquery("facts")
    columns: list[Any] = [
        facts.c.email,
        func.sum(facts.c.placed).label("orders"),
        func.coalesce(func.sum(facts.c.kept), 0).label("value"),
        func.max(facts.c.at).label("last_at"),
        func.min(facts.c.row_id).label("tie"),
    ]
    grouped = sql(*columns).group_by(facts.c.email)
    if query:
        needle = query.strip().lower()
        hit = or_(facts.c.raw_email.contains(needle, autoescape=True),
                  facts.c.name.contains(needle, autoescape=True))
        grouped = grouped.having(func.max(case((hit, 1), else_=0)) == 1)
    return grouped.subquery("customers")


def _encode_cursor(sort: str, value: Any, tie: str) -> str:
    return cursors.pack({"s": sort, "v": value.isoformat() if isinstance(value, datetime)
                         else value, "t": tie})


def _decode_cursor(cursor: str, sort: str) -> tuple[Any, str]:
    raw = cursors.unpack(cursor)
    try:
        if raw["s"] != sort:
            raise ValueError("sorted differently")
        value: Any = raw["v"]
        if sort.endswith("last_order"):
            value = cursors.utc_time(value)
        elif (not isinstance(value, int) or isinstance(value, bool)
              or not -(2**63) <= value < 2**63):
            raise ValueError("not an amount")
        tie = raw["t"]
        if not isinstance(tie, str) or not 1 <= len(tie) <= 40:
            raise ValueError("not a row id")
        return value, tie
    except (ValueError, KeyError, TypeError, OverflowError) as exc:
        raise cursors.invalid(exc) from None


def search_customers(session: Session, *, secret: str, query: str | None, sort: str,
                     limit: int, cursor: str | None) -> tuple[list[CustomerRow], str | None]:
    """Customers whose email or name (on an order or the account) contains `query`, with
    their figures, a page at a time: keyset pagination on (sort value, first row id). One
    grouped query, plus one for the latest name of the page's guests."""
    customers = _facts(query)
    account = aliased(Customer, name="account")
    if sort.endswith("last_order"):
        key: ColumnElement[Any] = func.coalesce(customers.c.last_at,
                                                literal(EPOCH, UTCDateTime()))
    else:
        key = customers.c.value
    statement = (
        sql(customers.c.email, customers.c.orders, customers.c.value, customers.c.last_at,
               customers.c.tie, key.label("sort_key"), col(account.id),
               col(account.full_name))
        .select_from(customers)
        .outerjoin(account, and_(func.lower(account.email) == customers.c.email,
                                 col(account.deleted_at).is_(None))))
    descending = sort.startswith("-")
    if cursor:
        value, tie = _decode_cursor(cursor, sort)
        row, last = tuple_(key, customers.c.tie), tuple_(literal(value, key.type), tie)
        statement = statement.where(row < last if descending else row > last)
    if descending:
        statement = statement.order_by(key.desc(), customers.c.tie.desc())
    else:
        statement = statement.order_by(key.asc(), customers.c.tie.asc())
    found = list(session.execute(statement.limit(limit + 1)))
    more = len(found) > limit
    found = found[:limit]
    names = _latest_names(session, [r.email for r in found if r[6] is None])
    rows = [CustomerRow(
        ref=str(r[6]) if r[6] is not None else guest_ref(secret, r.email), email=r.email,
        name=r[7] if r[6] is not None else names.get(r.email, ""), account_id=r[6],
        orders=int(r.orders or 0), lifetime_value_cents=int(r.value or 0),
        last_order_at=r.last_at) for r in found]
    next_cursor = (_encode_cursor(sort, found[-1].sort_key, found[-1].tie)
                   if more and found else None)
    return rows, next_cursor


def _latest_names(session: Session, emails: list[str]) -> dict[str, str]:
    """The name on each guest's latest order (one windowed query for the page)."""
    if not emails:
        return {}
    owner, key, joined = _order_owner()
    ranked = (sql(key.label("email"), col(Order.full_name),
                     func.row_number().over(partition_by=key,
                                            order_by=col(Order.created_at).desc()).label("n"))
              .select_from(Order).outerjoin(owner, joined)
              .where(func.lower(Order.email).in_(emails), key.in_(emails))
              .subquery())
    return {email: name for email, name in session.execute(
        sql(ranked.c.email, ranked.c.full_name).where(ranked.c.n == 1))}


# -- The file -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FileOrder:
    order: Order
    payment: Payment | None


@dataclass(frozen=True)
class CustomerFile:
    identity: Identity
    name: str
    orders: list[FileOrder]
    orders_total: int
    placed_orders: int
    captured_orders: int
    lifetime_value_cents: int
    units_shipped: int
    units_returned: int
    returns_count: int
    refunds_count: int
    refunded_cents: int
    screenings: list[tuple[str, Screening]]  # (order number, screening), oldest first
    support_threads: int
    open_support_threads: int
    notes: list[CustomerNote]

    @property
    def average_order_cents(self) -> int | None:
        if not self.captured_orders:
            return None
        return round(self.lifetime_value_cents / self.captured_orders)

    @property
    def returns_rate(self) -> float | None:
        if not self.units_shipped:
            return None
        return round(self.units_returned / self.units_shipped, 4)


def _order_ids(identity: Identity) -> Any:
    """The ids of the orders in the file of `identity`, as a subquery (on aliases of its own,
    so that it is never correlated with the query using it). The candidates are found through
    the indexes on lower(orders.email) and orders.customer_id; the key then keeps those
    whose file this is."""
    order = aliased(Order, name="file_order")
    owner, key, joined = _order_owner("file_owner", order)
    candidates = func.lower(order.email) == identity.email
    if identity.account is not None:
        candidates = or_(candidates, col(order.customer_id) == identity.account.id)
    return (sql(col(order.id)).select_from(order).outerjoin(owner, joined)
            .where(candidates, key == identity.email))


def customer_file(session: Session, identity: Identity) -> CustomerFile:
    """Everything on one customer, in a fixed number of queries whatever their orders."""
    ids = _order_ids(identity)
    orders = [FileOrder(o, p) for o, p in session.exec(
        select(Order, Payment)
        .outerjoin(Payment, col(Payment.id) == Order.payment_id)
        .where(col(Order.id).in_(ids))
        .order_by(col(Order.created_at).desc(), col(Order.id).desc())
        .limit(FILE_ORDERS_LIMIT))]
    figures = session.execute(
        sql(func.count(),
               func.coalesce(func.sum(case((col(Order.authorized_at).is_not(None), 1),
                                           else_=0)), 0),
               func.coalesce(func.sum(case((col(Payment.captured_cents) > 0, 1), else_=0)), 0),
               func.coalesce(func.sum(col(Payment.captured_cents)
                                      - col(Payment.refunded_cents)), 0))
        .select_from(Order).outerjoin(Payment, col(Payment.id) == Order.payment_id)
        .where(col(Order.id).in_(ids))).one()
    shipped = session.execute(
        sql(func.coalesce(func.sum(ParcelItem.quantity), 0))
        .join(Parcel, col(Parcel.id) == ParcelItem.parcel_id)
        .where(col(Parcel.order_id).in_(ids), col(Parcel.shipped_at).is_not(None))).scalar()
    returned = session.execute(
        sql(func.count(func.distinct(ReturnRequest.id)),
               func.coalesce(func.sum(ReturnLine.quantity), 0))
        .select_from(ReturnRequest)
        .join(ReturnLine, col(ReturnLine.return_id) == ReturnRequest.id)
        .where(col(ReturnRequest.order_id).in_(ids),
               col(ReturnRequest.status).not_in(NOT_COUNTED_RETURNS))).one()
    refunds = session.execute(
        sql(func.count(), func.coalesce(func.sum(Refund.amount_cents), 0))
        .where(col(Refund.order_id).in_(ids), col(Refund.status) == RefundStatus.SUCCEEDED)
    ).one()
    screenings = [(number, screening) for number, screening in session.exec(
        select(Order.number, Screening).join(Order, col(Order.id) == Screening.order_id)
        .where(col(Screening.order_id).in_(ids))
        .order_by(col(Screening.screened_at), col(Screening.id)))]
    threads = session.execute(
        sql(func.count(),
               func.coalesce(func.sum(case((col(SupportThread.status) != ThreadStatus.CLOSED, 1),
                                           else_=0)), 0))
        .where(col(SupportThread.order_id).in_(ids))).one()
    notes = list(session.exec(
        select(CustomerNote).where(func.lower(CustomerNote.email) == identity.email)
        .order_by(col(CustomerNote.created_at).desc(), col(CustomerNote.id).desc())))
    name = identity.account.full_name if identity.account else ""
    if not name and orders:
        name = orders[0].order.full_name
    return CustomerFile(
        identity=identity, name=name, orders=orders, orders_total=int(figures[0]),
        placed_orders=int(figures[1]), captured_orders=int(figures[2]),
        lifetime_value_cents=int(figures[3]), units_shipped=int(shipped or 0),
        units_returned=int(returned[1]), returns_count=int(returned[0]),
        refunds_count=int(refunds[0]), refunded_cents=int(refunds[1]), screenings=screenings,
        support_threads=int(threads[0]), open_support_threads=int(threads[1]), notes=notes)


# -- Notes --------------------------------------------------------------------------------------


def add_customer_note(*, uow: UnitOfWork, identity: Identity, author: str,
                      body: str) -> CustomerNote:
    """A staff note on the file of `identity`, kept under its lower-cased email (flushed, so
    it has its id). The caller writes the audit entry in the same unit of work."""
    note = CustomerNote(email=identity.email, author=author, body=body, created_at=utcnow())
    uow.session.add(note)
    uow.flush()
    return note


# -- Segments -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SegmentRow:
    segment: str
    customers: int
    orders: int
    revenue_cents: int
    units: int | None = None


@dataclass(frozen=True)
class Segments:
    start: date
    end: date
    total: SegmentRow
    new_vs_returning: list[SegmentRow]
    by_country: list[SegmentRow]
    by_value_band: list[SegmentRow]
    by_category: list[SegmentRow]
    category_mix: list[SegmentRow]

    def sections(self) -> list[tuple[str, list[SegmentRow]]]:
        return [("total", [self.total]), ("new_vs_returning", self.new_vs_returning),
                ("country", self.by_country), ("value_band", self.by_value_band),
                ("category", self.by_category), ("category_mix", self.category_mix)]


def _bounds(start: date, end: date) -> tuple[datetime, datetime]:
    return (datetime.combine(start, time.min, UTC),
            datetime.combine(end + timedelta(days=1), time.min, UTC))


def _band() -> ColumnElement[str]:
    whens = [(col(Order.total_cents) < upper, label)
             for label, _lower, upper in VALUE_BANDS if upper is not None]
    return case(*whens, else_=VALUE_BANDS[-1][0])


def segments(session: Session, start: date, end: date) -> Segments:
    """Customers, orders and revenue of the sales captured in `start`..`end` (UTC days),
    split five ways; one grouped query per section."""
    _without_jit(session)
    since, until = _bounds(start, end)
    owner, key, joined = _order_owner(erased="id")
    before, before_payment = aliased(Order, name="before"), aliased(Payment, name="paid_before")
    before_owner, before_key, before_joined = _order_owner("before_owner", before, erased="id")
    # The customers with a sale before the period: one grouped scan, then a hash join.
    returning = (sql(before_key.label("customer")).select_from(before)
                 .outerjoin(before_owner, before_joined)
                 .join(before_payment, col(before_payment.id) == before.payment_id)
                 .where(col(before_payment.captured_at) < since)
                 .group_by(before_key)).subquery("repeat_buyers")
    in_period = (
        sql(col(Order.id).label("order_id"), key.label("customer"),
            col(Order.country).label("country"), _band().label("band"),
            col(Payment.captured_cents).label("revenue"))
        .select_from(Order).outerjoin(owner, joined)
        .join(Payment, col(Payment.id) == Order.payment_id)
        .where(col(Payment.captured_at) >= since, col(Payment.captured_at) < until)
    ).subquery("in_period")
    sales = (
        sql(in_period, case((returning.c.customer.is_not(None), "returning"), else_="new")
            .label("kind"))
        .select_from(in_period)
        .outerjoin(returning, returning.c.customer == in_period.c.customer)
    ).cte("sales")

    lines = (sql(sales.c.order_id, sales.c.customer, col(Category.name).label("category"),
                 col(OrderLine.quantity), col(OrderLine.line_total_cents))
             .join(OrderLine, col(OrderLine.order_id) == sales.c.order_id)
             .join(Variant, col(Variant.id) == OrderLine.variant_id)
             .join(Product, col(Product.id) == Variant.product_id)
             .join(Category, col(Category.id) == Product.category_id)).cte("lines")
    per_customer = (sql(sales.c.customer, func.count().label("orders"),
                        func.sum(sales.c.revenue).label("revenue"))
                    .group_by(sales.c.customer).subquery("per_customer"))
    spread = (sql(lines.c.customer,
                  func.count(func.distinct(lines.c.category)).label("categories"))
              .group_by(lines.c.customer).subquery("spread"))
    mix_label = case((spread.c.categories == 1, "one category"), else_="several categories")
    no_units = cast(null(), Integer)

    def by(section: str, key: Any) -> Any:
        return (sql(literal(section), key, func.count(func.distinct(sales.c.customer)),
                    func.count(), func.coalesce(func.sum(sales.c.revenue), 0), no_units)
                .group_by(key))

    # Every section in one statement, so the database reads the period's sales once.
    statement = union_all(
        sql(literal("total"), literal("all"), func.count(func.distinct(sales.c.customer)),
            func.count(), func.coalesce(func.sum(sales.c.revenue), 0), no_units),
        by("kind", sales.c.kind), by("country", sales.c.country), by("band", sales.c.band),
        sql(literal("category"), lines.c.category, func.count(func.distinct(lines.c.customer)),
            func.count(func.distinct(lines.c.order_id)), func.sum(lines.c.line_total_cents),
            func.sum(lines.c.quantity))
        .group_by(lines.c.category),
        sql(literal("mix"), mix_label, func.count(), func.sum(per_customer.c.orders),
            func.sum(per_customer.c.revenue), no_units)
        .select_from(spread).join(per_customer, per_customer.c.customer == spread.c.customer)
        .group_by(mix_label))
    found: dict[str, dict[str, SegmentRow]] = {}
    for section, segment, customers, orders, revenue, units in session.execute(statement):
        found.setdefault(section, {})[str(segment)] = SegmentRow(
            str(segment), int(customers), int(orders), int(revenue or 0),
            None if units is None else int(units))

    def fixed(section: str, keys: list[str]) -> list[SegmentRow]:
        rows = found.get(section, {})
        return [rows.get(k, SegmentRow(k, 0, 0, 0)) for k in keys]

    def by_revenue(section: str) -> list[SegmentRow]:
        return sorted(found.get(section, {}).values(), key=lambda r: (-r.revenue_cents,
                                                                      r.segment))

    return Segments(
        start=start, end=end, total=fixed("total", ["all"])[0],
        new_vs_returning=fixed("kind", ["new", "returning"]),
        by_country=by_revenue("country"),
        by_value_band=fixed("band", [label for label, _lower, _upper in VALUE_BANDS]),
        by_category=by_revenue("category"),
        category_mix=fixed("mix", ["one category", "several categories"]),
    )
