"""Crop sampling under DDP: each rank draws its own share of every epoch's crops.

The two-process test runs Lightning's ``ddp_spawn`` strategy on CPU (gloo) with the trainer
lcip builds (:func:`lcip.training.trainer.build_trainer`), so it also checks that Lightning's
automatic ``DistributedSampler`` does not wrap (and re-shard) lcip's sampler.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from torch import Tensor, nn

from lcip.data.datamodules import ResumableDataLoader, TileDataModule
from lcip.data.samplers import GridCropSampler, RandomCropSampler, ShardedBatchSampler
from lcip.io.manifest import Manifest
from lcip.training.callbacks import ReleaseProcessGroup
from lcip.training.trainer import build_trainer

SHAPES = [(96, 96), (96, 200), (150, 96), (64, 64)]


def _keys(sampler: RandomCropSampler) -> list[tuple[int, ...]]:
    return [tuple(k) for k in sampler]


def test_ranks_split_an_epoch_into_disjoint_shares_of_the_single_process_draw() -> None:
    ranks = [RandomCropSampler(SHAPES, 32, 50, seed=7, rank=r, world_size=2) for r in (0, 1)]
    shares = [_keys(s) for s in ranks]
    assert all(len(s) == 50 and len(set(s)) == 50 for s in shares)
    assert not set(shares[0]) & set(shares[1])
    single = _keys(RandomCropSampler(SHAPES, 32, 100, seed=7, rank=0, world_size=1))
    assert shares[0] == single[0::2] and shares[1] == single[1::2]
    assert len({k[0] for k in shares[0][:16]}) == len(SHAPES)  # one rank's batch mixes tiles
    for s in ranks:
        s.set_epoch(1)
    assert not set(_keys(ranks[0])) & set(shares[0])  # another epoch, other crops
    assert _keys(RandomCropSampler(SHAPES, 32, 50, seed=8, rank=0, world_size=2)) != shares[0]


def test_crops_stay_inside_their_tile_and_distinct_when_positions_are_scarce() -> None:
    shapes = [(34, 34), (33, 40)]  # 9 + 18 crop positions of 32 px
    ranks = [_keys(RandomCropSampler(shapes, 32, 12, seed=0, rank=r, world_size=2)) for r in (0, 1)]
    assert len(set(ranks[0]) | set(ranks[1])) == 24  # 24 of the 27 positions, none twice
    for t, r, c, h, w in ranks[0] + ranks[1]:
        H, W = shapes[t]
        assert 0 <= r <= H - h and 0 <= c <= W - w
    repeated = _keys(RandomCropSampler(shapes, 32, 40, seed=0, world_size=1))
    assert len(repeated) == 40 and len(set(repeated)) <= 27  # more crops than positions
    with pytest.raises(ValueError, match="rank 2"):
        RandomCropSampler(SHAPES, 32, 10, rank=2, world_size=2)


def test_a_rank_resumes_mid_epoch_with_its_own_remaining_crops() -> None:
    full = _keys(RandomCropSampler(SHAPES, 32, 40, seed=5, rank=1, world_size=2))
    resumed = RandomCropSampler(SHAPES, 32, 40, seed=5, rank=1, world_size=2)
    resumed.resume(0, 16)
    assert _keys(resumed) == full[16:] and resumed.offset == 16


class _Recorder(L.LightningModule):
    """Writes, per rank and epoch, which sampler its training loader has and its crops."""

    def __init__(self, out: str) -> None:
        super().__init__()
        self.out = out
        self.net = nn.Conv2d(4, 4, 1)

    def on_train_epoch_start(self) -> None:
        loader = self.trainer.train_dataloader
        assert isinstance(loader, ResumableDataLoader)
        sampler = loader.sampler
        record = {
            "sampler": type(sampler).__name__,
            "world_size": getattr(sampler, "world_size", None),
            "keys": [list(k) for k in sampler],
        }
        path = Path(self.out) / f"rank{self.global_rank}_epoch{self.current_epoch}.json"
        path.write_text(json.dumps(record))

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        loss: Tensor = self.net(batch["image"]).mean()
        return loss

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=0.0)


def test_two_gloo_processes_draw_disjoint_shares_every_epoch(
    fake_region: Manifest, tmp_path: Path
) -> None:
    out = tmp_path / "ranks"
    out.mkdir()
    dm = TileDataModule(fake_region, crop_size=32, batch_size=4, steps_per_epoch=3, seed=11)
    node = OmegaConf.create(
        {
            "_target_": "lightning.Trainer",
            "accelerator": "cpu",
            "devices": 2,
            "strategy": "ddp_spawn",
            "max_epochs": 2,
            "limit_val_batches": 0,
            "logger": False,
            "enable_checkpointing": False,
            "enable_progress_bar": False,
            "enable_model_summary": False,
            "default_root_dir": str(tmp_path),
        }
    )
    trainer = build_trainer(node)
    assert any(isinstance(c, ReleaseProcessGroup) for c in trainer.callbacks)  # ranks end together
    trainer.fit(_Recorder(str(out)), datamodule=dm)
    rec = {
        (r, e): json.loads((out / f"rank{r}_epoch{e}.json").read_text())
        for r in (0, 1)
        for e in (0, 1)
    }
    assert {v["sampler"] for v in rec.values()} == {"RandomCropSampler"}  # not wrapped
    assert {v["world_size"] for v in rec.values()} == {2}
    shapes = [(96, 96), (96, 96)]  # the two training tiles
    for epoch in (0, 1):
        a = {tuple(k) for k in rec[(0, epoch)]["keys"]}
        b = {tuple(k) for k in rec[(1, epoch)]["keys"]}
        assert len(a) == len(b) == 12 and not a & b
        single = RandomCropSampler(shapes, 32, 24, seed=11, rank=0, world_size=1)
        single.set_epoch(epoch)
        assert a | b == set(_keys(single))
    assert rec[(0, 0)]["keys"] != rec[(0, 1)]["keys"]


def test_validation_batches_shard_in_whole_batches_with_equal_counts() -> None:
    grid = GridCropSampler([(96, 96), (64, 96)], 32, partition=True)  # 9 + 6 crops
    chunks = [grid.keys[i : i + 4] for i in range(0, 15, 4)]  # 4 batches: 4, 4, 4, 3 crops
    assert list(ShardedBatchSampler(grid, 4, rank=0, world_size=1)) == chunks
    ranks = [ShardedBatchSampler(grid, 4, rank=r, world_size=3) for r in range(3)]
    assert [len(s) for s in ranks] == [2, 2, 2]  # the same number of steps on every rank
    assert [s.padding for s in ranks] == [0, 1, 1]
    assert list(ranks[0]) == [chunks[0], chunks[3]]
    pad = [(0, 96, 96, 32, 32)]  # wholly past tile 0's bottom-right corner
    assert list(ranks[1]) == [chunks[1], pad] and list(ranks[2]) == [chunks[2], pad]
    with pytest.raises(ValueError, match="rank 3"):
        ShardedBatchSampler(grid, 4, rank=3, world_size=3)


def test_a_padding_batch_holds_no_valid_pixel(fake_region: Manifest) -> None:
    dm = TileDataModule(fake_region, batch_size=2, val_crop_size=32)
    dm.setup("fit")
    assert dm.val_dataset is not None
    (pad,) = ShardedBatchSampler(GridCropSampler([(96, 96)], 32), 9, rank=1, world_size=2)
    batch = dm.val_dataset.read_windows(pad)
    assert isinstance(batch, dict) and batch["image"].shape == (1, 4, 32, 32)
    assert not batch["valid"].any()


class _ValRecorder(L.Callback):
    """Writes each rank's validation batches, its step count and the per-tile denominators."""

    def __init__(self, out: str) -> None:
        self.out = out
        self.steps = 0

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        from torchmetrics import Metric

        states = [
            getattr(m, name)
            for m in pl_module.modules()
            if isinstance(m, Metric)
            for name in m._defaults
        ]
        self.shared = any(state.is_shared() for state in states)

    def on_validation_batch_end(self, *args: Any, **kwargs: Any) -> None:
        self.steps += 1

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        loader = trainer.val_dataloaders
        tiles = len(loader.dataset.tile_shapes)  # type: ignore[union-attr]
        denominators = pl_module._tile_log_denominators(tiles)  # type: ignore[operator]
        record = {
            "batches": [[list(k) for k in b] for b in loader.batch_sampler],  # type: ignore[union-attr]
            "steps": self.steps,
            "shared": self.shared,
            "denominators": denominators.tolist(),
        }
        path = Path(self.out) / f"val_{trainer.state.fn.value}_rank{trainer.global_rank}.json"
        path.write_text(json.dumps(record))


def _trainer_node(devices: int, root: Path, **extra: Any) -> Any:
    strategy: Any = "auto"
    if devices > 1:  # a collective mismatch fails in a minute instead of hanging the run
        strategy = {
            "_target_": "lightning.pytorch.strategies.DDPStrategy",
            "start_method": "spawn",
            "timeout": {"_target_": "datetime.timedelta", "seconds": 60},
        }
    settings = {
        "_target_": "lightning.Trainer",
        "accelerator": "cpu",
        "devices": devices,
        "strategy": strategy,
        "precision": "32-true",
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "default_root_dir": str(root),
    }
    return OmegaConf.create({**settings, **extra})


def test_two_gloo_processes_validate_their_shares_and_report_the_single_process_figures(
    fake_region: Manifest, tmp_path: Path
) -> None:
    from lcip.training.models import FCN
    from lcip.training.tasks import ImplicitPosteriorTask

    def task() -> ImplicitPosteriorTask:
        torch.manual_seed(0)  # batch norm: buffers that DDP broadcasts in every forward
        model = FCN(4, 4, num_filters=4, num_layers=2, batch_norm=True)
        return ImplicitPosteriorTask(
            model, 4, loss="qr", loss_kwargs={"denominator": "global"}, warmup_steps=0
        )

    def datamodule() -> TileDataModule:
        return TileDataModule(fake_region, crop_size=32, batch_size=2, val_crop_size=32)

    def record(fn: str, rank: int) -> dict[str, Any]:
        return dict(json.loads((tmp_path / f"val_{fn}_rank{rank}.json").read_text()))

    single = build_trainer(_trainer_node(1, tmp_path), callbacks=[_ValRecorder(str(tmp_path))])
    (expected,) = single.validate(task(), datamodule=datamodule())
    one = record("validate", 0)
    every = [tuple(map(tuple, b)) for b in one["batches"]]
    assert len(every) == 5 and one["steps"] == 5  # one 96 px tile, 3 x 3 crops of 32 in 2s

    ranks = build_trainer(_trainer_node(2, tmp_path), callbacks=[_ValRecorder(str(tmp_path))])
    (got,) = ranks.validate(task(), datamodule=datamodule())
    shares = [record("validate", r) for r in (0, 1)]
    assert [s["steps"] for s in shares] == [3, 3]  # batches 0, 2, 4 | 1, 3 and a padding one
    # ddp_spawn passes the task through shared memory: metric states must not stay there (the
    # ranks would add into one confusion matrix, racing)
    assert [s["shared"] for s in shares] == [False, False]
    mine = [[tuple(map(tuple, b)) for b in s["batches"]] for s in shares]
    assert mine[0] == every[0::2] and mine[1][:2] == every[1::2] and len(mine[1]) == 3
    assert set(expected) == {"val/loss", "val/q_acc", "val/q_miou", "val/r_acc", "val/r_miou"}
    assert got["val/loss"] == pytest.approx(expected["val/loss"], rel=1e-5)
    for key in ("val/q_acc", "val/q_miou", "val/r_acc", "val/r_miou"):
        # a pixel whose two best logits tie to the last bit may go either way on other threads
        assert got[key] == pytest.approx(expected[key], abs=2e-3), key
    for share in shares:  # every rank's r uses the whole tile's mean q
        np.testing.assert_allclose(share["denominators"], one["denominators"], rtol=1e-6)

    # During fit validation runs through DDP's forward, which broadcasts the batch-norm
    # buffers every step: the ranks must validate in step, padding batch included.
    node = _trainer_node(2, tmp_path, max_steps=2, limit_train_batches=2, num_sanity_val_steps=2)
    fitting = build_trainer(node, callbacks=[_ValRecorder(str(tmp_path))])
    fitting.fit(task(), datamodule=datamodule())
    assert [record("fit", r)["steps"] for r in (0, 1)] == [2 + 3, 2 + 3]  # sanity + epoch
    assert math.isfinite(float(fitting.callback_metrics["val/loss"]))
