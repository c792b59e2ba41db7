import os
import stat
from pathlib import Path

import numpy as np
import pytest

from lcip.errors import DataError
from lcip.io.atomic import atomic_write, write_text
from lcip.io.raster import Grid, check_same_grid, is_valid_raster, raster_writer, write_raster
from tests.conftest import make_grid


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_respect_the_umask(tmp_path: Path, umask: int, mode: int) -> None:
    grid = make_grid(300)
    old = os.umask(umask)
    try:
        written = [
            write_text(tmp_path / "a.md", "x"),
            atomic_write(tmp_path / "b.bin", lambda f: f.write(b"\0")),
            write_raster(tmp_path / "a.tif", np.zeros((8, 8), np.uint8), make_grid(8)),
            write_raster(tmp_path / "b.tif", np.zeros((300, 300), np.uint8), grid, cog=True),
        ]
        with raster_writer(tmp_path / "c.tif", grid, 1, "uint8", cog=True) as dst:
            dst.write(np.ones((1, 300, 300), np.uint8))
        written.append(tmp_path / "c.tif")
    finally:
        os.umask(old)
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in written} == {
        p.name: mode for p in written
    }
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in written)


def test_failed_atomic_write_leaves_nothing(tmp_path: Path) -> None:
    def fail(f: object) -> None:
        raise OSError("disk full")

    write_text(tmp_path / "a.md", "old")
    with pytest.raises(OSError, match="disk full"):
        atomic_write(tmp_path / "a.md", fail)
    assert (tmp_path / "a.md").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.md"]


@pytest.mark.parametrize("cog", [False, True])
def test_truncated_raster_is_caught_on_open(tmp_path: Path, cog: bool) -> None:
    grid = make_grid(600, width=520)
    data = np.random.default_rng(0).random((2, 600, 520), dtype=np.float32)
    good = write_raster(tmp_path / "good.tif", data, grid, cog=cog)
    bad = tmp_path / "bad.tif"
    content = good.read_bytes()
    bad.write_bytes(content[: len(content) // 2])
    assert check_same_grid({"good": good}).shape == (600, 520)
    assert is_valid_raster(good, grid, 2) and not is_valid_raster(bad)
    with pytest.raises(DataError, match=rf"^{bad}: truncated or corrupt raster \(.+\)$"):
        check_same_grid({"good": good, "bad": bad})
    with pytest.raises(DataError, match=rf"^{bad}: truncated or corrupt raster \("):
        Grid.of(bad)
