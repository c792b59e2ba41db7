"""Regions given as folders of per-tile files, and verification of read-only folders."""

from __future__ import annotations

import stat
from pathlib import Path

import numpy as np
import pytest

from lcip.config import compose_config
from lcip.errors import ConfigError, DataError
from lcip.io.manifest import Manifest
from lcip.io.provenance import sha256_file
from lcip.io.raster import write_raster
from lcip.io.verify import RECORD, fallback_record, verify_files
from lcip.stages.region import region
from tests.conftest import make_grid
from tests.markers import needs_realdata
from tests.paths import REALDATA

WV = REALDATA / "chesapeake_wv_patches"


def _folders(root: Path) -> Path:
    """Two tiles in train/ and val/, each a folder of naip.tif and lc.tif, and an index."""
    rows = ["split,patch,other"]
    for i, split in enumerate(("train", "val")):
        tile = f"p{i}"
        grid = make_grid(32, origin=(400000.0 + 100 * i, 4300000.0))
        rng = np.random.default_rng(i)
        folder = root / split / tile
        write_raster(folder / "naip.tif", rng.integers(0, 255, (4, 32, 32), np.uint8), grid)
        write_raster(folder / "lc.tif", rng.integers(1, 7, (1, 32, 32), np.uint8), grid, nodata=0)
        rows.append(f"{split},{tile},x")
    (root / "index.csv").write_text("\n".join(rows) + "\n")
    return root


def _cfg(tmp_path: Path, root: Path, **layers: str) -> object:
    layer_map = "{" + ",".join(f"{k}:{v}" for k, v in (layers or {"naip": "naip.tif"}).items())
    return compose_config(
        [
            "region=chesapeake_wv_patches",
            f"paths.root={tmp_path / 'out'}",
            f"region.folders.root={root}",
            "region.folders.index=index.csv",
            "~region.folders.layers",
            f"+region.folders.layers={layer_map}}}",
        ]
    )


def test_folders_become_a_verified_manifest(tmp_path: Path) -> None:
    root = _folders(tmp_path / "data")
    cfg = _cfg(tmp_path, root, naip="naip.tif", lc="lc.tif")
    path = region(cfg)  # type: ignore[arg-type]
    manifest = Manifest.read(path)
    assert [(t.tile_id, t.split) for t in manifest] == [("p0", "train"), ("p1", "val")]
    t1 = manifest.tile("p1")
    assert t1.crs == "EPSG:32618"
    assert t1.bounds == (400100.0, 4299968.0, 400132.0, 4300000.0)
    assert t1.layers["lc"] == (root / "val" / "p1" / "lc.tif").resolve()
    assert len(t1.meta["naip_sha256"]) == 64
    mtime = path.stat().st_mtime_ns
    assert region(cfg) == path and path.stat().st_mtime_ns == mtime  # up to date: not rewritten
    # A changed file is caught by the next stage that reads the manifest, naming it.
    write_raster(
        root / "val" / "p1" / "lc.tif", np.full((1, 32, 32), 2, np.uint8), make_grid(32), nodata=0
    )
    with pytest.raises(DataError, match=r"tile p1 layer 'lc'.*lc\.tif has sha256"):
        region(cfg)  # type: ignore[arg-type]


def test_bad_folder_settings_are_one_line(tmp_path: Path) -> None:
    root = _folders(tmp_path / "data")
    with pytest.raises(ConfigError, match=r"tile p0 has no file .*train/p0/nlcd\.tif"):
        region(_cfg(tmp_path, root, naip="naip.tif", nlcd="nlcd.tif"))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"region.folders.root=.*nowhere: no such folder"):
        region(_cfg(tmp_path, tmp_path / "nowhere"))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"has no 'naip' \(region.image_layer\)"):
        region(_cfg(tmp_path, root, lc="lc.tif"))  # type: ignore[arg-type]


def test_read_only_folder_is_verified_once_through_the_user_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LCIP_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "ro"
    folder.mkdir()
    f = folder / "a.bin"
    f.write_bytes(b"lcip")
    digest = sha256_file(f)
    folder.chmod(stat.S_IRUSR | stat.S_IXUSR)  # read-only by its mode bits (even for root)
    try:
        assert verify_files([(f, digest, "test")]) == 1
        assert not (folder / RECORD).exists()
        assert fallback_record(folder).is_file()
        assert verify_files([(f, digest, "test")]) == 0  # remembered in the cache
    finally:
        folder.chmod(stat.S_IRWXU)
    f.write_bytes(b"LCIP")  # same size, new content and mtime: hashed again, mismatch named
    with pytest.raises(DataError, match=r"a\.bin has sha256"):
        verify_files([(f, digest, "test")])


@needs_realdata(WV)
def test_real_wv_patches_region(tmp_path: Path) -> None:
    cfg = compose_config(
        ["region=chesapeake_wv_patches", f"paths.root={tmp_path}", f"region.folders.root={WV}"]
    )
    manifest = Manifest.read(region(cfg))
    assert len(manifest.select(["train"])) == 8 and len(manifest.select(["val"])) == 8
    assert {t.crs for t in manifest} == {"EPSG:26917"}
    assert set(manifest.layer_names) >= {"naip", "nlcd", "lc", "buildings"}
    for t in manifest:
        left, bottom, right, top = t.bounds
        assert (right - left, top - bottom) == (256.0, 256.0)
