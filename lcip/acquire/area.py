"""The area of a ``place`` region: a place name, a bounding box or NAIP tile ids, and a year.

``region.source`` selects the area with exactly one of

- ``place``: a name geocoded through osmnx's Nominatim geocoder (``acquire.place.geocoder_url``,
  :func:`geocode`); the area is the place's boundary polygon;
- ``bbox``: ``[minx, miny, maxx, maxy]`` in ``bbox_crs`` (default ``EPSG:4326``), reprojected
  to longitude / latitude with its edges densified;
- ``naip_tiles``: NAIP quarter-quad ids (``m_4207601_ne_18``, with or without the state
  prefix and date); the area is then the union of the matching scenes.

and the NAIP acquisition time with ``year`` (a calendar year) or ``date_range``
(``"2021-06-01/2022-09-30"``, :func:`time_range`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import shapely
from pyproj import CRS as ProjCRS
from pyproj import Transformer
from pyproj.exceptions import CRSError
from shapely.geometry.base import BaseGeometry

from lcip.errors import ConfigError, DataError, DownloadError

#: Keys of ``region.source`` that select the area (exactly one is given).
SELECTORS: tuple[str, ...] = ("place", "bbox", "naip_tiles")
_DATE = re.compile(r"\d{4}(-\d{2}-\d{2})?")


@dataclass(frozen=True)
class Area:
    """The selected area.

    Attributes:
        geometry: the area in longitude / latitude (EPSG:4326); None when only tile ids
            select it (the scenes' footprints then define it).
        label: how it was selected, for messages (``place 'Ithaca, NY'``, ``bbox [...]``).
        tiles: the NAIP quarter-quad ids asked for, or None.
    """

    geometry: BaseGeometry | None
    label: str
    tiles: tuple[str, ...] | None = None


def selector(source: Mapping[str, Any]) -> str:
    """The one area selector set in ``region.source`` (``place``, ``bbox`` or ``naip_tiles``).

    Raises:
        ConfigError: when none or several are set.
    """
    given = [k for k in SELECTORS if source.get(k) not in (None, "", [])]
    if len(given) != 1:
        raise ConfigError(
            f"region.source: set exactly one of {list(SELECTORS)} (got {given or 'none'}), "
            "e.g. region.source.place='Ithaca, NY'"
        )
    return given[0]


def bbox_polygon(bbox: Any, crs: Any = "EPSG:4326") -> BaseGeometry:
    """A bounding box in any CRS as a longitude / latitude polygon (edges densified).

    Args:
        bbox: ``[minx, miny, maxx, maxy]`` in ``crs``.
        crs: the box's CRS (anything pyproj accepts).

    Returns:
        the polygon in EPSG:4326.

    Raises:
        ConfigError: for a malformed box or an unknown CRS.
    """
    try:
        minx, miny, maxx, maxy = (float(v) for v in bbox)
    except (TypeError, ValueError):
        raise ConfigError(
            f"region.source.bbox={bbox!r}: expected [minx, miny, maxx, maxy]"
        ) from None
    if not (maxx > minx and maxy > miny):
        raise ConfigError(f"region.source.bbox={bbox!r}: empty box (max <= min)")
    try:
        src = ProjCRS.from_user_input(crs)
    except CRSError:
        raise ConfigError(f"region.source.bbox_crs={crs!r}: unknown CRS") from None
    box = shapely.segmentize(shapely.box(minx, miny, maxx, maxy), (maxx - minx) / 16)
    return to_lonlat(box, src)


def to_lonlat(geometry: BaseGeometry, crs: Any) -> BaseGeometry:
    """A geometry in ``crs`` transformed to longitude / latitude (EPSG:4326)."""
    src = ProjCRS.from_user_input(crs)
    if src == ProjCRS.from_epsg(4326):
        return geometry
    transformer = Transformer.from_crs(src, 4326, always_xy=True)

    def transform(xy: Any) -> Any:
        return np.column_stack(transformer.transform(xy[:, 0], xy[:, 1]))

    return shapely.transform(geometry, transform)


@contextmanager
def osmnx_settings(**values: Any) -> Iterator[Any]:
    """``osmnx.settings`` with some values changed, restored afterwards.

    Args:
        values: setting name -> value (e.g. ``overpass_url``, ``nominatim_url``).

    Yields:
        the osmnx module.
    """
    import osmnx as ox

    old = {k: getattr(ox.settings, k) for k in values}
    try:
        for k, v in values.items():
            setattr(ox.settings, k, v)
        yield ox
    finally:
        for k, v in old.items():
            setattr(ox.settings, k, v)


def geocode(place: str, geocoder_url: str, timeout: float = 60) -> BaseGeometry:
    """A place name's boundary polygon from a Nominatim geocoder, through osmnx.

    Args:
        place: the name (``"Ithaca, NY"``).
        geocoder_url: the Nominatim API's base URL.
        timeout: seconds per request.

    Returns:
        the place's (multi)polygon in EPSG:4326.

    Raises:
        DataError: when the geocoder finds no polygon for the name.
        DownloadError: one line naming the geocoder when it cannot be reached.
    """
    import requests
    from osmnx._errors import InsufficientResponseError

    with osmnx_settings(
        nominatim_url=geocoder_url, requests_timeout=timeout, use_cache=False, log_console=False
    ) as ox:
        try:
            gdf = ox.geocode_to_gdf(place)
        except (InsufficientResponseError, TypeError) as exc:
            raise DataError(
                f"region.source.place={place!r}: the geocoder {geocoder_url} found no area "
                f"({' '.join(str(exc).split())})"
            ) from None
        except (requests.RequestException, ValueError) as exc:
            raise DownloadError(
                f"{geocoder_url}: geocoding {place!r} failed ({' '.join(str(exc).split())})"
            ) from None
    geometry = gdf.geometry.iloc[0]
    if geometry.geom_type not in ("Polygon", "MultiPolygon"):
        # a point: a small box around it (Nominatim returns points for addresses)
        geometry = geometry.buffer(0.005)
    return geometry


def select_area(source: Mapping[str, Any], geocoder_url: str, timeout: float = 60) -> Area:
    """The area selected by ``region.source`` (see the module doc).

    Raises:
        ConfigError: for a bad selection.
        DataError: when a place name is not found.
    """
    key = selector(source)
    if key == "place":
        place = str(source["place"])
        return Area(geocode(place, geocoder_url, timeout), f"place {place!r}")
    if key == "bbox":
        crs = source.get("bbox_crs") or "EPSG:4326"
        return Area(bbox_polygon(source["bbox"], crs), f"bbox {list(source['bbox'])} ({crs})")
    tiles = source["naip_tiles"]
    tiles = [tiles] if isinstance(tiles, str) else list(tiles)
    quads = tuple(sorted({quarter_quad(str(t)) for t in tiles}))
    return Area(None, f"NAIP tiles {list(quads)}", quads)


def quarter_quad(name: str) -> str:
    """The NAIP quarter-quad key (``m_4207601_ne_18``) of a tile id, scene id or file name.

    Raises:
        ConfigError: when ``name`` holds no quarter-quad id.
    """
    match = re.search(r"m_(\d{7})_(ne|nw|se|sw)_(\d{2})", name.lower())
    if match is None:
        raise ConfigError(f"NAIP tile {name!r}: expected a quarter-quad id like m_4207601_ne_18")
    return f"m_{match.group(1)}_{match.group(2)}_{match.group(3)}"


def time_range(source: Mapping[str, Any]) -> str:
    """The NAIP search interval ``start/end`` from ``year`` or ``date_range``.

    Raises:
        ConfigError: when neither or both are set, or a date is malformed.
    """
    year, dates = source.get("year"), source.get("date_range")
    if (year is None) == (dates is None):
        raise ConfigError(
            "region.source: set one of year (e.g. 2022) or date_range "
            "(e.g. '2021-06-01/2022-09-30')"
        )
    if year is not None:
        try:
            y = int(year)
        except (TypeError, ValueError):
            raise ConfigError(f"region.source.year={year!r}: expected a year") from None
        return f"{y}-01-01/{y}-12-31"
    parts = str(dates).split("/")
    if len(parts) != 2 or not all(_DATE.fullmatch(p) for p in parts):
        raise ConfigError(f"region.source.date_range={dates!r}: expected 'YYYY-MM-DD/YYYY-MM-DD'")
    start, end = parts
    start = start if len(start) > 4 else f"{start}-01-01"
    end = end if len(end) > 4 else f"{end}-12-31"
    return f"{start}/{end}"


def nominal_year(source: Mapping[str, Any]) -> int:
    """The year of the NAIP imagery asked for (the end year of a ``date_range``)."""
    return int(time_range(source).split("/")[1][:4])


__all__ = [
    "SELECTORS",
    "Area",
    "bbox_polygon",
    "geocode",
    "nominal_year",
    "osmnx_settings",
    "quarter_quad",
    "select_area",
    "selector",
    "time_range",
    "to_lonlat",
]
