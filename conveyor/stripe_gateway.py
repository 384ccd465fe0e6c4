"""Every call Conveyor makes to Stripe, and the shapes it gets back.

Rules kept here: every POST carries a deterministic idempotency key chosen by the caller;
card data never passes through (the browser turns the card into a token with Stripe.js, and
only that token's id reaches us); Stripe objects are turned into small frozen snapshots so no
SDK object leaks into services. Calls happen outside database transactions: callers record
what they are about to do, call, then record the answer.

`LocalstripeGateway` holds what the local stand-in needs differently, and is chosen only when
`STRIPE_API_BASE` is not Stripe's own API.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import stripe

from conveyor.settings import Settings


class PaymentDeclined(Exception):
    """The card was declined or failed authentication; the shopper may try another card."""

    def __init__(self, code: str, message: str, intent_id: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.intent_id = intent_id


class PaymentProviderError(Exception):
    """Stripe could not be reached or refused the request for a reason that is not the card's."""


class WebhookRejected(Exception):
    """A webhook body whose signature or timestamp does not check out."""


@dataclass(frozen=True)
class IntentSnapshot:
    """What we keep of a PaymentIntent."""

    id: str
    status: str
    amount: int
    currency: str
    client_secret: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    failure_code: str = ""
    failure_message: str = ""
    card_brand: str = ""
    card_last4: str = ""
    card_fingerprint: str = ""
    card_country: str = ""
    cvc_check: str = ""
    postal_check: str = ""
    risk_level: str = ""
    charge_id: str = ""

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> IntentSnapshot:
        error = data.get("last_payment_error") or {}
        card = _card_of(data)
        checks = card.get("checks") or {}
        outcome = _charge_of(data).get("outcome") or {}
        return cls(
            id=data["id"],
            status=data["status"],
            amount=int(data.get("amount") or 0),
            currency=str(data.get("currency") or "").upper(),
            client_secret=data.get("client_secret"),
            metadata={str(k): str(v) for k, v in (data.get("metadata") or {}).items()},
            failure_code=str(error.get("decline_code") or error.get("code") or ""),
            failure_message=str(error.get("message") or ""),
            card_brand=str(card.get("brand") or ""),
            card_last4=str(card.get("last4") or ""),
            card_fingerprint=str(card.get("fingerprint") or ""),
            card_country=str(card.get("country") or "").upper()[:2],
            cvc_check=str(checks.get("cvc_check") or card.get("cvc_check") or ""),
            postal_check=str(checks.get("address_postal_code_check")
                             or card.get("address_zip_check") or ""),
            risk_level=str(outcome.get("risk_level") or ""),
            charge_id=str(_charge_of(data).get("id") or (
                data["latest_charge"] if isinstance(data.get("latest_charge"), str) else "")),
        )


def _charge_of(intent: dict[str, Any]) -> dict[str, Any]:
    """The intent's latest charge, wherever this API version keeps it (or {})."""
    charge = intent.get("latest_charge")
    if not isinstance(charge, dict):
        charges = (intent.get("charges") or {}).get("data") or []
        charge = charges[-1] if charges else {}
    return charge if isinstance(charge, dict) else {}


def _card_of(intent: dict[str, Any]) -> dict[str, Any]:
    """The card facts from the intent's latest charge, wherever this API version keeps them."""
    charge = _charge_of(intent)
    details = (charge.get("payment_method_details") or {}).get("card")
    if isinstance(details, dict):
        return details
    source = charge.get("source") or charge.get("card")
    return source if isinstance(source, dict) else {}


def _as_dict(obj: Any) -> dict[str, Any]:
    return obj.to_dict() if hasattr(obj, "to_dict") else dict(obj)


class StripeGateway:
    def __init__(self, settings: Settings) -> None:
        if settings.stripe_secret_key is None:
            raise PaymentProviderError("STRIPE_SECRET_KEY is not configured")
        self.settings = settings
        self.client = stripe.StripeClient(
            settings.stripe_secret_key.get_secret_value(),
            base_addresses={"api": settings.stripe_api_base},
            max_network_retries=2,
            http_client=stripe.new_default_http_client(timeout=20),
        )
        secret = settings.stripe_webhook_secret
        self._webhook_secret = secret.get_secret_value() if secret else None

    # -- PaymentIntents -------------------------------------------------------------------

    def create_intent(
        self, *, amount: int, currency: str, payment_token: str, metadata: dict[str, str],
        idempotency_key: str,
    ) -> IntentSnapshot:
        """Create a manual-capture PaymentIntent for a card token, not yet confirmed."""
        params: dict[str, Any] = {
            "amount": amount,
            "currency": currency.lower(),
            "capture_method": "manual",
            "metadata": metadata,
            **self._payment_method_params(payment_token),
        }
        intent = self._call(self.client.v1.payment_intents.create, params=params,
                            options={"idempotency_key": idempotency_key})
        return self._snapshot(intent)

    def confirm_intent(self, intent_id: str, *, idempotency_key: str) -> IntentSnapshot:
        """Confirm: the card is authorised (requires_capture), needs 3-D Secure
        (requires_action), or is declined (PaymentDeclined)."""
        intent = self._call(self.client.v1.payment_intents.confirm, intent_id,
                            params={"expand": ["latest_charge"]},
                            options={"idempotency_key": idempotency_key})
        return self._snapshot(intent)

    def retrieve_intent(self, intent_id: str) -> IntentSnapshot:
        intent = self._call(self.client.v1.payment_intents.retrieve, intent_id,
                            params={"expand": ["latest_charge"]})
        return self._snapshot(intent)

    def capture_intent(self, intent_id: str, *, idempotency_key: str) -> IntentSnapshot:
        """Take the authorised amount (manual capture)."""
        intent = self._call(self.client.v1.payment_intents.capture, intent_id,
                            params={"expand": ["latest_charge"]},
                            options={"idempotency_key": idempotency_key})
        return self._snapshot(intent)

    def cancel_intent(self, intent_id: str, *, idempotency_key: str) -> IntentSnapshot:
        """Void an authorisation or abandon an unfinished intent."""
        intent = self._call(self.client.v1.payment_intents.cancel, intent_id,
                            options={"idempotency_key": idempotency_key})
        return self._snapshot(intent)

    # -- Refunds --------------------------------------------------------------------------

    def create_refund(self, *, intent_id: str, amount: int, metadata: dict[str, str],
                      idempotency_key: str) -> dict[str, Any]:
        """Give back `amount` of a captured intent; Stripe's refund object as a dict."""
        refund = self._call(self.client.v1.refunds.create,
                            params={"payment_intent": intent_id, "amount": amount,
                                    "metadata": metadata},
                            options={"idempotency_key": idempotency_key})
        return _as_dict(refund)

    def find_refund(self, *, intent_id: str, refund_id: str) -> dict[str, Any] | None:
        """A refund already made at Stripe for our refund `refund_id` (by its metadata)."""
        page = _as_dict(self._call(self.client.v1.refunds.list,
                                   params={"payment_intent": intent_id, "limit": 100}))
        return next((_as_dict(r) for r in page.get("data", [])
                     if (r.get("metadata") or {}).get("refund_id") == refund_id), None)

    # -- Listing, for `conveyor stripe sync` -------------------------------------------------

    def list_page(self, kind: str, *, starting_after: str | None = None,
                  limit: int = 100) -> tuple[list[dict[str, Any]], bool]:
        """One page of `kind` (balance_transactions, payouts, charges, refunds), newest first,
        and whether there are more."""
        service: Any = {"balance_transactions": self.client.v1.balance_transactions,
                        "payouts": self.client.v1.payouts, "charges": self.client.v1.charges,
                        "refunds": self.client.v1.refunds}[kind]
        params: dict[str, Any] = {"limit": limit}
        if starting_after:
            params["starting_after"] = starting_after
        page = self._call(service.list, params=params)
        data = _as_dict(page)
        return [_as_dict(item) for item in data.get("data", [])], bool(data.get("has_more"))

    def payout_transaction_ids(self, payout: dict[str, Any],
                               unassigned: list[dict[str, Any]]) -> list[str]:
        """The balance transactions a payout paid out (Stripe lists them by payout)."""
        ids: list[str] = []
        starting_after: str | None = None
        while True:
            params: dict[str, Any] = {"payout": payout["id"], "limit": 100}
            if starting_after:
                params["starting_after"] = starting_after
            data = _as_dict(self._call(self.client.v1.balance_transactions.list, params=params))
            items = data.get("data", [])
            ids += [str(item["id"]) for item in items if item.get("type") != "payout"]
            if not data.get("has_more") or not items:
                return ids
            starting_after = str(items[-1]["id"])

    # -- Webhooks -------------------------------------------------------------------------

    def verify_webhook(self, payload: bytes, signature_header: str) -> dict[str, Any]:
        """Check the `Stripe-Signature` of a raw body and return the event as a dict."""
        if not self._webhook_secret:
            raise WebhookRejected("no webhook secret is configured")
        try:
            stripe.WebhookSignature.verify_header(
                payload.decode("utf-8"), signature_header, self._webhook_secret,
                tolerance=self.settings.stripe_webhook_tolerance_seconds,
            )
            event = json.loads(payload)
        except (stripe.SignatureVerificationError, UnicodeDecodeError, ValueError) as exc:
            raise WebhookRejected(str(exc)) from None
        if not isinstance(event, dict) or not isinstance(event.get("id"), str):
            raise WebhookRejected("not a Stripe event")
        return event

    # -- Details --------------------------------------------------------------------------

    def _snapshot(self, intent: Any) -> IntentSnapshot:
        return IntentSnapshot.from_dict(_as_dict(intent))

    def _payment_method_params(self, payment_token: str) -> dict[str, Any]:
        return {"payment_method_data": {"type": "card", "card": {"token": payment_token}}}

    def _call(self, method: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except stripe.CardError as exc:
            error = exc.error
            intent = getattr(error, "payment_intent", None) if error else None
            raise PaymentDeclined(
                code=str(exc.code or "card_declined"),
                message=exc.user_message or "Your card was declined.",
                intent_id=getattr(intent, "id", None) if intent else None,
            ) from None
        except stripe.StripeError as exc:
            raise PaymentProviderError(f"{type(exc).__name__}: {exc.user_message or exc}") from exc


class LocalstripeGateway(StripeGateway):
    """localstripe's differences from Stripe, for development and tests only.

    - It cannot build a PaymentMethod from a token; a PaymentIntent takes the token's card id
      (`card_...`) as its payment method instead.
    - Its charges carry no card details; they are read from that card object while the
      intent is being authorised (after that, the payment has them already), once per card.
    - Its payouts are not tied to balance transactions (it cannot list them by payout): a
      payout is taken to pay out every charge and refund transaction created before it and
      not paid out by an earlier payout, which is what a manual payout of the whole balance
      does.
    """

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self._cards: dict[str, dict[str, Any]] = {}

    def _payment_method_params(self, payment_token: str) -> dict[str, Any]:
        token = self._call(self.client.v1.tokens.retrieve, payment_token)
        return {"payment_method": _as_dict(token)["card"]["id"]}

    def _snapshot(self, intent: Any) -> IntentSnapshot:
        data = _as_dict(intent)
        method = data.get("payment_method")
        charge = data.get("latest_charge")
        if (isinstance(method, str) and method.startswith("card_") and isinstance(charge, dict)
                and data.get("status") in ("requires_capture", "requires_action",
                                           "requires_payment_method")):
            if method not in self._cards:
                card = self._call(self.client.v1.payment_methods.retrieve, method)
                self._cards[method] = _as_dict(card)
            data["latest_charge"] = {**charge, "source": self._cards[method]}
        return IntentSnapshot.from_dict(data)


    def payout_transaction_ids(self, payout: dict[str, Any],
                               unassigned: list[dict[str, Any]]) -> list[str]:
        created = int(payout.get("created") or 0)
        return [str(t["id"]) for t in unassigned
                if int(t.get("created") or 0) <= created and t.get("type") in ("charge",
                                                                              "refund")]


def create_gateway(settings: Settings) -> StripeGateway:
    cls = LocalstripeGateway if settings.stripe_is_local else StripeGateway
    return cls(settings)
