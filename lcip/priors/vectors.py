"""Vector prior layers: OSM roads, waterways, water bodies and building footprints.

Four binary layers are rasterized onto a tile grid, always in this order
(:data:`LAYER_NAMES`):

====  ===========  =====================================================================
band  layer        features
====  ===========  =====================================================================
1     buildings    building footprints (GeoJSON / GeoPackage / GeoParquet / ...) and,
                   unless ``osm_buildings=False``, OSM ``building=*`` polygons
2     roads        OSM ``highway=*`` ways of the types in ``road_widths``, buffered to
                   their total width; ``highway=*`` areas as they are
3     waterways    OSM ``waterway=*`` lines of the types in ``waterway_widths``, buffered
4     waterbodies  OSM polygons with ``natural=water``, ``water=*``,
                   ``landuse=reservoir`` or ``waterway=riverbank|dock``
====  ===========  =====================================================================

Ways tagged ``tunnel=*`` (other than ``tunnel=no``) are left out of roads and waterways:
they are not visible from above (culverts, underpasses).

Default total widths in metres (a line is buffered by half of it on each side). Types that
are not in the table are not drawn; pass another table to change the kept set, e.g. add
``"footway": 2.0`` to draw sidewalks.

:data:`ROAD_WIDTHS`: motorway 12, trunk 11, primary 10, secondary 8, tertiary 7,
unclassified 6, residential 6, road 6, living_street 5, motorway_link / trunk_link /
primary_link 6, secondary_link / tertiary_link 5, service 4, pedestrian 4, busway 4.
Footways, paths, steps, cycleways, bridleways, tracks, construction and proposed roads are
not drawn by default.

:data:`WATERWAY_WIDTHS`: river 10, canal 8, stream 3, ditch 2, drain 2.

OSM data is read from OSM XML (``.osm``, ``.xml``, optionally ``.bz2`` / ``.gz``
compressed) with :func:`osmnx.features_from_xml`, in a single pass for all four kinds of
feature. (:func:`osmnx.graph_from_xml` is not used: it turns *every* way of the file into
graph edges -- building outlines, land use and waterways included -- and keeps only the tags
in ``osmnx.settings.useful_tags_way``, which lacks ``waterway``, so waterways come out as
untyped edges that cannot be told from building outlines.) OSM features saved by other
tools as GeoPackage / GeoJSON / GeoParquet with tag columns (``highway``, ``waterway``,
``natural``, ``water``, ``landuse``, ``building``, ``tunnel``) are read too.

Region-wide files are read once (:class:`VectorSources`, and a small cache behind
:func:`rasterize_vectors`), projected once per target CRS and indexed spatially; each tile
then only clips, buffers and burns the features near it.
"""

from __future__ import annotations

import functools
import json
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import numpy.typing as npt
import pandas as pd
import shapely
from rasterio.crs import CRS
from rasterio.features import rasterize

from lcip.errors import DataError
from lcip.io.raster import Grid, write_raster

#: The four vector layers, in band order.
LAYER_NAMES: tuple[str, str, str, str] = ("buildings", "roads", "waterways", "waterbodies")

#: Default total road width (m) by OSM ``highway`` value; other values are not drawn.
ROAD_WIDTHS: Mapping[str, float] = {
    "motorway": 12.0,
    "trunk": 11.0,
    "primary": 10.0,
    "secondary": 8.0,
    "tertiary": 7.0,
    "unclassified": 6.0,
    "residential": 6.0,
    "road": 6.0,
    "living_street": 5.0,
    "motorway_link": 6.0,
    "trunk_link": 6.0,
    "primary_link": 6.0,
    "secondary_link": 5.0,
    "tertiary_link": 5.0,
    "service": 4.0,
    "pedestrian": 4.0,
    "busway": 4.0,
}

#: Default total waterway width (m) by OSM ``waterway`` value; other values are not drawn.
WATERWAY_WIDTHS: Mapping[str, float] = {
    "river": 10.0,
    "canal": 8.0,
    "stream": 3.0,
    "ditch": 2.0,
    "drain": 2.0,
}

#: File name endings read as OSM XML (everything else goes through geopandas).
OSM_XML_SUFFIXES: tuple[str, ...] = (".osm", ".xml", ".osm.bz2", ".osm.gz", ".xml.bz2", ".xml.gz")

#: Tag filter handed to :func:`osmnx.features_from_xml` (any one match keeps a feature).
OSM_TAGS: dict[str, bool | str | list[str]] = {
    "highway": True,
    "waterway": True,
    "natural": "water",
    "water": True,
    "landuse": "reservoir",
    "building": True,
}
_WATERWAY_AREAS = ("riverbank", "dock")
_POLYGONAL = ("Polygon", "MultiPolygon")
_LINEAR = ("LineString", "MultiLineString", "LinearRing")
_GEOPARQUET_SUFFIXES = (".parquet", ".geoparquet")

PathLike = str | Path
Paths = PathLike | Sequence[PathLike] | None


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _as_paths(paths: Paths) -> tuple[Path, ...]:
    if paths is None:
        return ()
    if isinstance(paths, str | Path):
        return (Path(paths),)
    return tuple(Path(p) for p in paths)


def _check_exists(path: Path) -> None:
    if not path.exists():
        raise DataError(f"{path}: file does not exist")
    if not path.is_file():
        raise DataError(f"{path}: is not a file")


def _is_osm_xml(path: Path) -> bool:
    return path.name.lower().endswith(OSM_XML_SUFFIXES)


def _empty_frame(columns: Sequence[str] = ()) -> gpd.GeoDataFrame:
    data: dict[str, Any] = {c: pd.Series([], dtype=object) for c in columns}
    return gpd.GeoDataFrame(data, geometry=gpd.GeoSeries([], crs="EPSG:4326"), crs="EPSG:4326")


@dataclass(frozen=True)
class OsmFeatures:
    """OSM features of one file, split into the kinds lcip rasterizes (all in one CRS).

    Args:
        roads: ``highway`` ways and areas (column ``highway``), tunnels removed.
        waterways: ``waterway`` lines (column ``waterway``), tunnels removed.
        waterbodies: water polygons.
        buildings: ``building=*`` polygons.
    """

    roads: gpd.GeoDataFrame
    waterways: gpd.GeoDataFrame
    waterbodies: gpd.GeoDataFrame
    buildings: gpd.GeoDataFrame

    def to_crs(self, crs: Any) -> OsmFeatures:
        """The same features projected to another CRS.

        Args:
            crs: target CRS (anything geopandas accepts).

        Returns:
            the projected features.
        """
        return OsmFeatures(
            roads=self.roads.to_crs(crs),
            waterways=self.waterways.to_crs(crs),
            waterbodies=self.waterbodies.to_crs(crs),
            buildings=self.buildings.to_crs(crs),
        )


def _column(gdf: gpd.GeoDataFrame, name: str) -> pd.Series:
    if name in gdf.columns:
        return gdf[name]
    return pd.Series(None, index=gdf.index, dtype=object)


def split_osm_features(gdf: gpd.GeoDataFrame) -> OsmFeatures:
    """Split a frame of OSM features (one column per tag) into roads, waterways, water, buildings.

    Args:
        gdf: OSM features with a CRS, e.g. from :func:`osmnx.features_from_xml`.

    Returns:
        the features by kind, keeping only the geometry and the type column.
    """
    gdf = gdf[~(gdf.geometry.isna() | gdf.geometry.is_empty)]
    gtype = gdf.geom_type
    polygonal = gtype.isin(_POLYGONAL)
    linear = gtype.isin(_LINEAR)
    highway = _column(gdf, "highway")
    waterway = _column(gdf, "waterway")
    tunnel = _column(gdf, "tunnel")
    building = _column(gdf, "building")
    above_ground = tunnel.isna() | (tunnel.astype(str) == "no")

    def pick(mask: pd.Series, col: str = "", values: pd.Series | None = None) -> gpd.GeoDataFrame:
        keep = mask.to_numpy(dtype=bool)
        data = {col: values.to_numpy()[keep].astype(str)} if values is not None else {}
        return gpd.GeoDataFrame(data, geometry=gdf.geometry.to_numpy()[keep], crs=gdf.crs)

    roads = pick(highway.notna() & (linear | polygonal) & above_ground, "highway", highway)
    waterways = pick(waterway.notna() & linear & above_ground, "waterway", waterway)
    is_water = (
        (_column(gdf, "natural") == "water")
        | _column(gdf, "water").notna()
        | (_column(gdf, "landuse") == "reservoir")
        | waterway.isin(_WATERWAY_AREAS)
    )
    is_building = building.notna() & (building.astype(str) != "no")
    waterbodies = pick(is_water & polygonal & ~is_building)
    buildings = pick(is_building & polygonal)
    return OsmFeatures(roads, waterways, waterbodies, buildings)


def read_osm(path: PathLike) -> OsmFeatures:
    """Read the OSM roads, waterways, water bodies and buildings of one file.

    OSM XML (see :data:`OSM_XML_SUFFIXES`) is read with :func:`osmnx.features_from_xml`;
    other files (GeoPackage, GeoJSON, GeoParquet, ...) with geopandas and must have OSM tag
    columns. A file without any matching feature gives empty layers.

    Args:
        path: the OSM file.

    Returns:
        the features in EPSG:4326 (XML) or in the file's CRS.

    Raises:
        DataError: if the file is missing or cannot be read.
    """
    path = Path(path)
    _check_exists(path)
    name = path.name.lower()
    if name.endswith(".pbf"):
        raise DataError(
            f"{path}: OSM PBF is not supported; convert it to OSM XML first "
            f"(e.g. `osmium cat {path.name} -o {path.stem}.osm.bz2`)"
        )
    if _is_osm_xml(path):
        gdf = _read_osm_xml(path)
    else:
        gdf = _read_frame(path, "OSM features")
    return split_osm_features(gdf)


def _read_osm_xml(path: Path) -> gpd.GeoDataFrame:
    import osmnx as ox
    from osmnx._errors import InsufficientResponseError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return ox.features_from_xml(path, tags=OSM_TAGS)
    except InsufficientResponseError:
        return _empty_frame()
    except Exception as exc:
        raise DataError(f"{path}: cannot be read as OSM XML ({_one_line(exc)})") from None


def _read_frame(path: Path, what: str) -> gpd.GeoDataFrame:
    """Read a vector file with geopandas, turning every failure into a one-line DataError."""
    try:
        if path.name.lower().endswith(_GEOPARQUET_SUFFIXES):
            gdf = gpd.read_parquet(path)
        else:
            gdf = gpd.read_file(path)
    except ImportError as exc:
        raise DataError(f"{path}: cannot read {what}, a library is missing ({exc})") from None
    except Exception as exc:
        raise DataError(f"{path}: cannot be read as {what} ({_one_line(exc)})") from None
    if not isinstance(gdf, gpd.GeoDataFrame) or gdf.geometry.name not in gdf.columns:
        raise DataError(f"{path}: {what} file has no geometry column")
    if len(gdf) and gdf.crs is None:
        raise DataError(f"{path}: {what} file has no CRS; set one (e.g. EPSG:4326) and retry")
    if gdf.crs is None:
        gdf = gdf.set_crs("EPSG:4326")
    return gdf


def read_buildings(path: PathLike) -> gpd.GeoDataFrame:
    """Read building footprints (GeoJSON, GeoPackage, GeoParquet, FlatGeobuf, shapefile, ...).

    Only polygonal geometries are kept; the file may be in any CRS.

    Args:
        path: the footprint file.

    Returns:
        a frame with only a geometry column, in the file's CRS.

    Raises:
        DataError: if the file is missing, unreadable or has no CRS.
    """
    path = Path(path)
    _check_exists(path)
    gdf = _read_frame(path, "building footprints")
    geoms = gdf.geometry
    keep = (~(geoms.isna() | geoms.is_empty) & geoms.geom_type.isin(_POLYGONAL)).to_numpy()
    return gpd.GeoDataFrame(geometry=geoms.to_numpy()[keep], crs=gdf.crs)


def _file_key(path: Path) -> tuple[str, int, int]:
    """Identity of a file's current contents for caching: (resolved path, mtime, size)."""
    _check_exists(path)
    stat = path.stat()
    return (str(path.resolve()), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=8)
def _cached_osm(key: tuple[str, int, int]) -> OsmFeatures:
    return read_osm(key[0])


@functools.lru_cache(maxsize=8)
def _cached_buildings(key: tuple[str, int, int]) -> gpd.GeoDataFrame:
    return read_buildings(key[0])


def clear_cache() -> None:
    """Forget every vector file read so far (the cache behind :func:`rasterize_vectors`)."""
    _cached_osm.cache_clear()
    _cached_buildings.cache_clear()
    _cached_sources.cache_clear()


def _concat(frames: Sequence[gpd.GeoDataFrame], crs: Any) -> gpd.GeoDataFrame:
    frames = [f.to_crs(crs) for f in frames if len(f)]
    if not frames:
        return _empty_frame().to_crs(crs)
    return gpd.GeoDataFrame(pd.concat(frames, ignore_index=True), crs=crs)


def _check_widths(widths: Mapping[str, float], what: str) -> dict[str, float]:
    out = {str(k): float(v) for k, v in widths.items()}
    bad = {k: v for k, v in out.items() if not np.isfinite(v) or v < 0}
    if bad:
        raise ValueError(f"{what}: widths must be finite and >= 0, got {bad}")
    return out


@dataclass
class _Projected:
    """All features of a VectorSources in one CRS, with spatial indexes."""

    roads: gpd.GeoDataFrame
    waterways: gpd.GeoDataFrame
    waterbodies: gpd.GeoDataFrame
    buildings: gpd.GeoDataFrame


@dataclass
class VectorSources:
    """Region-wide vector sources, read once and rasterized tile by tile.

    Args:
        osm: OSM file(s) (see :func:`read_osm`), or None.
        buildings: building footprint file(s) (see :func:`read_buildings`), or None.
        osm_buildings: also draw OSM ``building=*`` polygons into the buildings layer.

    Example:
        >>> sources = VectorSources("region.osm.bz2", "buildings.geojson")  # doctest: +SKIP
        >>> layers = sources.rasterize(tile_grid)  # (4, H, W) uint8  # doctest: +SKIP
    """

    osm: Paths = None
    buildings: Paths = None
    osm_buildings: bool = True
    osm_paths: tuple[Path, ...] = field(init=False)
    building_paths: tuple[Path, ...] = field(init=False)
    _features: OsmFeatures = field(init=False, repr=False)
    _footprints: list[gpd.GeoDataFrame] = field(init=False, repr=False)
    _by_crs: dict[str, _Projected] = field(init=False, repr=False, default_factory=dict)

    def __post_init__(self) -> None:
        self.osm_paths = _as_paths(self.osm)
        self.building_paths = _as_paths(self.buildings)
        osm_parts = [_cached_osm(_file_key(p)) for p in self.osm_paths]
        self._footprints = [_cached_buildings(_file_key(p)) for p in self.building_paths]
        self._features = OsmFeatures(
            roads=_concat([f.roads for f in osm_parts], "EPSG:4326"),
            waterways=_concat([f.waterways for f in osm_parts], "EPSG:4326"),
            waterbodies=_concat([f.waterbodies for f in osm_parts], "EPSG:4326"),
            buildings=_concat([f.buildings for f in osm_parts], "EPSG:4326"),
        )

    @classmethod
    def from_frames(
        cls,
        osm: gpd.GeoDataFrame | OsmFeatures | None = None,
        buildings: gpd.GeoDataFrame | None = None,
        *,
        osm_buildings: bool = True,
    ) -> VectorSources:
        """Sources from frames already in memory (e.g. downloaded with osmnx).

        Args:
            osm: OSM features with tag columns (see :func:`split_osm_features`) or already
                split features.
            buildings: building footprints (polygons) with a CRS.
            osm_buildings: also draw OSM ``building=*`` polygons into the buildings layer.

        Returns:
            the sources.
        """
        self = cls(None, None, osm_buildings=osm_buildings)
        if osm is not None:
            feats = osm if isinstance(osm, OsmFeatures) else split_osm_features(osm)
            self._features = feats.to_crs("EPSG:4326")
        if buildings is not None:
            if buildings.crs is None:
                raise DataError("building footprints frame has no CRS")
            polys = buildings.geometry[buildings.geom_type.isin(_POLYGONAL)]
            self._footprints = [gpd.GeoDataFrame(geometry=polys.to_numpy(), crs=buildings.crs)]
        return self

    @property
    def features(self) -> OsmFeatures:
        """The OSM features (EPSG:4326)."""
        return self._features

    def _projected(self, crs: CRS) -> _Projected:
        key = crs.to_wkt()
        if key not in self._by_crs:
            feats = self._features
            building_parts = list(self._footprints)
            if self.osm_buildings:
                building_parts.append(feats.buildings)
            proj = _Projected(
                roads=feats.roads.to_crs(crs),
                waterways=feats.waterways.to_crs(crs),
                waterbodies=feats.waterbodies.to_crs(crs),
                buildings=_concat(building_parts, crs),
            )
            for frame in (proj.roads, proj.waterways, proj.waterbodies, proj.buildings):
                _ = frame.sindex  # build the spatial index once
            self._by_crs[key] = proj
        return self._by_crs[key]

    def rasterize(
        self,
        grid: Grid,
        *,
        road_widths: Mapping[str, float] | None = None,
        waterway_widths: Mapping[str, float] | None = None,
        all_touched: bool = False,
    ) -> npt.NDArray[np.uint8]:
        """Burn the four layers onto a grid.

        Args:
            grid: target grid (e.g. a NAIP tile's, possibly grown with ``Grid.expand``).
            road_widths: total width (m) per ``highway`` value; only these types are drawn.
                Defaults to :data:`ROAD_WIDTHS`.
            waterway_widths: total width (m) per ``waterway`` value; only these are drawn.
                Defaults to :data:`WATERWAY_WIDTHS`.
            all_touched: burn every pixel a shape touches (rasterio ``all_touched``) instead
                of only pixels whose centre is inside.

        Returns:
            uint8 array (4, height, width) of 0/1, bands in :data:`LAYER_NAMES` order.
        """
        if grid.crs is None:
            raise ValueError(f"grid {grid.describe()} has no CRS")
        rw = _check_widths(ROAD_WIDTHS if road_widths is None else road_widths, "road_widths")
        ww = _check_widths(
            WATERWAY_WIDTHS if waterway_widths is None else waterway_widths, "waterway_widths"
        )
        proj = self._projected(CRS.from_user_input(grid.crs))
        # Clip to the grid plus a margin wider than any buffer, so that buffering the
        # clipped lines covers the grid exactly as buffering the whole lines would.
        margin = max([0.0, *rw.values(), *ww.values()]) / 2 + 2 * max(grid.res)
        left, bottom, right, top = grid.bounds
        rect = (left - margin, bottom - margin, right + margin, top + margin)
        out = np.zeros((len(LAYER_NAMES), grid.height, grid.width), dtype=np.uint8)
        layers = (
            _nearby(proj.buildings, rect, None, None),
            _nearby(proj.roads, rect, "highway", rw),
            _nearby(proj.waterways, rect, "waterway", ww),
            _nearby(proj.waterbodies, rect, None, None),
        )
        for band, geoms in enumerate(layers):
            if len(geoms):
                rasterize(
                    ((g, 1) for g in geoms),
                    out=out[band],
                    transform=grid.transform,
                    all_touched=all_touched,
                )
        return out

    def write(
        self,
        path: PathLike,
        grid: Grid,
        *,
        road_widths: Mapping[str, float] | None = None,
        waterway_widths: Mapping[str, float] | None = None,
        all_touched: bool = False,
    ) -> Path:
        """Rasterize onto a grid and write the 4-band GeoTIFF (see :func:`write_vector_layers`).

        Args:
            path: destination GeoTIFF.
            grid: target grid.
            road_widths: see :meth:`rasterize`.
            waterway_widths: see :meth:`rasterize`.
            all_touched: see :meth:`rasterize`.

        Returns:
            the destination path.
        """
        layers = self.rasterize(
            grid, road_widths=road_widths, waterway_widths=waterway_widths, all_touched=all_touched
        )
        tags = {
            "road_widths": json.dumps(dict(ROAD_WIDTHS if road_widths is None else road_widths)),
            "waterway_widths": json.dumps(
                dict(WATERWAY_WIDTHS if waterway_widths is None else waterway_widths)
            ),
            "all_touched": all_touched,
            "osm_buildings": self.osm_buildings,
        }
        return write_vector_layers(
            path,
            layers,
            grid,
            osm_path=self.osm_paths,
            buildings_path=self.building_paths,
            tags=tags,
        )


def _nearby(
    frame: gpd.GeoDataFrame,
    rect: tuple[float, float, float, float],
    type_col: str | None,
    widths: Mapping[str, float] | None,
) -> npt.NDArray[Any]:
    """Geometries of ``frame`` within ``rect``, clipped and (for typed lines) buffered."""
    if not len(frame):
        return np.empty(0, dtype=object)
    idx = frame.sindex.query(shapely.box(*rect), predicate="intersects")
    if not len(idx):
        return np.empty(0, dtype=object)
    geoms = frame.geometry.to_numpy()[idx]
    if type_col is not None and widths is not None:
        types = frame[type_col].to_numpy()[idx]
        keep = np.isin(types, list(widths))
        geoms, types = geoms[keep], types[keep]
        if not len(geoms):
            return geoms
        half = np.array([widths[t] / 2 for t in types], dtype=np.float64)
        polygonal = np.isin(shapely.get_type_id(geoms), (3, 6))
        half[polygonal] = 0.0  # highway areas are drawn as they are
        geoms = shapely.clip_by_rect(geoms, *rect)
        lines = ~polygonal
        geoms[lines] = shapely.buffer(geoms[lines], half[lines], quad_segs=4)
    else:
        geoms = shapely.clip_by_rect(geoms, *rect)
    return geoms[~shapely.is_empty(geoms)]


def write_vector_layers(
    path: PathLike,
    layers: npt.NDArray[np.uint8],
    grid: Grid,
    *,
    osm_path: Paths = None,
    buildings_path: Paths = None,
    tags: Mapping[str, Any] | None = None,
) -> Path:
    """Write the four vector layers as one aligned 4-band uint8 GeoTIFF (atomic).

    Band descriptions are :data:`LAYER_NAMES`; tags record the source files.

    Args:
        path: destination GeoTIFF.
        layers: uint8 array (4, height, width) from :func:`rasterize_vectors`.
        grid: the grid the layers are on.
        osm_path: OSM source file(s), recorded in the ``osm_source`` tag.
        buildings_path: footprint file(s), recorded in the ``buildings_source`` tag.
        tags: extra tags.

    Returns:
        the destination path.
    """
    if layers.shape != (len(LAYER_NAMES), *grid.shape):
        raise ValueError(
            f"{path}: vector layers have shape {layers.shape}, expected "
            f"{(len(LAYER_NAMES), *grid.shape)}"
        )
    all_tags: dict[str, Any] = {
        "layers": ",".join(LAYER_NAMES),
        "osm_source": ";".join(str(p) for p in _as_paths(osm_path)),
        "buildings_source": ";".join(str(p) for p in _as_paths(buildings_path)),
    }
    all_tags.update(tags or {})
    return write_raster(
        path, layers.astype(np.uint8, copy=False), grid, tags=all_tags, band_names=list(LAYER_NAMES)
    )


@functools.lru_cache(maxsize=4)
def _cached_sources(
    osm_keys: tuple[tuple[str, int, int], ...],
    building_keys: tuple[tuple[str, int, int], ...],
    osm_buildings: bool,
) -> VectorSources:
    return VectorSources(
        [Path(k[0]) for k in osm_keys],
        [Path(k[0]) for k in building_keys],
        osm_buildings=osm_buildings,
    )


def load_sources(
    osm_path: Paths, buildings_path: Paths, *, osm_buildings: bool = True
) -> VectorSources:
    """The :class:`VectorSources` of these files, cached while the files are unchanged.

    Args:
        osm_path: OSM file(s) or None.
        buildings_path: building footprint file(s) or None.
        osm_buildings: also draw OSM ``building=*`` polygons into the buildings layer.

    Returns:
        the (shared) sources.
    """
    return _cached_sources(
        tuple(_file_key(p) for p in _as_paths(osm_path)),
        tuple(_file_key(p) for p in _as_paths(buildings_path)),
        osm_buildings,
    )


def rasterize_vectors(
    grid: Grid,
    osm_path: Paths,
    buildings_path: Paths,
    *,
    road_widths: Mapping[str, float] | None = None,
    waterway_widths: Mapping[str, float] | None = None,
    all_touched: bool = False,
    osm_buildings: bool = True,
) -> npt.NDArray[np.uint8]:
    """Rasterize buildings, roads, waterways and water bodies onto a grid.

    The files are read once and kept (see :func:`load_sources`), so calling this for many
    tiles of one region reads each region-wide file only once.

    Args:
        grid: target grid.
        osm_path: OSM file(s) (XML or a vector file with tag columns), or None.
        buildings_path: building footprint file(s), or None.
        road_widths: total width (m) per ``highway`` value (default :data:`ROAD_WIDTHS`).
        waterway_widths: total width (m) per ``waterway`` value (default
            :data:`WATERWAY_WIDTHS`).
        all_touched: burn every pixel a shape touches.
        osm_buildings: also draw OSM ``building=*`` polygons into the buildings layer.

    Returns:
        uint8 array (4, height, width) of 0/1 in :data:`LAYER_NAMES` order.

    Raises:
        DataError: if a file is missing or cannot be read.
    """
    sources = load_sources(osm_path, buildings_path, osm_buildings=osm_buildings)
    return sources.rasterize(
        grid, road_widths=road_widths, waterway_widths=waterway_widths, all_touched=all_touched
    )
