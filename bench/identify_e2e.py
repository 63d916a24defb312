"""End-to-end Identify RPC latency on a real photo: p50 / p99 over N calls, split into stages.

    uv run python bench/identify_e2e.py                      # in-process server, temp gallery, 200 calls
    uv run python bench/identify_e2e.py --calls 50 --json    # machine-readable
    uv run python bench/identify_e2e.py --server HOST:PORT   # an already running server (gallery as is)

Without --server it starts a real server on 127.0.0.1:0 with a temporary SQLite gallery and enrols the
people of shared/data/faces (two photos each). Each call goes through gRPC (serialisation, HTTP/2 on
loopback, the interceptors) exactly as a client's would. The server reports its stage times in the
`faceid-timing-ms` trailing metadata (decode, detect, embed, search); `overhead` is the client-measured
wall time minus their sum: gRPC, protobuf, conversion, scheduler wait and the rest of the engine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import grpc
from faceid.v1 import faceid_pb2 as pb
from faceid.v1 import faceid_pb2_grpc as pb_grpc

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FACEID_SHARED_DIR", REPO.parent / "shared"))
FACES = SHARED / "data" / "faces"
TIMING_KEY = "faceid-timing-ms"


@dataclass
class StageStats:
    stage: str
    p50_ms: float
    p99_ms: float
    mean_ms: float


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in [0, 100]) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def parse_timings(trailers: tuple[tuple[str, str], ...] | None) -> dict[str, float]:
    for key, value in trailers or ():
        if key == TIMING_KEY:
            return {stage: float(ms) for stage, ms in (part.split("=") for part in value.split(","))}
    return {}


def enrol_gallery(faceid: pb_grpc.FaceIdStub) -> int:
    people = sorted(p for p in FACES.iterdir() if p.is_dir())
    for person in people:
        photos = [p.read_bytes() for p in sorted(person.glob("*.jpg"))[:2]]
        faceid.Enroll(pb.EnrollRequest(identity=person.name, images=photos), timeout=300)
    return len(people)


def run(faceid: pb_grpc.FaceIdStub, image: bytes, calls: int, warmup: int) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {"total": []}
    for i in range(warmup + calls):
        start = time.perf_counter()
        _, call = faceid.Identify.with_call(pb.IdentifyRequest(image=image), timeout=60)
        total_ms = (time.perf_counter() - start) * 1e3
        if i < warmup:
            continue
        stages = parse_timings(call.trailing_metadata())
        samples["total"].append(total_ms)
        for stage, ms in stages.items():
            samples.setdefault(stage, []).append(ms)
        samples.setdefault("overhead", []).append(total_ms - sum(stages.values()))
    return samples


def summarise(samples: dict[str, list[float]]) -> list[StageStats]:
    order = ["decode", "detect", "embed", "search", "overhead", "total"]
    names = [s for s in order if s in samples] + [s for s in samples if s not in order]
    return [
        StageStats(s, percentile(samples[s], 50), percentile(samples[s], 99), statistics.fmean(samples[s]))
        for s in names
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server", help="HOST:PORT of a running server (default: start one in-process)")
    parser.add_argument("--image", type=Path, default=FACES / "barack_obama" / "03.jpg")
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--device", default="auto", help="in-process server only: auto, cpu, cuda")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    running = None
    if args.server is None:
        from faceid.server import Settings, create_server

        tmp = tempfile.mkdtemp(prefix="faceid-bench-")
        settings = Settings(
            listen="127.0.0.1:0", database=f"sqlite:///{tmp}/bench.db", device=args.device,
            model_dir=os.environ.get("FACEID_MODEL_DIR") or SHARED / "models", style={"enabled": False},
        )
        running = create_server(settings)
        running.wait_ready(600)
        address = running.address
    else:
        address = args.server
    channel = grpc.insecure_channel(address, options=[("grpc.max_receive_message_length", 64 << 20)])
    faceid = pb_grpc.FaceIdStub(channel)
    try:
        people = enrol_gallery(faceid) if running is not None else None
        stats = faceid.GetStats(pb.GetStatsRequest(), timeout=30)
        samples = run(faceid, args.image.read_bytes(), args.calls, args.warmup)
    finally:
        channel.close()
        if running is not None:
            running.stop(1)

    table = summarise(samples)
    report = {
        "image": args.image.name,
        "calls": args.calls,
        "gallery_faces": stats.faces,
        "people_enrolled": people,
        "device": stats.device,
        "model": stats.model.id,
        "machine": f"{platform.machine()}, {os.cpu_count()} cpus, python {platform.python_version()}",
        "stages": [asdict(s) for s in table],
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"Identify RPC end to end: {args.calls} calls on {args.image.name}, gallery {stats.faces} faces, "
          f"device {stats.device}, model {stats.model.id}")
    print(f"{'stage':<10}{'p50 ms':>10}{'p99 ms':>10}{'mean ms':>10}")
    for s in table:
        print(f"{s.stage:<10}{s.p50_ms:>10.2f}{s.p99_ms:>10.2f}{s.mean_ms:>10.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
