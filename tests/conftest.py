"""Shared fixtures: tiny seeded fake tiles written as realistic GeoTIFFs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from affine import Affine
from rasterio.crs import CRS

from lcip.classes import CHESAPEAKE4
from lcip.io.manifest import Manifest, Tile
from lcip.io.raster import Grid, write_raster
from tests.httpserver import loopback  # noqa: F401 (a fixture for every test module)
from tests.markers import REQUIRE_REALDATA
from tests.paths import REALDATA

CRS_UTM = CRS.from_epsg(32618)


def make_grid(
    size: int = 96, origin: tuple[float, float] = (400000.0, 4300000.0), width: int | None = None
) -> Grid:
    """A 1 m UTM grid with its top-left corner at ``origin``."""
    return Grid(CRS_UTM, Affine(1.0, 0, origin[0], 0, -1.0, origin[1]), size, width or size)


def write_fake_tile(
    root: Path,
    tile_id: str,
    grid: Grid,
    split: str,
    seed: int,
    nodata_rows: int = 0,
) -> Tile:
    """Write naip (uint8 x4), lc (codes 1..6, 0 nodata) and prior (float32 C bands, NaN nodata).

    The imagery is a noisy function of the label so that a network can learn it; the prior is a
    softened, partly wrong version of the label.
    """
    rng = np.random.default_rng(seed)
    h, w = grid.shape
    coarse = rng.integers(1, 7, size=(h // 16 + 1, w // 16 + 1))
    lc = np.kron(coarse, np.ones((16, 16), dtype=np.int64))[:h, :w].astype(np.uint8)
    classes = CHESAPEAKE4.map_labels(lc)
    means = np.array(
        [[40, 60, 90, 20], [50, 90, 50, 160], [110, 150, 90, 190], [150, 140, 135, 110]]
    )
    naip = means[np.minimum(classes, 3)].transpose(2, 0, 1) + rng.normal(0, 12, size=(4, h, w))
    naip = np.clip(naip, 0, 255).astype(np.uint8)
    prior = np.full((4, h, w), 0.1, dtype=np.float32)
    noisy = np.where(rng.random((h, w)) < 0.3, rng.integers(0, 4, size=(h, w)), classes)
    np.put_along_axis(prior, noisy[None].astype(np.int64), 0.7, axis=0)
    if nodata_rows:
        prior[:, :nodata_rows] = np.nan
        lc[:nodata_rows] = 0
    layers = {}
    for name, data, nodata in (("naip", naip, None), ("lc", lc, 0), ("prior", prior, float("nan"))):
        path = root / name / f"{tile_id}.tif"
        write_raster(path, data, grid, nodata=nodata)
        layers[name] = path
    return Tile(tile_id, split, grid.crs.to_string(), grid.bounds, layers)


@pytest.fixture
def fake_region(tmp_path: Path) -> Manifest:
    """Four 96 px tiles (2 train, 1 val, 1 test) with a manifest on disk."""
    tiles = []
    for i, split in enumerate(["train", "train", "val", "test"]):
        grid = make_grid(96, origin=(400000.0 + 96 * i, 4300000.0))
        tiles.append(
            write_fake_tile(tmp_path, f"t{i}", grid, split, seed=i, nodata_rows=8 if i == 1 else 0)
        )
    path = Manifest(tuple(tiles)).write(tmp_path / "manifest.csv")
    return Manifest.read(path)


def pytest_sessionstart(session: pytest.Session) -> None:
    """Stop at once, in one line, when CI's real sample data is missing (no silent skips)."""
    import os

    if os.environ.get(REQUIRE_REALDATA) and not (REALDATA / "README.md").is_file():
        raise pytest.UsageError(
            f"{REQUIRE_REALDATA} is set but {REALDATA}/README.md does not exist: the real-data "
            "tests would skip (clone lcip beside ../shared, or unset it)"
        )


#: The slowest modules, slowest first (seconds with one torch thread on the 2-core VM:
#: 115, 65, 35, 30, 25, 20, 15), started first when pytest-xdist spreads whole modules over
#: its workers (``make test``: ``-n 2 --dist loadfile``), so that none is left to run alone
#: at the end while the other worker idles.
SLOW_MODULES = (
    "tests/stages/test_realdata_learning.py",
    "tests/stages/test_train_stage.py",
    "tests/stages/test_e2e.py",
    "tests/evaluation/test_experiments.py",
    "tests/data/test_ddp_sampling.py",
    "tests/io/test_outputs_scale.py",
    "tests/test_docs.py",
)


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist, give each worker its share of the cores (torch and subprocesses).

    Two torch threads per process with two processes on two cores run slower than one: every
    OpenMP parallel region waits for a thread that the other process keeps off its core (the
    real-data training test: ~200 s instead of ~110 s). ``OMP_NUM_THREADS``, when set, wins.
    """
    import os

    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers < 2 or "OMP_NUM_THREADS" in os.environ:
        return
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    threads = max(1, (cores or 1) // workers)
    os.environ["OMP_NUM_THREADS"] = str(threads)  # the console scripts the tests start
    import torch

    torch.set_num_threads(threads)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """In a pytest-xdist worker, move :data:`SLOW_MODULES` first (the rest keep their order)."""
    if not hasattr(config, "workerinput"):
        return
    first = {module: i for i, module in enumerate(SLOW_MODULES)}
    items.sort(key=lambda item: first.get(item.nodeid.split("::")[0], len(first)))


@pytest.fixture(autouse=True, scope="session")
def _user_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Keep lcip's user cache (verification records of read-only folders) inside the test run."""
    import os

    os.environ["LCIP_CACHE"] = str(tmp_path_factory.mktemp("lcip-cache"))


@pytest.fixture(scope="session")
def template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    """A generated 2 x 2 region of 128 px tiles and its cooccurrence matrix (read-only).

    Generated once per test process; tests copy the region (:func:`region`) before using it.
    """
    import warnings

    from lcip.priors.cooccurrence import count_cooccurrence
    from lcip.synthetic import RegionConfig, generate_region

    root = tmp_path_factory.mktemp("template") / "region"
    cfg = RegionConfig(name="tiny", seed=0, tiles_x=2, tiles_y=2, tile_size=128)
    manifest = Manifest.read(generate_region(cfg, root))
    with warnings.catch_warnings():  # NLCD codes absent from a tiny region: uniform columns
        warnings.simplefilter("ignore", UserWarning)
        coocc = count_cooccurrence(
            manifest, CHESAPEAKE4, nlcd_layer="nlcd_30m", allow_test=True, progress=False
        )
    matrix = coocc.matrix.copy()
    matrix.setflags(write=False)  # shared by every test of the session
    return root, matrix


@pytest.fixture
def region(tmp_path: Path, template: tuple[Path, np.ndarray]) -> Path:
    """A fresh copy of the template region."""
    import shutil

    root = tmp_path / "region"
    shutil.copytree(template[0], root)
    return root


def quiet_trainer(root: Path, **kwargs: Any) -> Any:
    """A CPU Lightning trainer without logger, checkpoints, progress bar or model summary."""
    import lightning as L

    settings: dict[str, Any] = {
        "accelerator": "cpu",
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "default_root_dir": root,
    }
    return L.Trainer(**{**settings, **kwargs})
