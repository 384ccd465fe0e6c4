"""`conveyor run` (what `make run` starts) brings up a working shop on a bare machine:
SQLite, its own Redis, localstripe, storefront, worker and relay; and a second run reuses it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx2 as httpx
from sqlalchemy import func
from sqlmodel import select

from conveyor.db import Database
from conveyor.local_services import port_open
from conveyor.settings import PROJECT_ROOT
from models.catalog import Product
from models.orders import Order, OrderStatus
from tests.helpers import card_token, free_port, wait_for


def _start(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "conveyor.cli", "run"], env=env, cwd=PROJECT_ROOT,
        stdout=log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True)


def _stop(process: subprocess.Popen[bytes]) -> None:
    os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C in the terminal does
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        raise


def _csrf(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match
    return match.group(1)


def test_conveyor_run_starts_a_shop_that_takes_an_order_and_reuses_it_next_time(tmp_path: Path):
    web, admin, redis_port, stripe_port = free_port(), free_port(), free_port(), free_port()
    base = f"http://127.0.0.1:{web}"
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("STRIPE_", "DATABASE_URL", "REDIS_URL", "SMTP_"))}
    env.update({"VAR_DIR": str(tmp_path / "var"), "STOREFRONT_PORT": str(web),
                "ADMIN_PORT": str(admin),
                "BASE_URL": base, "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
                "LOCALSTRIPE_PORT": str(stripe_port), "LOG_LEVEL": "WARNING"})
    log = tmp_path / "run.log"

    process = _start(env, log)
    try:
        wait_for(lambda: port_open("127.0.0.1", web), timeout=90, what="the storefront")
        output = log.read_text()
        assert base in output and "loading the demo catalogue" in output
        assert "starting one for this session" in output  # no Redis answered: it made one
        assert port_open("127.0.0.1", redis_port) and port_open("127.0.0.1", stripe_port)
        login = re.search(r"staff login\s+(\S+) / (\S+)", output)
        assert login, output
        wait_for(lambda: port_open("127.0.0.1", admin), timeout=30, what="the admin API")
        first = httpx.post(f"http://127.0.0.1:{admin}/api/auth/login",
                           json={"email": login.group(1), "password": login.group(2)})
        assert first.status_code == 200 and first.json()["totp_enrolment_required"]

        with httpx.Client(base_url=base, follow_redirects=True, timeout=30) as shopper:
            assert "Cast Iron Skillet" in shopper.get("/c/kitchen").text
            product = shopper.get("/p/cast-iron-skillet")
            variant = re.search(r'name="variant_id" value="(\d+)"', product.text)
            assert variant
            shopper.post("/cart/add", data={"csrf_token": _csrf(product.text),
                                            "variant_id": variant.group(1), "quantity": "1"})
            checkout = shopper.get("/checkout")
            paid = shopper.post("/checkout", data={
                "csrf_token": _csrf(checkout.text), "email": "ada@example.com",
                "full_name": "Ada Lovelace", "phone": "+49 30 1234567",
                "address": "Unter den Linden 1", "city": "Berlin", "postal_code": "10117",
                "country": "DE", "shipping_method": "standard",
                "payment_token": card_token(f"http://127.0.0.1:{stripe_port}")})
            assert "Thank you for your order" in paid.text

        db = Database(f"sqlite:///{tmp_path / 'var' / 'conveyor.db'}")

        def ready_to_pick() -> bool:
            with db.read_session() as session:
                return session.exec(select(Order).where(
                    Order.status == OrderStatus.ALLOCATED)).first() is not None

        wait_for(ready_to_pick, timeout=60, what="the order to be screened and allocated")
        wait_for(lambda: list((tmp_path / "var" / "mail").glob("*.eml")), timeout=30,
                 what="the confirmation email file")
    finally:
        _stop(process)
    assert not port_open("127.0.0.1", web)
    wait_for(lambda: not port_open("127.0.0.1", redis_port), timeout=10, what="Redis to stop")
    assert not port_open("127.0.0.1", stripe_port)

    process = _start(env, log)
    try:
        wait_for(lambda: port_open("127.0.0.1", web), timeout=90, what="the second start")
        assert log.read_text().count("loading the demo catalogue") == 1
        assert log.read_text().count("(shown once;") == 1  # the password is not shown again
        with db.read_session() as session:
            assert session.exec(select(func.count()).select_from(Product)).one() == 48
    finally:
        _stop(process)
        db.dispose()
