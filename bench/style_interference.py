"""Does a running style job slow identification down? Identify p99 with and without a Stylize job, same run.

    uv run python bench/style_interference.py --start            # starts a real server here (tmp SQLite, ../shared)
    uv run python bench/style_interference.py --server HOST:PORT  # an already running faceid-server with style on

Over the gRPC API only (FaceId.Identify, StyleTransfer.Stylize):
1. enrol a few people from shared/data/faces (Enroll), so Identify has a gallery;
2. alternate phases, `--rounds` times: BASELINE (only Identify, closed loop, one call at a time) and STYLE (the same
   Identify loop while one `optimize` Stylize job runs: started and past its first step before the phase begins,
   cancelled at its end);
3. report p50/p95/p99 latency of each condition, the ratio p99(style)/p99(baseline) (target <= 1.5) and how
   many style steps were made during the STYLE phases (to show the style job really ran alongside).
Alternating phases spreads slow drifts of a shared machine over both conditions.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from faceid.v1 import faceid_pb2 as fpb
from faceid.v1 import faceid_pb2_grpc as fpb_grpc
from faceid.v1 import style_pb2 as spb
from faceid.v1 import style_pb2_grpc as spb_grpc

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FACEID_SHARED_DIR", REPO.parent / "shared"))
FACES = SHARED / "data" / "faces"
STYLE_DATA = SHARED / "data" / "style"
PEOPLE = ("barack_obama", "joe_biden", "naomi_watts", "serena_williams")


@dataclass
class StyleRun:
    """A Stylize call in a background thread, counting its progress events."""

    call: Any  # the Stylize call: an iterator of events and a grpc.Call (cancel)
    steps: list[int] = field(default_factory=list)
    started: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def follow(self) -> None:
        try:
            for event in self.call:
                if event.WhichOneof("event") == "progress":
                    self.steps.append(event.progress.step)
                    self.started.set()
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.CANCELLED:
                print(f"style job ended with {exc.code().name}: {exc.details()}", file=sys.stderr)
        finally:
            self.started.set()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def summary(latencies: list[float]) -> dict[str, float]:
    return {
        "n": len(latencies),
        "p50_ms": 1000 * statistics.median(latencies),
        "p95_ms": 1000 * percentile(latencies, 0.95),
        "p99_ms": 1000 * percentile(latencies, 0.99),
        "max_ms": 1000 * max(latencies),
    }


def enrol(stub: fpb_grpc.FaceIdStub) -> None:
    for person in PEOPLE:
        photos = sorted((FACES / person).glob("*.jpg"))[:2]
        stub.Enroll(fpb.EnrollRequest(identity=person, images=[p.read_bytes() for p in photos]), timeout=300)


def identify_loop(stub: fpb_grpc.FaceIdStub, probe: bytes, n: int) -> list[float]:
    latencies = []
    for _ in range(n):
        start = time.perf_counter()
        stub.Identify(fpb.IdentifyRequest(image=probe), timeout=120)
        latencies.append(time.perf_counter() - start)
    return latencies


def start_style(stub: spb_grpc.StyleTransferStub, args: argparse.Namespace) -> StyleRun:
    request = spb.StylizeRequest(
        content=(STYLE_DATA / "content" / "tubingen.jpg").read_bytes(),
        styles=[spb.StyleImage(image=(STYLE_DATA / "paintings" / "the_starry_night.jpg").read_bytes())],
        method=spb.STYLE_METHOD_OPTIMIZE,
        size=args.style_size,
        steps=args.style_steps,
    )
    run = StyleRun(call=stub.Stylize(request, timeout=3600))
    run.thread = threading.Thread(target=run.follow, name="stylize-follower", daemon=True)
    run.thread.start()
    if not run.started.wait(600):
        raise RuntimeError("the style job made no step within 600 s")
    return run


@contextmanager
def server_address(args: argparse.Namespace) -> Iterator[str]:
    if args.server:
        yield args.server
        return
    from faceid.server import Settings, create_server

    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            listen="127.0.0.1:0",
            database=f"sqlite:///{Path(tmp) / 'bench.db'}",
            model_dir=SHARED / "models",
            allow_model_fetch=False,
            style={"enabled": True, "max_steps": max(300, args.style_steps)},
        )
        running = create_server(settings)
        try:
            running.wait_ready(600)
            yield running.address
        finally:
            running.stop(2.0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server", default="", help="HOST:PORT of a running server (else use --start)")
    parser.add_argument("--start", action="store_true", help="start a server in this process")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--n", type=int, default=60, help="Identify calls per phase")
    parser.add_argument("--style-size", type=int, default=256)
    parser.add_argument("--style-steps", type=int, default=300)
    parser.add_argument("--json", default="")
    args = parser.parse_args()
    if not args.server and not args.start:
        parser.error("give --server HOST:PORT or --start")

    probe = sorted((FACES / "barack_obama").glob("*.jpg"))[-1].read_bytes()  # not enrolled: a real query
    with server_address(args) as address:
        channel = grpc.insecure_channel(address, options=[("grpc.max_receive_message_length", 32 << 20)])
        face, style = fpb_grpc.FaceIdStub(channel), spb_grpc.StyleTransferStub(channel)
        enrol(face)
        identify_loop(face, probe, 5)  # warm-up
        baseline: list[float] = []
        loaded: list[float] = []
        style_steps = 0
        style_seconds = 0.0
        for r in range(args.rounds):
            baseline += identify_loop(face, probe, args.n)
            run = start_style(style, args)
            before = len(run.steps)
            start = time.perf_counter()
            loaded += identify_loop(face, probe, args.n)
            style_seconds += time.perf_counter() - start
            style_steps += len(run.steps) - before
            run.call.cancel()
            assert run.thread is not None
            run.thread.join(60)
            print(f"round {r + 1}: baseline p99 {1000 * percentile(baseline, 0.99):.0f} ms, "
                  f"with style p99 {1000 * percentile(loaded, 0.99):.0f} ms", flush=True)
        channel.close()

    result = {
        "baseline": summary(baseline),
        "with_style": summary(loaded),
        "p99_ratio": percentile(loaded, 0.99) / percentile(baseline, 0.99),
        "style_steps_during_identify": style_steps,
        "style_steps_per_s_during_identify": style_steps / style_seconds if style_seconds else 0.0,
        "style_size": args.style_size,
        "load_average": os.getloadavg(),
    }
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0 if result["p99_ratio"] <= 1.5 else 1


if __name__ == "__main__":
    sys.exit(main())
