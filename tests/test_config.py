"""lcip.config: composing the config, and instantiating a node with one-line errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from lcip.config import CONFIG_DIR, CONFIG_NAME, compose_config, composition_error, instantiate
from lcip.errors import ConfigError
from lcip.training.models import FCN, UNet


def _error(overrides: list[str], key: str = "model", **kwargs: object) -> str:
    with pytest.raises(ConfigError) as info:
        instantiate(compose_config(overrides), key, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_instantiate_builds_the_node_with_kwargs() -> None:
    model = instantiate(compose_config(["model=fcn_small"]), "model", classes=5)
    assert isinstance(model, FCN) and model.classes == 5
    assert sum(1 for m in model.backbone if hasattr(m, "kernel_size")) == 4


def test_instantiate_reaches_a_nested_node_and_plain_mappings() -> None:
    net = instantiate(
        compose_config(["prior=learned"]), "prior.training.model", in_channels=8, classes=4
    )
    assert [m.kernel_size[0] for m in net.backbone if hasattr(m, "kernel_size")] == [11, 7, 5]
    plain = {"m": {"_target_": "lcip.training.models.FCN", "in_channels": 3, "classes": 2}}
    assert instantiate(plain, "m").in_channels == 3


def test_a_value_the_target_refuses_names_the_key_and_value() -> None:
    message = _error(["model.kernel_sizes=4"], classes=4)
    assert message.startswith("model.kernel_sizes=4: FCN: kernel sizes must be odd")


def test_an_unknown_argument_names_the_key() -> None:
    message = _error(["+model.kernel=3"], classes=4)
    assert message.startswith("model.kernel=3: FCN: ") and "unexpected keyword" in message


def test_a_value_of_the_wrong_type_is_found_from_the_type_hints() -> None:
    assert _error(["model.num_filters=abc"], classes=4).startswith(
        "model.num_filters=abc: FCN: must be int | Sequence[int] ("
    )
    assert _error(["model=unet", "model.encoder_depth=deep"], classes=4).startswith(
        "model.encoder_depth=deep: UNet: must be int ("
    )


def test_a_nested_node_is_named_in_full() -> None:
    overrides = ["prior=learned", "learned_prior.model.kernel_sizes=[11,6,5]"]
    message = _error(overrides, "learned_prior.model", in_channels=8, classes=4)
    assert message.startswith("learned_prior.model.kernel_sizes=[11,6,5]: FCN: kernel sizes")
    message = _error(overrides, "prior.training.model", in_channels=8, classes=4)
    assert message.startswith("prior.training.model.kernel_sizes=[11,6,5]: FCN: kernel sizes")


def test_an_unimportable_target_names_the_target_key() -> None:
    message = _error(["model._target_=lcip.training.models.Nope"], classes=4)
    assert message == (
        "model._target_=lcip.training.models.Nope: cannot import 'lcip.training.models.Nope'"
    )


def test_a_missing_value_and_a_missing_node_name_the_key() -> None:
    assert _error([]).startswith("model.classes: ")  # classes: ??? and not passed
    assert _error([], "nonexistent") == "nonexistent: no such config node"


def test_a_working_unet_still_instantiates() -> None:
    model = instantiate(compose_config(["model=unet", "model.encoder_depth=3"]), "model", classes=3)
    assert isinstance(model, UNet)


def _compose_in(folder: Path, name: str, text: str, *overrides: str) -> str:
    """The one-line error of composing with an extra experiment config written in a copy."""
    conf = folder / "conf"
    shutil.copytree(CONFIG_DIR, conf)
    (conf / "experiment" / f"{name}.yaml").write_text(text)
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
            compose(config_name=CONFIG_NAME, overrides=[f"experiment={name}", *overrides])
    except Exception as exc:  # what Hydra raises is what is under test
        line = composition_error(exc, overrides)
        assert line is not None and "\n" not in line
        return line
    finally:
        GlobalHydra.instance().clear()
    raise AssertionError("composed")


def test_an_error_inside_a_config_file_names_the_file_and_key(tmp_path: Path) -> None:
    text = "# @package _global_\ntrain:\n  early_stop: true\n"
    assert _compose_in(tmp_path, "mine", text) == (
        "experiment/mine: train.early_stop: unknown key (not a setting of train)"
    )
    text = "# @package _global_\ndata:\n  batch_size: lots\n"
    line = _compose_in(tmp_path / "b", "typed", text)
    assert line == "experiment/typed: data.batch_size=lots: must be an integer"


def test_composition_error_ignores_other_errors() -> None:
    assert composition_error(ValueError("not Hydra's")) is None
