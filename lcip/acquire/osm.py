"""OpenStreetMap features around a tile through osmnx and an Overpass API, cached per area.

:func:`fetch_osm` asks ``acquire.place.osm.overpass_url`` (through
:func:`osmnx.features_from_polygon`, with ``osmnx.settings.overpass_url`` set for the call)
for the features the fused prior draws -- roads (``highway``), waterways, water bodies
(``natural=water``, ``water``, ``landuse=reservoir``) and buildings -- within the tile's
footprint plus a buffer, and writes them as a GeoPackage with one column per tag
(:func:`lcip.priors.vectors.read_osm` reads it as the tile's ``osm`` layer). The file is named
after a hash of the query (polygon, tags and server), so a rerun for the same area finds it
and makes no request.
"""

from __future__ import annotations

import hashlib
import json
import logging
import warnings
from pathlib import Path
from typing import Any

import geopandas as gpd
import pandas as pd
import shapely
from shapely.geometry.base import BaseGeometry

from lcip.acquire.area import osmnx_settings
from lcip.atomic import atomic_path
from lcip.errors import DownloadError
from lcip.priors.vectors import _OSM_TAGS

log = logging.getLogger(__name__)

#: The tags asked for (any one match keeps a feature): the ones the fused prior reads.
OSM_TAGS: dict[str, bool | str | list[str]] = dict(_OSM_TAGS)

#: Tag columns kept in the written file (what :mod:`lcip.priors.vectors` reads).
KEPT_COLUMNS: tuple[str, ...] = (
    "highway",
    "waterway",
    "natural",
    "water",
    "landuse",
    "building",
    "tunnel",
    "area",
    "name",
)


def cache_name(polygon: BaseGeometry, overpass_url: str) -> str:
    """The cache file name of a query: a hash of the polygon, the tags and the server."""
    key = json.dumps(
        [shapely.to_wkt(polygon, rounding_precision=7), OSM_TAGS, overpass_url], sort_keys=True
    )
    return f"osm_{hashlib.sha256(key.encode()).hexdigest()[:20]}.gpkg"


def _flat(gdf: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """The features with the kept tag columns as strings, one row per element."""
    gdf = gdf.reset_index()
    data: dict[str, Any] = {}
    for col in ("element", "id"):
        if col in gdf.columns:
            data[f"osm_{col}"] = gdf[col].astype(str).to_numpy()
    for col in KEPT_COLUMNS:
        if col in gdf.columns:
            values = gdf[col]
            data[col] = values.where(values.notna(), None).map(
                lambda v: None if v is None else str(v)
            )
    return gpd.GeoDataFrame(
        pd.DataFrame(data, index=range(len(gdf))), geometry=gdf.geometry.to_numpy(), crs=gdf.crs
    )


def _empty() -> gpd.GeoDataFrame:
    data = {c: pd.Series([], dtype=object) for c in KEPT_COLUMNS}
    return gpd.GeoDataFrame(data, geometry=gpd.GeoSeries([], crs="EPSG:4326"), crs="EPSG:4326")


def fetch_osm(
    polygon: BaseGeometry, overpass_url: str, cache_dir: Path, timeout: float = 180
) -> Path:
    """The OSM features in ``polygon`` (EPSG:4326) as a GeoPackage, from the cache if there.

    Args:
        polygon: the area (the tile's footprint plus a buffer), longitude / latitude.
        overpass_url: the Overpass API's base URL (osmnx adds ``/interpreter``).
        cache_dir: folder of the cached answers.
        timeout: seconds for the Overpass query.

    Returns:
        the GeoPackage (EPSG:4326; empty when the area has no such feature).

    Raises:
        DownloadError: one line naming the server when the query fails.
    """
    import requests
    from osmnx._errors import InsufficientResponseError

    path = cache_dir / cache_name(polygon, overpass_url)
    if path.is_file():
        return path
    with osmnx_settings(
        overpass_url=overpass_url,
        requests_timeout=timeout,
        use_cache=False,
        log_console=False,
    ) as ox:
        try:
            gdf = _flat(ox.features_from_polygon(polygon, OSM_TAGS))
        except InsufficientResponseError:
            gdf = _empty()
        except (requests.RequestException, ValueError) as exc:
            raise DownloadError(
                f"{overpass_url}: Overpass query failed ({' '.join(str(exc).split())[:300]})"
            ) from None
    log.info("%s: %d OSM features", overpass_url, len(gdf))
    return write_gpkg(gdf, path, "osm")


def write_gpkg(gdf: gpd.GeoDataFrame, dst: Path, layer: str) -> Path:
    """Write a GeoPackage atomically (through a temporary file beside ``dst``)."""
    with atomic_path(dst) as tmp, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The filename extension should be 'gpkg'")
        tmp.unlink()  # the GeoPackage driver creates its own file
        gdf.to_file(tmp, driver="GPKG", layer=layer)
    return dst


__all__ = ["KEPT_COLUMNS", "OSM_TAGS", "cache_name", "fetch_osm", "write_gpkg"]
