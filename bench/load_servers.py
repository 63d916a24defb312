"""Several servers behind one client-side load balancer, for bench/load.py (`--servers A,B` or `--spawn 2`).

The clients' calls go round-robin over the servers (gRPC's round_robin policy on one channel: every call
picks the next ready server, as an L7 load balancer in front of stateless replicas would). All servers share
one gallery database; each follows the others' writes (faceid.indexer.index_follower), so after the run
every server's index must equal the store and every acknowledged face must be listed by every server.
"""

from __future__ import annotations

import time

import grpc
from faceid.v1 import faceid_pb2 as pb
from faceid.v1 import faceid_pb2_grpc as pb_grpc

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")
CHANNEL_OPTIONS = [("grpc.max_send_message_length", 64 << 20), ("grpc.max_receive_message_length", 64 << 20)]


def parse_servers(text: str) -> list[str]:
    """'127.0.0.1:5001,127.0.0.1:5002' -> addresses; loopback only (a load generator never targets others)."""
    addresses = [part.strip() for part in text.split(",") if part.strip()]
    if not addresses:
        raise SystemExit("--servers needs HOST:PORT[,HOST:PORT...]")
    for address in addresses:
        host, _, port = address.rpartition(":")
        if host not in LOOPBACK_HOSTS or not port.isdigit():
            raise SystemExit(f"refusing {address}: the load generator only targets loopback HOST:PORT addresses")
    return addresses


def balanced_channel(addresses: list[str]) -> grpc.Channel:
    """One channel to every address, calls spread round-robin (a single address: a plain channel)."""
    if len(addresses) == 1:
        return grpc.insecure_channel(addresses[0], options=CHANNEL_OPTIONS)
    # The ipv4:/ipv6: resolvers take a static address list; round_robin keeps a subchannel per server.
    ipv6 = any(a.startswith(("[", "::1")) for a in addresses)
    plain = [a.replace("localhost", "[::1]" if ipv6 else "127.0.0.1") for a in addresses]
    target = ("ipv6:" if ipv6 else "ipv4:") + ",".join(plain)
    return grpc.insecure_channel(target, options=[*CHANNEL_OPTIONS, ("grpc.lb_policy_name", "round_robin")])


def settled_indexes(addresses: list[str], metadata: tuple, timeout_s: float = 30.0) -> list[str]:
    """Markdown lines: per server, faces in the store, vectors in its index, the index checksum; waits up
    to `timeout_s` for the followers to apply the last writes (they need follow.poll_s + a poll's work)."""
    deadline = time.monotonic() + timeout_s
    while True:
        stats = []
        for address in addresses:
            with grpc.insecure_channel(address, options=CHANNEL_OPTIONS) as channel:
                stats.append(pb_grpc.FaceIdStub(channel).GetStats(pb.GetStatsRequest(), timeout=60, metadata=metadata))
        agree = all(s.index.vectors == s.faces for s in stats) and len({s.index.checksum for s in stats}) == 1
        if agree or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    lines = ["", "| server | faces in the store | vectors in its index | index checksum |", "|---|---|---|---|"]
    lines += [f"| {a} | {s.faces} | {s.index.vectors} | {s.index.checksum[:12]} |" for a, s in zip(addresses, stats, strict=True)]
    lines.append(f"every server's index equals the store: {'yes' if agree else '**NO**'}")
    return lines


def lost_on_each(addresses: list[str], acked: dict[str, set[int]], metadata: tuple) -> int:
    """Acknowledged faces that some server does not list for their person (0 expected)."""
    lost = 0
    for address in addresses:
        with grpc.insecure_channel(address, options=CHANNEL_OPTIONS) as channel:
            stub = pb_grpc.FaceIdStub(channel)
            for person, face_ids in acked.items():
                stored = {f.id for f in stub.GetIdentity(pb.GetIdentityRequest(name=person), timeout=60, metadata=metadata).faces}
                lost += len(face_ids - stored)
    return lost
