"""Invoices and credit notes print from their frozen snapshot: any alphabet, any older shape."""

from __future__ import annotations

import re
import uuid
import zlib
from datetime import UTC, datetime
from typing import Any

from fulfilment.finance_documents import render_finance_document, seller_name
from models.finance import DocumentKind, FinanceDocument


def pdf_text(pdf: bytes) -> bytes:
    parts = [pdf]
    for match in re.finditer(rb"stream\r?\n(.*?)endstream", pdf, re.S):
        try:
            parts.append(zlib.decompressobj().decompress(match.group(1)))
        except zlib.error:
            continue
    return b"\n".join(parts)


def document(kind: DocumentKind, content: dict[str, Any]) -> FinanceDocument:
    prefix = "INV" if kind == DocumentKind.INVOICE else "CN"
    return FinanceDocument(kind=kind, year=2026, sequence=7, number=f"{prefix}-2026-000007",
                           order_id=uuid.uuid4(), access_token="t" * 32, amount_cents=11_900,
                           tax_cents=1_900, currency="EUR",
                           issued_at=datetime(2026, 3, 1, 9, 30, tzinfo=UTC), content=content)


INVOICE = {
    "customer": {"name": "Ada Lovelace", "email": "ada@example.com",
                 "address": "Unter den Linden 1", "city": "Berlin", "postal_code": "10117",
                 "country": "DE"},
    "order_number": "CV-ABC123", "tax_rate_bps": 1900,
    "lines": [{"sku": "LAMP-1", "description": "Desk lamp (Brass)", "quantity": 2,
               "unit_price_cents": 5000, "total_cents": 10_000}],
    "subtotal_cents": 10_000, "shipping_cents": 0, "shipping": "Standard delivery",
    "tax_cents": 1_900, "total_cents": 11_900,
}


def test_an_invoice_shows_its_number_order_lines_and_totals():
    pdf = render_finance_document(document(DocumentKind.INVOICE, INVOICE), seller="Lamp Shop")
    assert pdf.startswith(b"%PDF-") and pdf.rstrip().endswith(b"%%EOF")
    text = pdf_text(pdf)
    for expected in (b"Invoice INV-2026-000007", b"CV-ABC123", b"LAMP-1", b"119.00",
                     b"VAT 19%", b"Lamp Shop", b"01 March 2026"):
        assert expected in text, expected


def test_a_credit_note_names_the_invoice_it_corrects_and_the_amount():
    content = {**{k: INVOICE[k] for k in ("customer", "order_number", "tax_rate_bps")},
               "refund_reason": "returned", "invoice_number": "INV-2026-000001",
               "lines": [{"variant_id": 1, "sku": "LAMP-1", "quantity": 1,
                          "restock_location_id": None}],
               "net_cents": 4202, "tax_cents": 798, "total_cents": 5000}
    text = pdf_text(render_finance_document(document(DocumentKind.CREDIT_NOTE, content)))
    for expected in (b"Credit note CN-2026-000007", b"INV-2026-000001", b"returned", b"50.00"):
        assert expected in text, expected


def test_names_in_any_alphabet_and_snapshots_missing_fields_still_print():
    content = {**INVOICE, "customer": {**INVOICE["customer"], "name": "Łukasz Żółć 王"}}
    pdf = render_finance_document(document(DocumentKind.INVOICE, content))
    assert pdf.startswith(b"%PDF-")
    assert b"INV-2026-000007" in pdf  # the document's title, in its metadata
    for odd in ({}, {"customer": "nobody", "lines": [None, "x", {"quantity": "many"}]},
                {"total_cents": "lots", "tax_rate_bps": None}):
        for kind in DocumentKind:
            assert render_finance_document(document(kind, odd)).startswith(b"%PDF-")


def test_the_seller_is_the_name_the_shop_mails_under():
    assert seller_name("Lamp Shop <shop@lamps.example>") == "Lamp Shop"
    assert seller_name("shop@lamps.example") == "shop@lamps.example"
    assert seller_name("") == "Conveyor Shop"
