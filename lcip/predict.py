"""Whole-tile prediction: sliding windows with overlap, streamed to GeoTIFF.

For each tile, two passes:

1. the network runs on overlapping windows; only each window's centre (a margin of at least
   half the receptive field is dropped where a neighbouring window covers it) is written to the
   ``q`` probability raster, so the stitched map equals whole-tile inference; at the same time
   the per-class sum of q over the tile's valid pixels is accumulated;
2. the implied posterior ``r`` is computed window by window from the written q, the prior
   and the tile-wide denominator, and written too.

Outputs per tile (all on the input tile's grid): ``q_prob`` (float32, one band per class),
``q_class`` (uint8, 255 = nodata, with a colour table), ``r_prob`` and ``r_class`` likewise.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
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
from lcip.datasets import LayerSpec, TileWindowDataset
from lcip.losses import implied_posterior, log_prior, log_probs
from lcip.manifest import Manifest, Tile
from lcip.raster import Grid, is_valid_raster, raster_writer
from lcip.samplers import grid_starts

log = logging.getLogger(__name__)

#: Output layers written per tile, in manifest layer names.
OUTPUT_LAYERS = ("q_prob", "q_class", "r_prob", "r_class")


@dataclass(frozen=True)
class PredictConfig:
    """Sliding-window settings.

    Args:
        window: window size in pixels.
        margin: pixels dropped at each inner window edge (None: half the receptive field,
            at least 8).
        batch_size: windows per forward pass.
        smoothing: additive smoothing of q and the prior (as in training).
        device: torch device.
    """

    window: int = 512
    margin: int | None = None
    batch_size: int = 4
    smoothing: float = 1e-4
    device: str = "cpu"


def _windows(grid: Grid, size: int, margin: int) -> Iterator[tuple[Window, Window]]:
    """(read window, write window) pairs tiling the grid.

    Write windows of ``size - 2 * margin`` px tile the grid; each read window is its write
    window grown by ``margin`` and clipped to the grid, so that at the tile's edges the network
    sees the same zero padding as on the whole tile.
    """
    inner = size - 2 * margin
    if inner <= 0:
        raise ValueError(f"window {size} too small for margin {margin}")
    for r0 in grid_starts(grid.height, inner, inner):
        for c0 in grid_starts(grid.width, inner, inner):
            h = min(inner, grid.height - r0)
            w = min(inner, grid.width - c0)
            top, left = max(0, r0 - margin), max(0, c0 - margin)
            bottom, right = min(grid.height, r0 + h + margin), min(grid.width, c0 + w + margin)
            yield Window(left, top, right - left, bottom - top), Window(c0, r0, w, h)


def _batches(
    windows: list[tuple[Window, Window]], batch_size: int
) -> Iterator[list[tuple[Window, Window]]]:
    """Consecutive windows grouped into batches of equal read-window shape."""
    batch: list[tuple[Window, Window]] = []
    for pair in windows:
        if batch and (len(batch) == batch_size or _shape(batch[0][0]) != _shape(pair[0])):
            yield batch
            batch = []
        batch.append(pair)
    if batch:
        yield batch


def _shape(w: Window) -> tuple[int, int]:
    return int(w.height), int(w.width)


def window_log_probs(
    model: nn.Module, dataset: TileWindowDataset, tile_index: int, cfg: PredictConfig
) -> Iterator[tuple[Window, torch.Tensor, torch.Tensor]]:
    """Run a network over a tile with overlapping windows.

    Yields, for write windows that tile the grid, ``(window, log_q, valid)``: the smoothed
    log-probabilities (C x h x w) of the window's centre and its valid mask (h x w). The
    stitched result equals running the network on the whole tile.

    Args:
        model: network (logits), in eval mode, on ``cfg.device``.
        dataset: dataset over the tiles.
        tile_index: index of the tile in the dataset's manifest.
        cfg: sliding-window settings.
    """
    grid = dataset.grids[tile_index]
    margin = cfg.margin if cfg.margin is not None else max(8, _receptive_field(model) // 2)
    windows = list(_windows(grid, cfg.window, margin))
    tile_id = dataset.manifest.tiles[tile_index].tile_id
    device = torch.device(cfg.device)
    for chunk in tqdm(list(_batches(windows, cfg.batch_size)), desc=tile_id, leave=False):
        samples = [dataset[(tile_index, *_offsets(rw), *_shape(rw))] for rw, _ in chunk]
        with torch.inference_mode():
            logits = model(torch.stack([x["image"] for x in samples]).to(device)).float().cpu()
        for (rw, ww), sample, log_q in zip(
            chunk, samples, log_probs(logits, "logits", cfg.smoothing), strict=True
        ):
            r0, c0 = int(ww.row_off - rw.row_off), int(ww.col_off - rw.col_off)
            rows, cols = slice(r0, r0 + int(ww.height)), slice(c0, c0 + int(ww.width))
            yield ww, log_q[:, rows, cols], sample["mask"][rows, cols]


def predict_tile(
    model: nn.Module,
    dataset: TileWindowDataset,
    tile_index: int,
    out_dir: Path,
    scheme: ClassScheme,
    cfg: PredictConfig,
) -> dict[str, Path]:
    """Predict one tile and write its q and r rasters.

    Args:
        model: trained network (logits), in eval mode.
        dataset: dataset over the tiles (imagery and prior layers).
        tile_index: index of the tile in the dataset's manifest.
        out_dir: output folder; files are ``<layer>/<tile_id>.tif``.
        scheme: class scheme (band names, colours).
        cfg: sliding-window settings.

    Returns:
        output layer name -> file.
    """
    tile: Tile = dataset.manifest.tiles[tile_index]
    grid = dataset.grids[tile_index]
    paths = {name: out_dir / name / f"{tile.tile_id}.tif" for name in OUTPUT_LAYERS}
    num_classes = scheme.num_classes
    if all(is_valid_raster(p, grid) for p in paths.values()):
        log.info("tile %s: outputs exist, skipped", tile.tile_id)
        return paths
    tags = {
        "lcip_version": lcip.__version__,
        "tile_id": tile.tile_id,
        "image": tile.layer(dataset.layers.image),
    }

    def writers(output: str, **extra: str) -> tuple[Any, Any]:
        t = {**tags, "output": output, **extra}
        prob = raster_writer(
            paths[f"{output}_prob"],
            grid,
            num_classes,
            "float32",
            nodata=float("nan"),
            tags=t,
            band_names=names,
        )
        cls = raster_writer(
            paths[f"{output}_class"],
            grid,
            1,
            "uint8",
            nodata=IGNORE_INDEX,
            tags=t,
            colormap=colormap(scheme.colors),
        )
        return prob, cls

    def write(
        dst_prob: Any, dst_cls: Any, log_p: torch.Tensor, valid: torch.Tensor, window: Window
    ) -> None:
        invalid = ~valid.numpy()
        prob = log_p.exp().numpy()
        prob[:, invalid] = np.nan
        cls = log_p.argmax(0).numpy().astype(np.uint8)
        cls[invalid] = IGNORE_INDEX
        dst_prob.write(prob, window=window)
        dst_cls.write(cls[None], window=window)

    names = list(scheme.classes)
    sums = torch.zeros(num_classes, dtype=torch.float64)
    count = 0
    windows: list[Window] = []
    # Pass 1: q on overlapping windows, keeping each window's centre.
    q_prob, q_class = writers("q")
    with q_prob as qp, q_class as qc:
        for window, log_q, valid in window_log_probs(model, dataset, tile_index, cfg):
            sums += log_q[:, valid].exp().double().sum(dim=1)
            count += int(valid.sum())
            write(qp, qc, log_q, valid, window)
            windows.append(window)
    # Pass 2: r, with the denominator over the whole tile (mean of q over its valid pixels).
    log_denom = (sums / max(count, 1)).clamp_min(1e-30).log().float()
    prior_layer = dataset.layers.prior
    assert prior_layer is not None
    r_prob, r_class = writers("r", denominator="tile")
    with rasterio.open(paths["q_prob"]) as qsrc, r_prob as rp, r_class as rc:
        for ww in windows:
            q = torch.from_numpy(qsrc.read(window=ww))
            prior = torch.from_numpy(
                dataset.read(tile_index, prior_layer, ww, fill=np.nan).astype(np.float32)
            )
            valid = torch.isfinite(q).all(0) & torch.isfinite(prior).all(0)
            q = torch.where(valid, q, 1.0 / num_classes)
            prior = torch.where(valid, prior, 1.0 / num_classes)
            log_r = implied_posterior(
                q.log()[None], log_prior(prior[None], cfg.smoothing), log_denom
            )[0]
            write(rp, rc, log_r, valid, ww)
    return paths


def _offsets(w: Window) -> tuple[int, int]:
    return int(w.row_off), int(w.col_off)


def _receptive_field(model: nn.Module) -> int:
    rf = getattr(model, "receptive_field", None)
    if isinstance(rf, int):
        return rf
    return 1 + sum(int(m.kernel_size[0]) - 1 for m in model.modules() if isinstance(m, nn.Conv2d))


def predict_manifest(
    model: nn.Module,
    manifest: Manifest,
    layers: LayerSpec,
    scheme: ClassScheme,
    out_dir: Path,
    cfg: PredictConfig,
) -> Manifest:
    """Predict every tile of a manifest; returns the manifest with the output layers added.

    Args:
        model: trained network.
        manifest: tiles to predict (need imagery and prior layers).
        layers: layer names (labels are not read).
        scheme: class scheme.
        out_dir: output folder.
        cfg: sliding-window settings.

    Returns:
        the manifest with layers ``q_prob``, ``q_class``, ``r_prob``, ``r_class``.
    """
    model = model.to(cfg.device).eval()
    dataset = TileWindowDataset(
        manifest, LayerSpec(layers.image, layers.prior, None, layers.extra), scheme
    )
    outputs: dict[str, dict[str, Path]] = {name: {} for name in OUTPUT_LAYERS}
    for i, tile in enumerate(tqdm(manifest.tiles, desc="predict", unit="tile")):
        for name, path in predict_tile(model, dataset, i, out_dir, scheme, cfg).items():
            outputs[name][tile.tile_id] = path
    for name, paths in outputs.items():
        manifest = manifest.with_layer(name, paths)
    return manifest


__all__ = ["OUTPUT_LAYERS", "PredictConfig", "predict_manifest", "predict_tile"]
