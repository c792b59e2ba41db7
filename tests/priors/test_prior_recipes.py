"""Prior recipes: registry dispatch, the rasters each recipe writes, and when tiles are rebuilt.

Every recipe runs on a tiny generated region (2 x 2 tiles of 128 px). A tile is rebuilt
exactly when its parameters or one of its input files changed, or when ``force`` is set;
rebuilds are checked on the files themselves (inode and mtime), not only in the report.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import rasterio

from lcip.classes import CHESAPEAKE4
from lcip.errors import ConfigError
from lcip.io.manifest import Manifest
from lcip.io.provenance import PROVENANCE_TAG, fingerprint
from lcip.io.raster import Grid
from lcip.priors import learned, recipes
from lcip.priors.build import TileResult, write_prior
from lcip.priors.recipes import MODEL_FILE, RECIPES, PriorRequest, build_prior, register_recipe
from lcip.synthetic import RegionConfig, generate_region

NLCD: dict[str, Any] = {
    "name": "nlcd",
    "recipe": "nlcd",
    "sigma_m": 31.0,
    "truncate": 4.0,
    "smoothing": 1e-4,
}
FUSED: dict[str, Any] = {
    **NLCD,
    "name": "fused",
    "recipe": "fused",
    "radius_m": {"buildings": 4.0, "roads": 4.0, "waterways": 2.0, "waterbodies": 2.0},
    "weights": {"buildings": 1.0, "roads": 1.0, "waterways": 1.0, "waterbodies": 1.0},
}
LEARNED: dict[str, Any] = {
    **NLCD,
    "name": "learned",
    "recipe": "learned",
    "train_tiles": 5,
    "train_tile_ids": None,
    "training": {
        "steps": 4,
        "batch_size": 4,
        "crop_size": 32,
        "lr": 1e-3,
        "model": {"_target_": "lcip.training.models.FCN", "num_filters": 8, "kernel_sizes": [5, 3]},
    },
}
SETTINGS = {"nlcd": NLCD, "fused": FUSED, "learned": LEARNED}

#: The input files each recipe's rasters record (name -> manifest layer, or a path under the
#: region folder for the learned prior's intermediate layers).
INPUTS = {
    "nlcd": {"image": "naip", "nlcd": "nlcd_30m"},
    "fused": {"image": "naip", "nlcd": "nlcd_30m", "osm": "osm", "buildings": "buildings"},
    "learned": {"prior_nlcd_input": "priors/nlcd_input", "vectors": "vectors"},
}

Stamps = dict[str, tuple[int, int, bytes]]


def _generate(root: Path, seed: int = 0) -> Path:
    cfg = RegionConfig(name="tiny", seed=seed, tiles_x=2, tiles_y=2, tile_size=128)
    return generate_region(cfg, root)


def _request(
    root: Path, matrix: npt.NDArray[np.float64], settings: dict[str, Any], **kwargs: Any
) -> PriorRequest:
    return PriorRequest(
        manifest=Manifest.read(root / "manifest.csv"),
        scheme=CHESAPEAKE4,
        region_dir=root,
        out_dir=root / "priors" / str(settings["name"]),
        cooccurrence=matrix,
        settings=settings,
        nlcd_layer="nlcd_30m",
        **kwargs,
    )


def _stamps(folder: Path) -> Stamps:
    """Every raster (and checkpoint) under a folder: inode, mtime and contents."""
    files = [*folder.glob("*.tif"), *folder.glob(MODEL_FILE)]
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns, p.read_bytes()) for p in files}


def _rewritten(before: Stamps, after: Stamps) -> set[str]:
    """Files whose inode or mtime changed (atomic writes give new inodes)."""
    assert set(before) == set(after)
    return {n for n in before if before[n][:2] != after[n][:2]}


def _counts(out_dir: Path) -> dict[str, int]:
    counts: dict[str, int] = json.loads((out_dir / "report.json").read_text())["counts"]
    return counts


# --- registry ----------------------------------------------------------------------------


def test_builtin_recipes_are_registered() -> None:
    assert {"nlcd", "fused", "learned", "published"} <= set(RECIPES)
    assert RECIPES["nlcd"] is recipes.nlcd_recipe
    with pytest.raises(ValueError, match="'nlcd' is already registered"):
        register_recipe("nlcd")(lambda request: [])


def test_unknown_recipe_is_a_one_line_config_error(
    region: Path, template: tuple[Path, npt.NDArray[np.float64]]
) -> None:
    request = _request(region, template[1], {**NLCD, "recipe": "bogus"})
    with pytest.raises(ConfigError) as info:
        build_prior(request)
    message = str(info.value)
    assert "\n" not in message and message.startswith("prior.recipe='bogus'")
    assert "['fused', 'learned', 'nlcd', 'published']" in message
    assert not request.out_dir.exists()


def test_custom_recipe_is_dispatched(
    region: Path, template: tuple[Path, npt.NDArray[np.float64]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(recipes, "RECIPES", dict(RECIPES))
    calls: list[PriorRequest] = []

    @register_recipe("uniform")
    def uniform(request: PriorRequest) -> list[TileResult]:
        calls.append(request)
        tile = request.manifest.tiles[0]
        grid = Grid.of(tile.layer(request.image_layer))
        prior = np.full((4, *grid.shape), 0.25, np.float32)
        path = request.out_dir / f"{tile.tile_id}.tif"
        write_prior(path, prior, np.ones(grid.shape, bool), grid, request.scheme, {})
        skipped = [TileResult(t.tile_id, "no_valid", None, 0.0, 0.0) for t in request.manifest]
        return [TileResult(tile.tile_id, "written", str(path), 1.0, 0.0), *skipped[1:]]

    request = _request(region, template[1], {"name": "flat", "recipe": "uniform"})
    path = build_prior(request)
    assert calls == [request] and "uniform" not in RECIPES  # the module's registry only
    out = Manifest.read(path)
    assert path == request.out_dir / "manifest.csv"
    assert [t.tile_id for t in out] == ["r0c0"]
    assert out.tiles[0].layer("prior_flat") == request.out_dir / "r0c0.tif"
    assert out.tiles[0].layer("naip") == request.manifest.tiles[0].layer("naip")
    report = json.loads((request.out_dir / "report.json").read_text())
    assert (report["recipe"], report["prior"]) == ("uniform", "flat")
    assert report["counts"] == {"written": 1, "skipped": 0, "no_valid": 3}


def test_learned_training_settings_are_checked_first(
    region: Path, template: tuple[Path, npt.NDArray[np.float64]]
) -> None:
    training = {k: v for k, v in LEARNED["training"].items() if k != "lr"}
    request = _request(region, template[1], {**LEARNED, "training": training})
    with pytest.raises(ConfigError, match=r"^prior\.training: missing \['lr'\]"):
        build_prior(request)
    flat = {k: v for k, v in LEARNED.items() if k != "training"}  # the old layout
    with pytest.raises(ConfigError, match=r"^prior\.training: missing"):
        build_prior(_request(region, template[1], {**flat, **LEARNED["training"]}))
    assert not (region / "vectors").exists()  # nothing was built


# --- what each recipe writes -------------------------------------------------------------


@pytest.mark.parametrize("recipe", ["nlcd", "fused", "learned"])
def test_build_prior_writes_priors_on_the_imagery_grid(
    recipe: str, region: Path, template: tuple[Path, npt.NDArray[np.float64]]
) -> None:
    request = _request(region, template[1], SETTINGS[recipe])
    path = build_prior(request)
    out = Manifest.read(path)
    assert [t.tile_id for t in out] == [t.tile_id for t in request.manifest]
    assert _counts(request.out_dir) == {"written": 4, "skipped": 0, "no_valid": 0}
    for tile in out:
        raster = tile.layer(f"prior_{recipe}")
        assert raster == request.out_dir / f"{tile.tile_id}.tif"
        assert Grid.of(raster) == Grid.of(tile.layer("naip"))
        with rasterio.open(raster) as src:
            assert src.count == 4 and src.dtypes == ("float32",) * 4
            assert src.descriptions == CHESAPEAKE4.classes
            tags = src.tags()
            prior = src.read()
        finite = np.isfinite(prior)
        valid = finite.all(0)
        assert (finite == valid).all()  # NaN in every band or in none
        assert valid.mean() > 0.9 and np.isnan(prior[:, ~valid]).all()
        np.testing.assert_allclose(prior[:, valid].sum(0), 1.0, atol=1e-5)
        assert prior[:, valid].min() >= 0
        record = json.loads(tags[PROVENANCE_TAG])
        assert tags["recipe"] == recipe and record["params"]["recipe"] == recipe
        expected = {
            name: fingerprint(
                tile.layer(layer)
                if layer in tile.layers
                else region / layer / f"{tile.tile_id}.tif"
            )
            for name, layer in INPUTS[recipe].items()
        }
        assert record["inputs"] == expected
    if recipe == "learned":
        assert (request.out_dir / MODEL_FILE).exists()
        assert "model_digest" in record["params"] and record["params"]["train_tiles"] == ["r0c0"]
    if recipe in ("fused", "learned"):
        vectors = Grid.of(region / "vectors" / "r1c1.tif")
        assert vectors == Grid.of(request.manifest.tile("r1c1").layer("naip"))
        with rasterio.open(region / "vectors" / "r1c1.tif") as src:
            record = json.loads(src.tags()[PROVENANCE_TAG])
        assert set(record["inputs"]) == {"image", "osm", "buildings"}
        assert record["inputs"]["buildings"] == fingerprint(region / "buildings.geojson")


# --- when tiles are rebuilt --------------------------------------------------------------


def _replace_buildings(root: Path) -> None:
    """Drop every other building footprint (different content, same file)."""
    path = root / "buildings.geojson"
    data = json.loads(path.read_text())
    data["features"] = data["features"][::2]
    path.write_text(json.dumps(data))


@pytest.mark.parametrize("recipe", ["nlcd", "fused", "learned"])
def test_tiles_are_rebuilt_exactly_when_inputs_or_parameters_change(
    recipe: str, region: Path, template: tuple[Path, npt.NDArray[np.float64]]
) -> None:
    matrix = template[1]
    settings = SETTINGS[recipe]
    out_dir = region / "priors" / recipe
    folders = {"prior": out_dir, "vectors": region / "vectors"}

    def build(settings: dict[str, Any] = settings, **kwargs: Any) -> dict[str, Stamps]:
        build_prior(_request(region, matrix, settings, **kwargs))
        return {k: _stamps(f) for k, f in folders.items()}

    first = build()
    assert len(first["prior"]) == 4 + (recipe == "learned")
    assert len(first["vectors"]) == (0 if recipe == "nlcd" else 4)

    # (a) nothing changed: every file is kept, the report says skipped
    again = build()
    assert again == first and _counts(out_dir)["skipped"] == 4

    # (d) force: every file is rewritten (the learned prior is retrained)
    forced = build(force=True)
    assert _rewritten(again["prior"], forced["prior"]) == set(again["prior"])
    assert _rewritten(again["vectors"], forced["vectors"]) == set(again["vectors"])
    assert _counts(out_dir)["written"] == 4

    # (e) a changed parameter: every prior is rebuilt, with other contents
    smoother = build({**settings, "smoothing": 0.05})
    rebuilt = _rewritten(forced["prior"], smoother["prior"])
    assert rebuilt == set(forced["prior"])  # learned: its NLCD input changed, so retrained
    assert all(forced["prior"][n][2] != smoother["prior"][n][2] for n in rebuilt)
    assert smoother["vectors"] == forced["vectors"]

    # (b) other building footprints: the fused and learned priors and the vector layers are
    # rebuilt; the NLCD prior does not read them and is kept
    _replace_buildings(region)
    buildings = build({**settings, "smoothing": 0.05})
    changed = _rewritten(smoother["prior"], buildings["prior"])
    assert changed == (set() if recipe == "nlcd" else set(smoother["prior"]))
    assert _rewritten(smoother["vectors"], buildings["vectors"]) == set(smoother["vectors"])
    if recipe != "nlcd":
        old, new = smoother["vectors"], buildings["vectors"]
        assert any(old[n][2] != new[n][2] for n in old)  # fewer buildings rasterized

    # (c) the region regenerated with another seed: every file is rebuilt
    _generate(region, seed=1)
    reseeded = build({**settings, "smoothing": 0.05})
    assert _rewritten(buildings["prior"], reseeded["prior"]) == set(buildings["prior"])
    assert all(buildings["prior"][n][2] != reseeded["prior"][n][2] for n in reseeded["prior"])
    assert _rewritten(buildings["vectors"], reseeded["vectors"]) == set(buildings["vectors"])


@pytest.fixture
def count_training(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Record each training of the learned prior's network (by its first tile id)."""
    calls: list[str] = []
    train: Callable[..., Any] = learned.train_learned_prior

    def spy(manifest: Manifest, tile_ids: list[str], *args: Any, **kwargs: Any) -> Any:
        calls.append(tile_ids[0])
        return train(manifest, tile_ids, *args, **kwargs)

    monkeypatch.setattr(learned, "train_learned_prior", spy)
    yield calls


def test_learned_network_is_retrained_only_when_its_training_changes(
    region: Path, template: tuple[Path, npt.NDArray[np.float64]], count_training: list[str]
) -> None:
    out_dir = region / "priors" / "learned"
    build_prior(_request(region, template[1], LEARNED))
    first = _stamps(out_dir)
    assert count_training == ["r0c0"]
    # same training inputs: the saved network is reused, no prior is rewritten
    build_prior(_request(region, template[1], LEARNED))
    assert count_training == ["r0c0"] and _stamps(out_dir) == first
    # another schedule: retrained, so every prior changes
    longer = {**LEARNED, "training": {**LEARNED["training"], "steps": 6}}
    build_prior(_request(region, template[1], longer))
    second = _stamps(out_dir)
    assert count_training == ["r0c0", "r0c0"]
    assert _rewritten(first, second) == set(first)
    # a stale or foreign checkpoint is never loaded: it is retrained and overwritten
    (out_dir / MODEL_FILE).write_bytes(b"not a checkpoint")
    build_prior(_request(region, template[1], longer))
    assert count_training == ["r0c0"] * 3
    assert _stamps(out_dir)[MODEL_FILE][2] == second[MODEL_FILE][2]  # training is seeded
    assert _counts(out_dir)["skipped"] == 4  # same weights: same priors
