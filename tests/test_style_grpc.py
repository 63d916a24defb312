"""StyleTransfer over a real gRPC server on 127.0.0.1:0 (only the style servicer, the server's error mapping and
its accelerator scheduler): streaming, previews, cancellation, deadlines, queue full, bad requests, missing weights.
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import typer
from conftest import MODELS_DIR, STYLE_DIR
from PIL import Image
from typer.testing import CliRunner

from faceid.client.stylize_cmd import stylize

from faceid.server.scheduler import AcceleratorScheduler, Priority
from faceid.server.status import RETRY_AFTER_KEY, ErrorMappingInterceptor
from faceid.server.style.engine import StyleEngine, StyleLimits
from faceid.server.style.jobs import JobQueue
from faceid.server.style.servicer import StyleTransferServicer
from faceid.v1 import style_pb2 as pb
from faceid.v1 import style_pb2_grpc as pb_grpc

CAT = (STYLE_DIR / "content" / "chelsea_cat.jpg").read_bytes()  # 451x300
WAVE = (STYLE_DIR / "paintings" / "the_great_wave_off_kanagawa.jpg").read_bytes()
SCREAM = (STYLE_DIR / "paintings" / "the_scream.jpg").read_bytes()
MAX_PIXELS = 128 * 128
MAX_STEPS = 60


@dataclass
class StyleServer:
    stub: pb_grpc.StyleTransferStub
    engine: StyleEngine
    scheduler: AcceleratorScheduler
    address: str


def _serve(engine: StyleEngine) -> tuple[grpc.Server, str]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8), interceptors=[ErrorMappingInterceptor()])
    pb_grpc.add_StyleTransferServicer_to_server(StyleTransferServicer(engine), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, f"127.0.0.1:{port}"


@pytest.fixture(scope="module")
def style_server() -> Iterator[StyleServer]:
    scheduler = AcceleratorScheduler()
    engine = StyleEngine(
        MODELS_DIR,
        limits=StyleLimits(max_pixels=MAX_PIXELS, max_steps=MAX_STEPS),
        queue=JobQueue(max_queued=1, concurrency=1),
        scheduler=scheduler,
    )
    server, address = _serve(engine)
    channel = grpc.insecure_channel(address)
    try:
        yield StyleServer(pb_grpc.StyleTransferStub(channel), engine, scheduler, address)
    finally:
        channel.close()
        engine.close()
        server.stop(0)


def _request(**fields: object) -> pb.StylizeRequest:
    values: dict[str, object] = {"content": CAT, "styles": [pb.StyleImage(image=WAVE)], "size": 48, "steps": 3}
    values.update(fields)
    return pb.StylizeRequest(**values)  # type: ignore[arg-type]


def _wait_idle(engine: StyleEngine, timeout: float = 60.0) -> float:
    """Seconds until no style job runs or waits (fails after `timeout`)."""
    start = time.monotonic()
    while engine.queue.running or engine.queue.waiting:
        assert time.monotonic() - start < timeout, "the style job kept running after it was cancelled"
        time.sleep(0.05)
    return time.monotonic() - start


def _png_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as img:
        assert img.format == "PNG"
        return img.size


def _first(events: Iterator[pb.StylizeEvent], kind: str) -> pb.StylizeEvent:
    for event in events:
        if event.WhichOneof("event") == kind:
            return event
    raise AssertionError(f"the stream ended without a {kind} event")


# --------------------------------------------------------------------------------------------- streaming
@pytest.mark.slow
def test_streams_progress_then_the_image(style_server: StyleServer) -> None:
    events = list(style_server.stub.Stylize(_request(preview_every=2, preview_size=32), timeout=300))
    kinds = [e.WhichOneof("event") for e in events]
    assert kinds == ["queued", "started", "progress", "progress", "progress", "result"]
    assert events[0].queued.ahead == 0
    progress = [e.progress for e in events[2:5]]
    assert [p.step for p in progress] == [1, 2, 3] and {p.total for p in progress} == {3}
    assert progress[-1].losses.style < progress[0].losses.style
    assert [bool(p.preview_png) for p in progress] == [False, True, True]  # every 2 steps and the last
    assert max(_png_size(progress[1].preview_png)) == 32
    result = events[-1].result
    assert (result.width, result.height) == (48, 32)  # the cat's 451x300 aspect at long side 48
    assert _png_size(result.png) == (48, 32)
    assert result.method == pb.STYLE_METHOD_OPTIMIZE and result.steps == 3
    assert result.losses.style == pytest.approx(progress[-1].losses.style)


@pytest.mark.slow
def test_fast_method_over_grpc(style_server: StyleServer) -> None:
    request = _request(
        method=pb.STYLE_METHOD_FAST,
        size=90,
        styles=[pb.StyleImage(image=WAVE, weight=2.0), pb.StyleImage(image=SCREAM)],
        style_strength=0.8,
        preserve_color=True,
    )
    events = list(style_server.stub.Stylize(request, timeout=300))
    result = events[-1].result
    assert (result.width, result.height) == (90, 60)
    assert _png_size(result.png) == (90, 60)
    assert result.method == pb.STYLE_METHOD_FAST and result.steps == 0


# ------------------------------------------------------------------------------ cancellation, deadlines
@pytest.mark.slow
def test_client_cancel_stops_the_work(style_server: StyleServer) -> None:
    call = style_server.stub.Stylize(_request(size=64, steps=MAX_STEPS), timeout=600)
    first = _first(call, "progress")
    assert first.progress.step == 1
    call.cancel()
    # The job stops at its next step or network layer, long before its 60 steps.
    assert _wait_idle(style_server.engine) < 30.0
    with pytest.raises(grpc.RpcError) as info:
        list(call)
    assert info.value.code() == grpc.StatusCode.CANCELLED


@pytest.mark.slow
def test_deadline_stops_the_work(style_server: StyleServer) -> None:
    with pytest.raises(grpc.RpcError) as info:
        list(style_server.stub.Stylize(_request(size=64, steps=MAX_STEPS), timeout=3.0))
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert _wait_idle(style_server.engine) < 30.0


@pytest.mark.slow
def test_queue_full_is_resource_exhausted_with_a_retry_hint(style_server: StyleServer) -> None:
    running = style_server.stub.Stylize(_request(size=64, steps=MAX_STEPS), timeout=600)
    _first(running, "started")
    waiting = style_server.stub.Stylize(_request(size=64, steps=MAX_STEPS), timeout=600)
    assert _first(waiting, "queued").queued.ahead == 1
    try:
        with pytest.raises(grpc.RpcError) as info:
            list(style_server.stub.Stylize(_request(), timeout=60))
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "queue is full" in info.value.details()
        hint = dict(info.value.trailing_metadata() or ())[RETRY_AFTER_KEY]
        assert float(hint) >= 1.0
    finally:
        waiting.cancel()
        running.cancel()
    _wait_idle(style_server.engine)


@pytest.mark.slow
def test_interactive_work_gets_the_accelerator_while_a_style_job_runs(style_server: StyleServer) -> None:
    call = style_server.stub.Stylize(_request(size=96, steps=MAX_STEPS), timeout=600)
    try:
        _first(call, "progress")
        yields_before = style_server.scheduler.stats().yields
        start = time.monotonic()
        ran_at = style_server.scheduler.run(time.monotonic, priority=Priority.INTERACTIVE)
        waited = ran_at - start
        # The style job gave the accelerator away between two layers, mid-job.
        assert style_server.scheduler.stats().yields > yields_before
        assert style_server.engine.queue.running == 1
        assert waited < 5.0, f"identification waited {waited:.2f} s for the style job"
    finally:
        call.cancel()
    _wait_idle(style_server.engine)


# ---------------------------------------------------------------------------------------- bad requests
@pytest.mark.parametrize(
    ("fields", "needle"),
    [
        ({"size": 4096}, "maximum"),
        ({"steps": MAX_STEPS + 1}, "steps"),
        ({"content": b""}, "content image is empty"),
        ({"content": b"not an image"}, "content image could not be decoded"),
        ({"styles": []}, "style image"),
        ({"styles": [pb.StyleImage(image=WAVE)] * 5}, "at most 4"),
        ({"style_layer_weights": {"relu9_9": 1.0}}, "relu9_9"),
        ({"style_weight": -1.0}, "style_weight"),
        ({"method": pb.STYLE_METHOD_FAST, "style_strength": 2.0}, "strength"),
    ],
)
def test_bad_requests_are_invalid_argument(style_server: StyleServer, fields: dict[str, object], needle: str) -> None:
    with pytest.raises(grpc.RpcError) as info:
        list(style_server.stub.Stylize(_request(**fields), timeout=60))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert needle in info.value.details()
    assert style_server.engine.queue.waiting == 0


def test_missing_weights_are_failed_precondition_naming_the_file(tmp_path: Path) -> None:
    engine = StyleEngine(tmp_path, queue=JobQueue(max_queued=1, concurrency=1))
    server, address = _serve(engine)
    channel = grpc.insecure_channel(address)
    try:
        stub = pb_grpc.StyleTransferStub(channel)
        for method, filename in (
            (pb.STYLE_METHOD_OPTIMIZE, "model-00001-of-00002.safetensors"),
            (pb.STYLE_METHOD_FAST, "arbitrary_predict_float32.onnx"),
        ):
            with pytest.raises(grpc.RpcError) as info:
                list(stub.Stylize(_request(method=method), timeout=60))
            assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert filename in info.value.details()
    finally:
        channel.close()
        engine.close()
        server.stop(0)


# ------------------------------------------------------------------------------------------------- CLI
def _cli() -> typer.Typer:
    app = typer.Typer()
    app.callback()(lambda: None)  # keep `stylize` a subcommand, as on the real `faceid` app
    app.command("stylize")(stylize)
    return app


@pytest.mark.slow
def test_cli_writes_the_png(style_server: StyleServer, tmp_path: Path) -> None:
    out = tmp_path / "out.png"
    content, style = STYLE_DIR / "content" / "chelsea_cat.jpg", STYLE_DIR / "paintings" / "the_scream.jpg"
    args = ["stylize", str(content), str(style), "-o", str(out), "--server", style_server.address]
    result = CliRunner().invoke(_cli(), [*args, "--method", "fast", "--size", "64", "--preserve-color"])
    assert result.exit_code == 0, result.output
    assert _png_size(out.read_bytes()) == (64, 43)
    bad = CliRunner().invoke(_cli(), [*args, "--size", "4000"])
    assert bad.exit_code == 2 and "INVALID_ARGUMENT" in bad.output
