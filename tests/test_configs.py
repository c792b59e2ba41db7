"""Every config composes, and every config node with a target instantiates."""

import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from lcip.config import CONFIG_DIR, compose_config
from lcip.errors import ConfigError
from lcip.io.manifest import Manifest
from lcip.losses import build_loss
from lcip.stages.paths import scheme_of
from lcip.stages.schema import SCHEMAS, validate
from lcip.training.models import FCN, UNet

GROUPS = sorted(p.name for p in CONFIG_DIR.iterdir() if p.is_dir())


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))


def _compose(*overrides: str):  # type: ignore[no-untyped-def]
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name="lcip", overrides=list(overrides))


@pytest.mark.parametrize(("group", "option"), [(g, o) for g in GROUPS for o in _options(g)])
def test_every_config_composes_and_instantiates(group: str, option: str, tmp_path: Path) -> None:
    cfg = _compose(f"{group}={option}", f"paths.root={tmp_path}")
    OmegaConf.resolve(cfg)  # every interpolation resolves
    for schema_group in SCHEMAS:  # and every value passes its group's checks
        validate(cfg, schema_group)
    scheme = scheme_of(cfg)
    model = instantiate(cfg.model, classes=scheme.num_classes)
    assert isinstance(model, FCN | UNet) and model.classes == scheme.num_classes
    loss_kwargs = {k: v for k, v in cfg.loss.items() if k != "name"}
    if cfg.loss.get("denominator") == "running":
        loss_kwargs["num_classes"] = 4
    if cfg.loss.name == "lsr":  # its statistics file is written by lcip-cooccurrence
        assert str(cfg.loss.statistics).startswith(str(cfg.cooccurrence.dir))
    else:
        build_loss(cfg.loss.name, **loss_kwargs)
    if cfg.trainer.accelerator == "cpu":
        assert isinstance(instantiate(cfg.trainer, logger=False), L.Trainer)
    if cfg.region.get("synthetic") is not None:
        region = instantiate(cfg.region.synthetic)
        assert region.name == cfg.region.name
    if cfg.prior.recipe == "learned":
        net = instantiate(
            cfg.prior.training.model, in_channels=scheme.num_classes + 4, classes=scheme.num_classes
        )
        assert [m.kernel_size[0] for m in net.backbone if hasattr(m, "kernel_size")] == [11, 7, 5]


def test_groups_cover_every_concern() -> None:
    assert {"region", "prior", "learned_prior", "model", "loss", "data", "task", "trainer"} <= set(
        GROUPS
    ) and {"train", "predict", "experiment", "paths"} <= set(GROUPS)


def test_experiment_sets_no_keys_of_an_unused_prior() -> None:
    base = compose_config(["prior=nlcd"])
    demo = compose_config(["experiment=demo", "prior=nlcd"])
    assert (
        set(demo.prior) == set(base.prior) == {"name", "recipe", "sigma_m", "truncate", "smoothing"}
    )
    learned = compose_config(["experiment=demo", "prior=learned"])
    assert learned.prior.training.steps == 120 and learned.prior.training.model.num_filters == 16
    assert compose_config(["prior=learned"]).prior.training.steps == 300


def test_compose_config_equals_hydra_compose() -> None:
    assert compose_config(["loss=rq", "region=tiny"]) == _compose("loss=rq", "region=tiny")


def test_experiment_overrides() -> None:
    cfg = _compose("experiment=demo", "loss=rq")
    assert cfg.model.num_filters == 16 and cfg.loss.name == "rq" and cfg.data.crop_size == 48
    paper = _compose("experiment=paper_qr")
    assert (
        paper.model.num_filters == 128
        and paper.data.batch_size == 32
        and paper.data.crop_size == 128
    )


def test_unknown_loss_is_one_clear_line(tmp_path: Path) -> None:
    cfg = _compose("loss.name=qrr")
    with pytest.raises(ConfigError, match=r"unknown loss 'qrr'; choose one of \["):
        build_loss(cfg.loss.name)
    # and through the console script: exit status 2, one line on stderr, no traceback
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "from lcip.cli import train; train()",
            "loss.name=qrr",
            f"paths.root={tmp_path}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "unknown loss 'qrr'" in errors[0] and "Traceback" not in proc.stderr


def test_data_group_builds_the_datamodule_with_its_layers(fake_region: Manifest) -> None:
    """``data`` is the TileDataModule target: the YAML's settings and a LayerSpec, no splatting."""
    from lcip.config import instantiate
    from lcip.data.datamodules import TileDataModule
    from lcip.data.datasets import LayerSpec

    cfg = compose_config(["region=tiny", "data.crop_size=48", "data.layers.extra=[lc]"])
    build = instantiate(cfg, "data", _convert_="all", seed=3, layers={"prior": "prior"})
    dm = build(fake_region, "chesapeake4")
    assert isinstance(dm, TileDataModule) and dm.crop_size == 48 and dm.seed == 3
    assert dm.layers == LayerSpec("naip", "prior", "lc", ("lc",), None, "codes")
    assert dm.train_splits == list(cfg.region.train_splits)
    assert dm.val_splits == list(cfg.region.val_splits)
