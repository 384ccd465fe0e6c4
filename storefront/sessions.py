"""The signed-in customer of a browser session, and session rotation.

The session cookie is signed by SessionMiddleware; a sign-in stores the customer's id and the
time the sign-in began. Every request that needs the customer re-reads the row through
`accounts.customer_for_session`, so a password change elsewhere or an erased account ends the
sign-in at once. Signing in and out rotate the session: its content is replaced (only the
cart, the pending order and the device id are kept) and the CSRF token is new, so a token or
cookie content seen before the change is worth nothing after it.
"""

from __future__ import annotations

import secrets
import uuid
from datetime import datetime

from starlette.requests import Request

from models.customers import Customer
from storefront import accounts
from storefront.security import CSRF_SESSION_KEY
from storefront.web import CART_COUNT_KEY, CART_KEY, DEVICE_KEY, ORDER_KEY, db_of

CUSTOMER_KEY = "customer"
SIGNED_IN_AT_KEY = "signed_in_at"
KEPT_ON_ROTATION = (CART_KEY, CART_COUNT_KEY, DEVICE_KEY, ORDER_KEY)


def rotate_session(request: Request, *, customer_id: uuid.UUID | None = None,
                   signed_in_at: datetime | None = None) -> None:
    """Fresh session content and CSRF token, keeping the cart; signed in when given one."""
    kept = {key: request.session[key] for key in KEPT_ON_ROTATION if key in request.session}
    request.session.clear()
    request.session.update(kept)
    request.session[CSRF_SESSION_KEY] = secrets.token_urlsafe(32)
    if customer_id is not None and signed_in_at is not None:
        request.session[CUSTOMER_KEY] = str(customer_id)
        request.session[SIGNED_IN_AT_KEY] = signed_in_at.isoformat()


def _signed_in(request: Request) -> tuple[uuid.UUID, datetime] | None:
    raw_id, raw_at = request.session.get(CUSTOMER_KEY), request.session.get(SIGNED_IN_AT_KEY)
    if not isinstance(raw_id, str) or not isinstance(raw_at, str):
        return None
    try:
        return uuid.UUID(raw_id), datetime.fromisoformat(raw_at)
    except ValueError:
        return None


def current_customer(request: Request) -> Customer | None:
    """The signed-in customer, read afresh; a sign-in that no longer holds is forgotten."""
    signed_in = _signed_in(request)
    customer = None
    if signed_in is not None:
        with db_of(request).read_session() as session:
            customer = accounts.customer_for_session(session, *signed_in)
    if customer is None and CUSTOMER_KEY in request.session:
        request.session.pop(CUSTOMER_KEY, None)
        request.session.pop(SIGNED_IN_AT_KEY, None)
    return customer
