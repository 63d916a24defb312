"""API keys and the interceptor that checks them on every RPC.

A key is `fid_<key id>_<secret>`: 12 hex characters that name the stored row (so checking a key is one
primary-key read, not a hash against every stored key) and 256 random bits (`secrets.token_urlsafe`).
The key is shown once, when created; the database keeps a salted scrypt hash of the secret only, and
compares with `hmac.compare_digest`. Callers send it as gRPC metadata `x-api-key: <key>` or
`authorization: Bearer <key>`.

Scopes are ordered, read < write < admin: a key may call every method whose scope is at most its own.
Which method needs which scope is ONE table, `method_scopes()`; a method missing from it needs admin.

When is a key required (`AuthSettings.mode`, see docs/security.md):
- "required" (`--auth`): always.
- "disabled" (`--insecure-no-auth`): never; logged as a warning at start-up.
- "auto" (default): always when the server listens on anything but a loopback address; on loopback,
  only once an active key exists in the database (checked every few seconds, so the first
  `faceid-server keys create` protects a running local server too).

Nothing here logs, returns or counts a key or its secret; failures say which header was wrong, never echo it.
"""

from __future__ import annotations

import contextvars
import enum
import hashlib
import hmac
import ipaddress
import logging
import re
import secrets
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import grpc
from faceid.indexer import errors
from faceid.indexer.store import ApiKeyRow, KeyStore
from faceid.server.interceptors import Behavior, WrappingInterceptor

log = logging.getLogger(__name__)

KEY_HEADER = "x-api-key"
AUTHORIZATION_HEADER = "authorization"
_KEY_RE = re.compile(r"fid_([0-9a-f]{12})_([A-Za-z0-9_-]{43})")
_SECRET_BYTES = 32  # token_urlsafe(32): 43 characters, 256 bits

# scrypt at n=2^14, r=8 (16 MiB, ~0.1-0.2 s on one core). A key is checked this slowly once per process;
# later calls compare a memoised SHA-256 (see KeyVerifier). Stored with each hash so it can change later.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
_SCRYPT_MAXMEM = 64 * 1024 * 1024

ANONYMOUS_ACTOR = "anonymous"
_actor: contextvars.ContextVar[str] = contextvars.ContextVar("faceid_actor", default=ANONYMOUS_ACTOR)


def current_actor() -> str:
    """Who makes the current RPC, for the audit log: "key:<name>", or "anonymous" when auth is off."""
    return _actor.get()


class Scope(enum.IntEnum):
    READ = 1
    WRITE = 2
    ADMIN = 3

    @classmethod
    def parse(cls, text: str) -> Scope:
        try:
            return cls[text.strip().upper()]
        except KeyError:
            raise ValueError(f"scope must be read, write or admin, got {text!r}") from None

    @property
    def label(self) -> str:
        return self.name.lower()


# ------------------------------------------------------------------------------------------ the table
PUBLIC = None  # no key needed: load balancers and orchestrators probe health without credentials


def method_scopes(*, style_scope: Scope = Scope.WRITE) -> Mapping[str, Scope | None]:
    """THE table: full RPC method name → the scope it needs (PUBLIC: none). Missing methods need ADMIN.

    Style transfer reads and writes no gallery data but occupies the accelerator for seconds to minutes,
    so its scope is the operator's choice (`auth.style_scope`, default write).
    """
    return {
        "/grpc.health.v1.Health/Check": PUBLIC,
        "/grpc.health.v1.Health/Watch": PUBLIC,
        # The schema is public (proto/), but a scanner learns nothing without a key.
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": Scope.READ,
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo": Scope.READ,
        "/faceid.v1.FaceId/Verify": Scope.READ,
        "/faceid.v1.FaceId/Identify": Scope.READ,
        "/faceid.v1.FaceId/Embed": Scope.READ,
        "/faceid.v1.FaceId/GetIdentity": Scope.READ,
        "/faceid.v1.FaceId/ListIdentities": Scope.READ,
        "/faceid.v1.FaceId/GetStats": Scope.READ,
        "/faceid.v1.FaceId/Enroll": Scope.WRITE,
        "/faceid.v1.FaceId/EnrollStream": Scope.WRITE,
        "/faceid.v1.FaceId/DeleteIdentity": Scope.WRITE,
        "/faceid.v1.FaceId/RenameIdentity": Scope.WRITE,
        "/faceid.v1.Clustering/Cluster": Scope.ADMIN,  # reads every face, keeps the accelerator busy
        "/faceid.v1.Clustering/NameFaces": Scope.WRITE,
        "/faceid.v1.Clustering/MergeIdentities": Scope.WRITE,
        "/faceid.v1.StyleTransfer/Stylize": style_scope,
        "/faceid.v1.Admin/CheckIndex": Scope.ADMIN,
        "/faceid.v1.Admin/ListAuditLog": Scope.ADMIN,
        "/faceid.v1.Admin/CreateApiKey": Scope.ADMIN,
        "/faceid.v1.Admin/ListApiKeys": Scope.ADMIN,
        "/faceid.v1.Admin/RevokeApiKey": Scope.ADMIN,
    }


# ------------------------------------------------------------------------------------ keys and hashes
@dataclass(frozen=True)
class NewKey:
    """A key just created: `key` is the only copy of the secret, shown to the user once."""

    row: ApiKeyRow
    key: str


def _kdf_label() -> str:
    return f"scrypt:n={SCRYPT_N},r={SCRYPT_R},p={SCRYPT_P}"


def hash_secret(secret: str, salt: bytes, kdf: str) -> bytes:
    """The stored hash of `secret` under `kdf` ("scrypt:n=..,r=..,p=..")."""
    name, _, params = kdf.partition(":")
    if name != "scrypt":
        raise ValueError(f"unknown key hash {kdf!r}")
    p = dict(item.split("=") for item in params.split(","))
    return hashlib.scrypt(
        secret.encode(), salt=salt, n=int(p["n"]), r=int(p["r"]), p=int(p["p"]), dklen=32, maxmem=_SCRYPT_MAXMEM
    )


def parse_key(presented: str) -> tuple[str, str] | None:
    """(key id, secret) of a well-formed key, else None."""
    match = _KEY_RE.fullmatch(presented.strip())
    return (match.group(1), match.group(2)) if match else None


def create_key(keys: KeyStore, *, scope: Scope, name: str | None, actor: str) -> NewKey:
    """Make a key, store its hash, return it (the one and only time the secret exists in full)."""
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(_SECRET_BYTES)
    salt = secrets.token_bytes(16)
    kdf = _kdf_label()
    row = keys.add(
        key_id=key_id, name=name or f"key-{key_id}", scope=scope.label, kdf=kdf, salt=salt,
        secret_hash=hash_secret(secret, salt, kdf), actor=actor,
    )
    return NewKey(row, f"fid_{key_id}_{secret}")


class KeyVerifier:
    """Checks presented keys against the store; revocation takes effect on the next call.

    Every call reads the key's row (one primary-key lookup: revoked_at is always fresh). The slow scrypt
    runs once per key and process; afterwards a SHA-256 of the secret, memoised beside the row's hash, is
    compared. Repeated wrong secrets for one key id from one client address stop reaching scrypt for a
    while, so guessing cannot turn the server's CPU into a hashing farm; the key's real holder is still
    admitted meanwhile (from its memo, or from another address).
    """

    MAX_FAILURES = 5
    FAILURE_WINDOW_S = 60.0
    _MAX_TRACKED = 10_000  # (key id, client) pairs with recent failures kept in memory

    def __init__(self, keys: KeyStore) -> None:
        self._keys = keys
        self._lock = threading.Lock()
        self._memo: dict[str, tuple[bytes, bytes]] = {}  # key id -> (stored hash, sha256(secret))
        self._failures: dict[tuple[str, str], list[float]] = {}
        self._slow = threading.BoundedSemaphore(1)  # one scrypt at a time: bounded CPU whatever comes in

    def verify(self, presented: str, client: str = "") -> ApiKeyRow | None:
        """The active key `presented` names, or None. `client`: the caller's address (for throttling)."""
        parsed = parse_key(presented)
        if parsed is None:
            return None
        key_id, secret = parsed
        row = self._keys.get(key_id)
        if row is None or not row.active:
            return None
        quick = hashlib.sha256(secret.encode()).digest()
        with self._lock:
            memo = self._memo.get(key_id)
        if memo is not None and memo[0] == row.secret_hash:
            return row if hmac.compare_digest(memo[1], quick) else self._failed((key_id, client))
        if self._throttled((key_id, client)):
            return None
        with self._slow:
            ok = hmac.compare_digest(hash_secret(secret, row.salt, row.kdf), row.secret_hash)
        if not ok:
            return self._failed((key_id, client))
        with self._lock:
            self._memo[key_id] = (row.secret_hash, quick)
        return row

    def _throttled(self, who: tuple[str, str]) -> bool:
        now = time.monotonic()
        with self._lock:
            recent = [t for t in self._failures.get(who, ()) if now - t < self.FAILURE_WINDOW_S]
            if recent:
                self._failures[who] = recent
            else:
                self._failures.pop(who, None)
            return len(recent) >= self.MAX_FAILURES

    def _failed(self, who: tuple[str, str]) -> None:
        now = time.monotonic()
        with self._lock:
            if len(self._failures) >= self._MAX_TRACKED:  # forget stale entries first
                self._failures = {k: v for k, v in self._failures.items() if now - v[-1] < self.FAILURE_WINDOW_S}
            self._failures.setdefault(who, []).append(now)
        return None


# ------------------------------------------------------------------------------------------- policy
def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 and "localhost"; anything else (0.0.0.0, [::], a name, a LAN address) is not."""
    host = host.strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class AuthPolicy:
    """Whether keys are required now (see the module docstring for the rule)."""

    RECHECK_S = 2.0

    def __init__(self, mode: str, host: str, keys: KeyStore) -> None:
        if mode not in ("auto", "required", "disabled"):
            raise ValueError(f"auth mode must be auto, required or disabled, got {mode!r}")
        self.mode = mode
        self.loopback = is_loopback(host)
        self._keys = keys
        self._lock = threading.Lock()
        self._cached: tuple[float, bool] | None = None

    def describe(self) -> str:
        if self.mode == "required":
            return "API keys required (--auth)"
        if self.mode == "disabled":
            return "API keys NOT checked (--insecure-no-auth)"
        if not self.loopback:
            return "API keys required (listening beyond loopback)"
        return "API keys required once one exists (loopback; auto)"

    def enabled(self) -> bool:
        if self.mode != "auto":
            return self.mode == "required"
        if not self.loopback:
            return True
        now = time.monotonic()
        with self._lock:
            if self._cached is not None and now - self._cached[0] < self.RECHECK_S:
                return self._cached[1]
        try:
            on = self._keys.count_active() > 0
        except errors.Unavailable as exc:  # the database is down: nobody is let in, the caller may retry
            raise _Denied(grpc.StatusCode.UNAVAILABLE, f"API keys cannot be checked right now: {exc}") from None
        except Exception:  # cannot tell: fail closed
            log.warning("could not count API keys; requiring one for this call", exc_info=True)
            return True
        with self._lock:
            self._cached = (now, on)
        return on


# -------------------------------------------------------------------------------------- interceptor
class _Denied(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


def presented_key(metadata: Any) -> str | None:
    """The key in `x-api-key` or `authorization: Bearer ...` (first one given), else None."""
    for key, value in metadata or ():
        if key == KEY_HEADER and isinstance(value, str):
            return value
        if key == AUTHORIZATION_HEADER and isinstance(value, str):
            scheme, _, token = value.strip().partition(" ")
            if scheme.lower() == "bearer" and token:
                return token.strip()
    return None


def client_address(peer: str) -> str:
    """'ipv4:10.1.2.3:5555' -> '10.1.2.3', 'ipv6:[::1]:5555' -> '::1'; the port changes per connection."""
    kind, _, rest = peer.partition(":")
    if kind == "ipv6":
        return rest.rpartition("]")[0].lstrip("[") or rest
    if kind == "ipv4":
        return rest.rpartition(":")[0]
    return peer  # unix sockets and the like


class AuthInterceptor(WrappingInterceptor):
    """Admits a call when its key's scope covers the method (UNAUTHENTICATED / PERMISSION_DENIED otherwise)
    and makes the key's name the call's actor (`current_actor()`), which the audit log records."""

    def __init__(self, policy: AuthPolicy, verifier: KeyVerifier, scopes: Mapping[str, Scope | None]) -> None:
        self._policy = policy
        self._verifier = verifier
        self._scopes = scopes

    def describe(self) -> str:
        return self._policy.describe()

    def required(self, method: str) -> Scope | None:
        return self._scopes.get(method, Scope.ADMIN)

    def _admit(self, method: str, context: grpc.ServicerContext) -> str:
        """The actor for this call, or _Denied."""
        needed = self.required(method)
        if needed is PUBLIC or not self._policy.enabled():
            return ANONYMOUS_ACTOR
        presented = presented_key(context.invocation_metadata())
        if presented is None:
            raise _Denied(
                grpc.StatusCode.UNAUTHENTICATED,
                f"this server requires an API key: send it as gRPC metadata '{KEY_HEADER}' (or "
                "'authorization: Bearer <key>'); an operator creates one with `faceid-server keys create`",
            )
        try:
            row = self._verifier.verify(presented, client_address(context.peer()))
        except Exception:  # the key store is unreachable: nobody is let in, the caller may retry
            log.warning("could not check an API key", exc_info=True)
            raise _Denied(grpc.StatusCode.UNAVAILABLE, "API keys cannot be checked right now; retry shortly") from None
        if row is None:
            raise _Denied(
                grpc.StatusCode.UNAUTHENTICATED,
                f"the API key sent in '{KEY_HEADER}' / 'authorization: Bearer' is not valid (malformed, unknown or "
                "revoked); ask an operator for a new one",
            )
        have = Scope.parse(row.scope)
        if have < needed:
            raise _Denied(
                grpc.StatusCode.PERMISSION_DENIED,
                f"API key {row.name!r} has scope {have.label}; {method.lstrip('/')} needs {needed.label}",
            )
        return f"key:{row.name}"

    def _deny(self, context: grpc.ServicerContext, method: str, denied: _Denied) -> None:
        log.info("%s -> %s", method.lstrip("/"), denied.code.name, extra={"rpc": method.lstrip("/"), "code": denied.code.name})
        context.abort(denied.code, str(denied))

    def wrap_unary(self, method: str, behavior: Behavior) -> Behavior:
        def guarded(request: Any, context: grpc.ServicerContext) -> Any:
            try:
                actor = self._admit(method, context)
            except _Denied as denied:
                self._deny(context, method, denied)
            token = _actor.set(actor)
            try:
                return behavior(request, context)
            finally:
                _actor.reset(token)

        return guarded

    def wrap_stream(self, method: str, behavior: Behavior) -> Behavior:
        def guarded(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            try:
                actor = self._admit(method, context)
            except _Denied as denied:
                self._deny(context, method, denied)
            # gRPC drives a response stream from one thread, but set the actor around each step anyway:
            # the generator's frames may resume in a context other than the one it was created in.
            inner = iter(behavior(request, context))
            while True:
                token = _actor.set(actor)
                try:
                    item = next(inner)
                except StopIteration:
                    return
                finally:
                    _actor.reset(token)
                yield item

        return guarded


def build_interceptor(keys: KeyStore, *, mode: str, host: str, style_scope: str = "write") -> AuthInterceptor:
    policy = AuthPolicy(mode, host, keys)
    return AuthInterceptor(policy, KeyVerifier(keys), method_scopes(style_scope=Scope.parse(style_scope)))
