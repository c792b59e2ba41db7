"""The data, train and predict schemas: types checked when composing, values by validate()."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from lcip.config import CONFIG_DIR, compose_config
from lcip.errors import ConfigError
from lcip.stages.checks import check_predict_settings
from lcip.stages.schema import (
    SCHEMAS,
    DataConfig,
    PredictConfig,
    TrainConfig,
    type_phrase,
    validate,
)


def _compose_error(*overrides: str) -> str:
    with pytest.raises(ConfigError) as info:
        compose_config(["region=tiny", *overrides])
    message = str(info.value)
    assert "\n" not in message
    return message


def _validate_error(group: str, *overrides: str) -> str:
    cfg = compose_config(["region=tiny", *overrides])  # composes: the type is right
    with pytest.raises(ConfigError) as info:
        validate(cfg, group)
    return str(info.value)


@pytest.mark.parametrize("group", sorted(SCHEMAS))
def test_each_yaml_names_its_schema_and_sets_every_field(group: str) -> None:
    text = yaml.safe_load((CONFIG_DIR / group / "default.yaml").read_text())
    assert text["defaults"] == ["schema", "_self_"]
    cfg = compose_config(["region=tiny"])
    assert OmegaConf.get_type(cfg[group]) is SCHEMAS[group]
    # the YAML is the one place defaults are written: it sets every field of the schema
    assert set(text) - {"defaults"} == {f.name for f in fields(SCHEMAS[group])}
    assert isinstance(validate(cfg, group), SCHEMAS[group])


def test_validate_returns_the_checked_dataclass_with_resolved_values(tmp_path: Path) -> None:
    cfg = compose_config(["region=tiny", f"paths.root={tmp_path}", "data.batch_size=7"])
    data = validate(cfg, "data")
    assert isinstance(data, DataConfig) and data.batch_size == 7
    assert data.training_copy == f"{tmp_path}/cache/training_copy/tiny"
    predict = validate(cfg, "predict")
    assert isinstance(predict, PredictConfig) and predict.splits == list(cfg.region.eval_splits)
    assert isinstance(validate(cfg, "train"), TrainConfig)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.batch_size=abc", "data.batch_size=abc: must be an integer"),
        ("data.crop_size=1.5", "data.crop_size=1.5: must be an integer"),
        ("data.crop_size=null", "data.crop_size=null: must be an integer"),
        ("data.cache=maybe", "data.cache=maybe: must be true or false"),
        (
            "data.training_copy_max_gb=lots",
            "data.training_copy_max_gb=lots: must be a number or null",
        ),
        (
            "data.layers.extra=prior_fused",
            "data.layers.extra=prior_fused: must be a list, e.g. [a,b]",
        ),
        ("train.compile=[1]", "train.compile=[1]: must be true or false"),
        ("predict.window=big", "predict.window=big: must be an integer"),
        ("predict.margin=x", "predict.margin=x: must be an integer or null"),
        ("predict.splits=test", "predict.splits=test: must be a list, e.g. [a,b]"),
    ],
)
def test_a_wrong_type_fails_composition_in_one_line(override: str, message: str) -> None:
    assert _compose_error(override) == message


def test_unknown_keys_fail_composition_in_one_line() -> None:
    assert _compose_error("data.batchsize=8") == (
        "data.batchsize=8: unknown key (not a setting of data)"
    )
    assert (
        _compose_error("+data.batchsize=8") == "data.batchsize: unknown key (not a setting of data)"
    )
    assert _compose_error("predict.windows=256").startswith("predict.windows=256: unknown key")
    # a group without a schema still takes new keys, with a +
    assert (
        _compose_error("model.kernel=3")
        == "model.kernel=3: unknown key (to add it: +model.kernel=3)"
    )


def test_other_composition_errors_are_one_line() -> None:
    assert _compose_error("region=nowhere").startswith(
        "region=nowhere: no such config; choose one of chesapeake_de, "
    )
    assert _compose_error("data=other") == "data=other: no such config; choose one of default"
    assert _compose_error("data.batch_size=[1,").startswith("data.batch_size=[1,: cannot parse it")


@pytest.mark.parametrize(
    ("group", "override", "message"),
    [
        ("data", "data.batch_size=0", "data.batch_size=0: must be an integer >= 1"),
        ("data", "data.val_crop_size=-5", "data.val_crop_size=-5: must be an integer >= 1"),
        ("data", "data.num_workers=-1", "data.num_workers=-1: must be an integer >= 0"),
        (
            "data",
            "data.training_copy_max_gb=0",
            "data.training_copy_max_gb=0.0: must be a number > 0",
        ),
        ("train", "train.resume=maybe", "train.resume=maybe: must be one of auto, never"),
        ("predict", "predict.window=300", "predict.window=300: must be a positive multiple of 256"),
        ("predict", "predict.margin=-1", "predict.margin=-1: must be an integer >= 0"),
        ("predict", "predict.edge=mirror", "predict.edge=mirror: must be one of reflect, zeros"),
        ("predict", "predict.batch_size=0", "predict.batch_size=0: must be an integer >= 1"),
        (
            "predict",
            "predict.prefetch_factor=0",
            "predict.prefetch_factor=0: must be an integer >= 1",
        ),
        ("predict", "predict.device=tpu", "predict.device=tpu: must be one of auto, cpu, cuda or"),
    ],
)
def test_a_bad_value_fails_validation_in_one_line(group: str, override: str, message: str) -> None:
    assert _validate_error(group, override).startswith(message)


def test_good_values_pass_validation() -> None:
    cfg = compose_config(
        ["region=tiny", "predict.device=cuda:1", "predict.window=768", "predict.margin=0"]
    )
    check_predict_settings(cfg)
    cfg = compose_config(["region=tiny", "data.training_copy_max_gb=null", "data.val_splits=[a]"])
    data = validate(cfg, "data")
    assert isinstance(data, DataConfig) and data.val_splits == ["a"]
    assert data.training_copy_max_gb is None


def test_an_untyped_node_is_checked_against_the_schema() -> None:
    values = OmegaConf.to_container(compose_config().data, resolve=True)
    assert isinstance(values, dict)
    cfg = OmegaConf.create({"data": values})  # a plain node: no schema attached
    cfg.data.batch_size = "many"
    with pytest.raises(ConfigError, match=r"^data.batch_size=many: must be an integer$"):
        validate(cfg, "data")
    del cfg.data.batch_size
    cfg.data.batches = 8
    with pytest.raises(ConfigError, match=r"^data.batches: unknown key"):
        validate(cfg, "data")


def test_type_phrases() -> None:
    assert type_phrase("int") == "an integer"
    assert type_phrase("float | None") == "a number or null"
    assert type_phrase("dict[str, Any] | None") == "a mapping, e.g. {key: value} or null"


def _script(*args: str) -> subprocess.CompletedProcess[str]:
    code = "from lcip.cli import region; region()"
    return subprocess.run(
        [sys.executable, "-c", code, "region=tiny", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_console_script_reports_composition_errors_in_one_line(tmp_path: Path) -> None:
    root = f"paths.root={tmp_path}"
    for override, line in (
        ("data.batch_size=abc", "error: data.batch_size=abc: must be an integer"),
        ("data.batchsize=8", "error: data.batchsize=8: unknown key (not a setting of data)"),
    ):
        run = _script(root, override)
        assert run.returncode == 2, run.stderr[-2000:]
        assert run.stderr.strip().splitlines() == [line], run.stderr[-2000:]
    assert not (tmp_path / "logs").exists()  # refused before Hydra made its log folder
    run = _script(root, "+data.batchsize=8")  # Hydra adds it: refused before the stage runs
    assert run.returncode == 2, run.stderr[-2000:]
    assert run.stderr.strip().splitlines() == [
        "error: data.batchsize: unknown key (not a setting of data)"
    ]
    assert not (tmp_path / "regions").exists()


def test_console_script_keeps_hydras_report_under_hydra_full_error(tmp_path: Path) -> None:
    import os

    env = {**os.environ, "HYDRA_FULL_ERROR": "1"}
    code = "from lcip.cli import region; region()"
    run = subprocess.run(
        [sys.executable, "-c", code, "region=tiny", f"paths.root={tmp_path}", "data.crop_size=x"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert (
        run.returncode == 1
        and "Traceback" in run.stderr
        and "ConfigCompositionException" in (run.stderr)
    )


def test_console_script_runs_with_good_settings(tmp_path: Path) -> None:
    run = _script(f"paths.root={tmp_path}", "data.batch_size=8", "predict.window=256")
    assert run.returncode == 0, run.stderr[-2000:]
    assert (tmp_path / "regions" / "tiny" / "manifest.csv").exists()
