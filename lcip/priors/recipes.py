"""Prior recipes by name (``prior.recipe``), as losses are by ``loss.name``.

A recipe turns a :class:`PriorRequest` (the region's tiles, the class scheme, the
cooccurrence matrix and the prior's settings) into one prior raster per tile.
:func:`build_prior` dispatches on ``settings["recipe"]``, writes ``report.json`` and the
manifest listing the tiles with their ``prior_<name>`` layer. New recipes register with
:func:`register_recipe`; a recipe that needs no cooccurrence matrix (``published``) says so
there, and the prior stage then does not read one (:func:`needs_cooccurrence`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from lcip.classes import ClassScheme
from lcip.errors import ConfigError
from lcip.io.manifest import Manifest
from lcip.priors.build import (
    FusedPriorJob,
    NLCDPriorJob,
    TileResult,
    VectorLayersJob,
    check_vector_rasters,
    results_manifest,
    run_tile_jobs,
    write_report,
)
from lcip.priors.fused import fusion_classes
from lcip.priors.nlcd import check_nlcd_encoding
from lcip.priors.published import PublishedPriorJob, check_layer

log = logging.getLogger(__name__)

#: The learned prior's trained network, in its prior's folder.
MODEL_FILE = "model.pt"


@dataclass(frozen=True)
class PriorRequest:
    """Everything a recipe needs to build a prior over a region.

    Args:
        manifest: the region's manifest (all tiles).
        scheme: the target class scheme.
        region_dir: the region's folder; intermediate layers go under it.
        out_dir: the prior's folder (rasters, ``report.json``, ``manifest.csv``).
        cooccurrence: (C, 17) matrix P(target class | NLCD class); None for recipes that
            need none (see :func:`needs_cooccurrence`).
        settings: the prior's config node as a plain dict (``name``, ``recipe``, ...).
        image_layer: imagery layer (the grid every prior is aligned to).
        nlcd_layer: NLCD layer.
        label_layer: 1 m label layer (the learned prior trains on it).
        osm_layer: OSM layer (roads, waterways, water bodies), or None.
        buildings_layer: building footprints layer, or None.
        nlcd_encoding: how the NLCD layer stores classes: ``codes`` (NLCD class codes) or
            ``index`` (indices 0..16).
        vector_rasters: vector band name (buildings, roads, waterways, waterbodies) ->
            manifest layer holding it as a 0/1 raster on the tile grid; such bands replace
            the ones rasterized from ``osm_layer`` / ``buildings_layer``.
        cooccurrence_source: where a borrowed cooccurrence matrix came from
            (``cooccurrence.source``), recorded in the priors; None for the region's own.
        train_splits: splits the learned prior may train on.
        eval_splits: evaluation splits (never trained on).
        jobs: worker processes.
        seed: seed.
        force: rebuild every tile even when up to date.
        cache: hold training tiles in memory (learned prior, small regions).
        device: torch device for the learned prior.
    """

    manifest: Manifest
    scheme: ClassScheme
    region_dir: Path
    out_dir: Path
    cooccurrence: npt.NDArray[np.float64] | None
    settings: Mapping[str, Any]
    image_layer: str = "naip"
    nlcd_layer: str = "nlcd"
    label_layer: str = "lc"
    osm_layer: str | None = "osm"
    buildings_layer: str | None = "buildings"
    nlcd_encoding: str = "codes"
    vector_rasters: Mapping[str, str] = field(default_factory=dict)
    cooccurrence_source: str | None = None
    train_splits: tuple[str, ...] = ("train",)
    eval_splits: tuple[str, ...] = ("test",)
    jobs: int = 1
    seed: int = 0
    force: bool = False
    cache: bool = False
    device: str = "cpu"

    @property
    def name(self) -> str:
        """The prior's name (its layer is ``prior_<name>``)."""
        return str(self.settings["name"])

    def setting(self, key: str) -> Any:
        """One setting, or a one-line error naming ``prior.<key>`` when it is missing."""
        if key not in self.settings:
            raise ConfigError(f"prior.{key}: missing (recipe '{self.settings.get('recipe')}')")
        return self.settings[key]

    def nlcd_job(self, out_dir: Path) -> NLCDPriorJob:
        """The NLCD prior job with this request's settings."""
        return NLCDPriorJob(out_dir, **self.nlcd_job_kwargs())

    def nlcd_job_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of the NLCD prior job (shared by the NLCD and fused jobs).

        Raises:
            ConfigError: if the request holds no cooccurrence matrix.
        """
        if self.cooccurrence is None:
            raise ConfigError(
                f"prior.recipe={self.settings.get('recipe')}: needs a cooccurrence matrix, "
                f"but none was given"
            )
        return {
            "image_layer": self.image_layer,
            "force": self.force,
            "scheme": self.scheme,
            "matrix": np.asarray(self.cooccurrence, dtype=np.float64),
            "nlcd_layer": self.nlcd_layer,
            "sigma_m": float(self.setting("sigma_m")),
            "truncate": float(self.setting("truncate")),
            "smoothing": float(self.setting("smoothing")),
            "nlcd_encoding": check_nlcd_encoding(self.nlcd_encoding),
            "cooccurrence_source": self.cooccurrence_source,
        }

    def with_vector_layers(self) -> Manifest:
        """The manifest with the rasterized vector layers (``vectors``) of every tile."""
        job = VectorLayersJob(
            self.region_dir / "vectors",
            self.image_layer,
            self.force,
            self.osm_layer,
            self.buildings_layer,
            check_vector_rasters(self.vector_rasters),
        )
        results = run_tile_jobs(job, self.manifest, self.jobs, "vector layers")
        return results_manifest(self.manifest, results, "vectors")


Recipe = Callable[[PriorRequest], list[TileResult]]
F = TypeVar("F", bound=Recipe)

#: Recipes by name.
RECIPES: dict[str, Recipe] = {}

#: Recipes that need no cooccurrence matrix (the prior stage does not read one for them).
WITHOUT_COOCCURRENCE: set[str] = set()


def register_recipe(name: str, *, cooccurrence: bool = True) -> Callable[[F], F]:
    """Register a recipe under ``name`` (a decorator).

    Args:
        name: the recipe's ``prior.recipe`` value.
        cooccurrence: whether the recipe needs the cooccurrence matrix
            (:attr:`PriorRequest.cooccurrence`).

    Returns:
        a decorator that registers the function and returns it unchanged.

    Raises:
        ValueError: if another function is already registered under ``name``.
    """

    def register(fn: F) -> F:
        if RECIPES.get(name, fn) is not fn:
            raise ValueError(f"prior recipe {name!r} is already registered ({RECIPES[name]})")
        RECIPES[name] = fn
        if not cooccurrence:
            WITHOUT_COOCCURRENCE.add(name)
        return fn

    return register


def needs_cooccurrence(recipe: str) -> bool:
    """Whether a registered recipe needs the cooccurrence matrix (False for unknown ones)."""
    return recipe in RECIPES and recipe not in WITHOUT_COOCCURRENCE


@register_recipe("nlcd")
def nlcd_recipe(request: PriorRequest) -> list[TileResult]:
    """NLCD prior: one-hot NLCD -> Gaussian blur -> cooccurrence remap -> smoothing."""
    job = request.nlcd_job(request.out_dir)
    return run_tile_jobs(job, request.manifest, request.jobs, f"prior {request.name}")


@register_recipe("fused")
def fused_recipe(request: PriorRequest) -> list[TileResult]:
    """The NLCD prior plus blurred OSM and building layers on water and impervious.

    The vector layers (``<region_dir>/vectors``) are written too, for inspection; the fused
    job rasterizes its own, with a halo around each tile.
    """
    request.with_vector_layers()
    water, impervious = fusion_classes(request.scheme)
    job = FusedPriorJob(
        request.out_dir,
        **request.nlcd_job_kwargs(),
        osm_layer=request.osm_layer,
        buildings_layer=request.buildings_layer,
        vector_rasters=check_vector_rasters(request.vector_rasters),
        water_class=water,
        impervious_class=impervious,
        radius_m=dict(request.setting("radius_m")),
        weights=dict(request.setting("weights")),
    )
    return run_tile_jobs(job, request.manifest, request.jobs, f"prior {request.name}")


@register_recipe("published", cooccurrence=False)
def published_recipe(request: PriorRequest) -> list[TileResult]:
    """A published prior (``prior.layer``: uint8 0..``prior.scale``) in lcip's prior format.

    Needs no cooccurrence matrix; see :mod:`lcip.priors.published`.

    Raises:
        ConfigError: if a tile lacks the layer, or ``prior.layer`` / ``prior.scale`` /
            ``prior.smoothing`` is missing or invalid.
    """
    layer = str(request.setting("layer"))
    check_layer(request.manifest, layer)
    job = PublishedPriorJob(
        request.out_dir,
        image_layer=request.image_layer,
        force=request.force,
        scheme=request.scheme,
        layer=layer,
        scale=float(request.setting("scale")),
        smoothing=float(request.setting("smoothing")),
    )
    return run_tile_jobs(job, request.manifest, request.jobs, f"prior {request.name}")


#: Keys of ``prior.training`` (the learned prior's training schedule and network).
TRAINING_KEYS = ("steps", "batch_size", "crop_size", "lr", "model")


def training_settings(request: PriorRequest) -> dict[str, Any]:
    """``settings["training"]`` checked for :data:`TRAINING_KEYS`, as a plain dict.

    Raises:
        ConfigError: one line naming ``prior.training`` or the missing key.
    """
    training = request.setting("training")
    if not isinstance(training, Mapping):
        raise ConfigError(f"prior.training: expected a mapping of {list(TRAINING_KEYS)}")
    missing = [k for k in TRAINING_KEYS if k not in training]
    if missing:
        raise ConfigError(f"prior.training: missing {missing} (needs {list(TRAINING_KEYS)})")
    if not (isinstance(training["model"], Mapping) and "_target_" in training["model"]):
        raise ConfigError("prior.training.model: expected a node with _target_")
    return dict(training)


@register_recipe("learned")
def learned_recipe(request: PriorRequest) -> list[TileResult]:
    """An FCN on the NLCD prior bands and the vector layers, trained on a few labelled tiles.

    Training settings come from ``settings["training"]`` (:data:`TRAINING_KEYS`; ``model`` is
    a Hydra node with ``_target_``). The trained network is kept in ``<out_dir>/model.pt``
    with the provenance of its training and reused while that is unchanged (unless
    ``force``).
    """
    from lcip.priors.learned import (
        build_network,
        load_checkpoint,
        save_checkpoint,
        select_training_tiles,
        train_learned_prior,
        training_provenance,
        write_learned_priors,
    )

    training = training_settings(request)
    manifest = request.with_vector_layers()
    nlcd = run_tile_jobs(
        request.nlcd_job(request.region_dir / "priors" / "nlcd_input"),
        manifest,
        request.jobs,
        "NLCD prior (input)",
    )
    manifest = results_manifest(manifest, nlcd, "prior_nlcd_input")
    inputs = ("prior_nlcd_input", "vectors")
    ids = select_training_tiles(
        manifest,
        list(request.train_splits),
        list(request.eval_splits),
        int(request.setting("train_tiles")),
        request.settings.get("train_tile_ids"),
        request.label_layer,
    )
    net = build_network(training["model"], request.scheme.num_classes, request.seed)
    checkpoint = request.out_dir / MODEL_FILE
    tag = training_provenance(
        manifest,
        ids,
        {**training, "seed": request.seed, "scheme": request.scheme.name},
        inputs,
        request.label_layer,
    )
    if request.force or not load_checkpoint(checkpoint, net, tag):
        train_learned_prior(
            manifest,
            ids,
            request.scheme,
            net,
            input_layers=inputs,
            label_layer=request.label_layer,
            steps=int(training["steps"]),
            batch_size=int(training["batch_size"]),
            crop_size=int(training["crop_size"]),
            lr=float(training["lr"]),
            seed=request.seed,
            cache=request.cache,
            device=request.device,
        )
        save_checkpoint(checkpoint, net, tag)
    else:
        log.info("learned prior: reusing %s (training inputs unchanged)", checkpoint)
    return write_learned_priors(
        manifest,
        net,
        request.scheme,
        request.out_dir,
        params={
            **request.settings,
            "recipe": "learned",
            "train_tiles": ids,
            "nlcd_encoding": request.nlcd_encoding,
            "cooccurrence_source": request.cooccurrence_source,
        },
        input_layers=inputs,
        smoothing=float(request.setting("smoothing")),
        device=request.device,
        force=request.force,
    )


def build_prior(request: PriorRequest) -> Path:
    """Build a prior with its recipe; write ``report.json`` and ``manifest.csv``.

    Args:
        request: the region, scheme, settings and options.

    Returns:
        ``<out_dir>/manifest.csv``: the region's tiles that have a prior, with the layer
        ``prior_<name>``.

    Raises:
        ConfigError: for an unknown ``prior.recipe`` or a missing or invalid setting (one
            line naming the ``prior.<key>``).
    """
    recipe = request.settings.get("recipe")
    if recipe not in RECIPES:
        raise ConfigError(
            f"prior.recipe={recipe!r}: unknown recipe; choose one of {sorted(RECIPES)}"
        )
    results = RECIPES[str(recipe)](request)
    write_report(results, request.out_dir, {"recipe": recipe, "prior": request.name})
    manifest = results_manifest(request.manifest, results, f"prior_{request.name}")
    return manifest.write(request.out_dir / "manifest.csv")


__all__ = [
    "MODEL_FILE",
    "RECIPES",
    "TRAINING_KEYS",
    "WITHOUT_COOCCURRENCE",
    "PriorRequest",
    "Recipe",
    "build_prior",
    "fused_recipe",
    "learned_recipe",
    "needs_cooccurrence",
    "nlcd_recipe",
    "published_recipe",
    "register_recipe",
    "training_settings",
]
