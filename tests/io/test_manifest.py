from pathlib import Path

import pytest

from lcip.errors import ManifestError
from lcip.io.manifest import Manifest


def test_roundtrip_relative_paths(fake_region: Manifest, tmp_path: Path) -> None:
    text = (tmp_path / "manifest.csv").read_text().splitlines()
    assert text[0].startswith("tile_id,split,crs,left,bottom,right,top,naip,lc,prior")
    assert "naip/t0.tif" in text[1]  # stored relative to the manifest's folder
    back = Manifest.read(tmp_path / "manifest.csv")
    assert [t.tile_id for t in back] == ["t0", "t1", "t2", "t3"]
    assert back.tile("t2").layer("naip") == (tmp_path / "naip" / "t2.tif").resolve()
    assert back.tile("t0").bounds == (400000.0, 4299904.0, 400096.0, 4300000.0)
    assert back.tile("t0").crs == "EPSG:32618"


def test_select_and_with_layer(fake_region: Manifest, tmp_path: Path) -> None:
    train = fake_region.select("train")
    assert [t.tile_id for t in train] == ["t0", "t1"]
    assert [t.tile_id for t in fake_region.select(["val", "test"])] == ["t2", "t3"]
    added = train.with_layer("extra", {"t0": tmp_path / "x.tif"})
    assert "extra" in added.tile("t0").layers and "extra" not in added.tile("t1").layers
    with pytest.raises(ManifestError, match="unknown tile ids"):
        fake_region.select(tile_ids=["nope"])


def test_missing_file_named(fake_region: Manifest, tmp_path: Path) -> None:
    (tmp_path / "lc" / "t1.tif").unlink()
    with pytest.raises(ManifestError, match=r"tile t1 layer 'lc' names a missing file .*t1\.tif"):
        Manifest.read(tmp_path / "manifest.csv").check_files()


def test_malformed(tmp_path: Path) -> None:
    bad = tmp_path / "m.csv"
    bad.write_text("tile_id,split\nx,train\n")
    with pytest.raises(ManifestError, match="missing columns"):
        Manifest.read(bad)
    with pytest.raises(ManifestError, match="does not exist"):
        Manifest.read(tmp_path / "none.csv")
    dup = tmp_path / "d.csv"
    dup.write_text(
        "tile_id,split,crs,left,bottom,right,top\na,train,EPSG:32618,0,0,1,1\na,val,EPSG:32618,0,0,1,1\n"
    )
    with pytest.raises(ManifestError, match="duplicate tile_id 'a'"):
        Manifest.read(dup)


def test_meta_columns_are_not_layers(fake_region: Manifest, tmp_path: Path) -> None:
    from dataclasses import replace

    t0 = fake_region.tile("t0")
    meta = {"lc_url": "https://x/lc.tif", "lc_fraction": "0.4213"}
    tiles = [replace(t, meta=meta) if t.tile_id == "t0" else t for t in fake_region]
    back = Manifest.read(Manifest(tuple(tiles)).write(tmp_path / "m2.csv"))
    assert back.tile("t0").meta == meta
    assert set(back.tile("t0").layers) == set(t0.layers)  # lc_fraction is no layer file
