import math

import lightning as L
import pytest
import torch

from lcip.data.datamodules import TileDataModule
from lcip.errors import ConfigError
from lcip.io.manifest import Manifest
from lcip.training.models import FCN
from lcip.training.schedulers import CosineDecay
from lcip.training.tasks import DEFAULT_WARMUP_STEPS, ImplicitPosteriorTask, SupervisedTask, adamw
from tests.conftest import quiet_trainer


def _trainer(tmp_path, steps: int) -> L.Trainer:  # type: ignore[no-untyped-def]
    return quiet_trainer(tmp_path, max_steps=steps)


def test_warmup_defaults() -> None:
    net = FCN(4, 4, num_filters=4, num_layers=1)
    assert ImplicitPosteriorTask(net, 4, loss="qr").warmup_steps == DEFAULT_WARMUP_STEPS
    assert ImplicitPosteriorTask(net, 4, loss="rq").warmup_steps == DEFAULT_WARMUP_STEPS
    assert ImplicitPosteriorTask(net, 4, loss="soft_naive").warmup_steps == 0
    assert ImplicitPosteriorTask(net, 4, loss="qr", warmup_steps=5).warmup_steps == 5
    with pytest.raises(ConfigError, match="unknown loss 'nope'"):
        ImplicitPosteriorTask(net, 4, loss="nope")


def test_training_switches_from_ce_to_qr_and_logs_metrics(fake_region: Manifest, tmp_path) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    dm = TileDataModule(
        fake_region,
        crop_size=32,
        batch_size=8,
        steps_per_epoch=4,
        val_crop_size=48,
    )
    task = ImplicitPosteriorTask(
        FCN(4, 4, num_filters=8, num_layers=2), 4, loss="qr", warmup_steps=3
    )
    seen: list[bool] = []
    original = task.training_step

    def spy(batch, batch_idx):  # type: ignore[no-untyped-def]
        seen.append(task.in_warmup())
        return original(batch, batch_idx)

    task.training_step = spy  # type: ignore[method-assign]
    before = [p.detach().clone() for p in task.parameters()]
    trainer = _trainer(tmp_path, 6)
    trainer.fit(task, datamodule=dm)
    assert seen == [True, True, True, False, False, False]
    assert any(not torch.equal(a, b) for a, b in zip(before, task.parameters(), strict=True))
    metrics = trainer.callback_metrics
    for key in ("val/loss", "val/q_acc", "val/q_miou", "val/r_acc", "val/r_miou"):
        assert key in metrics and torch.isfinite(metrics[key])
    assert 0.0 <= float(metrics["val/r_acc"]) <= 1.0


def test_val_r_uses_each_tile_denominator_like_prediction(fake_region: Manifest, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """val/r_acc equals r computed on whole tiles with the tile's own denominator."""
    from dataclasses import replace

    import numpy as np

    from lcip.classes import CHESAPEAKE4, IGNORE_INDEX
    from lcip.io.raster import Grid, read_on_grid, write_raster
    from lcip.losses import implied_posterior, log_denominator, log_prior, log_probs

    # two validation tiles, so one validation batch mixes them (a batch denominator would differ)
    tiles = tuple(replace(t, split="val") if t.tile_id in ("t2", "t3") else t for t in fake_region)
    region = Manifest(tiles, fake_region.path)
    t3 = region.tile("t3").layer("naip")  # a much brighter tile: its mean q differs from t2's
    grid3 = Grid.of(t3)
    write_raster(
        t3, np.clip(read_on_grid(t3, grid3).astype(int) * 3, 0, 255).astype(np.uint8), grid3
    )
    torch.manual_seed(0)
    dm = TileDataModule(region, crop_size=32, batch_size=8, steps_per_epoch=3, val_crop_size=96)
    task = ImplicitPosteriorTask(
        FCN(4, 4, num_filters=8, num_layers=2), 4, loss="qr", warmup_steps=1
    )
    trainer = _trainer(tmp_path, 3)
    trainer.fit(task, datamodule=dm)
    correct = total = 0
    batch_logq: list[torch.Tensor] = []
    batch_mask: list[torch.Tensor] = []
    for tile in region.select("val"):
        grid = Grid.of(tile.layer("naip"))
        image = torch.from_numpy(read_on_grid(tile.layer("naip"), grid).astype(np.float32) / 255)
        prior = torch.from_numpy(read_on_grid(tile.layer("prior"), grid))[None]
        valid = torch.isfinite(prior).all(1)
        target = torch.from_numpy(
            CHESAPEAKE4.map_labels(read_on_grid(tile.layer("lc"), grid, bands=1)).astype(np.int64)
        )[None]
        target[~valid] = IGNORE_INDEX
        with torch.no_grad():
            log_q = log_probs(task(image[None]), "logits", 1e-4)
        log_p = log_prior(torch.nan_to_num(prior), 1e-4)
        pred = implied_posterior(log_q, log_p, log_denominator(log_q, valid)).argmax(1)
        keep = target != IGNORE_INDEX
        correct += int((pred[keep] == target[keep]).sum())
        total += int(keep.sum())
        batch_logq.append(log_q)
        batch_mask.append(valid)
    expected = correct / total
    assert abs(float(trainer.callback_metrics["val/r_acc"]) - expected) < 1e-6
    # the denominators are each tile's own, and they differ between the tiles
    denoms = task._tile_log_denominators(len(batch_logq)).float()
    for i, lq in enumerate(batch_logq):
        direct = log_denominator(lq, batch_mask[i])
        torch.testing.assert_close(denoms[i], direct, atol=1e-5, rtol=0)
    assert (denoms[0] - denoms[1]).abs().max() > 1e-3


def test_cosine_schedule_decays_to_zero_over_the_run(fake_region: Manifest, tmp_path) -> None:  # type: ignore[no-untyped-def]
    dm = TileDataModule(fake_region, crop_size=32, batch_size=4, steps_per_epoch=4)
    task = ImplicitPosteriorTask(
        FCN(4, 4, num_filters=4, num_layers=1), 4, loss="soft_naive", optimizer=adamw(lr=0.1)
    )
    assert task.scheduler_factory is CosineDecay  # lcip's default recipe
    lrs: list[float] = []

    class Spy(L.Callback):
        def on_train_batch_start(self, trainer, *args) -> None:  # type: ignore[no-untyped-def]
            lrs.append(trainer.optimizers[0].param_groups[0]["lr"])

    trainer = quiet_trainer(tmp_path, max_epochs=2, limit_val_batches=0, callbacks=[Spy()])
    trainer.fit(task, datamodule=dm)
    expected = [0.05 * (1 + math.cos(math.pi * i / 8)) for i in range(8)]  # 8 steps in all
    assert lrs == pytest.approx(expected)
    # the run's length is not part of the scheduler's state: a resumed run reads its own
    state = trainer.lr_scheduler_configs[0].scheduler.state_dict()
    assert not {"run_length", "_length", "total_steps"} & set(state)


def test_optimizer_and_scheduler_come_from_their_factories(fake_region: Manifest, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A ``_partial_`` optimizer and a plateau scheduler, as configs/ build them."""
    from hydra.utils import instantiate

    from lcip.config import compose_config

    cfg = compose_config(["experiment=paper_recipe", "optimizer.lr=0.05"])
    optimizer, scheduler = instantiate(cfg.optimizer), instantiate(cfg.scheduler)
    net = FCN(4, 4, num_filters=4, num_layers=1)
    task = ImplicitPosteriorTask(
        net, 4, loss="soft_naive", optimizer=optimizer, scheduler=scheduler
    )
    assert "optimizer" not in task.hparams  # checkpoints stay loadable with weights_only=True
    config = task.configure_optimizers()
    assert isinstance(config["optimizer"], torch.optim.AdamW)
    assert config["optimizer"].param_groups[0]["lr"] == 0.05
    assert config["optimizer"].param_groups[0]["weight_decay"] == 0.01
    plateau = config["lr_scheduler"]
    assert isinstance(plateau["scheduler"], torch.optim.lr_scheduler.ReduceLROnPlateau)
    assert plateau["monitor"] == "val/loss" and "interval" not in plateau  # once an epoch
    assert plateau["scheduler"].patience == 3 and plateau["scheduler"].factor == 0.5
    supervised = SupervisedTask(net, 4, optimizer=optimizer).configure_optimizers()
    assert isinstance(supervised, torch.optim.AdamW)  # no scheduler: a constant rate


def test_bad_optimizer_or_scheduler_settings_fail_when_the_task_is_made() -> None:
    from functools import partial

    net = FCN(4, 4, num_filters=4, num_layers=1)
    with pytest.raises(ConfigError, match=r"^optimizer: AdamW\(lr=-1, .*\): Invalid learning rate"):
        ImplicitPosteriorTask(net, 4, optimizer=adamw(lr=-1))
    plateau = partial(torch.optim.lr_scheduler.ReduceLROnPlateau, factor=2.0)
    with pytest.raises(ConfigError, match=r"^scheduler: ReduceLROnPlateau\(factor=2.0\): "):
        ImplicitPosteriorTask(net, 4, scheduler=plateau)
    with pytest.raises(ConfigError, match=r"^optimizer: AdamW\(.*\): .*unexpected keyword"):
        SupervisedTask(net, 4, optimizer=partial(torch.optim.AdamW, learning_rate=1e-3))


def test_task_counts_q_and_prior_classes_for_the_collapse_guard() -> None:
    """collapse_counts: q's argmax and the prior's argmax per class over valid pixels only."""
    task = ImplicitPosteriorTask(FCN(4, 4, num_filters=4, num_layers=1), 4)
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(3, 4, 8, 8, generator=g)
    prior = torch.softmax(torch.randn(3, 4, 8, 8, generator=g), 1)
    mask = torch.rand(3, 8, 8, generator=g) > 0.3
    for _ in range(2):  # two batches add up
        task._count_classes("train", logits, {"prior": prior, "valid": mask})
    expected_q = torch.bincount(logits.argmax(1)[mask], minlength=4).double()
    expected_p = torch.bincount(prior.argmax(1)[mask], minlength=4).double()
    torch.testing.assert_close(
        task.collapse_counts["train"], 2 * torch.stack([expected_q, expected_p])
    )
    # without a prior the labels are the reference (labelled pixels only)
    label = torch.randint(0, 4, (3, 8, 8), generator=g)
    label[0, 0] = 255
    task._count_classes("val", logits, {"label": label, "valid": mask})
    keep = mask & (label != 255)
    torch.testing.assert_close(
        task.collapse_counts["val"][1], torch.bincount(label[keep], minlength=4).double()
    )
    assert float(task.collapse_counts["val"][0].sum()) == float(keep.sum())
