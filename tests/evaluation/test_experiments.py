"""Every experiment config fits 2 steps on generated data shaped like its region.

One set of tiny tiles per region shape (chesapeake4: NAIP, 1 m labels, NLCD codes on the 1 m
grid, a buildings raster; enviroatlas5: raw EnviroAtlas codes, NLCD indices, roads /
waterways / water bodies / buildings rasters), listed by a manifest in every place a real
region's prior manifest would be, so each experiment runs exactly as configured (its loss,
prior, splits, input layers, warm start), only with a tiny model and 2 steps. Experiments
that differ only in their region (NY / PA, the four cities) are one *kind*: one of each kind
fits in the default run, every one of them with ``pytest -m slow`` (tests/test_configs.py
composes each config in the default run).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from lcip.classes import get_scheme
from lcip.config import compose_config
from lcip.evaluation.experiments import EXPERIMENTS, commands, paper_settings
from lcip.io.manifest import Manifest, Tile
from lcip.io.raster import write_raster
from lcip.priors.cooccurrence import count_cooccurrence
from lcip.stages.paths import prior_manifest_path, scheme_of
from lcip.stages.train import train
from scripts.make_lcip_variants import SUFFIX, base_experiments, variant_text
from tests.conftest import make_grid
from tests.paths import ROOT

SIZE = 64
PAPER = sorted(p.stem for p in EXPERIMENTS.glob("*.yaml") if paper_settings(p.stem))


def _kind(name: str) -> str:
    """What an experiment trains, region aside: experiments of one kind differ in region only.

    (Same loss, prior, inputs, splits and init on data of the same shape: the HR rows of
    Pittsburgh, which train on its labelled tiles, are a kind apart from the other cities'.)
    """
    name = name.removesuffix(SUFFIX)  # a paper experiment's lcip-recipe variant: the same kind
    parts = name.split("_")
    if parts[0] == "chesapeake":
        return "_".join(["chesapeake", *parts[2:]])
    if parts[0] == "enviroatlas":
        home = "pittsburgh_" if parts[1] == "pittsburgh" and parts[3].startswith("hr") else ""
        return "_".join(["enviroatlas", home + "_".join(parts[3:])])
    return "chesapeake_qr" if name == "lr_sweep" else name


#: One experiment of each kind fits in the default run (the paper's recipe, and one QR with
#: lcip's), all of them with ``-m slow``.
KINDS = {_kind(n): n for n in reversed(PAPER) if not n.endswith(SUFFIX)}
KINDS["chesapeake_qr_lcip"] = "chesapeake_ny_qr_lcip"
FITS = [pytest.param(n, marks=() if n in KINDS.values() else pytest.mark.slow, id=n) for n in PAPER]
#: Regions the experiments name (read from the files: composing every config takes seconds).
REGIONS = sorted(
    {
        line.split(":", 1)[1].strip()
        for p in EXPERIMENTS.glob("*.yaml")
        for line in p.read_text().splitlines()
        if line.strip().startswith("- override /region:")
    }
)
SHAPES = {
    "chesapeake4": {
        "labels": [1, 2, 3, 4, 5, 6],
        "nlcd": ("codes", [11, 21, 22, 41, 82]),
        "rasters": ["buildings"],
        "splits": ["train", "val", "test"],
    },
    "enviroatlas5_raw": {
        "labels": [10, 20, 30, 40, 52, 70, 80, 82, 91, 92],
        "nlcd": ("index", [1, 3, 4, 8, 14]),
        "rasters": ["roads", "waterways", "waterbodies", "buildings"],
        "splits": ["train", "val", "test", "val5"],
    },
}
PRIORS = ("nlcd", "fused", "learned")


def _write_tiles(root: Path, shape: str) -> list[Tile]:
    """One tile per split: the layers of a region of this shape, and every prior's raster."""
    spec = SHAPES[shape]
    scheme = get_scheme(shape)
    tiles = []
    for i, split in enumerate(spec["splits"]):
        rng = np.random.default_rng(i)
        grid = make_grid(SIZE, origin=(400_000.0 + 100 * i, 4_300_000.0))
        blocks = rng.choice(spec["nlcd"][1], size=(4, 4))
        nlcd = np.kron(blocks, np.ones((30, 30), np.uint8))[7 : 7 + SIZE, 11 : 11 + SIZE]
        labels = rng.choice(spec["labels"], size=(SIZE // 8, SIZE // 8))
        lc = np.kron(labels, np.ones((8, 8), np.uint8)).astype(np.uint8)
        classes = scheme.map_labels(lc, for_prior=True)
        naip = (classes[None] * 40 + rng.integers(0, 30, (4, SIZE, SIZE))).astype(np.uint8)
        layers = {
            "naip": write_raster(root / f"naip_{split}.tif", naip, grid),
            "lc": write_raster(root / f"lc_{split}.tif", lc, grid, nodata=0),
            "nlcd": write_raster(root / f"nlcd_{split}.tif", nlcd.astype(np.uint8), grid),
        }
        for name in spec["rasters"]:
            layer = (rng.random((SIZE, SIZE)) < 0.1).astype(np.uint8)
            layers[name] = write_raster(root / f"{name}_{split}.tif", layer, grid)
        for prior in PRIORS:
            p = rng.random((scheme.num_classes, SIZE, SIZE)).astype(np.float32)
            p /= p.sum(axis=0)
            layers[f"prior_{prior}"] = write_raster(root / f"prior_{prior}_{split}.tif", p, grid)
        tiles.append(Tile(f"t_{split}", split, grid.crs.to_string(), grid.bounds, layers))
    return tiles


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Generated regions for every region an experiment names (one set of tiles per shape)."""
    root = tmp_path_factory.mktemp("experiments")
    tiles = {shape: _write_tiles(root / "tiles" / shape, shape) for shape in SHAPES}
    for region in REGIONS:
        cfg = compose_config([f"region={region}", f"paths.root={root}"])
        scheme = scheme_of(cfg)
        shape = "chesapeake4" if scheme.name == "chesapeake4" else "enviroatlas5_raw"
        manifest = Manifest(tuple(tiles[shape]))
        for prior in PRIORS:
            cfg.prior.name = prior
            manifest.write(prior_manifest_path(cfg))
        coocc = count_cooccurrence(  # (uniform columns for unseen NLCD codes: warns)
            manifest.select(list(cfg.region.train_splits)),
            scheme,
            nlcd_layer="nlcd",
            nlcd_encoding=SHAPES[shape]["nlcd"][0],
            progress=False,
        )
        coocc.write(cfg.cooccurrence.dir)
    return root


def _overrides(name: str, root: Path) -> list[str]:
    return [
        f"experiment={name}",
        f"paths.root={root}",
        "trainer=cpu",
        "trainer.max_epochs=1",
        "trainer.enable_progress_bar=false",
        "trainer.log_every_n_steps=1",
        "+trainer.num_sanity_val_steps=0",
        "model.num_filters=4",
        "model.num_layers=1",
        "data.crop_size=32",
        "data.batch_size=2",
        "data.steps_per_epoch=2",
        f"data.val_crop_size={SIZE}",
        "data.num_workers=0",
        "data.cache=true",
        "task.warmup_steps=1",
        "callbacks.last_checkpoint.every_n_steps=0",
    ]


def _fit(name: str, root: Path) -> Path:
    cfg = compose_config(_overrides(name, root))
    last = train(cfg, force=True)
    ckpt = torch.load(last, map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 2
    assert ckpt["hyper_parameters"]["loss"] == cfg.loss.name
    return last


@pytest.fixture(scope="module")
def pittsburgh_hr(root: Path) -> Path:
    """The HR Pittsburgh model the "pittsburgh" init experiments warm-start from."""
    return _fit("enviroatlas_pittsburgh_pa_hr", root)


def test_every_published_row_has_an_experiment_and_the_readme_lists_it() -> None:
    from scripts.readme_experiments import published_rows, row_id, table

    rows = published_rows()
    claimed: dict[str, str] = {}
    for name in PAPER:
        if name.endswith(SUFFIX):  # lcip-recipe variants claim their experiment's rows too
            assert set(paper_settings(name)["published"]) == set(
                paper_settings(name.removesuffix(SUFFIX))["published"]
            )
            continue
        for rid in paper_settings(name)["published"]:
            assert rid not in claimed, f"{rid} claimed by {claimed.get(rid)} and {name}"
            claimed[rid] = name
    ids = {row_id(r) for r in rows}
    assert set(claimed) <= ids  # every id names a published row
    missing = sorted(ids - set(claimed))
    # only the full-US U-Net rows (a model trained on all of the US) are not reproduced
    assert missing and all("/unet_large_full_us/" in m for m in missing), missing
    # README's table is the one the script writes
    readme = (ROOT / "README.md").read_text()
    assert table() in readme
    assert "`make experiment EXP=enviroatlas_durham_nc_qr_fused_pittsburgh`" in table()


def test_experiment_commands() -> None:
    assert commands("chesapeake_nypa_qr", ["optimizer.lr=1e-3"])[2] == [
        "lcip-train",
        "-m",
        "experiment=chesapeake_nypa_qr",
        "optimizer.lr=1e-3",
    ]
    assert [c[0] for c in commands("enviroatlas_austin_tx_hr", [])] == [
        "lcip-predict",
        "lcip-evaluate",
    ]
    assert [c[0] for c in commands("chesapeake_ny_self_epitomic_lsr", [])][1] == "lcip-epitome"
    nypa = compose_config(["experiment=chesapeake_nypa_qr"])
    ny = compose_config(["experiment=chesapeake_ny_qr"])
    assert nypa.run_dir == ny.run_dir and nypa.paper.pooled == ["chesapeake_ny", "chesapeake_pa"]
    sweep = compose_config(["experiment=lr_sweep", "optimizer.lr=0.001"])
    assert sweep.run_name == "qr_lr0.001"


@pytest.mark.parametrize("name", FITS)
def test_experiment_fits_two_steps(name: str, root: Path, request: pytest.FixtureRequest) -> None:
    cfg = compose_config(_overrides(name, root))
    stages = paper_settings(name).get("stages") or ["train"]
    if "train" not in stages and "predict" not in stages:  # no network (lcip-epitome)
        assert str(cfg.predict.out_dir) == str(cfg.epitome.out_dir)
        return
    if cfg.task.init_from:
        request.getfixturevalue("pittsburgh_hr")
    _fit(name, root)


def test_paper_settings_and_clear_errors(root: Path) -> None:
    from lcip.errors import ConfigError

    qr = compose_config(["experiment=enviroatlas_durham_nc_qr_fused_pittsburgh"])
    rq = compose_config(["experiment=enviroatlas_durham_nc_rq_fused_pittsburgh"])
    assert (qr.optimizer.lr, rq.optimizer.lr) == (
        1e-5,
        1e-3,
    )  # the paper's rates from the Pittsburgh init
    assert qr.task.init_from.endswith("enviroatlas_pittsburgh_pa/hr/checkpoints/best.ckpt")
    ny = compose_config(["experiment=chesapeake_ny_qr"])
    assert list(ny.data.train_splits) == list(ny.region.eval_splits)  # transductive
    aux = _overrides("enviroatlas_pittsburgh_pa_hr_aux", root)
    with pytest.raises(ConfigError, match=r"model\.in_channels=4: the data has 9 input bands"):
        train(compose_config([*aux, "model.in_channels=4"]), force=True)
    lsr = _overrides("chesapeake_ny_lsr", root)
    with pytest.raises(ConfigError, match=r"loss\.statistics=.*no LSR statistics"):
        train(compose_config([*lsr, "loss.statistics=/nowhere/lsr.json"]), force=True)


def test_hr_aux_predicts_with_its_extra_bands(root: Path) -> None:
    from lcip.io.manifest import Manifest
    from lcip.io.raster import Grid
    from lcip.stages.predict import predict

    name = "enviroatlas_pittsburgh_pa_hr_aux"
    _fit(name, root)
    cfg = compose_config([*_overrides(name, root), "predict.checkpoint=last"])
    assert len(cfg.data.layers.extra) == 1 and cfg.model.in_channels == 9
    manifest = Manifest.read(predict(cfg, force=True))
    assert len(manifest) > 0
    for tile in manifest:
        grid = Grid.of(tile.layer("q_class"))
        assert grid.same_as(Grid.of(tile.layer(cfg.region.image_layer)))


#: The training recipe: what paper_recipe.yaml / lcip_recipe.yaml set.
RECIPE = (
    "model.batch_norm",
    "optimizer",
    "scheduler",
    "task.monitor",
    "task.warmup_steps",
    "callbacks",
    "predict.checkpoint",
)


def _recipe(cfg: object) -> dict[str, object]:
    from omegaconf import OmegaConf

    return {
        k: OmegaConf.to_object(OmegaConf.select(cfg, k))
        if k in ("optimizer", "scheduler", "callbacks")
        else OmegaConf.select(cfg, k)
        for k in RECIPE
    }  # type: ignore[arg-type]


def test_paper_experiments_pin_the_paper_recipe_and_variants_use_lcips() -> None:
    defaults = _recipe(compose_config([]))
    assert defaults == _recipe(compose_config(["experiment=lcip_recipe"]))
    assert defaults["predict.checkpoint"] == "last"
    assert defaults["scheduler"]["_target_"] == "lcip.training.schedulers.CosineDecay"
    assert defaults["callbacks"]["early_stopping"] is None
    ny = compose_config(["experiment=chesapeake_ny_qr"])
    paper = _recipe(ny)
    assert paper["optimizer"]["lr"] == 1e-4 and paper["model.batch_norm"] is False
    assert paper["scheduler"] == {
        "_target_": "torch.optim.lr_scheduler.ReduceLROnPlateau",
        "_partial_": True,
        "mode": "min",
        "factor": 0.5,
        "patience": 3,
    }
    assert paper["callbacks"]["early_stopping"] == {
        "_target_": "lightning.pytorch.callbacks.EarlyStopping",
        "monitor": "val/loss",
        "patience": 6,
        "mode": "min",
    }
    assert paper["callbacks"]["collapse_guard"] == defaults["callbacks"]["collapse_guard"]
    assert (paper["task.monitor"], paper["task.warmup_steps"]) == ("val/loss", None)
    assert paper["predict.checkpoint"] == "best"
    assert ny.model.num_filters == 128 and ny.data.batch_size == 128
    for name in ("paper_qr", "enviroatlas_phoenix_az_rq_fused"):
        scheduler = _recipe(compose_config([f"experiment={name}"]))["scheduler"]
        assert scheduler["_target_"].endswith("ReduceLROnPlateau")
    # a variant: lcip's recipe, everything else (region, data, sizes, loss) the paper's
    lcip = compose_config(["experiment=chesapeake_ny_qr_lcip"])
    assert _recipe(lcip) == defaults and lcip.run_name == "qr_transductive_lcip"
    for key in ("region", "data", "loss", "prior"):
        assert lcip[key] == ny[key], key
    assert lcip.trainer.max_epochs == ny.trainer.max_epochs and lcip.trainer.accelerator == "gpu"
    assert lcip.model.num_filters == ny.model.num_filters
    # a warm start keeps the paper's fine-tuning rate and starts from the lcip HR model
    warm = compose_config(["experiment=enviroatlas_durham_nc_qr_fused_pittsburgh_lcip"])
    assert warm.optimizer.lr == 1e-5 and warm.predict.checkpoint == "last"
    assert warm.task.init_from.endswith("enviroatlas_pittsburgh_pa/hr_lcip/checkpoints/last.ckpt")
    hr = compose_config(["experiment=enviroatlas_austin_tx_hr_lcip"])
    assert hr.predict.checkpoint.endswith("enviroatlas_pittsburgh_pa/hr_lcip/checkpoints/last.ckpt")


def test_every_network_experiment_has_its_generated_variant() -> None:
    names = base_experiments()
    assert "chesapeake_ny_qr" in names and "chesapeake_ny_self_epitomic_lsr" not in names
    for name in names:
        path = EXPERIMENTS / f"{name}{SUFFIX}.yaml"
        assert path.read_text() == variant_text(name), f"run scripts/make_lcip_variants.py: {path}"
    variants = {p.stem for p in EXPERIMENTS.glob(f"*{SUFFIX}.yaml")}
    assert variants == {f"{n}{SUFFIX}" for n in names}
