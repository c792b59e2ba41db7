"""Benchmark one tile's NLCD prior against the I/O floor measured in the same run.

One tile of ``--size`` px at 1 m (default 4096 x 4096) with a region-wide 30 m NLCD raster in
the tile's CRS (NLCD-like 30 m blocks, 10 classes, covering the tile and its blur halo) and
the Chesapeake 4-class scheme. Three things are timed, interleaved, ``--repeat`` times:

- **I/O floor**: reading the inputs (the NLCD window the tile needs, at its own 30 m
  resolution, and the imagery's grid) and writing an array of the prior's size and content
  with the prior's own writer (:func:`lcip.priors.build.prior_writer`: same block size,
  compression, predictor, interleave, band count, dtype, nodata and tags), in one call;
- **lcip prior**: :class:`lcip.priors.build.NLCDPriorJob` on the tile (``force=True``): grid
  and provenance, NLCD read onto the tile grid with its halo, blur and normalization by strips,
  each strip compressed and written while the next is computed;
- **previous path** (for reference): the whole-tile prior (:func:`lcip.priors.nlcd.nlcd_prior`)
  copied with NaN where invalid and written in one call as a DEFLATE GeoTIFF, as lcip did
  before the prior was streamed and ZSTD-compressed.

Prints a markdown table (best of the repeats, and the ratio of each to the floor, median over
the paired repeats). The machine is shared: only the ratios are meaningful.

Example::

    python scripts/bench_prior.py --size 4096x4096 --repeat 5
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.windows import from_bounds

from lcip.classes import CHESAPEAKE4, NLCD_CODES
from lcip.io.manifest import Tile
from lcip.io.raster import Grid, write_raster
from lcip.priors.build import NLCDPriorJob, prior_writer
from lcip.priors.nlcd import kernel_radius, nlcd_prior
from lcip.synthetic.nlcd import nlcd_like_map

CRS_UTM = CRS.from_epsg(26917)


def make_inputs(root: Path, height: int, width: int, seed: int = 0) -> Tile:
    """A tile's imagery (on its 1 m grid) and a region-wide 30 m NLCD raster around it."""
    grid = Grid(CRS_UTM, Affine(1.0, 0, 500000.0, 0, -1.0, 4300000.0), height, width)
    rng = np.random.default_rng(seed)
    naip = np.empty((4, height, width), np.uint8)
    naip[...] = rng.integers(1, 255, (4, 1, width), dtype=np.uint8)  # rows compress well
    write_raster(root / "naip.tif", naip, grid)
    halo = kernel_radius(31.0) + 30
    rows, cols = (height + 2 * halo) // 30 + 2, (width + 2 * halo) // 30 + 2
    origin = Affine(30.0, 0, 500000.0 - halo - 7, 0, -30.0, 4300000.0 + halo + 11)
    codes = np.asarray(NLCD_CODES, np.uint8)[nlcd_like_map(rows, cols, 10, block=1, seed=seed)]
    write_raster(root / "nlcd.tif", codes, Grid(CRS_UTM, origin, rows, cols), nodata=0)
    left, bottom, right, top = grid.bounds
    return Tile(
        "bench",
        "train",
        CRS_UTM.to_string(),
        (left, bottom, right, top),
        {"naip": root / "naip.tif", "nlcd": root / "nlcd.tif"},
    )


def uniform_matrix(seed: int = 0) -> np.ndarray:
    """A (4, 17) cooccurrence matrix whose columns sum to 1 (as counted matrices do)."""
    matrix = np.random.default_rng(seed).random((len(CHESAPEAKE4.classes), len(NLCD_CODES)))
    return matrix / matrix.sum(axis=0)


def io_floor(tile: Tile, data: np.ndarray, out: Path) -> None:
    """Read the inputs the prior needs, write ``data`` with the prior's writer, in one call."""
    grid = Grid.of(tile.layer("naip"))
    halo = kernel_radius(31.0)
    left, bottom, right, top = grid.expand(halo).bounds
    with rasterio.open(tile.layer("nlcd")) as src:
        window = from_bounds(left, bottom, right, top, src.transform).round_offsets()
        src.read(1, window=window.round_lengths(), boundless=False)
    with prior_writer(out, grid, CHESAPEAKE4, {"recipe": "floor"}) as dst:
        dst.write(data)


def previous_path(tile: Tile, matrix: np.ndarray, out: Path) -> None:
    """The prior as lcip wrote it before: whole-tile arrays, a NaN copy, DEFLATE in one call."""
    grid = Grid.of(tile.layer("naip"))
    prior, valid = nlcd_prior(grid, tile.layer("nlcd"), matrix)
    copy = prior.astype(np.float32, copy=True)
    copy[:, ~valid] = np.nan
    write_raster(out, copy, grid, nodata=float("nan"), band_names=list(CHESAPEAKE4.classes))


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _parse_size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 4096x4096, got {text!r}") from None
    return h, w


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print a markdown table."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=_parse_size, default=(4096, 4096), help="HxW px (4096x4096)")
    p.add_argument("--repeat", type=int, default=3, help="interleaved repeats (3)")
    p.add_argument("--no-previous", action="store_true", help="skip the previous path")
    p.add_argument("--root", type=Path, default=None, help="work folder (a temporary one)")
    args = p.parse_args(argv)
    height, width = args.size
    with tempfile.TemporaryDirectory(dir=args.root) as tmp:
        root = Path(tmp)
        tile = make_inputs(root, height, width)
        matrix = uniform_matrix()
        job = NLCDPriorJob(
            root / "prior", scheme=CHESAPEAKE4, matrix=matrix, nlcd_layer="nlcd", force=True
        )
        result = job(tile)  # warm-up; also the data the floor writes
        with rasterio.open(result.path) as src:
            data = src.read()
        runs: dict[str, list[float]] = {"floor": [], "prior": [], "previous": []}
        for n in range(max(args.repeat, 1)):
            runs["floor"].append(_timed(lambda: io_floor(tile, data, root / "floor.tif")))
            runs["prior"].append(_timed(lambda: job(tile)))
            if not args.no_previous:
                runs["previous"].append(
                    _timed(lambda: previous_path(tile, matrix, root / "previous.tif"))
                )
            print(
                f"repeat {n}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in runs.items() if v),
                file=sys.stderr,
            )
        sizes = {
            name: os.path.getsize(path) / 2**20
            for name, path in (
                ("floor", root / "floor.tif"),
                ("prior", Path(str(result.path))),
                ("previous", root / "previous.tif"),
            )
            if path.exists()
        }
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"\ntile {height} x {width} px, {len(CHESAPEAKE4.classes)} classes, 30 m NLCD with 10 "
        f"classes in the tile's CRS; {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, load average {load:.1f} at the end; best of {args.repeat} "
        f"interleaved repeats, ratio = median of the paired ratios\n"
    )
    print("| step | seconds (best) | vs I/O floor | file (MiB) |")
    print("| --- | ---: | ---: | ---: |")
    labels = {
        "floor": "I/O floor: read inputs, write the prior's array with its writer",
        "prior": "lcip NLCD prior (`NLCDPriorJob`, streamed, ZSTD)",
        "previous": "previous path (whole arrays, NaN copy, DEFLATE)",
    }
    for name, times in runs.items():
        if not times:
            continue
        ratio = statistics.median(t / f for t, f in zip(times, runs["floor"], strict=True))
        print(f"| {labels[name]} | {min(times):.2f} | {ratio:.2f}x | {sizes.get(name, 0):.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
