"""Loopback stand-ins of the public services a ``place`` region uses, for tests without internet.

- :func:`stac_api`: a STAC API (landing page, ``POST /search`` filtering items by collection,
  geometry and time) whose assets are COGs served by the same server (ranges, drops, counters
  of :class:`~tests.httpserver.LoopbackServer`);
- :func:`overpass`: an Overpass API answering osmnx's queries from a real OSM XML file, its
  coordinates moved onto the queried polygon (``/status`` and ``/interpreter``);
- :func:`nominatim`: a Nominatim geocoder knowing a few names (``/search``);
- a plain :class:`~tests.httpserver.LoopbackServer` serves the building footprint files.
"""

from __future__ import annotations

import bz2
import json
import re
import threading
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping, Sequence
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import shapely
from shapely.geometry import shape

from tests.httpserver import LoopbackServer, _handler_for, _QuietServer

#: A route: (method, query parameters, body) -> (status, content type, body).
Route = Callable[[str, dict[str, list[str]], bytes], tuple[int, str, bytes]]


class StandIn(LoopbackServer):
    """A :class:`LoopbackServer` that also answers some paths with computed responses.

    ``routes`` maps a path (without the leading slash; ``""`` for the root) to a
    :data:`Route`; other paths are files under ``root``. Requests to routes are recorded in
    ``requests`` too.
    """

    def __init__(self, root: Path, routes: Mapping[str, Route], **kwargs: Any) -> None:
        super().__init__(root, **kwargs)
        self.routes = dict(routes)
        self._httpd.server_close()
        self._httpd = _QuietServer(("127.0.0.1", 0), _routing_handler(self))
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )


def _routing_handler(server: StandIn) -> type[BaseHTTPRequestHandler]:
    base: Any = _handler_for(server)

    class Handler(base):  # type: ignore[misc,valid-type]
        def do_GET(self) -> None:
            if not self._route("GET"):
                super().do_GET()

        def do_POST(self) -> None:
            if not self._route("POST"):
                self.send_error(404)

        def _route(self, method: str) -> bool:
            parts = urlsplit(self.path)
            rel = unquote(parts.path).strip("/")
            route = server.routes.get(rel)
            if route is None:
                return False
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            server._record(method, rel, None)
            status, ctype, data = route(method, parse_qs(parts.query), body)
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            server._count(rel, len(data))
            self.wfile.write(data)
            return True

    return Handler


def _json(value: Any, status: int = 200, ctype: str = "application/json") -> tuple[int, str, bytes]:
    return status, ctype, json.dumps(value).encode()


# ---------------------------------------------------------------------------------- STAC API
def stac_api(root: Path, items: Sequence[dict[str, Any]]) -> StandIn:
    """A STAC API over ``items``; an asset ``href`` relative to ``root`` is served here."""
    holder: dict[str, StandIn] = {}

    def base() -> str:
        return holder["server"].url("")

    def landing(method: str, query: dict[str, list[str]], body: bytes) -> tuple[int, str, bytes]:
        return _json(
            {
                "type": "Catalog",
                "id": "stand-in",
                "stac_version": "1.0.0",
                "description": "loopback STAC API",
                "conformsTo": [
                    "https://api.stacspec.org/v1.0.0/core",
                    "https://api.stacspec.org/v1.0.0/item-search",
                    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/core",
                ],
                "links": [
                    {"rel": "self", "href": base(), "type": "application/json"},
                    {"rel": "root", "href": base(), "type": "application/json"},
                    {
                        "rel": "search",
                        "href": base() + "search",
                        "type": "application/geo+json",
                        "method": "POST",
                    },
                ],
            }
        )

    def search(method: str, query: dict[str, list[str]], body: bytes) -> tuple[int, str, bytes]:
        request = json.loads(body or b"{}")
        collections = set(request.get("collections") or [])
        area = shape(request["intersects"]) if request.get("intersects") else None
        start, end = (request.get("datetime") or "../..").split("/")
        found = []
        for item in items:
            props = item["properties"]  # real label items: datetime null, start_datetime set
            when = str(props.get("datetime") or props.get("start_datetime") or "")[:10]
            if collections and item["collection"] not in collections:
                continue
            if area is not None and not shape(item["geometry"]).intersects(area):
                continue
            if start not in ("", "..") and when < start[:10]:
                continue
            if end not in ("", "..") and when > end[:10]:
                continue
            found.append(_with_hrefs(item, holder["server"]))
        return _json(
            {"type": "FeatureCollection", "features": found, "links": []},
            ctype="application/geo+json",
        )

    server = StandIn(root, {"": landing, "search": search})
    holder["server"] = server
    return server


def _with_hrefs(item: dict[str, Any], server: StandIn) -> dict[str, Any]:
    out = json.loads(json.dumps(item))
    for asset in out["assets"].values():
        if not asset["href"].startswith(("http://", "https://")):
            asset["href"] = server.url(asset["href"])
    out.setdefault("links", [])
    out["stac_version"] = "1.0.0"
    out["type"] = "Feature"
    return out


def stac_item(
    item_id: str,
    collection: str,
    footprint: Any,
    datetime: str,
    assets: Mapping[str, str],
) -> dict[str, Any]:
    """A STAC item with assets given as paths relative to the server's root."""
    return {
        "type": "Feature",
        "stac_version": "1.0.0",
        "id": item_id,
        "collection": collection,
        "geometry": shapely.geometry.mapping(footprint),
        "bbox": list(footprint.bounds),
        "properties": {"datetime": datetime},
        "links": [],
        "assets": {k: {"href": v, "type": "image/tiff"} for k, v in assets.items()},
    }


# ---------------------------------------------------------------------------------- Overpass
def osm_elements(path: Path) -> list[dict[str, Any]]:
    """The nodes and ways (with tags) of an OSM XML file, as Overpass JSON elements."""
    raw = path.read_bytes()
    root = ET.fromstring(bz2.decompress(raw) if path.suffix == ".bz2" else raw)
    out: list[dict[str, Any]] = []
    for el in root:
        tags = {t.get("k"): t.get("v") for t in el.findall("tag")}
        if el.tag == "node":
            node: dict[str, Any] = {
                "type": "node",
                "id": int(el.get("id", 0)),
                "lat": float(el.get("lat", 0)),
                "lon": float(el.get("lon", 0)),
            }
            if tags:
                node["tags"] = tags
            out.append(node)
        elif el.tag == "way":
            way = {
                "type": "way",
                "id": int(el.get("id", 0)),
                "nodes": [int(n.get("ref", 0)) for n in el.findall("nd")],
            }
            if tags:
                way["tags"] = tags
            out.append(way)
    return out


_POLY = re.compile(r"poly:\s*'([^']+)'")


def overpass(root: Path, osm_file: Path) -> StandIn:
    """An Overpass API answering every query with ``osm_file``'s nodes and ways, moved so that
    the data's centre falls on the centre of the query's polygon (the real geometry, anywhere).
    """
    elements = osm_elements(osm_file)
    lats = [e["lat"] for e in elements if e["type"] == "node"]
    lons = [e["lon"] for e in elements if e["type"] == "node"]
    centre = ((min(lats) + max(lats)) / 2, (min(lons) + max(lons)) / 2)

    def status(method: str, query: dict[str, list[str]], body: bytes) -> tuple[int, str, bytes]:
        text = (
            "Connected as: 1\nCurrent time: 2026-01-01T00:00:00Z\nAnnouncement: none\n"
            "Rate limit: 2\n2 slots available now.\n"
            "Currently running queries (pid, space limit, time limit, start time):\n"
        )
        return 200, "text/plain", text.encode()

    def interpreter(
        method: str, query: dict[str, list[str]], body: bytes
    ) -> tuple[int, str, bytes]:
        data = parse_qs(body.decode()).get("data", [""])[0] or query.get("data", [""])[0]
        match = _POLY.search(data)
        if match is None:
            return 400, "text/plain", b"no poly in the query"
        values = [float(v) for v in match.group(1).split()]
        lat = (min(values[0::2]) + max(values[0::2])) / 2
        lon = (min(values[1::2]) + max(values[1::2])) / 2
        moved = []
        for e in elements:
            if e["type"] == "node":
                e = {**e, "lat": e["lat"] - centre[0] + lat, "lon": e["lon"] - centre[1] + lon}
            moved.append(e)
        return _json({"version": 0.6, "generator": "stand-in", "elements": moved})

    return StandIn(root, {"status": status, "interpreter": interpreter})


# --------------------------------------------------------------------------------- Nominatim
def nominatim(root: Path, places: Mapping[str, Any]) -> StandIn:
    """A Nominatim ``/search`` knowing ``places`` (name -> shapely polygon in EPSG:4326)."""

    def search(method: str, query: dict[str, list[str]], body: bytes) -> tuple[int, str, bytes]:
        name = query.get("q", [""])[0]
        geom = places.get(name)
        if geom is None:
            return _json([])
        minx, miny, maxx, maxy = geom.bounds
        centre = geom.centroid
        return _json(
            [
                {
                    "place_id": 1,
                    "licence": "stand-in",
                    "osm_type": "relation",
                    "osm_id": 1,
                    "boundingbox": [str(miny), str(maxy), str(minx), str(maxx)],
                    "lat": str(centre.y),
                    "lon": str(centre.x),
                    "display_name": name,
                    "class": "boundary",
                    "type": "administrative",
                    "importance": 0.7,
                    "geojson": shapely.geometry.mapping(geom),
                }
            ]
        )

    return StandIn(root, {"search": search})


__all__ = [
    "Route",
    "StandIn",
    "nominatim",
    "osm_elements",
    "overpass",
    "stac_api",
    "stac_item",
]


# ------------------------------------------------------------- recorded answers and headers
def scripted(server: StandIn, path: str, answers: Sequence[tuple[int, str, bytes]]) -> StandIn:
    """``server`` answering its next ``len(answers)`` requests to ``path`` with ``answers`` (in
    order: status, content type, body), and later ones as before (e.g. a real recorded error
    answer first, then the real data)."""
    route = server.routes[path]
    queue = list(answers)
    lock = threading.Lock()

    def answer(method: str, query: dict[str, list[str]], body: bytes) -> tuple[int, str, bytes]:
        with lock:
            next_answer = queue.pop(0) if queue else None
        return next_answer if next_answer is not None else route(method, query, body)

    server.routes[path] = answer
    return server


def header_log(server: StandIn) -> list[tuple[str, dict[str, str]]]:
    """Record the headers of every request ``server`` receives, as ``(path, headers)``.

    Call before the server starts (it swaps the server's handler for one that also records).
    """
    seen: list[tuple[str, dict[str, str]]] = []
    base: Any = _routing_handler(server)

    class Handler(base):  # type: ignore[misc,valid-type]
        def parse_request(self) -> bool:
            ok = bool(super().parse_request())
            if ok:
                path = unquote(urlsplit(self.path).path).strip("/")
                seen.append((path, dict(self.headers.items())))
            return ok

    server._httpd.server_close()
    server._httpd = _QuietServer(("127.0.0.1", 0), Handler)
    server._thread = threading.Thread(
        target=server._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
    )
    return seen


def nominatim_recorded(root: Path, answers: Mapping[str, list[dict[str, Any]]]) -> StandIn:
    """A Nominatim ``/search`` answering a name with a real recorded answer (a JSON list).

    Recordings made with ``format=json`` carry no ``geojson``; when a request asks for
    ``polygon_geojson=1`` (osmnx's ``geocode_to_gdf`` does), each result without one gets the
    point Nominatim gives a place it knows as a node (``{"type": "Point", "coordinates":
    [lon, lat]}``).
    """

    def search(method: str, query: dict[str, list[str]], body: bytes) -> tuple[int, str, bytes]:
        found = json.loads(json.dumps(answers.get(query.get("q", [""])[0], [])))
        if query.get("polygon_geojson", ["0"])[0] == "1":
            for result in found:
                lon, lat = float(result["lon"]), float(result["lat"])
                result.setdefault("geojson", {"type": "Point", "coordinates": [lon, lat]})
        return _json(found)

    return StandIn(root, {"search": search})


__all__ += ["header_log", "nominatim_recorded", "scripted"]


# ------------------------------------------------- recorded STAC pages, pgstac's geometry limit
#: The hosts of real Planetary Computer answers, and where the recorded stand-in serves them.
PC_HOSTS = {
    "https://planetarycomputer.microsoft.com/api/stac/v1/": "",
    "https://naipeuwest.blob.core.windows.net/": "blob/",
}


def _too_big(request: Mapping[str, Any], limit: int | None) -> tuple[int, str, bytes] | None:
    """pgstac's answer to a search whose ``intersects`` GeoJSON is over ``limit`` bytes."""
    geometry = request.get("intersects")
    if limit is None or geometry is None or len(json.dumps(geometry)) <= limit:
        return None
    return _json({"code": "InternalServerError", "description": "geometry too large"}, 500)


def recorded_stac_api(
    root: Path, pages: Sequence[Mapping[str, Any]], max_intersects_bytes: int | None = 8192
) -> StandIn:
    """A STAC API replaying real recorded search pages (``{"request": ..., "response": ...}``).

    A search without a ``token`` gets the first page, one with a token the page whose recorded
    request carried it (pystac-client follows the recorded POST ``next`` links). Addresses of
    the real hosts (:data:`PC_HOSTS`) point here: asset files are served from ``root/blob/``.
    A search whose ``intersects`` is over ``max_intersects_bytes`` of JSON is answered 500.
    The JSON bodies of the searches are kept in ``server.search_bodies``.
    """
    holder: dict[str, StandIn] = {}
    bodies: list[dict[str, Any]] = []

    def here(value: Any) -> Any:
        text = json.dumps(value)
        for host, prefix in PC_HOSTS.items():
            text = text.replace(host, holder["server"].url(prefix))
        return json.loads(text)

    def landing(method: str, query: dict[str, list[str]], body: bytes) -> tuple[int, str, bytes]:
        base = holder["server"].url("")
        return _json(
            {
                "type": "Catalog",
                "id": "recorded",
                "stac_version": "1.0.0",
                "description": "recorded Planetary Computer search pages",
                "conformsTo": [
                    "https://api.stacspec.org/v1.0.0/core",
                    "https://api.stacspec.org/v1.0.0/item-search",
                ],
                "links": [
                    {"rel": "self", "href": base, "type": "application/json"},
                    {"rel": "root", "href": base, "type": "application/json"},
                    {
                        "rel": "search",
                        "href": base + "search",
                        "type": "application/geo+json",
                        "method": "POST",
                    },
                ],
            }
        )

    def search(method: str, query: dict[str, list[str]], body: bytes) -> tuple[int, str, bytes]:
        request = json.loads(body or b"{}")
        bodies.append(request)
        refused = _too_big(request, max_intersects_bytes)
        if refused is not None:
            return refused
        token = request.get("token")
        for page in pages:
            if page["request"]["body"].get("token") == token:
                return _json(here(page["response"]), ctype="application/geo+json")
        return _json({"code": "BadRequest", "description": f"unknown token {token}"}, 400)

    server = StandIn(root, {"": landing, "search": search})
    holder["server"] = server
    server.search_bodies = bodies  # type: ignore[attr-defined]
    return server


def strict_stac_api(
    root: Path, items: Sequence[dict[str, Any]], max_intersects_bytes: int = 8192
) -> StandIn:
    """:func:`stac_api` answering 500 to a search whose ``intersects`` is over
    ``max_intersects_bytes`` of JSON (as pgstac behind the Planetary Computer has); the JSON
    bodies of the searches are kept in ``server.search_bodies``."""
    server = stac_api(root, items)
    inner = server.routes["search"]
    bodies: list[dict[str, Any]] = []

    def search(method: str, query: dict[str, list[str]], body: bytes) -> tuple[int, str, bytes]:
        request = json.loads(body or b"{}")
        bodies.append(request)
        return _too_big(request, max_intersects_bytes) or inner(method, query, body)

    server.routes["search"] = search
    server.search_bodies = bodies  # type: ignore[attr-defined]
    return server


__all__ += ["PC_HOSTS", "recorded_stac_api", "strict_stac_api"]
