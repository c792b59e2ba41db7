import lightning as L
import pytest
import torch

from lcip.datamodules import TileDataModule
from lcip.errors import ConfigError
from lcip.manifest import Manifest
from lcip.models import FCN
from lcip.tasks import DEFAULT_WARMUP_STEPS, ImplicitPosteriorTask


def _trainer(tmp_path, steps: int) -> L.Trainer:  # type: ignore[no-untyped-def]
    return L.Trainer(
        accelerator="cpu",
        max_steps=steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )


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
        prior_layer="prior",
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
