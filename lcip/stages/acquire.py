"""Stage ``acquire``: fetch a real region's files and write its verified manifest.

For a region with a ``source`` (see :mod:`lcip.acquire.datasets`), the stage

1. lists each archive it needs: through HTTP range requests it reads only the zip's central
   directory (or lists a whole archive already on disk); a server that does not serve ranges
   makes it download the whole archive (resumable, MD5-checked) into ``<data>/archives/`` and
   list that;
2. selects the members of the region's subset, splits and layers (plus TorchGeo's spatial
   index and, with ``acquire.torchgeo_layout`` (default true), the one tile of another state
   or city that TorchGeo's ``_verify`` checks for), and with ``acquire.dry_run=true`` prints
   them with their sizes and stops;
3. fetches each member that is not already present (resumable, CRC-32 checked, atomic), then
   makes the (empty) split folders TorchGeo checks for, so that
   ``torchgeo.datasets.ChesapeakeCVPR`` / ``EnviroAtlas`` open ``<data>/<dataset>`` for the
   acquired splits without finding, or extracting, any whole archive;
4. writes the manifest: tile id, split, CRS and bounds (from the imagery), one column per
   layer, and ``<layer>_url`` / ``<layer>_sha256`` per file. The checksums are remembered
   (:mod:`lcip.io.verify`), so stages reading the manifest detect a changed file cheaply.

A rerun whose settings match ``acquire.json`` beside the manifest and whose files all verify
makes no network request.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from omegaconf import DictConfig

import lcip
from lcip.acquire.archives import (
    archives_of,
    complete_torchgeo_layout,
    describe,
    fetch_members,
    gigabytes,
    list_archive,
    plan,
    write_manifest,
)
from lcip.acquire.datasets import get_dataset
from lcip.acquire.stamp import SETTINGS_FILE
from lcip.acquire.stamp import up_to_date as _up_to_date
from lcip.config import to_dict
from lcip.errors import ConfigError
from lcip.io.atomic import write_text
from lcip.stages.paths import region_manifest_path

log = logging.getLogger(__name__)


def acquire(cfg: DictConfig, force: bool = False) -> Path | None:
    """Fetch the configured region's files and write its manifest (see the module doc).

    Args:
        cfg: composed config (``region`` with a ``source``, ``acquire``).
        force: list and check every archive again even when the manifest is up to date
            (files already present and whole are still not fetched again).

    Returns:
        the region's manifest, or None for a dry run.

    Raises:
        ConfigError: for a region without a source or bad source settings.
        DownloadError: one line naming the URL when a transfer fails.
    """
    force = force or bool(cfg.get("force", False))
    if cfg.region.get("source") is None:
        raise ConfigError(
            f"region={cfg.region.name}: has no `source` to acquire (a generated region: "
            "use lcip-region)"
        )
    source = to_dict(cfg.region.source)
    from lcip.acquire.http import configure_rate_limits

    limits = cfg.acquire.get("rate_limits")  # every request below waits for them
    configure_rate_limits(None if limits is None else to_dict(limits))
    if source.get("dataset") == "place":  # any US area: NAIP through STAC, NLCD, OSM, ...
        from lcip.stages.acquire_place import acquire_place

        return acquire_place(cfg, force)
    dataset = get_dataset(str(source["dataset"]))
    dataset.check(str(source["subset"]), list(source["splits"]), list(source["layers"]))
    opts = {
        "dry_run": bool(cfg.acquire.dry_run),
        "timeout": float(cfg.acquire.timeout),
        "retries": int(cfg.acquire.retries),
        "progress": bool(cfg.acquire.progress),
    }
    data_dir = Path(cfg.acquire.dir) / dataset.name
    archives = archives_of(dataset, to_dict(cfg.acquire.get("archives") or {}))
    needed = {dataset.archive_of(layer) for layer in source["layers"]}
    needed |= {k for k in dataset.extras.values()}
    archives = {k: a for k, a in archives.items() if k in needed}
    manifest_path = region_manifest_path(cfg)
    settings = {
        "source": source,
        "archives": {k: a.url for k, a in sorted(archives.items())},
        "lcip_version": lcip.__version__,
    }
    stamp = manifest_path.parent / SETTINGS_FILE
    if not force and not opts["dry_run"] and _up_to_date(manifest_path, stamp, settings):
        log.info("region %s is up to date: %s", cfg.region.name, manifest_path)
        return manifest_path
    data_dir.mkdir(parents=True, exist_ok=True)
    listings = {k: list_archive(a, data_dir, opts) for k, a in sorted(archives.items())}
    torchgeo = bool(cfg.acquire.get("torchgeo_layout", True))
    members = plan(dataset, listings, source, data_dir, torchgeo=torchgeo)
    if opts["dry_run"]:
        print(describe(members, listings))
        return None
    log.info(
        "%s %s: %d files, %s to fetch",
        dataset.name,
        source["subset"],
        len(members),
        gigabytes(sum(p.compressed_size for p in members if not p.present)),
    )
    fetch_members(members, listings, data_dir, opts)
    if torchgeo and complete_torchgeo_layout(dataset, data_dir):
        log.info("%s opens in TorchGeo's own dataset class (root=%s)", dataset.name, data_dir)
    write_manifest(members, archives, data_dir, manifest_path, str(cfg.region.image_layer))
    write_text(stamp, json.dumps(settings, indent=1, sort_keys=True))
    log.info("region %s: manifest %s", cfg.region.name, manifest_path)
    return manifest_path


__all__ = ["acquire"]
