"""Microsoft building footprints for a tile, through the dataset's own index of files.

Microsoft's Global ML Building Footprints (which include the US footprints) are published
as one gzipped file of GeoJSON lines per Bing Maps quadkey (zoom 9) and country, listed in an
index, ``dataset-links.csv`` (columns ``Location``, ``QuadKey``, ``Url``, ``Size``, ...;
``acquire.place.footprints.index_url``). :func:`fetch_footprints` finds the quadkeys that
cover a tile (their zoom is read from the index), downloads their files once into a cache
(resumable and atomic, :func:`lcip.acquire.http.download`), and writes the footprints that
intersect the tile as a GeoPackage, the tile's ``buildings`` layer.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import geopandas as gpd
from shapely.geometry import shape
from shapely.geometry.base import BaseGeometry
from shapely.prepared import prep

from lcip.acquire.osm import write_gpkg
from lcip.errors import DataError


@dataclass(frozen=True)
class FootprintFile:
    """One file of the index: its quadkey, location and URL."""

    quadkey: str
    location: str
    url: str


def lonlat_to_tile(lon: float, lat: float, zoom: int) -> tuple[int, int]:
    """The Web Mercator (x, y) tile holding a point at ``zoom``."""
    lat = max(min(lat, 85.05112878), -85.05112878)
    n = 2**zoom
    x = int((lon + 180.0) / 360.0 * n)
    s = math.sin(math.radians(lat))
    y = int((0.5 - math.log((1 + s) / (1 - s)) / (4 * math.pi)) * n)
    return min(max(x, 0), n - 1), min(max(y, 0), n - 1)


def quadkey(x: int, y: int, zoom: int) -> str:
    """The Bing Maps quadkey of tile (x, y) at ``zoom``."""
    digits = []
    for z in range(zoom, 0, -1):
        mask = 1 << (z - 1)
        digits.append(str((1 if x & mask else 0) + (2 if y & mask else 0)))
    return "".join(digits)


def quadkeys_for(area: BaseGeometry, zoom: int) -> list[str]:
    """The quadkeys of the tiles at ``zoom`` that the bounds of ``area`` (EPSG:4326) touch."""
    minx, miny, maxx, maxy = area.bounds
    x0, y0 = lonlat_to_tile(minx, maxy, zoom)
    x1, y1 = lonlat_to_tile(maxx, miny, zoom)
    return sorted(quadkey(x, y, zoom) for x in range(x0, x1 + 1) for y in range(y0, y1 + 1))


def read_index(path: Path) -> list[FootprintFile]:
    """The files listed in a ``dataset-links.csv``.

    Raises:
        DataError: when the file lacks the ``QuadKey`` or ``Url`` column.
    """
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = {"QuadKey", "Url"} - set(reader.fieldnames or [])
        if missing:
            raise DataError(f"{path}: building footprint index without columns {sorted(missing)}")
        return [
            FootprintFile(str(row["QuadKey"]).strip(), row.get("Location", ""), row["Url"])
            for row in reader
        ]


def files_for(
    index: Sequence[FootprintFile], area: BaseGeometry, locations: Sequence[str] | None = None
) -> list[FootprintFile]:
    """The index's files covering ``area``, optionally only of some locations (countries)."""
    if not index:
        return []
    zoom = len(index[0].quadkey)
    keys = set(quadkeys_for(area, zoom))
    return [
        f for f in index if f.quadkey in keys and (not locations or f.location in set(locations))
    ]


def cache_name(file: FootprintFile) -> str:
    """The cached file's name: its quadkey and a hash of its URL."""
    return f"{file.quadkey}_{hashlib.sha256(file.url.encode()).hexdigest()[:12]}.csv.gz"


def read_footprints(path: Path, area: BaseGeometry) -> list[BaseGeometry]:
    """The footprints (EPSG:4326) of a gzipped GeoJSON-lines file that intersect ``area``.

    Raises:
        DataError: for a file that is not gzipped GeoJSON lines (naming it).
    """
    out = []
    tree_area = prep(area)
    try:
        with gzip.open(path, "rt") as f:
            for line in f:
                if not line.strip():
                    continue
                record: Mapping[str, Any] = json.loads(line)
                geom = shape(record.get("geometry", record))
                if tree_area.intersects(geom):
                    out.append(geom)
    except (OSError, EOFError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{path}: not gzipped GeoJSON lines ({exc})") from None
    return out


def write_footprints(geoms: Sequence[BaseGeometry], dst: Path) -> Path:
    """Write footprints (EPSG:4326) as a GeoPackage, atomically."""
    gdf = gpd.GeoDataFrame(
        {"building": ["yes"] * len(geoms)},
        geometry=gpd.GeoSeries(list(geoms), crs="EPSG:4326"),
        crs="EPSG:4326",
    )
    return write_gpkg(gdf, dst, "buildings")


def gz_lines(features: Sequence[Mapping[str, Any]]) -> bytes:
    """GeoJSON features as the dataset's gzipped lines (for writing stand-in files)."""
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as f:
        for feat in features:
            f.write((json.dumps(feat) + "\n").encode())
    return buf.getvalue()


__all__ = [
    "FootprintFile",
    "cache_name",
    "files_for",
    "gz_lines",
    "lonlat_to_tile",
    "quadkey",
    "quadkeys_for",
    "read_footprints",
    "read_index",
    "write_footprints",
]
