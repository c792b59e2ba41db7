"""Learned prior: a small FCN from the NLCD prior bands + 4 vector layers to high-res labels.

Trained with cross-entropy (ignore index) on a few labelled tiles that must be disjoint from
the evaluation tiles, then run over every tile with overlapping windows; its softmax output,
smoothed like every prior, is written as the tile's prior raster.

Inputs per tile: the ``prior_nlcd`` layer (C float bands, NaN nodata) and the ``vectors``
layer (4 binary bands: buildings, roads, waterways, waterbodies), stacked in that order.

The trained network is an output too: :func:`save_checkpoint` stores its weights with the
provenance of its training (:func:`training_provenance`: the training settings, the seed, the
training tiles and the fingerprints of their input and label files), and
:func:`load_checkpoint` reuses them only while that provenance is unchanged. So a rerun with
the same inputs neither retrains nor (the weights' digest being recorded in every prior
raster) rewrites any prior, even where training is not bit-reproducible.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import nn

from lcip.classes import ClassScheme
from lcip.data.datamodules import TileDataModule
from lcip.data.datasets import LayerSpec, TileWindowDataset
from lcip.errors import ConfigError
from lcip.inference.windows import WindowConfig, sliding_window_log_probs
from lcip.io.atomic import atomic_write
from lcip.io.manifest import Manifest
from lcip.io.provenance import PROVENANCE_TAG, is_up_to_date, provenance
from lcip.priors.build import TileResult, write_prior
from lcip.training.tasks import SupervisedTask, adamw
from lcip.training.trainer import build_trainer

log = logging.getLogger(__name__)


def select_training_tiles(
    manifest: Manifest,
    train_splits: Sequence[str],
    eval_splits: Sequence[str],
    num_tiles: int = 5,
    tile_ids: Sequence[str] | None = None,
    label_layer: str = "lc",
) -> list[str]:
    """Choose the labelled tiles the learned prior trains on.

    Args:
        manifest: all tiles of the region.
        train_splits: splits to draw tiles from when ``tile_ids`` is not given.
        eval_splits: splits whose tiles are evaluation tiles (never used).
        num_tiles: number of tiles to take (the first ones of ``train_splits`` with labels).
        tile_ids: explicit tile ids instead.
        label_layer: the label layer the tiles must have.

    Returns:
        tile ids.

    Raises:
        ConfigError: if a chosen tile is an evaluation tile, lacks labels, or none is found.
    """
    eval_ids = {t.tile_id for t in manifest.select(list(eval_splits))}
    if tile_ids is not None:
        chosen = list(tile_ids)
        manifest.select(tile_ids=chosen)  # unknown ids -> clear error
    else:
        chosen = [
            t.tile_id for t in manifest.select(list(train_splits)) if label_layer in t.layers
        ][:num_tiles]
    clash = [t for t in chosen if t in eval_ids]
    if clash:
        raise ConfigError(
            f"prior.train_tile_ids: tiles {clash} are evaluation tiles (splits "
            f"{list(eval_splits)}); the learned prior must train on other tiles"
        )
    unlabelled = [t for t in chosen if label_layer not in manifest.tile(t).layers]
    if unlabelled:
        raise ConfigError(
            f"prior.train_tile_ids: tiles {unlabelled} have no '{label_layer}' labels"
        )
    if not chosen:
        raise ConfigError(
            f"no labelled tiles in splits {list(train_splits)} to train the learned prior on"
        )
    return chosen


def build_network(model: Mapping[str, Any], num_classes: int, seed: int = 0) -> nn.Module:
    """The learned prior's network, initialized from ``seed`` (the global RNG is left as is).

    Args:
        model: a Hydra node with ``_target_`` (e.g. ``lcip.training.models.FCN`` and its settings).
        num_classes: C; the network maps C prior bands + 4 vector bands to C logits.
        seed: seed of the initial weights.

    Returns:
        the untrained network.
    """
    from lcip.config import instantiate

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net: nn.Module = instantiate(
            {"learned_prior": {"model": dict(model)}},
            "learned_prior.model",
            in_channels=num_classes + 4,
            classes=num_classes,
        )
    return net


def training_provenance(
    manifest: Manifest,
    tile_ids: Sequence[str],
    params: Mapping[str, Any],
    input_layers: tuple[str, str] = ("prior_nlcd", "vectors"),
    label_layer: str = "lc",
) -> str:
    """The provenance of a trained network (see :mod:`lcip.io.provenance`).

    Args:
        manifest: tiles with the input and label layers.
        tile_ids: the training tiles.
        params: training settings (schedule, model, seed, ...).
        input_layers: (NLCD prior layer, vector layers layer).
        label_layer: high-resolution label layer.

    Returns:
        provenance JSON: ``params`` with the training tiles and layers, and the fingerprints
        of every training tile's input and label files (``<tile_id>/<layer>``).
    """
    layers = (*input_layers, label_layer)
    inputs = {f"{t}/{n}": manifest.tile(t).layer(n) for t in tile_ids for n in layers}
    return provenance({**params, "train_tiles": list(tile_ids), "layers": list(layers)}, inputs)


def save_checkpoint(path: Path, model: nn.Module, tag: str) -> Path:
    """Save a trained network's weights with the provenance of its training (atomically).

    Args:
        path: checkpoint file.
        model: the trained network.
        tag: its :func:`training_provenance`.

    Returns:
        ``path``.
    """
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return atomic_write(path, lambda f: torch.save({PROVENANCE_TAG: tag, "state_dict": state}, f))


def load_checkpoint(path: Path, model: nn.Module, expected: str) -> bool:
    """Load saved weights into ``model`` if they were trained with provenance ``expected``.

    Args:
        path: checkpoint file (need not exist).
        model: the network to load into (same architecture).
        expected: the :func:`training_provenance` the weights must have been trained with.

    Returns:
        whether the weights were loaded (False for a missing, unreadable or stale
        checkpoint: the network is to be trained anew).
    """
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        if json.loads(saved[PROVENANCE_TAG]) != json.loads(expected):
            return False
        model.load_state_dict(saved["state_dict"])
    except Exception as exc:  # a missing, truncated or foreign file: train anew
        if path.exists():
            log.info("learned prior: checkpoint %s not reused (%s)", path, exc)
        return False
    return True


def train_learned_prior(
    manifest: Manifest,
    tile_ids: Sequence[str],
    scheme: ClassScheme,
    model: nn.Module,
    *,
    input_layers: tuple[str, str] = ("prior_nlcd", "vectors"),
    label_layer: str = "lc",
    steps: int = 300,
    batch_size: int = 16,
    crop_size: int = 96,
    lr: float = 1e-3,
    seed: int = 0,
    cache: bool = False,
    device: str = "cpu",
) -> nn.Module:
    """Train the learned prior's network on labelled tiles (cross-entropy).

    Args:
        manifest: tiles with the input and label layers.
        tile_ids: the training tiles.
        scheme: class scheme.
        model: the network (inputs: C prior bands + 4 vector bands).
        input_layers: (NLCD prior layer, vector layers layer).
        label_layer: high-resolution label layer.
        steps: optimisation steps.
        batch_size: crops per batch.
        crop_size: crop size.
        lr: AdamW learning rate.
        seed: seed.
        cache: hold the training tiles in memory (small regions).
        device: torch device to train on (``cpu``, ``cuda``, ``cuda:1``, ...).

    Returns:
        the trained network (eval mode).
    """
    L.seed_everything(seed, workers=True)
    tiles = manifest.select(tile_ids=list(tile_ids))
    dm = TileDataModule(
        tiles,
        scheme,
        LayerSpec(image=input_layers[0], prior=None, label=label_layer, extra=(input_layers[1],)),
        train_splits=sorted({t.split for t in tiles}),
        val_splits=[],
        crop_size=crop_size,
        batch_size=batch_size,
        steps_per_epoch=steps,
        seed=seed,
        image_scale=1.0,
        cache=cache,
    )
    target = torch.device(device)
    trainer = build_trainer(  # as lcip-train builds its trainer (lcip.training.trainer)
        {
            "_target_": "lightning.Trainer",
            "accelerator": "cpu" if target.type == "cpu" else target.type,
            "devices": 1 if target.index is None else [target.index],
            "max_epochs": 1,
            "enable_checkpointing": False,
            "enable_model_summary": False,
            "num_sanity_val_steps": 0,
        },
        logger=False,
    )
    task = SupervisedTask(model, scheme.num_classes, optimizer=adamw(lr=lr))
    trainer.fit(task, datamodule=dm)
    return model.eval()


def model_digest(model: nn.Module) -> str:
    """Short hash of a model's weights (recorded in the priors it writes)."""
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def write_learned_priors(
    manifest: Manifest,
    model: nn.Module,
    scheme: ClassScheme,
    out_dir: Path,
    *,
    params: dict[str, Any],
    input_layers: tuple[str, str] = ("prior_nlcd", "vectors"),
    smoothing: float = 1e-4,
    window: int = 512,
    device: str = "cpu",
    force: bool = False,
) -> list[TileResult]:
    """Run the learned prior's network over every tile and write its prior rasters.

    Args:
        manifest: tiles with the input layers (on the imagery's grid).
        model: trained network.
        scheme: class scheme.
        out_dir: output folder (``<tile_id>.tif``).
        params: parameters recorded in the provenance (with the model's digest, the
            smoothing and the window added).
        input_layers: (NLCD prior layer, vector layers layer).
        smoothing: additive smoothing of the output probabilities.
        window: sliding-window size.
        device: torch device.
        force: rewrite every tile even when up to date.

    Returns:
        one result per tile. Each raster records its parameters and the fingerprints of its
        input layers' files; a tile is skipped when both match (unless ``force``).
    """
    cfg = WindowConfig(window=window, smoothing=smoothing, device=device)
    settings = {
        **params,
        "model_digest": model_digest(model),
        "smoothing": smoothing,
        "window": window,
        "edge": cfg.edge,
    }
    model = model.to(device).eval()
    dataset = TileWindowDataset(
        manifest, LayerSpec(input_layers[0], None, None, (input_layers[1],)), scheme, 1.0
    )
    results = []
    for i, tile in enumerate(manifest):
        start = time.perf_counter()
        path = out_dir / f"{tile.tile_id}.tif"
        grid = dataset.grids[i]
        tag = provenance(settings, {n: tile.layer(n) for n in input_layers})
        if not force and is_up_to_date(path, tag, grid, scheme.num_classes):
            results.append(
                TileResult(
                    tile.tile_id, "skipped", str(path), float("nan"), time.perf_counter() - start
                )
            )
            continue
        prior = np.full((scheme.num_classes, *grid.shape), np.nan, dtype=np.float32)
        valid = np.zeros(grid.shape, dtype=bool)
        for w, log_q, v in sliding_window_log_probs(model, dataset, i, cfg):
            rows = slice(int(w.row_off), int(w.row_off + w.height))
            cols = slice(int(w.col_off), int(w.col_off + w.width))
            prior[:, rows, cols] = log_q.exp().numpy()
            valid[rows, cols] = v.numpy()
        if not valid.any():
            results.append(
                TileResult(tile.tile_id, "no_valid", None, 0.0, time.perf_counter() - start)
            )
            continue
        sources = json.dumps([str(tile.layer(n)) for n in input_layers])
        write_prior(
            path,
            prior,
            valid,
            grid,
            scheme,
            {"recipe": "learned", PROVENANCE_TAG: tag, "sources": sources},
        )
        results.append(
            TileResult(
                tile.tile_id, "written", str(path), float(valid.mean()), time.perf_counter() - start
            )
        )
    return results


__all__ = [
    "build_network",
    "load_checkpoint",
    "model_digest",
    "save_checkpoint",
    "select_training_tiles",
    "train_learned_prior",
    "training_provenance",
    "write_learned_priors",
]
