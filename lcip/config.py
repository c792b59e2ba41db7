"""The lcip Hydra config: where it lives, and composing it without a running Hydra app.

The console scripts compose ``lcip/conf/lcip.yaml`` through ``@hydra.main``; library code and
tests call :func:`compose_config` with the same overrides a user would type, and then call a
stage function (:mod:`lcip.stages`) on the result. No stage reads Hydra's global state.
"""

from __future__ import annotations

import inspect
import os
import re
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from lcip.errors import ConfigError, LcipError
from lcip.stages import schema  # importing it registers the groups' schemas with Hydra

#: The Hydra config folder: ``$LCIP_CONFIG_DIR`` or the package's own ``lcip/conf`` (package
#: data: a wheel carries it; ``configs/`` at the repository root links to it).
CONFIG_DIR = Path(os.environ.get("LCIP_CONFIG_DIR", Path(__file__).resolve().parent / "conf"))
#: The primary config's name.
CONFIG_NAME = "lcip"


def compose_config(overrides: Sequence[str] = ()) -> DictConfig:
    """Compose the lcip config as the console scripts do.

    Works inside or outside a running Hydra app (the app's global state is restored after).

    Args:
        overrides: command-line style overrides, e.g. ``["region=tiny", "loss=rq"]``.

    Returns:
        the composed config (without the ``hydra`` node).

    Raises:
        ConfigError: one line naming the key, for an override or config file Hydra refuses (a
            value of the wrong type for a group's schema, an unknown key, a missing config).
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    previous = GlobalHydra.instance().hydra
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            cfg = compose(config_name=CONFIG_NAME, overrides=list(overrides))
    except Exception as exc:
        line = composition_error(exc, overrides)
        if line is None:
            raise
        raise ConfigError(line) from exc
    finally:
        GlobalHydra.instance().hydra = previous
    schema.check_keys(cfg)
    return cfg


def composition_error(exc: BaseException, overrides: Sequence[str] = ()) -> str | None:
    """One line for an error Hydra raised while composing the config (None: not one of those).

    A value of the wrong type (``data.batch_size=abc: must be an integer``), an unknown key
    (``data.foo=1: unknown key ...``), a config that does not exist (``region=nope: no such
    config; ...``) or an override Hydra cannot parse, each named by its key; an error inside a
    config file is prefixed with the file's name (``experiment/demo: ...``).

    Args:
        exc: the error.
        overrides: the command-line overrides (to name the one Hydra could not parse).
    """
    from hydra.errors import HydraException, MissingConfigException, OverrideParseException

    if not isinstance(exc, HydraException | OmegaConfBaseException):
        return None
    text = str(exc).strip()
    place = re.match(r"In '([^']+)': ", text)
    prefix = f"{place.group(1)}: " if place and place.group(1) != CONFIG_NAME else ""
    if isinstance(exc, MissingConfigException):
        return prefix + _missing_config(text)
    if isinstance(exc, OverrideParseException):
        return f"{_unparsable(overrides) or 'override'}: cannot parse it ({_first_line(text)})"
    cause = exc if isinstance(exc, OmegaConfBaseException) else exc.__cause__
    if not isinstance(cause, OmegaConfBaseException):
        cause = _omegaconf_error_in(text)
    if isinstance(cause, OmegaConfBaseException):
        line = schema.type_error(cause)
        override = re.search(r"use \+((\S+?)=\S*)", text)
        if override and line.startswith(override.group(2) + ":"):
            line = override.group(1) + line[len(override.group(2)) :]
            if override.group(2).partition(".")[0] not in schema.SCHEMAS:
                line = f"{override.group(1)}: unknown key (to add it: +{override.group(1)})"
        return prefix + line
    text = re.sub(r"^In '[^']+': (\w+ raised while composing config:\s*)?", "", text)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and "hydra.cc" not in ln]
    return prefix + "; ".join(ln for ln in lines[:2] if not ln.startswith("full_key:"))


def _missing_config(text: str) -> str:
    """``region=nope: no such config; choose one of demo, tiny, ...``."""
    found = re.search(r"Could not (?:find|load) '([^']+)/([^'/]+)'", text)
    if not found:
        return _first_line(re.sub(r"^In '[^']+': ", "", text))
    group, name = found.groups()
    options = re.findall(r"^\t(\S+)$", text.split("Config search path")[0], flags=re.M)
    options = [o for o in options if o != schema.SCHEMA_NAME]
    shown = ", ".join(options[:12]) + (
        f", ... ({len(options)} in all)" if len(options) > 12 else ""
    )
    choose = f"; choose one of {shown}" if options else ""
    return f"{group}={name}: no such config{choose}"


def _unparsable(overrides: Sequence[str]) -> str | None:
    """The first override Hydra's grammar refuses."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    parser = OverridesParser.create()
    for override in overrides:
        try:
            parser.parse_override(override)
        except HydraException:
            return override
    return None


def _omegaconf_error_in(text: str) -> OmegaConfBaseException | None:
    """An OmegaConf error rebuilt from Hydra's text (``...raised while composing config:``)."""
    from omegaconf.errors import ConfigKeyError, ValidationError

    found = re.search(r"(\w+) raised while composing config:\n(.*)\n\s*full_key: (\S+)", text)
    if not found:
        return None
    kind, message, key = found.groups()
    error: OmegaConfBaseException = (
        ValidationError(message) if kind == "ValidationError" else ConfigKeyError(message)
    )
    value = re.match(r"Value '([^']*)'", message)
    error.value = value.group(1) if value else None
    error.full_key = key
    error.msg = message
    return error


def instantiate(cfg: DictConfig | Mapping[str, Any], key: str, /, **kwargs: Any) -> Any:
    """Instantiate the config node at ``key`` with Hydra; a bad setting fails in one line.

    Hydra's ``InstantiationException``, and a ``TypeError`` or ``ValueError`` raised by the
    target, become a :class:`~lcip.errors.ConfigError` naming the culprit key and its value when
    it can be told (from the message, or from a value the target's type hints refuse), else the
    node, e.g. ``model.kernel_sizes=4: FCN: kernel sizes must be odd ...``.

    Args:
        cfg: the composed config (or any mapping holding the node).
        key: dotted key of the node, e.g. ``"model"`` or ``"prior.training.model"``.
        **kwargs: passed to the target (Hydra's overrides of the node's own keys).

    Returns:
        the instantiated object.

    Raises:
        ConfigError: the node is missing, or its target cannot be built from its settings.
    """
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate as hydra_instantiate

    root = cfg if isinstance(cfg, DictConfig) else OmegaConf.create(dict(cfg))
    node = OmegaConf.select(root, key, throw_on_missing=False)
    if node is None:
        raise ConfigError(f"{key}: no such config node")
    try:
        return hydra_instantiate(node, **kwargs)
    except (InstantiationException, TypeError, ValueError, OmegaConfBaseException) as exc:
        if isinstance(exc.__cause__, LcipError):  # the target's own one-line error (a file...)
            raise exc.__cause__ from None
        raise ConfigError(_instantiation_error(node, key, exc, kwargs)) from exc


def _instantiation_error(node: Any, key: str, exc: Exception, kwargs: Mapping[str, Any]) -> str:
    """One line naming the key at fault (or the node) and what is wrong with it."""
    text = str(exc)
    located = re.search(r"full_key: (\S+)", text)
    where = located.group(1) if located else key
    where = where if where == key or where.startswith(f"{key}.") else key
    sub = OmegaConf.select(node, where[len(key) + 1 :]) if where != key else node
    target = str(OmegaConf.select(sub, "_target_", default="") or "") if _is_dict(sub) else ""
    name = target.rsplit(".", 1)[-1]
    cause = exc.__cause__ if exc.__cause__ is not None else exc
    if isinstance(cause, ImportError) or text.startswith("Error locating target"):
        return f"{where}._target_={target}: cannot import {target!r}"
    if isinstance(exc, OmegaConfBaseException) and not isinstance(cause, TypeError | ValueError):
        full = getattr(exc, "full_key", None) or where
        return f"{full}: {_first_line(getattr(exc, 'msg', None) or text)}"
    message = _first_line(str(cause)) if cause is not exc else _cause_line(text)
    culprit, reason = _culprit(sub, target, message, kwargs) if _is_dict(sub) else (None, None)
    message = f"{reason} ({message})" if reason else message
    prefix = f"{name}: " if name else ""
    if culprit is None:
        return f"{where}: {prefix}{message}"
    value = OmegaConf.select(sub, culprit, default=None) if culprit in sub else None
    shown = f"={_show(value)}" if culprit in sub else ""
    return f"{where}.{culprit}{shown}: {prefix}{message}"


def _is_dict(node: Any) -> bool:
    return isinstance(node, DictConfig)


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else text


def _cause_line(text: str) -> str:
    """The target's own message inside Hydra's ``Error in call to target ...`` text."""
    lines = [line for line in text.splitlines() if line and not line.startswith("full_key:")]
    inner = lines[1] if len(lines) > 1 and lines[0].startswith("Error in call") else lines[0]
    quoted = re.fullmatch(r"\w+\((['\"])(.*)\1\)", inner)
    return quoted.group(2) if quoted else inner


def _show(value: Any) -> str:
    """A value (a config node too) as a user would type it on the command line."""
    plain = OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
    return schema.show(plain)


def _culprit(
    node: DictConfig, target: str, message: str, kwargs: Mapping[str, Any]
) -> tuple[str | None, str | None]:
    """The one key of ``node`` the message (or the target's type hints) blames, if one.

    Returns:
        the key (or None) and, when a type hint told it, what the key must be (else None).
    """
    named = re.search(r"(?:unexpected keyword argument|required \w* ?argument:?) '(\w+)'", message)
    if named:
        return named.group(1), None
    keys = [str(k) for k in node if not str(k).startswith("_") and str(k) not in kwargs]
    lowered = message.lower()
    mentioned = [
        k
        for k in keys
        if re.search(rf"\b({re.escape(k)}|{re.escape(k.replace('_', ' '))})\b", lowered)
    ]
    if len(mentioned) == 1:
        return mentioned[0], None
    hints = {k: _hint(target, k) for k in keys}
    refused = [k for k in keys if not _accepts(hints[k], _value(node, k))]
    if len(refused) != 1:
        return None, None
    return refused[0], f"must be {_hint_name(hints[refused[0]])}"


def _hint_name(hint: Any) -> str:
    """A type hint as a short phrase: ``int | Sequence[int]``."""
    if inspect.isclass(hint) and not typing.get_args(hint):
        return hint.__name__
    return re.sub(r"\b(?:typing|collections\.abc|builtins)\.", "", str(hint)).replace(
        "NoneType", "None"
    )


def _value(node: DictConfig, key: str) -> Any:
    value = OmegaConf.select(node, key, throw_on_missing=False)
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def _hint(target: str, key: str) -> Any:
    """The type hint of ``target``'s argument ``key`` (``Any`` when it cannot be read)."""
    from hydra.utils import get_object

    try:
        obj = get_object(target)
        function = obj.__init__ if inspect.isclass(obj) else obj
        return typing.get_type_hints(function).get(key, Any)
    except Exception:  # an unreadable hint only means no opinion
        return Any


def _accepts(hint: Any, value: Any) -> bool:
    """Whether ``value`` (plain, from a config) fits ``hint``; unknown hints accept anything."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_accepts(arg, value) for arg in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    sequence = origin if origin is not None else hint
    if inspect.isclass(sequence) and issubclass(sequence, Sequence) and sequence is not str:
        args = typing.get_args(hint)
        items_ok = not args or all(_accepts(args[0], v) for v in value or [])
        return isinstance(value, list | tuple) and items_ok
    return True


def to_dict(node: Any) -> dict[str, Any]:
    """A config node as a plain, resolved dict."""
    out = OmegaConf.to_container(node, resolve=True)
    assert isinstance(out, dict)
    return {str(k): v for k, v in out.items()}


__all__ = [
    "CONFIG_DIR",
    "CONFIG_NAME",
    "compose_config",
    "composition_error",
    "instantiate",
    "to_dict",
]
