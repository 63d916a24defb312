"""The gallery database as the server sees it: reachable or not, and what health says about it.

A database server (PostgreSQL) can be down when faceid starts and can go away while it runs. Neither
ends the process (a crash loop would only add restarts to the outage):
- at start-up `wait_for_database` pings with backoff until the database answers; meanwhile health says
  NOT_SERVING and calls get UNAVAILABLE with the reason;
- while serving, `DatabaseWatch` pings every few seconds; when the database is lost, health turns
  NOT_SERVING (load balancers move away) and calls that need it get UNAVAILABLE from the store; when it is
  back, the index is checked against the store (rebuilt on mismatch: a commit whose answer was lost with
  the connection may have landed) and health turns SERVING again. No restart in either case.
A SQLite file is not watched: it cannot go away in that sense, and opening it is a configuration matter.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TypeVar

from faceid.indexer import errors
from faceid.indexer.store.database import create_database_engine, is_unreachable, ping
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

log = logging.getLogger(__name__)
T = TypeVar("T")

FIRST_RETRY_S = 1.0
MAX_RETRY_S = 30.0
WATCH_INTERVAL_S = 2.0


def is_server_database(url: str) -> bool:
    """A database behind a network connection (PostgreSQL, ...), as opposed to a local SQLite file."""
    return make_url(url).get_backend_name() != "sqlite"


def database_down(exc: BaseException) -> bool:
    """The error says the database is unreachable (retry later), not that something is wrong with faceid."""
    return isinstance(exc, errors.Unavailable) or (isinstance(exc, SQLAlchemyError) and is_unreachable(exc))


def describe(exc: BaseException) -> str:
    """The first line of the driver's message (e.g. "connection ... failed: Connection refused")."""
    orig = getattr(exc, "orig", None) or exc
    return (str(orig).strip().splitlines() or [type(exc).__name__])[0]


def wait_for_database(url: str, stopped: threading.Event, on_wait: Callable[[str], None]) -> bool:
    """Ping the database at `url` until it answers (True) or `stopped` is set (False).

    Backoff from FIRST_RETRY_S doubling to MAX_RETRY_S; `on_wait(reason)` is called before each wait so the
    caller can tell health and callers why it is not serving yet.
    """
    engine = create_database_engine(url)
    delay = FIRST_RETRY_S
    try:
        while not stopped.is_set():
            try:
                ping(engine)
                return True
            except SQLAlchemyError as exc:
                if not is_unreachable(exc):
                    raise
                reason = f"the gallery database is unreachable ({describe(exc)})"
                log.error("%s; NOT_SERVING, retrying in %.0f s", reason, delay,
                          extra={"database": engine.url.render_as_string(hide_password=True)})
                on_wait(reason)
            if stopped.wait(delay):
                break
            delay = min(delay * 2, MAX_RETRY_S)
        return False
    finally:
        engine.dispose()


class DatabaseWatch:
    """Pings the store every `interval` s; calls `set_serving(False)` when it is lost, `on_back()` and then
    `set_serving(True)` once it answers again. A daemon thread; `stop()` ends it."""

    def __init__(
        self,
        ping_store: Callable[[], None],
        set_serving: Callable[[bool], None],
        on_back: Callable[[], None],
        *,
        interval: float = WATCH_INTERVAL_S,
    ) -> None:
        self._ping = ping_store
        self._set_serving = set_serving
        self._on_back = on_back
        self._interval = interval
        self._stop = threading.Event()
        self.lost = False
        self._thread = threading.Thread(target=self._run, name="faceid-db-watch", daemon=True)

    def start(self) -> DatabaseWatch:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout=self._interval + 10)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._ping()
                if self.lost:
                    self._recover()
            except Exception as exc:
                if not database_down(exc):
                    log.exception("database health check failed unexpectedly")
                    continue
                if not self.lost:
                    self.lost = True
                    self._set_serving(False)
                    log.error("lost the gallery database (%s): NOT_SERVING until it is back", describe(exc))

    def _recover(self) -> None:
        # Still NOT_SERVING while the index is checked; a failure here (lost again) keeps it so.
        self._on_back()
        self.lost = False
        self._set_serving(True)
        log.info("the gallery database is back: SERVING")


def open_when_reachable(
    open_engine: Callable[[], T], url: str, stopped: threading.Event, on_wait: Callable[[str], None]
) -> T | None:
    """`open_engine()` once the database at `url` answers; None when `stopped` first.

    For a server database, an open that fails because the database went away meanwhile waits for it again
    instead of failing the server; any other error (a missing model, a schema too new) is raised.
    """
    server_db = is_server_database(url)
    while True:
        if server_db and not wait_for_database(url, stopped, on_wait):
            return None
        try:
            return open_engine()
        except Exception as exc:
            if not (server_db and database_down(exc)) or stopped.is_set():
                raise
            reason = f"lost the gallery database while loading ({describe(exc)})"
            log.error("%s; NOT_SERVING, waiting for it", reason)
            on_wait(reason)
            if stopped.wait(FIRST_RETRY_S):
                return None
