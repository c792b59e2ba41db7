"""Tests of cooccurrence counting, normalization and files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from affine import Affine
from rasterio.crs import CRS

from lcip.classes import CHESAPEAKE4, ENVIROATLAS5, IGNORE_INDEX, NLCD_CODES
from lcip.errors import ConfigError, DataError
from lcip.io.manifest import Manifest, Tile
from lcip.io.raster import Grid, write_raster
from lcip.priors.cooccurrence import (
    Cooccurrence,
    count_cooccurrence,
    count_pairs,
    normalize_counts,
)
from tests.markers import needs_realdata
from tests.paths import REALDATA

UTM = CRS.from_epsg(32618)
# NLCD 30 m grid origin, deliberately not on the 1 m tile grid's 30 m multiples.
NLCD_ORIGIN = (499_993.0, 4_400_017.0)


def _write_nlcd(path: Path, codes: np.ndarray, origin=NLCD_ORIGIN, res: float = 30.0) -> Path:
    grid = Grid(UTM, Affine(res, 0, origin[0], 0, -res, origin[1]), *codes.shape)
    return write_raster(path, codes.astype(np.uint8), grid, nodata=0)


def _tile_grid(col: int, row: int, height: int = 55, width: int = 70) -> Grid:
    """A 1 m tile grid inside the NLCD raster, tiles laid out on a (row, col) lattice."""
    left = 500_000.0 + col * width
    top = 4_400_000.0 - row * height
    return Grid(UTM, Affine(1.0, 0, left, 0, -1.0, top), height, width)


def _fake_region(tmp_path: Path, seed: int = 0, splits=("train", "train", "val")):
    """Region-wide 30 m NLCD (with nodata and a code that never occurs) and labelled tiles."""
    rng = np.random.default_rng(seed)
    present = [11, 21, 22, 41, 42, 81, 82]
    codes = rng.choice(present, size=(12, 12))
    codes[rng.random(codes.shape) < 0.1] = 0
    nlcd_path = _write_nlcd(tmp_path / "nlcd.tif", codes)
    tiles = []
    for i, split in enumerate(splits):
        grid = _tile_grid(i, i % 2)
        labels = rng.choice([0, 1, 2, 3, 4, 5, 6, 15], size=grid.shape).astype(np.uint8)
        lc = write_raster(tmp_path / f"lc_{i}.tif", labels, grid, nodata=0)
        tiles.append(Tile(f"t{i}", split, "EPSG:32618", grid.bounds, {"lc": lc, "nlcd": nlcd_path}))
    return Manifest(tuple(tiles)), codes


def _brute_force(manifest: Manifest, codes: np.ndarray, scheme) -> np.ndarray:
    """Pixel-by-pixel count with Python loops: centre -> NLCD cell -> (class, code)."""
    import rasterio

    mapping = scheme.prior_map or scheme.label_map
    counts = np.zeros((scheme.num_classes, len(NLCD_CODES)), dtype=np.int64)
    for tile in manifest:
        with rasterio.open(tile.layer("lc")) as src:
            labels, transform = src.read(1), src.transform
        for row in range(labels.shape[0]):
            for col in range(labels.shape[1]):
                x, y = transform * (col + 0.5, row + 0.5)
                i = math.floor((NLCD_ORIGIN[1] - y) / 30.0)
                j = math.floor((x - NLCD_ORIGIN[0]) / 30.0)
                inside = 0 <= i < codes.shape[0] and 0 <= j < codes.shape[1]
                code = int(codes[i, j]) if inside else 0
                label = int(labels[row, col])
                if code != 0 and label in mapping:
                    counts[mapping[label], NLCD_CODES.index(code)] += 1
    return counts


def test_counts_match_brute_force(tmp_path):
    manifest, codes = _fake_region(tmp_path)
    with pytest.warns(UserWarning, match="uniform"):
        coocc = count_cooccurrence(manifest, CHESAPEAKE4, progress=False)
    expected = _brute_force(manifest, codes, CHESAPEAKE4)
    assert expected.sum() > 5000
    np.testing.assert_array_equal(coocc.counts, expected)
    np.testing.assert_allclose(coocc.matrix.sum(axis=0), 1.0, atol=1e-12)
    seen = expected.sum(axis=0) > 0
    np.testing.assert_allclose(coocc.matrix[:, seen], expected[:, seen] / expected[:, seen].sum(0))
    assert coocc.tiles == ["t0", "t1", "t2"]
    assert coocc.scheme_name == "chesapeake4"
    assert coocc.class_names == CHESAPEAKE4.classes


def test_per_tile_1m_nlcd_and_scheme_name(tmp_path):
    """A 1 m per-tile NLCD raster (aligned, read by window) gives the same counts."""
    manifest, codes = _fake_region(tmp_path, seed=1, splits=("train",))
    tile = manifest.tiles[0]
    grid = Grid.of(tile.layer("lc"))
    rows = np.floor((NLCD_ORIGIN[1] - (grid.transform.f - np.arange(grid.height) - 0.5)) / 30)
    cols = np.floor((grid.transform.c + np.arange(grid.width) + 0.5 - NLCD_ORIGIN[0]) / 30)
    nlcd_1m = codes[rows.astype(int)][:, cols.astype(int)]
    path = write_raster(tmp_path / "nlcd_1m.tif", nlcd_1m.astype(np.uint8), grid, nodata=0)
    one = Manifest((tile.with_layers(nlcd1m=path),))
    with pytest.warns(UserWarning):
        a = count_cooccurrence(one, "chesapeake4", nlcd_layer="nlcd1m", progress=False)
    np.testing.assert_array_equal(a.counts, _brute_force(one, codes, CHESAPEAKE4))


def test_uniform_column_and_warning_names_code(tmp_path):
    manifest, codes = _fake_region(tmp_path)
    with pytest.warns(UserWarning, match=r"no labelled pixels for NLCD codes \[12, .*95\]"):
        coocc = count_cooccurrence(manifest, CHESAPEAKE4, progress=False)
    totals = _brute_force(manifest, codes, CHESAPEAKE4).sum(axis=0)
    assert coocc.uniform_codes == [c for n, c in enumerate(NLCD_CODES) if n and not totals[n]]
    for code in (0, 12, 95):
        np.testing.assert_allclose(coocc.matrix[:, NLCD_CODES.index(code)], 0.25)
    assert coocc.counts[:, 0].sum() == 0  # nodata never counted
    assert 95 in coocc.uniform_codes and 11 not in coocc.uniform_codes


def test_normalize_counts_without_pixels():
    matrix, empty = normalize_counts(np.zeros((3, 17), dtype=np.int64))
    np.testing.assert_allclose(matrix, 1 / 3)
    assert empty == list(NLCD_CODES[1:])


def test_refuses_test_tiles(tmp_path):
    manifest, _ = _fake_region(tmp_path, splits=("train", "test", "test"))
    with pytest.raises(ConfigError, match=r"2 test tile\(s\) \(t1, t2\)"):
        count_cooccurrence(manifest, CHESAPEAKE4, progress=False)
    with pytest.warns(UserWarning):
        coocc = count_cooccurrence(manifest, CHESAPEAKE4, allow_test=True, progress=False)
    assert coocc.tiles == ["t0", "t1", "t2"]
    with pytest.raises(ConfigError, match="no tiles"):
        count_cooccurrence(Manifest(()), CHESAPEAKE4, progress=False)


def test_unknown_nlcd_code_names_file(tmp_path):
    manifest, codes = _fake_region(tmp_path, splits=("train",))
    codes = codes.copy()
    codes[:] = 13
    bad = _write_nlcd(tmp_path / "bad_nlcd.tif", codes)
    tile = manifest.tiles[0]
    with pytest.raises(DataError, match=r"bad_nlcd\.tif.*\[13\]"):
        count_pairs(tile.layer("lc"), bad, CHESAPEAKE4)


def test_write_read_round_trip(tmp_path):
    manifest, _ = _fake_region(tmp_path)
    with pytest.warns(UserWarning):
        coocc = count_cooccurrence(manifest, CHESAPEAKE4, progress=False)
    csv_path = coocc.write(tmp_path / "out")
    out = tmp_path / "out"
    assert csv_path == out / "cooccurrence.csv"
    assert sorted(p.name for p in out.iterdir()) == [
        "cooccurrence.csv",
        "cooccurrence.json",
        "cooccurrence.png",
        "lsr_statistics.json",  # label super-resolution statistics (tests/losses/test_lsr.py)
    ]
    header = csv_path.read_text().splitlines()[0]
    assert header == "class," + ",".join(str(c) for c in NLCD_CODES)
    assert csv_path.read_text().splitlines()[1].startswith("water,")
    assert (out / "cooccurrence.png").read_bytes()[:4] == b"\x89PNG"
    meta = json.loads((out / "cooccurrence.json").read_text())
    assert meta["tiles"] == ["t0", "t1", "t2"]
    assert meta["scheme"] == "chesapeake4"
    assert meta["pixels_per_nlcd"]["21"] == int(coocc.counts[:, NLCD_CODES.index(21)].sum())
    assert meta["lcip_version"] and meta["created"]
    for source in (out, csv_path):
        back = Cooccurrence.read(source)
        np.testing.assert_array_equal(back.matrix, coocc.matrix)
        np.testing.assert_array_equal(back.counts, coocc.counts)
        assert back.class_names == coocc.class_names
        assert (back.scheme_name, back.tiles, back.created) == (
            coocc.scheme_name,
            coocc.tiles,
            coocc.created,
        )


def test_read_without_json_and_bad_files(tmp_path):
    coocc = Cooccurrence.from_counts(np.ones((4, 17), dtype=np.int64), CHESAPEAKE4, ["a"])
    path = tmp_path / "m.csv"
    path.write_text(coocc.to_csv())
    back = Cooccurrence.read(path)
    np.testing.assert_array_equal(back.matrix, coocc.matrix)
    assert back.scheme_name == "unknown" and back.tiles == []
    bad = tmp_path / "bad.csv"
    bad.write_text("class,0,11\nwater,1,1\n")
    with pytest.raises(DataError, match=r"bad\.csv: header"):
        Cooccurrence.read(bad)
    text = coocc.to_csv().replace("0.25", "0.5", 1)
    bad.write_text(text)
    with pytest.raises(DataError, match=r"bad\.csv: columns for NLCD codes \[0\]"):
        Cooccurrence.read(bad)
    with pytest.raises(DataError, match="does not exist"):
        Cooccurrence.read(tmp_path / "missing.csv")


def _real_matrices() -> list[Path]:
    folder = REALDATA / "enviroatlas_cooccurrence"
    return sorted(folder.glob("avg_nlcd_*.npy")) if folder.is_dir() else []


@needs_realdata(REALDATA / "enviroatlas_cooccurrence")
@pytest.mark.parametrize("which", ["pa", "az"])
def test_enviroatlas_shaped_counts(tmp_path, which):
    """Labels sampled per pixel from a real P(EnviroAtlas label | NLCD) give it back."""
    path = next(p for p in _real_matrices() if p.name.startswith(f"avg_nlcd_{which}"))
    real = np.load(path)  # (11, 17): rows = EnviroAtlas codes 0..10
    assert real.shape == (11, 17)
    # Expected: rows collapsed to the 5 classes with the scheme's prior map (0 is ignored).
    collapsed = np.zeros((5, 17))
    for code, cls in ENVIROATLAS5.prior_map.items():
        collapsed[cls] += real[code]
    mass = collapsed.sum(axis=0)
    usable = [n for n in range(1, 17) if mass[n] > 0.5]
    rng = np.random.default_rng(0)
    balanced = rng.permutation(16 * 16) % len(usable)  # every usable code on ~equal cells
    codes = np.array([NLCD_CODES[n] for n in usable])[balanced].reshape(16, 16)
    _write_nlcd(tmp_path / "nlcd.tif", codes)
    grid = _tile_grid(0, 0, 450, 450)
    # Sample a label per pixel from the NLCD column at the pixel (nearest NLCD cell).
    rows = np.floor((NLCD_ORIGIN[1] - (grid.transform.f - np.arange(450) - 0.5)) / 30)
    cols = np.floor((grid.transform.c + np.arange(450) + 0.5 - NLCD_ORIGIN[0]) / 30)
    pix_codes = codes[rows.astype(int)][:, cols.astype(int)]
    cdf = np.cumsum(real, axis=0)
    cdf_at = cdf[:, np.searchsorted(NLCD_CODES, pix_codes)]  # (11, H, W)
    labels = (rng.random(grid.shape)[None] > cdf_at).sum(axis=0).clip(0, 10).astype(np.uint8)
    lc = write_raster(tmp_path / "lc.tif", labels, grid, nodata=None)
    manifest = Manifest(
        (Tile("ea", "train", "EPSG:32618", grid.bounds, {"lc": lc, "nlcd": tmp_path / "nlcd.tif"}),)
    )
    with pytest.warns(UserWarning):
        coocc = count_cooccurrence(manifest, ENVIROATLAS5, progress=False)
    assert coocc.matrix.shape == (5, 17)
    assert ENVIROATLAS5.map_labels(np.array([0]), for_prior=True)[0] == IGNORE_INDEX
    expected = collapsed[:, usable] / mass[usable]
    got = coocc.matrix[:, usable]
    pixels = coocc.counts[:, usable].sum(axis=0)
    assert pixels.min() > 5000
    assert np.abs(got - expected).max() < 0.03


WV = REALDATA / "chesapeake_wv_patches"


@needs_realdata(WV)
def test_real_chesapeake_patches():
    """Real 1 m NLCD + Chesapeake labels (WV): every labelled pixel counted, plausible matrix."""
    import csv

    with open(WV / "manifest.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["split"] == "train"]
    folders = [WV / "train" / r["patch"] for r in rows]
    tiles = tuple(
        Tile(
            d.name,
            "train",
            "EPSG:26917",
            (0, 0, 1, 1),
            {"lc": d / "lc.tif", "nlcd": d / "nlcd.tif"},
        )
        for d in folders
    )
    with pytest.warns(UserWarning):
        coocc = count_cooccurrence(Manifest(tiles), CHESAPEAKE4, progress=False)
    labelled = sum(int(r[f"lc_{c}"]) for r in rows for c in range(1, 7))
    assert coocc.counts.sum() == labelled
    forest = coocc.matrix[:, NLCD_CODES.index(41)]
    assert forest.argmax() == CHESAPEAKE4.classes.index("tree canopy") and forest.max() > 0.8
