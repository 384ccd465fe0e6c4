"""Small helpers for tests: ports, waiting, signing Stripe webhooks, card tokens, processes."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conveyor.settings import PROJECT_ROOT, Settings

CARD_OK = "4242424242424242"
CARD_DECLINED = "4000000000000341"
CARD_3DS = "4000002500003155"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(check: Callable[[], Any], *, timeout: float = 20.0, interval: float = 0.05,
             what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def sign_payload(payload: bytes, secret: str, timestamp: int | None = None) -> str:
    """A `Stripe-Signature` header made with Stripe's own scheme (HMAC-SHA256 of t.payload)."""
    t = int(time.time()) if timestamp is None else timestamp
    signed = f"{t}.".encode() + payload
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return f"t={t},v1={digest}"


def stripe_event(event_id: str, event_type: str, obj: dict[str, Any]) -> bytes:
    return json.dumps({
        "id": event_id, "object": "event", "type": event_type, "api_version": "2024-06-20",
        "created": int(time.time()), "data": {"object": obj},
    }).encode()


def card_token(api_base: str, number: str = CARD_OK, publishable_key: str = "pk_test_x") -> str:
    """What Stripe.js does in the browser: turn card details into a token at Stripe."""
    data = urllib.parse.urlencode({
        "card[number]": number, "card[exp_month]": "12", "card[exp_year]": "2030",
        "card[cvc]": "123", "key": publishable_key,
    }).encode()
    with urllib.request.urlopen(f"{api_base}/v1/tokens", data, timeout=10) as response:
        return str(json.loads(response.read())["id"])


def process_env(settings: Settings, **extra: str) -> dict[str, str]:
    """Environment variables that make a child process use these settings."""
    env = dict(os.environ)
    env.update({
        "VAR_DIR": str(settings.var_dir),
        "DATABASE_URL": settings.effective_database_url,
        "REDIS_URL": settings.redis_url,
        "SECRET_KEY": settings.session_secret,
        "STRIPE_SECRET_KEY": settings.stripe_secret_key.get_secret_value()
        if settings.stripe_secret_key else "",
        "STRIPE_PUBLISHABLE_KEY": settings.stripe_publishable_key,
        "STRIPE_API_BASE": settings.stripe_api_base,
        "STRIPE_JS_URL": settings.stripe_js_url,
        "STRIPE_WEBHOOK_SECRET": settings.stripe_webhook_secret.get_secret_value()
        if settings.stripe_webhook_secret else "",
        "CATALOGUE_CHECK_SECONDS": str(settings.catalogue_check_seconds),
        "RELAY_POLL_SECONDS": str(settings.relay_poll_seconds),
        "PAYMENT_ATTEMPTS_PER_IP_PER_HOUR": str(settings.payment_attempts_per_ip_per_hour),
        "PAYMENT_ATTEMPTS_PER_EMAIL_PER_HOUR": str(settings.payment_attempts_per_email_per_hour),
        "BASE_URL": settings.base_url,
        "WORKER_HEARTBEAT_TIMEOUT_SECONDS": str(settings.worker_heartbeat_timeout_seconds),
        "BROKER_MAINTENANCE_CHANCE": str(settings.broker_maintenance_chance),
        "LOG_LEVEL": "WARNING",
    })
    env.update(extra)
    return env


def start_process(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    handle = log.open("ab")
    return subprocess.Popen(args, env=env, cwd=PROJECT_ROOT, stdout=handle,
                            stderr=subprocess.STDOUT, start_new_session=True)


def conveyor_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "conveyor.cli", *args]


def stop_process(process: subprocess.Popen[bytes], *, timeout: float = 10.0) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=timeout)
