"""Schemathesis against the live admin API and its own OpenAPI document, with a real token:
no server errors, and every response matches what the document promises."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx2 as httpx

from conveyor.db import Database
from conveyor.settings import Settings
from tests import shopping
from tests.factories import make_product, make_staff

# FUZZ_EXAMPLES and FUZZ_SEED make a longer or different run: FUZZ_EXAMPLES=200 pytest ...
EXAMPLES = os.environ.get("FUZZ_EXAMPLES", "20")
SEED = os.environ.get("FUZZ_SEED", "2026")
CHECKS = ("not_a_server_error,status_code_conformance,content_type_conformance,"
          "response_schema_conformance")


def test_fuzzing_the_admin_api_finds_no_5xx_and_no_response_off_its_schema(
    db: Database, settings: Settings, live_admin: str, tmp_path: Path
):
    made = make_product(db, name="Fuzzed Lamp", variants=[("Std", 4900, 30)])
    cart_id, view = shopping.cart(db, [(made.variant_ids[0], 1)])
    order = shopping.place(db, settings, cart_id, view)
    shopping.pay(db, settings, order.id)
    admin = make_staff(db, "admin")
    token = httpx.post(f"{live_admin}/api/auth/login", json={
        "email": admin.email, "password": admin.password, "totp_code": admin.totp_code(),
    }).json()["token"]

    result = subprocess.run(
        [sys.executable, "-m", "schemathesis.cli", "run", f"{live_admin}/api/openapi.json",
         "--header", f"Authorization: Bearer {token}", "--checks", CHECKS,
         "--exclude-path", "/api/auth/logout", "--max-examples", EXAMPLES, "--seed", SEED,
         "--generation-database", "none", "--workers", "2", "--no-color",
         "--request-timeout", "30", "--report", "junit", "--report-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=900, check=False, cwd=tmp_path)

    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert "No issues found" in result.stdout or "passed" in result.stdout
