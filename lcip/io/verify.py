"""Checksums of acquired files, verified once and remembered.

Acquisition writes a ``<layer>_sha256`` column beside every layer it fetched. Reading a
manifest verifies those files (:func:`verify_manifest`, called by :meth:`Manifest.read
<lcip.io.manifest.Manifest.read>`): a file is hashed the first time it is seen, and the result is
remembered in a small record in the file's folder (:data:`RECORD`, keyed by file name, with
the size and modification time it had when hashed). Later reads only compare size and mtime
with the record, so verification costs one hash per file, not one per stage; a file that was
rewritten, truncated or replaced is hashed again and a mismatch is one line naming it. Where
the file's folder is read-only (a shared data mirror), the record is kept in the user's cache
instead (:func:`fallback_record`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from lcip.errors import DataError
from lcip.io.atomic import write_text
from lcip.io.provenance import sha256_file

log = logging.getLogger(__name__)

#: Name of the per-folder record of verified files.
RECORD = ".lcip-verified.json"


def _stamp(path: Path) -> list[int]:
    stat = path.stat()
    return [stat.st_size, stat.st_mtime_ns]


def fallback_record(folder: Path) -> Path:
    """Where the record of a read-only folder is kept.

    ``$LCIP_CACHE`` (default ``~/.cache/lcip``) ``/verified/<hash of the folder's path>.json``.
    """
    root = Path(os.environ.get("LCIP_CACHE") or Path.home() / ".cache" / "lcip")
    key = hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:32]
    return root / "verified" / f"{key}.json"


def _load(path: Path) -> dict[str, Any]:
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _writable(folder: Path) -> bool:
    """Whether a folder is meant to be written: its owner-write bit is set."""
    try:
        return bool(folder.stat().st_mode & stat.S_IWUSR)
    except OSError:
        return False


def _read_record(folder: Path) -> dict[str, Any]:
    return {**_load(fallback_record(folder)), **_load(folder / RECORD)}


def remember(path: str | Path, sha256: str) -> None:
    """Record that ``path``, as it is now, has the given sha256 (e.g. just computed).

    Args:
        path: the file.
        sha256: its sha256 hex digest.
    """
    remember_many([(Path(path), sha256)])


def remember_many(entries: Iterable[tuple[Path, str]]) -> None:
    """Record several verified files at once (one record write per folder)."""
    by_folder: dict[Path, dict[str, tuple[Path, str]]] = {}
    for path, digest in entries:
        path = Path(path).resolve()
        by_folder.setdefault(path.parent, {})[path.name] = (path, digest)
    for folder, files in by_folder.items():
        record = _read_record(folder)
        for name, (path, digest) in files.items():
            record[name] = {"sha256": digest.lower(), "stamp": _stamp(path)}
        text = json.dumps(record, indent=0, sort_keys=True)
        targets = [folder / RECORD, fallback_record(folder)]
        if not _writable(folder):  # respect read-only mode bits, even for root
            targets = targets[1:]
        for target in targets:
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                write_text(target, text)
                break
            except OSError as exc:  # a read-only data folder: try the user's cache
                log.debug("cannot write %s: %s", target, exc)


def is_remembered(path: Path, sha256: str) -> bool:
    """Whether ``path`` was verified with this sha256 and has not changed since."""
    entry = _read_record(path.parent).get(path.name)
    return (
        isinstance(entry, dict)
        and entry.get("sha256") == sha256.lower()
        and entry.get("stamp") == _stamp(path)
    )


def verify_files(files: Iterable[tuple[Path, str, str]]) -> int:
    """Verify files against their expected sha256, hashing only those not remembered.

    Args:
        files: (path, expected sha256, where) triples; ``where`` names the file's source in
            the error message (e.g. ``manifest.csv: tile t1 layer 'naip'``).

    Returns:
        the number of files hashed (0 when every file was remembered unchanged).

    Raises:
        DataError: one line naming the first missing file or the first mismatch.
    """
    hashed: list[tuple[Path, str]] = []
    seen: set[Path] = set()
    try:
        for path, expected, where in files:
            if path in seen:
                continue
            seen.add(path)
            if not path.is_file():
                raise DataError(f"{where}: file {path} does not exist")
            if is_remembered(path, expected):
                continue
            log.info("verifying sha256 of %s", path)
            digest = sha256_file(path)
            if digest != expected.lower():
                raise DataError(
                    f"{where}: {path} has sha256 {digest}, expected {expected} "
                    "(the file changed or is corrupt; acquire it again)"
                )
            hashed.append((path, digest))
    finally:
        remember_many(hashed)
    return len(hashed)


def manifest_checksums(tiles: Iterable[Any], where: str) -> list[tuple[Path, str, str]]:
    """The (path, sha256, where) triples of a manifest's layers that carry a checksum.

    Args:
        tiles: the manifest's tiles (:class:`lcip.io.manifest.Tile`).
        where: the manifest's name, for messages.

    Returns:
        one triple per layer with a ``<layer>_sha256`` column.
    """
    out = []
    for t in tiles:
        for layer, path in t.layers.items():
            digest = t.meta.get(f"{layer}_sha256")
            if digest:
                out.append((Path(path), digest, f"{where}: tile {t.tile_id} layer '{layer}'"))
    return out


def verification_disabled() -> bool:
    """Whether ``LCIP_VERIFY=0`` turned verification off (e.g. on a read-only mirror)."""
    return os.environ.get("LCIP_VERIFY", "1").strip().lower() in ("0", "false", "no")
