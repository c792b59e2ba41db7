"""Stage ``map``: from a place name to map products in one command (``lcip-map``).

``lcip-map region.source.place='Ithaca, NY' region.source.year=2022`` runs, for one area:

1. **acquire**: geocode the place, find its NAIP scenes, fetch them with NLCD, OSM and building
   footprints (:mod:`lcip.stages.acquire_place`; any other region: ``lcip-acquire`` or
   ``lcip-region``);
2. **cooccurrence**: the table P(class | NLCD class) the prior uses: ``cooccurrence.source``
   (a built-in table, another region or a CSV file), or counted on the area's own 1 m labels
   when it has some;
3. **prior**: ``map.prior`` (``auto``: the fused prior where the tiles have OSM or building
   footprints, the NLCD prior otherwise);
4. **train**: QR (lcip's default recipe) on the area itself, transductive as in the paper:
   every tile is a training and a validation tile (``data.train_splits`` /
   ``data.val_splits``); sized for the machine by ``map.sizing`` (a few minutes on a CPU);
5. **predict**: q and r of every tile;
6. **products**: seamless class, probability and confidence maps, class areas and an HTML page
   under ``outputs/maps/<map.name>/`` (:func:`lcip.products.make_products`).

Each area gets its own folders: ``region.name`` is the map's name, so its tiles are under
``outputs/regions/<name>/`` and its run under ``outputs/runs/<name>/``.

Every step resumes and skips what is up to date: acquisition makes no request when its
settings and files hold, training continues an interrupted run, and the steps after it are
recorded in ``<products>/map_steps.json`` (their settings and the size and modification time
of their input and output files): a step whose record still holds is not run again, so a
rerun with the same settings reads a few files and writes nothing.

``map.dry_run=true`` (or ``acquire.dry_run=true``) prints every step, the scenes with the
bytes to fetch (the acquisition dry run) and an estimate of the disk and time each step takes,
and fetches and writes nothing.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from lcip.config import compose_config, instantiate, to_dict
from lcip.errors import ConfigError, DataError
from lcip.io.atomic import write_text
from lcip.io.manifest import Manifest
from lcip.stages.checks import check_loss_name, check_predict_settings

log = logging.getLogger(__name__)

#: The record of the steps after acquisition, in the products folder.
STEPS_FILE = "map_steps.json"

#: The steps of a map, in order.
STEPS = ("acquire", "cooccurrence", "prior", "train", "predict", "products")

#: Values of ``map.prior`` besides a prior config's name.
AUTO = "auto"

#: ``trainer`` settings that change how a run is shown, not what it computes.
COSMETIC_TRAINER_KEYS = ("enable_progress_bar", "log_every_n_steps", "default_root_dir")

# Rough throughputs behind the dry run's estimates (see :func:`estimate`): effective FLOP/s
# of training and inference (a 2-core CPU with bf16 reaches ~3e11 on lcip's FCN, one recent
# GPU ~1e13 or more), network bandwidth, and per-pixel costs of priors and products.
FLOPS = {"cpu": 1e11, "gpu": 1e13}
BANDWIDTH = 10e6  # bytes/s
SECONDS_PER_TILE_QUERY = 15.0  # NLCD window, Overpass query and footprints per tile
PRIOR_SECONDS_PER_PIXEL = 5e-7
PREDICT_IO_SECONDS_PER_PIXEL = 2e-6  # reading windows, writing four COGs per tile
PRODUCT_SECONDS_PER_PIXEL = 1e-6
VECTOR_BANDS = 4  # the fused prior's rasterized layers (uint8)


# ------------------------------------------------------------------------------ settings
def slug(text: str) -> str:
    """A folder name from free text: lower case, runs of other characters as one ``-``."""
    return re.sub(r"[^a-z0-9.]+", "-", text.lower()).strip("-.") or "map"


def map_name(cfg: DictConfig) -> str:
    """``map.name``, or one made from the area and the year (``ithaca-ny-2022``).

    For a region that is not a ``place`` area, the region's name.

    Raises:
        ConfigError: for a name that is not a plain folder name, or a bad area selector.
    """
    given = cfg.map.get("name")
    if given not in (None, ""):
        name = str(given)
        if name != slug(name) and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
            raise ConfigError(f"map.name={name!r}: letters, digits, '.', '_' and '-' only")
        return name
    source = cfg.region.get("source")
    if source is None or source.get("dataset") != "place":
        return str(cfg.region.name)
    from lcip.acquire import area as area_mod

    src = to_dict(source)
    kind = area_mod.selector(src)
    value = src[kind]
    if kind == "place":
        what = str(value)
    elif kind == "bbox":
        what = "bbox " + " ".join(f"{float(v):g}" for v in value)
    else:
        tiles = [str(t) for t in value]
        what = tiles[0] + (f" and {len(tiles) - 1} more" if len(tiles) > 1 else "")
    when = src.get("year") or src.get("date_range") or ""
    return slug(f"{what} {when}")


def products_dir(cfg: DictConfig, name: str) -> Path:
    """The products folder: ``<paths.root>/maps/<name>``."""
    return Path(cfg.paths.root) / "maps" / name


def override_key(override: str) -> str:
    """The key an override sets (``+data.x=1`` -> ``data.x``; ``trainer=gpu`` -> ``trainer``)."""
    return override.split("=", 1)[0].lstrip("+~")


def _given(keys: Iterable[str], key: str, groups: bool) -> bool:
    """Whether ``key`` was given (with ``groups``: or a group above it)."""
    parts = key.split(".")
    prefixes = {".".join(parts[: i + 1]) for i in range(len(parts))} if groups else {key}
    return bool(prefixes & set(keys))


def unless_given(given: Sequence[str], extra: Iterable[str], groups: bool = False) -> list[str]:
    """The overrides of ``extra`` whose keys the user's overrides ``given`` do not set.

    Args:
        given: the user's overrides.
        extra: overrides to add.
        groups: also leave out a key when the user chose its config group (``model=unet``
            leaves out ``model.num_filters=32``, a setting of another model).
    """
    keys = {override_key(o) for o in given}
    return [o for o in extra if not _given(keys, override_key(o), groups)]


def sizing_device(cfg: DictConfig, given: Sequence[str]) -> str:
    """``cpu`` or ``gpu``: ``map.sizing.device``.

    ``auto`` follows a ``trainer=...`` override, else whether torch sees a CUDA device.

    Raises:
        ConfigError: for another value.
    """
    choice = str(cfg.map.sizing.get("device", AUTO))
    if choice not in (AUTO, "cpu", "gpu"):
        raise ConfigError(f"map.sizing.device={choice!r}: one of auto, cpu, gpu")
    if choice != AUTO:
        return choice
    trainers = [o.split("=", 1)[1] for o in given if override_key(o) == "trainer" and "=" in o]
    if trainers:
        return "gpu" if trainers[-1] in ("gpu", "ddp") else "cpu"
    from lcip.stages.checks import cuda_available

    return "gpu" if cuda_available() else "cpu"


def sizing_overrides(cfg: DictConfig, given: Sequence[str], device: str) -> list[str]:
    """``map.sizing.<device>``: overrides sizing the training, less those the user set.

    Raises:
        ConfigError: when ``map.sizing.<device>`` is not a list of overrides.
    """
    sized = cfg.map.sizing.get(device)
    if sized is None or isinstance(sized, str | DictConfig):
        raise ConfigError(f"map.sizing.{device}: a list of overrides, e.g. [trainer.max_epochs=8]")
    out = [str(o) for o in sized]
    bad = [o for o in out if "=" not in o]
    if bad:
        raise ConfigError(f"map.sizing.{device}: {bad[0]!r} is not an override (key=value)")
    return unless_given(given, out, groups=True)


def choose_prior(cfg: DictConfig, manifest: Manifest | None) -> str:
    """``map.prior``; ``auto``: ``fused`` where OSM or footprints exist, else ``nlcd``.

    Without a manifest yet (a dry run), what the settings will fetch decides.
    """
    choice = str(cfg.map.get("prior") or AUTO)
    if choice != AUTO:
        return choice
    layers = [cfg.region.get("osm_layer"), cfg.region.get("buildings_layer")]
    layers = [str(x) for x in layers if x]
    if manifest is not None:
        has = any(name in tile.layers for tile in manifest for name in layers)
    elif cfg.region.get("source") is not None and cfg.region.source.get("dataset") == "place":
        place = cfg.acquire.place
        has = bool(place.osm.get("overpass_url") or place.footprints.get("index_url"))
    else:
        has = bool(layers)
    return "fused" if has else "nlcd"


def cooccurrence_plan(cfg: DictConfig) -> str:
    """How the prior gets its table: ``cooccurrence.source``, or ``count`` on 1 m labels.

    Raises:
        ConfigError: one line, when the area has neither labels nor a source.
    """
    from lcip.stages.cooccurrence import cooccurrence_source

    source = cooccurrence_source(cfg)
    if source is not None:
        return source
    if cfg.region.get("label_layer"):
        return "count"
    raise ConfigError(
        f"cooccurrence.source: region {cfg.region.name} has no 1 m labels to count the "
        "cooccurrence matrix on; set cooccurrence.source=builtin:<table> (e.g. "
        "builtin:chesapeake4), a labelled region's name or a cooccurrence CSV file"
    )


def table_line(source: str, cfg: DictConfig, where: tuple[float, float] | None) -> str:
    """What the cooccurrence step uses, in words; ``auto`` resolved when the area is known.

    Args:
        source: :func:`cooccurrence_plan`'s answer.
        cfg: composed config (the region's scheme).
        where: the area's centre (longitude, latitude), None when not known yet.
    """
    if source == "count":
        return f"counted on the area's 1 m labels ({cfg.region.label_layer})"
    from lcip.priors.builtin import AUTO as AUTO_TABLE
    from lcip.priors.builtin import PREFIX, choose_table

    if source != AUTO_TABLE:
        return f"{source} (borrowed)"
    if where is None:
        return f"{AUTO_TABLE}: the built-in table for where the tiles are"
    from lcip.stages.paths import scheme_of

    table, reason = choose_table(where[0], where[1], scheme_of(cfg))
    return f"{AUTO_TABLE}: {PREFIX}{table.name} ({reason})"


# ---------------------------------------------------------------------------- step record
def fingerprint(paths: Iterable[Path]) -> dict[str, list[int] | None]:
    """Size and modification time (ns) of each file, None for a missing one."""
    out: dict[str, list[int] | None] = {}
    for p in sorted({Path(p) for p in paths}):
        try:
            st = p.stat()
        except OSError:
            out[str(p)] = None
            continue
        out[str(p)] = [st.st_size, st.st_mtime_ns]
    return out


def files_under(folder: Path, exclude: Sequence[Path] = ()) -> list[Path]:
    """The files under ``folder`` (recursively; hidden files such as temporaries left out)."""
    if not folder.is_dir():
        return []
    skip = {p.resolve() for p in exclude}
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
        and p.resolve() not in skip
    )


def manifest_files(path: Path, layers: Sequence[str] | None = None) -> list[Path]:
    """A manifest and the files of its tiles' layers (all layers, or those named)."""
    files = [path]
    if path.is_file():
        for tile in Manifest.read(path, verify=False):
            files += [p for name, p in tile.layers.items() if layers is None or name in layers]
    return files


def _plain(value: Any) -> Any:
    """``value`` as plain JSON values (what a record compares)."""
    return json.loads(json.dumps(value, sort_keys=True, default=str))


class StepRecord:
    """The record of a map's steps (``map_steps.json``): settings, inputs and outputs of each.

    A step is up to date when its settings are those recorded and its input and output
    files have the sizes and modification times they had when it last ran.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            loaded = json.loads(path.read_text())
        except (OSError, ValueError):
            loaded = {}
        self.steps: dict[str, Any] = loaded if isinstance(loaded, dict) else {}

    def up_to_date(self, name: str, settings: Mapping[str, Any], inputs: Iterable[Path]) -> bool:
        """Whether step ``name`` ran with ``settings`` on these inputs and its outputs hold."""
        rec = self.steps.get(name)
        if not isinstance(rec, dict):
            return False
        outputs = rec.get("outputs") or {}
        return (
            rec.get("settings") == _plain(settings)
            and rec.get("inputs") == fingerprint(inputs)
            and bool(outputs)
            and outputs == fingerprint(Path(p) for p in outputs)
        )

    def record(
        self,
        name: str,
        settings: Mapping[str, Any],
        inputs: Iterable[Path],
        outputs: Iterable[Path],
        seconds: float,
    ) -> None:
        """Record a step that just ran (written at once: an interrupted map keeps it)."""
        self.steps[name] = {
            "settings": _plain(settings),
            "inputs": fingerprint(inputs),
            "outputs": fingerprint(outputs),
            "seconds": round(seconds, 2),
        }
        write_text(self.path, json.dumps(self.steps, indent=1, sort_keys=True))


def _say(index: int, name: str, text: str) -> None:
    print(f"[{index}/{len(STEPS)}] {name:<12} {text}", flush=True)


# ------------------------------------------------------------------------------ the plan
@dataclass(frozen=True)
class MapPlan:
    """What a map run does, from the settings.

    Attributes:
        name: the map's name (folders ``regions/<name>``, ``runs/<name>``, ``maps/<name>``).
        out_dir: the products folder.
        base: overrides of the acquisition (the user's, ``region.name``).
        device: ``cpu`` or ``gpu`` (the sizing used).
        sizing: the sizing overrides applied (the user's own win).
        cooccurrence: ``cooccurrence.source`` or ``count``.
    """

    name: str
    out_dir: Path
    base: tuple[str, ...]
    device: str
    sizing: tuple[str, ...]
    cooccurrence: str


def make_plan(cfg: DictConfig, overrides: Sequence[str]) -> MapPlan:
    """The :class:`MapPlan` of ``cfg`` (composed with ``overrides``); checks the settings.

    Raises:
        ConfigError: for bad ``map`` settings or an area without a cooccurrence source.
    """
    if "map" not in cfg:
        raise ConfigError("map: missing (the settings of lcip-map, lcip/conf/lcip.yaml)")
    given = list(overrides)
    name = map_name(cfg)
    base = [*given, *unless_given(given, [f"region.name={name}"])]
    device = sizing_device(cfg, given)
    sizing = sizing_overrides(cfg, given, device)
    if cfg.map.get("zones") and not cfg.map.get("zones_id"):
        raise ConfigError(f"map.zones={cfg.map.zones}: set map.zones_id (the zones' id field)")
    zones = cfg.map.get("zones")
    if zones and not Path(str(zones)).exists():
        raise ConfigError(f"map.zones={zones}: no such file")
    return MapPlan(
        name,
        products_dir(cfg, name),
        tuple(base),
        device,
        tuple(sizing),
        cooccurrence_plan(cfg),
    )


def run_overrides(
    plan: MapPlan, given: Sequence[str], manifest: Manifest, cfg: DictConfig
) -> list[str]:
    """The overrides of the training run on the acquired area.

    The plan's base and sizing; the prior (:func:`choose_prior`); transductive splits (every
    tile trains, validates and is predicted); a training crop no larger than the smallest
    tile. Keys the user set are left alone.
    """
    splits = ",".join(sorted({t.split for t in manifest}))
    extra = [
        f"prior={choose_prior(cfg, manifest)}",
        f"++data.train_splits=[{splits}]",
        f"++data.val_splits=[{splits}]",
        f"predict.splits=[{splits}]",
    ]
    out = [*plan.base, *plan.sizing, *unless_given(given, extra)]
    if "data.crop_size" not in {override_key(o) for o in given}:
        sub = compose_config(out)
        side = smallest_side(manifest, str(sub.region.image_layer))
        if int(sub.data.crop_size) > side:
            crop = max(8, side // 8 * 8)
            log.info(
                "data.crop_size=%d: the smallest tile is %d px; using %d",
                sub.data.crop_size,
                side,
                crop,
            )
            out.append(f"data.crop_size={crop}")
    return out


def smallest_side(manifest: Manifest, image_layer: str) -> int:
    """The shortest side (px) of the tiles' imagery."""
    from lcip.io.raster import Grid

    return min(min(Grid.of(t.layer(image_layer)).shape) for t in manifest)


# ------------------------------------------------------------------------------- estimates
@dataclass(frozen=True)
class Estimate:
    """Disk (bytes, uncompressed upper bounds) and time (s) a step is expected to take."""

    step: str
    what: str
    disk: float | None
    seconds: float | None


def model_macs_per_pixel(cfg: DictConfig, classes: int) -> float:
    """Multiply-adds per pixel of the network: the number of its weights.

    Exact for the FCN's convolutions (no striding); an upper bound for networks that
    downsample.
    """
    model = instantiate(cfg, "model", classes=classes)
    return float(sum(p.numel() for p in model.parameters() if p.dim() > 1))


def _mb(n: float | None) -> str:
    if n is None:
        return "?"
    if n == 0:
        return "-"
    return f"~{n / 1e9:.2f} GB" if n >= 1e9 else f"~{n / 1e6:.1f} MB"


def _duration(s: float | None) -> str:
    if s is None:
        return "?"
    if s == 0:
        return "-"
    if s < 90:
        return f"~{max(1, round(s))} s"
    if s < 5400:
        return f"~{round(s / 60)} min"
    return f"~{s / 3600:.1f} h"


def estimate(
    sub: DictConfig,
    device: str,
    pixels: float,
    tiles: int,
    fetch: tuple[float, float] | None,
    prior_name: str,
    cooccurrence: str,
    mosaic: bool,
) -> list[Estimate]:
    """Rough disk and time of every step (see the module's throughput constants).

    Args:
        sub: the run's config (model, data, trainer).
        device: ``cpu`` or ``gpu``.
        pixels: pixels of all tiles at the working resolution.
        tiles: the number of tiles.
        fetch: bytes to transfer and bytes on disk of the acquisition (None when done).
        prior_name: the prior built.
        cooccurrence: the table, in words (:func:`table_line`).
        mosaic: whether mosaicked COGs are written.

    Returns:
        one :class:`Estimate` per step of :data:`STEPS`.
    """
    from lcip.stages.paths import scheme_of

    classes = scheme_of(sub).num_classes
    flops = FLOPS[device]
    macs = model_macs_per_pixel(sub, classes)
    params = macs + classes  # weights; biases and norms are negligible here
    steps = int(sub.data.steps_per_epoch) * int(sub.trainer.max_epochs)
    if int(sub.trainer.get("max_steps", -1) or -1) > 0:
        steps = min(steps, int(sub.trainer.max_steps))
    epochs = math.ceil(steps / max(1, int(sub.data.steps_per_epoch)))
    batch_px = int(sub.data.batch_size) * int(sub.data.crop_size) ** 2
    train_s = steps * 6 * macs * batch_px / flops + epochs * 2 * macs * pixels / flops
    predict_s = 2 * macs * pixels * 1.5 / flops  # windows overlap by their margins
    predict_s += PREDICT_IO_SECONDS_PER_PIXEL * pixels
    if fetch is None:
        acquire = Estimate("acquire", f"{tiles} tiles present", 0.0, 0.0)
    else:
        transfer, disk = fetch
        acquire_s = transfer / BANDWIDTH + SECONDS_PER_TILE_QUERY * tiles
        what = f"{tiles} tiles: NAIP ({_mb(transfer)} to transfer), NLCD, OSM, footprints"
        acquire = Estimate("acquire", what, disk + 1e6 * tiles, acquire_s)
    vectors = VECTOR_BANDS * pixels if prior_name == "fused" else 0.0
    mosaic_px = (8 * classes + 1 + 4) * pixels if mosaic else 0.0
    sizing = (
        f"{epochs} epochs x {sub.data.steps_per_epoch} steps of {sub.data.batch_size} crops of "
        f"{sub.data.crop_size} px, {int(params):,} weights, on {device}"
    )
    return [
        acquire,
        Estimate("cooccurrence", cooccurrence, 0.0, 0.0),
        Estimate(
            "prior",
            f"{prior_name} ({classes} float32 bands)",
            4 * classes * pixels + vectors,
            PRIOR_SECONDS_PER_PIXEL * pixels,
        ),
        Estimate("train", f"{sub.loss.name}: {sizing}", 2 * 3 * 4 * params, train_s),
        Estimate("predict", f"q and r of {tiles} tiles", (8 * classes + 2) * pixels, predict_s),
        Estimate(
            "products",
            "VRTs, confidence, areas, index.html" + (", mosaicked COGs" if mosaic else ""),
            4 * pixels + mosaic_px + 5e6,
            PRODUCT_SECONDS_PER_PIXEL * pixels,
        ),
    ]


def _area_pixels(geometry: Any, resolution: float) -> float:
    """Pixels of a lon/lat polygon at ``resolution`` m (its area in CONUS Albers)."""
    import shapely
    from pyproj import Transformer

    to_albers = Transformer.from_crs("EPSG:4326", "EPSG:5070", always_xy=True)
    projected = shapely.ops.transform(to_albers.transform, geometry)
    return float(projected.area) / resolution**2


def _place_fetch(
    cfg: DictConfig,
) -> tuple[int, float, tuple[float, float], tuple[float, float]] | None:
    """Print the acquisition dry run; return the scenes' count, pixels, bytes and centre.

    The bytes are (to transfer, on disk); the centre (longitude, latitude). None when the
    area is acquired and up to date (nothing to fetch, no request made).
    """
    import lcip
    from lcip.acquire import area as area_mod
    from lcip.acquire.http import configure_rate_limits
    from lcip.acquire.nlcd import nearest_release, nlcd_source
    from lcip.acquire.place import (
        Options,
        ScenePlan,
        describe,
        find_scenes,
        plan_scene,
        resolution_of,
    )
    from lcip.acquire.stamp import SETTINGS_FILE, up_to_date
    from lcip.stages.paths import region_manifest_path

    source, place = to_dict(cfg.region.source), to_dict(cfg.acquire.place)
    settings = {"source": source, "place": place, "lcip_version": lcip.__version__}
    manifest_path = region_manifest_path(cfg)
    if up_to_date(manifest_path, manifest_path.parent / SETTINGS_FILE, settings):
        return None
    limits = cfg.acquire.get("rate_limits")
    configure_rate_limits(None if limits is None else to_dict(limits))
    opts = Options(True, float(cfg.acquire.timeout), int(cfg.acquire.retries), False, False)
    res = resolution_of(place) or 0.6
    nlcd_year = nearest_release(area_mod.nominal_year(source), list(place["nlcd"]["years"]))
    nlcd_url = nlcd_source(place["nlcd"], nlcd_year).location
    cache, tiles_dir = Path(cfg.acquire.dir) / "place", Path(cfg.region.dir) / "tiles"
    area, scenes = find_scenes(source, place, opts, cache)
    print(describe(area, scenes, tiles_dir, cache, place, nlcd_url, opts))
    transfer = disk = 0.0
    for s in scenes:
        try:
            p: ScenePlan | None = plan_scene(s, tiles_dir / s.id, place, opts)
        except DataError:  # reported by describe; estimated from the footprint
            p = None
        pixels = _area_pixels(s.geometry, res)
        if p is None or not p.present:
            transfer += float(p.transfer if p is not None and p.transfer is not None else 0)
            disk += float(p.disk if p is not None and p.disk is not None else 4 * pixels)
    pixels = sum(_area_pixels(s.geometry, res) for s in scenes)
    import shapely

    centre = shapely.union_all([s.geometry for s in scenes]).centroid
    return len(scenes), pixels, (transfer, disk), (float(centre.x), float(centre.y))


def _centre(manifest: Manifest) -> tuple[float, float] | None:
    """The (longitude, latitude) of a manifest's tiles, None without tiles."""
    if len(manifest) == 0:
        return None
    from lcip.priors.builtin import area_centroid

    return area_centroid(manifest)


def _manifest_pixels(manifest: Manifest, image_layer: str) -> float:
    from lcip.io.raster import Grid

    total = 0.0
    for t in manifest:
        grid = Grid.of(t.layer(image_layer))
        total += grid.width * grid.height
    return total


def dry_run(cfg: DictConfig, plan: MapPlan, given: Sequence[str]) -> None:
    """Print every step with the bytes to fetch and the disk and time it expects."""
    from lcip.stages.paths import region_manifest_path

    print(
        f"lcip-map {plan.name}: dry run, nothing is fetched or written "
        f"(products would go to {plan.out_dir})"
    )
    base = compose_config(list(plan.base))
    is_place = base.region.get("source") is not None and base.region.source.dataset == "place"
    manifest_path = region_manifest_path(base)
    fetched = _place_fetch(base) if is_place else None
    manifest = None
    where: tuple[float, float] | None = None
    if fetched is None and manifest_path.is_file():
        manifest = Manifest.read(manifest_path, verify=False)
        tiles, pixels = len(manifest), _manifest_pixels(manifest, str(base.region.image_layer))
        fetch: tuple[float, float] | None = None
        where = _centre(manifest)
    elif fetched is not None:
        tiles, pixels, fetch, where = fetched
    else:
        print(f"region {base.region.name}: not made yet; sizes are known once it is")
        tiles, pixels, fetch = 0, 0.0, (0.0, 0.0)
    prior_name = choose_prior(base, manifest)
    run = [*plan.base, *plan.sizing, *unless_given(given, [f"prior={prior_name}"])]
    sub = compose_config(run)
    rows = estimate(
        sub,
        plan.device,
        pixels,
        tiles,
        fetch,
        prior_name,
        table_line(plan.cooccurrence, base, where),
        bool(cfg.map.get("mosaic", False)),
    )
    print(f"\n{'step':<14} {'disk':>10} {'time':>9}  what")
    for i, row in enumerate(rows, 1):
        print(f"{i}. {row.step:<11} {_mb(row.disk):>10} {_duration(row.seconds):>9}  {row.what}")
    disk = sum(r.disk or 0 for r in rows)
    seconds = sum(r.seconds or 0 for r in rows)
    transfer = 0.0 if fetch is None else fetch[0]
    print(
        f"total: {_mb(transfer)} to transfer, {_mb(disk)} on disk, {_duration(seconds)} on "
        f"{plan.device} -- estimates (uncompressed sizes, rough throughputs; {pixels / 1e6:.2f} "
        f"Mpx in {tiles} tiles); sizing {list(plan.sizing)}"
    )


# ------------------------------------------------------------------------------- the steps
def _acquire(cfg: DictConfig, force: bool) -> Path:
    """The area's manifest: acquired (a region with a ``source``) or made (``lcip-region``)."""
    if cfg.region.get("source") is not None:
        from lcip.stages.acquire import acquire

        path = acquire(cfg, force)
        assert path is not None  # not a dry run
        return path
    from lcip.stages.region import region

    return Path(region(cfg, force))


def _train_settings(sub: DictConfig) -> dict[str, Any]:
    from lcip.training.trainer import run_identity

    trainer = {k: v for k, v in to_dict(sub.trainer).items() if k not in COSMETIC_TRAINER_KEYS}
    return {"run": run_identity(to_dict(sub)), "trainer": trainer, "train": to_dict(sub.train)}


def _step(
    record: StepRecord,
    index: int,
    name: str,
    settings: Mapping[str, Any],
    inputs: Callable[[], list[Path]],
    run: Callable[[], list[Path]],
    force: bool,
    what: str,
) -> bool:
    """Run one step unless its record holds; returns whether it ran."""
    if not force and record.up_to_date(name, settings, inputs()):
        _say(index, name, f"{what}: up to date")
        return False
    _say(index, name, f"{what} ...")
    start = time.perf_counter()
    outputs = run()
    record.record(name, settings, inputs(), outputs, time.perf_counter() - start)
    return True


def map_area(cfg: DictConfig, force: bool = False, overrides: Sequence[str] = ()) -> Path | None:
    """Map an area in one command: acquire, prior, train, predict, products (module doc).

    Args:
        cfg: composed config (``region``, ``acquire``, ``map``, ...).
        force: run every step again, rebuilding its outputs.
        overrides: the overrides ``cfg`` was composed with (the run's configs are composed
            from them plus the map's own: ``region.name``, sizing, prior, splits).

    Returns:
        the products folder, or None for a dry run.

    Raises:
        ConfigError: for bad settings (one line naming the key).
        DataError: when the area has no NAIP coverage or a file is bad.
        DownloadError: one line naming the URL when a transfer fails.
    """
    force = force or bool(cfg.get("force", False))
    given = list(overrides)
    plan = make_plan(cfg, given)
    check_loss_name(cfg)  # before any download: a typo in loss.name fails here, not at training
    check_predict_settings(cfg)
    if bool(cfg.map.get("dry_run", False)) or bool(cfg.acquire.get("dry_run", False)):
        dry_run(cfg, plan, given)
        return None
    from lcip.stages.cooccurrence import cooccurrence
    from lcip.stages.paths import (
        checkpoint_dir,
        checkpoint_file,
        predictions_manifest_path,
        prior_dir,
        prior_layer,
        prior_manifest_path,
        region_manifest_path,
        scheme_of,
    )
    from lcip.stages.predict import predict
    from lcip.stages.prior import cooccurrence_matrix, prior
    from lcip.stages.train import train

    start = time.perf_counter()
    base = compose_config(list(plan.base))
    print(f"lcip-map {plan.name}: products in {plan.out_dir}", flush=True)
    manifest_path = _acquire(base, force)
    manifest = Manifest.read(manifest_path, verify=False)
    _say(1, "acquire", f"{len(manifest)} tiles: {manifest_path}")
    run = run_overrides(plan, given, manifest, base)
    sub = compose_config(run)
    record = StepRecord(plan.out_dir / STEPS_FILE)
    region_files = manifest_files(region_manifest_path(sub))

    def fresh() -> DictConfig:
        return copy.deepcopy(sub)  # stages may change their config (trainer settings)

    coocc_dir = Path(sub.cooccurrence.dir)

    def count() -> list[Path]:
        cooccurrence(fresh(), force)
        return files_under(coocc_dir)

    if plan.cooccurrence == "count":
        _step(
            record,
            2,
            "cooccurrence",
            {"region": to_dict(sub.region), "cooccurrence": to_dict(sub.cooccurrence)},
            lambda: region_files,
            count,
            force,
            table_line(plan.cooccurrence, sub, None),
        )
    else:
        _say(2, "cooccurrence", table_line(plan.cooccurrence, sub, _centre(manifest)))
    matrix = cooccurrence_matrix(fresh())
    prior_name = str(sub.prior.name)
    prior_path = prior_manifest_path(sub)
    prior_settings = {
        "prior": to_dict(sub.prior),
        "region": to_dict(sub.region),
        "cooccurrence": plan.cooccurrence,
        "matrix": [[round(float(v), 9) for v in row] for row in matrix],
        "seed": int(sub.seed),
    }
    _step(
        record,
        3,
        "prior",
        prior_settings,
        lambda: region_files,
        lambda: [Path(prior(fresh(), force)), *files_under(prior_dir(sub))],
        force,
        f"{prior_name} for {len(manifest)} tiles",
    )
    layers = [str(sub.region.image_layer), prior_layer(prior_name)]
    ckpt_dir = checkpoint_dir(sub)

    def train_run() -> list[Path]:
        train(fresh(), force, overrides=run)
        return files_under(ckpt_dir)

    _step(
        record,
        4,
        "train",
        _train_settings(sub),
        lambda: manifest_files(prior_path, layers),
        train_run,
        force,
        f"{sub.loss.name} on all {len(manifest)} tiles ({plan.device}: {sub.data.steps_per_epoch} "
        f"steps x {sub.trainer.max_epochs} epochs, crops of {sub.data.crop_size} px)",
    )
    pred_path = predictions_manifest_path(sub)
    pred_settings = {"run": _train_settings(sub)["run"], "predict": to_dict(sub.predict)}

    def predict_inputs() -> list[Path]:
        return [checkpoint_file(sub), *manifest_files(prior_path, layers)]

    _step(
        record,
        5,
        "predict",
        pred_settings,
        predict_inputs,
        lambda: [Path(predict(fresh(), force)), *files_under(pred_path.parent)],
        force,
        f"q and r of {len(manifest)} tiles",
    )
    from lcip.products import make_products

    zones = str(cfg.map.zones) if cfg.map.get("zones") else None
    product_settings = {
        "zones": zones,
        "zones_id": cfg.map.get("zones_id"),
        "mosaic": bool(cfg.map.get("mosaic", False)),
        "output": str(cfg.map.get("output", "r")),
        "confidence": str(cfg.map.get("confidence", "max")),
        "screenshot": bool(cfg.map.get("screenshot", False)),
        "prior": prior_name,
        "scheme": str(sub.region.scheme),
    }

    def products_inputs() -> list[Path]:
        return [*manifest_files(pred_path), *([Path(zones)] if zones else [])]

    def products_run() -> list[Path]:
        made = make_products(
            Manifest.read(pred_path),
            scheme_of(sub),
            plan.out_dir,
            zones=Path(zones) if zones else None,
            zones_id=product_settings["zones_id"],
            mosaic=product_settings["mosaic"],
            output=product_settings["output"],
            confidence=product_settings["confidence"],
            imagery_layer=str(sub.region.image_layer),
            prior_layer=prior_layer(prior_name),
            force=force,
        )
        if product_settings["screenshot"]:  # the page as a PNG (README figures)
            from lcip.products.screenshot import render_page

            render_page(made["html"], plan.out_dir / "index.png")
        return [*made.values(), *files_under(plan.out_dir, exclude=[record.path])]

    _step(
        record,
        6,
        "products",
        product_settings,
        products_inputs,
        products_run,
        force,
        f"maps, areas and index.html in {plan.out_dir}",
    )
    print(
        f"lcip-map {plan.name}: done in {time.perf_counter() - start:.0f} s; open "
        f"{plan.out_dir / 'index.html'} (or class.vrt in QGIS)",
        flush=True,
    )
    return plan.out_dir


__all__ = [
    "STEPS",
    "STEPS_FILE",
    "Estimate",
    "MapPlan",
    "StepRecord",
    "choose_prior",
    "cooccurrence_plan",
    "dry_run",
    "estimate",
    "files_under",
    "fingerprint",
    "make_plan",
    "manifest_files",
    "map_area",
    "map_name",
    "override_key",
    "run_overrides",
    "sizing_device",
    "sizing_overrides",
    "slug",
    "table_line",
    "unless_given",
]
