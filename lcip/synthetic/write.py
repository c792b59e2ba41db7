"""Writing a generated region: GeoTIFF tiles, region-wide NLCD, vectors and the manifest."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np

from lcip import __version__
from lcip.io.atomic import write_text
from lcip.io.manifest import Manifest, Tile
from lcip.io.raster import write_raster
from lcip.synthetic.classes import lc_colormap, nlcd_colormap
from lcip.synthetic.config import NLCD_BLOCK, RegionConfig
from lcip.synthetic.region import Stopwatch, SyntheticRegion, stage_rngs, synthesize
from lcip.synthetic.vectors import buildings_geojson, osm_xml

__all__ = ["generate_region", "write_region"]


def write_region(region: SyntheticRegion, out_dir: Path) -> Path:
    """Write a generated region's files (see :mod:`lcip.synthetic`) and its manifest.

    Args:
        region: the region from :func:`synthesize`.
        out_dir: region folder (created; existing files are replaced atomically).

    Returns:
        the manifest path.
    """
    cfg, layout = region.config, region.layout
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    tags = {
        "generator": "lcip.synthetic",
        "lcip_version": __version__,
        "seed": cfg.seed,
        "region": cfg.name,
    }
    tick = Stopwatch()
    lc_cmap, nlcd_cmap = lc_colormap(), nlcd_colormap()
    rng = stage_rngs(cfg.seed)[9]

    nlcd_path = write_raster(
        out_dir / "nlcd_30m.tif",
        region.nlcd,
        layout.nlcd,
        nodata=0,
        tags={**tags, "layer": "nlcd"},
        band_names=["nlcd"],
        colormap=nlcd_cmap,
    )
    write_raster(
        out_dir / "nlcd_30m_clean.tif",
        region.nlcd_clean,
        layout.nlcd,
        nodata=0,
        tags={**tags, "layer": "nlcd_clean"},
        band_names=["nlcd"],
        colormap=nlcd_cmap,
    )
    osm_path = out_dir / "osm.xml"
    write_text(osm_path, osm_xml(region, rng))
    bld_path = out_dir / "buildings.geojson"
    write_text(bld_path, buildings_geojson(region, rng))
    tick("vectors")

    tiles = []
    ts = cfg.tile_size
    for (tid, grid), split in zip(layout.tiles.items(), cfg.tile_splits(), strict=True):
        rows, cols = layout.tile_window(tid)
        r, c = divmod(cfg.tile_ids().index(tid), cfg.tiles_x)
        naip = region.naip[:, r * ts : (r + 1) * ts, c * ts : (c + 1) * ts]
        lc = region.lc[rows, cols]
        nlcd = region.nlcd[
            np.arange(rows.start, rows.stop)[:, None] // NLCD_BLOCK,
            np.arange(cols.start, cols.stop)[None, :] // NLCD_BLOCK,
        ]
        t_tags = {**tags, "tile": tid}
        paths = {
            "naip": write_raster(
                out_dir / "naip" / f"{tid}.tif",
                naip,
                grid,
                tags={**t_tags, "layer": "naip"},
                band_names=["red", "green", "blue", "nir"],
            ),
            "lc": write_raster(
                out_dir / "lc" / f"{tid}.tif",
                lc,
                grid,
                nodata=0,
                tags={**t_tags, "layer": "lc"},
                band_names=["lc"],
                colormap=lc_cmap,
            ),
            "nlcd": write_raster(
                out_dir / "nlcd" / f"{tid}.tif",
                nlcd,
                grid,
                nodata=0,
                tags={**t_tags, "layer": "nlcd"},
                band_names=["nlcd"],
                colormap=nlcd_cmap,
            ),
            "nlcd_30m": nlcd_path,
            "osm": osm_path,
            "buildings": bld_path,
        }
        tiles.append(Tile(tid, split, layout.region.crs.to_string(), grid.bounds, paths))

    tick("tiles")
    meta = {
        "generator": "lcip.synthetic",
        "lcip_version": __version__,
        "config": asdict(cfg),
        "canvas": {
            "transform": list(layout.canvas.transform)[:6],
            "shape": list(layout.canvas.shape),
        },
        "nlcd_grid": {
            "transform": list(layout.nlcd.transform)[:6],
            "shape": list(layout.nlcd.shape),
        },
        "stats": region.stats,
    }
    write_text(out_dir / "region.json", json.dumps(meta, indent=2, default=str) + "\n")
    return Manifest(tuple(tiles)).write(out_dir / "manifest.csv")


def generate_region(cfg: RegionConfig, out_dir: Path) -> Path:
    """Generate a synthetic region and write it under ``out_dir``.

    Args:
        cfg: region configuration.
        out_dir: region folder; files are (re)written atomically.

    Returns:
        the path of the region's ``manifest.csv``.
    """
    return write_region(synthesize(cfg), out_dir)
