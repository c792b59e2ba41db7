"""Building per-tile prior rasters: sharded over tiles, idempotent, atomic, with a run report.

A *tile job* is a picklable callable that computes one output raster for one tile. The runner
(:func:`run_tile_jobs`) maps it over a manifest's tiles, in a local process pool when
``jobs > 1``, with a progress bar. A tile whose output already exists, is whole, is on the
tile's grid and records the same provenance -- the job's parameters *and* the fingerprints of
every input file (see :mod:`lcip.io.provenance`) -- is skipped, unless the job has ``force``
set. A tile with no valid pixels is skipped and listed in the report; other bad input stops
the run with a one-line error naming the file.

Prior rasters are float32, one band per target class (band names = class names), NaN where
invalid (nodata), summing to 1 elsewhere, with tags ``recipe``, ``lcip_provenance``,
``sources`` and ``lcip_version``.

Vector layers may come already rasterized (``region.vector_rasters``: band name -> manifest
layer of a 0/1 raster on the tile grid, e.g. the Chesapeake ``buildings`` raster); such a
band replaces the one rasterized from the OSM / footprint files (:func:`tile_vector_layers`).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from tqdm.auto import tqdm

import lcip
from lcip.classes import ClassScheme
from lcip.errors import ConfigError, GridMismatchError
from lcip.io.atomic import write_text
from lcip.io.manifest import Manifest, Tile
from lcip.io.provenance import PROVENANCE_TAG, is_up_to_date, provenance
from lcip.io.raster import Grid, open_raster, raster_writer, read_on_grid, write_row_strips
from lcip.priors.fused import fuse_prior, radius_in_pixels
from lcip.priors.nlcd import (
    STRIP_ROWS,
    NLCDPriorParams,
    PriorStrips,
    check_nlcd_encoding,
    metres_per_pixel,
    nlcd_prior,
    read_nlcd_index,
    sigma_in_pixels,
)
from lcip.priors.vectors import LAYER_NAMES, rasterize_vectors, write_vector_layers

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TileResult:
    """What a tile job did: ``written``, ``skipped`` (up to date) or ``no_valid``."""

    tile_id: str
    status: str
    path: str | None
    valid_fraction: float
    seconds: float


#: Compression of prior rasters (a key of :data:`lcip.io.raster.COMPRESSIONS`): lossless ZSTD,
#: about 4x faster to write and 2.5x faster to read than DEFLATE for the same size
#: (``scripts/bench_prior.py``).
PRIOR_COMPRESSION = "zstd"


@contextmanager
def prior_writer(
    path: Path, grid: Grid, scheme: ClassScheme, tags: Mapping[str, Any]
) -> Iterator[Any]:
    """Open a prior raster for writing (float32, NaN nodata, bands named after the classes).

    Args:
        path: destination (written atomically, see :func:`lcip.io.raster.raster_writer`).
        grid: the tile grid.
        scheme: the target classes (one band each).
        tags: dataset tags (``lcip_version`` is added).

    Yields:
        the rasterio dataset open for writing.
    """
    with raster_writer(
        path,
        grid,
        scheme.num_classes,
        "float32",
        nodata=float("nan"),
        tags={**tags, "lcip_version": lcip.__version__},
        band_names=list(scheme.classes),
        compress=PRIOR_COMPRESSION,
    ) as dst:
        yield dst


def _nan_strips(
    prior: npt.NDArray[Any], valid: npt.NDArray[np.bool_]
) -> Iterator[tuple[int, npt.NDArray[np.float32]]]:
    """Strips of a whole prior as float32 copies with NaN where invalid (3 reused buffers)."""
    height, width = valid.shape
    ring = [np.empty((prior.shape[0], STRIP_ROWS, width), np.float32) for _ in range(3)]
    for n, row in enumerate(range(0, height, STRIP_ROWS)):
        rows = min(STRIP_ROWS, height - row)
        out = ring[n % 3][:, :rows]
        out[...] = prior[:, row : row + rows]
        out[:, ~valid[row : row + rows]] = np.nan
        yield row, out


def write_prior(
    path: Path,
    prior: npt.NDArray[np.float32],
    valid: npt.NDArray[np.bool_],
    grid: Grid,
    scheme: ClassScheme,
    tags: Mapping[str, Any],
) -> Path:
    """Write a prior raster (NaN where invalid, bands named after the classes).

    Written strip by strip (no whole-tile copy), compressed as :data:`PRIOR_COMPRESSION`.
    """
    with prior_writer(path, grid, scheme, tags) as dst:
        write_row_strips(dst, _nan_strips(prior, valid))
    return path


def write_prior_strips(
    path: Path, strips: PriorStrips, grid: Grid, scheme: ClassScheme, tags: Mapping[str, Any]
) -> float:
    """Compute and write an NLCD prior strip by strip (see :func:`write_prior`).

    Each strip of :data:`~lcip.priors.nlcd.STRIP_ROWS` rows is computed while the previous
    one is compressed and written (:func:`lcip.io.raster.write_row_strips`), in three reused
    buffers: memory stays a few strips whatever the tile size, and no whole-tile array is
    made.

    Args:
        path: destination.
        strips: the prior, evaluated by strips.
        grid: the tile grid (its shape is the prior's).
        scheme: the target classes.
        tags: dataset tags.

    Returns:
        the fraction of valid pixels.
    """
    height, width = strips.shape
    ring = [np.empty((strips.num_classes, STRIP_ROWS, width), np.float32) for _ in range(3)]
    valid = np.empty((STRIP_ROWS, width), bool)
    counted = [0]

    def produce() -> Iterator[tuple[int, npt.NDArray[np.float32]]]:
        for n, row in enumerate(range(0, height, STRIP_ROWS)):
            rows = min(STRIP_ROWS, height - row)
            out, mask = ring[n % 3][:, :rows], valid[:rows]
            strips.rows(row, out, mask)
            counted[0] += int(np.count_nonzero(mask))
            out[:, ~mask] = np.nan
            yield row, out

    with prior_writer(path, grid, scheme, tags) as dst:
        write_row_strips(dst, produce())
    return counted[0] / float(height * width)


@dataclass(frozen=True)
class TileJob:
    """Base of per-tile jobs: grid from the imagery layer, idempotency, timing.

    Subclasses implement :meth:`compute` and set :attr:`count` (bands of the output).

    Args:
        out_dir: output folder (``<tile_id>.tif``).
        image_layer: layer whose grid the output is aligned to.
        force: rebuild outputs even when they are up to date.
    """

    out_dir: Path
    image_layer: str = "naip"
    force: bool = False

    count: int = field(default=0, init=False)

    def params(self, grid: Grid | None = None) -> dict[str, Any]:
        """Parameters recorded in the output's provenance (a change forces a rebuild).

        Args:
            grid: the tile grid, for jobs whose parameters resolve on it (metres -> pixels).
        """
        skip = ("out_dir", "count", "force")
        return {k: v for k, v in asdict(self).items() if k not in skip}

    def inputs(self, tile: Tile) -> dict[str, Path | None]:
        """Input files whose fingerprints the output records (a change forces a rebuild)."""
        return {"image": tile.layer(self.image_layer)}

    def output(self, tile: Tile) -> Path:
        """The output file of a tile."""
        return self.out_dir / f"{tile.tile_id}.tif"

    def compute(self, tile: Tile, grid: Grid) -> tuple[npt.NDArray[Any], npt.NDArray[np.bool_]]:
        """Compute the output array and its valid mask for one tile."""
        raise NotImplementedError

    def write(
        self,
        path: Path,
        data: npt.NDArray[Any],
        valid: npt.NDArray[np.bool_],
        grid: Grid,
        tile: Tile,
        params: str,
    ) -> None:
        """Write the output raster."""
        raise NotImplementedError

    def build(self, tile: Tile, grid: Grid, path: Path, params: str) -> float:
        """Compute and write one tile's output (:meth:`compute` then :meth:`write`).

        Returns:
            the fraction of valid pixels; 0 means nothing was written.
        """
        data, valid = self.compute(tile, grid)
        if not valid.any():
            return 0.0
        self.write(path, data, valid, grid, tile, params)
        return float(valid.mean())

    def __call__(self, tile: Tile) -> TileResult:
        """Build one tile's output unless it is up to date."""
        start = time.perf_counter()
        grid = Grid.of(tile.layer(self.image_layer))
        path = self.output(tile)
        params = provenance(self.params(grid), self.inputs(tile))
        if not self.force and is_up_to_date(path, params, grid, self.count):
            return TileResult(
                tile.tile_id, "skipped", str(path), float("nan"), time.perf_counter() - start
            )
        fraction = self.build(tile, grid, path, params)
        if fraction <= 0:
            log.warning("tile %s: no valid pixels, skipped", tile.tile_id)
            return TileResult(tile.tile_id, "no_valid", None, 0.0, time.perf_counter() - start)
        return TileResult(tile.tile_id, "written", str(path), fraction, time.perf_counter() - start)


#: The bands the OSM file feeds (the footprint file feeds ``buildings`` only).
OSM_BANDS: tuple[str, ...] = ("roads", "waterways", "waterbodies")


def check_vector_rasters(vector_rasters: Mapping[str, str] | None) -> dict[str, str]:
    """``region.vector_rasters`` as a plain dict, checked for known band names.

    Args:
        vector_rasters: vector band name (:data:`~lcip.priors.vectors.LAYER_NAMES`) ->
            manifest layer holding that band as a 0/1 raster on the tile grid.

    Returns:
        the mapping (empty for None).

    Raises:
        ConfigError: one line naming ``region.vector_rasters`` and the unknown bands.
    """
    out = {str(k): str(v) for k, v in (vector_rasters or {}).items()}
    unknown = sorted(set(out) - set(LAYER_NAMES))
    if unknown:
        raise ConfigError(
            f"region.vector_rasters: unknown band(s) {unknown}; bands are {list(LAYER_NAMES)}"
        )
    return out


def vector_sources(
    tile: Tile,
    osm_layer: str | None,
    buildings_layer: str | None,
    vector_rasters: Mapping[str, str] | None = None,
) -> tuple[Path | None, Path | None]:
    """A tile's OSM and building footprint files (None where the layer is unset or absent).

    A file is None too when every band it feeds comes from ``vector_rasters`` instead
    (buildings for the footprints; roads, waterways and water bodies for OSM), so that it is
    neither read nor recorded as an input.
    """
    named = set(vector_rasters or {})
    osm = tile.layers.get(osm_layer) if osm_layer else None
    buildings = tile.layers.get(buildings_layer) if buildings_layer else None
    if set(OSM_BANDS) <= named:
        osm = None
    if "buildings" in named:
        buildings = None
    return osm, buildings


def raster_sources(tile: Tile, vector_rasters: Mapping[str, str] | None) -> dict[str, Path]:
    """The files of a tile's already rasterized vector bands (band name -> file)."""
    return {band: tile.layer(layer) for band, layer in (vector_rasters or {}).items()}


def read_vector_raster(path: Path, band: str, grid: Grid, halo: int = 0) -> npt.NDArray[np.bool_]:
    """Read a 0/1 vector band raster, which must be on ``grid``, with a halo of zeros.

    Args:
        path: the raster (band 1; nonzero = feature; its nodata value counts as 0).
        band: the vector band it holds (for messages).
        grid: the tile grid.
        halo: pixels added on every side (outside the raster: 0).

    Returns:
        bool (H + 2 halo, W + 2 halo).

    Raises:
        GridMismatchError: one line naming the file, if it is not on the tile grid.
        DataError: if the file is missing or not a raster.
    """
    found = Grid.of(path)
    if not found.same_as(grid):
        raise GridMismatchError(
            f"{path}: vector raster '{band}' (region.vector_rasters) is on grid "
            f"{found.describe()}, but the tile is on {grid.describe()}"
        )
    with open_raster(path) as src:
        nodata = src.nodata
    data = read_on_grid(path, grid.expand(halo) if halo else grid, bands=1, fill=0)
    present: npt.NDArray[np.bool_] = data != 0
    if nodata is not None and nodata != 0:
        present &= data != nodata
    return present


def tile_vector_layers(
    tile: Tile,
    grid: Grid,
    osm_layer: str | None,
    buildings_layer: str | None,
    vector_rasters: Mapping[str, str] | None = None,
    halo: int = 0,
) -> npt.NDArray[np.uint8]:
    """The four binary vector layers of a tile, on its grid grown by ``halo``.

    Bands named in ``vector_rasters`` are read from those rasters; the others are rasterized
    from the tile's OSM and footprint files (:func:`~lcip.priors.vectors.rasterize_vectors`).

    Returns:
        uint8 (4, H + 2 halo, W + 2 halo) of 0/1 in :data:`LAYER_NAMES` order.
    """
    target = grid.expand(halo) if halo else grid
    rasters = raster_sources(tile, vector_rasters)
    if set(rasters) >= set(LAYER_NAMES):
        layers = np.zeros((len(LAYER_NAMES), *target.shape), dtype=np.uint8)
    else:
        layers = rasterize_vectors(
            target, *vector_sources(tile, osm_layer, buildings_layer, vector_rasters)
        )
    for band, path in rasters.items():
        layers[LAYER_NAMES.index(band)] = read_vector_raster(path, band, grid, halo)
    return layers


def vector_inputs(
    tile: Tile,
    osm_layer: str | None,
    buildings_layer: str | None,
    vector_rasters: Mapping[str, str] | None,
) -> dict[str, Path | None]:
    """The vector input files of a tile for its provenance (``osm``, ``buildings``, ...).

    Rasterized bands are recorded as ``raster_<band>``.
    """
    osm, buildings = vector_sources(tile, osm_layer, buildings_layer, vector_rasters)
    rasters = {f"raster_{b}": p for b, p in raster_sources(tile, vector_rasters).items()}
    return {"osm": osm, "buildings": buildings, **rasters}


@dataclass(frozen=True)
class VectorLayersJob(TileJob):
    """Rasterize buildings, roads, waterways and water bodies (4-band uint8) onto each tile.

    Bands named in ``vector_rasters`` (band -> manifest layer of a 0/1 raster on the tile
    grid) are taken from those rasters instead.
    """

    osm_layer: str | None = "osm"
    buildings_layer: str | None = "buildings"
    vector_rasters: Mapping[str, str] = field(default_factory=dict)

    count: int = field(default=len(LAYER_NAMES), init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "vector_rasters", check_vector_rasters(self.vector_rasters))

    def inputs(self, tile: Tile) -> dict[str, Path | None]:
        """The imagery (grid), OSM, building footprint and vector raster files."""
        return {
            **super().inputs(tile),
            **vector_inputs(tile, self.osm_layer, self.buildings_layer, self.vector_rasters),
        }

    def compute(self, tile: Tile, grid: Grid) -> tuple[npt.NDArray[Any], npt.NDArray[np.bool_]]:
        """The four binary layers (all pixels valid)."""
        layers = tile_vector_layers(
            tile, grid, self.osm_layer, self.buildings_layer, self.vector_rasters
        )
        return layers, np.ones(grid.shape, dtype=bool)

    def write(
        self,
        path: Path,
        data: npt.NDArray[Any],
        valid: npt.NDArray[np.bool_],
        grid: Grid,
        tile: Tile,
        params: str,
    ) -> None:
        """Write the 4-band layer raster."""
        osm, buildings = vector_sources(
            tile, self.osm_layer, self.buildings_layer, self.vector_rasters
        )
        rasters = {b: str(p) for b, p in raster_sources(tile, self.vector_rasters).items()}
        write_vector_layers(
            path,
            data,
            grid,
            osm_path=osm,
            buildings_path=buildings,
            tags={
                PROVENANCE_TAG: params,
                "lcip_version": lcip.__version__,
                "raster_sources": json.dumps(rasters),
            },
        )


@dataclass(frozen=True)
class PriorJob(TileJob):
    """Base of prior jobs: writes float32 priors with the scheme's band names."""

    scheme: ClassScheme | None = None
    recipe: str = ""

    def params(self, grid: Grid | None = None) -> dict[str, Any]:
        """Parameters, with the scheme by name and arrays as lists."""
        p = super().params(grid)
        p["scheme"] = self.scheme.name if self.scheme else None
        return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in p.items()}

    def sources(self, tile: Tile) -> list[str]:
        """Input files recorded in the prior's tags."""
        return []

    def extra_tags(self) -> dict[str, str]:
        """Further tags of the prior rasters (besides recipe, provenance and sources)."""
        return {}

    @property
    def scheme_or_fail(self) -> ClassScheme:
        """The class scheme (set, see ``__post_init__``)."""
        assert self.scheme is not None
        return self.scheme

    def tags(self, tile: Tile, params: str) -> dict[str, str]:
        """The prior raster's tags: recipe, provenance, sources and :meth:`extra_tags`."""
        return {
            **self.extra_tags(),
            "recipe": self.recipe,
            PROVENANCE_TAG: params,
            "sources": json.dumps(self.sources(tile)),
        }

    def write(
        self,
        path: Path,
        data: npt.NDArray[Any],
        valid: npt.NDArray[np.bool_],
        grid: Grid,
        tile: Tile,
        params: str,
    ) -> None:
        """Write the prior raster."""
        write_prior(path, data, valid, grid, self.scheme_or_fail, self.tags(tile, params))

    def __post_init__(self) -> None:
        if self.scheme is None:
            raise ValueError("a prior job needs a class scheme")
        object.__setattr__(self, "count", self.scheme.num_classes)


@dataclass(frozen=True)
class NLCDPriorJob(PriorJob):
    """NLCD prior: one-hot NLCD -> Gaussian blur -> cooccurrence remap -> smoothing.

    ``sigma_m`` is the blur sigma in metres, converted with each tile grid's resolution
    (31 px on a 1 m tile, 51.7 px on a 0.6 m one); the provenance records the resolved
    ``sigma_px``. ``nlcd_encoding`` says how the NLCD raster stores classes (``codes`` or
    ``index``); ``cooccurrence_source`` records where a borrowed matrix came from
    (``cooccurrence.source``, None for the region's own), in the provenance and in the
    ``cooccurrence_source`` tag.
    """

    matrix: npt.NDArray[np.float64] = field(default_factory=lambda: np.zeros((0, 17)))
    nlcd_layer: str = "nlcd"
    sigma_m: float = 31.0
    truncate: float = 4.0
    smoothing: float = 1e-4
    nlcd_encoding: str = "codes"
    cooccurrence_source: str | None = None
    recipe: str = "nlcd"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_nlcd_encoding(self.nlcd_encoding)

    def sigma_px(self, grid: Grid) -> float:
        """The blur sigma in pixels of ``grid``."""
        return sigma_in_pixels(self.sigma_m, metres_per_pixel(grid))

    def params(self, grid: Grid | None = None) -> dict[str, Any]:
        """Parameters, with the sigma resolved in pixels of the tile grid."""
        p = super().params(grid)
        if grid is not None:
            p["sigma_px"] = self.sigma_px(grid)
        return p

    def extra_tags(self) -> dict[str, str]:
        """The ``cooccurrence_source`` tag (``region`` when the matrix is the region's own)."""
        return {"cooccurrence_source": self.cooccurrence_source or "region"}

    def sources(self, tile: Tile) -> list[str]:
        """The NLCD file."""
        return [str(tile.layer(self.nlcd_layer))]

    def inputs(self, tile: Tile) -> dict[str, Path | None]:
        """The imagery (grid) and NLCD files."""
        return {**super().inputs(tile), "nlcd": tile.layer(self.nlcd_layer)}

    def compute(self, tile: Tile, grid: Grid) -> tuple[npt.NDArray[Any], npt.NDArray[np.bool_]]:
        """The NLCD prior of the tile."""
        return nlcd_prior(
            grid,
            tile.layer(self.nlcd_layer),
            self.matrix,
            sigma=self.sigma_px(grid),
            truncate=self.truncate,
            smoothing=self.smoothing,
            encoding=self.nlcd_encoding,
        )

    def build(self, tile: Tile, grid: Grid, path: Path, params: str) -> float:
        """Compute and write the NLCD prior strip by strip (:func:`write_prior_strips`).

        The same values as :meth:`compute` then :meth:`write`, without a whole-tile array.
        """
        settings = NLCDPriorParams(
            sigma=self.sigma_px(grid), truncate=self.truncate, smoothing=self.smoothing
        )
        halo = settings.halo_px
        index = read_nlcd_index(
            tile.layer(self.nlcd_layer), grid, halo=halo, encoding=self.nlcd_encoding
        )
        strips = PriorStrips(index, self.matrix, settings, crop=halo)
        if not strips.any_valid:
            return 0.0
        fraction = write_prior_strips(
            path, strips, grid, self.scheme_or_fail, self.tags(tile, params)
        )
        if fraction <= 0:  # possible only without smoothing: nothing valid after all
            path.unlink(missing_ok=True)
        return fraction


@dataclass(frozen=True)
class FusedPriorJob(NLCDPriorJob):
    """NLCD prior plus the blurred vector layers' mass on water and impervious, renormalized.

    The vector layers are rasterized on the tile grid grown by the largest blur radius, so
    that features just outside the tile count near its edge and neighbouring tiles join
    without seams. ``radius_m`` gives the box radii in metres (None: the defaults), resolved
    per tile grid (:func:`~lcip.priors.fused.radius_in_pixels`; recorded as ``radius_px``).
    """

    osm_layer: str | None = "osm"
    buildings_layer: str | None = "buildings"
    vector_rasters: Mapping[str, str] = field(default_factory=dict)
    water_class: int = 0
    impervious_class: int = 3
    radius_m: Mapping[str, float] | None = None
    weights: Mapping[str, float] | None = None
    recipe: str = "fused"

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "vector_rasters", check_vector_rasters(self.vector_rasters))

    def radius_px(self, grid: Grid) -> dict[str, int]:
        """The box radius of every layer in pixels of ``grid``."""
        radius = dict(self.radius_m) if self.radius_m else None
        return radius_in_pixels(radius, metres_per_pixel(grid))

    def params(self, grid: Grid | None = None) -> dict[str, Any]:
        """Parameters, with the sigma and box radii resolved in pixels of the tile grid."""
        p = super().params(grid)
        if grid is not None:
            p["radius_px"] = self.radius_px(grid)
        return p

    def sources(self, tile: Tile) -> list[str]:
        """NLCD and vector files (OSM, footprints, vector rasters)."""
        vectors = vector_inputs(tile, self.osm_layer, self.buildings_layer, self.vector_rasters)
        return [*super().sources(tile), *(str(p) for p in vectors.values() if p is not None)]

    def inputs(self, tile: Tile) -> dict[str, Path | None]:
        """The imagery (grid), NLCD, OSM, building footprint and vector raster files."""
        return {
            **super().inputs(tile),
            **vector_inputs(tile, self.osm_layer, self.buildings_layer, self.vector_rasters),
        }

    def build(self, tile: Tile, grid: Grid, path: Path, params: str) -> float:
        """Compute the whole fused prior, then write it (the vector layers need the tile)."""
        return TileJob.build(self, tile, grid, path, params)

    def compute(self, tile: Tile, grid: Grid) -> tuple[npt.NDArray[Any], npt.NDArray[np.bool_]]:
        """The fused prior of the tile."""
        prior, valid = super().compute(tile, grid)
        radius = self.radius_px(grid)
        halo = max(radius.values())
        layers = tile_vector_layers(
            tile, grid, self.osm_layer, self.buildings_layer, self.vector_rasters, halo
        )
        fused = fuse_prior(
            prior,
            layers,
            water_class=self.water_class,
            impervious_class=self.impervious_class,
            radius=radius,
            weights=dict(self.weights) if self.weights else None,
            valid=valid,
            halo=halo,
        )
        return fused, valid


def run_tile_jobs(
    job: Callable[[Tile], TileResult], manifest: Manifest, jobs: int = 1, desc: str = "tiles"
) -> list[TileResult]:
    """Run a tile job over every tile of a manifest.

    Args:
        job: picklable per-tile callable.
        manifest: the tiles.
        jobs: worker processes (1 runs in this process).
        desc: progress bar label.

    Returns:
        one result per tile, in manifest order.
    """
    tiles = list(manifest)
    if jobs <= 1 or len(tiles) <= 1:
        return [job(t) for t in tqdm(tiles, desc=desc, unit="tile")]
    with ProcessPoolExecutor(max_workers=min(jobs, len(tiles))) as pool:
        return list(tqdm(pool.map(job, tiles), total=len(tiles), desc=desc, unit="tile"))


def write_report(
    results: Sequence[TileResult], out_dir: Path, extra: Mapping[str, Any] | None = None
) -> Path:
    """Write ``report.json`` listing what each tile's job did, and log a one-line summary."""
    counts = {s: sum(r.status == s for r in results) for s in ("written", "skipped", "no_valid")}
    report = {
        **(extra or {}),
        "counts": counts,
        "no_valid_tiles": [r.tile_id for r in results if r.status == "no_valid"],
        "tiles": [asdict(r) for r in results],
    }
    path = write_text(out_dir / "report.json", json.dumps(report, indent=1))
    msg = ", ".join(f"{n} {s.replace('_', ' ')}" for s, n in counts.items())
    if report["no_valid_tiles"]:
        msg += f" (no valid pixels: {', '.join(report['no_valid_tiles'])})"
    log.info("%s: %s; report %s", out_dir, msg, path)
    return path


def results_manifest(manifest: Manifest, results: Sequence[TileResult], layer: str) -> Manifest:
    """The manifest with ``layer`` added, restricted to tiles that have an output."""
    paths = {r.tile_id: Path(r.path) for r in results if r.path is not None}
    return manifest.select(tile_ids=list(paths)).with_layer(layer, paths)


def prior_layer(prior_name: str) -> str:
    """The manifest layer name of a prior (``prior_<name>``)."""
    return f"prior_{prior_name}"
