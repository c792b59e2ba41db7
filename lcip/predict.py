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
    """(read window, write window) pairs tiling the grid: read windows overlap by 2*margin."""
    inner = size - 2 * margin
    if inner <= 0:
        raise ValueError(f"window {size} too small for margin {margin}")
    for r0 in grid_starts(grid.height, inner, inner):
        for c0 in grid_starts(grid.width, inner, inner):
            h = min(inner, grid.height - r0)
            w = min(inner, grid.width - c0)
            yield (
                Window(c0 - margin, r0 - margin, w + 2 * margin, h + 2 * margin),
                Window(c0, r0, w, h),
            )


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
    margin = cfg.margin if cfg.margin is not None else max(8, _receptive_field(model) // 2)
    tags = {
        "lcip_version": lcip.__version__,
        "tile_id": tile.tile_id,
        "source_image": tile.layer(dataset.layers.image),
    }
    names = list(scheme.classes)
    cmap = colormap(scheme.colors)
    device = torch.device(cfg.device)
    windows = list(_windows(grid, cfg.window, margin))
    sums = torch.zeros(num_classes, dtype=torch.float64)
    count = 0
    # Pass 1: q.
    with (
        raster_writer(
            paths["q_prob"],
            grid,
            num_classes,
            "float32",
            nodata=float("nan"),
            tags={**tags, "output": "q"},
            band_names=names,
        ) as qp,
        raster_writer(
            paths["q_class"],
            grid,
            1,
            "uint8",
            nodata=IGNORE_INDEX,
            tags={**tags, "output": "q"},
            colormap=cmap,
        ) as qc,
    ):
        for start in tqdm(
            range(0, len(windows), cfg.batch_size), desc=f"{tile.tile_id} q", leave=False
        ):
            chunk = windows[start : start + cfg.batch_size]
            samples = [
                dataset[
                    (tile_index, int(rw.row_off), int(rw.col_off), int(rw.height), int(rw.width))
                ]
                for rw, _ in chunk
            ]
            with torch.inference_mode():
                for (rw, ww), sample in zip(chunk, samples, strict=True):
                    logits = model(sample["image"][None].to(device))[0].float().cpu()
                    log_q = log_probs(logits[None], "logits", cfg.smoothing)[0]
                    r0, c0 = int(ww.row_off - rw.row_off), int(ww.col_off - rw.col_off)
                    crop = (
                        slice(None),
                        slice(r0, r0 + int(ww.height)),
                        slice(c0, c0 + int(ww.width)),
                    )
                    q = log_q[crop].exp()
                    valid = sample["mask"][crop[1:]]
                    sums += q[:, valid].double().sum(dim=1)
                    count += int(valid.sum())
                    q_out = q.numpy().copy()
                    q_out[:, ~valid.numpy()] = np.nan
                    cls = q.argmax(0).numpy().astype(np.uint8)
                    cls[~valid.numpy()] = IGNORE_INDEX
                    qp.write(q_out, window=ww)
                    qc.write(cls[None], window=ww)
    # Pass 2: r with the denominator over the whole tile (mean of q over valid pixels).
    log_denom = (sums / max(count, 1)).clamp_min(1e-30).log().float()
    prior_layer = dataset.layers.prior
    assert prior_layer is not None
    with (
        rasterio.open(paths["q_prob"]) as qsrc,
        raster_writer(
            paths["r_prob"],
            grid,
            num_classes,
            "float32",
            nodata=float("nan"),
            tags={**tags, "output": "r", "denominator": "tile"},
            band_names=names,
        ) as rp,
        raster_writer(
            paths["r_class"],
            grid,
            1,
            "uint8",
            nodata=IGNORE_INDEX,
            tags={**tags, "output": "r", "denominator": "tile"},
            colormap=cmap,
        ) as rc,
    ):
        for _, ww in windows:
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
            r = log_r.exp().numpy()
            r[:, ~valid.numpy()] = np.nan
            cls = log_r.argmax(0).numpy().astype(np.uint8)
            cls[~valid.numpy()] = IGNORE_INDEX
            rp.write(r, window=ww)
            rc.write(cls[None], window=ww)
    return paths


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
