"""Vector outputs: OSM XML of roads and water, GeoJSON of (imperfect) building footprints."""

from __future__ import annotations

import json
import math
from xml.sax.saxutils import quoteattr

import numpy as np
import shapely
from pyproj import Transformer
from shapely.geometry import LineString

from lcip import __version__
from lcip.synthetic.arrays import F64
from lcip.synthetic.region import SyntheticRegion

__all__ = ["buildings_geojson", "osm_xml"]


def _to_lonlat(region: SyntheticRegion) -> Transformer:
    """Transformer from the region's CRS to longitude, latitude (EPSG:4326)."""
    return Transformer.from_crs(region.layout.canvas.crs, "EPSG:4326", always_xy=True)


def _canvas_to_lonlat(region: SyntheticRegion, xy: F64) -> tuple[F64, F64]:
    """Longitude and latitude of (n, 2) canvas pixel coordinates."""
    t = region.layout.canvas.transform
    mx = t.c + xy[:, 0]
    my = t.f - xy[:, 1]
    lon, lat = _to_lonlat(region).transform(mx, my)
    return np.asarray(lon), np.asarray(lat)


def osm_xml(region: SyntheticRegion, rng: np.random.Generator) -> str:
    """OSM XML (EPSG:4326) of the roads, the river and the water areas."""
    node_ids: dict[tuple[float, float], int] = {}
    node_xy: list[tuple[float, float]] = []
    ways_out: list[tuple[list[int], dict[str, str]]] = []

    def node(x: float, y: float) -> int:
        key = (round(x, 3), round(y, 3))
        if key not in node_ids:
            node_ids[key] = len(node_xy) + 1
            node_xy.append(key)
        return node_ids[key]

    for way in region.ways:
        line = LineString(way.coords)
        # curvy roads and the river are densely sampled: thin them (street-grid ways are
        # kept as they are, so that crossing streets share their junction nodes)
        coords = line.simplify(0.3).coords if len(line.coords) > 30 else line.coords
        tags = dict(way.tags)
        if way.width:
            tags["width"] = f"{way.width:.1f}"
        ways_out.append(([node(x, y) for x, y in coords], tags))
    for poly, tags in region.water_areas:
        ring = list(shapely.simplify(poly, 0.5).exterior.coords)[:-1]
        refs = [node(x, y) for x, y in ring]
        ways_out.append(([*refs, refs[0]], dict(tags)))
    xy = np.asarray(node_xy, np.float64)
    xy = xy + rng.normal(0, region.config.osm_jitter_m / math.sqrt(2), xy.shape)
    lon, lat = _canvas_to_lonlat(region, xy)
    lines = [
        "<?xml version='1.0' encoding='UTF-8'?>",
        f'<osm version="0.6" generator="lcip.synthetic {__version__}">',
        f'  <bounds minlat="{lat.min():.7f}" minlon="{lon.min():.7f}" '
        f'maxlat="{lat.max():.7f}" maxlon="{lon.max():.7f}"/>',
    ]
    lines += [
        f'  <node id="{i + 1}" version="1" lat="{la:.7f}" lon="{lo:.7f}"/>'
        for i, (lo, la) in enumerate(zip(lon, lat, strict=True))
    ]
    for k, (refs, tags) in enumerate(ways_out, start=1):
        lines.append(f'  <way id="{k}" version="1">')
        lines += [f'    <nd ref="{r}"/>' for r in refs]
        lines += [f"    <tag k={quoteattr(a)} v={quoteattr(b)}/>" for a, b in tags.items()]
        lines.append("  </way>")
    lines.append("</osm>")
    return "\n".join(lines) + "\n"


def buildings_geojson(region: SyntheticRegion, rng: np.random.Generator) -> str:
    """Footprints (EPSG:4326): ~``footprint_drop_rate`` dropped, the rest shifted."""
    cfg = region.config
    n = len(region.buildings)
    keep = np.flatnonzero(rng.random(n) >= cfg.footprint_drop_rate)
    shift = rng.normal(0, cfg.footprint_jitter_m / math.sqrt(2), (n, 2))
    transform = _to_lonlat(region)
    t = region.layout.canvas.transform
    features = []
    for i in keep:
        xy = np.asarray(region.buildings[i].exterior.coords) + shift[i]
        lon, lat = transform.transform(t.c + xy[:, 0], t.f - xy[:, 1])
        ring = [[round(float(a), 8), round(float(b), 8)] for a, b in zip(lon, lat, strict=True)]
        if len(ring) > 3:
            # exterior counter-clockwise (RFC 7946): canvas rows point down, so reverse
            ring = ring[::-1]
        features.append(
            {
                "type": "Feature",
                "properties": {
                    "id": int(i) + 1,
                    "height": round(float(region.building_heights[i]), 1),
                },
                "geometry": {"type": "Polygon", "coordinates": [ring]},
            }
        )
    return json.dumps({"type": "FeatureCollection", "features": features}, separators=(",", ":"))
