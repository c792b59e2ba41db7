import os
import stat
from pathlib import Path

import numpy as np
import pytest

from lcip.atomic import write_text
from lcip.errors import DataError
from lcip.raster import check_same_grid, write_raster
from tests.conftest import make_grid


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_respect_the_umask(tmp_path: Path, umask: int, mode: int) -> None:
    old = os.umask(umask)
    try:
        text = write_text(tmp_path / "a.md", "x")
        tif = write_raster(tmp_path / "a.tif", np.zeros((8, 8), np.uint8), make_grid(8))
    finally:
        os.umask(old)
    assert stat.S_IMODE(text.stat().st_mode) == mode
    assert stat.S_IMODE(tif.stat().st_mode) == mode


def test_truncated_raster_is_caught_on_open(tmp_path: Path) -> None:
    grid = make_grid(300)
    good = write_raster(
        tmp_path / "good.tif", np.arange(300 * 300, dtype=np.float32).reshape(300, 300), grid
    )
    bad = tmp_path / "bad.tif"
    data = good.read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    assert check_same_grid({"good": good}).shape == (300, 300)
    with pytest.raises(DataError, match=rf"^{bad}: truncated or corrupt raster \("):
        check_same_grid({"good": good, "bad": bad})
