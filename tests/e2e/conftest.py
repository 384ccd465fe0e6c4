"""Live processes for end-to-end tests: the storefront under uvicorn, the relay, the workers."""

from __future__ import annotations

import shutil
import subprocess
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from conveyor.local_services import redis_server_binary
from conveyor.settings import Settings
from tests.helpers import (
    conveyor_command,
    free_port,
    process_env,
    start_process,
    stop_process,
    wait_for,
)

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    """One Chromium for the worker's whole run: Playwright's sync API allows one at a time."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser, live_storefront: str) -> Iterator[Page]:
    """A fresh browser context on the live storefront; JavaScript errors fail the test."""
    context = browser.new_context(base_url=live_storefront)
    context.set_default_timeout(15_000)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    context.close()
    assert errors == [], f"JavaScript errors: {errors}"


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


@pytest.fixture(scope="session")
def live_storefront(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The storefront served by uvicorn in its own process, as `conveyor storefront` runs it."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path_factory.mktemp("storefront") / "storefront.log"
    process = start_process(conveyor_command("storefront", "--port", str(port)),
                            process_env(settings, BASE_URL=base), log)
    try:
        wait_for(lambda: _answers(f"{base}/healthz"), timeout=30, what="the storefront")
        yield base
    finally:
        stop_process(process)


@pytest.fixture(scope="session")
def live_admin(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The admin API served by uvicorn in its own process, as `conveyor admin` runs it."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path_factory.mktemp("admin") / "admin.log"
    process = start_process(conveyor_command("admin", "--port", str(port)),
                            process_env(settings), log)
    try:
        wait_for(lambda: _answers(f"{base}/api/openapi.json"), timeout=30, what="the admin API")
        yield base
    finally:
        stop_process(process)


@pytest.fixture
def start_pipeline(
    tmp_path: Path,
) -> Iterator[Callable[[Settings], list[subprocess.Popen[bytes]]]]:
    """Start a relay and a real Dramatiq worker for the given settings; stopped after the test."""
    started: list[subprocess.Popen[bytes]] = []

    def start(settings: Settings) -> list[subprocess.Popen[bytes]]:
        env = process_env(settings)
        relay = start_process(conveyor_command("relay"), env, tmp_path / "relay.log")
        worker = start_process(
            conveyor_command("worker", "--processes", "1", "--threads", "2"), env,
            tmp_path / "worker.log")
        started.extend([relay, worker])
        return [relay, worker]

    yield start
    for process in reversed(started):
        stop_process(process)


class RedisServer:
    """A Redis of this test's own, on its own port, that the test may stop and start."""

    def __init__(self, data_dir: Path) -> None:
        binary = redis_server_binary() or shutil.which("redis-server")
        assert binary, "no redis-server available"
        self.binary = binary
        self.port = free_port()
        self.data_dir = data_dir
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        import redis

        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.data_dir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis.from_url(self.url)

        def up() -> bool:
            try:
                return bool(client.ping())
            except redis.ConnectionError:
                return False

        wait_for(up, timeout=10, what="the test's Redis")

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)
            self.process = None


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()
