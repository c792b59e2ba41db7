"""Structured-config schemas of the ``data``, ``train`` and ``predict`` groups.

Each group's YAML (``lcip/conf/<group>/default.yaml``) names its schema first in its defaults
list (Hydra's "extending configs with a structured schema"), so Hydra checks the type of every
key when it composes the config, for the console scripts and :func:`lcip.config.compose_config`
alike, and refuses keys the schema does not have. The YAML files hold the documented defaults:
the schemas declare types only (every field ``MISSING``), so a default is written once.

What types cannot say (ranges, choices) is checked by each schema's :meth:`check`, run when
:func:`validate` turns a group into its dataclass (``OmegaConf.to_object``); stages call it
before any work starts. Every error is one line ``group.key=value: must be ...``.

Importing this module registers the schemas in Hydra's ``ConfigStore`` (as ``<group>/schema``);
:mod:`lcip.config` imports it, so anything that composes the lcip config has them.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, fields, is_dataclass
from typing import Any, ClassVar, NoReturn, get_type_hints

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException, ValidationError

from lcip.errors import ConfigError

#: The name each schema is stored under in its group (``data/schema``, ...).
SCHEMA_NAME = "schema"


@dataclass
class GroupConfig:
    """Base of the group schemas: :meth:`check` runs when the dataclass is made."""

    #: The config group the schema describes (the prefix of its keys in error messages).
    group: ClassVar[str] = ""

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Check what the types cannot say; raises :class:`ConfigError` in one line."""

    def fail(self, name: str, rule: str) -> NoReturn:
        """Raise ``group.name=value: must be <rule>``."""
        raise ConfigError(f"{self.group}.{name}={show(getattr(self, name))}: must be {rule}")

    def integer(self, name: str, minimum: int) -> None:
        """Field ``name`` must be an integer ``>= minimum``."""
        value = getattr(self, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            self.fail(name, f"an integer >= {minimum}")

    def number(self, name: str, minimum: float, *, strict: bool = True) -> None:
        """Field ``name`` must be a finite number ``> minimum`` (``>=`` when not strict)."""
        value = getattr(self, name)
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        ok = ok and math.isfinite(value) and (value > minimum if strict else value >= minimum)
        if not ok:
            self.fail(name, f"a number {'>' if strict else '>='} {minimum:g}")

    def choice(self, name: str, choices: tuple[str, ...]) -> None:
        """Field ``name`` must be one of ``choices``."""
        if getattr(self, name) not in choices:
            self.fail(name, "one of " + ", ".join(choices))


@dataclass
class LayersConfig:
    """``data.layers``: the manifest layers read (:class:`lcip.data.datasets.LayerSpec`)."""

    _target_: str = MISSING
    image: str = MISSING
    prior: str | None = MISSING
    label: str | None = MISSING
    extra: list[str] = MISSING
    nlcd: str | None = MISSING
    nlcd_encoding: str = MISSING


@dataclass
class DataConfig(GroupConfig):
    """``data``: sampling and batching (:class:`lcip.data.datamodules.TileDataModule`)."""

    group: ClassVar[str] = "data"

    _target_: str = MISSING
    _partial_: bool = MISSING
    crop_size: int = MISSING
    batch_size: int = MISSING
    steps_per_epoch: int = MISSING
    val_crop_size: int = MISSING
    num_workers: int = MISSING
    cache: bool = MISSING
    zero_is_nodata: bool = MISSING
    channels_last: bool = MISSING
    training_copy: str | None = MISSING
    training_copy_max_gb: float | None = MISSING
    # not Optional: OmegaConf cannot merge an interpolation into an Optional list
    train_splits: list[str] = MISSING
    val_splits: list[str] = MISSING
    layers: LayersConfig = MISSING

    def check(self) -> None:
        """Sizes and counts at least 1, workers at least 0, the copy's size limit positive."""
        for name in ("crop_size", "batch_size", "steps_per_epoch", "val_crop_size"):
            self.integer(name, 1)
        self.integer("num_workers", 0)
        if self.training_copy_max_gb is not None:
            self.number("training_copy_max_gb", 0)


@dataclass
class TrainConfig(GroupConfig):
    """``train``: run management of ``lcip-train``."""

    group: ClassVar[str] = "train"

    resume: str = MISSING
    compile: bool = MISSING
    denominator: str | None = MISSING  # checked by the loss (lcip.losses)

    def check(self) -> None:
        """``resume`` auto or never."""
        self.choice("resume", ("auto", "never"))


#: Devices ``predict.device`` may name besides ``cuda:<n>``.
PREDICT_DEVICES = ("auto", "cpu", "cuda")


@dataclass
class PredictConfig(GroupConfig):
    """``predict``: whole-tile prediction (:class:`lcip.inference.windows.WindowConfig`)."""

    group: ClassVar[str] = "predict"

    checkpoint: str = MISSING
    splits: list[str] = MISSING
    window: int = MISSING
    margin: int | None = MISSING
    edge: str = MISSING
    batch_size: int = MISSING
    device: str = MISSING
    num_workers: int = MISSING
    prefetch_factor: int = MISSING
    out_dir: str = MISSING

    def check(self) -> None:
        """Window a multiple of the block size, counts in range, edge and device known."""
        from lcip.io.raster import BLOCK_SIZE

        if self.window <= 0 or self.window % BLOCK_SIZE:
            self.fail("window", f"a positive multiple of {BLOCK_SIZE} (the written block size)")
        if self.margin is not None:
            self.integer("margin", 0)
        self.choice("edge", ("reflect", "zeros"))
        self.integer("batch_size", 1)
        self.integer("num_workers", 0)
        self.integer("prefetch_factor", 1)
        device = self.device
        if device not in PREDICT_DEVICES and not (
            device.startswith("cuda:") and device[5:].isdigit()
        ):
            self.fail("device", "one of " + ", ".join(PREDICT_DEVICES) + " or cuda:<n>")
        if not self.checkpoint:
            self.fail("checkpoint", "last, best or a path to a .ckpt")


#: The schema of each group.
SCHEMAS: dict[str, type[GroupConfig]] = {
    schema.group: schema for schema in (DataConfig, TrainConfig, PredictConfig)
}


def show(value: Any) -> str:
    """A value as a user would type it on the command line (``[a,b]``, ``null``)."""
    if isinstance(value, list | tuple):
        return "[" + ",".join(show(v) for v in value) + "]"
    return "null" if value is None else str(value)


def validate(cfg: DictConfig, group: str) -> GroupConfig:
    """The group's settings as its checked dataclass.

    The node is resolved, merged onto its schema (so a node built without the schema is
    type-checked too) and turned into the dataclass, whose :meth:`GroupConfig.check` runs.

    Args:
        cfg: the composed config.
        group: ``data``, ``train`` or ``predict``.

    Returns:
        the group's dataclass (e.g. :class:`DataConfig`).

    Raises:
        ConfigError: one line ``group.key=value: must be ...`` for the first bad setting.
    """
    schema = SCHEMAS[group]
    node = OmegaConf.select(cfg, group)
    if node is None:
        raise ConfigError(f"{group}: missing from the config")
    try:
        values = OmegaConf.to_container(node, resolve=True)
        merged = OmegaConf.merge(OmegaConf.structured(schema), values)
        checked = OmegaConf.to_object(merged)
    except OmegaConfBaseException as exc:
        raise ConfigError(type_error(exc, group)) from None
    assert isinstance(checked, GroupConfig)
    return checked


def type_error(exc: OmegaConfBaseException, group: str = "") -> str:
    """One line for an OmegaConf error: ``key=value: must be <type>``, or ``key: <what>``.

    Args:
        exc: the error (``ValidationError``, ``ConfigKeyError``, ...), with its ``full_key``.
        group: the group the key is relative to, when the error came from a detached node.
    """
    key = str(getattr(exc, "full_key", "") or "")
    key = f"{group}.{key}" if group and key and not key.startswith(f"{group}.") else key or group
    message = str(getattr(exc, "msg", None) or exc).strip().splitlines()[0]
    schema = SCHEMAS.get(key.partition(".")[0])
    if re.search(r"Key '\w+' (is )?not in", message):
        owner = f"a setting of {schema.group}" if schema else "in the config"
        return f"{key}: unknown key (not {owner})"
    if "Missing mandatory value" in message:
        return f"{key}: missing value (???)"
    expected = field_type(key)
    if isinstance(exc, ValidationError) and expected:
        return f"{key}={show(getattr(exc, 'value', None))}: must be {type_phrase(expected)}"
    return f"{key}: {message}"


def field_type(key: str) -> str | None:
    """The annotation of a schema field (``"int"``, ``"list[str]"``), by dotted key.

    A key inside a nested schema (``data.layers.extra``) is found through its parents.
    """
    group, *names = key.split(".")
    schema: Any = SCHEMAS.get(group)
    for i, name in enumerate(names):
        found = [f for f in fields(schema) if f.name == name] if schema else []
        if not found:
            return None
        if i == len(names) - 1:
            return str(found[0].type)
        nested = get_type_hints(schema).get(name)
        schema = nested if is_dataclass(nested) else None
    return None


def type_phrase(annotation: str) -> str:
    """A field annotation in words.

    ``int`` -> ``an integer``, ``float | None`` -> ``a number or null``, ``list[str]`` ->
    ``a list, e.g. [a,b]``.
    """
    parts = [p.strip() for p in annotation.split("|")]
    base = next((p for p in parts if p != "None"), "None")
    phrases = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string"}
    phrase = phrases.get(base.split("[")[0], base)
    if base.startswith("list"):
        phrase = "a list, e.g. [a,b]"
    elif base.startswith("dict"):
        phrase = "a mapping, e.g. {key: value}"
    return f"{phrase} or null" if "None" in parts else phrase


def check_keys(cfg: DictConfig) -> None:
    """Each schema group holds only its schema's keys (``+data.foo=1`` adds one past Hydra).

    Raises:
        ConfigError: ``group.key: unknown key (not a setting of group)``.
    """
    for group, schema in SCHEMAS.items():
        node = OmegaConf.select(cfg, group)
        if not isinstance(node, DictConfig):
            continue
        known = {f.name for f in fields(schema)}
        for key in map(str, node):
            if key not in known:
                raise ConfigError(f"{group}.{key}: unknown key (not a setting of {group})")


def store_schemas() -> None:
    """Register every schema in Hydra's ``ConfigStore`` as ``<group>/schema`` (idempotent)."""
    store = ConfigStore.instance()
    for group, schema in SCHEMAS.items():
        store.store(group=group, name=SCHEMA_NAME, node=schema)


store_schemas()

__all__ = [
    "PREDICT_DEVICES",
    "SCHEMAS",
    "SCHEMA_NAME",
    "DataConfig",
    "GroupConfig",
    "PredictConfig",
    "TrainConfig",
    "check_keys",
    "field_type",
    "show",
    "store_schemas",
    "type_error",
    "type_phrase",
    "validate",
]
