"""Microsoft building footprints for a tile, through the dataset's own index of files.

Microsoft's Global ML Building Footprints (which include the US footprints) are published
as one gzipped file of GeoJSON lines per Bing Maps quadkey (zoom 9) and country, listed in an
index, ``dataset-links.csv`` (columns ``Location``, ``QuadKey``, ``Url``, ``Size``, ...;
``acquire.place.footprints.index_url``). The index moved hosts on 2024-11-07 (from
``minedbuildings.blob.core.windows.net`` to ``minedbuildings.z5.web.core.windows.net``, see
the dataset's README on GitHub, microsoft/GlobalMLBuildingFootprints) and is updated in place;
each of its rows names a file under a dated release folder, so a new release is a new URL.
The cached index is named by a hash of its URL (:func:`index_cache_name`): another
``index_url`` fetches its own index; delete the cached one to pick up a newer release.

The stage finds the quadkeys that cover a tile (their zoom is read from the index), downloads
each file once (resumable and atomic, :func:`lcip.acquire.http.download`, which retries 429 and
503 answers) and parses it once into a GeoPackage with a spatial index
(:func:`index_footprints`, named after the file's URL hash, :func:`indexed_name`); every tile
then reads its footprints by bounding box (:func:`footprints_in`) instead of re-reading a
100 MB gzip, and writes those that intersect it as a GeoPackage, its ``buildings`` layer.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import geopandas as gpd
import pyogrio
import shapely
from shapely.errors import GEOSException
from shapely.geometry import shape
from shapely.geometry.base import BaseGeometry
from shapely.prepared import prep

from lcip.acquire.osm import write_gpkg
from lcip.errors import DataError
from lcip.io.atomic import create_temporary

#: The layer of an indexed quadkey file (:func:`index_footprints`).
INDEX_LAYER = "footprints"
#: Lines parsed and written at a time when indexing a quadkey file (bounds the memory used).
INDEX_CHUNK = 50_000


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


def _hash(url: str) -> str:
    return hashlib.sha256(url.encode()).hexdigest()[:12]


def index_cache_name(url: str) -> str:
    """The cached index's name: ``dataset-links_<hash of its URL>.csv``."""
    return f"dataset-links_{_hash(url)}.csv"


def indexed_name(file: FootprintFile) -> str:
    """The indexed (GeoPackage) copy's name: its quadkey and a hash of its URL."""
    return f"{file.quadkey}_{_hash(file.url)}.gpkg"


def is_indexed(path: Path) -> bool:
    """Whether ``path`` is a GeoPackage written by :func:`index_footprints`."""
    if not path.is_file():
        return False
    try:
        return INDEX_LAYER in {str(name) for name, _ in pyogrio.list_layers(path)}
    except Exception:  # not a GeoPackage (a partial or foreign file)
        return False


def _chunks(path: Path, size: int) -> Iterator[list[str]]:
    chunk: list[str] = []
    with gzip.open(path, "rt") as f:
        for line in f:
            if line.strip():
                chunk.append(line)
                if len(chunk) == size:
                    yield chunk
                    chunk = []
    if chunk:
        yield chunk


def index_footprints(src: Path, dst: Path, chunk: int = INDEX_CHUNK) -> Path:
    """Parse a gzipped GeoJSON-lines file once into a GeoPackage with a spatial index.

    Written atomically, ``chunk`` lines at a time; read it with :func:`footprints_in`.

    Raises:
        DataError: for a file that is not gzipped GeoJSON lines (naming it).
    """
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = create_temporary(dst, ".gpkg")  # the driver wants its extension
    try:
        tmp.unlink()  # the GeoPackage driver creates its own file
        written = False
        for lines in _chunks(src, chunk):
            geoms = shapely.from_geojson(lines)  # a Feature's geometry, or a bare geometry
            _write(tmp, geoms, append=written)
            written = True
        if not written:
            _write(tmp, [], append=False)
        os.replace(tmp, dst)
    except (OSError, EOFError, ValueError, GEOSException) as exc:
        raise DataError(f"{src}: not gzipped GeoJSON lines ({exc})") from None
    finally:
        tmp.unlink(missing_ok=True)
    return dst


def _write(path: Path, geoms: Any, append: bool) -> None:
    gdf = gpd.GeoDataFrame(geometry=gpd.GeoSeries(list(geoms), crs="EPSG:4326"))
    pyogrio.write_dataframe(
        gdf,
        path,
        layer=INDEX_LAYER,
        driver="GPKG",
        geometry_type="Unknown",
        append=append,
        promote_to_multi=False,
    )


def footprints_in(path: Path, area: BaseGeometry) -> list[BaseGeometry]:
    """The footprints of an indexed file (:func:`index_footprints`) that intersect ``area``.

    Only the features in ``area``'s bounding box are read (the GeoPackage's R-tree).

    Raises:
        DataError: when ``path`` cannot be read.
    """
    try:
        gdf = pyogrio.read_dataframe(path, layer=INDEX_LAYER, bbox=tuple(area.bounds))
    except Exception as exc:
        raise DataError(f"{path}: cannot read indexed footprints ({exc})") from None
    geoms = gdf.geometry.to_numpy()
    return list(geoms[shapely.intersects(geoms, area)])


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
    "INDEX_CHUNK",
    "INDEX_LAYER",
    "FootprintFile",
    "cache_name",
    "files_for",
    "footprints_in",
    "gz_lines",
    "index_cache_name",
    "index_footprints",
    "indexed_name",
    "is_indexed",
    "lonlat_to_tile",
    "quadkey",
    "quadkeys_for",
    "read_footprints",
    "read_index",
    "write_footprints",
]
