"""The engine's life inside the server: loading → ready → closing, as seen by the servicers.

The port is bound before the model loads (so health can be polled during a slow first start), which
means calls can arrive before there is an engine. `EngineSlot.get()` hands out the engine when it is
ready and otherwise raises `Unavailable` with a message saying why and what to do.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from faceid.indexer import errors

if TYPE_CHECKING:
    from faceid.indexer.engine import FaceEngine


class EngineSlot:
    """Holds the engine once it is loaded; thread-safe."""

    def __init__(self, model: str, engine: FaceEngine | None = None) -> None:
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._model = model
        self._engine = engine
        self._error: BaseException | None = None
        self._closing = False
        self._waiting: str | None = None  # why the load waits (e.g. the database is unreachable)
        if engine is not None:
            self._ready.set()

    # ------------------------------------------------------------------ state changes (app.py)
    def set_engine(self, engine: FaceEngine) -> bool:
        """Install a loaded engine; False (and the caller closes it) when the server is already closing."""
        with self._lock:
            if self._closing:
                return False
            self._engine = engine
        self._ready.set()
        return True

    def set_waiting(self, reason: str) -> None:
        """The load waits for something outside the server (the database); callers are told what."""
        self._waiting = reason

    def set_failed(self, error: BaseException) -> None:
        with self._lock:
            self._error = error
        self._ready.set()

    def start_closing(self) -> FaceEngine | None:
        """Refuse new work from now on; returns the engine (if any) for the caller to close."""
        with self._lock:
            self._closing = True
            engine, self._engine = self._engine, None
        self._ready.set()
        return engine

    # ------------------------------------------------------------------------------ reading
    @property
    def error(self) -> BaseException | None:
        return self._error

    @property
    def loaded(self) -> bool:
        return self._engine is not None

    def wait(self, timeout: float | None = None) -> bool:
        """Block until loaded, failed or closing; True when an engine is ready."""
        self._ready.wait(timeout)
        return self.loaded

    def peek(self) -> FaceEngine | None:
        """The engine when ready, else None (for metrics and health, which must not raise)."""
        return self._engine

    def get(self) -> FaceEngine:
        engine = self._engine
        if engine is not None:
            return engine
        if self._closing:
            raise errors.Unavailable("server is shutting down; retry against another instance or after restart")
        if self._error is not None:
            raise errors.Unavailable(
                f"server could not load the model {self._model!r}: {self._error}; "
                "see the server log (try `faceid-server models fetch`)"
            )
        if self._waiting is not None:
            raise errors.Unavailable(f"server is not serving yet: {self._waiting}; retry later")
        raise errors.Unavailable(
            f"server is loading the model ({self._model}) and the index; retry in a few seconds"
        )
