"""Stage ``cooccurrence``: P(target class | NLCD class) from the region's training tiles.

With ``cooccurrence.source`` set, the matrix is borrowed instead of counted: from another
region (its ``<paths.regions>/<name>/cooccurrence/cooccurrence.csv``) or from a cooccurrence
CSV file (as :meth:`~lcip.priors.cooccurrence.Cooccurrence.write` writes it), a table packaged
with lcip (``builtin:<name>``, see :mod:`lcip.priors.builtin`), or ``auto``: the built-in
table for where the region's tiles are. It is checked against the region's class scheme and
copied into ``cooccurrence.dir``, so a region without labels gets priors too. A region may
name its default (``region.cooccurrence_source``, ``auto`` for ``region=place``), used when
``cooccurrence.source`` is null. The label super-resolution statistics (``lsr_statistics.json``) are
counted with the matrix and borrowed with it; a source without them gives a warning, and
``loss=lsr`` then stops with a one-line error naming the missing file.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

from omegaconf import DictConfig

from lcip.errors import ConfigError
from lcip.io.manifest import Manifest
from lcip.priors.builtin import AUTO, PREFIX, area_centroid, builtin_table, choose_table
from lcip.priors.cooccurrence import (
    CSV_NAME,
    LSR_NAME,
    Cooccurrence,
    check_scheme,
    count_cooccurrence,
)
from lcip.priors.nlcd import check_nlcd_encoding
from lcip.stages.paths import region_manifest_path, scheme_of

log = logging.getLogger(__name__)


def cooccurrence_source(cfg: DictConfig) -> str | None:
    """``cooccurrence.source`` as a string; when null, the region's default.

    The default is ``region.cooccurrence_source`` (``auto`` for ``region=place``); None
    (unset or empty): count on this region's tiles.
    """
    source = cfg.cooccurrence.get("source")
    if source is None:
        source = cfg.region.get("cooccurrence_source")
    return None if source is None or str(source) == "" else str(source)


def builtin_cooccurrence(cfg: DictConfig, source: str) -> Cooccurrence:
    """The built-in table ``builtin:<name>`` or ``auto`` names, in the region's scheme.

    ``auto`` locates the region by its manifest's tiles (:func:`area_centroid`) and logs the
    table it chose, and why, in one line.

    Raises:
        ConfigError: one line, for an unknown table, one in another scheme, or ``auto``
            without a manifest.
    """
    scheme = scheme_of(cfg)
    if source == AUTO:
        path = region_manifest_path(cfg)
        if not path.is_file():
            raise ConfigError(
                f"cooccurrence.source={AUTO}: chooses a built-in table by where the region's "
                f"tiles are, but {path} does not exist (run lcip-acquire first, or name a table: "
                f"cooccurrence.source={PREFIX}<name>)"
            )
        lon, lat = area_centroid(Manifest.read(path, verify=False))
        table, reason = choose_table(lon, lat, scheme)
        log.info(
            "cooccurrence.source=auto: %s%s (%s; area centre %.4f, %.4f)",
            PREFIX,
            table.name,
            reason,
            lat,
            lon,
        )
    else:
        table = builtin_table(source.removeprefix(PREFIX), scheme)
    coocc = check_scheme(table.load(), scheme, f"cooccurrence.source={source} ({table.csv_path})")
    if coocc.lsr is None:
        log.info(
            "%s%s: no label super-resolution statistics; loss=lsr will not be available",
            PREFIX,
            table.name,
        )
    return coocc


def source_path(cfg: DictConfig, source: str) -> Path:
    """The cooccurrence CSV a ``cooccurrence.source`` value names.

    A value that ends in ``.csv``, contains a path separator or names an existing file or
    folder is a path (a folder holds ``cooccurrence.csv``); anything else is a region name,
    whose matrix is ``<paths.regions>/<name>/cooccurrence/cooccurrence.csv``.

    Raises:
        ConfigError: one line naming the setting, if the file does not exist.
    """
    given = Path(source).expanduser()
    is_path = source.endswith(".csv") or "/" in source or "\\" in source or given.exists()
    if is_path:
        path = given / CSV_NAME if given.is_dir() else given
        hint = ""
    else:
        path = Path(cfg.paths.regions) / source / "cooccurrence" / CSV_NAME
        hint = f" (run lcip-cooccurrence region={source} first)"
    if not path.is_file():
        raise ConfigError(f"cooccurrence.source={source}: no cooccurrence matrix at {path}{hint}")
    return path


def borrowed_cooccurrence(cfg: DictConfig, source: str) -> Cooccurrence:
    """The matrix ``cooccurrence.source`` names, checked against the region's scheme.

    Raises:
        ConfigError: if it does not exist or its classes are not the scheme's.
        DataError: if the file is malformed.
    """
    if source == AUTO or source.startswith(PREFIX):
        return builtin_cooccurrence(cfg, source)
    path = source_path(cfg, source)
    coocc = check_scheme(
        Cooccurrence.read(path), scheme_of(cfg), f"cooccurrence.source={source} ({path})"
    )
    if coocc.lsr is None:
        log.warning(
            "cooccurrence.source=%s (%s): no %s beside it; loss=lsr will not be available",
            source,
            path,
            LSR_NAME,
        )
        return replace(coocc, source=source)
    return replace(coocc, source=source, lsr=replace(coocc.lsr, source=source))


def counting_splits(cfg: DictConfig) -> list[str]:
    """The splits whose tiles the matrix is counted on.

    ``region.train_splits``; with ``cooccurrence.allow_test=true`` also ``region.eval_splits``
    (the explicit override: the evaluation tiles are counted too, without touching
    ``region.train_splits``, which also chooses the tiles a network trains on).

    Raises:
        ConfigError: one line naming both settings, if ``region.train_splits`` holds an
            evaluation split and ``cooccurrence.allow_test`` is not set.
    """
    train = [str(s) for s in cfg.region.train_splits]
    evals = [str(s) for s in cfg.region.get("eval_splits") or ()]
    if bool(cfg.cooccurrence.allow_test):
        return train + [s for s in evals if s not in train]
    overlap = [s for s in train if s in evals]
    if overlap:
        raise ConfigError(
            f"region.train_splits={train} holds evaluation splits {overlap} (region.eval_splits):"
            " the cooccurrence matrix is counted on training tiles only; drop them from "
            "region.train_splits or set cooccurrence.allow_test=true to count on them anyway"
        )
    return train


def no_tiles_message(cfg: DictConfig, manifest: Manifest) -> str:
    """The one-line error for a manifest with no tile of the counting splits."""
    present = sorted({t.split for t in manifest})
    return (
        f"{manifest.path or 'manifest'}: no tiles of splits {counting_splits(cfg)} to count the "
        f"cooccurrence matrix on (the manifest has splits {present}); set region.train_splits "
        "to training splits it has, borrow a matrix with cooccurrence.source=<region or csv>, "
        "or set cooccurrence.allow_test=true to count on region.eval_splits too"
    )


def cooccurrence(cfg: DictConfig, force: bool = False) -> Cooccurrence:
    """Count P(target class | NLCD class) on the region's training tiles and write it.

    The tiles are those of :func:`counting_splits`: ``region.train_splits``, plus
    ``region.eval_splits`` with ``cooccurrence.allow_test=true``.

    Always recounted (it is cheap); priors record the matrix in their provenance, so an
    unchanged matrix does not make them stale. With ``cooccurrence.source`` set, the matrix
    is borrowed (see the module docstring) and nothing is counted.

    Args:
        cfg: composed config (``region``, ``cooccurrence``).
        force: accepted for symmetry with the other stages (counting always runs).

    Returns:
        the cooccurrence statistics (also written to ``cooccurrence.dir``).

    Raises:
        ConfigError: one line naming the settings to change, when no tile is selected or an
            evaluation split would be counted without ``cooccurrence.allow_test``.
        GridMismatchError: one line naming the tile and both files, when a tile's labels
            (``region.label_layer``) are not on its imagery's grid (``region.image_layer``).
    """
    out_dir = Path(cfg.cooccurrence.dir)
    source = cooccurrence_source(cfg)
    if source is not None:
        result = borrowed_cooccurrence(cfg, source)
        result.write(out_dir)
        log.info("cooccurrence borrowed from %s, written to %s", result.source or source, out_dir)
        return result
    allow_test = bool(cfg.cooccurrence.allow_test)
    full = Manifest.read(region_manifest_path(cfg))
    manifest = full.select(counting_splits(cfg))
    if len(manifest) == 0:
        raise ConfigError(no_tiles_message(cfg, full))
    log.info(
        "counting the cooccurrence matrix on %d tiles of splits %s",
        len(manifest),
        sorted({t.split for t in manifest}),
    )
    result = count_cooccurrence(
        manifest,
        scheme_of(cfg),
        label_layer=cfg.region.label_layer,
        nlcd_layer=cfg.region.nlcd_layer,
        allow_test=allow_test,
        nlcd_encoding=check_nlcd_encoding(str(cfg.region.get("nlcd_encoding", "codes"))),
        image_layer=cfg.region.get("image_layer"),
    )
    result.write(out_dir)
    return result
