"""Map products of a prediction run: seamless mosaics, confidence, class areas, an HTML page.

:func:`make_products` turns a predictions manifest (written by ``lcip-predict``: per-tile COGs
``q_prob``, ``q_class``, ``r_prob``, ``r_class`` on each tile's grid) into the files a map user
opens, under one folder (``outputs/maps/<name>/``):

- ``class.vrt`` (and ``class.tif``, one mosaicked COG with overviews, with ``mosaic=True``):
  the seamless class map of ``r`` (or ``q``) with the scheme's colour table, in one CRS; QGIS
  opens either with the class colours. Tiles in another CRS (another UTM zone) are warped once
  onto the mosaic grid, under ``warped/<product>/<tile>.tif`` (see
  :mod:`lcip.products.mosaic`);
- ``prob_q.vrt`` and ``prob_r.vrt`` (and ``.tif`` with ``mosaic=True``): the probabilities,
  one band per class;
- ``confidence/<tile>.tif``, ``confidence.vrt`` (and ``confidence.tif``): the maximum
  probability of ``r`` by default, or its normalized entropy (see
  :mod:`lcip.products.confidence`);
- ``areas_tiles.csv``, ``areas_total.csv`` and, with a zones layer, ``areas_zones.csv``: class
  areas in hectares and percent, computed with exactextract; ``areas.gpkg`` holds the same
  tables as layers ``tiles`` (footprints), ``total`` and ``zones`` (the zone polygons) (see
  :mod:`lcip.products.areas`);
- ``index.html``: one self-contained page: the layers over the imagery, a legend, a layer
  switch and the area tables (see :mod:`lcip.products.html`).

Every product records what made it (the predictions' fingerprints, their checkpoints, the
settings, the lcip version): rasters in their ``lcip_provenance`` tag, tables and the page in a
``<file>.provenance.json`` sidecar (see :mod:`lcip.products.records`). Files are written
atomically, and a rerun skips every product whose record is unchanged.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rasterio.crs import CRS

import lcip
from lcip.classes import ClassScheme
from lcip.errors import ConfigError, DataError
from lcip.io.manifest import Manifest
from lcip.io.provenance import PROVENANCE_TAG, is_up_to_date, read_provenance
from lcip.io.raster import Grid
from lcip.products import areas as _areas
from lcip.products import html as _html
from lcip.products.confidence import DEFAULT_MEASURE, check_measure, write_confidence
from lcip.products.mosaic import (
    LayerKind,
    class_kind,
    confidence_kind,
    majority_crs,
    mosaic_grid,
    mosaic_layer,
    parse_crs,
    prob_kind,
)
from lcip.products.records import Recorder, sidecar_up_to_date, write_sidecar

log = logging.getLogger(__name__)

#: The prediction layers products are made from (see :data:`lcip.inference.predict.OUTPUT_LAYERS`).
PREDICTION_LAYERS = ("q_prob", "q_class", "r_prob", "r_class")


def make_products(
    predictions: Manifest,
    scheme: ClassScheme,
    out_dir: Path,
    *,
    zones: Path | None = None,
    zones_id: str | None = None,
    mosaic: bool = False,
    output: str = "r",
    crs: str | CRS | None = None,
    imagery_layer: str | None = "naip",
    prior_layer: str | None = None,
    confidence: str = DEFAULT_MEASURE,
    force: bool = False,
) -> dict[str, Path]:
    """Make every map product of a prediction run (skipping those already up to date).

    Args:
        predictions: the predictions manifest (layers ``q_prob``, ``q_class``, ``r_prob``,
            ``r_class`` per tile, as :func:`lcip.inference.predict.predict_manifest` returns or
            ``lcip-predict`` writes; plus the imagery and prior layers it was made from).
        scheme: the class scheme of the predictions (names and colours).
        out_dir: the products folder (e.g. ``outputs/maps/<name>``), created if missing.
        zones: a vector file (any format GDAL reads) whose polygons get class areas.
        zones_id: the field of ``zones`` that identifies each polygon (required with
            ``zones``).
        mosaic: also write mosaicked COGs (``class.tif``, ``prob_q.tif``, ``prob_r.tif``,
            ``confidence.tif``) besides the VRTs.
        output: which output the class map, confidence and areas describe: ``r`` (the implied
            posterior, default) or ``q`` (the network).
        crs: the CRS of the seamless products (e.g. ``EPSG:32618``); None takes the CRS most
            tiles have (tiles in another CRS are warped to it).
        imagery_layer: manifest layer of the imagery shown in the HTML page (None: none).
        prior_layer: manifest layer of the prior shown in the HTML page (None: the first
            ``prior_*`` layer of the manifest, if any).
        confidence: the confidence measure: ``max`` (max probability, default) or
            ``entropy`` (normalized entropy), see :mod:`lcip.products.confidence`.
        force: rewrite every product.

    Returns:
        product name -> file: ``class_vrt``, ``prob_q_vrt``, ``prob_r_vrt``,
        ``confidence_vrt``, ``areas_tiles_csv``, ``areas_total_csv``, ``areas_gpkg``,
        ``html``; with ``mosaic=True`` also ``class_cog``, ``prob_q_cog``, ``prob_r_cog``,
        ``confidence_cog``; with ``zones`` also ``areas_zones_csv``.

    Raises:
        ConfigError: ``output`` not q or r, ``zones`` without ``zones_id`` or an unknown
            ``zones_id`` field, an unknown ``crs``.
        ManifestError: a tile lacks a prediction layer.
        DataError: a prediction file is missing or corrupt, or the zones file is unreadable.
    """
    if output not in ("q", "r"):
        raise ConfigError(f"map.output={output!r}: must be q or r")
    check_measure(confidence)
    if len(predictions) == 0:
        raise DataError(f"{predictions.path or 'predictions manifest'}: lists no tiles")
    predictions.check_files(PREDICTION_LAYERS)
    zone_frame = _areas.read_zones(Path(zones), zones_id) if zones is not None else None
    tiles = predictions.tiles
    class_tiles = {t.tile_id: t.layer(f"{output}_class") for t in tiles}
    grids = [Grid.of(p) for p in class_tiles.values()]
    grid = mosaic_grid(grids, parse_crs(crs) if crs else majority_crs(grids))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    recorder = Recorder(
        {
            "scheme": scheme.name,
            "classes": list(scheme.classes),
            "colors": [list(c) for c in scheme.colors],
            "output": output,
        }
    )
    tags = _readable_tags(predictions, output)
    products: dict[str, Path] = {}

    def add_mosaic(name: str, layer_tiles: Mapping[str, Path], kind: LayerKind) -> None:
        made = mosaic_layer(
            name,
            layer_tiles,
            grid,
            kind,
            out_dir,
            recorder,
            cog=mosaic,
            force=force,
            extra_tags=tags,
        )
        for suffix, path in made.items():
            products[f"{name}_{suffix}"] = path

    add_mosaic("class", class_tiles, class_kind(scheme))
    for which in ("q", "r"):
        add_mosaic(
            f"prob_{which}", {t.tile_id: t.layer(f"{which}_prob") for t in tiles}, prob_kind(scheme)
        )
    add_mosaic(
        "confidence",
        _confidence_tiles(predictions, output, confidence, out_dir, recorder, tags, force),
        confidence_kind(confidence),
    )
    products.update(
        _area_products(
            class_tiles, scheme, grid, zone_frame, zones, zones_id, out_dir, recorder, force
        )
    )
    products["html"] = _page(
        predictions,
        scheme,
        grid,
        products,
        out_dir,
        recorder,
        force,
        imagery_layer=imagery_layer,
        prior_layer=prior_layer if prior_layer is not None else _first_prior(predictions),
        output=output,
        confidence=confidence,
    )
    log.info("map products in %s (%d files)", out_dir, len(products))
    return products


def _readable_tags(predictions: Manifest, output: str) -> dict[str, str]:
    """Tags naming what made the products: lcip version, predictions, their checkpoints."""
    checkpoints: set[str] = set()
    for tile in predictions:
        record = read_provenance(tile.layer(f"{output}_class")) or {}
        sha = (record.get("params") or {}).get("checkpoint_sha256")
        if sha:
            checkpoints.add(str(sha))
    return {
        "lcip_version": lcip.__version__,
        "source_predictions": str(predictions.path or ""),
        "output": output,
        "checkpoint_sha256": ",".join(sorted(checkpoints)),
    }


def _layer_files(predictions: Manifest, layer: str | None) -> list[Path]:
    """The files of a layer, for the tiles that have it (none when ``layer`` is None)."""
    return [t.layers[layer] for t in predictions if layer is not None and layer in t.layers]


def _first_prior(predictions: Manifest) -> str | None:
    return next((n for n in predictions.layer_names if n.startswith("prior_")), None)


def _confidence_tiles(
    predictions: Manifest,
    output: str,
    measure: str,
    out_dir: Path,
    recorder: Recorder,
    tags: Mapping[str, str],
    force: bool,
) -> dict[str, Path]:
    """Each tile's confidence COG (``<out_dir>/confidence/<tile>.tif``), rebuilt if stale."""
    made: dict[str, Path] = {}
    for tile in predictions:
        prob = tile.layer(f"{output}_prob")
        dst = out_dir / "confidence" / f"{tile.tile_id}.tif"
        record = recorder.record({"product": "confidence", "measure": measure}, {"prob": prob})
        if force or not is_up_to_date(dst, record, Grid.of(prob), 1):
            write_confidence(
                prob,
                dst,
                measure,
                {**tags, PROVENANCE_TAG: record, "tile_id": tile.tile_id, "measure": measure},
            )
            recorder.forget(dst)
        made[tile.tile_id] = dst
    return made


def _area_products(
    class_tiles: Mapping[str, Path],
    scheme: ClassScheme,
    grid: Grid,
    zone_frame: Any,
    zones: Path | None,
    zones_id: str | None,
    out_dir: Path,
    recorder: Recorder,
    force: bool,
) -> dict[str, Path]:
    """The area tables (CSV) and the GeoPackage, rebuilt together when any is stale."""
    paths = {
        "areas_tiles_csv": out_dir / "areas_tiles.csv",
        "areas_total_csv": out_dir / "areas_total.csv",
        "areas_gpkg": out_dir / "areas.gpkg",
    }
    if zone_frame is not None:
        paths["areas_zones_csv"] = out_dir / "areas_zones.csv"
    inputs: dict[str, Path] = dict(class_tiles)
    if zones is not None:
        inputs["zones"] = Path(zones)
    record = recorder.record(
        {"product": "class areas", "zones_id": zones_id, "crs": grid.crs.to_string()}, inputs
    )
    if not force and all(sidecar_up_to_date(p, record) for p in paths.values()):
        return paths
    found = _areas.compute_areas(class_tiles, scheme.num_classes, zone_frame)
    tiles_table = _areas.areas_table(("tile_id", list(class_tiles)), found.tiles, scheme)
    total = _areas.total_table(found.tiles, scheme)
    footprints = _areas.footprints_frame(found, grid.crs)
    layers: dict[str, Any] = {
        "tiles": footprints.merge(tiles_table, on="tile_id"),
        "total": total,
    }
    _areas.write_csv(paths["areas_tiles_csv"], tiles_table)
    _areas.write_csv(paths["areas_total_csv"], total)
    if zone_frame is not None and found.zones is not None and zones_id is not None:
        zone_table = _areas.areas_table(
            (zones_id, [str(v) for v in zone_frame[zones_id]]), found.zones, scheme
        )
        _areas.write_csv(paths["areas_zones_csv"], zone_table)
        geo = zone_frame[[zones_id, zone_frame.geometry.name]].copy()
        geo[zones_id] = geo[zones_id].astype(str)
        layers["zones"] = geo.reset_index(drop=True).join(zone_table.drop(columns=[zones_id]))
    _areas.write_gpkg(paths["areas_gpkg"], layers)
    for path in paths.values():
        write_sidecar(path, record)
    return paths


def _page(
    predictions: Manifest,
    scheme: ClassScheme,
    grid: Grid,
    products: Mapping[str, Path],
    out_dir: Path,
    recorder: Recorder,
    force: bool,
    *,
    imagery_layer: str | None,
    prior_layer: str | None,
    output: str,
    confidence: str,
) -> Path:
    """The HTML page (``<out_dir>/index.html``), rebuilt when anything it shows changed."""
    path = out_dir / "index.html"
    imagery = _layer_files(predictions, imagery_layer)
    priors = _layer_files(predictions, prior_layer)
    tables = [
        ("Class areas per zone", "areas_zones_csv"),
        ("Class areas per tile", "areas_tiles_csv"),
    ]
    inputs = {
        "class": products["class_vrt"],
        "confidence": products["confidence_vrt"],
        "areas_total": products["areas_total_csv"],
        **{key: products[key] for _, key in tables if key in products},
        **{f"imagery_{i}": p for i, p in enumerate(imagery)},
        **{f"prior_{i}": p for i, p in enumerate(priors)},
    }
    record = recorder.record(
        {
            "product": "html page",
            "max_px": _html.MAX_PREVIEW_PX,
            "imagery_layer": imagery_layer,
            "prior_layer": prior_layer,
            "measure": confidence,
        },
        inputs,
    )
    if not force and sidecar_up_to_date(path, record):
        return path
    preview = _html.preview_grid(grid)
    images: dict[str, str] = {}
    if imagery:
        image = _html.read_preview(imagery, preview, fill=0, dtype="float32")
        images["imagery"] = _html.png_data_uri(_html.imagery_rgba(image))
    if priors:
        prior = _html.read_preview(priors, preview, fill=float("nan"), dtype="float32")
        valid = np.isfinite(prior).all(axis=0)
        prior_classes = np.where(valid, np.nan_to_num(prior).argmax(axis=0), 255)
        images["prior"] = _html.png_data_uri(_html.classes_rgba(prior_classes, scheme))
    classes = _html.read_preview([products["class_vrt"]], preview, fill=255, dtype="uint8")
    images["map"] = _html.png_data_uri(_html.classes_rgba(classes[0], scheme))
    conf = _html.read_preview(
        [products["confidence_vrt"]], preview, fill=float("nan"), dtype="float32"
    )[0]
    lo = 1.0 / scheme.num_classes if confidence == "max" else 0.0
    images["confidence"] = _html.png_data_uri(_html.ramp_rgba(conf, lo, 1.0))
    totals = pd.read_csv(products["areas_total_csv"])
    label = {"max": "max probability", "entropy": "normalized entropy"}[confidence]
    text = _html.page_html(
        out_dir.name,
        images,
        scheme,
        totals,
        [("Class areas, whole area", totals)]
        + [(caption, pd.read_csv(products[key])) for caption, key in tables if key in products],
        preview.shape,
        f"Confidence: {label} of {output}",
        (lo, 1.0),
        subtitle=(
            f"{len(predictions)} tiles, {grid.crs.to_string()}, scheme {scheme.name}, "
            f"output {output}; lcip {lcip.__version__}"
        ),
    )
    _html.write_page(path, text)
    write_sidecar(path, record)
    return path


__all__ = ["PREDICTION_LAYERS", "make_products"]
