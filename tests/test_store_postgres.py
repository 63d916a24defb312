"""Races only PostgreSQL sees: two servers (two stores, two engines and connection pools) write at once.

Each race is forced, not hoped for: a hook on each engine holds the first statement of the racing kind
(INSERT INTO identities, INSERT INTO faces, UPDATE faces) until both transactions have reached it, i.e.
both have already looked and found nothing. Then both write; PostgreSQL makes the second wait for the
first and refuses its duplicate. Both callers must get an answer (no exception), and the database must
hold one row.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, event, text
from test_store import MODEL, new_face, raw_count

from faceid.indexer.store import AddStatus, GalleryStore, create_store

HOLD_S = 10.0  # how long a hooked statement waits for the other writer (only reached if the race is lost)


@pytest.fixture
def pg_url(postgres) -> str:  # type: ignore[no-untyped-def]
    return str(postgres.create_database())


@pytest.fixture
def two_servers(pg_url: str) -> Iterator[tuple[GalleryStore, GalleryStore]]:
    a, b = create_store(pg_url), create_store(pg_url)
    try:
        yield a, b
    finally:
        a.close()
        b.close()


def _engine(store: GalleryStore) -> Engine:
    return store._engine  # the hook goes on this store's engine only


def race(stores: tuple[GalleryStore, GalleryStore], statement: str, calls: list[Callable[[GalleryStore], Any]]) -> list[Any]:
    """Run calls[i](stores[i]) in two threads, both held at their first `statement` until both got there."""
    barrier = threading.Barrier(2, timeout=HOLD_S)
    reached: list[str] = []

    def hook_for(store: GalleryStore) -> Callable[..., None]:
        fired = threading.Event()

        def hold(_conn: object, _cursor: object, sql: str, *_args: object) -> None:
            if sql.startswith(statement) and not fired.is_set():
                fired.set()
                reached.append(store.url)
                barrier.wait()

        return hold

    hooks = [(_engine(s), hook_for(s)) for s in stores]
    for engine, hook in hooks:
        event.listen(engine, "before_cursor_execute", hook)
    results: list[Any] = [None, None]
    failures: list[BaseException] = []

    def run(i: int) -> None:
        try:
            results[i] = calls[i](stores[i])
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    finally:
        for engine, hook in hooks:
            event.remove(engine, "before_cursor_execute", hook)
    assert failures == [], f"a caller got an error: {failures!r}"
    assert len(reached) == 2, "the race was not set up: both writers must reach the statement"
    return results


def test_same_new_identity_enrolled_by_two_servers_is_one_row(two_servers, pg_url: str) -> None:  # type: ignore[no-untyped-def]
    first, second = race(two_servers, "INSERT INTO identities", [
        lambda s: s.enroll(name="ada", faces=[new_face(1, "photo-1")], metadata={"from": "a"}),
        lambda s: s.enroll(name="ada", faces=[new_face(2, "photo-2")], metadata={"from_b": "b"}),
    ])
    assert raw_count(pg_url, "identities") == 1 and raw_count(pg_url, "faces") == 2
    assert sorted([first.created, second.created]) == [False, True]  # one created it, the other joined it
    assert first.identity.id == second.identity.id
    assert [first.faces[0].status, second.faces[0].status] == [AddStatus.CREATED, AddStatus.CREATED]
    with create_store(pg_url) as s:
        ada = s.get_identity(name="ada")
        assert ada.face_count == 2 and ada.metadata == {"from": "a", "from_b": "b"}  # both merged in
        assert [a.details["identity_created"] for a in s.list_audit()].count(True) == 1


def test_same_image_enrolled_by_two_servers_is_one_face(two_servers, pg_url: str) -> None:  # type: ignore[no-untyped-def]
    face = new_face(7, "group-photo")
    first, second = race(two_servers, "INSERT INTO identities", [
        lambda s: s.enroll(name="bob", faces=[face]),
        lambda s: s.enroll(name="bob", faces=[face]),
    ])
    assert raw_count(pg_url, "identities") == 1 and raw_count(pg_url, "faces") == 1
    assert raw_count(pg_url, "thumbnails") == 1
    assert sorted(a.status.value for a in (*first.faces, *second.faces)) == ["created", "existing"]
    assert first.faces[0].face_id == second.faces[0].face_id


def test_same_image_under_two_new_names_goes_to_one_of_them(two_servers, pg_url: str) -> None:  # type: ignore[no-untyped-def]
    face = new_face(8, "shared-photo")
    first, second = race(two_servers, "INSERT INTO faces", [
        lambda s: s.enroll(name="carol", faces=[face]),
        lambda s: s.enroll(name="dave", faces=[face]),
    ])
    assert raw_count(pg_url, "faces") == 1
    winner, loser = (first, second) if first.identity is not None else (second, first)
    assert winner.faces[0].status is AddStatus.CREATED
    # The loser's photo shows the winner's face: CONFLICT, and its new identity is not created.
    assert loser.faces[0].status is AddStatus.CONFLICT and loser.faces[0].identity_id == winner.identity.id
    assert loser.identity is None and raw_count(pg_url, "identities") == 1


def test_unlabeled_face_named_by_two_servers_keeps_one_name(two_servers, pg_url: str) -> None:  # type: ignore[no-untyped-def]
    a, _ = two_servers
    face = new_face(9, "bulk-photo")
    (loose,) = a.add_faces(identity_id=None, faces=[face])
    first, second = race(two_servers, "UPDATE faces", [
        lambda s: s.enroll(name="erin", faces=[face]),
        lambda s: s.enroll(name="frank", faces=[face]),
    ])
    statuses = sorted(r.faces[0].status.value for r in (first, second))
    assert statuses == ["conflict", "labeled"]  # never two LABELED: the second would have overwritten the first
    winner = first if first.faces[0].status is AddStatus.LABELED else second
    with create_store(pg_url) as s:
        assert s.face_identity_map([loose.face_id]) == {loose.face_id: winner.identity.id}
        assert s.count_identities() == 1 and s.count_faces(MODEL) == 1


def test_same_unlabeled_image_added_by_two_servers_is_one_face(two_servers, pg_url: str) -> None:  # type: ignore[no-untyped-def]
    faces = [new_face(10, "scan"), new_face(11, "scan", box=(100.0, 10.0, 150.0, 70.0))]
    first, second = race(two_servers, "INSERT INTO faces", [
        lambda s: s.add_faces(identity_id=None, faces=faces),
        lambda s: s.add_faces(identity_id=None, faces=faces[::-1]),  # the other order too
    ])
    assert raw_count(pg_url, "faces") == 2
    assert {f.face_id for f in first} == {f.face_id for f in second}
    assert sorted(f.status.value for f in (*first, *second)) == ["created", "created", "existing", "existing"]


def test_many_writers_enrolling_overlapping_people_never_fail(pg_url: str) -> None:
    """Unforced: four stores (servers) enrol the same 12 people with overlapping photos at full speed."""
    stores = [create_store(pg_url) for _ in range(4)]
    failures: list[BaseException] = []

    def writer(store: GalleryStore, offset: int) -> None:
        try:
            for i in range(12):
                person = (i + offset) % 12
                store.enroll(name=f"p{person}", faces=[new_face(person * 10 + j, f"p{person}-{j}") for j in range(2)])
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=writer, args=(s, k * 3)) for k, s in enumerate(stores)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    try:
        assert failures == []
        assert raw_count(pg_url, "identities") == 12 and raw_count(pg_url, "faces") == 24
        with stores[0]._engine.connect() as conn:
            per = conn.execute(text("SELECT count(*) FROM faces GROUP BY identity_id")).scalars().all()
        assert sorted(per) == [2] * 12
    finally:
        for s in stores:
            s.close()
