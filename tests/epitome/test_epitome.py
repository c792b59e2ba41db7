"""Self-epitomic LSR: each formula against a direct float64 loop, the maps, the stage."""

from __future__ import annotations

import itertools
import logging
import math
import warnings
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import rasterio
import torch

from lcip.classes import CHESAPEAKE4, IGNORE_INDEX, NLCD_CODES
from lcip.config import compose_config
from lcip.epitome.core import (
    EpitomeJob,
    EpitomeParams,
    NoValidPixelError,
    class_embedding,
    downsample_classes,
    downsample_image,
    em,
    embed,
    epitome_manifest,
    epitome_tile,
    epitome_window,
    extract_patches,
    log_posterior,
    position_validity,
    sample_patches,
    tile_windows,
    upsample,
)
from lcip.epitome.reference import direct_em, direct_embedding, direct_log_posterior
from lcip.errors import ConfigError, DataError
from lcip.evaluation.evaluate import MapSpec, accuracy, evaluate_manifest, mean_iou
from lcip.io.manifest import Manifest, Tile
from lcip.io.provenance import PROVENANCE_TAG, read_provenance
from lcip.io.raster import Grid, write_raster
from lcip.priors.cooccurrence import count_pairs, normalize_counts
from lcip.stages.cooccurrence import cooccurrence
from lcip.stages.epitome import epitome
from lcip.stages.prior import prior
from lcip.stages.region import region
from tests.conftest import make_grid
from tests.inference.test_predict import check_cog, stamps
from tests.markers import needs_cuda

F64 = torch.float64


def _random_epitome(
    seed: int, bands: int = 3, shape: tuple[int, int] = (9, 10)
) -> tuple[torch.Tensor, torch.Tensor]:
    """A random epitome in [0, 1] (float64) with one invalid pixel."""
    gen = torch.Generator().manual_seed(seed)
    mu = torch.rand(bands, *shape, generator=gen, dtype=F64)
    valid = torch.ones(shape, dtype=torch.bool)
    valid[2, 7] = False
    return torch.where(valid, mu, 0.0), valid


def test_log_posterior_against_direct_loop() -> None:
    mu, valid = _random_epitome(0)
    k = 3
    ok = position_validity(valid, k)
    assert not ok[2, 5:8].any() and ok.sum() == ok.numel() - 9  # the invalid pixel's windows
    # patches: some taken from the epitome itself (their own position is the most likely), some
    # random; a large sigma^2 so that many positions carry visible mass
    positions = torch.tensor([[0, 0], [4, 3], [6, 7]])
    own = extract_patches(mu, positions, k)
    other = torch.rand(2, 3, k, k, generator=torch.Generator().manual_seed(1), dtype=F64)
    patches = torch.cat([own, other])
    for sigma2 in (0.5, 0.01):
        got = log_posterior(patches, mu, ok, sigma2)
        ref = direct_log_posterior(patches.numpy(), mu.numpy(), ok.numpy(), sigma2)
        assert np.array_equal(np.isinf(got.numpy()), np.isinf(ref))
        np.testing.assert_allclose(got.exp().numpy(), np.exp(ref), rtol=1e-9, atol=1e-12)
        for t, (r, c) in enumerate(positions.tolist()):  # a patch matches itself best
            assert got[t].argmax() == r * ok.shape[1] + c
    # float32 (the default) agrees with the float64 loop to ~1e-4 of a probability
    got32 = log_posterior(patches.float(), mu.float(), ok, 0.5).exp().double().numpy()
    np.testing.assert_allclose(
        got32, np.exp(direct_log_posterior(*_args(patches, mu, ok))), atol=2e-4
    )


def _args(
    patches: torch.Tensor, mu: torch.Tensor, ok: torch.Tensor
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.bool_], float]:
    return patches.numpy(), mu.numpy(), ok.numpy(), 0.5


def test_embedding_against_direct_loop() -> None:
    mu, valid = _random_epitome(2)
    k = 3
    ok = position_validity(valid, k)
    gen = torch.Generator().manual_seed(3)
    patches = torch.rand(100, 3, k, k, generator=gen, dtype=F64) * 0.3 + 0.35
    classes = torch.tensor([1, 8, 8, 13] * 25)
    ref = direct_embedding(patches.numpy(), classes.numpy(), mu.numpy(), ok.numpy(), 0.05)
    ph, pw = ok.shape
    ph_pw = ph * pw
    # one chunk; chunks of patches; strips of positions with a first pass for the normalizer
    for budget in (2**24, ph_pw * 70, ph_pw * 10, 1):
        got = embed(patches, classes, mu, ok, 0.05, chunk_elements=budget)
        np.testing.assert_allclose(got.numpy(), ref, rtol=1e-9, atol=1e-12)
    assert np.allclose(ref.sum((1, 2))[[1, 8, 13]], [25 * k * k, 50 * k * k, 25 * k * k])
    present, p_mn_c, p_c = class_embedding(got, classes)
    assert present.tolist() == [1, 8, 13]
    np.testing.assert_allclose(p_c.numpy(), [0.25, 0.5, 0.25])
    np.testing.assert_allclose(
        p_mn_c.numpy(), ref[[1, 8, 13]] / ref[[1, 8, 13]].sum((1, 2), keepdims=True)
    )
    assert (p_mn_c.numpy()[:, ~valid.numpy()] == 0).all()  # no mass on invalid epitome pixels


def _em_problem() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(4)
    e = rng.random((3, 4, 5)) ** 3
    e[:, 0, 0] = 0.0  # a position no class explains
    p_mn_c = e / e.sum((1, 2), keepdims=True)
    p_l_c = rng.random((4, 3))
    p_l_c[0, 1] = 0.0  # a label a class never has
    p_l_c /= p_l_c.sum(0)
    return (
        torch.from_numpy(p_mn_c),
        torch.tensor([0.5, 0.3, 0.2], dtype=F64),
        torch.from_numpy(p_l_c),
    )


def _objective(
    p_l: torch.Tensor, p_mn_c: torch.Tensor, p_c: torch.Tensor, p_l_c: torch.Tensor
) -> float:
    """sum_c p(c) sum_l p(l | c) log sum_{m,n} p(m, n | c) p(l | m, n): what EM increases."""
    like = torch.einsum("lmn,cmn->lc", torch.nan_to_num(p_l), p_mn_c)
    return float((p_c * p_l_c * like.log()).sum())


def test_em_against_direct_loop() -> None:
    p_mn_c, p_c, p_l_c = _em_problem()
    for iterations in (1, 2, 5):
        got, ran = em(p_mn_c, p_c, p_l_c, tol=0.0, max_iter=iterations)
        assert ran == iterations
        ref = direct_em(p_mn_c.numpy(), p_c.numpy(), p_l_c.numpy(), iterations)
        np.testing.assert_allclose(got.numpy(), ref, rtol=1e-10, atol=1e-14)
    assert got[:, 0, 0].isnan().all() and not got[:, 1:].isnan().any()
    np.testing.assert_allclose(got[:, 1:].sum(0).numpy(), 1.0)
    # EM never decreases its objective, and stops at a fixed point within tol
    values = [
        _objective(em(p_mn_c, p_c, p_l_c, 0.0, i)[0], p_mn_c, p_c, p_l_c) for i in range(1, 30, 4)
    ]
    assert all(b >= a - 1e-12 for a, b in itertools.pairwise(values)) and values[-1] > values[0]
    fixed, ran = em(p_mn_c, p_c, p_l_c, tol=1e-6, max_iter=10_000)
    assert ran < 10_000
    again, _ = em(p_mn_c, p_c, p_l_c, tol=0.0, max_iter=ran + 1)
    assert float(torch.nan_to_num(again - fixed).abs().max()) <= 1e-6


def test_epitome_grid_and_back() -> None:
    rng = np.random.default_rng(5)
    image = rng.random((2, 7, 9))
    valid = rng.random((7, 9)) > 0.3
    image[0, ~valid] = np.nan  # invalid pixels may hold anything
    mu, mu_valid = downsample_image(torch.from_numpy(image), torch.from_numpy(valid), 2)
    assert mu.shape == (2, 4, 5)
    for m, n in itertools.product(range(4), range(5)):
        block = valid[2 * m : 2 * m + 2, 2 * n : 2 * n + 2]
        assert mu_valid[m, n] == block.any()
        if block.any():
            want = image[:, 2 * m : 2 * m + 2, 2 * n : 2 * n + 2][:, block].mean(1)
            np.testing.assert_allclose(mu[:, m, n].numpy(), want)
    classes = torch.arange(63).reshape(7, 9)
    assert downsample_classes(classes, 2)[1, 2] == classes[3, 5]
    assert downsample_classes(classes, 2)[3, 4] == 0  # the centre lies outside: nodata
    p = torch.from_numpy(rng.dirichlet(np.ones(4), size=(4, 5)).transpose(2, 0, 1))
    for mode in ("bilinear", "nearest"):
        up = upsample(p, mu_valid, 2, (7, 9), mode)
        assert up.shape == (4, 7, 9)
        np.testing.assert_allclose(up[:, valid].sum(0).numpy(), 1.0)
    near = upsample(p, mu_valid, 2, (7, 9), "nearest")
    assert torch.equal(near[:, 5, 3], p[:, 2, 1])
    bilinear = upsample(p, mu_valid, 2, (7, 9), "bilinear")
    interior = mu_valid[1:3, 1:3].all()
    if interior:  # pixel (3, 3) lies at epitome coordinate (1.25, 1.25)
        want = (
            0.75 * 0.75 * p[:, 1, 1] + 0.75 * 0.25 * (p[:, 1, 2] + p[:, 2, 1]) + 0.0625 * p[:, 2, 2]
        )
        np.testing.assert_allclose(bilinear[:, 3, 3].numpy(), want.numpy())


def test_patches_are_distinct_valid_and_seeded() -> None:
    _, valid = _random_epitome(6, shape=(12, 12))
    classes = torch.full((12, 12), 8)
    classes[6, 6] = 0  # nodata centre: the window at (5, 5) is not drawn
    draw = sample_patches(valid, classes, 3, 1000, torch.Generator().manual_seed(0))
    ok = position_validity(valid, 3)
    ok[5, 5] = False
    assert len(draw) == ok.sum() and len({tuple(p) for p in draw.tolist()}) == len(draw)
    assert all(ok[r, c] for r, c in draw.tolist())
    first = sample_patches(valid, classes, 3, 10, torch.Generator().manual_seed(1))
    assert torch.equal(
        first, sample_patches(valid, classes, 3, 10, torch.Generator().manual_seed(1))
    )


def test_windows_cover_the_tile() -> None:
    for height, width, size in ((1030, 700, 512), (300, 200, 512), (512, 1024, 512)):
        seen = np.zeros((height, width), int)
        for w in tile_windows(height, width, size):
            assert (w.height, w.width) == (min(size, height), min(size, width))
            seen[w.toslices()] += 1
        assert seen.min() >= 1 and seen.max() <= 4
    assert len(tile_windows(512, 1024, 512)) == 2


# ------------------------------------------------------------------------------ tiles on disk
def nlcd_tile(root: Path, tile_id: str, size: int, seed: int, split: str = "test") -> Tile:
    """A tile whose NLCD stripes (32 px) mix tree and grass as the cooccurrence says.

    Stripes of deciduous forest (41) are 70 % tree, stripes of pasture (81) 40 % (in blocks
    of 16 px, :data:`MATRIX`); the imagery tells tree (green) from grass (grey) apart, so the
    labels are identifiable from the imagery, the NLCD and the matrix, but not from the
    prior alone.
    """
    rng = np.random.default_rng(seed)
    grid = make_grid(size, origin=(400000.0 + 1000 * seed, 4300000.0))
    blocks = -(-size // 16)
    stripe = (np.arange(blocks) // 2 % 2 == 0)[None, :].repeat(blocks, 0)  # 41 on even stripes
    tree_blocks = rng.random((blocks, blocks)) < np.where(stripe, 0.7, 0.4)
    tree = np.kron(tree_blocks, np.ones((16, 16), bool))[:size, :size]
    nlcd = np.kron(np.where(stripe, 41, 81), np.ones((16, 16)))[:size, :size].astype(np.uint8)
    means = np.where(tree[None], np.array([50, 90, 50, 160])[:, None, None], 150)
    naip = np.clip(means + rng.normal(0, 3, (4, size, size)), 1, 255).astype(np.uint8)
    lc = np.where(tree, 2, 3).astype(np.uint8)
    layers = {}
    for name, data, nodata in (("naip", naip, None), ("nlcd", nlcd, 0), ("lc", lc, 0)):
        layers[name] = write_raster(root / name / f"{tile_id}.tif", data, grid, nodata=nodata)
    return Tile(tile_id, split, grid.crs.to_string(), grid.bounds, layers)


#: p(l | c): deciduous forest 41 is 70 % tree, pasture 81 is 60 % low vegetation.
MATRIX = np.full((4, 17), 0.25)
MATRIX[:, NLCD_CODES.index(41)] = [0.0, 0.7, 0.3, 0.0]
MATRIX[:, NLCD_CODES.index(81)] = [0.0, 0.4, 0.6, 0.0]


def job(matrix: npt.NDArray[np.float64] = MATRIX, **settings: object) -> EpitomeJob:
    params = EpitomeParams(**{"window": 64, **settings})  # type: ignore[arg-type]
    return EpitomeJob(CHESAPEAKE4, matrix, params)


def own_matrix(tile: Tile) -> npt.NDArray[np.float64]:
    """p(l | c) counted on the tile itself (lcip's counting code)."""
    return normalize_counts(count_pairs(tile.layer("lc"), tile.layer("nlcd"), CHESAPEAKE4))[0]


def test_maps_like_predict_resolve_mixed_blocks_and_skip(tmp_path: Path) -> None:
    tile = nlcd_tile(tmp_path, "t0", 96, seed=0)  # 96 px: 2 x 2 windows of 64 px, overlapping
    out = tmp_path / "maps"
    matrix = own_matrix(tile)
    paths = epitome_tile(tile, out, job(matrix))
    grid = Grid.of(tile.layer("naip"))
    check_cog(paths["q_prob"], grid, 4, "float32")
    check_cog(paths["q_class"], grid, 1, "uint8")
    with rasterio.open(paths["q_prob"]) as src:
        prob = src.read()
        tags = src.tags()
    with rasterio.open(paths["q_class"]) as src:
        cls = src.read(1)
    assert np.isfinite(prob).all() and np.allclose(prob.sum(0), 1.0, atol=1e-5)
    assert (cls == prob.argmax(0)).all()
    record = read_provenance(paths["q_prob"])
    assert record is not None and record["params"]["method"] == "epitome"
    assert record["params"]["epitome_window"] == 64 and tags["output"] == "q"
    assert set(record["inputs"]) == {"image", "nlcd"} and PROVENANCE_TAG in tags
    # the prior's argmax says tree on 41, grass on 81; the epitome finds both in each
    with rasterio.open(tile.layer("lc")) as src:
        truth = CHESAPEAKE4.map_labels(src.read(1))
    with rasterio.open(tile.layer("nlcd")) as src:
        prior_argmax = np.where(src.read(1) == 41, 1, 2)
    assert (cls == truth).mean() > (prior_argmax == truth).mean() + 0.05
    first = stamps(paths)
    assert stamps(epitome_tile(tile, out, job(matrix))) == first  # up to date: skipped
    epitome_tile(tile, out, job(matrix, tol=1e-3))  # another setting: both maps rewritten
    assert all(stamps(paths)[n] != first[n] for n in paths)


def test_bad_inputs_give_one_line(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    small = nlcd_tile(tmp_path, "small", 12, seed=1)
    with pytest.raises(DataError, match=r"tile small is 12 x 12 px, smaller than one patch") as err:
        epitome_tile(small, tmp_path / "maps", job())
    assert "\n" not in str(err.value) and "naip/small.tif" in str(err.value)
    tile = nlcd_tile(tmp_path, "black", 32, seed=2)
    grid = Grid.of(tile.layer("naip"))
    out = tmp_path / "maps"
    epitome_tile(tile, out, job())
    write_raster(tile.layer("naip"), np.zeros((4, 32, 32), np.uint8), grid)  # all nodata
    with pytest.raises(NoValidPixelError, match=r"tile black has no pixel with valid imagery"):
        epitome_tile(tile, out, job())
    assert not list(out.rglob("black.tif"))  # stale maps removed
    with caplog.at_level(logging.WARNING, logger="lcip.epitome.core"):
        result = epitome_manifest(Manifest((tile,)), out, job())
    assert len(result) == 0 and "tile black has no pixel" in caplog.text
    for settings, match in (
        ({"patch_size": 0}, "epitome.patch_size=0: must be an integer > 0"),
        ({"sigma2": -1.0}, "epitome.sigma2=-1.0: must be a number > 0"),
        ({"upsample": "cubic"}, "epitome.upsample='cubic': choose one of"),
        ({"window": 10}, "epitome.window=10: smaller than one patch"),
        ({"tol": math.nan}, "epitome.tol=nan: must be a number >= 0"),
    ):
        with pytest.raises(ConfigError, match=match):
            job(**settings)


def test_window_nodata_is_nodata_in_the_maps() -> None:
    gen = torch.Generator().manual_seed(0)
    image = torch.rand(4, 40, 40, generator=gen)
    valid = torch.ones(40, 40, dtype=torch.bool)
    valid[:, :5] = False
    nlcd = torch.full((40, 40), NLCD_CODES.index(41))
    nlcd[30:] = 0
    prob, ok = epitome_window(
        image, valid, nlcd, torch.from_numpy(MATRIX).float(), EpitomeParams(), gen
    )
    assert torch.equal(ok, valid & (nlcd != 0))
    assert torch.isfinite(prob[:, ok]).all() and torch.allclose(prob[:, ok].sum(0), torch.ones(1))


@needs_cuda
def test_cuda_equals_cpu() -> None:
    gen_image = torch.Generator().manual_seed(0)
    image = torch.rand(4, 64, 64, generator=gen_image)
    valid = torch.ones(64, 64, dtype=torch.bool)
    nlcd = torch.where(torch.arange(64)[None, :] < 32, 8, 13).repeat(64, 1)
    matrix = torch.from_numpy(MATRIX).float()
    out = []
    for device in ("cpu", "cuda"):
        prob, _ = epitome_window(
            image.to(device),
            valid.to(device),
            nlcd.to(device),
            matrix.to(device),
            EpitomeParams(),
            torch.Generator().manual_seed(1),
        )
        out.append(prob.cpu())
    assert torch.allclose(out[0], out[1], atol=1e-3)


# ------------------------------------------------------------------------------ the stage
def test_stage_beats_the_prior_argmax_and_is_evaluated(tmp_path: Path) -> None:
    """On a generated region, the stage's maps score better than the NLCD prior's argmax.

    The cooccurrence is counted on every tile (both methods get the same one), so that the
    tiny region's matrix is not dominated by one training tile.
    """
    splits = "[train,val,test]"
    cfg = compose_config(
        [
            "region=tiny",
            f"paths.root={tmp_path}",
            f"region.train_splits={splits}",
            "cooccurrence.allow_test=true",
            f"epitome.splits={splits}",
        ]
    )
    region(cfg)
    with warnings.catch_warnings():  # NLCD codes absent from a tiny region: uniform columns
        warnings.simplefilter("ignore", UserWarning)
        cooccurrence(cfg)
    priors = Manifest.read(prior(cfg))
    manifest = Manifest.read(epitome(cfg))
    assert len(manifest) == 4
    manifest = manifest.with_layer("prior", {t.tile_id: t.layer("prior_nlcd") for t in priors})
    maps = [
        MapSpec("prior", "prior", "prob"),
        MapSpec("epitome", "q_class"),
        MapSpec("epitome (prob)", "q_prob", "prob"),
    ]
    ev = evaluate_manifest(manifest, maps, CHESAPEAKE4, "lc", image_layer="naip")
    prior_cm, epitome_cm = ev.overall("prior"), ev.overall("epitome")
    assert np.array_equal(epitome_cm, ev.overall("epitome (prob)"))
    assert prior_cm.sum() == epitome_cm.sum()  # the same pixels are scored
    assert accuracy(epitome_cm) > accuracy(prior_cm) + 0.03
    assert mean_iou(epitome_cm) > mean_iou(prior_cm) + 0.05
    files = {f"{t.tile_id}/{n}": t.layer(n) for t in manifest for n in ("q_prob", "q_class")}
    before = stamps(files)
    epitome(cfg)
    assert stamps(files) == before  # a rerun skips every tile
    with rasterio.open(files["r1c1/q_class"]) as src:
        assert src.nodata == IGNORE_INDEX and src.colormap(1)[0] == (0, 0, 255, 255)
