"""lcip's default recipe learns on real data: QR on the 16 real West Virginia patches.

Stage by stage as a user runs them (region, cooccurrence, prior, train, predict, evaluate),
with lcip's defaults and only the region, the paper's transductive split and CPU sizing set
(``experiment=wv_acceptance``: 32 filters, batches of 16 crops of 64 px, 8 x 100 steps; about
a minute and a half on two cores). In the default test run: CI has ``../shared/realdata``
(``LCIP_REQUIRE_REALDATA`` makes its absence an error there, not a skip).
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Any

import pytest
from omegaconf import OmegaConf

from lcip.config import compose_config
from lcip.stages.cooccurrence import cooccurrence
from lcip.stages.evaluate import evaluate
from lcip.stages.predict import predict
from lcip.stages.prior import prior
from lcip.stages.region import region
from lcip.stages.train import train
from tests.markers import needs_realdata
from tests.paths import REALDATA

WV = REALDATA / "chesapeake_wv_patches"
#: CPU sizing: the only settings wv_acceptance may change besides region, splits and demo.*.
SIZING = {"model.num_filters", "data.crop_size", "data.batch_size", "data.steps_per_epoch"}


def recipe(cfg: Any) -> dict[str, Any]:
    """The training recipe of a config: model, task, train and the checkpoint predicted with."""
    plain = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(plain, dict)
    return {
        "model": {k: v for k, v in plain["model"].items() if f"model.{k}" not in SIZING},
        "task": plain["task"],
        "train": plain["train"],
        "checkpoint": plain["predict"]["checkpoint"],
    }


def test_acceptance_run_is_the_default_recipe_sized_for_a_cpu() -> None:
    default = compose_config(["region=chesapeake_wv_patches"])
    acceptance = compose_config(["experiment=wv_acceptance"])
    assert recipe(acceptance) == recipe(default)
    assert acceptance.model.num_filters == 32 and acceptance.data.crop_size == 64
    assert default.predict.checkpoint == "last" and default.model.batch_norm
    assert default.scheduler._target_.endswith("CosineDecay")
    assert default.callbacks.early_stopping is None


@needs_realdata(WV)
def test_default_recipe_learns_on_real_patches(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = compose_config(
        [
            "experiment=wv_acceptance",
            f"paths.root={tmp_path}",
            f"region.folders.root={WV}",
            "trainer.enable_progress_bar=false",
        ]
    )
    assert recipe(cfg) == recipe(compose_config([f"paths.root={tmp_path}"]))
    assert cfg.loss.name == "qr" and cfg.prior.name == "nlcd"
    region(cfg)
    cooccurrence(cfg)
    prior(cfg)
    with caplog.at_level(logging.WARNING, logger="lcip.evaluation.collapse"):
        train(cfg)
    predict(cfg)
    table = {r["map"]: r for r in evaluate(cfg).rows() if r["tile"] == "all"}
    prior_acc, prior_miou = (float(table["prior nlcd (argmax)"][k]) for k in ("accuracy", "miou"))
    r_acc, r_miou = (float(table["QR (r)"][k]) for k in ("accuracy", "miou"))
    # the paper protocol: QR (r) at least 10 mIoU points above the prior's argmax
    assert r_miou >= prior_miou + 0.10, (r_acc, r_miou, prior_acc, prior_miou)
    assert r_acc > prior_acc
    # the collapse guard stays silent, in training and in the evaluation
    assert not [r.getMessage() for r in caplog.records if "collapsed" in r.getMessage()]
    assert all(r["collapsed"] == 0 for r in table.values())
    with open(Path(cfg.run_dir) / "logs" / "metrics.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("val/q_top_share")]
    assert len(rows) == 8  # every epoch; checked after the 300 warm-up steps (epochs 3 to 7)
    assert [float(r["val/collapsed"]) for r in rows if r["val/collapsed"]] == [0.0] * 5
