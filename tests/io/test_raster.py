from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.crs import CRS

from lcip.errors import DataError, GridMismatchError
from lcip.io.raster import (
    Grid,
    check_same_grid,
    is_valid_raster,
    raster_writer,
    read_on_grid,
    strip_windows,
    write_raster,
)
from tests.conftest import make_grid


def test_write_raster_profile(tmp_path: Path) -> None:
    grid = make_grid(300, width=260)
    data = np.arange(2 * 300 * 260, dtype=np.float32).reshape(2, 300, 260)
    path = write_raster(
        tmp_path / "a" / "x.tif",
        data,
        grid,
        nodata=float("nan"),
        tags={"k": 1},
        band_names=["u", "v"],
    )
    with rasterio.open(path) as src:
        assert src.crs == grid.crs and src.transform == grid.transform
        assert (src.height, src.width, src.count, src.dtypes[0]) == (300, 260, 2, "float32")
        assert src.profile["tiled"] and src.block_shapes[0] == (256, 256)
        assert src.compression.name.lower() == "deflate"
        assert src.tags()["k"] == "1" and src.descriptions == ("u", "v")
        np.testing.assert_array_equal(src.read(), data)
    assert list(tmp_path.glob("a/.*tmp")) == []


def test_atomic_write_keeps_old_file_on_error(tmp_path: Path) -> None:
    grid = make_grid(32)
    path = write_raster(tmp_path / "x.tif", np.ones((32, 32), np.uint8), grid)
    with pytest.raises(RuntimeError), raster_writer(path, grid, 1, "uint8") as dst:
        dst.write(np.zeros((1, 32, 32), np.uint8))
        raise RuntimeError("interrupted")
    with rasterio.open(path) as src:
        assert src.read(1).min() == 1  # the old file is intact
    assert [p.name for p in tmp_path.iterdir()] == ["x.tif"]


def test_read_on_grid_aligned_and_warped(tmp_path: Path) -> None:
    # A 30 m raster whose grid is offset by 7 m from the 1 m target grid.
    coarse = Grid(
        CRS.from_epsg(32618), Affine(30.0, 0, 400000.0 - 7, 0, -30.0, 4300000.0 + 7), 10, 10
    )
    codes = np.arange(100, dtype=np.uint8).reshape(10, 10)
    path = write_raster(tmp_path / "c.tif", codes, coarse, nodata=0)
    target = make_grid(60)
    out = read_on_grid(path, target, bands=1)
    assert out.shape == (60, 60)
    # pixel (r, c) of the target lies at source pixel ((r + 7) // 30, (c + 7) // 30)
    rr, cc = np.mgrid[0:60, 0:60]
    np.testing.assert_array_equal(out, codes[(rr + 7) // 30, (cc + 7) // 30])
    # aligned, boundless read with fill outside the source
    fine = write_raster(tmp_path / "f.tif", np.ones((20, 20), np.uint8), make_grid(20), nodata=0)
    out = read_on_grid(
        fine, make_grid(40).expand(0).window(rasterio.windows.Window(-10, -10, 40, 40)), bands=1
    )
    assert out[10:30, 10:30].min() == 1 and out[:10].max() == 0


def test_grid_checks(tmp_path: Path) -> None:
    a = write_raster(tmp_path / "a.tif", np.zeros((16, 16), np.uint8), make_grid(16))
    b = write_raster(
        tmp_path / "b.tif",
        np.zeros((16, 16), np.uint8),
        make_grid(16, origin=(400001.0, 4300000.0)),
    )
    assert check_same_grid({"a": a, "a2": a}).shape == (16, 16)
    with pytest.raises(GridMismatchError, match=r"b\.tif: layer 'prior' of tile x is on grid"):
        check_same_grid({"naip": a, "prior": b}, "tile x")
    assert is_valid_raster(a, make_grid(16), count=1)
    assert not is_valid_raster(a, make_grid(17))
    (tmp_path / "bad.tif").write_bytes(b"not a tiff")
    assert not is_valid_raster(tmp_path / "bad.tif")
    with pytest.raises(DataError, match=r"bad\.tif: cannot be read as a raster"):
        Grid.of(tmp_path / "bad.tif")
    with pytest.raises(DataError, match="does not exist"):
        Grid.of(tmp_path / "none.tif")


def test_grid_expand_and_window() -> None:
    g = make_grid(10)
    e = g.expand(3)
    assert (
        e.shape == (16, 16)
        and e.transform.c == g.transform.c - 3
        and e.transform.f == g.transform.f + 3
    )
    assert e.window(rasterio.windows.Window(3, 3, 10, 10)).same_as(g)


def test_cog_writer_streams_windows(tmp_path: Path) -> None:
    grid = make_grid(600, width=520)
    rng = np.random.default_rng(0)
    prob = rng.random((4, 600, 520), dtype=np.float32)
    prob[:, :10] = np.nan
    # class map whose 2x2 blocks hold 3 pixels of one class and, top-left, 1 of another:
    # mode overviews keep the majority, nearest would keep the top-left pixel
    major = rng.integers(0, 4, (300, 260)).astype(np.uint8)
    cls = np.kron(major, np.ones((2, 2), np.uint8))
    cls[::2, ::2] = (cls[::2, ::2] + 1) % 4
    colors = {0: (0, 0, 255, 255), 1: (0, 255, 0, 255)}
    with (
        raster_writer(
            tmp_path / "p.tif",
            grid,
            4,
            "float32",
            nodata=float("nan"),
            tags={"k": "v"},
            band_names=["a", "b", "c", "d"],
            cog=True,
        ) as p,
        raster_writer(
            tmp_path / "c.tif", grid, 1, "uint8", nodata=255, colormap=colors, cog=True
        ) as c,
    ):
        for w in strip_windows(grid, 256):
            rs, cs = w.toslices()
            p.write(prob[:, rs, cs], window=w)
            c.write(cls[None, rs, cs], window=w)
        assert len(list(tmp_path.glob(".*.scratch.tif"))) == 2  # written window by window
        assert not (tmp_path / "p.tif").exists()  # nothing before the block exits
    for name, data, dtype in (("p", prob, "float32"), ("c", cls[None], "uint8")):
        with rasterio.open(tmp_path / f"{name}.tif") as src:
            assert (src.crs, src.transform, src.shape) == (grid.crs, grid.transform, grid.shape)
            assert (src.count, src.dtypes[0]) == (data.shape[0], dtype)
            assert src.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
            assert src.profile["tiled"] and src.block_shapes[0] == (256, 256)
            assert src.compression.name.lower() == "deflate"
            assert src.overviews(1)[0] == 2
            np.testing.assert_array_equal(src.read(), data)
            overview = src.read(out_shape=(data.shape[0], 300, 260))
            tags, descriptions, nodata = src.tags(), src.descriptions, src.nodata
            palette = src.colormap(1) if name == "c" else None
        if name == "p":
            assert tags["k"] == "v" and descriptions == ("a", "b", "c", "d")
            assert np.isnan(nodata)
            # average overviews: the mean of each 2x2 block (NaN blocks stay NaN)
            mean = prob[:, 10:].reshape(4, 295, 2, 260, 2).mean(axis=(2, 4))
            np.testing.assert_allclose(overview[:, 5:], mean, rtol=1e-5)
            assert np.isnan(overview[:, :5]).all()
        else:
            assert nodata == 255 and palette is not None and palette[1] == colors[1]
            np.testing.assert_array_equal(overview[0], major)  # mode overviews
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.tif", "p.tif"]


def test_cog_writer_is_atomic(tmp_path: Path) -> None:
    grid = make_grid(300)
    path = write_raster(tmp_path / "x.tif", np.ones((300, 300), np.uint8), grid, cog=True)
    with pytest.raises(RuntimeError), raster_writer(path, grid, 1, "uint8", cog=True) as dst:
        dst.write(np.zeros((1, 300, 300), np.uint8))
        raise RuntimeError("interrupted")
    with rasterio.open(path) as src:
        assert src.read(1).min() == 1  # the old file is intact
    assert [p.name for p in tmp_path.iterdir()] == ["x.tif"]  # no scratch or temporary file


def test_strip_windows() -> None:
    strips = list(strip_windows(make_grid(600, width=30), 256))
    assert [(w.col_off, w.row_off, w.width, w.height) for w in strips] == [
        (0, 0, 30, 256),
        (0, 256, 30, 256),
        (0, 512, 30, 88),
    ]
    with pytest.raises(ValueError, match="multiple of 256"):
        list(strip_windows(make_grid(600), 100))
