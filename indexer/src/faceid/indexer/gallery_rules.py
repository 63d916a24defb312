"""What a valid identity name and metadata look like (checked before anything is written)."""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping

from faceid.indexer.errors import InvalidRequest

MAX_NAME_CHARS = 200
MAX_METADATA_ENTRIES = 64
MAX_METADATA_KEY_CHARS = 64
MAX_METADATA_VALUE_CHARS = 1024


def _has_control(text: str) -> bool:
    # Cc (control), Cf (format, e.g. zero-width and bidi overrides), Cs/Co/Cn: never part of a name.
    return any(unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Cn") for ch in text)


def validate_identity_name(name: str | None) -> str:
    """A name is 1..200 characters of printable text, without surrounding spaces; returns it NFC-normalised."""
    if name is None or not name.strip():
        raise InvalidRequest("identity name is empty: give the person's name or external id")
    if name != name.strip():
        raise InvalidRequest(f"identity name {name!r} has leading or trailing spaces; remove them")
    if len(name) > MAX_NAME_CHARS:
        raise InvalidRequest(f"identity name has {len(name)} characters; at most {MAX_NAME_CHARS} are allowed")
    if _has_control(name):
        raise InvalidRequest(f"identity name {name!r} contains control or invisible characters; remove them")
    return unicodedata.normalize("NFC", name)


def validate_metadata(metadata: Mapping[str, str]) -> dict[str, str]:
    if len(metadata) > MAX_METADATA_ENTRIES:
        raise InvalidRequest(f"{len(metadata)} metadata entries; at most {MAX_METADATA_ENTRIES} are allowed")
    clean: dict[str, str] = {}
    for key, value in metadata.items():
        if not key or len(key) > MAX_METADATA_KEY_CHARS or _has_control(key):
            raise InvalidRequest(
                f"metadata key {key[:80]!r} must be 1..{MAX_METADATA_KEY_CHARS} printable characters"
            )
        if len(value) > MAX_METADATA_VALUE_CHARS or any(unicodedata.category(c) == "Cc" and c not in "\t\n" for c in value):
            raise InvalidRequest(
                f"metadata value of {key!r} must be at most {MAX_METADATA_VALUE_CHARS} characters without control characters"
            )
        clean[key] = value
    return clean
