"""Label super-resolution: the loss against a per-block loop, block layouts, statistics, data."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from affine import Affine
from omegaconf import OmegaConf

from lcip.classes import CHESAPEAKE4, NLCD_CODES
from lcip.data.datasets import LayerSpec, TileWindowDataset
from lcip.errors import ConfigError
from lcip.io.manifest import Manifest
from lcip.io.raster import Grid
from lcip.losses import LSRLoss, build_loss, log_probs
from lcip.priors.blocks import BlockLayout, tile_layout
from lcip.priors.cooccurrence import (
    LSR_NAME,
    Cooccurrence,
    LSRStatistics,
    count_cooccurrence,
)
from lcip.stages.cooccurrence import cooccurrence
from lcip.synthetic import RegionConfig
from lcip.synthetic.write import generate_region
from tests.conftest import CRS_UTM, quiet_trainer

F64 = torch.float64
C = 4


def _stats(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    eta = torch.rand(C, 17, generator=g, dtype=F64)
    eta /= eta.sum(dim=0)
    rho2 = torch.rand(C, 17, generator=g, dtype=F64) * 0.05
    rho2[:, 3] = 0.0  # a pure NLCD class: the variance floor applies
    return eta, rho2


def _reference(output, nlcd, block, mask, eta, rho2, smoothing, min_var):  # type: ignore[no-untyped-def]
    """Direct loop over crops, blocks and NLCD classes (float64)."""
    q = log_probs(output, "logits", smoothing).exp()
    total, weight = 0.0, 0.0
    for b in range(q.shape[0]):
        for blk in block[b].unique().tolist():
            for c in range(1, 17):
                sel = (block[b] == blk) & (nlcd[b] == c) & mask[b]
                n = int(sel.sum())
                if n == 0:
                    continue
                qb = q[b][:, sel]  # (C, n)
                nll = 0.0
                for k in range(q.shape[1]):
                    mu = qb[k].mean()
                    var = (qb[k] * (1 - qb[k])).sum() / n**2 + max(float(rho2[k, c]), min_var)
                    nll = (
                        nll + 0.5 * (mu - eta[k, c]) ** 2 / var + 0.5 * torch.log(2 * math.pi * var)
                    )
                total = total + n * nll
                weight += n
    return total / weight


def _inputs(seed: int):  # type: ignore[no-untyped-def]
    g = torch.Generator().manual_seed(seed)
    output = torch.randn(2, C, 13, 11, generator=g, dtype=F64) * 2
    nlcd = torch.randint(0, 5, (2, 13, 11), generator=g)  # 0 = nodata
    nlcd[:, :6] = 2  # mostly one class per block, with mixed blocks
    layout = BlockLayout((5, 4), (2, 1))
    block = torch.from_numpy(layout.ids(0, 0, 13, 11)).expand(2, -1, -1)
    mask = torch.rand(2, 13, 11, generator=g) > 0.2
    return output, nlcd, block, mask


@pytest.mark.parametrize("seed", [0, 1])
def test_lsr_loss_matches_per_block_loop(seed: int) -> None:
    output, nlcd, block, mask = _inputs(seed)
    eta, rho2 = _stats(seed)
    loss = LSRLoss(eta=eta, rho2=rho2, smoothing=1e-4, min_variance=1e-3)
    x = output.clone().requires_grad_(True)
    value = loss(x, torch.full_like(x, 1 / C), mask, nlcd, block)
    (grad,) = torch.autograd.grad(value, x)
    y = output.clone().requires_grad_(True)
    ref = _reference(y, nlcd, block, mask, eta, rho2, 1e-4, 1e-3)
    (ref_grad,) = torch.autograd.grad(ref, y)
    assert value.dtype == F64
    assert torch.allclose(value, ref.detach(), rtol=1e-10, atol=1e-10)
    assert torch.allclose(grad, ref_grad, rtol=1e-9, atol=1e-12)
    assert (grad.movedim(1, -1)[~mask] == 0).all()  # masked pixels have no influence


def test_lsr_loss_edge_cases() -> None:
    output, nlcd, block, mask = _inputs(2)
    eta, rho2 = _stats()
    loss = build_loss("lsr", eta=eta, rho2=rho2)
    x = output.clone().requires_grad_(True)
    empty = loss(x, torch.zeros_like(x), torch.zeros_like(mask), nlcd, block)
    assert empty.item() == 0.0 and empty.grad_fn is not None
    assert torch.isfinite(loss(output * 1e4, torch.zeros_like(output), mask, nlcd, block))
    with pytest.raises(ValueError, match="'nlcd' and 'block'"):
        loss(output, output, mask)
    with pytest.raises(ConfigError, match="needs statistics"):
        build_loss("lsr")
    with pytest.raises(ConfigError, match=r"loss.statistics=.*no LSR statistics"):
        build_loss("lsr", statistics="/nonexistent/lsr_statistics.json")


def test_block_layout_detects_native_and_stored_30m_blocks() -> None:
    grid = Grid(CRS_UTM, Affine(1.0, 0, 0, 0, -1.0, 0), 200, 170)
    rng = np.random.default_rng(0)
    coarse = rng.integers(1, 9, size=(9, 9))
    for phase in [(0, 0), (7, 23), (29, 1)]:
        rows = (np.arange(200) + 30 - phase[0]) // 30
        cols = (np.arange(170) + 30 - phase[1]) // 30
        index = coarse[rows][:, cols]
        layout = BlockLayout.detect(index, grid)
        assert layout.period == (30, 30) and layout.phase == phase
        ids = layout.ids(0, 0, 200, 170)
        # every block is constant in the NLCD map, and ids follow the lattice
        for i in np.unique(ids):
            assert len(np.unique(index[ids == i])) == 1
    assert BlockLayout.detect(np.ones((50, 50)), grid).phase == (0, 0)
    half = Grid(CRS_UTM, Affine(0.5, 0, 0, 0, -0.5, 0), 10, 10)
    assert BlockLayout.detect(np.ones((10, 10)), half).period == (60, 60)
    # ids of a window are those of the tile, renumbered from 0
    layout = BlockLayout((30, 30), (7, 23))
    full = layout.ids(0, 0, 200, 170)
    win = layout.ids(50, 40, 64, 64)
    _, remap = np.unique(full[50:114, 40:104], return_inverse=True)
    _, remap_win = np.unique(win, return_inverse=True)
    assert np.array_equal(remap.reshape(64, 64), remap_win.reshape(64, 64))


@pytest.fixture(scope="module")
def region(tmp_path_factory: pytest.TempPathFactory) -> Manifest:
    """A generated region: NLCD on a 30 m grid offset from the tiles (blocks cut at edges)."""
    root = tmp_path_factory.mktemp("lsr_region")
    cfg = RegionConfig(
        name="lsr", seed=3, tiles_x=2, tiles_y=2, tile_size=128, nlcd_offset_m=(11, 17)
    )
    return Manifest.read(generate_region(cfg, root))


def _brute_statistics(manifest: Manifest) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per block of the 30 m raster (by its geographic cell), fractions of each class."""
    import rasterio

    fracs: dict[int, list[np.ndarray]] = {}
    for tile in manifest:
        with rasterio.open(tile.layer("lc")) as src:
            labels, t = src.read(1), src.transform
        with rasterio.open(tile.layer("nlcd_30m")) as src:
            codes, nt = src.read(1), src.transform
        cls = CHESAPEAKE4.map_labels(labels, for_prior=True)
        rows, cols = np.indices(labels.shape)
        x, y = t * (cols + 0.5, rows + 0.5)
        ncol, nrow = ~nt * (x, y)
        ncol, nrow = np.floor(ncol).astype(int), np.floor(nrow).astype(int)
        for cell in np.unique(nrow * 10_000 + ncol):
            sel = ((nrow * 10_000 + ncol) == cell) & (cls != 255)
            code = int(codes[cell // 10_000, cell % 10_000])
            if code == 0 or sel.sum() < 450:
                continue
            frac = np.bincount(cls[sel], minlength=4) / sel.sum()
            fracs.setdefault(NLCD_CODES.index(code), []).append(frac)
    eta = np.full((4, 17), 0.25)
    rho2 = np.full((4, 17), 0.25)
    count = np.zeros(17, int)
    for c, values in fracs.items():
        arr = np.array(values)
        eta[:, c], rho2[:, c], count[c] = arr.mean(0), arr.var(0), len(arr)
    return eta, rho2, count


def test_statistics_match_a_count_per_30m_cell(region: Manifest, tmp_path: Path) -> None:
    train = region.select(["train"])
    coocc = count_cooccurrence(train, "chesapeake4", nlcd_layer="nlcd_30m", progress=False)
    assert coocc.lsr is not None
    eta, rho2, count = _brute_statistics(train)
    np.testing.assert_array_equal(coocc.lsr.blocks, count)
    np.testing.assert_allclose(coocc.lsr.eta, eta, atol=1e-12)
    np.testing.assert_allclose(coocc.lsr.rho2, rho2, atol=1e-12)
    assert count.sum() > 10
    # written beside the matrix with provenance, read back with it
    coocc.write(tmp_path)
    meta = json.loads((tmp_path / LSR_NAME).read_text())
    assert meta["tiles"] == [t.tile_id for t in train] and meta["lcip_version"]
    back = Cooccurrence.read(tmp_path)
    assert back.lsr is not None and np.allclose(back.lsr.eta, coocc.lsr.eta)
    loss = build_loss("lsr", statistics=str(tmp_path / LSR_NAME))
    assert torch.allclose(loss.eta, torch.as_tensor(eta))


def test_borrowed_statistics_and_clear_error(region: Manifest, tmp_path: Path) -> None:
    train = region.select(["train"])
    coocc = count_cooccurrence(train, "chesapeake4", nlcd_layer="nlcd_30m", progress=False)
    src = tmp_path / "src"
    coocc.write(src)
    cfg = OmegaConf.create(
        {
            "paths": {"regions": str(tmp_path)},
            "region": {"scheme": "chesapeake4"},
            "cooccurrence": {"dir": str(tmp_path / "dst"), "source": str(src)},
        }
    )
    cooccurrence(cfg)
    assert LSRStatistics.read(tmp_path / "dst").source == str(src)
    # a source without statistics: the matrix is borrowed, stale statistics are removed,
    # and the LSR loss says what is missing
    (src / LSR_NAME).unlink()
    cooccurrence(cfg)
    assert not (tmp_path / "dst" / LSR_NAME).exists()
    with pytest.raises(ConfigError, match=r"borrowed cooccurrence\.source needs lsr_statistics"):
        build_loss("lsr", statistics=str(tmp_path / "dst" / LSR_NAME))


def test_dataset_carries_nlcd_and_blocks_only_when_asked(region: Manifest) -> None:
    layers = LayerSpec("naip", None, "lc")
    plain = TileWindowDataset(region, layers, CHESAPEAKE4)
    assert "nlcd" not in plain[(0, 0, 0, 40, 40)]
    ds = TileWindowDataset(
        region, LayerSpec("naip", None, "lc", nlcd="nlcd_30m"), CHESAPEAKE4, cache=True
    )
    tile = region.tiles[0]
    grid = ds.grids[0]
    layout = tile_layout(tile.layer("nlcd_30m"), grid)
    assert layout.period == (30, 30)
    # the region's NLCD grid is offset by (11 m, 17 m) from the tile grid
    assert layout.phase == ((30 - 17) % 30, (30 - 11) % 30)
    sample = ds[(0, -5, 100, 40, 40)]
    nlcd, block = sample["nlcd"], sample["block"]
    assert nlcd.shape == block.shape == (40, 40) and nlcd.dtype == torch.int64
    assert (nlcd[:5] == 0).all()  # outside the tile
    assert (nlcd[:, 28:] == 0).all() and (nlcd[5:, :28] > 0).all()  # tile is 128 px wide
    for b in block.unique():
        inside = nlcd[(block == b) & (nlcd > 0)]
        assert len(inside.unique()) <= 1  # one NLCD class per block (30 m grid read at 1 m)
    # NLCD stored on the tile grid (a windowed read) gives the same classes and blocks
    on_grid = TileWindowDataset(region, LayerSpec("naip", None, "lc", nlcd="nlcd"), CHESAPEAKE4)
    same = on_grid[(0, -5, 100, 40, 40)]
    assert torch.equal(same["nlcd"], nlcd) and torch.equal(same["block"], block)
    assert block.min() == 0 and block.max() == 2 * 3 - 1  # rows -5..34 cut at 13; cols at 109, 139


def test_lsr_trains_through_the_task(region: Manifest, tmp_path: Path) -> None:

    from lcip.data.datamodules import TileDataModule
    from lcip.training.models import FCN
    from lcip.training.tasks import ImplicitPosteriorTask

    eta, rho2 = _stats()
    stats = LSRStatistics(
        eta.numpy(), rho2.numpy(), np.ones(17, np.int64), "chesapeake4", CHESAPEAKE4.classes
    )
    stats.write(tmp_path)
    dm = TileDataModule(
        region,
        layers=LayerSpec(prior=None, nlcd="nlcd_30m"),
        crop_size=32,
        batch_size=2,
        steps_per_epoch=2,
        val_crop_size=64,
        cache=True,
    )
    task = ImplicitPosteriorTask(
        FCN(4, 4, num_filters=4, num_layers=1),
        4,
        loss="lsr",
        loss_kwargs={"statistics": str(tmp_path / LSR_NAME)},
    )
    before = [p.detach().clone() for p in task.parameters()]
    trainer = quiet_trainer(tmp_path, max_steps=2, limit_val_batches=0)
    trainer.fit(task, datamodule=dm)
    assert any(not torch.equal(a, b) for a, b in zip(before, task.parameters(), strict=True))
