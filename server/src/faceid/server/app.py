"""Wiring: a gRPC server with the FaceId service, health, reflection and metrics; `serve()` runs it.

Start-up order matters for a slow first start (the model may be fetched and converted): the port is
bound and health answers NOT_SERVING at once, the engine loads in a background thread, and only then
does health turn SERVING. Calls that arrive earlier get UNAVAILABLE with a "loading" message.
"""

from __future__ import annotations

import dataclasses
import logging
import signal
import threading
from collections.abc import Callable, Sequence
from concurrent import futures
from dataclasses import dataclass, field
from types import FrameType
from typing import TYPE_CHECKING, Any

import grpc
from faceid.server.admin_servicer import ADMIN_SERVICE, AdminServicer
from faceid.server.auth import build_interceptor, is_loopback
from faceid.server.clustering_servicer import register as register_clustering
from faceid.server.config import Settings
from faceid.server.database_health import DatabaseWatch, database_down, describe, is_server_database, open_when_reachable
from faceid.server.deadlines import CancellationInterceptor
from faceid.server.index_health import HealthSwitch, IndexWatch, ServingGate
from faceid.server.lifecycle import EngineSlot
from faceid.server.metrics import MetricsInterceptor, MetricsServer, start_metrics
from faceid.server.scheduler import AcceleratorScheduler, Priority, plan_cpu_slots
from faceid.server.servicer import FaceIdServicer
from faceid.server.status import ErrorMappingInterceptor
from faceid.server.tls import TlsFiles, server_credentials
from faceid.server.wire import MalformedRequestInterceptor
from faceid.v1 import admin_pb2_grpc, faceid_pb2, faceid_pb2_grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

if TYPE_CHECKING:
    from faceid.indexer.engine import FaceEngine
    from faceid.indexer.store import KeyStore

log = logging.getLogger(__name__)

FACEID_SERVICE = faceid_pb2.DESCRIPTOR.services_by_name["FaceId"].full_name  # "faceid.v1.FaceId"


def scheduler_runner(scheduler: AcceleratorScheduler) -> Callable[..., Any]:
    """The engine's AcceleratorRunner: its accelerator work waits its turn in the server's scheduler."""

    def run(kind: str, fn: Callable[..., Any], /, *args: Any) -> Any:
        priority = Priority.INTERACTIVE if kind == "interactive" else Priority.BULK
        return scheduler.run(fn, *args, priority=priority, exclusive=kind == "bulk-exclusive")

    return run


@dataclass
class RunningServer:
    """A started server. `port` is the bound port (useful with listen port 0)."""

    server: grpc.Server
    port: int
    host: str
    slot: EngineSlot
    health: health.HealthServicer
    scheduler: AcceleratorScheduler
    metrics: MetricsServer
    services: tuple[str, ...]
    gate: ServingGate  # the only writer of health: SERVING while no condition (engine, database, index...) is down
    keys: KeyStore | None = field(default=None, repr=False)  # API keys (auth.py), closed on stop
    _loader: threading.Thread | None = field(default=None, repr=False)
    _released: threading.Event = field(default_factory=threading.Event, repr=False)
    _stopping: threading.Event = field(default_factory=threading.Event, repr=False)  # set first thing in stop()
    db_watch: DatabaseWatch | None = field(default=None, repr=False)  # server databases only (database_health)
    index_watch: IndexWatch | None = field(default=None, repr=False)  # vector index reachability (index_health)
    index_probe_s: float = field(default=2.0, repr=False)
    _stopped: bool = field(default=False, repr=False)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def wait_ready(self, timeout: float | None = None) -> FaceEngine:
        """Block until the engine is loaded; re-raises the load error, TimeoutError after `timeout` s."""
        if not self.slot.wait(timeout):
            if self.slot.error is not None:
                raise self.slot.error
            raise TimeoutError(f"the engine did not load within {timeout} s")
        engine = self.slot.peek()
        assert engine is not None
        return engine

    def stop(self, grace: float | None = None) -> None:
        """NOT_SERVING, stop accepting calls, drain in-flight ones for `grace` s, then close the engine."""
        if self._stopped:
            return
        self._stopped = True
        self._stopping.set()
        if self.db_watch is not None:
            self.db_watch.stop()
        if self.index_watch is not None:
            self.index_watch.stop()
        self.health.enter_graceful_shutdown()
        self.server.stop(grace).wait()
        engine = self.slot.start_closing()  # a load still running closes its engine when it ends
        if engine is not None:
            engine.close()
        self._released.set()  # the loader thread may end now (see _load_engine)
        self.metrics.stop()
        if self.keys is not None:
            self.keys.close()
        log.info("server stopped")


def create_server(settings: Settings, *, engine: FaceEngine | None = None) -> RunningServer:
    """Bind and start the server; the engine loads in the background unless one is given.

    Returns at once with health NOT_SERVING; use `RunningServer.wait_ready()` to wait for SERVING.
    """
    settings.export_environment()
    host, port = settings.host_port
    slot = EngineSlot(settings.model)
    scheduler = AcceleratorScheduler()
    metrics = start_metrics(slot, scheduler, settings.metrics_port, settings.metrics_addr)
    size = settings.limits.max_message_bytes
    # --- auth (faceid.server.auth): keys live in the gallery database, checked before any servicer code
    keys = _open_key_store(settings)
    auth = build_interceptor(keys, mode=settings.auth.mode, host=host, style_scope=settings.auth.style_scope)
    # ---
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=settings.workers, thread_name_prefix="faceid-rpc"),
        # First is outermost: metrics see the final status chosen by the error mapping. Auth runs before
        # any servicer code; undecodable request bytes become INVALID_ARGUMENT (faceid.server.wire); each
        # call's work runs in its cancel scope, stopped when the call is cancelled or expires (deadlines.py).
        interceptors=[
            MetricsInterceptor(metrics.rpc), auth, MalformedRequestInterceptor(), ErrorMappingInterceptor(),
            CancellationInterceptor(),
        ],
        options=[
            ("grpc.max_receive_message_length", size),
            ("grpc.max_send_message_length", size),
            ("grpc.so_reuseport", 0),  # a second server on the same port must fail, not share it
        ],
    )
    faceid_pb2_grpc.add_FaceIdServicer_to_server(FaceIdServicer(slot), server)
    services = [FACEID_SERVICE, *register_clustering(server, slot), *_register_optional_services(server, settings, scheduler)]

    health_servicer = health.HealthServicer()
    services.append(ADMIN_SERVICE)
    # NOT_SERVING until the engine has loaded; the watchers and index rebuilds add their own conditions.
    switch = HealthSwitch(health_servicer, tuple(services))
    switch.set(False)
    gate = ServingGate(switch.set, down=("engine",))
    # --- admin (faceid.server.admin_servicer): index check/rebuild is NOT_SERVING while it runs
    admin_pb2_grpc.add_AdminServicer_to_server(AdminServicer(slot, keys, gate), server)
    # ---
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    health_name = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
    reflection.enable_server_reflection((*services, health_name, reflection.SERVICE_NAME), server)

    bound = _add_port(server, f"{host}:{port}", settings)
    if bound == 0:
        raise OSError(f"could not listen on {settings.listen}: the port is in use or the address is not local")
    server.start()
    log.info("listening on %s:%d (workers=%d)", host, bound, settings.workers)
    _log_security(settings, auth.describe())

    running = RunningServer(server, bound, host, slot, health_servicer, scheduler, metrics, tuple(services), gate, keys=keys,
                            index_probe_s=settings.index_probe_s)
    if engine is not None:
        _engine_ready(running, engine)
    else:
        running._loader = threading.Thread(
            target=_load_engine, args=(running, settings), name="faceid-engine-load", daemon=True
        )
        running._loader.start()
    return running


def _open_key_store(settings: Settings) -> KeyStore:
    from faceid.indexer.store import KeyStore
    from sqlalchemy.exc import SQLAlchemyError

    try:
        return KeyStore.open(settings.database)
    except SQLAlchemyError as exc:
        if is_server_database(settings.database) and database_down(exc):
            # Not a crash loop: serve NOT_SERVING and connect once the database answers (database_health).
            log.error("the database %s is unreachable at start-up (%s): NOT_SERVING until it answers",
                      settings.database_for_logs, describe(exc))
            return KeyStore.open_when_reachable(settings.database)
        first = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        raise OSError(f"cannot open the database {settings.database_for_logs} (it holds the API keys): {first}") from None


def _add_port(server: grpc.Server, address: str, settings: Settings) -> int:
    """TLS (mutual when a client CA is set) from the settings' PEM files, else plaintext."""
    tls = settings.tls
    if tls.cert_file is None or tls.key_file is None:
        return server.add_insecure_port(address)
    files = TlsFiles(tls.cert_file.expanduser(), tls.key_file.expanduser(),
                     tls.client_ca_file.expanduser() if tls.client_ca_file else None)
    return server.add_secure_port(address, server_credentials(files))


def _log_security(settings: Settings, auth: str) -> None:
    tls = "mutual TLS" if settings.tls.client_ca_file else ("TLS" if settings.tls.enabled else "plaintext")
    log.info("security: %s; %s", auth, tls)
    if settings.auth.mode == "disabled":
        log.warning("API keys are NOT checked (--insecure-no-auth): anyone who reaches %s can read and change "
                    "the gallery", settings.listen)
    elif not settings.tls.enabled and not is_loopback(settings.host_port[0]):
        log.warning("listening beyond loopback without TLS: API keys and face photos cross the network in "
                    "clear text; give --tls-cert and --tls-key")


def size_accelerator(settings: Settings, scheduler: AcceleratorScheduler) -> int:
    """Slots and torch threads for the resolved device (scheduler.py); sets both, returns the slots."""
    from faceid.indexer.runtime import available_cores, configure_torch_threads, resolve_device

    given = settings.scheduler
    cores = available_cores()  # the affinity mask, not the machine's total
    if resolve_device(settings.device).startswith("cuda"):
        # One computation on the GPU at a time; the CPU threads serve its pre- and post-processing.
        slots, threads = given.slots or 1, given.torch_threads or cores
    else:
        slots, threads = plan_cpu_slots(cores, given.torch_threads, given.slots)
        if slots * threads > cores:
            log.warning("%d accelerator slots x %d torch threads exceed the %d usable cores: computations will "
                        "stall each other (ARCHITECTURE.md, oversubscription)", slots, threads, cores)
    configure_torch_threads(threads)
    scheduler.set_slots(slots)
    log.info("accelerator: %d slot(s), %d torch thread(s) each", slots, threads)
    return slots


def _load_engine(running: RunningServer, settings: Settings) -> None:
    log.info("loading model %s and the gallery index (%s)", settings.model, settings.database_for_logs)
    try:
        # Imported here: torch and FAISS load in this thread, while health already answers NOT_SERVING.
        from faceid.indexer.engine import FaceEngine

        slots = size_accelerator(settings, running.scheduler)
        config = dataclasses.replace(settings.to_engine_config(), batch_workers=slots)
        engine = open_when_reachable(
            lambda: FaceEngine.open(config, runner=scheduler_runner(running.scheduler)),
            settings.database, running._stopping, running.slot.set_waiting,
        )
        if engine is None:  # stopped while waiting for the database
            return
    except Exception as exc:  # reported by health (stays NOT_SERVING), servicers and serve()
        log.error("could not start the engine: %s", exc, exc_info=not _is_expected(exc))
        running.slot.set_failed(exc)
        return
    _engine_ready(running, engine)
    # This thread ran torch work (OpenMP) while loading. Measured here: once such a thread exits, its
    # OpenMP team keeps spinning and every later forward pass on other threads runs 2-8x slower on CPU
    # (gone with OMP_WAIT_POLICY=passive). So the thread that loaded the engine lives as long as it.
    running._released.wait()


def _is_expected(exc: BaseException) -> bool:
    from faceid.indexer.errors import FaceIdError

    return isinstance(exc, FaceIdError)


def _engine_ready(running: RunningServer, engine: FaceEngine) -> None:
    if not running.slot.set_engine(engine):  # stopped while loading
        engine.close()
        return
    # The vector index may be away (a Milvus server, at start-up or later): health follows it (index_health),
    # and the watchers share one gate, so SERVING needs the database and the index both.
    index_ok = engine.probe_index()
    gate = running.gate
    gate.set("vector index", index_ok)
    gate.set("engine", True)
    if not running._stopping.is_set():
        running.index_watch = IndexWatch(
            engine.probe_index, lambda ok: gate.set("vector index", ok), ok=index_ok, interval=running.index_probe_s
        ).start()
    if engine.store.dialect != "sqlite" and not running._stopping.is_set():  # see database_health
        running.db_watch = DatabaseWatch(
            engine.store.ping, lambda ok: gate.set("database", ok), lambda: engine.check_index(rebuild=True)
        ).start()
    if not index_ok:
        log.error("model %s loaded, NOT_SERVING: the vector index %s does not answer (checked every %g s)",
                  engine.model.id, engine.index.device, running.index_probe_s)
        return
    try:
        stats = engine.stats()
    except Exception:  # only a log line; the RPCs report real faults
        log.exception("SERVING model=%s, but the gallery stats could not be read", engine.model.id)
        return
    log.info(
        "SERVING model=%s device=%s identities=%d faces=%d index_consistent=%s",
        engine.model.id, stats.device, stats.identities, stats.faces, stats.index.consistent,
        extra={"model": engine.model.id, "device": stats.device},
    )


def _register_optional_services(
    server: grpc.Server, settings: Settings, scheduler: AcceleratorScheduler
) -> Sequence[str]:
    """Hook for services beyond FaceId; returns their full names (for health and reflection).

    Style transfer: `faceid.server.style.servicer.register(server, *, settings: StyleSettings,
    scheduler: AcceleratorScheduler) -> Sequence[str]` adds the StyleTransfer servicer to `server` and
    returns its service names. It runs as BACKGROUND work on the same scheduler as the face engine.
    """
    if not settings.style.enabled:
        return ()
    try:
        from faceid.server.style.servicer import register as register_style
    except ImportError as exc:
        log.info("style transfer not available (%s); serving FaceId only", exc)
        return ()
    return tuple(register_style(server, settings=settings.style, scheduler=scheduler))


def serve(settings: Settings) -> int:
    """Run until SIGTERM/SIGINT; returns the process exit code (1 when the engine could not load)."""
    running = create_server(settings)
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s: draining for up to %.0f s", signal.Signals(signum).name, settings.grace_s)
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        # Wake up when the load ends, to stop with an error if it failed.
        while not stop.is_set():
            if running.slot.error is not None:
                log.error(
                    "stopping: the engine could not start (%s). For a missing model run "
                    "`faceid-server models fetch %s`.", running.slot.error, settings.model,
                )
                running.stop(grace=0)
                return 1
            stop.wait(0.5)
        running.stop(grace=settings.grace_s)
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
