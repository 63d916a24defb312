"""The committed pins (requirements.lock.txt) cover every declared dependency and match what uv resolves.

uv.lock records download addresses, so it stays out of git; requirements.lock.txt (made by
`uv export --format requirements-txt --no-emit-workspace --no-header -o requirements.lock.txt`) carries
the versions and hashes only.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from conftest import REPO_ROOT

PINS = REPO_ROOT / "requirements.lock.txt"
MEMBERS = ["", "proto", "indexer", "server", "client"]


def _pins() -> dict[str, str]:
    pins = {}
    for line in PINS.read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.\-]+)==([^\s;\\]+)", line)
        if m:
            pins[canonicalize_name(m.group(1))] = m.group(2)
    return pins


def _declared() -> list[Requirement]:
    reqs = []
    for member in MEMBERS:
        data = tomllib.loads((REPO_ROOT / member / "pyproject.toml").read_text())
        project = data.get("project", {})
        names = list(project.get("dependencies", []))
        names += project.get("optional-dependencies", {}).get("cpu", [])
        names += data.get("dependency-groups", {}).get("dev", [])
        reqs += [Requirement(r) for r in names]
    return [r for r in reqs if not canonicalize_name(r.name).startswith("faceid")]


def test_pins_file_has_no_addresses_or_local_paths() -> None:
    text = PINS.read_text()
    assert "://" not in text
    assert "/work/" not in text and "/root/" not in text and "/home/" not in text


def test_every_declared_dependency_is_pinned_within_its_range() -> None:
    pins = _pins()
    overrides = {
        canonicalize_name(Requirement(r).name): Requirement(r)
        for r in tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["uv"]["override-dependencies"]
    }
    problems = []
    for req in _declared():
        if req.marker is not None and not req.marker.evaluate():
            continue
        name = canonicalize_name(req.name)
        if name not in pins:
            problems.append(f"{req} is declared but not pinned")
            continue
        spec = overrides[name].specifier if name in overrides else req.specifier
        if not spec.contains(pins[name], prereleases=True):
            problems.append(f"{name}=={pins[name]} does not satisfy {spec}")
    assert not problems, "\n".join(problems) + "\nregenerate requirements.lock.txt (see its test's docstring)"


def test_pins_equal_the_current_resolution() -> None:
    """When uv and its lock are here (after `uv run`), the exported pins must equal the committed ones."""
    uv = shutil.which("uv")
    if uv is None or not (REPO_ROOT / "uv.lock").exists():
        import pytest

        pytest.skip("uv or uv.lock not available: the range check above still ran")
    exported = subprocess.run(
        [uv, "export", "--frozen", "--format", "requirements-txt", "--no-emit-workspace", "--no-header"],
        cwd=REPO_ROOT, capture_output=True, text=True, check=True,
    ).stdout
    current = {canonicalize_name(m.group(1)): m.group(2) for m in re.finditer(r"^([A-Za-z0-9_.\-]+)==(\S+)", exported, re.M)}
    assert current == _pins()
