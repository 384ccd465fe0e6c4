"""Live stock for the catalogue pages: available quantities kept in memory for exactly as long
as PostgreSQL says they have not changed.

`LiveStock` caches, per variant, what `stock_for` reads (on_hand - allocated - reserved, never
below 0). A listener thread holds a connection of its own in autocommit and `LISTEN`s on
`conveyor_stock`, where the `stock_item` triggers of migration 0006 announce every changed
variant (and '*' on TRUNCATE) when the change commits. Guarantees:

- A cached quantity is served only while the listener is connected and listening. PostgreSQL
  delivers a notification once the change is visible, and the listener then drops that
  variant, so a page shows a change as soon as this process has heard of it (well under a
  millisecond after the commit on an idle machine; it may show the earlier quantity until
  then, as a page read just before the commit would have).
- A quantity read from the database is kept only if no notification for its variant, and no
  loss of the listener, came in after the read began: a change racing a read never leaves a
  stale quantity behind.
- When the listener fails, its connection is lost or it is stopped, the cache is emptied and
  stops being trusted until the listener is listening again (it reconnects with backoff);
  meanwhile, as on SQLite, without psycopg or without the triggers, every read goes to the
  database. A connection that dies without a word (a cut network) is noticed by TCP
  keepalives and `tcp_user_timeout`, within about 15 s: the longest a stale quantity can be
  served.

Triggers bypassed by `session_replication_role = replica` or `DISABLE TRIGGER` send nothing:
writes made that way are not seen until the listener reconnects or the storefront restarts.
"""

from __future__ import annotations

import logging
import select
import socket
import threading
from collections.abc import Callable, Collection, Iterable
from typing import Any

import psycopg
from psycopg import sql

from conveyor.db import Database
from storefront.catalogue import stock_for

log = logging.getLogger(__name__)

CHANNEL = "conveyor_stock"
TRIGGERS = ("stock_item_notify", "stock_item_notify_truncate")
CONNECT_OPTIONS: dict[str, Any] = {
    "application_name": "conveyor stock listener",
    "connect_timeout": 5,
    # Notice a peer that vanished without closing the connection (see the docstring).
    "keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2, "keepalives_count": 3,
    "tcp_user_timeout": 10_000,
}
FIRST_RETRY_SECONDS = 0.05
MAX_RETRY_SECONDS = 5.0

Reader = Callable[[list[int]], dict[int, int]]


class StockCache:
    """Available quantities by variant id, served only while `live`; thread-safe.

    `invalidate`, `invalidate_all` and `set_live` are for whoever hears of changes;
    `cached` never blocks (for the event loop: the lock only ever guards dict operations);
    `available` reads what is missing with `read`, so it belongs in a worker thread.
    """

    def __init__(self, read: Reader) -> None:
        self._read = read
        self._lock = threading.Lock()
        self._live = False
        self._values: dict[int, int] = {}
        # Moved by each notification for the variant while reads are under way: a read keeps
        # its value only if the variant's generation is still the one seen when it began.
        # Dropped whenever no read is under way, so they stay few.
        self._generations: dict[int, int] = {}
        self._reads = 0
        # Moved whenever everything is forgotten: reads begun before keep nothing.
        self._epoch = 0

    @property
    def live(self) -> bool:
        return self._live

    def cached(self, variant_ids: Collection[int]) -> dict[int, int] | None:
        """All these quantities from memory, or None when any must be read."""
        if not variant_ids:
            return {}
        with self._lock:
            if not self._live:
                return None
            try:
                return {vid: self._values[vid] for vid in variant_ids}
            except KeyError:
                return None

    def available(self, variant_ids: Iterable[int]) -> dict[int, int]:
        """These quantities: from memory where trusted, the rest in one read (then kept)."""
        ids = list(dict.fromkeys(variant_ids))
        with self._lock:
            live, epoch = self._live, self._epoch
            found = {vid: self._values[vid] for vid in ids if vid in self._values} if live else {}
            began = {vid: self._generations.get(vid, 0) for vid in ids if vid not in found}
            if not began:
                return found
            self._reads += 1
        read: dict[int, int] = {}
        try:
            read = self._read(list(began))
        finally:
            with self._lock:
                self._reads -= 1
                if live and self._live and self._epoch == epoch:
                    for vid, generation in began.items():
                        if vid in read and self._generations.get(vid, 0) == generation:
                            self._values[vid] = read[vid]
                if not self._reads:
                    self._generations.clear()
        return {vid: found[vid] if vid in found else read.get(vid, 0) for vid in ids}

    def invalidate(self, variant_id: int) -> None:
        with self._lock:
            self._values.pop(variant_id, None)
            if self._reads:  # only a read under way can be racing this change
                self._generations[variant_id] = self._generations.get(variant_id, 0) + 1

    def invalidate_all(self) -> None:
        with self._lock:
            self._forget()

    def set_live(self, live: bool) -> None:
        """Trust the cache from now on (the listener listens) or not; empties it either way."""
        with self._lock:
            self._forget()
            self._live = live

    def _forget(self) -> None:
        self._values.clear()
        self._generations.clear()
        self._epoch += 1


class LiveStock(StockCache):
    """The storefront's stock cache, kept true by a listener thread: `start` it when the app
    starts and `stop` it when the app stops. Without `start`, nothing is cached."""

    def __init__(self, db: Database, *, channel: str = CHANNEL) -> None:
        super().__init__(lambda ids: stock_for(db, ids))
        self._db = db
        self._channel = channel
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._wake: socket.socket | None = None  # written to by `stop` to wake the listener
        self._listener_pid: int | None = None

    @property
    def listener_pid(self) -> int | None:
        """The PostgreSQL backend pid of the listening connection, while it listens."""
        return self._listener_pid

    def start(self) -> bool:
        """Start listening in a thread; False where no listener can run (then no cache)."""
        engine = self._db.engine
        if engine.dialect.name != "postgresql" or engine.dialect.driver != "psycopg":
            return False
        if self._thread is not None:
            return True
        _, params = engine.dialect.create_connect_args(engine.url)
        options = {**CONNECT_OPTIONS, **params, "autocommit": True}
        # Each run gets its own stop event and wake-up socket, so a listener that outlives a
        # `stop` (stuck connecting) can never act on a later run's behalf.
        self._stopping = threading.Event()
        self._wake, wake_reader = socket.socketpair()
        self._thread = threading.Thread(target=self._run,
                                        args=(options, self._stopping, wake_reader),
                                        name="stock-listener", daemon=True)
        self._thread.start()
        return True

    def stop(self, timeout: float = 5.0) -> None:
        thread, wake, self._thread, self._wake = self._thread, self._wake, None, None
        if thread is None or wake is None:
            return
        self._stopping.set()
        wake.send(b"\0")
        thread.join(timeout)
        wake.close()
        self.set_live(False)

    def _run(self, options: dict[str, Any], stopping: threading.Event,
             wake: socket.socket) -> None:
        delay = FIRST_RETRY_SECONDS
        problem = ""
        with wake:
            while not stopping.is_set():
                try:
                    with self._connect(options) as conn:
                        conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._channel)))
                        if not _triggers_installed(conn):
                            raise LookupError("the stock_item notify triggers are missing "
                                              "(migration 0006)")
                        self._listener_pid = conn.info.backend_pid
                        if not self._go_live(stopping):
                            return
                        log.info("stock listener listening: stock is served from memory")
                        delay, problem = FIRST_RETRY_SECONDS, ""
                        self._listen(conn, stopping, wake)
                except Exception as exc:  # whatever it was: not live, reconnect later
                    if not stopping.is_set() and str(exc) != problem:
                        problem = str(exc)
                        log.warning("stock listener not listening (%s); stock is read from the "
                                    "database until it is back", " ".join(problem.split()))
                finally:
                    self.set_live(False)
                    self._listener_pid = None
                if stopping.wait(delay):
                    return
                delay = min(delay * 2, MAX_RETRY_SECONDS)

    def _connect(self, options: dict[str, Any]) -> psycopg.Connection[Any]:
        return psycopg.connect(**options)

    def _go_live(self, stopping: threading.Event) -> bool:
        """Trust the cache from now on, the LISTEN being in place, unless `stop` has begun
        (checked under the lock that `stop`'s own `set_live(False)` takes after it)."""
        with self._lock:
            if stopping.is_set():
                return False
            self._forget()
            self._live = True
            return True

    def _listen(self, conn: psycopg.Connection[Any], stopping: threading.Event,
                wake: socket.socket) -> None:
        """Drop what each notification names until told to stop. Raises when the connection
        fails: a closed or broken connection makes the socket readable, and reading it raises."""
        while True:
            ready, _, _ = select.select([conn.fileno(), wake.fileno()], [], [])
            if stopping.is_set():
                return
            if conn.fileno() in ready:
                for notify in conn.notifies(timeout=0):
                    self._heard(notify.payload)

    def _heard(self, payload: str) -> None:
        try:
            variant_id = int(payload)
        except ValueError:  # '*' (a TRUNCATE) or anything unexpected: forget everything
            self.invalidate_all()
            return
        self.invalidate(variant_id)


def _triggers_installed(conn: psycopg.Connection[Any]) -> bool:
    """Without both enabled triggers, nothing would tell us of changes: never go live."""
    row = conn.execute(
        "SELECT count(*) FROM pg_trigger WHERE tgrelid = to_regclass('stock_item') "
        "AND tgname = ANY(%s) AND tgenabled <> 'D'", (list(TRIGGERS),)).fetchone()
    return row is not None and row[0] == len(TRIGGERS)
