"""Built-in cooccurrence tables: their figures and provenance, ``builtin:<name>`` and ``auto``.

The place-like regions here are generated (NAIP-shaped imagery and 30 m NLCD codes at real
locations) under a fresh ``paths.root`` that holds no labelled region: the priors must come
from the tables packaged with lcip alone.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from affine import Affine
from pyproj import Transformer
from rasterio.crs import CRS

from lcip.classes import CHESAPEAKE4, ENVIROATLAS5_RAW, NLCD_CODES, get_scheme
from lcip.config import compose_config
from lcip.errors import ConfigError
from lcip.io.manifest import Manifest, Tile
from lcip.io.provenance import PROVENANCE_TAG
from lcip.io.raster import Grid, write_raster
from lcip.priors.builtin import (
    ENVIROATLAS_ROWS,
    builtin_table,
    builtin_tables,
    choose_table,
    great_circle_km,
)
from lcip.priors.cooccurrence import Cooccurrence, LSRStatistics, count_cooccurrence
from lcip.stages.cooccurrence import cooccurrence as cooccurrence_stage
from lcip.stages.prior import prior as prior_stage
from tests.markers import needs_realdata
from tests.paths import REALDATA

NAMES = {"chesapeake4", "pittsburgh", "durham", "austin", "phoenix"}
CITIES = ("pittsburgh", "durham", "austin", "phoenix")
UPSTREAM = {  # city -> the paper's file (also in ../shared/realdata/enviroatlas_cooccurrence)
    "pittsburgh": "avg_nlcd_pa_whole_city_label_cooccurrences.npy",
    "durham": "avg_nlcd_nc_whole_city_label_cooccurrences.npy",
    "austin": "avg_nlcd_austin_tx_whole_city_no_ag_label_cooccurrences.npy",
    "phoenix": "avg_nlcd_az_whole_city_no_ag_label_cooccurrences.npy",
}
EA_REAL = REALDATA / "enviroatlas_cooccurrence"
WV = REALDATA / "chesapeake_wv_patches"
# Places (lat, lon) and the table ``auto`` must choose for a chesapeake4 region.
PLACES = [
    ("Ithaca, NY", 42.4440, -76.5019, "chesapeake4"),
    ("Washington, DC", 38.9072, -77.0369, "chesapeake4"),
    ("Charleston, WV", 38.3498, -81.6326, "chesapeake4"),
    ("Pittsburgh, PA", 40.4406, -79.9959, "chesapeake4"),  # PA: the watershed states win
    ("Columbus, OH", 39.9612, -82.9988, "pittsburgh"),
    ("Newark, NJ", 40.7357, -74.1724, "pittsburgh"),
    ("Atlanta, GA", 33.7490, -84.3880, "durham"),
    ("Houston, TX", 29.7604, -95.3698, "austin"),
    ("Denver, CO", 39.7392, -104.9903, "phoenix"),
    ("Seattle, WA", 47.6062, -122.3321, "phoenix"),
]


def _table(name: str, scheme: str = "chesapeake4") -> Cooccurrence:
    return builtin_table(name, get_scheme(scheme)).load()


# --- the tables ------------------------------------------------------------------------------


def test_every_table_has_its_shape_sums_and_provenance() -> None:
    tables = builtin_tables()
    assert {t.name for t in tables} == NAMES
    assert sorted((t.name, t.scheme) for t in tables) == sorted(
        [("chesapeake4", "chesapeake4")]
        + [(c, s) for c in CITIES for s in ("chesapeake4", "enviroatlas5_raw")]
    )
    for table in tables:
        scheme = get_scheme(table.scheme)
        coocc = table.load()
        assert coocc.matrix.shape == (scheme.num_classes, 17)
        assert coocc.class_names == scheme.classes == table.classes
        np.testing.assert_allclose(coocc.matrix.sum(axis=0), 1.0, atol=1e-12)
        assert (coocc.matrix >= 0).all()
        # nodata and NLCD classes without labelled pixels: uniform columns
        np.testing.assert_allclose(coocc.matrix[:, 0], 1 / scheme.num_classes)
        for code in coocc.uniform_codes:
            np.testing.assert_allclose(
                coocc.matrix[:, NLCD_CODES.index(code)], 1 / scheme.num_classes
            )
        prov = coocc.provenance
        assert prov is not None and prov["builtin"] == table.name and prov["scheme"] == table.scheme
        for key in ("repository", "path", "commit", "sha256", "region", "years", "counted"):
            assert prov[key], (table.name, key)
        assert re.fullmatch(r"[0-9a-f]{40}", prov["commit"])
        assert re.fullmatch(r"[0-9a-f]{64}", prov["sha256"])
        assert prov["lcip_changes"] and prov["source_scheme"]
        assert coocc.source is not None and coocc.source.startswith(f"builtin:{table.name} (")
        assert prov["commit"][:7] in coocc.source and prov["path"] in coocc.source
    # the city tables: the paper's repository; their NLCD 12 (ice / snow) column is unseen
    for name in CITIES:
        coocc = _table(name, "enviroatlas5_raw")
        assert coocc.provenance is not None
        assert coocc.provenance["repository"] == "estherrolf/implicit-posterior"
        assert coocc.provenance["path"].endswith(UPSTREAM[name])
        assert 12 in coocc.uniform_codes
    # Phoenix has no forest pixels: the three forest columns are uniform too
    assert {41, 42, 43} <= set(_table("phoenix").uniform_codes)


def test_chesapeake_table_carries_the_published_fractions_and_lsr_statistics() -> None:
    coocc = _table("chesapeake4")
    assert coocc.provenance is not None
    assert coocc.provenance["repository"] == "calebrob6/land-cover"
    assert coocc.provenance["path"] == "data/nlcd_mu.txt"
    col = {code: coocc.matrix[:, n] for n, code in enumerate(NLCD_CODES)}
    # data/nlcd_mu.txt rows (water, tree, field, built), normalized: 41 is row 8, 24 row 6
    np.testing.assert_allclose(col[41], np.array([0.00, 0.92, 0.06, 0.01]) / 0.99)
    np.testing.assert_allclose(col[24], np.array([0.01, 0.03, 0.07, 0.89]))
    np.testing.assert_allclose(col[11], np.array([0.97, 0.01, 0.01, 0.02]) / 1.01)
    np.testing.assert_allclose(col[12], 0.25)  # the published placeholder row: made uniform
    assert coocc.uniform_codes == [12]
    lsr = coocc.lsr
    assert isinstance(lsr, LSRStatistics) and lsr.source == coocc.source
    np.testing.assert_allclose(lsr.eta, coocc.matrix)
    # data/nlcd_sigma.txt row 8 (NLCD 41) squared
    np.testing.assert_allclose(
        lsr.rho2[:, NLCD_CODES.index(41)], np.square([0.03, 0.19, 0.16, 0.07])
    )
    np.testing.assert_allclose(lsr.rho2[:, 0], 0.25)


@needs_realdata(EA_REAL)
@pytest.mark.parametrize("name", CITIES)
def test_city_tables_are_the_papers_matrices(name: str) -> None:
    """The same file upstream (sha256), and its rows collapsed by hand into both schemes."""
    path = EA_REAL / UPSTREAM[name]
    five, four = _table(name, "enviroatlas5_raw"), _table(name, "chesapeake4")
    assert five.provenance is not None
    assert hashlib.sha256(path.read_bytes()).hexdigest() == five.provenance["sha256"]
    real = np.load(path)  # rows: unclassified, water, impervious, barren, tree, shrub, grass, ...
    assert real.shape == (11, 17) and not real[7:].any()
    classified = real[1:7].sum(axis=0)
    seen = classified > 0
    seen[0] = False
    expected5 = np.stack([real[1], real[2], real[3], real[4] + real[5], real[6]])
    expected4 = np.stack([real[1], real[4] + real[5], real[6], real[2] + real[3]])
    for coocc, expected in ((five, expected5), (four, expected4)):
        num = expected.shape[0]
        np.testing.assert_allclose(coocc.matrix[:, seen], expected[:, seen] / classified[seen])
        np.testing.assert_allclose(coocc.matrix[:, ~seen], 1 / num)
    assert ENVIROATLAS_ROWS[5] == 52  # shrub: merged into tree, as the scheme's prior_map does


@needs_realdata(WV)
def test_the_wv_patches_add_nothing_to_the_chesapeake_table() -> None:
    """Why lcip ships no table counted on the real WV patches: one rural tile sees 8 of the 16
    NLCD classes (no water, no dense development), all of which the published table has, and on
    its well-sampled classes it says the same thing."""
    with open(WV / "manifest.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    tiles = tuple(
        Tile(r["patch"], "train", "EPSG:26917", (0, 0, 1, 1),
             {"lc": WV / r["split"] / r["patch"] / "lc.tif",
              "nlcd": WV / r["split"] / r["patch"] / "nlcd.tif"})
        for r in rows
    )  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        wv = count_cooccurrence(Manifest(tiles), CHESAPEAKE4, progress=False)
    table = _table("chesapeake4")
    seen = [c for c in NLCD_CODES[1:] if c not in wv.uniform_codes]
    assert len(seen) <= 8 and 11 not in seen and 24 not in seen
    assert not set(seen) & set(table.uniform_codes)
    pixels = wv.pixels_per_nlcd
    for code in (c for c in seen if pixels[c] > 100_000):  # deciduous forest, pasture
        n = NLCD_CODES.index(code)
        assert wv.matrix[:, n].argmax() == table.matrix[:, n].argmax()
        assert np.abs(wv.matrix[:, n] - table.matrix[:, n]).sum() < 0.25


@pytest.mark.parametrize(("place", "lat", "lon", "expected"), PLACES)
def test_auto_chooses_by_location(place: str, lat: float, lon: float, expected: str) -> None:
    table, reason = choose_table(lon, lat, CHESAPEAKE4)
    assert (table.name, table.scheme) == (expected, "chesapeake4"), (place, reason)
    if expected == "chesapeake4":
        assert "watershed states" in reason
    else:
        assert reason.startswith(f"nearest EnviroAtlas city: {table.area['name']}")
        assert "barren" in reason and "impervious" in reason
    # a region in EnviroAtlas classes gets the nearest city's own table
    five, _ = choose_table(lon, lat, ENVIROATLAS5_RAW)
    assert five.scheme == "enviroatlas5_raw" and five.name in CITIES


def test_great_circle_distance() -> None:
    assert great_circle_km(-79.9959, 40.4406, -79.9959, 40.4406) == 0
    # Pittsburgh - Durham, about 500 km; one degree of latitude, about 111.2 km
    assert 490 < great_circle_km(-79.9959, 40.4406, -78.8986, 35.9940) < 510
    assert great_circle_km(0, 0, 0, 1) == pytest.approx(111.195, abs=0.01)


# --- stages on a place-like region without labels ---------------------------------------------

# (EPSG, easting, northing) of the tiles' top-left corner: Ithaca NY (UTM 18N), Phoenix AZ
# (UTM 12N)
ITHACA = (32618, 378_000.0, 4_702_000.0)
PHOENIX = (32612, 400_000.0, 3_702_000.0)
NLCD_PATTERN = np.array([[41, 41, 21, 81], [41, 23, 22, 81], [11, 11, 41, 71], [42, 43, 90, 95]])


def _place_region(root: Path, where: tuple[int, float, float]) -> Path:
    """Two 96 px tiles (train, val) with NAIP-shaped imagery and 30 m NLCD codes, no labels."""
    epsg, x0, y0 = where
    crs = CRS.from_epsg(epsg)
    folder = root / "regions" / "place" / "tiles"
    tiles = []
    for i, split in enumerate(("train", "val")):
        left = x0 + 96 * i
        grid = Grid(crs, Affine(1.0, 0, left, 0, -1.0, y0), 96, 96)
        rng = np.random.default_rng(i)
        naip = write_raster(
            folder / f"t{i}" / "naip.tif", rng.integers(0, 255, (4, 96, 96), np.uint8), grid
        )
        # NLCD 30 m with a 180 m halo, tiled from a fixed pattern
        codes = np.tile(NLCD_PATTERN, (4, 4))[:15, :15].astype(np.uint8)
        nlcd_grid = Grid(crs, Affine(30.0, 0, left - 180, 0, -30.0, y0 + 180), 15, 15)
        nlcd = write_raster(folder / f"t{i}" / "nlcd.tif", codes, nlcd_grid, nodata=0)
        tiles.append(
            Tile(f"t{i}", split, crs.to_string(), grid.bounds, {"naip": naip, "nlcd": nlcd})
        )
    return Manifest(tuple(tiles)).write(root / "regions" / "place" / "manifest.csv")


def _cfg(root: Path, *overrides: str) -> Any:
    return compose_config([f"paths.root={root}", "region=place", "prior=nlcd", *overrides])


def _prior_tiles(manifest: Path) -> dict[str, tuple[np.ndarray, dict[str, str]]]:
    out = {}
    for tile in Manifest.read(manifest):
        with rasterio.open(tile.layer("prior_nlcd")) as src:
            out[tile.tile_id] = (src.read(), src.tags())
    return out


def test_place_region_builds_its_prior_from_the_builtin_table(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "clean"
    _place_region(root, ITHACA)
    cfg = _cfg(root)
    assert cfg.cooccurrence.source is None and cfg.region.cooccurrence_source == "auto"
    with caplog.at_level(logging.INFO, logger="lcip.stages.cooccurrence"):
        coocc = cooccurrence_stage(cfg)
    table = _table("chesapeake4")
    lines = [r.getMessage() for r in caplog.records if "cooccurrence.source=auto" in r.getMessage()]
    assert len(lines) == 1 and "\n" not in lines[0]
    assert lines[0].startswith("cooccurrence.source=auto: builtin:chesapeake4 (the area's centre")
    lon, lat = Transformer.from_crs(ITHACA[0], 4326, always_xy=True).transform(
        ITHACA[1] + 96, ITHACA[2] - 48
    )
    assert lines[0].endswith(f"area centre {lat:.4f}, {lon:.4f})")
    np.testing.assert_array_equal(coocc.matrix, table.matrix)
    # the copy in cooccurrence.dir says where it came from, with the table's record
    written = Cooccurrence.read(root / "regions" / "place" / "cooccurrence")
    assert written.source == table.source and written.provenance == table.provenance
    assert (
        json.loads((root / "regions/place/cooccurrence/lsr_statistics.json").read_text())["source"]
        == table.source
    )
    # the prior, and its provenance
    priors = _prior_tiles(prior_stage(cfg))
    for data, tags in priors.values():
        assert tags["cooccurrence_source"] == table.source
        params = json.loads(tags[PROVENANCE_TAG])["params"]
        assert params["cooccurrence_source"] == table.source
        np.testing.assert_allclose(params["matrix"], table.matrix)
        assert np.isfinite(data).all() and np.allclose(data.sum(axis=0), 1, atol=1e-5)
    # no labelled region anywhere under the root: only the place region's own folder
    assert sorted(p.name for p in (root / "regions").iterdir()) == ["place"]
    assert not (root / "data").exists()


def test_place_region_elsewhere_and_overridden(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "phoenix"
    _place_region(root, PHOENIX)
    with caplog.at_level(logging.INFO, logger="lcip.stages.cooccurrence"):
        auto = _prior_tiles(prior_stage(_cfg(root)))
    phoenix = _table("phoenix")
    assert any(
        "builtin:phoenix (nearest EnviroAtlas city: Phoenix, AZ, " in r.getMessage()
        for r in caplog.records
    )
    assert all(tags["cooccurrence_source"] == phoenix.source for _, tags in auto.values())
    durham = _table("durham")
    named = _prior_tiles(prior_stage(_cfg(root, "cooccurrence.source=builtin:durham")))
    for tile_id, (data, tags) in named.items():
        assert tags["cooccurrence_source"] == durham.source
        assert not np.allclose(data, auto[tile_id][0], atol=1e-3)  # another matrix, another prior


def test_builtin_prior_equals_the_same_matrix_given_as_csv(tmp_path: Path) -> None:
    root = tmp_path / "root"
    _place_region(root, ITHACA)
    durham = _table("durham")
    by_name = _prior_tiles(prior_stage(_cfg(root, "cooccurrence.source=builtin:durham")))
    csv_path = tmp_path / "durham.csv"
    csv_path.write_text(durham.to_csv())
    by_file = _prior_tiles(prior_stage(_cfg(root, f"cooccurrence.source={csv_path}")))
    assert by_name.keys() == by_file.keys() == {"t0", "t1"}
    for tile_id, (data, tags) in by_name.items():
        other, other_tags = by_file[tile_id]
        np.testing.assert_array_equal(data, other)
        assert tags["cooccurrence_source"].startswith(
            "builtin:durham (chesapeake4; estherrolf/implicit-posterior@3f7441f "
        )
        assert other_tags["cooccurrence_source"] == str(csv_path)
        params = json.loads(tags[PROVENANCE_TAG])["params"]
        other_params = json.loads(other_tags[PROVENANCE_TAG])["params"]
        assert params.pop("cooccurrence_source") != other_params.pop("cooccurrence_source")
        assert params == other_params


def test_unknown_or_mismatched_tables_fail_in_one_line(tmp_path: Path) -> None:
    root = tmp_path / "root"
    _place_region(root, ITHACA)
    with pytest.raises(ConfigError) as unknown:
        cooccurrence_stage(_cfg(root, "cooccurrence.source=builtin:foo"))
    message = str(unknown.value)
    assert "\n" not in message
    assert message.startswith("cooccurrence.source=builtin:foo: no built-in cooccurrence table")
    for name in NAMES:
        assert f"builtin:{name} (" in message
    # chesapeake4 exists in its own scheme only: refused for an EnviroAtlas-class region
    ea = ["region.scheme=enviroatlas5_raw"]
    with pytest.raises(ConfigError) as mismatch:
        cooccurrence_stage(_cfg(root, *ea, "cooccurrence.source=builtin:chesapeake4"))
    message = str(mismatch.value)
    assert "\n" not in message
    assert message.startswith("cooccurrence.source=builtin:chesapeake4: the built-in table is")
    assert "['chesapeake4']" in message and "'enviroatlas5_raw'" in message
    assert "choose a table in its scheme (builtin:austin (enviroatlas5_raw), " in message
    # ... where builtin:durham is the paper's own 5-class matrix
    five = cooccurrence_stage(_cfg(root, *ea, "cooccurrence.source=builtin:durham"))
    np.testing.assert_array_equal(five.matrix, _table("durham", "enviroatlas5_raw").matrix)
    assert five.class_names == ENVIROATLAS5_RAW.classes
    # auto without the region's manifest: one line naming the remedy
    with pytest.raises(ConfigError) as missing:
        cooccurrence_stage(_cfg(tmp_path / "empty"))
    message = str(missing.value)
    assert "\n" not in message and message.startswith("cooccurrence.source=auto: ")
    assert "manifest.csv does not exist" in message
