"""faceid.v1.Admin: index ↔ store check and rebuild, the audit log, API keys (all need scope admin).

Like FaceIdServicer: each RPC checks the request's shape, makes one engine or key-store call and converts
the answer; errors are faceid.indexer.errors classes, mapped to status codes by ErrorMappingInterceptor.
Key management works while the engine is still loading (it needs only the database).
"""

from __future__ import annotations

import json
import logging

import grpc
from faceid.indexer import errors
from faceid.indexer.store import ApiKeyRow, AuditRecord, KeyStore
from faceid.server import convert
from faceid.server.auth import Scope, create_key, current_actor
from faceid.server.lifecycle import EngineSlot
from faceid.v1 import admin_pb2 as pb
from faceid.v1 import admin_pb2_grpc as pb_grpc
from faceid.server.index_health import ServingGate

log = logging.getLogger(__name__)

ADMIN_SERVICE = pb.DESCRIPTOR.services_by_name["Admin"].full_name  # "faceid.v1.Admin"
MAX_AUDIT_PAGE = 1000
_SCOPE_TO_PROTO = {Scope.READ: pb.API_KEY_SCOPE_READ, Scope.WRITE: pb.API_KEY_SCOPE_WRITE, Scope.ADMIN: pb.API_KEY_SCOPE_ADMIN}
_SCOPE_FROM_PROTO = {v: k for k, v in _SCOPE_TO_PROTO.items()}


class AdminServicer(pb_grpc.AdminServicer):
    def __init__(self, slot: EngineSlot, keys: KeyStore, gate: ServingGate | None = None) -> None:
        self._slot = slot
        self._keys = keys
        self._gate = gate  # the server's one health gate: a rebuild ending never hides a database still away

    # -------------------------------------------------------------------------------------- index
    def CheckIndex(self, request: pb.CheckIndexRequest, context: grpc.ServicerContext) -> pb.CheckIndexResponse:
        engine = self._slot.get()
        before = engine.check_index(rebuild=False)
        after, rebuilt = before, False
        if not before.consistent and not request.check_only:
            log.warning("CheckIndex: the index differs from the store; rebuilding (NOT_SERVING meanwhile)")
            if self._gate is not None:
                self._gate.set("index rebuild", False)
            try:
                after, rebuilt = engine.check_index(rebuild=True), True
            finally:
                if self._gate is not None:
                    self._gate.set("index rebuild", True)
            engine.store.append_audit(
                actor=current_actor(), action="index.rebuild", subject=engine.model.id,
                details={"vectors": after.vectors, "consistent": after.consistent},
            )
        return pb.CheckIndexResponse(
            model=engine.model.id,
            consistent_before=before.consistent,
            rebuilt=rebuilt,
            consistent=after.consistent,
            vectors=len(engine.index),
            store_faces=engine.store.count_faces(engine.model.id),
            checksum=after.checksum,
            checked_at=convert.timestamp(after.checked_at),
        )

    # -------------------------------------------------------------------------------------- audit
    def ListAuditLog(self, request: pb.ListAuditLogRequest, context: grpc.ServicerContext) -> pb.ListAuditLogResponse:
        if not 0 <= request.page_size <= MAX_AUDIT_PAGE:
            raise errors.InvalidRequest(f"page_size {request.page_size} is outside [0, {MAX_AUDIT_PAGE}] (0 means 100)")
        if request.after_id < 0:
            raise errors.InvalidRequest(f"after_id {request.after_id} is negative; start with 0")
        if len(request.action_prefix) > 64:
            raise errors.InvalidRequest("action_prefix is longer than 64 characters")
        size = request.page_size or 100
        engine = self._slot.get()
        records = engine.store.list_audit(after_id=request.after_id, limit=size + 1, action_prefix=request.action_prefix or None)
        more = len(records) > size
        records = records[:size]
        people = {i for i in (_identity_id(r) for r in records) if i}
        names = engine.store.identity_names(people) if people else {}
        return pb.ListAuditLogResponse(
            entries=[_audit_entry(r, names) for r in records],
            next_after_id=records[-1].id if more else 0,
        )

    # --------------------------------------------------------------------------------------- keys
    def CreateApiKey(self, request: pb.CreateApiKeyRequest, context: grpc.ServicerContext) -> pb.CreateApiKeyResponse:
        scope = _SCOPE_FROM_PROTO.get(request.scope)
        if scope is None:
            raise errors.InvalidRequest("scope is unspecified: choose API_KEY_SCOPE_READ, _WRITE or _ADMIN")
        new = create_key(self._keys, scope=scope, name=request.name or None, actor=current_actor())
        log.info("API key created: id=%s name=%r scope=%s", new.row.key_id, new.row.name, new.row.scope)
        return pb.CreateApiKeyResponse(key=_api_key(new.row), secret=new.key)

    def ListApiKeys(self, request: pb.ListApiKeysRequest, context: grpc.ServicerContext) -> pb.ListApiKeysResponse:
        return pb.ListApiKeysResponse(keys=[_api_key(k) for k in self._keys.list(include_revoked=request.include_revoked)])

    def RevokeApiKey(self, request: pb.RevokeApiKeyRequest, context: grpc.ServicerContext) -> pb.ApiKey:
        if not request.key or len(request.key) > 255:
            raise errors.InvalidRequest("key must be a key id or name (1..255 characters)")
        row = self._keys.revoke(request.key, actor=current_actor())
        log.info("API key revoked: id=%s name=%r", row.key_id, row.name)
        return _api_key(row)


def _identity_id(record: AuditRecord) -> int:
    kind, _, value = record.subject.partition(":")
    return int(value) if kind == "identity" and value.isdigit() else 0


def _audit_entry(record: AuditRecord, names: dict[int, str]) -> pb.AuditEntry:
    person = _identity_id(record)
    return pb.AuditEntry(
        id=record.id,
        at=convert.timestamp(record.at),
        actor=record.actor,
        action=record.action,
        subject=record.subject,
        identity_id=person,
        identity=names.get(person, ""),
        details_json=json.dumps(record.details, sort_keys=True, default=str),
    )


def _api_key(row: ApiKeyRow) -> pb.ApiKey:
    return pb.ApiKey(
        key_id=row.key_id,
        name=row.name,
        scope=_SCOPE_TO_PROTO[Scope.parse(row.scope)],
        created_at=convert.timestamp(row.created_at),
        revoked_at=convert.timestamp(row.revoked_at),
        active=row.active,
    )
