"""Shared fixtures: where the real photos and weights live (../shared beside the checkout)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Before torch is imported anywhere in the test session: see faceid.server.cli.main.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = Path(os.environ.get("FACEID_SHARED_DIR", REPO_ROOT.parent / "shared")).resolve()
MODELS_DIR = SHARED_DIR / "models"
DATA_DIR = SHARED_DIR / "data"
FACES_DIR = DATA_DIR / "faces"
GROUP_DIR = DATA_DIR / "faces_group"
NO_FACE_DIR = DATA_DIR / "no_face"
STYLE_DIR = DATA_DIR / "style"

if not (MODELS_DIR / "facenet-20170512-128d" / "card.json").is_file():
    raise RuntimeError(
        f"real weights and photos are expected in {SHARED_DIR} (../shared beside the checkout); "
        "set FACEID_SHARED_DIR to their location"
    )


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    return SHARED_DIR


@pytest.fixture(scope="session")
def models_dir() -> Path:
    return MODELS_DIR


@pytest.fixture(scope="session")
def faces_dir() -> Path:
    return FACES_DIR


def person_photos(person: str) -> list[Path]:
    """The photos of one person in shared/data/faces, sorted by name."""
    return sorted((FACES_DIR / person).glob("*.jpg"))


def read_bytes(path: Path) -> bytes:
    return path.read_bytes()


# ---------------------------------------------------------------- gallery databases: SQLite and PostgreSQL
@pytest.fixture(scope="session")
def postgres():  # type: ignore[no-untyped-def]
    """One real PostgreSQL server for the session (tests/postgres_server.py); FAILS when it cannot start."""
    from postgres_server import PostgresServer, PostgresUnavailable

    try:
        server = PostgresServer()
        server.start()
    except PostgresUnavailable as exc:
        pytest.fail(f"the PostgreSQL store tests need a PostgreSQL server: {exc}", pytrace=False)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A new, empty gallery database on each backend: a temp SQLite file, a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'gallery.db'}"
    return str(request.getfixturevalue("postgres").create_database())
