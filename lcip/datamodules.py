"""Lightning data module: splits, sampling and batching of tile windows."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader

from lcip.classes import ClassScheme, get_scheme
from lcip.datasets import LayerSpec, TileWindowDataset, collate_windows
from lcip.manifest import Manifest
from lcip.samplers import GridCropSampler, RandomCropSampler


class TileDataModule(L.LightningDataModule):
    """Random crops from many training tiles; a fixed grid of crops over validation tiles.

    Args:
        manifest: manifest file (or a loaded :class:`Manifest`).
        scheme: class scheme name or config.
        image_layer: imagery layer name.
        prior_layer: prior layer name (the weak supervision).
        label_layer: label layer (used for validation metrics only; never for QR/RQ training).
        extra_layers: extra input layers stacked onto the imagery.
        train_splits: splits whose tiles are sampled for training.
        val_splits: splits used for validation (must have labels).
        crop_size: training crop size (px).
        batch_size: crops per batch.
        steps_per_epoch: training batches per epoch.
        val_crop_size: validation crop size; the grid covers each validation tile.
        num_workers: data loader workers.
        seed: sampling seed.
        image_scale: divisor applied to the imagery (255 for uint8 NAIP).
        cache: hold tiles in memory after their first read (small regions only).
    """

    def __init__(
        self,
        manifest: str | Path | Manifest,
        scheme: str | Mapping[str, Any] | ClassScheme = "chesapeake4",
        image_layer: str = "naip",
        prior_layer: str | None = "prior",
        label_layer: str | None = "lc",
        extra_layers: Sequence[str] = (),
        train_splits: Sequence[str] = ("train",),
        val_splits: Sequence[str] = ("val",),
        crop_size: int = 128,
        batch_size: int = 32,
        steps_per_epoch: int = 100,
        val_crop_size: int = 256,
        num_workers: int = 0,
        seed: int = 0,
        image_scale: float = 255.0,
        cache: bool = False,
    ) -> None:
        super().__init__()
        self.manifest = manifest if isinstance(manifest, Manifest) else Manifest.read(manifest)
        self.scheme = get_scheme(scheme)
        self.train_layers = LayerSpec(image_layer, prior_layer, label_layer, tuple(extra_layers))
        self.train_splits = list(train_splits)
        self.val_splits = list(val_splits)
        self.crop_size = crop_size
        self.batch_size = batch_size
        self.steps_per_epoch = steps_per_epoch
        self.val_crop_size = val_crop_size
        self.num_workers = num_workers
        self.seed = seed
        self.image_scale = image_scale
        self.cache = cache
        self.train_dataset: TileWindowDataset | None = None
        self.val_dataset: TileWindowDataset | None = None

    def setup(self, stage: str | None = None) -> None:
        """Open the datasets of the requested stage."""
        if stage in (None, "fit") and self.train_dataset is None:
            self.train_dataset = TileWindowDataset(
                self.manifest.select(self.train_splits),
                self.train_layers,
                self.scheme,
                self.image_scale,
                self.cache,
            )
        if stage in (None, "fit", "validate") and self.val_dataset is None and self.val_splits:
            val = self.manifest.select(self.val_splits)
            if len(val):
                self.val_dataset = TileWindowDataset(
                    val, self.train_layers, self.scheme, self.image_scale, self.cache
                )

    def _loader(
        self, dataset: TileWindowDataset, sampler: Any
    ) -> DataLoader[dict[str, torch.Tensor]]:
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            collate_fn=collate_windows,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
        )

    def train_dataloader(self) -> DataLoader[dict[str, torch.Tensor]]:
        """Batches of random crops, each crop from a randomly drawn training tile."""
        assert self.train_dataset is not None, "call setup('fit') first"
        sampler = RandomCropSampler(
            self.train_dataset.tile_shapes,
            self.crop_size,
            self.steps_per_epoch * self.batch_size,
            self.seed,
        )
        return self._loader(self.train_dataset, sampler)

    def val_dataloader(self) -> DataLoader[dict[str, torch.Tensor]] | list[Any]:
        """Batches of grid crops covering the validation tiles."""
        if self.val_dataset is None:
            return []
        size = min(self.val_crop_size, *(min(s) for s in self.val_dataset.tile_shapes))
        sampler = GridCropSampler(self.val_dataset.tile_shapes, size)
        return self._loader(self.val_dataset, sampler)
