"""A real, throwaway Milvus server for the tests: Milvus Lite's gRPC server on a free port of 127.0.0.1.

`milvus-lite` (PyPI, installed with the default faiss-cpu group) is a pure-Python Milvus: the same gRPC
protocol and pymilvus client as a Milvus server, its data in a temp directory. It runs as a child process
(`python -m milvus_lite server`), so `stop()` / `start()` take it away and bring it back on the same port
and data directory, as a Milvus server lost during operation would be.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

START_TIMEOUT_S = 90  # a cold start imports pyarrow, pandas and FAISS: ~5 s here, more on a busy machine


class MilvusUnavailable(RuntimeError):
    """milvus-lite is missing or its server did not start; the message says why."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class MilvusLiteServer:
    """`start()` launches it (waits until it answers), `stop()` ends it; `uri` stays the same throughout."""

    def __init__(self, port: int | None = None, data_dir: Path | None = None) -> None:
        self.port = port or free_port()
        self._own_dir = data_dir is None
        self.data_dir = data_dir or Path(tempfile.mkdtemp(prefix="faceid-milvus-"))
        self.log_path = self.data_dir.parent / f"{self.data_dir.name}.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        try:
            import milvus_lite  # noqa: F401
        except ImportError as exc:
            raise MilvusUnavailable(f"milvus-lite is not installed ({exc}); `uv sync` installs it") from None
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "milvus_lite", "server", "--data-dir", str(self.data_dir),
                 "--host", "127.0.0.1", "--port", str(self.port)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise MilvusUnavailable(f"milvus-lite exited with {self._proc.returncode}: {self._log_tail()}")
            if self._answers():
                return
            time.sleep(0.3)
        self.stop()
        raise MilvusUnavailable(f"milvus-lite did not answer on {self.uri} within {START_TIMEOUT_S} s: {self._log_tail()}")

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def close(self) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            self.log_path.unlink(missing_ok=True)

    def client(self):  # type: ignore[no-untyped-def]  # pymilvus.MilvusClient, for looking behind faceid's back
        from pymilvus import MilvusClient

        return MilvusClient(uri=self.uri, timeout=10)

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                pass
        except OSError:
            return False
        from pymilvus import MilvusClient

        try:
            client = MilvusClient(uri=self.uri, timeout=5)
        except Exception:  # listening, but not answering Milvus calls yet
            return False
        try:
            client.get_server_version(timeout=5)
            return True
        except Exception:
            return False
        finally:
            client.close()

    def _log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-2000:]
        except OSError:
            return "(no log)"
