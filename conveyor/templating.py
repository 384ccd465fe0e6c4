"""The Jinja2 environment every office renders with: autoescaped, with Conveyor's filters."""

from __future__ import annotations

from datetime import datetime

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from conveyor.settings import PROJECT_ROOT
from models.contact import country_name
from models.money import format_money

TEMPLATES_DIR = PROJECT_ROOT / "templates"


def format_datetime(value: datetime | None) -> str:
    return value.strftime("%d %b %Y, %H:%M UTC") if value else ""


def create_environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES_DIR),
        autoescape=select_autoescape(["html", "xml", "html.j2"], default_for_string=True),
        undefined=StrictUndefined,
        auto_reload=False,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["money"] = format_money
    env.filters["datetime"] = format_datetime
    env.filters["country"] = country_name
    return env
