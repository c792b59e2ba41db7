import logging
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from lcip.classes import CHESAPEAKE4, IGNORE_INDEX
from lcip.data.datasets import LayerSpec
from lcip.errors import ConfigError
from lcip.inference.predict import OUTPUT_LAYERS, predict_manifest
from lcip.inference.windows import WindowConfig, tile_windows
from lcip.io.manifest import Manifest
from lcip.io.provenance import PROVENANCE_TAG, fingerprint, read_provenance
from lcip.io.raster import BLOCK_SIZE, Grid, read_on_grid, write_raster
from lcip.losses import implied_posterior, log_denominator, log_prior, log_probs
from lcip.training.models import FCN
from tests.conftest import make_grid, write_fake_tile
from tests.markers import needs_cuda

PARAMS = {"checkpoint": "best", "checkpoint_sha256": "0" * 64, "loss": "qr", "smoothing": 1e-4}
LAYERS = LayerSpec("naip", "prior", None)


def predict(
    model: torch.nn.Module,
    tiles: Manifest,
    out: Path,
    cfg: WindowConfig | None = None,
    params: dict[str, object] | None = None,
    force: bool = False,
) -> Manifest:
    return predict_manifest(
        model,
        tiles,
        LAYERS,
        CHESAPEAKE4,
        out,
        cfg or WindowConfig(window=256, batch_size=3),
        params=params or PARAMS,
        force=force,
    )


def stamps(tile_outputs: dict[str, Path]) -> dict[str, tuple[int, int]]:
    return {n: (p.stat().st_ino, p.stat().st_mtime_ns) for n, p in tile_outputs.items()}


def check_cog(path: Path, grid: Grid, count: int, dtype: str) -> None:
    """A Cloud Optimized GeoTIFF on ``grid`` with ``count`` bands of ``dtype``."""
    with rasterio.open(path) as src:
        assert (src.crs, src.transform, src.shape) == (grid.crs, grid.transform, grid.shape)
        assert (src.count, src.dtypes[0]) == (count, dtype)
        assert src.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert src.profile["tiled"] and src.block_shapes[0] == (BLOCK_SIZE, BLOCK_SIZE)


@pytest.fixture
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return FCN(4, 4, num_filters=6, num_layers=3).eval()


def test_tile_windows_are_block_aligned_and_cover_the_grid() -> None:
    grid = make_grid(600, width=530)
    seen = np.zeros(grid.shape, np.int64)
    for read, write in tile_windows(grid, 256, 8):
        assert write.row_off % 256 == 0 and write.col_off % 256 == 0
        assert write.height == min(256, 600 - write.row_off)
        assert write.width == min(256, 530 - write.col_off)
        rs, cs = write.toslices()
        seen[rs, cs] += 1
        assert read.row_off == max(0, write.row_off - 8)
        assert read.col_off == max(0, write.col_off - 8)
        assert read.row_off + read.height == min(600, write.row_off + write.height + 8)
        assert read.col_off + read.width == min(530, write.col_off + write.width + 8)
    assert (seen == 1).all()  # every pixel written exactly once
    for read, write in tile_windows(grid, 256, 8, clip=False):  # reaching past the grid
        assert (read.row_off, read.col_off) == (write.row_off - 8, write.col_off - 8)
        assert (read.height, read.width) == (write.height + 16, write.width + 16)
    with pytest.raises(ConfigError, match="edge 'wrap'"):
        WindowConfig(edge="wrap")
    with pytest.raises(ConfigError, match="window 300: the write window must be a positive mul"):
        list(tile_windows(grid, 300, 8))
    with pytest.raises(ConfigError, match="window 40"):
        WindowConfig(window=40)
    with pytest.raises(ConfigError, match="num_workers -1"):
        WindowConfig(num_workers=-1)


@pytest.mark.parametrize("edge", ["zeros", "reflect"])
def test_sliding_window_equals_whole_tile(
    fake_region: Manifest, tmp_path: Path, model: torch.nn.Module, edge: str
) -> None:
    # a 600 x 560 tile (3 x 3 write windows of 256 px, many read windows at the edges)
    # with nodata rows, and a 96 px tile smaller than one block
    big = write_fake_tile(tmp_path, "big", make_grid(600, width=560), "test", 7, nodata_rows=8)
    tiles = Manifest((big, fake_region.tile("t1")))
    cfg = WindowConfig(window=256, batch_size=3, edge=edge)
    out = predict(model, tiles, tmp_path / "pred", cfg)
    assert [t.tile_id for t in out] == ["big", "t1"]
    pad = 8  # the default margin for this network (receptive field 7)
    for tile in out:
        grid = Grid.of(tile.layer("naip"))
        image = read_on_grid(tile.layer("naip"), grid).astype(np.float32) / 255
        if edge == "reflect":  # the whole tile mirrored across its edges, then cropped back
            image = np.pad(image, ((0, 0), (pad, pad), (pad, pad)), mode="reflect")
        prior = torch.from_numpy(read_on_grid(tile.layer("prior"), grid))[None]
        valid = torch.isfinite(prior).all(1)
        with torch.no_grad():
            log_q = log_probs(model(torch.from_numpy(image)[None]), "logits", 1e-4)
        if edge == "reflect":
            log_q = log_q[..., pad:-pad, pad:-pad]
        log_r = implied_posterior(
            log_q, log_prior(torch.nan_to_num(prior), 1e-4), log_denominator(log_q, valid)
        )
        v = valid[0].numpy()
        assert 0 < v.sum() < v.size  # the tile has valid and nodata pixels
        for name in OUTPUT_LAYERS:
            prob = name.endswith("prob")
            check_cog(tile.layer(name), grid, 4 if prob else 1, "float32" if prob else "uint8")
            with rasterio.open(tile.layer(name)) as src:
                data = src.read()
            ref = (log_q if name.startswith("q") else log_r)[0]
            if prob:
                assert np.isnan(data[:, ~v]).all()
                assert data[:, v].min() > 0 and data[:, v].max() < 1
                np.testing.assert_allclose(data[:, v].sum(0), 1.0, atol=1e-4)
                np.testing.assert_allclose(data[:, v], ref.exp().numpy()[:, v], atol=2e-5)
            else:
                assert (data[0, ~v] == IGNORE_INDEX).all() and data[0, v].max() < 4
                assert (data[0, v] == ref.argmax(0).numpy()[v]).mean() > 0.999
    assert list((tmp_path / "pred").rglob(".*")) == []  # no temporary file left


def test_provenance_skip_and_rewrite(
    fake_region: Manifest, tmp_path: Path, model: torch.nn.Module
) -> None:
    tiles = fake_region.select(tile_ids=["t0"])
    tile = tiles.tile("t0")
    out = predict(model, tiles, tmp_path / "pred").tile("t0")
    outputs = {n: out.layer(n) for n in OUTPUT_LAYERS}
    for path in outputs.values():
        record = read_provenance(path)
        assert record is not None and record["params"] == PARAMS
        assert record["inputs"] == {
            "image": fingerprint(tile.layer("naip")),
            "prior": fingerprint(tile.layer("prior")),
        }
        with rasterio.open(path) as src:
            tags = src.tags()
        assert tags["checkpoint_sha256"] == "0" * 64 and tags["loss"] == "qr"  # readable
        assert PROVENANCE_TAG in tags and tags["tile_id"] == "t0"
    first = stamps(outputs)
    predict(model, tiles, tmp_path / "pred")
    assert stamps(outputs) == first  # up to date: all four kept
    predict(model, tiles, tmp_path / "pred", force=True)
    forced = stamps(outputs)
    assert all(forced[n] != first[n] for n in OUTPUT_LAYERS)  # force rewrites all four
    other = {**PARAMS, "checkpoint_sha256": "1" * 64}
    predict(model, tiles, tmp_path / "pred", params=other)
    changed = stamps(outputs)
    assert all(changed[n] != forced[n] for n in OUTPUT_LAYERS)  # another checkpoint: all four
    assert all((read_provenance(p) or {}).get("params") == other for p in outputs.values())
    # one output truncated: all four rewritten
    data = outputs["r_class"].read_bytes()
    outputs["r_class"].write_bytes(data[: len(data) // 2])
    before = stamps(outputs)
    predict(model, tiles, tmp_path / "pred", params=other)
    after = stamps(outputs)
    assert all(after[n] != before[n] for n in OUTPUT_LAYERS)
    # a changed input (the prior) makes the maps stale too
    grid = Grid.of(tile.layer("prior"))
    write_raster(tile.layer("prior"), np.full((4, *grid.shape), 0.25, np.float32), grid)
    predict(model, tiles, tmp_path / "pred", params=other)
    assert all(stamps(outputs)[n] != after[n] for n in OUTPUT_LAYERS)


def test_tile_without_valid_imagery_is_not_predicted(
    fake_region: Manifest, tmp_path: Path, model: torch.nn.Module, caplog: pytest.LogCaptureFixture
) -> None:
    tiles = fake_region.select(tile_ids=["t0", "t2"])
    predict(model, tiles, tmp_path / "pred")
    stale = [tmp_path / "pred" / n / "t0.tif" for n in OUTPUT_LAYERS]
    assert all(p.exists() for p in stale)
    naip = tiles.tile("t0").layer("naip")
    grid = Grid.of(naip)
    write_raster(naip, np.zeros((4, *grid.shape), np.uint8), grid)  # a black NAIP tile
    with caplog.at_level(logging.WARNING, logger="lcip.inference.predict"):
        out = predict(model, tiles, tmp_path / "pred")
    assert [t.tile_id for t in out] == ["t2"]
    assert "tile t0: no valid pixel" in caplog.text
    assert not any(p.exists() for p in stale)  # stale outputs removed
    assert list((tmp_path / "pred").rglob(".*")) == []


def read_all(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read()


def test_loader_workers_give_the_same_maps(
    fake_region: Manifest, tmp_path: Path, model: torch.nn.Module
) -> None:
    tiles = fake_region.select(tile_ids=["t1"])
    ref = predict(model, tiles, tmp_path / "a").tile("t1")
    cfg = WindowConfig(window=256, batch_size=1, num_workers=2, prefetch_factor=3)
    got = predict(model, tiles, tmp_path / "b", cfg).tile("t1")
    for name in OUTPUT_LAYERS:
        np.testing.assert_array_equal(read_all(got.layer(name)), read_all(ref.layer(name)))


@needs_cuda
def test_prediction_on_cuda_matches_cpu(
    fake_region: Manifest, tmp_path: Path, model: torch.nn.Module
) -> None:
    tiles = fake_region.select(tile_ids=["t1"])
    ref = predict(model, tiles, tmp_path / "cpu").tile("t1")
    cfg = WindowConfig(window=256, batch_size=2, device="cuda", num_workers=1)
    got = predict(model, tiles, tmp_path / "cuda", cfg).tile("t1")
    assert next(model.parameters()).device.type == "cuda"
    np.testing.assert_allclose(
        read_all(got.layer("q_prob")), read_all(ref.layer("q_prob")), atol=1e-4, equal_nan=True
    )
