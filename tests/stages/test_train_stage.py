"""The train stage as users run it: up-front checks, true last checkpoint, kill and resume."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lcip.config import compose_config
from lcip.errors import ConfigError, LcipError
from lcip.io.manifest import Manifest, Tile
from lcip.stages.train import train
from tests.conftest import make_grid, write_fake_tile

STEPS = 40  # steps per epoch of the tiny runs


def write_prior_region(root: Path) -> Path:
    """Fake tiles (2 train, 1 val, 1 test) where the train stage looks for region=tiny's prior."""
    region_dir = root / "regions" / "tiny"
    tiles = []
    for i, split in enumerate(["train", "train", "val", "test"]):
        grid = make_grid(96, origin=(400000.0 + 96 * i, 4300000.0))
        t = write_fake_tile(region_dir, f"t{i}", grid, split, seed=i, nodata_rows=8 if i else 0)
        layers = {"naip": t.layers["naip"], "lc": t.layers["lc"], "prior_nlcd": t.layers["prior"]}
        tiles.append(Tile(t.tile_id, split, t.crs, t.bounds, layers))
    return Manifest(tuple(tiles)).write(region_dir / "priors" / "nlcd" / "manifest.csv")


def tiny_overrides(root: Path, run_name: str = "run") -> list[str]:
    return [
        "region=tiny",
        "prior=nlcd",
        f"paths.root={root}",
        f"run_name={run_name}",
        "model.num_filters=4",
        "model.num_layers=1",
        "data.crop_size=32",
        "data.batch_size=4",
        f"data.steps_per_epoch={STEPS}",
        "data.val_crop_size=96",
        "task.warmup_steps=5",
        "trainer.max_epochs=2",
        "trainer.enable_progress_bar=false",
        "callbacks.last_checkpoint.every_n_steps=3",
    ]


def cli(args: list[str]) -> list[str]:
    return [sys.executable, "-c", "from lcip.cli import train; train()", *args]


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return [{k: v for k, v in row.items() if v} for row in csv.DictReader(f)]


def ckpt_step(path: Path) -> int | None:
    try:
        return int(torch.load(path, map_location="cpu", weights_only=False)["global_step"])
    except Exception:
        return None


def test_kill_and_resume_ends_like_an_uninterrupted_run(tmp_path: Path) -> None:
    write_prior_region(tmp_path)
    full = subprocess.run(cli(tiny_overrides(tmp_path, "full")), capture_output=True, text=True)
    assert full.returncode == 0, full.stderr[-2000:]
    last = tmp_path / "runs" / "tiny" / "full" / "checkpoints" / "last.ckpt"
    reference = torch.load(last, map_location="cpu", weights_only=False)
    assert reference["global_step"] == 2 * STEPS  # last.ckpt is the true last state
    assert reference["epoch"] == 2  # epochs completed
    assert (last.parent / "best.ckpt").exists()

    run_dir = tmp_path / "runs" / "tiny" / "killed"
    killed_last = run_dir / "checkpoints" / "last.ckpt"
    proc = subprocess.Popen(
        cli(tiny_overrides(tmp_path, "killed")), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    step = None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        step = ckpt_step(killed_last) if killed_last.exists() else None
        flushed = (run_dir / "logs" / "metrics.csv").exists()
        if step is not None and step % STEPS != 0 and step > 10 and flushed:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert step is not None and step % STEPS != 0, (
        f"no mid-epoch checkpoint to resume (step {step})"
    )
    rows_before = read_rows(run_dir / "logs" / "metrics.csv")
    resumed = subprocess.run(
        cli(tiny_overrides(tmp_path, "killed")), capture_output=True, text=True
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming" in resumed.stdout + resumed.stderr
    final = torch.load(killed_last, map_location="cpu", weights_only=False)
    assert final["global_step"] == reference["global_step"] and final["epoch"] == reference["epoch"]
    for key, value in reference["state_dict"].items():
        torch.testing.assert_close(final["state_dict"][key], value, rtol=0, atol=1e-6, msg=key)
    rows_after = read_rows(run_dir / "logs" / "metrics.csv")
    assert len(rows_after) > len(rows_before) >= 1  # appended, not overwritten
    for row in rows_before:
        assert any(all(after.get(k) == v for k, v in row.items()) for after in rows_after), row

    # the same settings on a finished run resume and do nothing more (in process from here:
    # the console script's one-line errors and exit status are checked in tests/stages/
    # test_schema.py and by the stale-run test of tests/stages/test_e2e.py)
    train(compose_config(tiny_overrides(tmp_path, "killed")))
    assert (
        torch.load(killed_last, map_location="cpu", weights_only=False)["global_step"] == 2 * STEPS
    )

    # a rejected setting leaves the run untouched; other settings refuse to resume it
    config = (run_dir / "config.yaml").read_bytes()
    metrics = (run_dir / "logs" / "metrics.csv").read_bytes()
    bad = [*tiny_overrides(tmp_path, "killed"), "optimizer.lr=-1"]
    with pytest.raises(ConfigError, match=r"^optimizer\.lr=-1: must be a number > 0$"):
        train(compose_config(bad))
    other = [*tiny_overrides(tmp_path, "killed"), "optimizer.lr=0.01"]
    with pytest.raises(ConfigError, match=r"train\.resume=never") as refused:
        train(compose_config(other))
    assert "optimizer.lr: 0.001 -> 0.01" in str(refused.value)
    assert (run_dir / "config.yaml").read_bytes() == config
    assert (run_dir / "logs" / "metrics.csv").read_bytes() == metrics


def test_loader_workers_train_exactly_as_the_main_process(tmp_path: Path) -> None:
    """Batches handed over by 2 workers through reused shared memory train the same model."""
    write_prior_region(tmp_path)
    states = []
    for workers in (0, 2):
        name = f"workers{workers}"
        args = [
            *tiny_overrides(tmp_path, name),
            "trainer.max_epochs=1",
            f"data.num_workers={workers}",
        ]
        last = train(compose_config(args))  # in process: the workers are its children
        assert last == tmp_path / "runs" / "tiny" / name / "checkpoints" / "last.ckpt"
        states.append(torch.load(last, map_location="cpu", weights_only=False))
    assert states[0]["global_step"] == states[1]["global_step"] == STEPS
    for key, value in states[0]["state_dict"].items():
        torch.testing.assert_close(states[1]["state_dict"][key], value, rtol=0, atol=1e-6, msg=key)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optimizer.lr=-1", r"^optimizer.lr=-1: must be a number > 0$"),
        ("data.batch_size=0", r"^data.batch_size=0: must be an integer >= 1$"),
        (
            "data.crop_size=200",
            r"^data.crop_size=200: larger than training tile\(s\) \['t0', 't1'\]",
        ),
        ("region.val_splits=[]", r"^region.val_splits=\[\]: training needs a validation split"),
        ("region.val_splits=[nope]", r"^region.val_splits=\['nope'\]: no tiles of these splits in"),
        ("trainer.accelerator=gpu", r"^trainer.accelerator=gpu: no CUDA GPU is available"),
        ("train.resume=maybe", r"^train.resume=maybe: must be one of auto, never$"),
        ("optimizer.weight_decay=-1", r"^optimizer.weight_decay=-1: must be a number >= 0$"),
        ("scheduler=plateau scheduler.factor=2", r"^scheduler: ReduceLROnPlateau\(.*\): Factor"),
        ("callbacks.last_checkpoint=null", r"^callbacks.last_checkpoint=null: lcip-train keeps"),
        ("+callbacks.collapse_guard.shares=1", r"^callbacks.collapse_guard.shares=1: "),
        (
            "callbacks=early_stopping callbacks.early_stopping.mode=sideways",
            r"^callbacks.early_stopping.mode=sideways: ",
        ),
    ],
)
def test_bad_settings_fail_before_any_work(tmp_path: Path, override: str, message: str) -> None:
    if override.startswith("trainer.accelerator") and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    write_prior_region(tmp_path)
    cfg = compose_config([*tiny_overrides(tmp_path), *override.split()])
    with pytest.raises(ConfigError, match=message):
        train(cfg)
    assert not (tmp_path / "runs").exists()  # nothing was written


def test_unwritable_run_dir_is_one_line(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        locked = Path("/proc/lcip-cannot-write-here")  # root ignores permissions
    else:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
    write_prior_region(tmp_path)
    cfg = compose_config([*tiny_overrides(tmp_path), f"run_dir={locked}/run"])
    with pytest.raises(ConfigError, match=rf"^run_dir={locked}/run: cannot write there"):
        train(cfg)


def test_corrupt_layer_is_caught_when_training_opens_it(tmp_path: Path) -> None:
    manifest = Manifest.read(write_prior_region(tmp_path))
    path = manifest.tile("t1").layer("naip")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    cfg = compose_config(tiny_overrides(tmp_path))
    with pytest.raises(LcipError, match=str(path)):
        train(cfg)
    assert not (tmp_path / "runs").exists()


def test_lcip_train_on_two_ddp_processes_trains_and_validates_its_shares(tmp_path: Path) -> None:
    """``lcip-train trainer=ddp`` as a user starts it on one node (Lightning starts rank 1)."""
    write_prior_region(tmp_path)
    script = Path(sys.executable).parent / "lcip-train"
    args = [
        *tiny_overrides(tmp_path, "ddp"),
        "data.steps_per_epoch=5",
        "data.val_crop_size=32",  # 9 crops in batches of 4: 2 + 1 batches, one padding batch
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "trainer.precision=32-true",
    ]
    run = subprocess.run([str(script), *args], capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in run.stderr and "terminate called" not in run.stderr
    run_dir = tmp_path / "runs" / "tiny" / "ddp"
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert last["global_step"] == 2 * 5  # steps_per_epoch is per rank
    rows = [r for r in read_rows(run_dir / "logs" / "metrics.csv") if "val/r_acc" in r]
    assert len(rows) == 2  # one validation per epoch, logged once (by rank 0)
    for row in rows:
        assert 0 < float(row["val/q_acc"]) <= 1 and 0 < float(row["val/r_miou"]) <= 1
        assert float(row["val/loss"]) > 0
