"""One self-contained HTML page of a map: layers over the imagery, a legend and the area tables.

The page is a single file that needs no network: every layer is a PNG embedded as base64 (a
preview of the mosaic, at most :data:`MAX_PREVIEW_PX` pixels on its long side), stacked in one
box. The imagery lies at the bottom; the selected layer (prior, map or confidence) is drawn over
it at the chosen opacity. The layer and opacity are read from the URL hash on load and when it
changes (``index.html#layer=confidence&opacity=0.6``), and the radio buttons and slider write
it, so a view can be bookmarked or shared.

Layout (CSS pixels): the map box's top-left corner is at (:data:`MAP_LEFT`, :data:`MAP_TOP`),
its size is :func:`display_size`; the legend and layer switch sit to its right, the tables
below it.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from affine import Affine
from PIL import Image
from rasterio.enums import Resampling

from lcip.classes import IGNORE_INDEX, ClassScheme
from lcip.io.atomic import write_text
from lcip.io.raster import Grid, read_on_grid

#: Longest side of the layer previews, in pixels.
MAX_PREVIEW_PX = 1024

#: Left edge of the map box on the page, CSS pixels.
MAP_LEFT = 16

#: Top edge of the map box on the page, CSS pixels.
MAP_TOP = 72

#: Longest side of the map box, CSS pixels.
MAP_SIZE = 640

#: The layers of the page, bottom to top, and the one shown first.
LAYERS = ("imagery", "prior", "map", "confidence")
DEFAULT_LAYER = "map"

#: Colour stops of the confidence ramp (matplotlib's viridis at 0, 1/8, ..., 1).
_VIRIDIS = (
    (68, 1, 84),
    (70, 50, 127),
    (54, 92, 141),
    (39, 127, 142),
    (31, 161, 135),
    (74, 194, 109),
    (159, 218, 58),
    (253, 231, 37),
)


def preview_grid(grid: Grid, max_px: int = MAX_PREVIEW_PX) -> Grid:
    """The grid of a layer preview: ``grid`` coarsened so its long side is at most ``max_px``."""
    factor = max(1, math.ceil(max(grid.height, grid.width) / max_px))
    return Grid(
        grid.crs,
        grid.transform * Affine.scale(factor),
        math.ceil(grid.height / factor),
        math.ceil(grid.width / factor),
    )


def display_size(height: int, width: int) -> tuple[int, int]:
    """The map box's (height, width) on the page for a preview of that shape."""
    scale = MAP_SIZE / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def read_preview(
    paths: Sequence[Path], grid: Grid, *, fill: float, dtype: str, bands: list[int] | None = None
) -> npt.NDArray[np.generic]:
    """Read rasters onto a preview grid (nearest), the first holding data winning each pixel.

    Args:
        paths: the rasters, in priority order (e.g. a mosaic VRT, or the tiles of a layer).
        grid: the preview grid.
        fill: the value of pixels no raster covers (NaN for floats).
        dtype: the output type.
        bands: 1-based bands to read (None: all).

    Returns:
        (bands, height, width).
    """
    out: npt.NDArray[np.generic] | None = None
    for path in paths:
        data = read_on_grid(
            path, grid, bands=bands, resampling=Resampling.nearest, fill=fill, dtype=dtype
        )
        if out is None:
            out = data
            continue
        empty = _empty(out, fill)
        out = np.where(empty[None], data, out)
    if out is None:
        raise ValueError("read_preview needs at least one raster")
    return out


def _empty(data: npt.NDArray[np.generic], fill: float) -> npt.NDArray[np.bool_]:
    """Pixels with no data in any band (equal to ``fill``, or NaN)."""
    if np.issubdtype(data.dtype, np.floating):
        return np.asarray((np.isnan(data) | (data == fill)).all(axis=0))
    return np.asarray((data == fill).all(axis=0))


def classes_rgba(classes: npt.NDArray[np.integer], scheme: ClassScheme) -> npt.NDArray[np.uint8]:
    """RGBA of a class map in the scheme's colours (nodata transparent)."""
    lut = np.zeros((256, 4), dtype=np.uint8)
    lut[: scheme.num_classes, :3] = np.asarray(scheme.colors, dtype=np.uint8)
    lut[: scheme.num_classes, 3] = 255
    lut[IGNORE_INDEX] = 0
    return lut[np.asarray(classes, dtype=np.uint8)]


def ramp_rgba(values: npt.NDArray[np.floating], lo: float, hi: float) -> npt.NDArray[np.uint8]:
    """RGBA of values on the confidence ramp from ``lo`` to ``hi`` (NaN transparent)."""
    stops = np.asarray(_VIRIDIS, dtype=np.float64)
    t = np.clip((np.asarray(values, dtype=np.float64) - lo) / max(hi - lo, 1e-12), 0, 1)
    pos = np.nan_to_num(t) * (len(stops) - 1)
    i = np.minimum(pos.astype(np.int64), len(stops) - 2)
    frac = (pos - i)[..., None]
    rgb = stops[i] * (1 - frac) + stops[i + 1] * frac
    alpha = np.where(np.isnan(values), 0, 255)[..., None]
    return np.concatenate([np.rint(rgb), alpha], axis=-1).astype(np.uint8)


def imagery_rgba(image: npt.NDArray[Any]) -> npt.NDArray[np.uint8]:
    """RGBA of imagery (bands, H, W): the first three bands, stretched 2-98 %, nodata clear."""
    rgb = np.asarray(image[:3], dtype=np.float64)
    if rgb.shape[0] < 3:
        rgb = np.repeat(rgb[:1], 3, axis=0)
    valid = np.isfinite(rgb).all(axis=0) & (rgb != 0).any(axis=0)
    if valid.any():
        lo, hi = np.percentile(rgb[:, valid], (2, 98))
    else:
        lo, hi = 0.0, 1.0
    scaled = np.clip((np.nan_to_num(rgb) - lo) / max(hi - lo, 1e-9), 0, 1) * 255
    alpha = np.where(valid, 255, 0)[None]
    return np.moveaxis(np.concatenate([np.rint(scaled), alpha]), 0, -1).astype(np.uint8)


def png_data_uri(rgba: npt.NDArray[np.uint8]) -> str:
    """A PNG of an RGBA array as a ``data:`` URI."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgba), "RGBA").save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _css_rgb(color: Sequence[int]) -> str:
    return f"rgb({int(color[0])},{int(color[1])},{int(color[2])})"


def _table_html(table: pd.DataFrame, caption: str, max_rows: int = 500) -> str:
    shown = table.head(max_rows)
    more = len(table) - len(shown)
    body = shown.to_html(index=False, na_rep="", float_format=lambda v: f"{v:,.2f}", border=0)
    note = f"<p>{more} more rows in the CSV.</p>" if more > 0 else ""
    return f"<h2>{html.escape(caption)}</h2>\n{body}\n{note}"


_STYLE = """
body {{ margin: 0; font: 14px/1.4 system-ui, sans-serif; color: #222; background: #fff; }}
header {{ position: absolute; left: {left}px; top: 8px; }}
header h1 {{ margin: 0; font-size: 20px; }}
header p {{ margin: 2px 0 0; color: #555; font-size: 12px; }}
#map {{ position: absolute; left: {left}px; top: {top}px; width: {w}px; height: {h}px;
       background: #fff; overflow: hidden; }}
#map img {{ position: absolute; left: 0; top: 0; width: {w}px; height: {h}px;
           image-rendering: pixelated; }}
#side {{ position: absolute; left: {side}px; top: {top}px; width: 300px; }}
#side fieldset {{ border: 1px solid #ccc; margin: 0 0 12px; }}
.swatch {{ display: inline-block; width: 18px; height: 18px; vertical-align: middle;
          margin-right: 6px; border: 1px solid #888; }}
#legend-classes div {{ margin: 3px 0; }}
#ramp {{ height: 18px; border: 1px solid #888; background: linear-gradient(to right, {ramp}); }}
#tables {{ position: absolute; left: {left}px; top: {below}px; right: 16px; }}
table {{ border-collapse: collapse; margin-bottom: 16px; }}
th, td {{ padding: 2px 8px; border-bottom: 1px solid #ddd; text-align: right; }}
th:first-child, td:first-child {{ text-align: left; }}
"""

_SCRIPT = """
const LAYERS = %s;
const DEFAULT_LAYER = %s;
function show(name, opacity) {
  for (const l of LAYERS) {
    const img = document.getElementById("layer-" + l);
    if (!img || l === "imagery") continue;
    img.style.display = l === name ? "block" : "none";
    img.style.opacity = opacity;
  }
  for (const input of document.querySelectorAll("input[name=layer]")) {
    input.checked = input.value === name;
  }
  document.getElementById("opacity").value = Math.round(opacity * 100);
  document.getElementById("legend-classes").style.display =
    name === "map" || name === "prior" ? "block" : "none";
  document.getElementById("legend-confidence").style.display =
    name === "confidence" ? "block" : "none";
  document.body.dataset.layer = name;
}
function fromHash() {
  const params = new URLSearchParams(location.hash.slice(1));
  let name = params.get("layer") || DEFAULT_LAYER;
  if (!LAYERS.includes(name) || !document.getElementById("layer-" + name)) name = DEFAULT_LAYER;
  let opacity = parseFloat(params.get("opacity"));
  if (!(opacity >= 0 && opacity <= 1)) opacity = 1;
  show(name, opacity);
}
function toHash() {
  const name = document.querySelector("input[name=layer]:checked").value;
  const opacity = document.getElementById("opacity").value / 100;
  location.hash = "layer=" + name + "&opacity=" + opacity;
}
for (const input of document.querySelectorAll("input[name=layer], #opacity")) {
  input.addEventListener("change", toHash);
}
window.addEventListener("hashchange", fromHash);
fromHash();
"""


def page_html(
    title: str,
    images: Mapping[str, str],
    scheme: ClassScheme,
    totals: pd.DataFrame,
    tables: Sequence[tuple[str, pd.DataFrame]],
    preview_shape: tuple[int, int],
    confidence_label: str,
    confidence_range: tuple[float, float],
    subtitle: str = "",
) -> str:
    """The page's HTML text.

    Args:
        title: the page title (e.g. the map's name).
        images: layer name (of :data:`LAYERS`) -> PNG data URI; the map layer is required.
        scheme: the class scheme (legend).
        totals: the whole area's table (``class``, ``ha``, ``pct``), shown in the legend too.
        tables: (caption, table) pairs shown below the map.
        preview_shape: the previews' (height, width).
        confidence_label: what the confidence layer shows (e.g. ``max probability of r``).
        confidence_range: the values at the two ends of the ramp.
        subtitle: a line under the title (e.g. what made the map).

    Returns:
        the HTML document.
    """
    h, w = display_size(*preview_shape)
    ramp = ", ".join(_css_rgb(c) for c in _VIRIDIS)
    style = _STYLE.format(
        left=MAP_LEFT,
        top=MAP_TOP,
        w=w,
        h=h,
        side=MAP_LEFT + w + 24,
        below=MAP_TOP + h + 24,
        ramp=ramp,
    )
    present = [name for name in LAYERS if name in images]
    hidden = ' style="display:none"'
    imgs = "\n".join(
        f'<img id="layer-{name}" alt="{name}" src="{images[name]}"'
        f"{'' if name == 'imagery' else hidden}>"
        for name in present
    )
    radios = "\n".join(
        f'<label><input type="radio" name="layer" value="{name}"> {name}</label><br>'
        for name in present
    )
    by_class = dict(
        zip(totals["class"], zip(totals["ha"], totals["pct"], strict=True), strict=True)
    )
    legend = "\n".join(
        f'<div><span class="swatch" style="background:{_css_rgb(color)}"></span>'
        f"{html.escape(name)} <small>{by_class.get(name, (0.0, 0.0))[0]:,.2f} ha, "
        f"{by_class.get(name, (0.0, 0.0))[1]:.1f} %</small></div>"
        for name, color in zip(scheme.classes, scheme.colors, strict=True)
    )
    lo, hi = confidence_range
    body_tables = "\n".join(_table_html(t, caption) for caption, t in tables)
    script = _SCRIPT % (json.dumps(present), json.dumps(DEFAULT_LAYER))
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{html.escape(title)}</title>
<style>{style}</style>
</head>
<body>
<header><h1>{html.escape(title)}</h1><p>{html.escape(subtitle)}</p></header>
<div id="map">
{imgs}
</div>
<div id="side">
<fieldset id="layers"><legend>Layer</legend>
{radios}
<label>Opacity <input type="range" id="opacity" min="0" max="100" value="100"></label>
</fieldset>
<fieldset id="legend-classes"><legend>Classes</legend>
{legend}
</fieldset>
<fieldset id="legend-confidence" style="display:none">
<legend>{html.escape(confidence_label)}</legend>
<div id="ramp"></div><span>{lo:.2f}</span><span style="float:right">{hi:.2f}</span>
</fieldset>
</div>
<div id="tables">
{body_tables}
</div>
<script>{script}</script>
</body>
</html>
"""


def write_page(path: Path, text: str) -> Path:
    """Write the page atomically."""
    return write_text(path, text)


__all__ = [
    "DEFAULT_LAYER",
    "LAYERS",
    "MAP_LEFT",
    "MAP_SIZE",
    "MAP_TOP",
    "MAX_PREVIEW_PX",
    "classes_rgba",
    "display_size",
    "imagery_rgba",
    "page_html",
    "png_data_uri",
    "preview_grid",
    "ramp_rgba",
    "read_preview",
    "write_page",
]
