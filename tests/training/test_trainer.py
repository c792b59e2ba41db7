"""Trainer, callbacks and logger from config dicts; the resume choice (lcip.training.trainer)."""

from __future__ import annotations

from pathlib import Path

import pytest
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

from lcip.config import compose_config, to_dict
from lcip.errors import ConfigError
from lcip.training.callbacks import AppendingCSVLogger, LastCheckpoint, ReleaseProcessGroup
from lcip.training.collapse_guard import CollapseGuard
from lcip.training.trainer import (
    RUN_IDENTITY,
    build_callbacks,
    build_logger,
    build_trainer,
    resume_checkpoint,
    run_identity,
)


def test_callbacks_and_logger_come_from_their_config_groups(tmp_path: Path) -> None:
    cfg = compose_config(["callbacks=early_stopping", "callbacks.last_checkpoint.every_n_steps=7"])
    given = {
        "model_checkpoint": {"dirpath": tmp_path / "ckpt", "filename": "best"},
        "last_checkpoint": {"path": tmp_path / "ckpt" / "last.ckpt"},
        "collapse_guard": {"run": "r/n", "classes": ["a", "b"]},
    }
    callbacks = build_callbacks(to_dict(cfg.callbacks), given)
    assert list(callbacks) == [
        "model_checkpoint",
        "last_checkpoint",
        "early_stopping",
        "collapse_guard",
    ]
    best, last, stop, guard = callbacks.values()
    assert isinstance(best, ModelCheckpoint) and best.monitor == "val/loss"
    assert Path(str(best.dirpath)) == tmp_path / "ckpt" and best.filename == "best"
    assert isinstance(last, LastCheckpoint) and last.every_n_steps == 7
    assert last.path == tmp_path / "ckpt" / "last.ckpt"
    assert isinstance(stop, EarlyStopping) and stop.patience == 6 and stop.monitor == "val/loss"
    assert isinstance(guard, CollapseGuard) and guard.classes == ("a", "b") and guard.share == 0.95
    # the default group: no early stopping; a null node is off, and its given arguments dropped
    plain = build_callbacks(
        {**to_dict(compose_config([]).callbacks), "collapse_guard": None}, given
    )
    assert list(plain) == ["model_checkpoint", "last_checkpoint"]
    logger = build_logger(to_dict(cfg.logger), save_dir=tmp_path, name="logs", version="")
    assert isinstance(logger, AppendingCSVLogger) and Path(logger.log_dir) == tmp_path / "logs"
    assert build_logger(None) is False
    trainer = build_trainer(
        {**to_dict(cfg.trainer), "enable_progress_bar": False, "default_root_dir": str(tmp_path)},
        callbacks=list(callbacks.values()),
        logger=logger,
    )
    assert trainer.precision in ("bf16-mixed", "32-true")  # chosen for this CPU
    kinds = [type(c) for c in trainer.callbacks]
    assert LastCheckpoint in kinds and CollapseGuard in kinds and ReleaseProcessGroup in kinds


def test_bad_callback_settings_are_one_line_naming_the_key(tmp_path: Path) -> None:
    nodes = to_dict(compose_config([]).callbacks)
    nodes["last_checkpoint"] = {**nodes["last_checkpoint"], "every_n_step": 5}
    with pytest.raises(ConfigError, match=r"^callbacks.last_checkpoint.every_n_step=5: "):
        build_callbacks(nodes, {"last_checkpoint": {"path": tmp_path / "last.ckpt"}})
    with pytest.raises(ConfigError, match=r"^trainer.max_epoch"):
        build_trainer({"_target_": "lightning.Trainer", "max_epoch": 3}, logger=False)


def test_resume_only_a_run_with_the_same_identity(tmp_path: Path) -> None:
    config = to_dict(compose_config(["region=tiny"]))
    assert {"optimizer", "scheduler", "model", "task"} <= set(RUN_IDENTITY)
    last = tmp_path / "last.ckpt"
    assert resume_checkpoint(tmp_path, last, config, config) is None  # nothing to resume
    last.write_bytes(b"x")
    assert resume_checkpoint(tmp_path, last, config, config) == last
    assert resume_checkpoint(tmp_path, last, config, config, resume="never") is None
    other = {**config, "trainer": {**config["trainer"], "max_epochs": 99}}
    assert resume_checkpoint(tmp_path, last, other, config) == last  # not part of the identity
    faster = to_dict(compose_config(["region=tiny", "optimizer.lr=0.01"]))
    with pytest.raises(ConfigError, match=r"optimizer.lr: 0.001 -> 0.01.*train.resume=never"):
        resume_checkpoint(tmp_path, last, faster, config)
    plateau = to_dict(compose_config(["region=tiny", "scheduler=plateau"]))
    assert run_identity(plateau)["scheduler"] != run_identity(config)["scheduler"]
    with pytest.raises(ConfigError, match=rf"^run_dir={tmp_path}: holds a run made with other"):
        resume_checkpoint(tmp_path, last, plateau, config)
