"""Load test over gRPC: closed-loop N clients and open-loop fixed rate, mixing Identify, Verify and Enroll.

    uv run python bench/load.py suite --clients 32 --duration 60 --target-check   # the issue's targets, one run
    uv run python bench/load.py closed --clients 8 --duration 20
    uv run python bench/load.py open --rate 5 --duration 20 --mix identify=1
    uv run python bench/load.py suite --server 127.0.0.1:50051 --api-key fid_...   # a running server
    uv run python bench/load.py suite --spawn 2         # two servers on one SQLite gallery, calls round-robin
    uv run python bench/load.py suite --servers 127.0.0.1:50051,127.0.0.1:50052       # running servers
    uv run python bench/load.py suite --spawn 2 --postgres   # two servers on a throwaway PostgreSQL

Without --server it starts `faceid-server` as a subprocess on a free loopback port with a temporary
SQLite gallery, and enrols half the people of shared/data/faces (two photos each); the other photos of
those people and the other people are the queries. Only loopback addresses are accepted: this is a load
generator, never point it at someone else's machine. Every run is bounded by --duration AND --max-requests.

closed  N clients, each sends its next request when the previous answer arrives (throughput at a
        concurrency). Latency = answer - send.
open    requests at a fixed rate whatever the answers do (latency at an offered load). Latency is measured
        from the *scheduled* send time, so a server that falls behind shows it (no coordinated omission);
        at most --max-inflight requests wait, later ones count as errors ("dropped").
suite   idle single-client Identify baseline, a single-client run of the mix, closed-loop --clients with the
        mix, then open-loop Identify at 60 % of that run's throughput; prints each target with PASS/FAIL:
          closed ×clients: 0 errors, throughput ≥ 1.5 × the single-client mix, p99 ≤ 3 × p50
          open loop at 60 % of that peak: p99 ≤ 3 × the idle single-client Identify p50
        With --target-check the exit status says it too: 0 all PASS, 3 a target FAILed (1: an
        acknowledged enrolment was lost, whatever the targets).

Enrolments are checked afterwards: every face the server acknowledged must be listed by GetIdentity
("acknowledged lost" must be 0). Results are printed as markdown, with the machine's load average before
and after: figures from a busy machine are not the service's, and the report says so.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from faceid.v1 import faceid_pb2 as pb
from faceid.v1 import faceid_pb2_grpc as pb_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from load_servers import balanced_channel, lost_on_each, parse_servers, settled_indexes

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FACEID_SHARED_DIR", REPO.parent / "shared"))
FACES = SHARED / "data" / "faces"
LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")


# ------------------------------------------------------------------------------------------- photos
@dataclass(frozen=True)
class Photos:
    enrolled: dict[str, list[bytes]]  # person -> the photos enrolled at setup
    queries: list[tuple[str | None, bytes]]  # (person if enrolled else None, photo)
    extra: dict[str, list[bytes]]  # person -> enrolled people's other photos (for Enroll during the run)

    @classmethod
    def load(cls) -> Photos:
        people = sorted(p for p in FACES.iterdir() if p.is_dir())
        enrolled, queries, extra = {}, [], {}
        for i, folder in enumerate(people):
            photos = [p.read_bytes() for p in sorted(folder.glob("*.jpg"))]
            if i % 2 == 0 and len(photos) >= 3:
                enrolled[folder.name] = photos[:2]
                extra[folder.name] = photos[2:]
                queries += [(folder.name, p) for p in photos[2:]]
            else:
                queries += [(None, p) for p in photos]
        return cls(enrolled, queries, extra)


# -------------------------------------------------------------------------------------- operations
@dataclass
class Result:
    op: str
    seconds: float
    code: grpc.StatusCode
    client: int


@dataclass
class Ledger:
    """Every answer, plus the faces acknowledged by Enroll (checked for loss at the end)."""

    results: list[Result] = field(default_factory=list)
    acked: dict[str, set[int]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, result: Result, enrolled: tuple[str, list[int]] | None = None) -> None:
        with self.lock:
            self.results.append(result)
            if enrolled:
                self.acked.setdefault(enrolled[0], set()).update(enrolled[1])


class Workload:
    def __init__(self, stub: pb_grpc.FaceIdStub, photos: Photos, mix: dict[str, float], metadata: tuple, seed: int) -> None:
        self.stub, self.photos, self.metadata = stub, photos, metadata
        self.ops, self.weights = zip(*mix.items(), strict=True)
        self.rng = random.Random(seed)
        self.lock = threading.Lock()

    def pick(self) -> tuple[str, Callable[[float], tuple[Result, tuple[str, list[int]] | None]]]:
        with self.lock:
            op = self.rng.choices(self.ops, self.weights)[0]
            query = self.rng.choice(self.photos.queries)
            other = self.rng.choice(self.photos.queries)
            person = self.rng.choice(sorted(self.photos.extra))
            extra = self.rng.choice(self.photos.extra[person])
        return op, lambda timeout: self._call(op, query, other, person, extra, timeout)

    def _call(self, op: str, query, other, person: str, extra: bytes, timeout: float):  # type: ignore[no-untyped-def]
        start = time.perf_counter()
        enrolled = None
        try:
            if op == "identify":
                self.stub.Identify(pb.IdentifyRequest(image=query[1]), timeout=timeout, metadata=self.metadata)
            elif op == "verify":
                self.stub.Verify(pb.VerifyRequest(image_a=query[1], image_b=other[1]), timeout=timeout, metadata=self.metadata)
            else:  # enroll: another photo of an enrolled person (a repeat is an idempotent DUPLICATE)
                answer = self.stub.Enroll(pb.EnrollRequest(identity=person, images=[extra]), timeout=timeout, metadata=self.metadata)
                ok = (pb.IMAGE_STATUS_STORED, pb.IMAGE_STATUS_DUPLICATE)
                enrolled = (person, [r.face_id for r in answer.results if r.status in ok])
            code = grpc.StatusCode.OK
        except grpc.RpcError as exc:
            code = exc.code()
        return Result(op, time.perf_counter() - start, code, -1), enrolled


# ------------------------------------------------------------------------------------------- loops
def closed_loop(work: Workload, clients: int, duration: float, max_requests: int, timeout: float) -> tuple[Ledger, float]:
    ledger, issued = Ledger(), [0]
    issued_lock = threading.Lock()
    deadline = time.perf_counter() + duration

    def client(cid: int) -> None:
        while time.perf_counter() < deadline:
            with issued_lock:
                if issued[0] >= max_requests:
                    return
                issued[0] += 1
            _, call = work.pick()
            result, enrolled = call(timeout)
            result.client = cid
            ledger.add(result, enrolled)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return ledger, time.perf_counter() - t0


def open_loop(work: Workload, rate: float, duration: float, max_requests: int, timeout: float, max_inflight: int) -> tuple[Ledger, float]:
    ledger = Ledger()
    inflight = threading.BoundedSemaphore(max_inflight)
    total = min(max_requests, int(rate * duration))
    threads: list[threading.Thread] = []
    t0 = time.perf_counter()

    def run(scheduled: float, call: Callable) -> None:  # type: ignore[type-arg]
        try:
            result, enrolled = call(timeout)
            result.seconds = time.perf_counter() - scheduled  # from the scheduled send: queueing counts
            ledger.add(result, enrolled)
        finally:
            inflight.release()

    for i in range(total):
        scheduled = t0 + i / rate
        time.sleep(max(0.0, scheduled - time.perf_counter()))
        op, call = work.pick()
        if not inflight.acquire(blocking=False):
            ledger.add(Result(op, 0.0, grpc.StatusCode.RESOURCE_EXHAUSTED, -1))  # dropped by the generator
            continue
        thread = threading.Thread(target=run, args=(scheduled, call), daemon=True)
        thread.start()
        threads.append(thread)
    for t in threads:
        t.join()
    return ledger, time.perf_counter() - t0


# ------------------------------------------------------------------------------------------ report
def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


@dataclass(frozen=True)
class Summary:
    label: str
    requests: int
    errors: int
    seconds: float
    p50: float
    p95: float
    p99: float

    @property
    def throughput(self) -> float:
        return (self.requests - self.errors) / self.seconds if self.seconds else 0.0


def summarise(label: str, ledger: Ledger, seconds: float) -> tuple[Summary, list[str]]:
    rows = []
    ok = [r for r in ledger.results if r.code is grpc.StatusCode.OK]
    overall = Summary(label, len(ledger.results), len(ledger.results) - len(ok), seconds,
                      pct([r.seconds for r in ok], 50), pct([r.seconds for r in ok], 95), pct([r.seconds for r in ok], 99))
    for op in sorted({r.op for r in ledger.results}):
        mine = [r for r in ledger.results if r.op == op]
        good = [r.seconds for r in mine if r.code is grpc.StatusCode.OK]
        rows.append(f"| {label} | {op} | {len(mine)} | {len(mine) - len(good)} | {len(good) / seconds:.2f} | "
                    f"{pct(good, 50) * 1e3:.0f} | {pct(good, 95) * 1e3:.0f} | {pct(good, 99) * 1e3:.0f} |")
    rows.append(f"| {label} | **all** | {overall.requests} | {overall.errors} | {overall.throughput:.2f} | "
                f"{overall.p50 * 1e3:.0f} | {overall.p95 * 1e3:.0f} | {overall.p99 * 1e3:.0f} |")
    return overall, rows


def error_codes(ledger: Ledger) -> str:
    counts = Counter(r.code.name for r in ledger.results if r.code is not grpc.StatusCode.OK)
    return ", ".join(f"{k}×{v}" for k, v in counts.most_common()) or "none"


def lost_acknowledged(stub: pb_grpc.FaceIdStub, ledger: Ledger, metadata: tuple) -> int:
    lost = 0
    for person, face_ids in ledger.acked.items():
        stored = {f.id for f in stub.GetIdentity(pb.GetIdentityRequest(name=person), timeout=60, metadata=metadata).faces}
        lost += len(face_ids - stored)
    return lost


def _verdict(ok: bool, text: str) -> str:
    return f"- {'PASS' if ok else 'FAIL'} {text}"


def target_verdicts(clients: int, idle: Summary, single: Summary, loaded: Summary, open_run: Summary) -> list[str]:
    """The issue's targets, each a line starting "- PASS" or "- FAIL"."""
    scale = loaded.throughput / max(single.throughput, 1e-9)
    spread = loaded.p99 / loaded.p50 if loaded.p50 > 0 else float("inf")
    open_ratio = open_run.p99 / idle.p50 if idle.p50 > 0 else float("inf")
    return [
        _verdict(loaded.errors == 0, f"closed ×{clients}: {loaded.errors} errors of {loaded.requests} (target 0)"),
        _verdict(scale >= 1.5, f"closed ×{clients} throughput {loaded.throughput:.2f}/s = {scale:.2f} × the single-client "
                 f"mix {single.throughput:.2f}/s (target ≥ 1.5)"),
        _verdict(spread <= 3.0, f"closed ×{clients} p99 {loaded.p99 * 1e3:.0f} ms = {spread:.2f} × p50 "
                 f"{loaded.p50 * 1e3:.0f} ms (target ≤ 3)"),
        _verdict(open_run.errors == 0 and open_ratio <= 3.0,
                 f"open loop {open_run.requests / max(open_run.seconds, 1e-9):.2f}/s (60 % of peak): p99 "
                 f"{open_run.p99 * 1e3:.0f} ms = {open_ratio:.2f} × idle single-client Identify p50 "
                 f"{idle.p50 * 1e3:.0f} ms, {open_run.errors} errors (target ≤ 3, 0 errors)"),
    ]


def server_cpu_s(pid: int | list[int] | None) -> float | None:
    """CPU seconds (user + system, all threads) the spawned server(s) have used; None when unknown.

    Unlike wall-clock throughput, CPU per request does not depend on what else the machine runs, so it shows
    what batching saves even on a busy machine.
    """
    if pid is None:
        return None
    total = 0.0
    for one in [pid] if isinstance(pid, int) else pid:
        try:
            fields = Path(f"/proc/{one}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            return None
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime
    return total


def cpu_per_request(before: float | None, after: float | None, summary: Summary) -> str:
    ok = summary.requests - summary.errors
    if before is None or after is None or ok == 0:
        return "-"
    return f"{(after - before) / ok * 1e3:.0f}"


def machine_note(before: tuple[float, float, float], after: tuple[float, float, float]) -> list[str]:
    """The machine's load around the run; a warning when other work competed for the cores."""
    cores = os.cpu_count() or 1
    lines = [f"machine: {cores} CPUs, load average (1 min) {before[0]:.1f} before, {after[0]:.1f} after"]
    # Before the run nothing of ours was running: a load near a core's worth means someone else was.
    if before[0] > 0.5 * cores:
        lines.append("**warning: the machine was busy with other work before the run; these figures are not "
                     "the service's own (measure again on an idle machine)**")
    return lines


# --------------------------------------------------------------------------------------- the server
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def spawn_server(folder: Path, name: str = "server", torch_threads: int = 0,
                 database: str | None = None, slots: int = 0) -> tuple[subprocess.Popen[bytes], str]:
    """A faceid-server on a free loopback port; every server spawned in `folder` shares its gallery load.db
    (or `database`, a URL). torch_threads, slots: the server's accelerator sizing (0 = its own choice: one
    1-thread slot per usable core; several servers split the cores instead of oversubscribing them)."""
    port = _free_port()
    script = Path(sys.executable).with_name("faceid-server")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "faceid.server.cli"]
    env = {**os.environ, "FACEID_MODEL_DIR": str(SHARED / "models"), "FACEID_STYLE__ENABLED": "false",
           "FACEID_SCHEDULER__TORCH_THREADS": str(torch_threads), "FACEID_SCHEDULER__SLOTS": str(slots)}
    log = (folder / f"{name}.log").open("wb")
    process = subprocess.Popen(
        [*command, "--listen", f"127.0.0.1:{port}", "--database", database or f"sqlite:///{folder / 'load.db'}",
         "--no-fetch"],
        stdout=log, stderr=subprocess.STDOUT, env=env,
    )
    return process, f"127.0.0.1:{port}"


def wait_serving(channel: grpc.Channel, timeout: float = 600) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if health.Check(health_pb2.HealthCheckRequest(), timeout=2).status == health_pb2.HealthCheckResponse.SERVING:
                return
        except grpc.RpcError:
            pass
        time.sleep(0.5)
    raise SystemExit("the server did not become SERVING in time")


def setup_gallery(stub: pb_grpc.FaceIdStub, photos: Photos, metadata: tuple) -> None:
    for person, images in photos.enrolled.items():
        stub.Enroll(pb.EnrollRequest(identity=person, images=images), timeout=300, metadata=metadata)


# -------------------------------------------------------------------------------------------- main
def parse_mix(text: str) -> dict[str, float]:
    mix = {}
    for part in text.split(","):
        op, _, weight = part.partition("=")
        if op not in ("identify", "verify", "enroll"):
            raise SystemExit(f"unknown operation {op!r} in --mix (identify, verify, enroll)")
        mix[op] = float(weight or 1)
    return mix


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=["closed", "open", "suite"])
    parser.add_argument("--server", help="HOST:PORT of a running server on loopback (default: spawn one)")
    parser.add_argument("--servers", help="HOST:PORT,HOST:PORT,... running servers sharing one gallery; calls go round-robin")
    parser.add_argument("--spawn", type=int, default=1, help="servers to spawn on one SQLite gallery (default 1)")
    parser.add_argument("--database", help="spawned servers' gallery, an EMPTY database URL (default: a temporary "
                        "SQLite file)")
    parser.add_argument("--postgres", action="store_true",
                        help="spawned servers share a throwaway PostgreSQL started for the run (tests/postgres_server.py)")
    parser.add_argument("--torch-threads", type=int, default=None,
                        help="spawned servers' CPU inference threads per slot (default: the server's choice)")
    parser.add_argument("--accelerator-slots", type=int, default=None,
                        help="spawned servers' accelerator slots (default: one server: its choice, one per core; "
                        "several: the cores split between them)")
    parser.add_argument("--api-key", default=os.environ.get("FACEID_API_KEY"), help="sent as x-api-key")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--rate", type=float, default=5.0, help="open loop: requests per second")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per run (bounded)")
    parser.add_argument("--max-requests", type=int, default=20000, help="per run (bounded)")
    parser.add_argument("--max-inflight", type=int, default=256, help="open loop: waiting requests before dropping")
    parser.add_argument("--mix", default="identify=7,verify=2,enroll=1")
    parser.add_argument("--timeout", type=float, default=60.0, help="deadline per request, s")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--target-check", action="store_true",
                        help="suite: exit 3 when a target FAILs (the PASS/FAIL summary is printed either way)")
    args = parser.parse_args(argv)
    if args.duration <= 0 or args.duration > 600 or args.max_requests < 1:
        raise SystemExit("--duration must be in (0, 600] s and --max-requests ≥ 1")

    metadata = (("x-api-key", args.api_key),) if args.api_key else ()
    load_before = os.getloadavg()
    photos = Photos.load()
    workdir = Path(tempfile.mkdtemp(prefix="faceid-load-"))
    processes: list[subprocess.Popen[bytes]] = []
    postgres = None
    if args.server or args.servers:
        addresses = parse_servers(",".join(a for a in (args.server, args.servers) if a))
    else:
        if not 1 <= args.spawn <= 8:
            raise SystemExit("--spawn must be 1..8")
        threads = args.torch_threads if args.torch_threads is not None else 0
        slots = args.accelerator_slots if args.accelerator_slots is not None else (
            0 if args.spawn == 1 else max(1, (os.cpu_count() or 1) // args.spawn))
        database = args.database
        if args.postgres:
            sys.path.insert(0, str(REPO / "tests"))
            from postgres_server import PostgresServer

            postgres = PostgresServer()  # note: the throwaway cluster runs with fsync=off
            postgres.start()
            database = postgres.create_database("load")
        spawned = [spawn_server(workdir, f"server{i}", threads, database, slots) for i in range(args.spawn)]
        processes = [p for p, _ in spawned]
        addresses = [a for _, a in spawned]
    address = ",".join(addresses)
    channel = balanced_channel(addresses)  # one server: a plain channel; several: round-robin per call
    stub = pb_grpc.FaceIdStub(channel)
    try:
        for one in addresses:
            with grpc.insecure_channel(one) as probe:
                wait_serving(probe)
        setup_gallery(stub, photos, metadata)
        stub.Identify(pb.IdentifyRequest(image=photos.queries[0][1]), timeout=120, metadata=metadata)  # warm-up
        gallery = "given servers' gallery" if args.server or args.servers else (
            "throwaway PostgreSQL" if args.postgres else ("--database" if args.database else "temporary SQLite"))
        lines = [f"load on {address} ({gallery}) — {os.cpu_count()} CPUs, mix {args.mix}, duration ≤ {args.duration:g} s, "
                 f"≤ {args.max_requests} requests per run", "",
                 "| run | op | requests | errors | ok/s | p50 ms | p95 ms | p99 ms |", "|---|---|---|---|---|---|---|---|"]
        ledgers: list[Ledger] = []

        server_pid = [p.pid for p in processes] or None

        def run_closed(label: str, clients: int, mix: dict[str, float]) -> Summary:
            cpu0 = server_cpu_s(server_pid)
            ledger, seconds = closed_loop(Workload(stub, photos, mix, metadata, args.seed), clients, args.duration,
                                          args.max_requests, args.timeout)
            ledgers.append(ledger)
            summary, rows = summarise(label, ledger, seconds)
            lines.extend(rows)
            per_client = Counter(r.client for r in ledger.results if r.code is grpc.StatusCode.OK)
            served.append((label, clients, min(per_client.values(), default=0), max(per_client.values(), default=0),
                           error_codes(ledger), cpu_per_request(cpu0, server_cpu_s(server_pid), summary)))
            return summary

        def run_open(label: str, rate: float, mix: dict[str, float]) -> Summary:
            cpu0 = server_cpu_s(server_pid)
            ledger, seconds = open_loop(Workload(stub, photos, mix, metadata, args.seed), rate, args.duration,
                                        args.max_requests, args.timeout, args.max_inflight)
            ledgers.append(ledger)
            summary, rows = summarise(label, ledger, seconds)
            lines.extend(rows)
            served.append((label, 0, 0, 0, error_codes(ledger), cpu_per_request(cpu0, server_cpu_s(server_pid), summary)))
            return summary

        served: list[tuple[str, int, int, int, str, str]] = []
        mix = parse_mix(args.mix)
        verdicts: list[str] = []
        if args.mode == "closed":
            run_closed(f"closed ×{args.clients}", args.clients, mix)
        elif args.mode == "open":
            run_open(f"open {args.rate:g}/s", args.rate, mix)
        else:
            idle = run_closed("idle ×1 identify", 1, {"identify": 1})
            single = run_closed("closed ×1 mix", 1, mix)
            loaded = run_closed(f"closed ×{args.clients} mix", args.clients, mix)
            rate = 0.6 * loaded.throughput
            open_run = run_open(f"open {rate:.2f}/s identify", rate, {"identify": 1})
            verdicts = target_verdicts(args.clients, idle, single, loaded, open_run)
        lost = sum(lost_acknowledged(stub, ledger, metadata) for ledger in ledgers)
        acked = sum(len(v) for ledger in ledgers for v in ledger.acked.values())
        if len(addresses) > 1:  # several servers: every one must list every acknowledged face, indexes agree
            everyone: dict[str, set[int]] = {}
            for ledger in ledgers:
                for person, ids in ledger.acked.items():
                    everyone.setdefault(person, set()).update(ids)
            lost += lost_on_each(addresses, everyone, metadata)
            lines += settled_indexes(addresses, metadata)
        lines += ["", "| run | clients | min ok per client | max ok per client | errors | server CPU ms per ok request |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {label} | {c or '-'} | {lo or '-'} | {hi or '-'} | {err} | {cpu} |" for label, c, lo, hi, err, cpu in served]
        lines += ["", f"acknowledged enrolment faces: {acked}; acknowledged lost: {lost}"]
        lines += machine_note(load_before, os.getloadavg())
        if verdicts:
            failed = [v for v in verdicts if v.startswith("- FAIL")]
            lines += ["", "targets:", *verdicts, f"**targets: {'FAIL' if failed else 'PASS'}** "
                      f"({len(verdicts) - len(failed)}/{len(verdicts)} met)"]
        print("\n".join(lines))
        if lost:
            return 1
        return 3 if args.target_check and any(v.startswith("- FAIL") for v in verdicts) else 0
    finally:
        channel.close()
        for process in processes:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
        shutil.rmtree(workdir, ignore_errors=True)
        if postgres is not None:
            postgres.close()


if __name__ == "__main__":
    sys.exit(main())
