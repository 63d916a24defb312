"""Server wiring without a model: the status table, the interceptor chain on a real gRPC server,
settings validation and the `faceid-server` flag handling. (The servicers with the real engine are
covered by test_server_e2e.py and test_bad_input.py.)"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest
from faceid.indexer import errors
from faceid.server.cli import app as server_cli
from faceid.server.config import Settings
from faceid.server.lifecycle import EngineSlot
from faceid.server.metrics import MetricsInterceptor, RpcMetrics
from faceid.server.status import INTERNAL_MESSAGE, RETRY_AFTER_KEY, ErrorMappingInterceptor, status_for
from prometheus_client import CollectorRegistry
from typer.testing import CliRunner

C = grpc.StatusCode

# ------------------------------------------------------------------------------------ status table


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (errors.InvalidRequest("x"), C.INVALID_ARGUMENT),
        (errors.InvalidImage("x"), C.INVALID_ARGUMENT),
        (errors.ImageTooLarge("x"), C.INVALID_ARGUMENT),
        (errors.NoFaceFound("x"), C.INVALID_ARGUMENT),
        (errors.FaceTooSmall("x"), C.INVALID_ARGUMENT),
        (errors.MultipleFaces("x"), C.INVALID_ARGUMENT),
        (errors.UnknownIdentity("x"), C.NOT_FOUND),
        (errors.UnknownFace("x"), C.NOT_FOUND),
        (errors.UnknownModel("x"), C.NOT_FOUND),
        (errors.AlreadyExists("x"), C.ALREADY_EXISTS),
        (errors.EmptyGallery("x"), C.FAILED_PRECONDITION),
        (errors.ModelMissing("x"), C.FAILED_PRECONDITION),
        (errors.ChecksumMismatch("x"), C.FAILED_PRECONDITION),
        (errors.IndexInconsistent("x"), C.FAILED_PRECONDITION),
        (errors.QueueFull("x"), C.RESOURCE_EXHAUSTED),
        (errors.Unavailable("x"), C.UNAVAILABLE),
        (errors.Cancelled("x"), C.CANCELLED),
        (errors.DeadlineExceeded("x"), C.DEADLINE_EXCEEDED),
        (errors.FaceIdError("x"), C.INTERNAL),  # the bare base is not a documented client mistake
        (RuntimeError("x"), C.INTERNAL),
        (KeyError("x"), C.INTERNAL),
    ],
)
def test_status_table(exc: BaseException, code: grpc.StatusCode) -> None:
    assert status_for(exc) is code


def test_every_engine_error_class_has_a_status() -> None:
    """A new class in errors.py must belong to a family of the table (or the server calls it INTERNAL)."""
    classes = [c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, errors.FaceIdError)]
    unmapped = [c.__name__ for c in classes if c is not errors.FaceIdError and status_for(c("m")) is C.INTERNAL]
    assert unmapped == []


# ------------------------------------------------------------- interceptors on a real gRPC server

SERVICE = "faceid.test.Probe"


def _raise(exc: BaseException):
    def behaviour(request: bytes, context: grpc.ServicerContext) -> bytes:
        raise exc

    return behaviour


def _stream_then_raise(request_iterator: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
    for request in request_iterator:
        if request == b"bad":
            raise errors.UnknownIdentity("no identity named 'bad'")
        yield b"ok:" + request


def _aborts(request: bytes, context: grpc.ServicerContext) -> bytes:
    context.abort(C.PERMISSION_DENIED, "needs the admin scope")
    return b""


def _echo(request: bytes, context: grpc.ServicerContext) -> bytes:
    return request


@pytest.fixture(scope="module")
def probe() -> Iterator[tuple[grpc.Channel, RpcMetrics, CollectorRegistry]]:
    """A real server with the production interceptor chain around behaviours that fail in known ways."""
    registry = CollectorRegistry()
    metrics = RpcMetrics.create(registry)
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=4),
        interceptors=[MetricsInterceptor(metrics), ErrorMappingInterceptor()],
    )
    handlers = {
        "Crash": grpc.unary_unary_rpc_method_handler(_raise(RuntimeError("disk at /secret/path exploded"))),
        "Busy": grpc.unary_unary_rpc_method_handler(_raise(errors.QueueFull("the queue is full", retry_after_s=2.5))),
        "Missing": grpc.unary_unary_rpc_method_handler(_raise(errors.UnknownIdentity("no identity named 'x'"))),
        "Stream": grpc.stream_stream_rpc_method_handler(_stream_then_raise),
        "Aborts": grpc.unary_unary_rpc_method_handler(_aborts),
        "Echo": grpc.unary_unary_rpc_method_handler(_echo),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    yield channel, metrics, registry
    channel.close()
    server.stop(0)


def _unary(channel: grpc.Channel, method: str, payload: bytes = b"x") -> bytes:
    return channel.unary_unary(f"/{SERVICE}/{method}")(payload, timeout=10)


def test_unexpected_error_is_internal_without_details(probe, caplog: pytest.LogCaptureFixture) -> None:
    channel, _, _ = probe
    with caplog.at_level(logging.ERROR, logger="faceid.server.status"), pytest.raises(grpc.RpcError) as info:
        _unary(channel, "Crash")
    assert info.value.code() is C.INTERNAL
    assert info.value.details() == INTERNAL_MESSAGE
    assert "secret" not in info.value.details() and "Traceback" not in info.value.details()
    # ... while the server log has the whole story.
    logged = [r for r in caplog.records if r.exc_info and "Crash" in r.getMessage()]
    assert logged and "disk at /secret/path exploded" in str(logged[0].exc_info[1])


def test_queue_full_carries_a_retry_hint(probe) -> None:
    channel, _, _ = probe
    with pytest.raises(grpc.RpcError) as info:
        _unary(channel, "Busy")
    assert info.value.code() is C.RESOURCE_EXHAUSTED
    assert info.value.details() == "the queue is full"
    assert dict(info.value.trailing_metadata())[RETRY_AFTER_KEY] == "2.5"


def test_engine_error_keeps_its_message(probe) -> None:
    channel, _, _ = probe
    with pytest.raises(grpc.RpcError) as info:
        _unary(channel, "Missing")
    assert (info.value.code(), info.value.details()) == (C.NOT_FOUND, "no identity named 'x'")


def test_streaming_error_is_mapped_after_earlier_responses(probe) -> None:
    channel, _, _ = probe
    call = channel.stream_stream(f"/{SERVICE}/Stream")(iter([b"a", b"b", b"bad", b"c"]), timeout=10)
    received = []
    with pytest.raises(grpc.RpcError) as info:
        for response in call:
            received.append(response)
    assert received == [b"ok:a", b"ok:b"]
    assert info.value.code() is C.NOT_FOUND


def test_a_status_chosen_by_the_behaviour_is_kept(probe) -> None:
    channel, _, _ = probe
    with pytest.raises(grpc.RpcError) as info:
        _unary(channel, "Aborts")
    assert (info.value.code(), info.value.details()) == (C.PERMISSION_DENIED, "needs the admin scope")


def test_metrics_count_by_method_and_final_code(probe) -> None:
    channel, _, registry = probe

    def count(method: str, code: str) -> float:
        value = registry.get_sample_value(
            "faceid_rpc_requests_total", {"method": f"{SERVICE}/{method}", "code": code}
        )
        return value or 0.0

    before_ok, before_internal = count("Echo", "OK"), count("Crash", "INTERNAL")
    assert _unary(channel, "Echo", b"hi") == b"hi"
    assert _unary(channel, "Echo", b"hi") == b"hi"
    with pytest.raises(grpc.RpcError):
        _unary(channel, "Crash")
    assert count("Echo", "OK") == before_ok + 2
    assert count("Crash", "INTERNAL") == before_internal + 1
    histogram = registry.get_sample_value(
        "faceid_rpc_duration_seconds_count", {"method": f"{SERVICE}/Echo", "code": "OK"}
    )
    assert histogram is not None and histogram >= 2


# -------------------------------------------------------------------------------- engine slot


def test_slot_says_why_it_has_no_engine() -> None:
    slot = EngineSlot("facenet-20170512-128d")
    with pytest.raises(errors.Unavailable, match=r"loading the model \(facenet-20170512-128d\)"):
        slot.get()
    slot.set_failed(errors.ModelMissing("weights not found; run `faceid-server models fetch x`"))
    with pytest.raises(errors.Unavailable, match="could not load the model"):
        slot.get()
    slot.start_closing()
    with pytest.raises(errors.Unavailable, match="shutting down"):
        slot.get()


# ------------------------------------------------------------------------------------- settings


def test_settings_defaults_and_engine_config(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("FACEID_LISTEN", "FACEID_DATABASE", "FACEID_THRESHOLD", "FACEID_LIMITS__MAX_TOP_K", "FACEID_THUMBNAIL_SIZE"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings()
    assert (settings.listen, settings.database) == ("127.0.0.1:50051", "sqlite:///faceid.db")
    assert settings.workers >= 8
    config = settings.to_engine_config()
    assert config.database_url == "sqlite:///faceid.db"
    assert config.model == "facenet-20170512-128d"
    assert config.threshold is None
    assert config.max_top_k == settings.limits.max_top_k
    assert config.thumbnail_size == 96  # thumbnails for reports are on unless turned off


def test_env_and_nested_env_and_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FACEID_LISTEN", "0.0.0.0:6000")
    monkeypatch.setenv("FACEID_THRESHOLD", "1.1")
    monkeypatch.setenv("FACEID_LIMITS__MAX_TOP_K", "50")
    monkeypatch.setenv("FACEID_STYLE__ENABLED", "false")
    monkeypatch.setenv("FACEID_THUMBNAIL_SIZE", "0")
    settings = Settings(listen="127.0.0.1:7000", limits={"max_message_bytes": 64 << 20})
    assert settings.listen == "127.0.0.1:7000"  # the flag wins over the env
    assert settings.threshold == pytest.approx(1.1)
    # a flag in a nested group keeps the env values of its siblings
    assert (settings.limits.max_top_k, settings.limits.max_message_bytes) == (50, 64 << 20)
    assert settings.style.enabled is False
    assert settings.to_engine_config().max_top_k == 50
    assert settings.to_engine_config().thumbnail_size == 0


@pytest.mark.parametrize(
    ("field", "value", "needle"),
    [
        ("listen", "50051", "HOST:PORT"),
        ("listen", "localhost:99999", "port must be"),
        ("threshold", 0.0, "(0, 2]"),
        ("threshold", 2.5, "(0, 2]"),
        ("threshold", math.nan, "(0, 2]"),
        ("device", "tpu", "auto, cpu, cuda"),
        ("database", "faceid.db", "sqlite:///"),
        ("log_format", "xml", "text"),
        ("workers", 0, "greater than"),
        ("thumbnail_size", -1, "greater than or equal to 0"),
        ("limits", {"default_top_k": 200, "max_top_k": 100}, "default_top_k"),
    ],
)
def test_bad_settings_fail_with_a_clear_message(field: str, value: object, needle: str) -> None:
    with pytest.raises(ValueError, match=None) as info:
        Settings(**{field: value})
    assert needle in str(info.value)


def test_server_cli_rejects_bad_flags_with_exit_code_2() -> None:
    result = CliRunner().invoke(server_cli, ["--threshold", "5", "--listen", "nowhere", "--thumbnail-size", "-1"])
    assert result.exit_code == 2
    assert "threshold" in result.output and "listen" in result.output and "HOST:PORT" in result.output
    assert "thumbnail_size" in result.output  # the flag reaches the settings


def test_server_cli_models_list(models_dir, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FACEID_MODEL_DIR", "")  # restored afterwards; the flag sets it for this command
    result = CliRunner().invoke(server_cli, ["models", "list", "--model-dir", str(models_dir)])
    assert result.exit_code == 0, result.output
    first = result.output.splitlines()[0]
    assert first == "facenet-20170512-128d (default)"
    assert str(models_dir / "facenet-20170512-128d") in result.output
    assert "vggface2" in result.output and "casia-webface" in result.output
