"""Lightning data module: splits, sampling and batching of tile windows."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader

from lcip.classes import ClassScheme, get_scheme
from lcip.data.batch_slots import BatchSlots, SlotBatch
from lcip.data.datasets import LayerSpec, TileWindowDataset, collate_windows
from lcip.data.samplers import GridCropSampler, RandomCropSampler, ShardedBatchSampler
from lcip.errors import ConfigError
from lcip.io.manifest import Manifest
from lcip.io.nodata import warn_empty_imagery


class ResumableDataLoader(DataLoader[dict[str, torch.Tensor]]):
    """The training loader: batches through reusable shared memory, resumable inside an epoch.

    Its workers write batches into a fixed set of shared-memory buffers that it makes before
    they start (:class:`~lcip.data.batch_slots.BatchSlots`) and send only the buffer's number; a
    buffer is written again only once no tensor of the training process uses it. Handing
    fresh shared memory over for every batch, as PyTorch does, cost about 12 ms per batch of
    32 crops of 128 px on this project's 2-core VM, more than reading the batch (see
    BENCHMARKS.md). With ``pin_memory`` (CUDA present), PyTorch's pin-memory thread copies
    each batch from its buffer into pinned memory (:meth:`SlotBatch.pin_memory`), which frees
    the buffer at once.

    Lightning stores the ``state_dict`` of a loader that has one in every checkpoint and hands
    it back to ``load_state_dict`` when a run resumes; the loader then tells its
    :class:`RandomCropSampler` to skip the crops the interrupted run already used, so a resumed
    run sees exactly the batches an uninterrupted one would have.

    Args:
        dataset: the dataset.
        sampler: the random crop sampler.
        batch_size: crops per batch.
        reuse_memory: hand batches over through the reused buffers; False: in new memory for
            every batch, as PyTorch does (kept for comparison in ``scripts/bench_loader.py``).
        **kwargs: further :class:`~torch.utils.data.DataLoader` arguments.
    """

    sampler: RandomCropSampler
    dataset: TileWindowDataset

    def __init__(
        self,
        dataset: TileWindowDataset,
        sampler: RandomCropSampler,
        batch_size: int,
        reuse_memory: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(dataset, batch_size=batch_size, sampler=sampler, **kwargs)
        self._served = 0
        self.reuse_memory = reuse_memory
        self.slots: BatchSlots | None = None
        #: Batches that arrived here as a reused buffer, and as tensors (new memory, or a
        #: copy in pinned memory made by the pin-memory thread).
        self.slot_hits = 0
        self.slot_misses = 0

    def __iter__(self) -> Any:
        """Batches of the current epoch (the rest of it, when resuming)."""
        if self.slots is None:  # before the workers start, so that they share the buffers
            size = self.sampler.size
            layout = self.dataset.batch_layout(self.batch_size or 1, size, size)
            self.slots = (
                BatchSlots.for_loader(layout, self.num_workers, self.prefetch_factor)
                if self.reuse_memory
                else BatchSlots(layout, 0, self.num_workers)
            )
            self.dataset.slots = self.slots
        self._served = 0
        for i, message in enumerate(super().__iter__()):
            if i == 0:  # the sampler has started: it knows how many crops it skipped
                self._served = self.sampler.offset // (self.batch_size or 1)
            self._served += 1
            self.slots.release_unused()
            if isinstance(message, SlotBatch):
                self.slot_hits += 1
                batch = message.resolve()
            else:  # new memory, or already pinned by the pin-memory thread
                self.slot_misses += 1
                batch = message
            del message
            yield batch
            del batch

    def state_dict(self) -> dict[str, int]:
        """The epoch and the number of batches already served in it."""
        return {"epoch": self.sampler.epoch, "batches": self._served}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Resume inside the epoch a checkpoint was taken in."""
        self.sampler.resume(int(state["epoch"]), int(state["batches"]) * (self.batch_size or 1))


class TileDataModule(L.LightningDataModule):
    """Random crops from many training tiles; a fixed grid of crops over validation tiles.

    Args:
        manifest: manifest file (or a loaded :class:`Manifest`).
        scheme: class scheme name or config.
        layers: the layers read (:class:`~lcip.data.datasets.LayerSpec`; default: ``naip``
            imagery, ``prior``, ``lc`` labels): imagery, the prior (the weak supervision),
            labels (validation metrics only, except for the high-res supervised loss), extra
            input layers stacked onto the imagery, and the NLCD layer whose per-pixel classes
            and 30 m block ids batches carry (``nlcd``, ``block``) for label super-resolution
            (``loss=lsr``), with its encoding.
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
        zero_is_nodata: all-zero imagery pixels are nodata when the imagery declares none.
        channels_last: hand the model its images in ``channels_last`` memory format (after
            the transfer to the device; the training stage converts the model's weights).
        training_copy: folder for training-layout copies of the training tiles' layers
            (uncompressed, memory-mapped; see :mod:`lcip.data.training_copy`), made on first use,
            checked against their sources and read instead of the originals; None reads the
            originals. The training stage's default is a folder under ``paths.root``
            (``lcip/conf/data/default.yaml``).
        training_copy_max_gb: the largest training copy made (GB); a larger one, or one the
            free disk space cannot hold, is not made and the originals are read, with a
            one-line warning (:func:`lcip.data.training_copy.bounded_training_copy`). None: only
            the free space bounds it.

    Validation crops partition each validation tile (no overlap, boundless at the edges), so
    per-tile sums over the validation set cover every pixel once, as prediction does.

    Under DDP each rank trains on its own share of every epoch's crops (see
    :class:`~lcip.data.samplers.RandomCropSampler`; ``steps_per_epoch`` is per rank, so an epoch
    sees ``world_size`` times as many crops), and validates its share of the validation
    batches (see :class:`~lcip.data.samplers.ShardedBatchSampler`: whole batches, the same number on
    every rank, padded with an all-invalid batch where one is short): the task sums its
    figures over the ranks, so N ranks report the single-process figures in about 1/N of the
    time.
    """

    def __init__(
        self,
        manifest: str | Path | Manifest,
        scheme: str | Mapping[str, Any] | ClassScheme = "chesapeake4",
        layers: LayerSpec | None = None,
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
        zero_is_nodata: bool = True,
        channels_last: bool = False,
        training_copy: str | Path | None = None,
        training_copy_max_gb: float | None = None,
    ) -> None:
        super().__init__()
        self.manifest = manifest if isinstance(manifest, Manifest) else Manifest.read(manifest)
        self.scheme = get_scheme(scheme)
        self.layers = layers if layers is not None else LayerSpec()
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
        self.zero_is_nodata = zero_is_nodata
        self.channels_last = channels_last
        self.training_copy = Path(training_copy) if training_copy else None
        self.training_copy_max_gb = (
            None if training_copy_max_gb is None else float(training_copy_max_gb)
        )
        self.train_dataset: TileWindowDataset | None = None
        self.val_dataset: TileWindowDataset | None = None

    def setup(self, stage: str | None = None) -> None:
        """Open the datasets of the requested stage."""
        if stage in (None, "fit") and self.train_dataset is None:
            self.train_dataset = self._dataset(self.train_splits, self.training_copy)
            warn_empty_imagery(self.train_dataset.manifest, self.layers.image, self.zero_is_nodata)
        if stage in (None, "fit", "validate") and self.val_dataset is None and self.val_splits:
            if len(self.manifest.select(self.val_splits)):
                self.val_dataset = self._dataset(self.val_splits)

    def _dataset(self, splits: Sequence[str], copy: Path | None = None) -> TileWindowDataset:
        manifest = self.manifest.select(splits)
        if copy is not None:
            from lcip.data.training_copy import bounded_training_copy

            spec = self.layers
            names = [n for n in (spec.image, spec.prior, spec.label, *spec.extra, spec.nlcd) if n]
            manifest.check_files(names)
            manifest = bounded_training_copy(manifest, names, copy, self.training_copy_max_gb)
        return TileWindowDataset(
            manifest,
            self.layers,
            self.scheme,
            self.image_scale,
            self.cache,
            self.zero_is_nodata,
            whole_batches=True,
        )

    def _loader_kwargs(self) -> dict[str, Any]:
        return {
            "num_workers": self.num_workers,
            "collate_fn": collate_windows,
            "persistent_workers": self.num_workers > 0,
            "pin_memory": torch.cuda.is_available(),
        }

    def train_dataloader(self) -> ResumableDataLoader:
        """Batches of random crops, each crop from a randomly drawn training tile."""
        assert self.train_dataset is not None, "call setup('fit') first"
        shapes = self.train_dataset.tile_shapes
        small = [
            t.tile_id
            for t, (h, w) in zip(self.train_dataset.manifest, shapes, strict=True)
            if min(h, w) < self.crop_size
        ]
        if small:
            raise ConfigError(
                f"data.crop_size={self.crop_size}: larger than training tile(s) {small[:5]} "
                f"(smallest side {min(min(s) for s in shapes)} px)"
            )
        rank, world_size = self._rank()
        sampler = RandomCropSampler(
            shapes,
            self.crop_size,
            self.steps_per_epoch * self.batch_size,
            self.seed,
            rank=rank,
            world_size=world_size,
        )
        return ResumableDataLoader(
            self.train_dataset, sampler, self.batch_size, **self._loader_kwargs()
        )

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """The batch's images in ``channels_last`` memory format when configured."""
        if self.channels_last and isinstance(batch, dict) and "image" in batch:
            batch["image"] = batch["image"].contiguous(memory_format=torch.channels_last)
        return batch

    def _rank(self) -> tuple[int | None, int | None]:
        """This process's rank and the world size, from the trainer when one is attached.

        None when no trainer is attached: the sampler then asks ``torch.distributed``.
        """
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return None, None
        return int(trainer.global_rank), int(trainer.world_size)

    def val_dataloader(self) -> DataLoader[dict[str, torch.Tensor]] | list[Any]:
        """Batches of non-overlapping crops covering each validation tile once (this rank's)."""
        if self.val_dataset is None:
            return []
        shapes = self.val_dataset.tile_shapes
        size = min(self.val_crop_size, max(max(s) for s in shapes))
        rank, world_size = self._rank()
        batches = ShardedBatchSampler(
            GridCropSampler(shapes, size, partition=True), self.batch_size, rank, world_size
        )
        return DataLoader(self.val_dataset, batch_sampler=batches, **self._loader_kwargs())
