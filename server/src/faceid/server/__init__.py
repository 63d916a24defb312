"""faceid.server: the gRPC wiring around the engine (config, servicers, status mapping, health, metrics)."""

from faceid.server.app import RunningServer, create_server, serve
from faceid.server.config import Settings
from faceid.server.servicer import FaceIdServicer
from faceid.server.status import STATUS_TABLE, status_for

__all__ = ["STATUS_TABLE", "FaceIdServicer", "RunningServer", "Settings", "create_server", "serve", "status_for"]
