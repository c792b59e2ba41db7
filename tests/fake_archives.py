"""Tiny, seeded stand-ins of the Chesapeake CVPR and EnviroAtlas archives.

Same member names, folders, CRS, dtypes, band counts, nodata conventions and spatial index
(EPSG:3857 GeoJSON with a ``split`` and one column per layer) as the real archives and as
TorchGeo's own fake data (``tests/data/chesapeake/cvpr`` and ``tests/data/enviroatlas``), so
that ``torchgeo.datasets.ChesapeakeCVPR`` / ``EnviroAtlas`` open the extracted folders.
The content is a coarse random label map with imagery, NLCD and a prior derived from it, so
the stages have something learnable to work on.
"""

from __future__ import annotations

import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import geopandas as gpd
import numpy as np
import numpy.typing as npt
import rasterio
import shapely
from affine import Affine
from rasterio.crs import CRS

from lcip.acquire.datasets import EnviroAtlas

#: Chesapeake label -> NLCD code used where that label dominates a 30 m cell.
_CHESAPEAKE_NLCD = {1: 11, 2: 41, 3: 81, 4: 31, 5: 23, 6: 22}
#: Chesapeake label -> class of the 4-class scheme (water, tree, low vegetation, impervious).
_CHESAPEAKE4 = {1: 0, 2: 1, 3: 2, 4: 3, 5: 3, 6: 3}
#: Imagery means (R, G, B, NIR) per 4-class scheme class.
_MEANS = np.array([[40, 60, 90, 20], [50, 90, 50, 160], [110, 150, 90, 190], [150, 140, 135, 110]])
#: EnviroAtlas raw label codes used by the fake (water, impervious, barren, tree, grass).
_EA_CODES = (10, 20, 30, 40, 70)
_EA_NLCD_INDEX = {10: 1, 20: 5, 30: 7, 40: 8, 70: 12}  # NLCD index (into the 17 codes)
_EA_IMAGE_CLASS = {10: 0, 20: 3, 30: 3, 40: 1, 70: 2}

CHESAPEAKE_YEARS = {"de": 2013, "md": 2013, "ny": 2013, "pa": 2013, "va": 2014, "wv": 2014}
CHESAPEAKE_EPSG = {"de": 26918, "md": 26918, "ny": 26918, "pa": 26918, "va": 26917, "wv": 26917}
ENVIROATLAS_CITIES = {
    "pittsburgh_pa": (2010, 26917),
    "durham_nc": (2012, 26917),
    "austin_tx": (2012, 26914),
    "phoenix_az": (2010, 26912),
}


def _profile(epsg: int, size: int, count: int, x0: float, y0: float) -> dict[str, object]:
    return {
        "driver": "GTiff",
        "dtype": "uint8",
        "nodata": None,
        "count": count,
        "height": size,
        "width": size,
        "crs": CRS.from_epsg(epsg),
        "transform": Affine(1.0, 0.0, x0, 0.0, -1.0, y0),
        "tiled": True,
        "blockxsize": 128,
        "blockysize": 128,
        "compress": "deflate",
        "interleave": "pixel" if count > 1 else "band",
    }


def _write(path: Path, data: npt.NDArray[np.uint8], profile: Mapping[str, object]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", **{**profile, "count": data.shape[0]}) as dst:
        dst.write(data)


def _labels(rng: np.random.Generator, size: int, codes: Sequence[int]) -> npt.NDArray[np.uint8]:
    """A coarse random label map (blocks of 16 px) of the given codes."""
    coarse = rng.choice(np.asarray(codes), size=(size // 16 + 1, size // 16 + 1))
    return np.kron(coarse, np.ones((16, 16), dtype=np.int64))[:size, :size].astype(np.uint8)


def _per_cell(labels: npt.NDArray[np.uint8], lut: Mapping[int, int]) -> npt.NDArray[np.uint8]:
    """A 30 m-cell map: the value of each cell's centre label, on the 1 m grid."""
    h, w = labels.shape
    rows, cols = (np.minimum(np.arange(0, n, 30) + 15, n - 1) for n in (h, w))
    cells = labels[np.ix_(rows, cols)]
    values = np.vectorize(lambda c: lut.get(int(c), 0))(cells).astype(np.uint8)
    return np.kron(values, np.ones((30, 30), dtype=np.uint8))[:h, :w]


def _imagery(rng: np.random.Generator, classes: npt.NDArray[np.int64]) -> npt.NDArray[np.uint8]:
    naip = _MEANS[classes].transpose(2, 0, 1) + rng.normal(0, 10, size=(4, *classes.shape))
    return np.clip(naip, 1, 255).astype(np.uint8)


def _prior(classes: npt.NDArray[np.int64], n: int) -> npt.NDArray[np.uint8]:
    prior = np.full((n, *classes.shape), 255 // (2 * n), dtype=np.uint8)
    np.put_along_axis(prior, classes[None], 255 - (n - 1) * (255 // (2 * n)), axis=0)
    return prior


def _index_row(path: Path, split: str, files: Mapping[str, str]) -> dict[str, object]:
    with rasterio.open(path) as src:
        box = shapely.box(*src.bounds)
        crs = src.crs
    geom = gpd.GeoSeries([box], crs=crs).to_crs("EPSG:3857").iloc[0]
    return {"split": split, **files, "geometry": geom}


def _write_index(rows: Sequence[dict[str, object]], path: Path) -> None:
    gpd.GeoDataFrame(list(rows), geometry="geometry", crs="EPSG:3857").to_file(
        path, driver="GeoJSON"
    )


def _zip(root: Path, members: Sequence[str], dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(dest, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for folder in sorted({m.rsplit("/", 1)[0] + "/" for m in members if "/" in m}):
            z.writestr(folder, b"")
        for m in members:
            z.write(root / m, m)
    return dest


def make_chesapeake_archives(
    out: Path, tiles: Mapping[str, Mapping[str, Sequence[str]]], size: int = 128, seed: int = 0
) -> dict[str, Path]:
    """Write ``cvpr_chesapeake_landcover.zip`` and ``..._prior_extension.zip`` into ``out``.

    Args:
        out: folder for the two archives (a scratch folder ``out/_src`` holds the files).
        tiles: state -> split -> tile ids, e.g. ``{"ny": {"train": ["m_3807501_ne_18_1"]}}``.
        size: tile size in pixels.
        seed: seed.

    Returns:
        ``{"base": path, "prior_extension": path}``.
    """
    rng = np.random.default_rng(seed)
    src = out / "_src"
    base: list[str] = []
    prior: list[str] = []
    rows = []
    n = 0
    for state, splits in tiles.items():
        year, epsg = CHESAPEAKE_YEARS[state], CHESAPEAKE_EPSG[state]
        for split, ids in splits.items():
            folder = f"{state}_1m_{year}_extended-debuffered-{split}_tiles"
            for tile in ids:
                n += 1
                stem = f"{folder}/{tile}"
                prof = _profile(epsg, size, 1, 400000.0 + 2000 * n, 4300000.0)
                lc = _labels(rng, size, (1, 2, 3, 4, 5, 6))
                lc[:3, :] = 15  # the release's nodata code at a tile edge
                classes = np.vectorize(lambda c: _CHESAPEAKE4.get(int(c), 1))(lc)
                buildings = (lc == 5).astype(np.uint8)
                layers: dict[str, npt.NDArray[np.uint8]] = {
                    "naip-new": _imagery(rng, classes),
                    "naip-old": _imagery(rng, classes),
                    "nlcd": _per_cell(lc, _CHESAPEAKE_NLCD)[None],
                    "lc": lc[None],
                    "buildings": buildings[None],
                    "landsat-leaf-on": rng.integers(0, 255, (9, size, size), dtype=np.uint8),
                    "landsat-leaf-off": rng.integers(0, 255, (9, size, size), dtype=np.uint8),
                }
                for layer, data in layers.items():
                    _write(src / f"{stem}_{layer}.tif", data, prof)
                    base.append(f"{stem}_{layer}.tif")
                p = f"{stem}_prior_from_cooccurrences_101_31_no_osm_no_buildings.tif"
                _write(src / p, _prior(classes, 4), prof)
                prior.append(p)
                files = {k: f"{stem}_{k}.tif" for k in layers}
                rows.append(_index_row(src / f"{stem}_naip-new.tif", f"{state}-{split}", files))
    _write_index(rows, src / "spatial_index.geojson")
    base.append("spatial_index.geojson")
    return {
        "base": _zip(src, base, out / "cvpr_chesapeake_landcover.zip"),
        "prior_extension": _zip(src, prior, out / "cvpr_chesapeake_landcover_prior_extension.zip"),
    }


def make_enviroatlas_archive(
    out: Path, tiles: Mapping[str, Mapping[str, Sequence[str]]], size: int = 128, seed: int = 0
) -> Path:
    """Write ``enviroatlas_lotp.zip`` into ``out``.

    Args:
        out: folder for the archive (a scratch folder ``out/_src`` holds the files).
        tiles: city -> split -> tile ids, e.g. ``{"pittsburgh_pa": {"test": ["4007925_nw"]}}``.
        size: tile size in pixels.
        seed: seed.

    Returns:
        the archive's path.
    """
    rng = np.random.default_rng(seed)
    src = out / "_src"
    members: list[str] = []
    rows = []
    n = 0
    for city, splits in tiles.items():
        year, epsg = ENVIROATLAS_CITIES[city]
        for split, ids in splits.items():
            folder = f"enviroatlas_lotp/{city}-{year}_1m-{split}_tiles-debuffered"
            for tile in ids:
                n += 1
                prof = _profile(epsg, size, 1, 580000.0 + 2000 * n, 4480000.0)
                lc = _labels(rng, size, _EA_CODES)
                classes = np.vectorize(_EA_IMAGE_CLASS.get)(lc)
                ea5 = np.vectorize({10: 0, 20: 1, 30: 2, 40: 3, 70: 4}.get)(lc)
                roads = (lc == 20).astype(np.uint8)
                layers = {
                    "a_naip": _imagery(rng, classes),
                    "b_nlcd": _per_cell(lc, _EA_NLCD_INDEX)[None],
                    "c_roads": roads[None],
                    "d_water": (lc == 10).astype(np.uint8)[None],
                    "d1_waterways": np.zeros((1, size, size), np.uint8),
                    "d2_waterbodies": (lc == 10).astype(np.uint8)[None],
                    "e_buildings": np.zeros((1, size, size), np.uint8),
                    "h_highres_labels": lc[None],
                    "prior_from_cooccurrences_101_31": _prior(ea5, 5),
                    "prior_from_cooccurrences_101_31_no_osm_no_buildings": _prior(ea5, 5),
                }
                for suffix, data in layers.items():
                    _write(src / f"{folder}/{tile}_{suffix}.tif", data, prof)
                    members.append(f"{folder}/{tile}_{suffix}.tif")
                keys = {
                    k: v
                    for k, v in EnviroAtlas.torchgeo_layers.items()
                    if not v.startswith("prior")
                }
                rel = f"{city}-{year}_1m-{split}_tiles-debuffered/{tile}"
                files = {k: f"{rel}_{s}.tif" for s, k in keys.items()}
                rows.append(
                    _index_row(
                        src / f"{folder}/{tile}_a_naip.tif", f"{city}-{year}_1m-{split}", files
                    )
                )
    _write_index(rows, src / "enviroatlas_lotp/spatial_index.geojson")
    members.append("enviroatlas_lotp/spatial_index.geojson")
    return _zip(src, members, out / "enviroatlas_lotp.zip")
