"""The paper's regions from their archives: list, plan, fetch members, write the manifest.

The library behind ``lcip-acquire`` for a region with a ``source`` of
:mod:`lcip.acquire.datasets` (:mod:`lcip.stages.acquire` reads the settings): each archive is
listed through HTTP range requests (only the zip's central directory) or, from a server that
serves no ranges, downloaded whole into ``<data>/archives/`` (:func:`whole_archive_path`);
:func:`plan` selects the members of the region's subset, splits and layers (and the ones
TorchGeo's ``_verify`` checks for), :func:`describe` lists them with their sizes,
:func:`fetch_members` fetches the missing ones (resumable, CRC-32 checked, atomic),
:func:`complete_torchgeo_layout` makes the split folders TorchGeo expects and
:func:`write_manifest` writes the verified manifest.
"""

from __future__ import annotations

import logging
import zipfile
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lcip.acquire.datasets import Archive, Dataset, LayerMember
from lcip.errors import ConfigError, DataError, DownloadError
from lcip.io.manifest import Manifest, Tile
from lcip.io.raster import Grid

log = logging.getLogger(__name__)

#: Folder under the data folder that whole archives are downloaded into: not the data folder
#: itself, where TorchGeo's ``_verify`` would extract a zip of its ``filename`` whole.
WHOLE_ARCHIVES = "archives"
#: Layer name of the members fetched only so that TorchGeo's ``_verify`` finds its files.
TORCHGEO_CHECK = "torchgeo_check"
#: Layers of planned members that are not tile layers of the manifest.
_NOT_TILE_LAYERS = ("index", TORCHGEO_CHECK)


@dataclass(frozen=True)
class PlannedMember:
    """A member to fetch: what it holds, its sizes and whether it is already on disk."""

    member: LayerMember
    compressed_size: int
    size: int
    present: bool


@dataclass
class ArchiveListing:
    """An archive's members (name -> (compressed size, size)) and how to fetch them."""

    archive: Archive
    members: dict[str, tuple[int, int]]
    remote: Any = None  # a RemoteZip when members are fetched by range requests
    local: Path | None = None  # the whole archive on disk otherwise
    whole_size: int | None = None  # dry run on a server without ranges: the archive's size


def archives_of(dataset: Dataset, overrides: Mapping[str, Any]) -> dict[str, Archive]:
    """The dataset's archives, with the mirrors of ``acquire.archives`` (url, md5) applied.

    Raises:
        ConfigError: an override names an archive the dataset does not have.
    """
    archives = dataset.archives()
    unknown = set(overrides) - set(archives)
    if unknown:
        raise ConfigError(f"acquire.archives: unknown keys {sorted(unknown)} ({sorted(archives)})")
    out = {}
    for key, a in archives.items():
        o = overrides.get(key) or {}
        md5 = o.get("md5", a.md5)
        out[key] = Archive(
            key, str(o.get("url", a.url)), a.filename, None if md5 is None else str(md5)
        )
    return out


def whole_archive_path(archive: Archive, data_dir: Path) -> Path:
    """Where a whole archive is read from or downloaded to.

    An archive a user placed in the data folder itself is read there; lcip downloads into
    ``<data folder>/archives/`` instead, so that TorchGeo's ``_verify`` never finds a whole zip
    of its ``filename`` to extract into the data folder (over 100 GB for Chesapeake).
    """
    placed = data_dir / archive.filename
    return placed if placed.exists() else data_dir / WHOLE_ARCHIVES / archive.filename


def _download_whole(archive: Archive, local: Path, opts: Mapping[str, Any]) -> None:
    """Download a whole archive, MD5-checked; a mismatch names the setting that skips it."""
    from lcip.acquire.http import download

    try:
        download(
            archive.url,
            local,
            md5=archive.md5,
            retries=opts["retries"],
            timeout=opts["timeout"],
            progress=opts["progress"],
        )
    except DownloadError as exc:
        if archive.md5 is None or "md5 mismatch" not in str(exc):
            raise
        raise DownloadError(
            f"{exc} (the MD5 is TorchGeo's; for a mirror serving another build of the archive, "
            f"+acquire.archives.{archive.key}.md5=null skips the check)"
        ) from None


def list_archive(archive: Archive, data_dir: Path, opts: Mapping[str, Any]) -> ArchiveListing:
    """The archive's members: its central directory read by range requests, or the whole file.

    A server that serves no ranges makes it download the archive whole (resumable,
    MD5-checked) into :func:`whole_archive_path` and list that.

    Args:
        archive: the archive.
        data_dir: the dataset's folder.
        opts: ``dry_run``, ``timeout``, ``retries``, ``progress``.
    """
    from lcip.acquire.http import RangeNotSupportedError, probe
    from lcip.acquire.remotezip import RemoteZip

    local = whole_archive_path(archive, data_dir)
    if not local.exists():
        try:
            remote = RemoteZip(archive.url, timeout=opts["timeout"], retries=opts["retries"])
            members = {
                m.name: (m.compressed_size, m.size) for m in remote.members.values() if not m.is_dir
            }
            log.info(
                "%s: listed %d members (%d bytes read)",
                archive.url,
                len(members),
                remote.directory_bytes,
            )
            return ArchiveListing(archive, members, remote=remote)
        except RangeNotSupportedError:
            if opts["dry_run"]:
                size = probe(archive.url, timeout=opts["timeout"]).size
                return ArchiveListing(archive, {}, whole_size=size)
            log.warning(
                "%s: the server does not serve byte ranges; downloading the whole archive to %s",
                archive.url,
                local,
            )
            _download_whole(archive, local, opts)
    try:
        with zipfile.ZipFile(local) as z:
            members = {
                i.filename: (i.compress_size, i.file_size) for i in z.infolist() if not i.is_dir()
            }
    except (OSError, zipfile.BadZipFile) as exc:
        raise DataError(
            f"{local}: not a readable zip archive ({exc}); delete it and rerun"
        ) from None
    return ArchiveListing(archive, members, local=local)


def torchgeo_checks(
    dataset: Dataset, listings: Mapping[str, ArchiveListing], picked: Sequence[LayerMember]
) -> tuple[list[LayerMember], list[str]]:
    """The members TorchGeo's ``_verify`` checks for that are not picked yet, and those missing.

    Args:
        dataset: the dataset.
        listings: the listed archives.
        picked: members already selected for the region.

    Returns:
        (members to fetch as :data:`TORCHGEO_CHECK`, checked files no listed archive holds).
    """
    have = {p.member for p in picked}
    out, missing = [], []
    for name in dataset.torchgeo_files():
        if not Path(name).suffix or name in have:
            continue  # a split folder (made after the fetch), or already fetched
        key = next((k for k, x in sorted(listings.items()) if name in x.members), None)
        if key is None:
            missing.append(name)
        else:
            out.append(LayerMember(key, name, "", "", TORCHGEO_CHECK))
    return out, missing


def plan(
    dataset: Dataset,
    listings: Mapping[str, ArchiveListing],
    source: Mapping[str, Any],
    data_dir: Path,
    torchgeo: bool = True,
) -> list[PlannedMember]:
    """The members to fetch for a region's source, with the spatial index.

    With ``torchgeo``, also the files TorchGeo's ``_verify`` checks for (one tile of another
    state or city, see :meth:`Dataset.torchgeo_files`) when the listed archives hold them all,
    so that TorchGeo's class opens the data folder; otherwise a warning says it will not.

    Raises:
        DataError: when the archives hold no tile of the region or its test tiles differ from
            ``region.source.test_tiles``.
    """
    subset, splits, layers = source["subset"], list(source["splits"]), list(source["layers"])
    picked: list[LayerMember] = []
    for key, listing in listings.items():
        wanted = [layer for layer in layers if dataset.archive_of(layer) == key]
        picked += dataset.select(key, listing.members, subset, splits, wanted)
        picked += [
            LayerMember(key, m, "", "", "index")
            for m, k in dataset.extras.items()
            if k == key and m in listing.members
        ]
    if not any(p.layer not in _NOT_TILE_LAYERS for p in picked) and all(
        listing.whole_size is None for listing in listings.values()
    ):
        raise DataError(f"{dataset.name}: the archives hold no {layers} files of {subset} {splits}")
    expected = source.get("test_tiles")
    if (
        expected is not None
        and "test" in splits
        and any(listing.members for listing in listings.values())
    ):
        found = {p.tile_id for p in picked if p.split == "test"}
        if found != set(expected):
            raise DataError(
                f"{dataset.name} {subset}: the archive's test tiles differ from "
                f"region.source.test_tiles (missing {sorted(set(expected) - found)}, "
                f"extra {sorted(found - set(expected))})"
            )
    if torchgeo and any(listing.members for listing in listings.values()):
        checks, missing = torchgeo_checks(dataset, listings, picked)
        if missing:
            log.warning(
                "%s: the archives lack %d of the files TorchGeo's _verify checks for (e.g. %s): "
                "TorchGeo's class will not open %s",
                dataset.name,
                len(missing),
                missing[0],
                data_dir,
            )
        else:
            picked += checks
    out = []
    for p in picked:
        compressed, size = listings[p.archive].members[p.member]
        dest = data_dir / p.member
        present = dest.is_file() and dest.stat().st_size == size
        out.append(PlannedMember(p, compressed, size, present))
    return out


def gigabytes(n: float) -> str:
    """Bytes as GB (or MB under 0.1 GB), two decimals."""
    return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.2f} MB"


def describe(members: Sequence[PlannedMember], listings: Mapping[str, ArchiveListing]) -> str:
    """A listing of the members to fetch, their sizes and the totals."""
    lines = [f"{'member':<100} {'download':>12} {'on disk':>12}  state"]
    for p in members:
        state = "present" if p.present else "to fetch"
        lines.append(f"{p.member.member:<100} {p.compressed_size:>12} {p.size:>12}  {state}")
    fetch = sum(p.compressed_size for p in members if not p.present)
    disk = sum(p.size for p in members)
    lines.append(
        f"{len(members)} files: {gigabytes(fetch)} to fetch "
        f"({sum(not p.present for p in members)} files), {gigabytes(disk)} on disk when extracted"
    )
    for listing in listings.values():
        if listing.whole_size is not None:
            lines.append(
                f"{listing.archive.url}: the server does not serve byte ranges, so the whole "
                f"archive ({gigabytes(listing.whole_size)}) would be downloaded first"
            )
    return "\n".join(lines)


def fetch_members(
    members: Sequence[PlannedMember],
    listings: Mapping[str, ArchiveListing],
    data_dir: Path,
    opts: Mapping[str, Any],
) -> None:
    """Fetch every planned member not already present (resumable, CRC-32 checked, atomic)."""
    from lcip.acquire.remotezip import extract_members

    by_archive: dict[str, list[str]] = defaultdict(list)
    for p in members:
        by_archive[p.member.archive].append(p.member.member)
    for key, names in by_archive.items():
        listing = listings[key]
        if listing.remote is not None:
            for name in names:
                listing.remote.extract(name, data_dir / name, progress=opts["progress"])
        else:
            extract_members(
                listing.archive.url,
                names,
                data_dir,
                archive_path=listing.local or whole_archive_path(listing.archive, data_dir),
                md5=listing.archive.md5,
                progress=opts["progress"],
            )


def complete_torchgeo_layout(dataset: Dataset, data_dir: Path) -> bool:
    """Make the split folders TorchGeo's ``_verify`` checks for, once its files are all there.

    Empty folders of the states or cities not acquired: TorchGeo checks that they exist, and
    reads only the tiles of the splits it is asked for (from the spatial index).

    Returns:
        whether TorchGeo's class now finds every file it checks for under ``data_dir``.
    """
    files = dataset.torchgeo_files()
    if not all((data_dir / f).is_file() for f in files if Path(f).suffix):
        return False
    for f in files:
        if not Path(f).suffix:
            (data_dir / f).mkdir(parents=True, exist_ok=True)
    return True


def write_manifest(
    members: Sequence[PlannedMember],
    archives: Mapping[str, Archive],
    data_dir: Path,
    path: Path,
    image_layer: str,
) -> Manifest:
    """Write the region's manifest for fetched members (checksums computed and remembered).

    Raises:
        DataError: when a tile lacks its imagery layer or appears in two splits.
    """
    from lcip.io.provenance import sha256_file
    from lcip.io.verify import remember_many

    tiles: dict[str, dict[str, LayerMember]] = defaultdict(dict)
    split_of: dict[str, str] = {}
    for p in members:
        m = p.member
        if m.layer in _NOT_TILE_LAYERS:
            continue
        if split_of.setdefault(m.tile_id, m.split) != m.split:
            raise DataError(f"tile {m.tile_id} is in splits {split_of[m.tile_id]} and {m.split}")
        tiles[m.tile_id][m.layer] = m
    out, checked = [], []
    for tile_id in sorted(tiles, key=lambda t: (split_of[t], t)):
        layers = tiles[tile_id]
        if image_layer not in layers:
            raise DataError(f"tile {tile_id}: no '{image_layer}' file in the archive")
        grid = Grid.of(data_dir / layers[image_layer].member)
        paths, meta = {}, {}
        for name, m in sorted(layers.items()):
            file = data_dir / m.member
            digest = sha256_file(file)
            checked.append((file, digest))
            paths[name] = file
            meta[f"{name}_url"] = f"{archives[m.archive].url}#{m.member}"
            meta[f"{name}_sha256"] = digest
        crs = grid.crs.to_string()
        out.append(Tile(tile_id, split_of[tile_id], crs, grid.bounds, paths, meta))
    remember_many(checked)
    manifest = Manifest(tuple(out))
    manifest.write(path)
    return Manifest.read(path)


__all__ = [
    "TORCHGEO_CHECK",
    "WHOLE_ARCHIVES",
    "ArchiveListing",
    "PlannedMember",
    "archives_of",
    "complete_torchgeo_layout",
    "describe",
    "fetch_members",
    "gigabytes",
    "list_archive",
    "plan",
    "torchgeo_checks",
    "whole_archive_path",
    "write_manifest",
]
