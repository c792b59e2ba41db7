"""Shards of a region's tiles: ``shard=i/n`` runs of the per-tile stages and their merge.

A stage run with ``shard=i/n`` (``lcip-prior``, ``lcip-predict``) handles only the tiles of
shard ``i`` of ``n`` and writes its report into ``<out_dir>/shards/<i>_of_<n>/``; tile outputs
go where an unsharded run puts them. Re-running a shard (a requeued SLURM array job) skips
its tiles whose outputs are up to date. When every shard's report exists, the shard that
finished last merges them into the stage's usual ``manifest.csv`` (and ``report.json``), so
the next stage cannot tell a sharded run from an unsharded one. :func:`merge_shards` can also
be called on its own.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lcip.errors import ConfigError
from lcip.io.atomic import write_text
from lcip.io.manifest import Manifest

#: Sub-folder of a stage's output folder holding the per-shard reports.
SHARDS_DIR = "shards"


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (0-based)."""

    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def folder(self, out_dir: Path) -> Path:
        """This shard's report folder inside a stage's output folder."""
        return Path(out_dir) / SHARDS_DIR / f"{self.index}_of_{self.count}"


def parse_shard(value: Any, key: str = "shard") -> Shard | None:
    """The ``shard`` setting: None (no sharding) or ``"i/n"`` with ``0 <= i < n``.

    Raises:
        ConfigError: one line naming the setting, for anything else.
    """
    if value is None or str(value).strip().lower() in ("", "null", "none"):
        return None
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(value))
    if match is None or not int(match[1]) < int(match[2]):
        raise ConfigError(f"{key}={value}: expected i/n with 0 <= i < n (e.g. {key}=0/4)")
    return Shard(int(match[1]), int(match[2]))


def shard_tile_ids(tile_ids: list[str], shard: Shard) -> list[str]:
    """The tile ids of one shard: round-robin over the sorted ids.

    Deterministic for a given set of tiles whatever their order in the manifest; the shards
    partition the tiles and their sizes differ by at most one.
    """
    return sorted(tile_ids)[shard.index :: shard.count]


def select_shard(manifest: Manifest, shard: Shard | None) -> Manifest:
    """The manifest restricted to one shard's tiles (the whole manifest for None)."""
    if shard is None:
        return manifest
    return manifest.select(tile_ids=shard_tile_ids([t.tile_id for t in manifest], shard))


def shard_reports(out_dir: Path, count: int) -> list[Path]:
    """The shard folders of ``count`` shards that hold a finished ``manifest.csv``."""
    folders = [Shard(i, count).folder(out_dir) for i in range(count)]
    return [f for f in folders if (f / "manifest.csv").is_file()]


def merge_shards(out_dir: Path, count: int, order: Manifest) -> Path | None:
    """Merge the shards' manifests (and ``report.json`` files) once all ``count`` exist.

    The merged ``<out_dir>/manifest.csv`` lists the shards' tiles in the order of ``order``
    (the stage's input manifest); the merged ``report.json`` sums the shards' ``counts``,
    concatenates their lists and keeps the other keys of the first shard. Writes are atomic,
    so two shards finishing together write the same files.

    Args:
        out_dir: the stage's output folder.
        count: number of shards.
        order: manifest giving the tile order.

    Returns:
        the merged manifest's path, or None while some shard is missing.
    """
    folders = shard_reports(out_dir, count)
    if len(folders) < count:
        return None
    tiles = {t.tile_id: t for f in folders for t in Manifest.read(f / "manifest.csv")}
    ids = [t.tile_id for t in order if t.tile_id in tiles]
    merged = Manifest(tuple(tiles[i] for i in ids)).write(Path(out_dir) / "manifest.csv")
    reports = [json.loads(p.read_text()) for f in folders if (p := f / "report.json").is_file()]
    if reports:
        write_text(Path(out_dir) / "report.json", json.dumps(merge_reports(reports), indent=1))
    return merged


def merge_reports(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """One report from shard reports: ``counts`` summed, lists concatenated, ``shards`` added."""
    merged: dict[str, Any] = dict(reports[0])
    for key, value in reports[0].items():
        if isinstance(value, dict) and all(isinstance(v, int | float) for v in value.values()):
            merged[key] = {k: sum(r.get(key, {}).get(k, 0) for r in reports) for k in value}
        elif isinstance(value, list):
            merged[key] = [item for r in reports for item in r.get(key, [])]
    merged.pop("shard", None)
    merged["shards"] = len(reports)
    return merged


__all__ = [
    "SHARDS_DIR",
    "Shard",
    "merge_reports",
    "merge_shards",
    "parse_shard",
    "select_shard",
    "shard_reports",
    "shard_tile_ids",
]
