"""Launch modes: trainer and SLURM launcher configs, a submitit local dry run, DDP refusals."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from lcip.config import CONFIG_DIR, compose_config, to_dict
from lcip.errors import ConfigError
from lcip.io.manifest import Manifest
from lcip.stages.train import apply_run_settings, check_launch_mode
from lcip.training.trainer import build_trainer, multi_process, trainer_arguments

SLURM = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
LOCAL = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher"
BASIC = "hydra._internal.core_plugins.basic_launcher.BasicLauncher"


def _with_hydra(*overrides: str) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name="lcip", overrides=list(overrides), return_hydra_config=True)


@pytest.mark.filterwarnings("ignore::UserWarning")  # Hydra: schema matching is deprecated
def test_slurm_launcher_has_one_task_per_gpu_and_follows_the_trainer() -> None:
    cfg = _with_hydra(
        "hydra/launcher=submitit_slurm", "trainer=ddp", "trainer.devices=8", "trainer.num_nodes=2"
    )
    launcher = cfg.hydra.launcher
    assert launcher._target_ == SLURM
    assert launcher.tasks_per_node == launcher.gpus_per_node == 8 and launcher.nodes == 2
    assert launcher.max_num_timeout > 0  # requeued jobs resume
    cpu = _with_hydra("hydra/launcher=submitit_slurm_cpu", "jobs=12").hydra.launcher
    assert cpu._target_ == SLURM and cpu.cpus_per_task == 12 and cpu.tasks_per_node == 1
    assert cpu.gpus_per_node is None
    local = _with_hydra("hydra/launcher=submitit_local").hydra.launcher
    assert local._target_ == LOCAL and local.tasks_per_node == 1


def test_trainer_configs() -> None:
    gpu = compose_config(["trainer=gpu"])
    assert gpu.trainer.accelerator == "gpu" and gpu.trainer.precision == "bf16-mixed"
    assert gpu.train.compile is False and gpu.train.denominator is None
    cfg = compose_config(["trainer=ddp"])
    assert cfg.trainer.strategy == "ddp" and cfg.trainer.num_nodes == 1
    assert cfg.trainer.accelerator == "gpu"  # on top of trainer=gpu
    assert multi_process(cfg.trainer) and not multi_process(compose_config([]).trainer)
    assert "denominator" not in cfg.trainer and cfg.train.denominator == "global"
    apply_run_settings(cfg)
    assert cfg.loss.denominator == "global" and cfg.trainer.precision == "bf16-mixed"
    given = compose_config(["trainer=ddp", "loss.denominator=batch"])
    apply_run_settings(given, ["loss.denominator=batch"])
    assert given.loss.denominator == "batch"  # the command line wins
    naive = compose_config(["trainer=ddp", "loss=soft_naive"])
    apply_run_settings(naive)
    assert "denominator" not in naive.loss  # losses without a denominator are left alone
    cpu = compose_config(["trainer.enable_progress_bar=false"])
    trainer = build_trainer(to_dict(cpu.trainer), logger=False)
    assert isinstance(trainer, L.Trainer)
    assert trainer._accelerator_connector.use_distributed_sampler is False


def test_ddp_only_in_single_runs_and_slurm_multiruns() -> None:
    ddp = compose_config(["trainer=ddp"])
    check_launch_mode(ddp, "RUN", BASIC)  # Lightning starts the ranks
    check_launch_mode(ddp, "MULTIRUN", SLURM)  # one SLURM task per rank
    for launcher in (BASIC, LOCAL):
        with pytest.raises(ConfigError, match=r"^trainer\.strategy=ddp .*local Hydra multirun"):
            check_launch_mode(ddp, "MULTIRUN", launcher)
    check_launch_mode(compose_config([]), "MULTIRUN", BASIC)  # one process: fine


def _cli(stage: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    code = f"from lcip.cli import {stage}; {stage}()"
    return subprocess.run(
        [sys.executable, "-c", code, *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )


def test_submitit_local_dry_run_runs_the_jobs(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    run = _cli(
        "region",
        "-m",
        "region=tiny",
        "region.synthetic.tile_size=64,96",
        f"paths.root={tmp_path}",
        f"hydra.sweep.dir={sweep}",
        "hydra/launcher=submitit_local",
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    manifest = Manifest.read(tmp_path / "regions" / "tiny" / "manifest.csv")
    assert len(manifest) == 4  # the last job of the sweep wrote it
    logs = sorted(sweep.glob(".submitit/*/*_log.out"))
    assert len(logs) == 2  # one submitit job per setting, with its logs
    assert {p.name for p in sweep.iterdir()} >= {"0", "1", "multirun.yaml"}


def test_ddp_in_a_local_multirun_is_refused_in_one_line(tmp_path: Path) -> None:
    run = _cli(
        "train",
        "-m",
        "trainer.devices=2",
        "+trainer.strategy=ddp",
        "seed=0,1",
        f"paths.root={tmp_path}",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        cwd=tmp_path,
    )
    assert run.returncode == 2
    errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "hydra/launcher=submitit_slurm" in errors[0]


def test_cpu_precision_is_bf16_only_where_the_cpu_has_it() -> None:
    from lcip.training.trainer import cpu_has_native_bf16

    cfg = compose_config([])
    assert cfg.trainer.precision is None
    expected = "bf16-mixed" if cpu_has_native_bf16() else "32-true"
    assert trainer_arguments(to_dict(cfg.trainer))["precision"] == expected
    apply_run_settings(cfg)
    assert cfg.trainer.precision == expected  # recorded in the run's config.yaml
    forced = compose_config(["trainer.precision=32-true"])
    assert trainer_arguments(to_dict(forced.trainer))["precision"] == "32-true"
