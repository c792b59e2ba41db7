"""Where priors come from: published prior layers, NLCD stored as indices, already rasterized
vector layers, borrowed cooccurrence matrices, and the raw EnviroAtlas class scheme."""

from __future__ import annotations

import json
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import rasterio
from affine import Affine

from lcip.classes import (
    CHESAPEAKE4,
    ENVIROATLAS5,
    ENVIROATLAS5_RAW,
    IGNORE_INDEX,
    get_scheme,
    nlcd_to_index,
)
from lcip.config import compose_config
from lcip.errors import ConfigError, DataError, GridMismatchError
from lcip.io.manifest import Manifest
from lcip.io.provenance import PROVENANCE_TAG, fingerprint
from lcip.io.raster import Grid, write_raster
from lcip.priors.build import VectorLayersJob, run_tile_jobs
from lcip.priors.cooccurrence import Cooccurrence, count_pairs
from lcip.priors.nlcd import read_nlcd_index
from lcip.priors.recipes import (
    WITHOUT_COOCCURRENCE,
    PriorRequest,
    build_prior,
    needs_cooccurrence,
)
from lcip.priors.vectors import LAYER_NAMES
from lcip.stages.cooccurrence import cooccurrence as cooccurrence_stage
from lcip.stages.prior import prior as prior_stage
from lcip.stages.region import region as region_stage
from tests.conftest import make_grid
from tests.priors.test_prior_recipes import FUSED, NLCD

PUBLISHED: dict[str, Any] = {
    "name": "published",
    "recipe": "published",
    "layer": "paper_prior",
    "scale": 255.0,
    "smoothing": 1e-4,
}
HALO = 4  # the largest fused blur radius


def _request(
    root: Path,
    matrix: npt.NDArray[np.float64] | None,
    settings: dict[str, Any],
    manifest: Manifest | None = None,
    out: str | None = None,
    **kwargs: Any,
) -> PriorRequest:
    return PriorRequest(
        manifest=manifest or Manifest.read(root / "manifest.csv"),
        scheme=CHESAPEAKE4,
        region_dir=root,
        out_dir=root / "priors" / (out or str(settings["name"])),
        cooccurrence=matrix,
        settings=settings,
        nlcd_layer=kwargs.pop("nlcd_layer", "nlcd_30m"),
        **kwargs,
    )


def _read(path: Path) -> tuple[npt.NDArray[np.float32], dict[str, str]]:
    with rasterio.open(path) as src:
        return src.read(), src.tags()


def _counts(out_dir: Path) -> dict[str, int]:
    counts: dict[str, int] = json.loads((out_dir / "report.json").read_text())["counts"]
    return counts


def _statuses(out_dir: Path) -> dict[str, str]:
    tiles = json.loads((out_dir / "report.json").read_text())["tiles"]
    return {t["tile_id"]: t["status"] for t in tiles}


# --- published priors --------------------------------------------------------------------


def _with_published(root: Path, seed: int = 0, bands: int = 4) -> Manifest:
    """Add a uint8 published prior layer (zeros on a corner block = no prior) to each tile."""
    manifest = Manifest.read(root / "manifest.csv")
    rng = np.random.default_rng(seed)
    paths = {}
    for tile in manifest:
        grid = Grid.of(tile.layer("naip"))
        data = rng.integers(0, 256, size=(bands, *grid.shape)).astype(np.uint8)
        data[:, :20, :30] = 0  # no prior there
        paths[tile.tile_id] = write_raster(root / "published" / f"{tile.tile_id}.tif", data, grid)
    out = manifest.with_layer("paper_prior", paths)
    return Manifest.read(out.write(root / "manifest.csv"))


def test_published_prior_is_converted_to_lcip_priors(region: Path) -> None:
    manifest = _with_published(region)
    assert "published" in WITHOUT_COOCCURRENCE and not needs_cooccurrence("published")
    assert needs_cooccurrence("nlcd") and not needs_cooccurrence("bogus")
    request = _request(region, None, PUBLISHED, manifest)  # no cooccurrence matrix at all
    out = Manifest.read(build_prior(request))
    assert _counts(request.out_dir) == {"written": 4, "skipped": 0, "no_valid": 0}
    for tile in out:
        prior, tags = _read(tile.layer("prior_published"))
        with rasterio.open(tile.layer("prior_published")) as src:
            assert src.descriptions == CHESAPEAKE4.classes and src.dtypes == ("float32",) * 4
        source = rasterio.open(manifest.tile(tile.tile_id).layer("paper_prior")).read()
        p = source.astype(np.float64) / 255.0 + 1e-4
        expected = p / p.sum(0)
        invalid = (source == 0).all(0)
        assert invalid[:20, :30].all() and invalid.sum() == 600
        assert np.isnan(prior[:, invalid]).all() and np.isfinite(prior[:, ~invalid]).all()
        np.testing.assert_allclose(prior[:, ~invalid], expected[:, ~invalid], rtol=1e-5)
        np.testing.assert_allclose(prior[:, ~invalid].sum(0), 1.0, atol=1e-5)
        record = json.loads(tags[PROVENANCE_TAG])
        assert tags["recipe"] == "published" and record["params"]["layer"] == "paper_prior"
        assert record["inputs"] == {
            "image": fingerprint(tile.layer("naip")),
            "published": fingerprint(manifest.tile(tile.tile_id).layer("paper_prior")),
        }
    # idempotent; force rewrites; a changed published file rebuilds only its tile
    build_prior(request)
    assert _counts(request.out_dir)["skipped"] == 4
    build_prior(replace(request, force=True))
    assert _counts(request.out_dir)["written"] == 4
    path = manifest.tile("r1c0").layer("paper_prior")
    data = rasterio.open(path).read()
    data[0, 50:60, 50:60] = 255
    write_raster(path, data, Grid.of(path))
    build_prior(request)
    assert _statuses(request.out_dir) == {
        "r0c0": "skipped",
        "r0c1": "skipped",
        "r1c0": "written",
        "r1c1": "skipped",
    }
    smoother = build_prior(replace(request, settings={**PUBLISHED, "smoothing": 0.01}))
    assert _counts(request.out_dir)["written"] == 4 and smoother.exists()


def test_published_prior_errors_are_one_line(region: Path) -> None:
    manifest = _with_published(region, bands=3)
    with pytest.raises(DataError) as info:
        build_prior(_request(region, None, PUBLISHED, manifest))
    message = str(info.value)
    assert "\n" not in message and "published/r0c0.tif" in message
    assert "3 band(s)" in message and "4 classes" in message
    missing = {**PUBLISHED, "layer": "prior_other"}
    with pytest.raises(ConfigError) as no_layer:
        build_prior(_request(region, None, missing, manifest))
    message = str(no_layer.value)
    assert "\n" not in message
    assert message.startswith("prior.layer=prior_other: 4 tile(s) of ")
    assert "have no 'prior_other' layer" in message
    with pytest.raises(ConfigError, match=r"^prior\.scale"):
        build_prior(_request(region, None, {k: v for k, v in PUBLISHED.items() if k != "scale"}))
    with pytest.raises(ConfigError, match="needs a cooccurrence matrix"):
        build_prior(_request(region, None, NLCD))


# --- NLCD stored as indices ------------------------------------------------------------------


def _index_copy(path: Path, out: Path) -> Path:
    """The NLCD raster with codes replaced by indices 0..16 (same grid, nodata 0)."""
    with rasterio.open(path) as src:
        codes, grid = src.read(1), Grid(src.crs, src.transform, src.height, src.width)
    return write_raster(out, nlcd_to_index(codes), grid, nodata=0)


def test_nlcd_index_encoding_reads_counts_and_builds_like_codes(
    region: Path, template: tuple[Path, npt.NDArray[np.float64]]
) -> None:
    codes_path = region / "nlcd_30m.tif"
    index_path = _index_copy(codes_path, region / "nlcd_index.tif")
    tile = Manifest.read(region / "manifest.csv").tiles[0]
    grid = Grid.of(tile.layer("naip"))
    by_codes = read_nlcd_index(codes_path, grid, halo=7)
    assert len(np.unique(by_codes)) > 3
    np.testing.assert_array_equal(
        read_nlcd_index(index_path, grid, halo=7, encoding="index"), by_codes
    )
    np.testing.assert_array_equal(
        count_pairs(tile.layer("lc"), index_path, CHESAPEAKE4, nlcd_encoding="index"),
        count_pairs(tile.layer("lc"), codes_path, CHESAPEAKE4),
    )
    # codes read as indices: refused in one line naming the file and the setting
    with pytest.raises(DataError) as info:
        read_nlcd_index(codes_path, grid, encoding="index")
    assert "\n" not in str(info.value) and str(info.value).startswith(f"{codes_path}: NLCD values")
    assert "region.nlcd_encoding=index" in str(info.value)
    with pytest.raises(ConfigError, match=r"^region\.nlcd_encoding='indices': unknown"):
        read_nlcd_index(index_path, grid, encoding="indices")

    manifest = Manifest.read(region / "manifest.csv")
    indexed = manifest.with_layer("nlcd_index", {t.tile_id: index_path for t in manifest})
    matrix = template[1]
    for settings in (NLCD, FUSED):
        a = _request(region, matrix, settings, manifest, out=f"{settings['name']}_codes")
        b = _request(
            region,
            matrix,
            settings,
            indexed,
            out=f"{settings['name']}_index",
            nlcd_layer="nlcd_index",
            nlcd_encoding="index",
        )
        pa, pb = Manifest.read(build_prior(a)), Manifest.read(build_prior(b))
        layer = f"prior_{settings['name']}"
        for ta, tb in zip(pa, pb, strict=True):
            (xa, _), (xb, tags) = _read(ta.layer(layer)), _read(tb.layer(layer))
            np.testing.assert_array_equal(xa, xb)
            assert json.loads(tags[PROVENANCE_TAG])["params"]["nlcd_encoding"] == "index"
    # the encoding is a parameter: the same file read as codes under another setting fails
    wrong = _request(region, matrix, NLCD, manifest, out="nlcd_codes", nlcd_encoding="index")
    with pytest.raises(DataError, match=r"nlcd_30m\.tif: NLCD values"):
        build_prior(wrong)


def test_index_encoding_over_16_is_a_data_error(tmp_path: Path) -> None:
    grid = make_grid(32)
    values = np.full(grid.shape, 5, np.uint8)
    values[3, 3] = 17
    path = write_raster(tmp_path / "nlcd.tif", values, grid, nodata=0)
    with pytest.raises(DataError, match=r"nlcd\.tif: NLCD values \[17\] are not indices 0\.\.16"):
        read_nlcd_index(path, grid, encoding="index")
    values[3, 3] = 16
    write_raster(path, values, grid, nodata=0)
    index = read_nlcd_index(path, grid, encoding="index")
    assert index[3, 3] == 16 and (index == 5).sum() == 32 * 32 - 1


# --- raw EnviroAtlas codes ------------------------------------------------------------------


def test_enviroatlas_raw_scheme_matches_sequential_scheme() -> None:
    raw = np.array([0, 10, 20, 30, 40, 52, 70, 80, 82, 91, 92], np.uint8)
    sequential = np.arange(11, dtype=np.uint8)  # 0 unclassified, 1 water, ..., 10 emergent
    assert get_scheme("enviroatlas5_raw") is ENVIROATLAS5_RAW
    assert ENVIROATLAS5_RAW.classes == ENVIROATLAS5.classes
    assert ENVIROATLAS5_RAW.colors == ENVIROATLAS5.colors
    for for_prior in (False, True):
        np.testing.assert_array_equal(
            ENVIROATLAS5_RAW.map_labels(raw, for_prior=for_prior),
            ENVIROATLAS5.map_labels(sequential, for_prior=for_prior),
        )
    shrub = ENVIROATLAS5_RAW.map_labels(np.array([52]))
    assert shrub[0] == IGNORE_INDEX
    assert ENVIROATLAS5_RAW.map_labels(np.array([52]), for_prior=True)[0] == 3  # tree
    others = np.array([1, 2, 11, 50, 90, 255])
    assert (ENVIROATLAS5_RAW.map_labels(others, for_prior=True) == IGNORE_INDEX).all()


# --- already rasterized vector layers -------------------------------------------------------


def _split_vectors(root: Path, manifest: Manifest) -> Manifest:
    """Each tile's 4-band vector layers as four single-band 0/1 rasters, layers ``vr_<band>``."""
    out = manifest
    for k, band in enumerate(LAYER_NAMES):
        paths = {}
        for tile in manifest:
            vectors = root / "vectors" / f"{tile.tile_id}.tif"
            with rasterio.open(vectors) as src:
                data = src.read(k + 1)
            paths[tile.tile_id] = write_raster(
                root / "vr" / band / f"{tile.tile_id}.tif", data, Grid.of(vectors)
            )
        out = out.with_layer(f"vr_{band}", paths)
    return Manifest.read(out.write(root / "manifest.csv"))


def test_fused_prior_from_vector_rasters_equals_the_one_from_vectors(
    region: Path, template: tuple[Path, npt.NDArray[np.float64]]
) -> None:
    matrix = template[1]
    base = _request(region, matrix, FUSED)
    from_vectors = Manifest.read(build_prior(base))
    manifest = _split_vectors(region, Manifest.read(region / "manifest.csv"))
    all_bands = {band: f"vr_{band}" for band in LAYER_NAMES}
    rasters = _request(
        region,
        matrix,
        FUSED,
        manifest,
        out="fused_rasters",
        osm_layer=None,
        buildings_layer=None,
        vector_rasters=all_bands,
    )
    # buildings from a raster that the buildings layer names (as in Chesapeake manifests), the
    # other bands from OSM
    partial = _request(
        region,
        matrix,
        FUSED,
        manifest,
        out="fused_partial",
        buildings_layer="vr_buildings",
        vector_rasters={"buildings": "vr_buildings"},
    )
    nlcd = Manifest.read(build_prior(_request(region, matrix, NLCD, manifest)))
    for request in (rasters, partial):
        built = Manifest.read(build_prior(request))
        for tile in built:
            ref, _ = _read(from_vectors.tile(tile.tile_id).layer("prior_fused"))
            got, tags = _read(tile.layer("prior_fused"))
            inner = (slice(None), slice(HALO, -HALO), slice(HALO, -HALO))
            np.testing.assert_allclose(got[inner], ref[inner], atol=1e-6)
            plain, _ = _read(nlcd.tile(tile.tile_id).layer("prior_nlcd"))
            assert np.nanmax(np.abs(got - plain)) > 0.1  # the vector layers were fused
            record = json.loads(tags[PROVENANCE_TAG])
            assert record["params"]["vector_rasters"] == dict(request.vector_rasters)
            named = {
                f"raster_{b}": fingerprint(tile.layer(v)) for b, v in request.vector_rasters.items()
            }
            assert {k: record["inputs"][k] for k in named} == named
            if request is rasters:  # no vector file read or recorded
                assert record["inputs"]["osm"] is None and record["inputs"]["buildings"] is None
                assert set(json.loads(tags["sources"])) == {
                    str(region / "nlcd_30m.tif"),
                    *map(str, (tile.layer(v) for v in all_bands.values())),
                }
            else:
                assert record["inputs"]["osm"] == fingerprint(region / "osm.xml")
                assert record["inputs"]["buildings"] is None

    # the vector layers job takes the rasters too: the same four bands, everywhere
    job = VectorLayersJob(region / "vectors_rasters", "naip", False, None, None, all_bands)
    results = run_tile_jobs(job, manifest)
    for result in results:
        assert result.path is not None
        with (
            rasterio.open(result.path) as a,
            rasterio.open(region / "vectors" / Path(result.path).name) as b,
        ):
            np.testing.assert_array_equal(a.read(), b.read())

    # a changed raster makes that tile's prior stale, and only that one
    path = manifest.tile("r0c1").layer("vr_roads")
    data = rasterio.open(path).read()
    data[0, 60:70, :] = 1
    write_raster(path, data, Grid.of(path))
    build_prior(rasters)
    assert _statuses(rasters.out_dir) == {
        "r0c0": "skipped",
        "r0c1": "written",
        "r1c0": "skipped",
        "r1c1": "skipped",
    }
    got, _ = _read(rasters.out_dir / "r0c1.tif")
    ref, _ = _read(from_vectors.tile("r0c1").layer("prior_fused"))
    assert np.abs(got[3, 62:68, 10:-10] - ref[3, 62:68, 10:-10]).max() > 0.05  # more impervious


def test_vector_raster_errors_are_one_line(
    region: Path, template: tuple[Path, npt.NDArray[np.float64]]
) -> None:
    matrix = template[1]
    build_prior(_request(region, matrix, FUSED))
    manifest = _split_vectors(region, Manifest.read(region / "manifest.csv"))
    bad = _request(region, matrix, FUSED, manifest, vector_rasters={"bridges": "vr_roads"})
    with pytest.raises(ConfigError) as info:
        build_prior(bad)
    assert str(info.value) == (
        "region.vector_rasters: unknown band(s) ['bridges']; bands are "
        "['buildings', 'roads', 'waterways', 'waterbodies']"
    )
    # a raster one pixel off the tile grid
    path = manifest.tile("r0c0").layer("vr_roads")
    grid = Grid.of(path)
    shifted = Grid(grid.crs, grid.transform * Affine.translation(1, 0), grid.height, grid.width)
    write_raster(path, rasterio.open(path).read(), shifted)
    off = _request(region, matrix, FUSED, manifest, out="off", vector_rasters={"roads": "vr_roads"})
    with pytest.raises(GridMismatchError) as err:
        build_prior(off)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{path}: vector raster 'roads'")


# --- borrowed cooccurrence matrices ---------------------------------------------------------


def _stage_cfg(root: Path, *overrides: str) -> Any:
    return compose_config([f"paths.root={root}", "region=tiny", *overrides])


def test_region_without_labels_borrows_a_matrix(tmp_path: Path) -> None:
    cfg = _stage_cfg(tmp_path)
    tiny = Manifest.read(region_stage(cfg))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        own = cooccurrence_stage(cfg)
    assert own.source is None
    own_prior = Manifest.read(prior_stage(cfg))

    # a region with the same tiles but no labels
    unlabelled = Manifest(
        tuple(replace(t, layers={k: v for k, v in t.layers.items() if k != "lc"}) for t in tiny)
    )
    unlabelled.write(tmp_path / "regions" / "bare" / "manifest.csv")
    bare = ["region.name=bare", "~region.synthetic"]
    with pytest.raises(ConfigError, match=r"^cooccurrence\.dir=.*run lcip-cooccurrence first"):
        prior_stage(_stage_cfg(tmp_path, *bare))
    with pytest.raises(ConfigError) as info:
        cooccurrence_stage(_stage_cfg(tmp_path, *bare, "cooccurrence.source=nowhere"))
    assert str(info.value) == (
        f"cooccurrence.source=nowhere: no cooccurrence matrix at "
        f"{tmp_path}/regions/nowhere/cooccurrence/cooccurrence.csv "
        f"(run lcip-cooccurrence region=nowhere first)"
    )

    borrowed_cfg = _stage_cfg(tmp_path, *bare, "cooccurrence.source=tiny")
    borrowed = cooccurrence_stage(borrowed_cfg)
    np.testing.assert_array_equal(borrowed.matrix, own.matrix)
    copied = Cooccurrence.read(tmp_path / "regions" / "bare" / "cooccurrence")
    assert copied.source == "tiny" and copied.tiles == own.tiles
    np.testing.assert_array_equal(copied.matrix, own.matrix)
    out = Manifest.read(prior_stage(borrowed_cfg))
    assert [t.tile_id for t in out] == [t.tile_id for t in tiny]
    for tile in out:
        prior, tags = _read(tile.layer("prior_nlcd"))
        same, own_tags = _read(own_prior.tile(tile.tile_id).layer("prior_nlcd"))
        np.testing.assert_array_equal(prior, same)
        assert tags["cooccurrence_source"] == "tiny" and own_tags["cooccurrence_source"] == "region"
        assert json.loads(tags[PROVENANCE_TAG])["params"]["cooccurrence_source"] == "tiny"
    prior_dir = tmp_path / "regions" / "bare" / "priors" / "nlcd"
    prior_stage(borrowed_cfg)
    assert _counts(prior_dir)["skipped"] == 4

    # the same matrix named by its file: another source, so the priors are rebuilt
    csv = tmp_path / "regions" / "tiny" / "cooccurrence" / "cooccurrence.csv"
    by_file = _stage_cfg(tmp_path, *bare, f"cooccurrence.source={csv}")
    prior_stage(by_file)
    assert _counts(prior_dir)["written"] == 4
    _, tags = _read(prior_dir / "r0c0.tif")
    assert tags["cooccurrence_source"] == str(csv)

    # a matrix of another scheme is refused in one line
    other = Cooccurrence.from_counts(np.ones((5, 17), np.int64), ENVIROATLAS5)
    other_csv = other.write(tmp_path / "ea")
    with pytest.raises(ConfigError) as mismatch:
        cooccurrence_stage(_stage_cfg(tmp_path, *bare, f"cooccurrence.source={other_csv}"))
    message = str(mismatch.value)
    assert "\n" not in message and message.startswith(f"cooccurrence.source={other_csv}")
    assert "'enviroatlas5'" in message and "'chesapeake4'" in message


def test_prior_stage_reads_no_matrix_for_the_published_prior(tmp_path: Path) -> None:
    cfg = _stage_cfg(tmp_path, "prior=published")
    root = region_stage(cfg).parent
    _with_published(root)
    assert not Path(cfg.cooccurrence.dir).exists()
    out = Manifest.read(prior_stage(cfg))
    assert len(out) == 4 and all(t.layer("prior_published").exists() for t in out)
    _, tags = _read(out.tiles[0].layer("prior_published"))
    assert tags["recipe"] == "published" and "cooccurrence_source" not in tags
    with pytest.raises(ConfigError, match="run lcip-cooccurrence first"):
        prior_stage(_stage_cfg(tmp_path, "prior=nlcd"))
