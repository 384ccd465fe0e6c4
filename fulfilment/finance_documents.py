"""Invoices and credit notes as PDF (made with fpdf2), printed from what was frozen at issue.

Guarantees:
- Rendering reads nothing but the `FinanceDocument` it is given: its number, date, amounts and
  the `content` snapshot taken when it was issued (`fulfilment.invoicing`). A document prints
  the same years later, whatever happened since to the order, the prices or the customer.
- It never fails on the snapshot's shape: a field an older snapshot lacks prints blank.
- Any alphabet prints. When every text fits Windows-1252 the PDF core font is used (nothing
  embedded, the text stays plain in the file); otherwise DejaVu Sans is embedded when the
  system has it (Debian's fonts-dejavu-core), else letters are spelt as close as Windows-1252
  allows ("Ł" -> "L", else "?").
- `document_by_token` finds a document only by its whole, exact access token.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Mapping
from decimal import Decimal
from email.utils import parseaddr
from typing import Any

from fpdf import FPDF
from fpdf.enums import XPos, YPos
from sqlmodel import Session, select

from fulfilment.documents import FONT_DIRS, SIMPLER
from models.contact import country_name
from models.finance import DocumentKind, FinanceDocument
from models.money import format_money

CORE_ENCODING = "windows-1252"  # the core fonts' WinAnsiEncoding: Latin-1 plus €, quotes...
TITLES = {DocumentKind.INVOICE: "Invoice", DocumentKind.CREDIT_NOTE: "Credit note"}
TOKEN_LENGTHS = range(20, 65)  # `secrets.token_urlsafe(24)` gives 32 characters


def document_by_token(session: Session, token: str) -> FinanceDocument | None:
    """The document whose access token is exactly `token`, or None (also for tokens of a
    length no document has, without asking the database)."""
    if len(token) not in TOKEN_LENGTHS:
        return None
    return session.exec(select(FinanceDocument).where(
        FinanceDocument.access_token == token)).first()


def seller_name(mail_from: str) -> str:
    """The shop's name as its emails give it (MAIL_FROM's display name)."""
    name, address = parseaddr(mail_from)
    return name or address or "Conveyor Shop"


def filename_of(document: FinanceDocument) -> str:
    return f"{document.number}.pdf"


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _cents(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _fits_core_font(texts: Iterable[str]) -> bool:
    try:
        for text in texts:
            text.encode(CORE_ENCODING)
    except UnicodeEncodeError:
        return False
    return True


def _spelt_for_core_font(text: str) -> str:
    simpler = unicodedata.normalize("NFKD", text.translate(SIMPLER))
    kept = "".join(c for c in simpler if not unicodedata.combining(c))
    return kept.encode(CORE_ENCODING, "replace").decode(CORE_ENCODING)


def _strings(value: Any) -> Iterable[str]:
    """Every string in a snapshot (to choose the font)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _strings(item)


class _Document(FPDF):
    def __init__(self, *, unicode_needed: bool) -> None:
        super().__init__(format="A4")
        self.core_fonts_encoding = CORE_ENCODING
        self.set_margins(18, 16, 18)
        self.set_auto_page_break(auto=True, margin=16)
        self.font_name, self.spell = "Helvetica", False
        if unicode_needed:
            fonts = _unicode_font()
            if fonts is not None:
                self.add_font("Doc", "", str(fonts[0]))
                self.add_font("Doc", "B", str(fonts[1]))
                self.font_name = "Doc"
            else:
                self.spell = True

    def text_of(self, text: str) -> str:
        return _spelt_for_core_font(text) if self.spell else text

    def write_line(self, text: str, *, size: float = 10, bold: bool = False,
                   height: float = 5.5) -> None:
        self.set_font(self.font_name, "B" if bold else "", size)
        self.multi_cell(0, height, self.text_of(text), new_x=XPos.LMARGIN, new_y=YPos.NEXT)

    def row(self, cells: list[tuple[str, float, str]], *, bold: bool = False,
            border: str = "B") -> None:
        self.set_font(self.font_name, "B" if bold else "", 10)
        for text, width, align in cells:
            self.cell(width, 6.5, self.text_of(text)[:80], border=border, align=align)
        self.ln(6.5)


def _unicode_font() -> tuple[str, str] | None:
    for folder in FONT_DIRS:
        regular, bold = folder / "DejaVuSans.ttf", folder / "DejaVuSans-Bold.ttf"
        if regular.is_file() and bold.is_file():
            return str(regular), str(bold)
    return None


def _rate(basis_points: Any) -> str:
    percent = (Decimal(_cents(basis_points)) / 100).normalize()
    return f"{percent:f}%"


def render_finance_document(document: FinanceDocument, *, seller: str = "Conveyor Shop") -> bytes:
    """The invoice or credit note as PDF bytes (see the module docstring)."""
    content: Mapping[str, Any] = document.content if isinstance(document.content, dict) else {}
    customer = content.get("customer") if isinstance(content.get("customer"), dict) else {}
    assert isinstance(customer, dict)
    lines = [line for line in content.get("lines") or [] if isinstance(line, dict)]
    currency = document.currency or "EUR"
    kind = DocumentKind(document.kind) if document.kind in DocumentKind.__members__.values() \
        else DocumentKind.INVOICE
    title = f"{TITLES[kind]} {document.number}"

    def money(value: Any) -> str:
        return format_money(_cents(value), currency)

    pdf = _Document(unicode_needed=not _fits_core_font(
        [seller, title, *_strings(content), money(0)]))
    pdf.set_title(title)
    pdf.set_author(pdf.text_of(seller))
    pdf.set_creator("Conveyor")
    pdf.add_page()
    pdf.write_line(seller, size=11, bold=True)
    pdf.ln(2)
    pdf.write_line(title, size=18, bold=True, height=9)
    pdf.write_line(f"Date of issue: {document.issued_at:%d %B %Y}")
    pdf.write_line(f"Order: {_text(content.get('order_number'))}")
    if kind == DocumentKind.CREDIT_NOTE:
        if content.get("invoice_number"):
            pdf.write_line(f"Corrects invoice: {_text(content.get('invoice_number'))}")
        if content.get("refund_reason"):
            pdf.write_line(f"Reason: {_text(content.get('refund_reason'))}")
        if content.get("discount_code"):
            pdf.write_line("Amounts are what was paid, after the discount code "
                           f"{_text(content.get('discount_code'))}.")
    pdf.ln(4)
    pdf.write_line("Bill to", bold=True)
    country = _text(customer.get("country"))
    for part in (_text(customer.get("name")), _text(customer.get("address")),
                 f"{_text(customer.get('postal_code'))} {_text(customer.get('city'))}".strip(),
                 country_name(country) if country else "", _text(customer.get("email"))):
        if part:
            pdf.write_line(part, size=11)
    pdf.ln(4)
    width = pdf.epw
    rate = _rate(content.get("tax_rate_bps"))
    if kind == DocumentKind.INVOICE:
        pdf.row([("SKU", width * 0.18, "L"), ("Item", width * 0.42, "L"),
                 ("Qty", width * 0.1, "R"), ("Unit price", width * 0.15, "R"),
                 ("Amount", width * 0.15, "R")], bold=True)
        for line in lines:
            pdf.row([(_text(line.get("sku")), width * 0.18, "L"),
                     (_text(line.get("description")), width * 0.42, "L"),
                     (_text(line.get("quantity")), width * 0.1, "R"),
                     (money(line.get("unit_price_cents")), width * 0.15, "R"),
                     (money(line.get("total_cents")), width * 0.15, "R")])
        shipping = _text(content.get("shipping")) or "Shipping"
        totals = [("Subtotal (net)", money(content.get("subtotal_cents")))]
        if content.get("discount_cents"):
            code = _text(content.get("discount_code"))
            totals.append((f"Discount{f' (code {code})' if code else ''} (net)",
                           money(-_cents(content.get("discount_cents")))))
        totals += [(f"{shipping} (net)", money(content.get("shipping_cents"))),
                  (f"VAT {rate}", money(content.get("tax_cents")))]
        grand = ("Total", money(content.get("total_cents", document.amount_cents)))
    else:
        if lines:
            pdf.row([("SKU", width * 0.3, "L"), ("Quantity returned", width * 0.3, "R")],
                    bold=True)
            for line in lines:
                pdf.row([(_text(line.get("sku")), width * 0.3, "L"),
                         (_text(line.get("quantity")), width * 0.3, "R")])
        totals = [("Credited (net)", money(content.get("net_cents"))),
                  (f"VAT {rate}", money(content.get("tax_cents", document.tax_cents)))]
        grand = ("Total credited", money(content.get("total_cents", document.amount_cents)))
    pdf.ln(3)
    for label, amount in totals:
        pdf.row([(label, width * 0.75, "R"), (amount, width * 0.25, "R")], border="")
    pdf.row([(grand[0], width * 0.75, "R"), (grand[1], width * 0.25, "R")], bold=True,
            border="T")
    pdf.ln(6)
    pdf.write_line(f"All amounts in {currency}. Document {document.number}.", size=8)
    return bytes(pdf.output())
