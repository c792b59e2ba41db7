from pathlib import Path

import numpy as np
import rasterio
import torch

from lcip.classes import CHESAPEAKE4, IGNORE_INDEX
from lcip.datasets import LayerSpec
from lcip.inference import WindowConfig
from lcip.losses import implied_posterior, log_denominator, log_prior, log_probs
from lcip.manifest import Manifest
from lcip.models import FCN
from lcip.predict import predict_manifest
from lcip.raster import Grid, read_on_grid

PARAMS = {"checkpoint_sha256": "0" * 64, "loss": "qr"}


def test_sliding_window_equals_whole_tile(fake_region: Manifest, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = FCN(4, 4, num_filters=6, num_layers=3).eval()
    tiles = fake_region.select(tile_ids=["t1"])  # has nodata rows
    cfg = WindowConfig(window=40, batch_size=3)  # margin = 8: many overlapping windows

    def run() -> Manifest:
        return predict_manifest(
            model,
            tiles,
            LayerSpec("naip", "prior", None),
            CHESAPEAKE4,
            tmp_path / "pred",
            cfg,
            params=PARAMS,
        )

    out = run()
    tile = out.tile("t1")
    grid = Grid.of(tile.layer("naip"))
    # direct computation on the whole tile
    image = torch.from_numpy(read_on_grid(tile.layer("naip"), grid).astype(np.float32) / 255)[None]
    prior = torch.from_numpy(read_on_grid(tile.layer("prior"), grid))[None]
    valid = torch.isfinite(prior).all(1)
    with torch.no_grad():
        log_q = log_probs(model(image), "logits", 1e-4)
    log_r = implied_posterior(
        log_q, log_prior(torch.nan_to_num(prior), 1e-4), log_denominator(log_q, valid)
    )
    for name in ("q_prob", "q_class", "r_prob", "r_class"):
        with rasterio.open(tile.layer(name)) as src:
            assert (
                src.crs == grid.crs and src.transform == grid.transform and src.shape == grid.shape
            )
            assert src.dtypes[0] == ("float32" if name.endswith("prob") else "uint8")
            data = src.read()
        v = valid[0].numpy()
        if name.endswith("prob"):
            assert np.isnan(data[:, ~v]).all()
            np.testing.assert_allclose(data[:, v].sum(0), 1.0, atol=1e-4)
            ref = (log_q if name == "q_prob" else log_r)[0].exp().numpy()
            np.testing.assert_allclose(data[:, v], ref[:, v], atol=2e-5)
        else:
            assert (data[0, ~v] == IGNORE_INDEX).all() and data[0, v].max() < 4
            ref_cls = (log_q if name == "q_class" else log_r)[0].argmax(0).numpy()
            assert (data[0, v] == ref_cls[v]).mean() > 0.999
    # idempotent: a second run keeps the files untouched
    mtime = tile.layer("r_prob").stat().st_mtime_ns
    run()
    assert tile.layer("r_prob").stat().st_mtime_ns == mtime
