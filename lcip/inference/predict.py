"""Whole-tile prediction: sliding windows with overlap, streamed to Cloud Optimized GeoTIFFs.

For each tile, two passes:

1. the network runs on block-aligned write windows, each read with a margin of context
   (:func:`lcip.inference.windows.sliding_window_log_probs`), so the stitched map equals whole-tile
   inference; each window's q is written to the ``q`` rasters and the per-class sum of q over
   the tile's valid pixels is accumulated;
2. the implied posterior ``r`` is computed window by window from the written q, the prior
   and the tile-wide denominator, and written too.

Outputs per tile (all on the input tile's grid, Cloud Optimized GeoTIFFs with overviews:
average for probabilities, mode for classes): ``q_prob`` (float32, one band per class, NaN =
nodata), ``q_class`` (uint8, 255 = nodata, with a colour table), ``r_prob`` and ``r_class``
likewise. Memory does not grow with the tile size: windows are read, predicted and written one
batch at a time.

Every output records its provenance (:mod:`lcip.io.provenance`): the caller's ``params`` (the
checkpoint and its sha256, the loss, its smoothing and denominator, the prior) and the
fingerprints of the tile's imagery and prior files, also each param as a readable tag. A tile
is skipped only when all four outputs are whole, on the tile's grid and record exactly this
provenance; otherwise all four are rewritten. A tile with no valid pixel (imagery or prior
nodata everywhere) is not predicted and its stale outputs are removed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import torch
from rasterio.windows import Window
from torch import nn
from tqdm.auto import tqdm

import lcip
from lcip.classes import IGNORE_INDEX, ClassScheme, colormap
from lcip.data.datasets import LayerSpec, TileWindowDataset
from lcip.inference.windows import WindowConfig, sliding_window_log_probs
from lcip.io.manifest import Manifest
from lcip.io.provenance import PROVENANCE_TAG, is_up_to_date, provenance
from lcip.io.raster import Grid, raster_writer, streaming_env
from lcip.losses import implied_posterior, log_prior

log = logging.getLogger(__name__)

#: Output layers written per tile, in manifest layer names.
OUTPUT_LAYERS = ("q_prob", "q_class", "r_prob", "r_class")


class _NoValidPixel(Exception):
    """Raised inside the q writers to abandon a tile with no valid pixel (nothing is kept)."""


def output_paths(
    out_dir: Path, tile_id: str, layers: Sequence[str] = OUTPUT_LAYERS
) -> dict[str, Path]:
    """The output files of a tile: ``<out_dir>/<layer>/<tile_id>.tif`` per output layer."""
    return {name: out_dir / name / f"{tile_id}.tif" for name in layers}


def _band_count(layer: str, num_classes: int) -> int:
    return num_classes if layer.endswith("_prob") else 1


def maps_up_to_date(paths: Mapping[str, Path], record: str, grid: Grid, num_classes: int) -> bool:
    """Whether every output map exists whole on ``grid`` and records exactly ``record``."""
    return all(
        is_up_to_date(p, record, grid, _band_count(n, num_classes)) for n, p in paths.items()
    )


def map_tags(params: Mapping[str, Any], record: str, tile_id: str, **extra: str) -> dict[str, str]:
    """The tags of a tile's output maps: readable parameters, provenance, version, tile id."""
    return {
        **{str(k): str(v) for k, v in params.items()},
        PROVENANCE_TAG: record,
        "lcip_version": lcip.__version__,
        "tile_id": tile_id,
        **extra,
    }


@contextmanager
def map_writers(
    paths: Mapping[str, Path], output: str, grid: Grid, scheme: ClassScheme, tags: dict[str, str]
) -> Iterator[tuple[Any, Any]]:
    """COG writers of one output's probability and class rasters (``output`` = q or r)."""
    with (
        raster_writer(
            paths[f"{output}_prob"],
            grid,
            scheme.num_classes,
            "float32",
            nodata=float("nan"),
            tags=tags,
            band_names=list(scheme.classes),
            cog=True,
        ) as prob,
        raster_writer(
            paths[f"{output}_class"],
            grid,
            1,
            "uint8",
            nodata=IGNORE_INDEX,
            tags=tags,
            colormap=colormap(scheme.colors),
            cog=True,
        ) as cls,
    ):
        yield prob, cls


def write_maps(
    dst_prob: Any, dst_cls: Any, log_p: torch.Tensor, valid: torch.Tensor, window: Window
) -> None:
    """Write one window of probabilities (NaN where invalid) and classes (255 where invalid)."""
    invalid = ~valid.numpy()
    prob = log_p.exp().numpy()
    prob[:, invalid] = np.nan
    cls = log_p.argmax(0).numpy().astype(np.uint8)
    cls[invalid] = IGNORE_INDEX
    dst_prob.write(prob, window=window)
    dst_cls.write(cls[None], window=window)


def predict_tile(
    model: nn.Module,
    dataset: TileWindowDataset,
    tile_index: int,
    out_dir: Path,
    scheme: ClassScheme,
    cfg: WindowConfig,
    params: Mapping[str, Any],
    force: bool = False,
) -> dict[str, Path] | None:
    """Predict one tile and write its q and r rasters (unless they are up to date).

    Args:
        model: trained network (logits), in eval mode, on ``cfg.device``.
        dataset: dataset over the tiles (imagery and prior layers).
        tile_index: index of the tile in the dataset's manifest.
        out_dir: output folder; files are ``<layer>/<tile_id>.tif``.
        scheme: class scheme (band names, colours).
        cfg: sliding-window settings.
        params: what made the maps (recorded in their provenance and as readable tags).
        force: rewrite even when up to date.

    Returns:
        output layer name -> file, or None when the tile has no valid pixel (its stale
        outputs, if any, are removed).
    """
    tile = dataset.manifest.tiles[tile_index]
    grid = dataset.grids[tile_index]
    paths = output_paths(out_dir, tile.tile_id)
    prior_layer = dataset.layers.prior
    if prior_layer is None:
        raise ValueError("prediction needs a prior layer (for r)")
    record = provenance(
        params, {"image": tile.layer(dataset.layers.image), "prior": tile.layer(prior_layer)}
    )
    num_classes = scheme.num_classes
    if not force and maps_up_to_date(paths, record, grid, num_classes):
        log.info("tile %s: outputs up to date, skipped", tile.tile_id)
        return paths
    tags = map_tags(params, record, tile.tile_id)
    sums = torch.zeros(num_classes, dtype=torch.float64)
    count = 0
    windows: list[Window] = []
    # Pass 1: q on block-aligned write windows, each read with its margin of context.
    try:
        with map_writers(paths, "q", grid, scheme, {**tags, "output": "q"}) as (qp, qc):
            for window, log_q, valid in sliding_window_log_probs(model, dataset, tile_index, cfg):
                sums += log_q[:, valid].exp().double().sum(dim=1)
                count += int(valid.sum())
                write_maps(qp, qc, log_q, valid, window)
                windows.append(window)
            if count == 0:
                raise _NoValidPixel
    except _NoValidPixel:
        log.warning(
            "tile %s: no valid pixel (imagery or prior nodata), not predicted", tile.tile_id
        )
        for p in paths.values():
            p.unlink(missing_ok=True)
        return None
    # Pass 2: r, with the denominator over the whole tile (mean of q over its valid pixels).
    log_denom = (sums / count).clamp_min(1e-30).log().float()
    r_tags = {**tags, "output": "r", "r_denominator": "tile"}
    with (
        rasterio.open(paths["q_prob"]) as qsrc,
        map_writers(paths, "r", grid, scheme, r_tags) as (rp, rc),
    ):
        for window in windows:
            q = torch.from_numpy(qsrc.read(window=window))
            prior = torch.from_numpy(
                dataset.read(tile_index, prior_layer, window, fill=np.nan).astype(np.float32)
            )
            valid = torch.isfinite(q).all(0) & torch.isfinite(prior).all(0)
            q = torch.where(valid, q, 1.0 / num_classes)
            prior = torch.where(valid, prior, 1.0 / num_classes)
            log_r = implied_posterior(
                q.log()[None], log_prior(prior[None], cfg.smoothing), log_denom
            )[0]
            write_maps(rp, rc, log_r, valid, window)
    return paths


def predict_manifest(
    model: nn.Module,
    manifest: Manifest,
    layers: LayerSpec,
    scheme: ClassScheme,
    out_dir: Path,
    cfg: WindowConfig,
    *,
    params: Mapping[str, Any],
    force: bool = False,
    zero_is_nodata: bool = True,
) -> Manifest:
    """Predict every tile of a manifest; returns the manifest with the output layers added.

    The network runs on ``cfg.device``; windows are read by ``cfg.num_workers`` DataLoader
    workers (see :func:`lcip.inference.windows.sliding_window_log_probs`).

    Args:
        model: trained network.
        manifest: tiles to predict (need imagery and prior layers).
        layers: layer names (labels are not read).
        scheme: class scheme.
        out_dir: output folder.
        cfg: sliding-window settings.
        params: what made the maps (checkpoint, its path and sha256, loss, smoothing,
            denominator, prior, ...), recorded in their provenance and as readable tags.
        force: rewrite every tile's maps.
        zero_is_nodata: all-zero imagery pixels are nodata when the imagery declares none
            (not part of the provenance unless the caller puts it in ``params``).

    Returns:
        the manifest with layers ``q_prob``, ``q_class``, ``r_prob``, ``r_class``, restricted
        to the tiles that have valid pixels.
    """
    model = model.to(cfg.device).eval()
    outputs: dict[str, dict[str, Path]] = {name: {} for name in OUTPUT_LAYERS}
    with streaming_env():
        dataset = TileWindowDataset(
            manifest,
            LayerSpec(layers.image, layers.prior, None, layers.extra),
            scheme,
            zero_is_nodata=zero_is_nodata,
        )
        for i, tile in enumerate(tqdm(manifest.tiles, desc="predict", unit="tile")):
            written = predict_tile(model, dataset, i, out_dir, scheme, cfg, params, force)
            for name, path in (written or {}).items():
                outputs[name][tile.tile_id] = path
    manifest = manifest.select(tile_ids=list(outputs["q_prob"]))
    for name, paths in outputs.items():
        manifest = manifest.with_layer(name, paths)
    return manifest


__all__ = [
    "OUTPUT_LAYERS",
    "map_tags",
    "map_writers",
    "maps_up_to_date",
    "output_paths",
    "predict_manifest",
    "predict_tile",
    "write_maps",
]
