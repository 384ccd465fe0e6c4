"""`POST /stripe/webhook`: verify, store under the event id, answer at once.

Processing happens in a worker (`process_stripe_event`), reached through the outbox, so the
answer does not wait for it and an event received while Redis is down is kept and processed
when Redis is back.
"""

from __future__ import annotations

from sqlalchemy.exc import IntegrityError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from conveyor.stripe_gateway import WebhookRejected
from fulfilment import payments
from storefront.web import db_of, gateway_of, run_service

MAX_BODY_BYTES = 512 * 1024


async def receive(request: Request) -> Response:
    body = await request.body()
    if len(body) > MAX_BODY_BYTES:
        return JSONResponse({"error": "payload too large"}, status_code=413)
    gateway = gateway_of(request)
    if gateway is None:
        return JSONResponse({"error": "webhooks are not configured"}, status_code=503)
    try:
        event = gateway.verify_webhook(body, request.headers.get("stripe-signature", ""))
    except WebhookRejected as exc:
        return JSONResponse({"error": f"rejected: {exc}"}, status_code=400)

    def store() -> bool:
        try:
            with db_of(request).unit_of_work() as uow:
                return payments.store_event(uow=uow, event=event)
        except IntegrityError:
            return False  # the same event, delivered concurrently, was stored first

    stored = await run_service(store)
    return JSONResponse({"received": True, "duplicate": not stored})
