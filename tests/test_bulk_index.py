"""`faceid index` against a real server on real photos: labels from folders, a manifest or none; idempotent,
resumable after Ctrl-C, SIGKILL and a server stopped mid-run and restarted; every rejected photo in the CSV
with its reason; thumbnails on by default, sized or turned off by the server's setting.

The store is read straight from the SQLite file: a face is (identity name or None, image sha256, box).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import FACES_DIR, GROUP_DIR, NO_FACE_DIR
from faceid.client.cli import app as faceid_cli
from faceid.indexer.bulk import ordered_map
from faceid.server import RunningServer
from PIL import Image
from server_harness import start_server
from typer.testing import CliRunner


LABELED_PEOPLE = ("hugo_chavez", "junichiro_koizumi", "naomi_watts", "serena_williams", "gloria_macapagal_arroyo")
GROUP = GROUP_DIR / "2009_004587.jpg"  # two faces
NO_FACE = NO_FACE_DIR / "coffee.jpg"
FaceKey = tuple[str | None, str, tuple[float, float, float, float]]


# ---------------------------------------------------------------------------------------------- helpers
def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _copy(src: Path, dst: Path) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
    return dst


def _tiny_face(dst: Path) -> Path:
    """A real face photo shrunk until its face is under the enrolment minimum (40 px) but still detected."""
    with Image.open(FACES_DIR / "naomi_watts" / "03.jpg") as im:
        im.convert("RGB").resize((72, 72), Image.Resampling.LANCZOS).save(dst, "JPEG", quality=95)
    return dst


def faces_in(db: Path, shas: set[str] | None = None) -> list[FaceKey]:
    """Every stored face as (identity name or None, image sha256, box), sorted; only `shas` when given."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = con.execute(
            "SELECT i.name, f.image_sha256, f.x1, f.y1, f.x2, f.y2 FROM faces f LEFT JOIN identities i ON i.id = f.identity_id"
        ).fetchall()
    finally:
        con.close()
    keys = [(name, sha, (x1, y1, x2, y2)) for name, sha, x1, y1, x2, y2 in rows if shas is None or sha in shas]
    return sorted(keys, key=repr)


def iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    area = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1])
    return w * h / (area - w * h)


def thumbnail_sizes(db: Path) -> dict[int, tuple[int, int]]:
    """face id -> (width, height) of its stored JPEG thumbnail."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = con.execute("SELECT face_id, jpeg FROM thumbnails").fetchall()
    finally:
        con.close()
    sizes = {}
    for face_id, jpeg in rows:
        with Image.open(io.BytesIO(jpeg)) as im:
            assert im.format == "JPEG"
            sizes[int(face_id)] = im.size
    return sizes


def face_count(db: Path) -> int:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return int(con.execute("SELECT count(*) FROM faces").fetchone()[0])
    finally:
        con.close()


def run_cli(*args: str) -> dict:
    """`faceid index ... --json` in this process; its JSON summary."""
    result = CliRunner().invoke(faceid_cli, ["index", *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[-1])


def read_rejected(path: Path) -> dict[str, tuple[str, str]]:
    with path.open(newline="") as f:
        return {Path(r["path"]).name: (r["reason"], r["message"]) for r in csv.DictReader(f)}


def cli_process(server: RunningServer, folder: Path, rejected: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "faceid.client.cli", "index", str(folder), "--server", server.address,
         "--rejected", str(rejected), "--json", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def wait_for_faces(db: Path, process: subprocess.Popen[str], at_least: int, timeout: float = 300.0) -> int:
    """Poll the store until it holds `at_least` faces (the CLI's photos are being acknowledged)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        count = face_count(db)
        if count >= at_least:
            return count
        assert process.poll() is None, f"the CLI ended early: {process.communicate()}"
        time.sleep(0.05)
    raise AssertionError(f"fewer than {at_least} faces after {timeout} s")


# --------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def collection(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """labeled/<person>/*.jpg (2 photos each, plus one photo per rejection reason), unlabeled/, manifest/."""
    root = tmp_path_factory.mktemp("collection")
    labeled = root / "labeled"
    for person in LABELED_PEOPLE:
        for src in sorted((FACES_DIR / person).glob("*.jpg"))[:2]:
            _copy(src, labeled / person / src.name)
    _copy(NO_FACE, labeled / "hugo_chavez" / "coffee.jpg")  # no_face
    _copy(GROUP, labeled / "serena_williams" / "group.jpg")  # multiple_faces (labeled policy: REJECT)
    (labeled / "naomi_watts" / "broken.jpg").write_bytes(b"this is not a JPEG")  # unreadable
    _tiny_face(labeled / "naomi_watts" / "tiny.jpg")  # face_too_small
    _copy(FACES_DIR / "naomi_watts" / "04.jpg", labeled / "stray.jpg")  # no_label: outside any person folder
    (labeled / "notes.txt").write_text("not a photo: skipped")

    unlabeled = root / "unlabeled"
    _copy(GROUP, unlabeled / "party" / "group.jpg")
    _copy(FACES_DIR / "joe_biden" / "03.jpg", unlabeled / "biden.jpg")
    _copy(NO_FACE, unlabeled / "coffee.jpg")

    manifest = root / "manifest"
    _copy(FACES_DIR / "luiz_inacio_lula_da_silva" / "01.jpg", manifest / "photos" / "a.jpg")
    _copy(FACES_DIR / "luiz_inacio_lula_da_silva" / "02.jpg", manifest / "photos" / "b.jpg")
    _copy(FACES_DIR / "serena_williams" / "05.jpg", manifest / "photos" / "c.jpg")
    (manifest / "list.csv").write_text(
        "path,identity\nphotos/a.jpg,Lula da Silva\nphotos/b.jpg,Lula da Silva\nphotos/c.jpg,\nphotos/missing.jpg,Nobody\n"
    )
    return root


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_server(tmp_path_factory.mktemp("bulk") / "faceid.db")
    yield running
    running.stop(0)


def _db(server: RunningServer) -> Path:
    return Path(server.slot.peek().store.url.removeprefix("sqlite:///"))  # type: ignore[union-attr]


def _accepted(folder: Path) -> set[str]:
    return {_sha(folder / p / f.name) for p in LABELED_PEOPLE for f in sorted((FACES_DIR / p).glob("*.jpg"))[:2]}


@pytest.fixture(scope="module")
def reference(server: RunningServer, collection: Path, tmp_path_factory: pytest.TempPathFactory) -> list[FaceKey]:
    """The labeled folder indexed once, uninterrupted, on a fresh gallery: the store every other run must reach."""
    rejected = tmp_path_factory.mktemp("ref") / "rejected.csv"
    batcher = server.slot.peek().pipeline.batcher("bulk")  # type: ignore[union-attr]
    batches, items = batcher.batches, batcher.items
    summary = run_cli(str(collection / "labeled"), "--server", server.address, "--rejected", str(rejected))
    assert summary["stored"] == 10 and summary["faces_stored"] == 10 and not summary["interrupted"]
    # One stream's photos share detection and embedding batches (bulk.ordered_map keeps several in flight):
    # the 13 photos that decode (10 stored, no face, two faces, too small) take a few batches, not 13.
    assert batcher.items - items == 13 and batcher.batches - batches <= 4, (batcher.batches - batches)
    return faces_in(_db(server), _accepted(collection / "labeled"))


# ------------------------------------------------------------------------------- the stream's read-ahead
def test_ordered_map_keeps_order_bounds_the_window_and_answers_a_lockstep_client() -> None:
    import random
    import threading

    running, peak, lock = 0, 0, threading.Lock()

    def work(i: int) -> int:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(random.random() / 200)  # later items often finish first
        with lock:
            running -= 1
        return i * i

    assert list(ordered_map(work, range(40), window=4)) == [i * i for i in range(40)]
    assert 1 < peak <= 4
    # A client that sends the next message only after the previous answer must not deadlock the stream.
    answered = threading.Event()

    def lockstep() -> Iterator[int]:
        for i in range(3):
            yield i
            assert answered.wait(10), "the answer was held back until the next message arrived"
            answered.clear()

    for _ in ordered_map(lambda i: i, lockstep(), window=8):
        answered.set()


def test_ordered_map_raises_errors_in_order() -> None:
    def work(i: int) -> int:
        if i == 3:
            raise ValueError("bad item 3")
        return i

    got: list[int] = []
    with pytest.raises(ValueError, match="bad item 3"):
        got.extend(ordered_map(work, range(10), window=4))
    assert got == [0, 1, 2]

    def source() -> Iterator[int]:
        yield from (0, 1)
        raise RuntimeError("the stream broke")

    got.clear()
    with pytest.raises(RuntimeError, match="the stream broke"):
        got.extend(ordered_map(lambda i: i, source(), window=4))
    assert got == [0, 1]  # answers of the messages read before the failure come first


# ------------------------------------------------------------------------------------------------ tests
@pytest.mark.slow
def test_labeled_folder_twice_stores_each_face_once(
    server: RunningServer, collection: Path, reference: list[FaceKey], tmp_path: Path
) -> None:
    labeled = collection / "labeled"
    assert len(reference) == 10
    by_sha = {sha: name for name, sha, _ in reference}
    for person in LABELED_PEOPLE:  # every accepted photo under its folder's name, one face each
        for src in sorted((labeled / person).glob("0*.jpg")):
            assert by_sha[_sha(src)] == person
    batcher = server.slot.peek().pipeline.batcher("bulk")  # type: ignore[union-attr]
    analysed_before = batcher.items

    summary = run_cli(str(labeled), "--server", server.address, "--rejected", str(tmp_path / "again.csv"))

    assert faces_in(_db(server), _accepted(labeled)) == reference  # nothing added, nothing changed
    assert (summary["stored"], summary["on_record"], summary["faces_stored"]) == (0, 10, 0)
    assert summary["total"] == summary["done"] == 15 and summary["rejected"] == 5
    # Photos on record are recognised by their bytes: only the rejected ones that decode were analysed again.
    assert batcher.items - analysed_before == 3


@pytest.mark.slow
def test_rejected_csv_names_every_refused_photo_and_why(server: RunningServer, collection: Path, tmp_path: Path) -> None:
    out = tmp_path / "rejected.csv"
    summary = run_cli(str(collection / "labeled"), "--server", server.address, "--rejected", str(out))
    rejected = read_rejected(out)
    assert {name: reason for name, (reason, _) in rejected.items()} == {
        "coffee.jpg": "no_face",
        "group.jpg": "multiple_faces",
        "broken.jpg": "unreadable",
        "tiny.jpg": "face_too_small",
        "stray.jpg": "no_label",
    }
    assert "2 faces found" in rejected["group.jpg"][1] and "40 px" in rejected["tiny.jpg"][1]
    assert summary["reasons"] == {"no_face": 1, "multiple_faces": 1, "unreadable": 1, "face_too_small": 1, "no_label": 1}


@pytest.mark.slow
def test_unlabeled_folder_stores_faces_without_identity(server: RunningServer, collection: Path, tmp_path: Path) -> None:
    folder = collection / "unlabeled"
    shas = {_sha(folder / "party" / "group.jpg"), _sha(folder / "biden.jpg")}
    summary = run_cli(str(folder), "--unlabeled", "--server", server.address, "--rejected", str(tmp_path / "r.csv"))
    stored = faces_in(_db(server), shas)
    assert [name for name, _, _ in stored] == [None, None, None]  # every face of the group photo, and Biden's
    assert sorted(sha for _, sha, _ in stored) == sorted([_sha(GROUP), _sha(GROUP), _sha(folder / "biden.jpg")])
    assert (summary["stored"], summary["faces_stored"], summary["reasons"]) == (2, 3, {"no_face": 1})
    again = run_cli(str(folder), "--unlabeled", "--server", server.address, "--rejected", str(tmp_path / "r.csv"))
    assert (again["stored"], again["on_record"]) == (0, 2) and faces_in(_db(server), shas) == stored


@pytest.mark.slow
def test_manifest_labels_photos_and_reports_missing_files(server: RunningServer, collection: Path, tmp_path: Path) -> None:
    root = collection / "manifest"
    out = tmp_path / "rejected.csv"
    summary = run_cli(str(root), "--manifest", str(root / "list.csv"), "--server", server.address, "--rejected", str(out))
    shas = {_sha(root / "photos" / n) for n in ("a.jpg", "b.jpg", "c.jpg")}
    by_sha = {sha: name for name, sha, _ in faces_in(_db(server), shas)}
    assert by_sha == {
        _sha(root / "photos" / "a.jpg"): "Lula da Silva",
        _sha(root / "photos" / "b.jpg"): "Lula da Silva",
        _sha(root / "photos" / "c.jpg"): None,  # an empty identity: unlabeled
    }
    assert summary["stored"] == 3 and read_rejected(out)["missing.jpg"][0] == "unreadable"
    bad = tmp_path / "bad.csv"
    bad.write_text("file,name\na.jpg,x\n")
    result = CliRunner().invoke(faceid_cli, ["index", str(root), "--manifest", str(bad), "--server", server.address])
    assert result.exit_code == 2 and "path,identity" in result.output


@pytest.mark.slow
def test_thumbnails_are_on_by_default_sized_by_the_setting_and_can_be_turned_off(
    server: RunningServer, collection: Path, reference: list[FaceKey], tmp_path: Path
) -> None:
    # The module's server runs with the defaults: every stored face has a 96 px thumbnail (for reports).
    con = sqlite3.connect(f"file:{_db(server)}?mode=ro", uri=True)
    try:
        face_ids = {int(r[0]) for r in con.execute("SELECT id FROM faces")}
    finally:
        con.close()
    assert len(face_ids) >= len(reference)
    assert thumbnail_sizes(_db(server)) == {f: (96, 96) for f in face_ids}
    # faceid-server --thumbnail-size N (FACEID_THUMBNAIL_SIZE): N px, or none at all for 0.
    for size in (48, 0):
        db = tmp_path / f"thumbs-{size}.db"
        running = start_server(db, thumbnail_size=size)
        try:
            summary = run_cli(str(collection / "unlabeled"), "--unlabeled", "--server", running.address,
                              "--rejected", str(tmp_path / f"r{size}.csv"))
        finally:
            running.stop(0)
        assert summary["faces_stored"] == face_count(db) == 3
        assert sorted(thumbnail_sizes(db).values()) == ([] if size == 0 else [(size, size)] * 3)


@pytest.mark.slow
def test_interrupted_killed_and_restarted_run_ends_like_an_uninterrupted_one(
    collection: Path, reference: list[FaceKey], tmp_path: Path
) -> None:
    db = tmp_path / "faceid.db"
    folder = collection / "labeled"
    running = start_server(db)
    try:
        # 1. Ctrl-C after a few acknowledged photos: a clean stop with a summary (exit 130).
        first = cli_process(running, folder, tmp_path / "r1.csv", "--batch", "1")
        wait_for_faces(db, first, 2)
        first.send_signal(signal.SIGINT)
        out, err = first.communicate(timeout=120)
        assert first.returncode == 130, err
        stopped = json.loads(out.strip().splitlines()[-1])
        assert stopped["interrupted"] and stopped["done"] < stopped["total"]
        # The progress bar (on stderr) shows the rate, the faces found and the time left.
        assert all(part in err for part in ("img/s", "faces", "ETA")), err
        # 2. Killed outright mid-run.
        second = cli_process(running, folder, tmp_path / "r2.csv", "--batch", "1")
        wait_for_faces(db, second, face_count(db) + 2)
        second.send_signal(signal.SIGKILL)
        second.communicate(timeout=60)
        assert 0 < face_count(db) < len(reference), "the kill must land mid-run"
        # 3. The server goes away under a running CLI: it stops with the server's status and exit code 1.
        third = cli_process(running, folder, tmp_path / "r3.csv", "--batch", "1")
        wait_for_faces(db, third, face_count(db) + 1)
    finally:
        running.stop(0)
    out, err = third.communicate(timeout=120)
    assert third.returncode == 1, (out, err)
    lost = json.loads(out.strip().splitlines()[-1])
    assert lost["interrupted"] and lost["error"]["code"] == "UNAVAILABLE", lost
    assert 0 < face_count(db) < len(reference), "the server must stop mid-run"
    # 4. The server restarts on the same file; the same command finishes the rest.
    running = start_server(db)
    try:
        done = faces_in(db)
        summary = run_cli(str(folder), "--server", running.address, "--rejected", str(tmp_path / "r4.csv"))
    finally:
        running.stop(0)
    assert summary["on_record"] == len({sha for _, sha, _ in done}) and summary["stored"] == 10 - summary["on_record"]
    resumed = faces_in(db)
    # The same faces: identity and photo exactly, and the same face region. Boxes are compared by overlap, not
    # to the pixel: each photo is detected once either way, but batched MTCNN gives a photo boxes a few pixels
    # apart depending on which photos share its batch (measured: up to 3 px here; faceid.indexer.bulk).
    assert [(n, s) for n, s, _ in resumed] == [(n, s) for n, s, _ in reference]
    for (_, _, a), (_, _, b) in zip(resumed, reference, strict=True):
        assert iou(a, b) >= 0.9, (a, b)
    assert read_rejected(tmp_path / "r4.csv").keys() == {"coffee.jpg", "group.jpg", "broken.jpg", "tiny.jpg", "stray.jpg"}


def test_summary_for_people_names_every_outcome_and_the_rejection_file(tmp_path: Path) -> None:
    """Without --json, the end of a run is a table a person reads: counts per outcome, speed, the CSV path."""
    from collections import Counter

    from faceid.client.index_cmd import Summary, _print_summary
    from rich.console import Console

    summary = Summary(total=12, done=10, stored=6, on_record=1, rejected=3, faces_found=8, faces_stored=6,
                      elapsed_s=4.0, interrupted=True, reasons=Counter({"no_face": 2, "multiple_faces": 1}))
    console = Console(record=True, width=120)
    _print_summary(console, summary, tmp_path / "rejected.csv")
    text = console.export_text()
    assert "interrupted" in text and "run the same command again" in text
    assert "10 of 12 gone through" in text
    assert "6 photos, 6 faces" in text
    assert "2 no_face, 1 multiple_faces" in text  # most common reason first
    assert "2.50 images/s" in text
    assert str(tmp_path / "rejected.csv") in text

    clean = Summary(total=2, done=2, stored=2, faces_found=2, faces_stored=2, elapsed_s=1.0)
    console = Console(record=True, width=120)
    _print_summary(console, clean, tmp_path / "rejected.csv")
    text = console.export_text()
    assert "done" in text and "interrupted" not in text
    assert "rejected.csv" not in text  # no file to point at when nothing was rejected
