"""Stage ``prior``: build the configured prior for every tile (see :mod:`lcip.priors.recipes`)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from lcip.config import to_dict
from lcip.errors import ConfigError
from lcip.io.manifest import Manifest
from lcip.io.shards import Shard, merge_shards, parse_shard, select_shard
from lcip.priors.build import results_manifest, write_report
from lcip.priors.cooccurrence import Cooccurrence, check_scheme
from lcip.priors.nlcd import check_nlcd_encoding
from lcip.priors.recipes import RECIPES, PriorRequest, build_prior, needs_cooccurrence
from lcip.stages.cooccurrence import borrowed_cooccurrence, cooccurrence_source
from lcip.stages.paths import prior_dir, region_manifest_path, scheme_of


def cooccurrence_matrix(cfg: DictConfig) -> Any:
    """The region's cooccurrence matrix (see :func:`region_cooccurrence`)."""
    return region_cooccurrence(cfg)[0]


def region_cooccurrence(cfg: DictConfig) -> tuple[Any, str | None]:
    """The region's cooccurrence matrix and where it came from, as the priors record it.

    With ``cooccurrence.source`` set (or the region's default), the borrowed matrix it names
    (checked against the region's scheme) and its source: the value given, or for a built-in
    table (``builtin:<name>``, ``auto``) the table it resolved to with its upstream file;
    otherwise the one the cooccurrence stage wrote into ``cooccurrence.dir``, and None.

    Raises:
        ConfigError: one line naming the setting, if there is no matrix or it does not fit.
    """
    source = cooccurrence_source(cfg)
    if source is not None:
        borrowed = borrowed_cooccurrence(cfg, source)
        return borrowed.matrix, borrowed.source or source
    path = Path(cfg.cooccurrence.dir) / "cooccurrence.csv"
    if not path.exists():
        raise ConfigError(
            f"cooccurrence.dir={path.parent}: no cooccurrence.csv (run lcip-cooccurrence first)"
        )
    matrix = check_scheme(
        Cooccurrence.read(path), scheme_of(cfg), f"cooccurrence.dir={path}"
    ).matrix
    return matrix, None


def vector_rasters(cfg: DictConfig) -> dict[str, str]:
    """``region.vector_rasters`` as a plain dict (empty when unset)."""
    node = cfg.region.get("vector_rasters")
    return {} if node is None else {str(k): str(v) for k, v in to_dict(node).items()}


def prior(cfg: DictConfig, force: bool = False) -> Path:
    """Build the configured prior (``prior.recipe``) for every tile of the region.

    The cooccurrence matrix is read only for recipes that need one (not ``published``).
    With ``shard=i/n`` only that shard's tiles are built (see :mod:`lcip.io.shards`); its report
    goes to ``<prior dir>/shards/<i>_of_<n>/`` and the last shard to finish merges all of
    them into the prior's ``manifest.csv`` and ``report.json``.

    Args:
        cfg: composed config (``region``, ``prior``, ``cooccurrence``, ``jobs``, ``seed``,
            ``shard``).
        force: rebuild every tile even when its output is up to date.

    Returns:
        the manifest listing the tiles with their ``prior_<name>`` layer (for a shard: its
        own manifest, until the merged one exists).

    Raises:
        ConfigError: for a malformed ``shard``, or ``shard`` with the learned prior (whose
            network is trained once on the region's labelled tiles).
    """
    region = cfg.region
    recipe = str(cfg.prior.get("recipe"))
    shard = parse_shard(cfg.get("shard"))
    if shard is not None and recipe == "learned":
        raise ConfigError(
            f"shard={shard}: prior.recipe=learned trains one network on the region's labelled "
            "tiles and cannot be sharded; build it without shard (jobs=N runs tiles in parallel)"
        )
    matrix, source = region_cooccurrence(cfg) if needs_cooccurrence(recipe) else (None, None)
    request = PriorRequest(
        manifest=Manifest.read(region_manifest_path(cfg)),
        scheme=scheme_of(cfg),
        region_dir=Path(region.dir),
        out_dir=prior_dir(cfg),
        cooccurrence=matrix,
        settings=to_dict(cfg.prior),
        image_layer=region.image_layer,
        nlcd_layer=region.nlcd_layer,
        label_layer=region.label_layer,
        osm_layer=region.get("osm_layer"),
        buildings_layer=region.get("buildings_layer"),
        nlcd_encoding=check_nlcd_encoding(str(region.get("nlcd_encoding", "codes"))),
        vector_rasters=vector_rasters(cfg),
        cooccurrence_source=source,
        train_splits=tuple(region.train_splits),
        eval_splits=tuple(region.eval_splits),
        jobs=int(cfg.jobs),
        seed=int(cfg.seed),
        force=force or bool(cfg.get("force", False)),
        cache=bool(cfg.data.get("cache", False)),
    )
    if shard is None:
        return build_prior(request)
    return build_prior_shard(request, shard)


def build_prior_shard(request: PriorRequest, shard: Shard) -> Path:
    """Build one shard's tiles of a prior; merge the shard reports when all are there.

    Args:
        request: the prior request over the whole region.
        shard: which shard.

    Returns:
        the merged ``manifest.csv`` when this shard completed the set, else the shard's own.
    """
    recipe = str(request.settings.get("recipe"))
    if recipe not in RECIPES:
        return build_prior(request)  # its one-line error for an unknown recipe
    results = RECIPES[recipe](replace(request, manifest=select_shard(request.manifest, shard)))
    folder = shard.folder(request.out_dir)
    write_report(results, folder, {"recipe": recipe, "prior": request.name, "shard": str(shard)})
    own = results_manifest(request.manifest, results, f"prior_{request.name}")
    path = own.write(folder / "manifest.csv")
    return merge_shards(request.out_dir, shard.count, request.manifest) or path
