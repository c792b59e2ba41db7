"""Learned prior: training tiles must not be evaluation tiles; the network's output is a prior."""

from pathlib import Path

import numpy as np
import pytest
import rasterio

from lcip.classes import CHESAPEAKE4
from lcip.errors import ConfigError
from lcip.io.manifest import Manifest
from lcip.io.raster import Grid, write_raster
from lcip.priors.learned import select_training_tiles, train_learned_prior, write_learned_priors
from lcip.training.models import FCN


def test_training_tiles_disjoint_from_evaluation(fake_region: Manifest) -> None:
    assert select_training_tiles(fake_region, ["train"], ["test"], num_tiles=5) == ["t0", "t1"]
    assert select_training_tiles(fake_region, ["train"], ["test"], num_tiles=1) == ["t0"]
    with pytest.raises(ConfigError, match=r"tiles \['t3'\] are evaluation tiles"):
        select_training_tiles(fake_region, ["train"], ["test"], tile_ids=["t0", "t3"])
    with pytest.raises(ConfigError, match="no labelled tiles"):
        select_training_tiles(fake_region, ["nope"], ["test"])


def test_learned_prior_trains_and_writes(fake_region: Manifest, tmp_path: Path) -> None:
    # inputs: the fake prior as "NLCD prior" bands plus 4 binary vector layers
    vectors = {}
    for t in fake_region:
        grid = Grid.of(t.layer("naip"))
        layers = np.zeros((4, *grid.shape), np.uint8)
        layers[1, 40:48] = 1
        vectors[t.tile_id] = write_raster(tmp_path / "vectors" / f"{t.tile_id}.tif", layers, grid)
    manifest = fake_region.with_layer("vectors", vectors)
    net = FCN(8, 4, num_filters=8, kernel_sizes=[11, 7, 5])
    train_learned_prior(
        manifest,
        ["t0", "t1"],
        CHESAPEAKE4,
        net,
        input_layers=("prior", "vectors"),
        steps=4,
        batch_size=4,
        crop_size=32,
    )
    results = write_learned_priors(
        manifest,
        net,
        CHESAPEAKE4,
        tmp_path / "learned",
        params={"recipe": "learned"},
        input_layers=("prior", "vectors"),
    )
    assert [r.status for r in results] == ["written"] * 4
    with (
        rasterio.open(results[1].path) as src,
        rasterio.open(manifest.tiles[1].layer("naip")) as ref,
    ):
        assert (src.crs, src.transform, src.shape, src.count) == (
            ref.crs,
            ref.transform,
            ref.shape,
            4,
        )
        assert src.tags()["recipe"] == "learned" and "model_digest" in src.tags()["lcip_provenance"]
        prior = src.read()
    valid = np.isfinite(prior).all(0)
    assert not valid[:8].any() and valid[8:].all()  # tile t1's nodata rows stay nodata
    np.testing.assert_allclose(prior[:, valid].sum(0), 1.0, atol=1e-3)
    again = write_learned_priors(
        manifest,
        net,
        CHESAPEAKE4,
        tmp_path / "learned",
        params={"recipe": "learned"},
        input_layers=("prior", "vectors"),
    )
    assert [r.status for r in again] == ["skipped"] * 4
