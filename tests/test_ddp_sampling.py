"""Crop sampling under DDP: each rank draws its own share of every epoch's crops.

The two-process test runs Lightning's ``ddp_spawn`` strategy on CPU (gloo) with the trainer
lcip builds (:func:`lcip.stages.train.build_trainer`), so it also checks that Lightning's
automatic ``DistributedSampler`` does not wrap (and re-shard) lcip's sampler.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from omegaconf import OmegaConf
from torch import Tensor, nn

from lcip.callbacks import ReleaseProcessGroup
from lcip.datamodules import ResumableDataLoader, TileDataModule
from lcip.manifest import Manifest
from lcip.samplers import RandomCropSampler
from lcip.stages.train import build_trainer

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
    dm = TileDataModule(
        fake_region, prior_layer="prior", crop_size=32, batch_size=4, steps_per_epoch=3, seed=11
    )
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
