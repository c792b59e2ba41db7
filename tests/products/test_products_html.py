"""The map products' HTML page, rendered by headless Chromium and its screenshots checked.

Skips when ``chromium`` is not installed, unless ``LCIP_REQUIRE_CHROMIUM`` is set (as
``.ci/run`` does, after installing it): then a missing browser fails the test.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest
import rasterio
from PIL import Image

from lcip.classes import IGNORE_INDEX
from lcip.errors import ConfigError, DataError
from lcip.io.raster import Grid
from lcip.products import make_products
from lcip.products.html import MAP_LEFT, MAP_TOP, display_size, preview_grid
from lcip.products.screenshot import find_browser, render_page
from tests.products.test_products import SCHEME, make_predictions, make_zones

REQUIRE_CHROMIUM = "LCIP_REQUIRE_CHROMIUM"  # set by .ci/run: this test must not skip there
WINDOW = (1200, 1000)


def chromium() -> str:
    found = find_browser()
    if found:
        return found
    if os.environ.get(REQUIRE_CHROMIUM):
        pytest.fail(
            f"{REQUIRE_CHROMIUM} is set but no chromium is on PATH (apt-get install chromium)"
        )
    pytest.skip("chromium is not installed (apt-get install chromium); the page is not rendered")


def screenshot(page: Path, fragment: str, tmp: Path) -> np.ndarray:
    """The page rendered by headless Chromium at WINDOW, as RGB."""
    name = re.sub(r"\W+", "_", fragment) or "default"
    png = render_page(
        page, tmp / f"shot-{name}.png", fragment=fragment, size=WINDOW, browser=chromium()
    )
    return np.asarray(Image.open(png).convert("RGB"))


def colour_mask(img: np.ndarray, color: tuple[int, int, int]) -> np.ndarray:
    return (img == np.asarray(color, dtype=np.uint8)).all(axis=-1)


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Path]]:
    root = tmp_path_factory.mktemp("page")
    predictions = make_predictions(root / "run")
    zones = make_zones(root / "tracts.geojson")
    products = make_products(
        predictions, SCHEME, root / "maps" / "fake", zones=zones, zones_id="GEOID"
    )
    return products["html"], products


def test_page_is_self_contained(page: tuple[Path, dict[str, Path]]) -> None:
    path, _ = page
    text = path.read_text()
    assert "http://" not in text and "https://" not in text and "<link" not in text
    sources = re.findall(r'<img id="layer-(\w+)"[^>]* src="([^"]{0,40})', text)
    assert [name for name, _ in sources] == ["imagery", "prior", "map", "confidence"]
    assert all(src.startswith("data:image/png;base64,") for _, src in sources)
    assert "z_ab" in text and "tree canopy" in text  # the area tables


def test_screenshots_show_map_legend_and_layer_switch(
    page: tuple[Path, dict[str, Path]], tmp_path: Path
) -> None:
    path, products = page
    with rasterio.open(products["class_vrt"]) as src:
        classes = src.read(1)
        grid = Grid(src.crs, src.transform, src.height, src.width)
    h, w = display_size(*preview_grid(grid).shape)
    box = (slice(MAP_TOP, MAP_TOP + h), slice(MAP_LEFT, MAP_LEFT + w))
    side = (slice(MAP_TOP, MAP_TOP + 400), slice(MAP_LEFT + w + 24, WINDOW[0]))

    shots = {
        name: screenshot(path, fragment, tmp_path)
        for name, fragment in (
            ("default", ""),
            ("map", "#layer=map&opacity=1"),
            ("confidence", "#layer=confidence"),
            ("imagery", "#layer=imagery"),
        )
    }
    assert np.array_equal(shots["default"], shots["map"])  # the map is shown first

    # The map box shows the class map: each screen pixel, mapped back to the mosaic, has its
    # class's colour where the mosaic is valid (nearest-neighbour scaling of the preview).
    shot = shots["map"][box]
    rows = np.minimum(((np.arange(h) + 0.5) * grid.height / h).astype(int), grid.height - 1)
    cols = np.minimum(((np.arange(w) + 0.5) * grid.width / w).astype(int), grid.width - 1)
    under = classes[np.ix_(rows, cols)]
    valid = under != IGNORE_INDEX
    lut = np.asarray(SCHEME.colors, dtype=np.uint8)
    same = (shot == lut[np.where(valid, under, 0)]).all(axis=-1)
    assert valid.mean() > 0.3 and same[valid].mean() > 0.97, same[valid].mean()
    # ... and in the proportions of the map's classes
    in_colour = np.array([colour_mask(shot, c).sum() for c in SCHEME.colors], dtype=float)
    expected = np.bincount(classes[classes != IGNORE_INDEX], minlength=len(lut))[: len(lut)]
    np.testing.assert_allclose(in_colour / in_colour.sum(), expected / expected.sum(), atol=0.02)

    # The legend shows a swatch of every class colour beside the map.
    for color in SCHEME.colors:
        assert colour_mask(shots["map"][side], color).sum() >= 200, color

    # Switching layers changes the map box: the confidence ramp and the imagery hold (almost)
    # no class colour, and differ from the map and from each other.
    for name in ("confidence", "imagery"):
        other = shots[name][box]
        class_like = sum(colour_mask(other, c) for c in SCHEME.colors)
        assert class_like[valid].mean() < 0.05, name
        assert (other != shot).any(axis=-1)[valid].mean() > 0.9, name
    assert (shots["confidence"][box] != shots["imagery"][box]).any(axis=-1)[valid].mean() > 0.9
    # the confidence legend (viridis ends) appears only with the confidence layer
    ramp_ends = [(68, 1, 84), (253, 231, 37)]
    for color in ramp_ends:
        near = (np.abs(shots["confidence"][side].astype(int) - color).sum(axis=-1) < 12).sum()
        assert near >= 20, color
        near_map = (np.abs(shots["map"][side].astype(int) - color).sum(axis=-1) < 12).sum()
        assert near_map == 0, color


def test_render_page_errors_are_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    page = tmp_path / "p.html"
    page.write_text("<html><body>x</body></html>")
    png = tmp_path / "p.png"
    with pytest.raises(DataError, match=r"p\.html: /bin/false wrote no screenshot \(exit 1"):
        render_page(page, png, browser="/bin/false")
    assert not png.exists() and list(tmp_path.iterdir()) == [page]  # nothing half-written
    monkeypatch.setenv("PATH", str(tmp_path))  # no browser on PATH
    with pytest.raises(ConfigError, match=r"map\.screenshot=true needs Chromium"):
        render_page(page, png)
