"""Storefront page throughput: the real storefront against a bare Starlette + Jinja2 app.

    .venv/bin/python bench/storefront.py [--seconds 5] [--rounds 3] [--concurrency 16]

What it does, in order:

1. (Re)creates the PostgreSQL database `conveyor_bench` through the admin URL
   (BENCH_ADMIN_DATABASE_URL, default postgresql+psycopg://postgres@127.0.0.1:5432/test),
   migrates it and loads the demo catalogue (48 products) with a temporary VAR_DIR.
2. Starts two uvicorn processes: the real storefront (`python -m conveyor.cli storefront`)
   and bench/bare_app.py, which renders the same templates from contexts built once at
   start-up (no database, session, CSRF or security middleware per request). It checks that
   both send the same HTML for every page measured (the CSRF token aside).
3. Drives both from a separate load-generator process: `--concurrency` keep-alive HTTP/1.1
   connections, each sending its next request when the last answer is in (closed loop), and
   keeping the cookies it is given as a browser would. Pages and servers alternate, run by
   run, so neither gets a warmer machine. Every response must be a 200 that names the
   products the page must show, or the benchmark fails.
4. Prints requests per second, p50 and p99 latency and the server's CPU time per request for
   each page, real against bare, and writes them to docs/benchmarks.md (unless --no-write).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import multiprocessing
import os
import platform
import re
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path

# This file is bench/storefront.py: run as a script, Python puts bench/ first on sys.path,
# where this module would hide the `storefront` package. The project root goes there instead.
PROJECT_ROOT = Path(__file__).resolve().parent.parent
if sys.path and Path(sys.path[0]).resolve() == PROJECT_ROOT / "bench":
    sys.path[0] = str(PROJECT_ROOT)

HOST = "127.0.0.1"
DEFAULT_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
BENCH_DATABASE = "conveyor_bench"
SECTION_TITLE = "Storefront pages (bench/storefront.py)"
SERVERS = ("real", "bare")
CSRF_FIELD = re.compile(rb'name="csrf_token" value="[^"]*"')


@dataclass(frozen=True)
class PageSpec:
    label: str
    path: str
    expect: tuple[bytes, ...]  # what every response must contain (escaped product names)


@dataclass(frozen=True)
class Job:
    port: int
    path: str
    seconds: float
    concurrency: int
    expect: tuple[bytes, ...]


@dataclass
class RunResult:
    elapsed: float = 0.0
    latencies: list[float] = field(default_factory=list)  # seconds
    errors: int = 0
    first_errors: list[str] = field(default_factory=list)

    def fail(self, message: str) -> None:
        self.errors += 1
        if len(self.first_errors) < 5:
            self.first_errors.append(message)


@dataclass
class Figures:
    """Everything measured for one page on one server, over all rounds."""

    requests: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)

    def add(self, run: RunResult, cpu_seconds: float) -> None:
        self.requests += len(run.latencies)
        self.seconds += run.elapsed
        self.cpu_seconds += cpu_seconds
        self.latencies.extend(run.latencies)

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def percentile_ms(self, q: float) -> float:
        ordered = sorted(self.latencies)
        if not ordered:
            return 0.0
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    @property
    def cpu_ms_per_request(self) -> float:
        return self.cpu_seconds * 1000 / self.requests if self.requests else 0.0


# --- The load generator (its own process) --------------------------------------------------


class ProtocolError(Exception):
    pass


async def _client(job: Job, deadline: float, result: RunResult) -> None:
    """One keep-alive connection sending GETs back to back until the deadline."""
    reader, writer = await asyncio.open_connection(HOST, job.port)
    request = f"GET {job.path} HTTP/1.1\r\nHost: {HOST}:{job.port}\r\n".encode()
    cookies: dict[bytes, bytes] = {}
    try:
        while time.perf_counter() < deadline:
            cookie = (b"Cookie: " + b"; ".join(k + b"=" + v for k, v in cookies.items())
                      + b"\r\n") if cookies else b""
            started = time.perf_counter()
            writer.write(request + cookie + b"\r\n")
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.split(b"\r\n")
            status = int(lines[0].split(b" ", 2)[1])
            length = -1
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"set-cookie":
                    key, _, val = value.strip().split(b";", 1)[0].partition(b"=")
                    cookies[key] = val
            if length < 0:
                raise ProtocolError(f"{job.path}: response without Content-Length")
            body = await reader.readexactly(length)
            result.latencies.append(time.perf_counter() - started)
            if status != 200:
                result.fail(f"{job.path}: status {status}")
            elif not all(marker in body for marker in job.expect):
                missing = [m.decode() for m in job.expect if m not in body]
                result.fail(f"{job.path}: page does not show {missing[:3]}")
    finally:
        writer.close()
        with suppress(OSError):
            await writer.wait_closed()


async def _run(job: Job) -> RunResult:
    result = RunResult()
    started = time.perf_counter()
    deadline = started + job.seconds
    outcomes = await asyncio.gather(
        *(_client(job, deadline, result) for _ in range(job.concurrency)), return_exceptions=True
    )
    result.elapsed = time.perf_counter() - started
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            result.fail(f"{job.path}: {outcome!r}")
    return result


def load_generator(conn: Connection) -> None:
    """Runs jobs sent down the pipe until it receives None; answers each with a RunResult."""
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    with suppress(ImportError):
        import uvloop

        loop_factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        while (job := conn.recv()) is not None:
            conn.send(runner.run(_run(job)))


# --- Database, servers ---------------------------------------------------------------------


def prepare_database(admin_url: str, database_url: str, var_dir: Path) -> None:
    """Drop and create the bench database, migrate it, load the demo catalogue."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from conveyor.cli.demo_data import load_demo_data
    from conveyor.migrate import upgrade
    from conveyor.settings import Settings

    name = make_url(database_url).database or ""
    if "bench" not in name:
        raise SystemExit(f"refusing to drop database {name!r}: its name must contain 'bench'")
    engine = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    settings = Settings(database_url=database_url, var_dir=var_dir)
    upgrade(settings)
    print(f"  {load_demo_data(settings)}")


def page_specs(database_url: str) -> list[PageSpec]:
    """The pages measured, with the product names each must show (read with plain SQL),
    escaped as Jinja's autoescape writes them."""
    from markupsafe import escape
    from sqlalchemy import create_engine, text

    engine = create_engine(database_url)
    with engine.connect() as conn:
        def names(sql: str) -> tuple[bytes, ...]:
            return tuple(str(escape(row[0])).encode() for row in conn.execute(text(sql)))

        newest = names("SELECT name FROM product WHERE active "
                       "ORDER BY created_at DESC, id DESC LIMIT 8")
        kitchen = names("SELECT p.name FROM product p JOIN category c ON c.id = p.category_id "
                        "WHERE c.slug = 'kitchen' AND p.active ORDER BY p.name LIMIT 12")
        skillet = names("SELECT name FROM product WHERE slug = 'cast-iron-skillet'")
        skus = names("SELECT v.sku FROM variant v JOIN product p ON p.id = v.product_id "
                     "WHERE p.slug = 'cast-iron-skillet' AND v.active")
    engine.dispose()
    if not (newest and kitchen and skillet):
        raise SystemExit("the demo catalogue did not load: no products to measure")
    return [
        PageSpec("home /", "/", newest),
        PageSpec("category /c/kitchen", "/c/kitchen", kitchen),
        PageSpec("product /p/cast-iron-skillet", "/p/cast-iron-skillet", skillet + skus),
    ]


def postgres_version(database_url: str) -> str:
    from sqlalchemy import create_engine, text

    engine = create_engine(database_url)
    with engine.connect() as conn:
        version = str(conn.execute(text("SHOW server_version")).scalar_one())
    engine.dispose()
    return version.split()[0]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://{HOST}:{port}{path}", timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


@contextmanager
def server(name: str, args: list[str], env: dict[str, str], port: int,
           log_dir: Path) -> Iterator[subprocess.Popen[bytes]]:
    log = log_dir / f"{name}.log"
    with log.open("wb") as handle:
        process = subprocess.Popen(args, env=env, cwd=PROJECT_ROOT, stdout=handle,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise SystemExit(f"the {name} server exited:\n{log.read_text()[-3000:]}")
            with suppress(OSError):
                if get(port, "/healthz")[0] == 200:
                    break
            if time.monotonic() > deadline:
                raise SystemExit(f"the {name} server did not answer:\n{log.read_text()[-3000:]}")
            time.sleep(0.1)
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far (Linux), 0 where /proc is missing."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def same_html(real: bytes, bare: bytes) -> bool:
    return CSRF_FIELD.sub(b"", real) == CSRF_FIELD.sub(b"", bare)


# --- Reporting -----------------------------------------------------------------------------

COLUMNS = ("Page", "real rps", "bare rps", "real/bare", "real p50 ms", "bare p50 ms",
           "real p99 ms", "bare p99 ms", "real CPU ms/req", "bare CPU ms/req")


def table_rows(pages: list[PageSpec],
               figures: dict[tuple[str, str], Figures]) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    for page in pages:
        real, bare = figures[page.path, "real"], figures[page.path, "bare"]
        ratio = real.rps / bare.rps if bare.rps else 0.0
        rows.append((
            page.label, f"{real.rps:,.0f}", f"{bare.rps:,.0f}", f"{ratio:.2f}",
            f"{real.percentile_ms(0.5):.1f}", f"{bare.percentile_ms(0.5):.1f}",
            f"{real.percentile_ms(0.99):.1f}", f"{bare.percentile_ms(0.99):.1f}",
            f"{real.cpu_ms_per_request:.2f}", f"{bare.cpu_ms_per_request:.2f}",
        ))
    return rows


def text_table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in [COLUMNS, *rows]) for i in range(len(COLUMNS))]
    lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in
                       enumerate(zip(row, widths, strict=True))) for row in [COLUMNS, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(rows: list[tuple[str, ...]]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |",
             "|" + "|".join(["---"] + ["---:"] * (len(COLUMNS) - 1)) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def machine(postgres: str) -> str:
    model = ""
    with suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = " (" + line.split(":", 1)[1].strip() + ")"
                break
    import uvicorn

    extras = [name for name in ("uvloop", "httptools") if importlib.util.find_spec(name)]
    return (f"{os.cpu_count()} CPU cores{model}, {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}, PostgreSQL {postgres}, "
            f"uvicorn {uvicorn.__version__} ({', '.join(extras) or 'pure Python'}), "
            "one worker process per server")


EXPLANATION = """\
**What is measured.** Two uvicorn processes serve the demo catalogue (48 products, PostgreSQL
on the same machine): the real storefront, started as `conveyor storefront`, and
`bench/bare_app.py`, a Starlette app that renders the same templates (`home.html`,
`listing.html`, `product.html` with `base.html` and `_macros.html`) from context objects built
once at start-up. Before measuring, the benchmark checks that both send the same HTML for each
page (the CSRF token aside). A separate load-generator process keeps {concurrency} keep-alive
connections busy (closed loop: each connection sends its next request when the answer is in,
and keeps its cookies as a browser would) for {seconds:g} s per run, {rounds} rounds, pages and
servers alternating run by run, after a {warmup:g} s warm-up of each. Every response is checked:
status 200 and the names of the products the page must show. *rps* is responses per second
over all runs; p50/p99 are latencies seen by the client, queueing included; *CPU ms/req* is the
server process's own CPU time per response (PostgreSQL's is not in it). The machine has only
two cores, shared by the server, PostgreSQL and the load generator, so figures are for
comparison between the two columns, not capacity planning.

**What the real page does on top of the bare one.** Per request: the middlewares
`create_app` installs (security headers, session, CSRF and the like: the session cookie is
verified and, once the product page has issued a CSRF token, signed again on every response);
a hop from the event loop to a worker thread, as the endpoints are synchronous; the catalogue
snapshot lookup (the catalogue version is read from PostgreSQL at most once per
`CATALOGUE_CHECK_SECONDS`, 1 s here); one query for the live stock of the variants shown, on a
pooled connection that is pinged first (stock is never cached: a product requirement); the
prices for the moment of the request (looked up in the price list of the current stretch
between two sale-window edges); the product cards or variant choices built from those; and,
for the category page, the listing order (sorted once per snapshot or price list) paged. The
bare app only routes and renders.
"""


def write_report(path: Path, command: str, rows: list[tuple[str, ...]], args: argparse.Namespace,
                 verdict: str, postgres: str, load: float) -> None:
    """Write this benchmark's section of `path`, replacing the one an earlier run wrote and
    leaving every other section as it is."""
    explanation = EXPLANATION.format(concurrency=args.concurrency, seconds=args.seconds,
                                     rounds=args.rounds, warmup=args.warmup)
    paragraphs = [
        f"Date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC. Machine: {machine(postgres)}; load "
        f"average {load:.2f} when the run started.",
        *(" ".join(p.split()) for p in explanation.split("\n\n")),
    ]
    wrapped = [textwrap.fill(p, width=100, break_on_hyphens=False) for p in paragraphs]
    section = "\n\n".join([
        f"## {SECTION_TITLE}", f"Command: `{command}`", wrapped[0], markdown_table(rows),
        verdict, *wrapped[1:],
    ]) + "\n"
    existing = path.read_text() if path.exists() else (
        "# Benchmarks\n\nHow fast the parts of Conveyor are, measured by the scripts in "
        "`bench/`.\nEach section is written by its script; rerun it to refresh the figures.\n\n"
    )
    pattern = re.compile(rf"^## {re.escape(SECTION_TITLE)}\n.*?(?=^## |\Z)", re.M | re.S)
    if pattern.search(existing):
        updated = pattern.sub(lambda _: section + "\n", existing, count=1).rstrip() + "\n"
    else:
        updated = existing.rstrip() + "\n\n" + section
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(updated)


# --- Main ----------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    admin = os.environ.get("BENCH_ADMIN_DATABASE_URL", DEFAULT_ADMIN_URL)
    parser = argparse.ArgumentParser(
        description="Requests per second and latency of the storefront's home, category and "
                    "product pages, against a bare Starlette + Jinja2 app rendering the same "
                    "templates from memory. The admin database URL comes from "
                    f"BENCH_ADMIN_DATABASE_URL (default {DEFAULT_ADMIN_URL}).")
    parser.add_argument("--seconds", type=float, default=5.0,
                        help="length of one measured run (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="runs per page and server, alternating (default: %(default)s)")
    parser.add_argument("--warmup", type=float, default=2.0,
                        help="unmeasured seconds per page and server first (default: %(default)s)")
    parser.add_argument("--concurrency", type=int, default=16,
                        help="concurrent keep-alive connections (default: %(default)s)")
    parser.add_argument("--database-url", default=None,
                        help="the database to drop, create and fill; its name must contain "
                             f"'bench' (default: {BENCH_DATABASE} on the admin URL's server)")
    parser.add_argument("--output", type=Path, default=PROJECT_ROOT / "docs" / "benchmarks.md",
                        help="where to write the figures (default: docs/benchmarks.md)")
    parser.add_argument("--no-write", action="store_true", help="print the figures only")
    args = parser.parse_args()
    args.admin_url = admin
    if args.database_url is None:
        from sqlalchemy.engine import make_url

        args.database_url = make_url(admin).set(database=BENCH_DATABASE).render_as_string(
            hide_password=False)
    if args.seconds <= 0 or args.rounds < 1 or args.concurrency < 1 or args.warmup < 0:
        parser.error("--seconds, --rounds and --concurrency must be positive")
    return args


def measure(args: argparse.Namespace, pages: list[PageSpec], ports: dict[str, int],
            pids: dict[str, int], conn: Connection) -> dict[tuple[str, str], Figures]:
    def run(page: PageSpec, name: str, seconds: float) -> tuple[RunResult, float]:
        cpu_before = cpu_seconds(pids[name])
        conn.send(Job(ports[name], page.path, seconds, args.concurrency, page.expect))
        result: RunResult = conn.recv()
        cpu = cpu_seconds(pids[name]) - cpu_before
        if result.errors:
            raise SystemExit(f"{name} {page.path}: {result.errors} bad responses, e.g. "
                             + "; ".join(result.first_errors))
        return result, cpu

    if args.warmup:
        print(f"warming up ({args.warmup:g} s per page and server)")
        for page in pages:
            for name in SERVERS:
                run(page, name, args.warmup)
    figures = {(page.path, name): Figures() for page in pages for name in SERVERS}
    for round_number in range(args.rounds):
        for index, page in enumerate(pages):
            order = SERVERS if (round_number + index) % 2 == 0 else SERVERS[::-1]
            for name in order:
                result, cpu = run(page, name, args.seconds)
                figures[page.path, name].add(result, cpu)
                rps = len(result.latencies) / result.elapsed
                print(f"  round {round_number + 1}/{args.rounds}  {name}  "
                      f"{page.path:<22} {rps:8,.0f} rps")
    return figures


def main() -> int:
    args = parse_args()
    command = shlex.join([".venv/bin/python", "bench/storefront.py", *sys.argv[1:]])
    load = os.getloadavg()[0]
    if load > 0.5:
        print(f"note: the load average is {load:.2f}; other processes are using the CPU, "
              "so the figures will be noisier")
    with tempfile.TemporaryDirectory(prefix="conveyor-bench-") as tmp:
        var_dir = Path(tmp) / "var"
        print(f"preparing {args.database_url.rsplit('/', 1)[-1]} (drop, create, migrate, "
              "demo data)")
        prepare_database(args.admin_url, args.database_url, var_dir)
        pages = page_specs(args.database_url)
        postgres = postgres_version(args.database_url)

        env = {**os.environ, "DATABASE_URL": args.database_url, "VAR_DIR": str(var_dir),
               "SECRET_KEY": "bench-secret-key-" + "x" * 32, "LOG_LEVEL": "WARNING",
               "CATALOGUE_CHECK_SECONDS": "1"}
        ports = {"real": free_port(), "bare": free_port()}
        commands = {
            "real": [sys.executable, "-m", "conveyor.cli", "storefront",
                     "--host", HOST, "--port", str(ports["real"])],
            "bare": [sys.executable, "-m", "bench.bare_app",
                     "--host", HOST, "--port", str(ports["bare"])],
        }
        context = multiprocessing.get_context("spawn")
        ours, theirs = context.Pipe()
        generator = context.Process(target=load_generator, args=(theirs,), daemon=True)
        with (server("real", commands["real"], env, ports["real"], Path(tmp)) as real,
              server("bare", commands["bare"], env, ports["bare"], Path(tmp)) as bare):
            pids = {"real": real.pid, "bare": bare.pid}
            for page in pages:
                answers = {name: get(ports[name], page.path) for name in SERVERS}
                if any(status != 200 for status, _ in answers.values()):
                    raise SystemExit(f"{page.path}: {[s for s, _ in answers.values()]}")
                if not same_html(answers["real"][1], answers["bare"][1]):
                    raise SystemExit(f"{page.path}: the bare app's HTML differs from the "
                                     "storefront's; it would not be a fair comparison")
            generator.start()
            try:
                figures = measure(args, pages, ports, pids, ours)
            finally:
                ours.send(None)
                generator.join(timeout=10)

    rows = table_rows(pages, figures)
    ratios = [figures[p.path, "real"].rps / figures[p.path, "bare"].rps for p in pages]
    verdict = (f"Lowest real/bare ratio: {min(ratios):.2f} (aim: at least 0.80; "
               f"{'met' if min(ratios) >= 0.8 else 'not met'}).")
    print()
    print(text_table(rows))
    print()
    print(verdict)
    if not args.no_write:
        write_report(args.output, command, rows, args, verdict, postgres, load)
        print(f"written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
