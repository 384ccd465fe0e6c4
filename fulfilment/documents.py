"""Documents printed in the warehouse: the packing slip (PDF, made with fpdf2).

The slip is built from a `PackingSlip` (plain data, read by `fulfilment.packing.packing_slip`),
so rendering needs no database. Names and addresses may use any alphabet: the slip embeds
DejaVu Sans when the system has it (Debian's fonts-dejavu-core) and otherwise falls back to
the PDF core font, spelling what Latin-1 lacks as close as it can ("Ł" -> "L", else "?").
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from fpdf import FPDF
from fpdf.enums import XPos, YPos

from models.contact import country_name

FONT_DIRS = (Path("/usr/share/fonts/truetype/dejavu"), Path("/usr/share/fonts/dejavu"),
             Path("/usr/local/share/fonts"))
# Letters NFKD does not take apart, and punctuation Latin-1 lacks.
SIMPLER = str.maketrans({"Ł": "L", "ł": "l", "Đ": "D", "đ": "d", "Ø": "O", "ø": "o",
                         "ß": "ss", "Æ": "AE", "æ": "ae", "Œ": "OE", "œ": "oe",
                         "\u2013": "-", "\u2014": "-", "\u2018": "'", "\u2019": "'",
                         "\u201c": '"', "\u201d": '"'})


@dataclass(frozen=True)
class SlipLine:
    sku: str
    name: str
    ordered: int
    backordered: int = 0


@dataclass(frozen=True)
class SlipParcel:
    number: int
    weight_grams: int
    items: list[tuple[str, str, int]]  # (sku, product name, quantity)
    carrier: str = ""
    tracking_number: str = ""


@dataclass(frozen=True)
class PackingSlip:
    number: str
    placed_at: datetime
    full_name: str
    address: str
    postal_code: str
    city: str
    country: str
    phone: str
    shipping_method: str
    lines: list[SlipLine] = field(default_factory=list)
    parcels: list[SlipParcel] = field(default_factory=list)


def _unicode_font() -> tuple[Path, Path] | None:
    for folder in FONT_DIRS:
        regular, bold = folder / "DejaVuSans.ttf", folder / "DejaVuSans-Bold.ttf"
        if regular.is_file() and bold.is_file():
            return regular, bold
    return None


def latin1(text: str) -> str:
    """`text` in the characters the PDF core fonts have."""
    simpler = unicodedata.normalize("NFKD", text.translate(SIMPLER))
    kept = "".join(c for c in simpler if not unicodedata.combining(c))
    return kept.encode("latin-1", "replace").decode("latin-1")


class _Slip(FPDF):
    def __init__(self) -> None:
        super().__init__(format="A4")
        self.set_margins(18, 16, 18)
        self.set_auto_page_break(auto=True, margin=16)
        fonts = _unicode_font()
        if fonts is not None:
            self.add_font("Slip", "", str(fonts[0]))
            self.add_font("Slip", "B", str(fonts[1]))
            self.slip_font, self.latin_only = "Slip", False
        else:
            self.slip_font, self.latin_only = "Helvetica", True

    def text_of(self, text: str) -> str:
        return latin1(text) if self.latin_only else text

    def write_line(self, text: str, *, size: float = 10, bold: bool = False,
                   height: float = 5.5) -> None:
        self.set_font(self.slip_font, "B" if bold else "", size)
        self.multi_cell(0, height, self.text_of(text), new_x=XPos.LMARGIN, new_y=YPos.NEXT)

    def row(self, cells: list[tuple[str, float, str]], *, bold: bool = False) -> None:
        self.set_font(self.slip_font, "B" if bold else "", 10)
        for text, width, align in cells:
            self.cell(width, 6.5, self.text_of(text)[:90], border="B", align=align)
        self.ln(6.5)


def render_packing_slip(slip: PackingSlip) -> bytes:
    """The packing slip as PDF bytes: order number, address, lines, and parcel contents."""
    pdf = _Slip()
    pdf.set_title(f"Packing slip {slip.number}")
    pdf.set_creator("Conveyor")
    pdf.add_page()
    pdf.write_line(f"Packing slip  {slip.number}", size=18, bold=True, height=9)
    pdf.write_line(f"Order placed {slip.placed_at:%d %b %Y}  ·  {slip.shipping_method}",
                   size=10)
    pdf.ln(4)
    pdf.write_line("Ship to", bold=True)
    for part in (slip.full_name, slip.address, f"{slip.postal_code} {slip.city}",
                 country_name(slip.country), slip.phone):
        pdf.write_line(part, size=11)
    pdf.ln(4)
    width = pdf.epw
    pdf.write_line("Ordered", bold=True, size=12)
    pdf.row([("SKU", width * 0.22, "L"), ("Item", width * 0.58, "L"),
             ("Qty", width * 0.1, "R"), ("Later", width * 0.1, "R")], bold=True)
    for line in slip.lines:
        pdf.row([(line.sku, width * 0.22, "L"), (line.name, width * 0.58, "L"),
                 (str(line.ordered), width * 0.1, "R"),
                 (str(line.backordered) if line.backordered else "", width * 0.1, "R")])
    for parcel in slip.parcels:
        pdf.ln(4)
        heading = f"Parcel {parcel.number} of {len(slip.parcels)}  ·  {parcel.weight_grams} g"
        if parcel.tracking_number:
            heading += f"  ·  {parcel.carrier} {parcel.tracking_number}"
        pdf.write_line(heading, bold=True, size=12)
        for sku, name, quantity in parcel.items:
            pdf.row([(sku, width * 0.22, "L"), (name, width * 0.68, "L"),
                     (str(quantity), width * 0.1, "R")])
    if not slip.parcels:
        pdf.ln(4)
        pdf.write_line("Not packed yet.", size=10)
    return bytes(pdf.output())
