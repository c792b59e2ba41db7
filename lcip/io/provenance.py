"""Provenance: what made an output, recorded in its tags, and the check that lets a stage skip it.

Every raster a stage writes carries one tag, ``lcip_provenance``: canonical JSON of

- ``params``: the settings that shaped the output (recipe, blur, loss, checkpoint sha256, ...);
- ``inputs``: a fingerprint of every input file (see :func:`fingerprint`);
- ``lcip_version``.

A stage skips an output only when it is a whole raster on the expected grid *and* its
provenance equals the one the stage would record now (:func:`is_up_to_date`): change a
parameter, an input file or the lcip version and the output is rebuilt, so a stale file never
passes for a fresh one.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import rasterio

import lcip
from lcip.io.raster import Grid, is_valid_raster

#: The tag holding an output's provenance (canonical JSON).
PROVENANCE_TAG = "lcip_provenance"

#: Files up to this size are fingerprinted by their full sha256; larger ones by size, mtime and
#: the sha256 of their first and last MiB (cheap, and any rewrite changes the mtime).
FULL_HASH_LIMIT = 64 * 2**20

_CHUNK = 2**20


def sha256_file(path: str | Path) -> str:
    """The sha256 hex digest of a file's contents.

    Args:
        path: the file.

    Returns:
        64 hex characters.
    """
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def fingerprint(path: str | Path) -> str:
    """A fingerprint of a file that changes whenever its contents change.

    Small files (up to :data:`FULL_HASH_LIMIT`) get ``sha256:<hex>``, independent of where and
    when they were written; larger ones ``size:<n>;mtime_ns:<t>;ends_sha256:<hex>``.

    Args:
        path: the file.

    Returns:
        the fingerprint string.
    """
    path = Path(path)
    stat = path.stat()
    if stat.st_size <= FULL_HASH_LIMIT:
        return f"sha256:{sha256_file(path)}"
    h = hashlib.sha256()
    with open(path, "rb") as f:
        h.update(f.read(_CHUNK))
        f.seek(-_CHUNK, 2)
        h.update(f.read(_CHUNK))
    return f"size:{stat.st_size};mtime_ns:{stat.st_mtime_ns};ends_sha256:{h.hexdigest()}"


def provenance(
    params: Mapping[str, Any], inputs: Mapping[str, str | Path | None] | None = None
) -> str:
    """The canonical provenance JSON of an output.

    Args:
        params: settings that shaped the output (JSON-serializable; other values are
            converted with ``str``).
        inputs: input name -> file (None entries are recorded as absent).

    Returns:
        canonical JSON (sorted keys) with ``params``, ``inputs`` (fingerprints) and
        ``lcip_version``.
    """
    prints = {
        name: (fingerprint(p) if p is not None else None) for name, p in (inputs or {}).items()
    }
    record = {"params": dict(params), "inputs": prints, "lcip_version": lcip.__version__}
    return json.dumps(record, sort_keys=True, default=str)


def read_provenance(path: str | Path) -> dict[str, Any] | None:
    """The provenance recorded in a raster's tags (None when it has none or is unreadable)."""
    try:
        with rasterio.open(path) as src:
            text = src.tags().get(PROVENANCE_TAG)
    except Exception:
        return None
    if text is None:
        return None
    try:
        record = json.loads(text)
    except json.JSONDecodeError:
        return None
    return record if isinstance(record, dict) else None


def is_up_to_date(
    path: str | Path, expected: str, grid: Grid | None = None, count: int | None = None
) -> bool:
    """Whether an existing output can be kept: whole, on ``grid``, same provenance.

    Args:
        path: the output raster.
        expected: the provenance JSON the stage would record now (from :func:`provenance`).
        grid: the grid the output must be on (None: any).
        count: the number of bands it must have (None: any).

    Returns:
        True only when every check passes.
    """
    if not is_valid_raster(path, grid, count):
        return False
    found = read_provenance(path)
    return found is not None and found == json.loads(expected)


def differences(
    expected: Mapping[str, Any], found: Mapping[str, Any], prefix: str = ""
) -> list[str]:
    """Human-readable differences between two provenance records (``key: found -> expected``).

    Args:
        expected: what the output should have been made with.
        found: what it was made with.
        prefix: key prefix for nested records.

    Returns:
        one string per differing leaf key, sorted.
    """
    out: list[str] = []
    for key in sorted(set(expected) | set(found)):
        a, b = found.get(key), expected.get(key)
        name = f"{prefix}{key}"
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out += differences(b, a, f"{name}.")
        elif a != b:
            out.append(f"{name}: {a!r} -> {b!r}")
    return out


__all__ = [
    "FULL_HASH_LIMIT",
    "PROVENANCE_TAG",
    "differences",
    "fingerprint",
    "is_up_to_date",
    "provenance",
    "read_provenance",
    "sha256_file",
]
