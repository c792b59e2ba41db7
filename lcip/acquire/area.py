"""The area of a ``place`` region: a place name, a bounding box or NAIP tile ids, and a year.

``region.source`` selects the area with exactly one of

- ``place``: a name geocoded through osmnx's Nominatim geocoder (``acquire.place.geocoder_url``,
  :func:`geocode`); the area is the place's boundary polygon, or 1 km around it when the
  geocoder knows it only as a point (a village); answers are cached under
  ``<acquire.dir>/place/geocode/``;
- ``bbox``: ``[minx, miny, maxx, maxy]`` in ``bbox_crs`` (default ``EPSG:4326``), reprojected
  to longitude / latitude with its edges densified;
- ``naip_tiles``: NAIP quarter-quad ids (``m_4207601_ne_18``, with or without the state
  prefix and date); the area is then the union of the matching scenes.

and the NAIP acquisition time with ``year`` (a calendar year) or ``date_range``
(``"2021-06-01/2022-09-30"``, :func:`time_range`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from pyproj import CRS as ProjCRS
from pyproj import Transformer
from pyproj.exceptions import CRSError
from shapely.geometry import shape
from shapely.geometry.base import BaseGeometry

from lcip.errors import ConfigError, DataError, DownloadError
from lcip.io.atomic import write_text

log = logging.getLogger(__name__)

#: Keys of ``region.source`` that select the area (exactly one is given).
SELECTORS: tuple[str, ...] = ("place", "bbox", "naip_tiles")
_DATE = re.compile(r"\d{4}(-\d{2}-\d{2})?")
#: Radius (metres) of the area around a place the geocoder knows only as a point (a village).
POINT_BUFFER_M = 1000.0


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

    osmnx sends lcip's ``User-Agent`` (:func:`lcip.acquire.http.user_agent`) unless
    ``http_user_agent`` is given: Nominatim and Overpass ask clients to identify themselves and
    have blocked stock library agents.

    Args:
        values: setting name -> value (e.g. ``overpass_url``, ``nominatim_url``).

    Yields:
        the osmnx module.
    """
    import osmnx as ox

    from lcip.acquire.http import user_agent

    values = {"http_user_agent": user_agent(), **values}
    old = {k: getattr(ox.settings, k) for k in values}
    try:
        for k, v in values.items():
            setattr(ox.settings, k, v)
        yield ox
    finally:
        for k, v in old.items():
            setattr(ox.settings, k, v)


def point_area(lon: float, lat: float, radius_m: float = POINT_BUFFER_M) -> BaseGeometry:
    """A disc of ``radius_m`` metres around a point, in longitude / latitude.

    The disc is drawn in an azimuthal equidistant projection centred on the point (distances
    from the centre are true there), then transformed to EPSG:4326.
    """
    local = ProjCRS.from_proj4(f"+proj=aeqd +lat_0={lat} +lon_0={lon} +datum=WGS84 +units=m")
    return to_lonlat(shapely.Point(0.0, 0.0).buffer(radius_m, quad_segs=16), local)


def geocode_cache_name(place: str, geocoder_url: str) -> str:
    """The cache file name of a geocoding answer: a hash of the name and the geocoder."""
    key = json.dumps([place, geocoder_url.rstrip("/")])
    return f"geocode_{hashlib.sha256(key.encode()).hexdigest()[:20]}.json"


def _read_answer(path: Path) -> BaseGeometry | None:
    """A cached geocoding answer (a boundary or a point), or None when absent or unreadable."""
    if not path.is_file():
        return None
    try:
        geometry = shape(json.loads(path.read_text())["geometry"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        log.warning("%s: unreadable geocoding cache entry, asking the geocoder again", path)
        return None
    return geometry if not geometry.is_empty else None


def _ask_geocoder(place: str, geocoder_url: str, timeout: float) -> BaseGeometry:
    """The geocoder's answer for a name: its boundary (a (multi)polygon) or else its point."""
    import requests
    from osmnx._errors import InsufficientResponseError

    with osmnx_settings(
        nominatim_url=geocoder_url, requests_timeout=timeout, use_cache=False, log_console=False
    ) as ox:
        try:
            try:
                geometry = ox.geocode_to_gdf(place).geometry.iloc[0]
            except TypeError:
                # osmnx (geocoder._geocode_query_to_gdf) raises TypeError when no result is a
                # (Multi)Polygon: a village or an address that Nominatim knows as a node.
                geometry = None
            if geometry is not None and geometry.geom_type in ("Polygon", "MultiPolygon"):
                return geometry
            lat, lon = ox.geocode(place)  # the point of the best result
        except InsufficientResponseError as exc:  # no result at all
            raise DataError(
                f"region.source.place={place!r}: the geocoder {geocoder_url} found no area "
                f"({' '.join(str(exc).split())})"
            ) from None
        except (requests.RequestException, ValueError) as exc:
            raise DownloadError(
                f"{geocoder_url}: geocoding {place!r} failed ({' '.join(str(exc).split())})"
            ) from None
    return shapely.Point(float(lon), float(lat))


def geocode(
    place: str,
    geocoder_url: str,
    timeout: float = 60,
    cache_dir: Path | None = None,
    point_radius_m: float = POINT_BUFFER_M,
) -> BaseGeometry:
    """A place name's area from a Nominatim geocoder (through osmnx), cached per name and server.

    The area is the place's boundary polygon. When Nominatim knows the place only as a point
    (a village mapped as a node, an address), the area is a disc of ``point_radius_m`` around
    it (:func:`point_area`), and one log line says so.

    Args:
        place: the name (``"Ithaca, NY"``).
        geocoder_url: the Nominatim API's base URL.
        timeout: seconds per request.
        cache_dir: folder of cached answers (one JSON file per name and geocoder,
            :func:`geocode_cache_name`); a cached answer makes no request. None: no cache.
        point_radius_m: radius of the disc around a point-only answer, in metres.

    Returns:
        the place's area, a (multi)polygon in EPSG:4326.

    Raises:
        DataError: when the geocoder finds nothing for the name.
        DownloadError: one line naming the geocoder when it cannot be reached.
    """
    path = None if cache_dir is None else cache_dir / geocode_cache_name(place, geocoder_url)
    answer = None if path is None else _read_answer(path)
    if answer is None:
        answer = _ask_geocoder(place, geocoder_url, timeout)
        if path is not None:
            record = {
                "place": place,
                "geocoder_url": geocoder_url,
                "geometry": shapely.geometry.mapping(answer),
            }
            write_text(path, json.dumps(record))
    if answer.geom_type in ("Polygon", "MultiPolygon"):
        return answer
    point = answer.centroid
    log.info(
        "region.source.place=%r: the geocoder %s knows it only as a point (%.6f, %.6f); "
        "using the %g m around it",
        place,
        geocoder_url,
        point.y,
        point.x,
        point_radius_m,
    )
    return point_area(point.x, point.y, point_radius_m)


def select_area(
    source: Mapping[str, Any],
    geocoder_url: str,
    timeout: float = 60,
    cache_dir: Path | None = None,
) -> Area:
    """The area selected by ``region.source`` (see the module doc).

    Args:
        source: ``region.source``.
        geocoder_url: the Nominatim API's base URL (for ``place``).
        timeout: seconds per geocoder request.
        cache_dir: folder of cached geocoding answers (:func:`geocode`); None: no cache.

    Raises:
        ConfigError: for a bad selection.
        DataError: when a place name is not found.
    """
    key = selector(source)
    if key == "place":
        place = str(source["place"])
        return Area(geocode(place, geocoder_url, timeout, cache_dir), f"place {place!r}")
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
    "POINT_BUFFER_M",
    "SELECTORS",
    "Area",
    "bbox_polygon",
    "geocode",
    "geocode_cache_name",
    "nominal_year",
    "osmnx_settings",
    "point_area",
    "quarter_quad",
    "select_area",
    "selector",
    "time_range",
    "to_lonlat",
]
