"""OSM and geocoding against real recorded answers of Overpass and Nominatim, on loopback.

- Overpass answers a query that ran out of time or memory with HTTP 200 and a ``remark``
  (``tests/fixtures/real/overpass/``, recorded from overpass-api.de): lcip retries it, fails
  with the server and the remark when it persists, and never caches it; an empty layer is
  cached only when the server found nothing.
- The query carries its own server timeout (``[timeout:N]``), shorter than the HTTP read's.
- Nominatim knows a village as a node (``tests/fixtures/real/nominatim/``, a real answer for
  Alafaya, Florida): the area is the 1 km around it, and the answer is cached.
- osmnx sends lcip's User-Agent to both services.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import geopandas as gpd
import pytest
import shapely
from pyproj import Transformer

from lcip.acquire.area import POINT_BUFFER_M, geocode_cache_name, select_area
from lcip.acquire.http import user_agent
from lcip.acquire.osm import OverpassNotFinalError, cache_name, check_answer, fetch_osm
from lcip.errors import DataError, DownloadError
from tests.markers import needs_realdata
from tests.paths import FIXTURES, REALDATA
from tests.stand_ins import (
    StandIn,
    header_log,
    nominatim,
    nominatim_recorded,
    overpass,
    scripted,
)

FIXTURES = FIXTURES / "real"
TIMED_OUT = FIXTURES / "overpass" / "timed_out.json"
OUT_OF_MEMORY = FIXTURES / "overpass" / "out_of_memory.json"
ALAFAYA = FIXTURES / "nominatim" / "alafaya_village_node.json"
OSM = REALDATA / "osm" / "West-Oakland.osm.bz2"
#: A small box in West Oakland (the stand-in moves its real OSM data onto any polygon).
AREA = shapely.box(-122.2950, 37.8050, -122.2900, 37.8090)

needs_osm = needs_realdata(OSM)


def _answer(path: Path) -> tuple[int, str, bytes]:
    """A recorded Overpass answer as the server sent it: 200, JSON, the bytes unchanged."""
    return 200, "application/json", path.read_bytes()


def _interpreter_calls(server: StandIn) -> int:
    return sum(1 for _, rel, _ in server.requests if rel == "interpreter")


def _url(server: StandIn) -> str:
    return server.url("").rstrip("/")


def test_recorded_remarks_are_not_final() -> None:
    for path, words in ((TIMED_OUT, "Query timed out"), (OUT_OF_MEMORY, "out of memory")):
        answer = json.loads(path.read_text())
        assert answer["elements"] == []  # what osmnx would have turned into an empty layer
        with pytest.raises(OverpassNotFinalError, match=f"http://x/api: .*{words}"):
            check_answer(answer, "http://x/api")
    final = {k: v for k, v in json.loads(TIMED_OUT.read_text()).items() if k != "remark"}
    assert check_answer(final, "http://x/api") is final
    with pytest.raises(OverpassNotFinalError):  # partial data with a remark is no answer either
        check_answer({**final, "elements": [{"type": "node"}], "remark": "runtime error: x"}, "u")


@needs_osm
def test_query_has_its_own_server_timeout_and_lcip_user_agent(tmp_path: Path) -> None:
    bodies: list[bytes] = []
    with overpass(tmp_path, OSM) as server:
        route = server.routes["interpreter"]

        def slow(method: str, query: dict[str, list[str]], body: bytes) -> tuple[int, str, bytes]:
            bodies.append(body)
            time.sleep(1.5)  # longer than the server's own limit asked for below
            return route(method, query, body)

        server.routes["interpreter"] = slow
        headers = header_log(server)
        with server:
            gpkg = fetch_osm(AREA, _url(server), tmp_path / "cache", timeout=1)
    # The query tells the server its limit; the HTTP read waits longer (it got the late answer).
    assert b"%5Btimeout%3A1%5D" in bodies[0] or b"[timeout:1]" in bodies[0]
    assert len(gpd.read_file(gpkg)) > 0
    agents = {path: h.get("User-Agent") for path, h in headers}
    assert agents == {"status": user_agent(), "interpreter": user_agent()}
    assert user_agent().startswith("lcip/")


@needs_osm
def test_default_server_timeout_is_180_s(tmp_path: Path) -> None:
    bodies: list[bytes] = []
    with overpass(tmp_path, OSM) as server:
        route = server.routes["interpreter"]
        server.routes["interpreter"] = lambda m, q, b: bodies.append(b) or route(m, q, b)
        fetch_osm(AREA, _url(server), tmp_path / "cache")
    assert b"%5Btimeout%3A180%5D" in bodies[0]


@needs_osm
def test_a_remark_is_retried_and_the_final_answer_cached(tmp_path: Path) -> None:
    with scripted(overpass(tmp_path, OSM), "interpreter", [_answer(TIMED_OUT)]) as server:
        gpkg = fetch_osm(AREA, _url(server), tmp_path / "cache", retries=2, backoff=0)
        assert _interpreter_calls(server) == 2  # the remark, then the real data
        assert len(gpd.read_file(gpkg)) > 0
        fetch_osm(AREA, _url(server), tmp_path / "cache", retries=2, backoff=0)
        assert _interpreter_calls(server) == 2  # cached


@needs_osm
def test_a_persisting_remark_fails_naming_server_and_remark_and_caches_nothing(
    tmp_path: Path,
) -> None:
    cache = tmp_path / "cache"
    answers = [_answer(TIMED_OUT), _answer(OUT_OF_MEMORY), _answer(TIMED_OUT)]
    with scripted(overpass(tmp_path, OSM), "interpreter", answers) as server:
        url = _url(server)
        with pytest.raises(OverpassNotFinalError) as info:
            fetch_osm(AREA, url, cache, retries=2, backoff=0)
        message = str(info.value)
        assert message.startswith(f"{url}: ") and "\n" not in message
        assert 'runtime error: Query timed out in "query" at line 1' in message
        assert "after 3 tries" in message and "acquire.place.osm.timeout" in message
        assert _interpreter_calls(server) == 3
        assert not (cache / cache_name(AREA, url)).exists()
        assert not list(cache.glob("*")) if cache.exists() else True  # not even a temporary
        # Later, the server answers: the failure left nothing behind that hides the data.
        gpkg = fetch_osm(AREA, url, cache, retries=0, backoff=0)
        assert len(gpd.read_file(gpkg)) > 0


@needs_osm
def test_empty_layer_is_cached_only_when_the_server_found_nothing(tmp_path: Path) -> None:
    nothing = {k: v for k, v in json.loads(TIMED_OUT.read_text()).items() if k != "remark"}
    found_nothing = (200, "application/json", json.dumps(nothing).encode())
    with scripted(overpass(tmp_path, OSM), "interpreter", [found_nothing]) as server:
        gpkg = fetch_osm(AREA, _url(server), tmp_path / "cache", retries=0, backoff=0)
        assert gpkg.is_file() and len(gpd.read_file(gpkg)) == 0
        fetch_osm(AREA, _url(server), tmp_path / "cache", retries=0, backoff=0)
        assert _interpreter_calls(server) == 1  # the empty answer was final: cached


@needs_osm
def test_an_answer_that_is_not_json_fails_and_is_not_cached(tmp_path: Path) -> None:
    page = (200, "text/html", b"<html><body>The server is probably too busy.</body></html>")
    with scripted(overpass(tmp_path, OSM), "interpreter", [page]) as server:
        with pytest.raises(DownloadError, match=f"^{_url(server)}: Overpass query failed"):
            fetch_osm(AREA, _url(server), tmp_path / "cache", retries=0, backoff=0)
        assert not (tmp_path / "cache" / cache_name(AREA, _url(server))).exists()


def _utm17_area(geometry: Any) -> float:
    to_utm = Transformer.from_crs(4326, 32617, always_xy=True)
    return float(shapely.ops.transform(to_utm.transform, geometry).area)


def test_point_only_village_is_buffered_cached_and_asked_with_lcip_agent(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="lcip.acquire.area")
    recorded = json.loads(ALAFAYA.read_text())
    cache = tmp_path / "place" / "geocode"
    source = {"place": "Alafaya, Florida"}
    server = nominatim_recorded(tmp_path, {"Alafaya, Florida": recorded})
    headers = header_log(server)
    with server:
        area = select_area(source, server.url(""), timeout=10, cache_dir=cache)
        assert len(server.requests) == 2  # the boundary search, then the point (osmnx.geocode)
        again = select_area(source, server.url(""), timeout=10, cache_dir=cache)
        assert len(server.requests) == 2  # the cached answer: no request
    village = shapely.Point(float(recorded[0]["lon"]), float(recorded[0]["lat"]))
    assert area.geometry is not None and area.geometry.geom_type == "Polygon"
    assert area.geometry.contains(village) and again.geometry is not None
    assert again.geometry.equals_exact(area.geometry, 1e-9)
    disc = 3.14159 * POINT_BUFFER_M**2  # metres, not 0.005 degrees
    assert _utm17_area(area.geometry) == pytest.approx(disc, rel=0.02)
    assert (cache / geocode_cache_name("Alafaya, Florida", server.url(""))).is_file()
    assert [h.get("User-Agent") for _, h in headers] == [user_agent(), user_agent()]
    said = [r.getMessage() for r in caplog.records if "only as a point" in r.getMessage()]
    assert len(said) == 2 and "the 1000 m around it" in said[0]  # one line per selection


def test_boundary_answer_is_cached_per_place_and_geocoder(tmp_path: Path) -> None:
    boundary = shapely.box(-76.55, 42.40, -76.45, 42.48)
    cache = tmp_path / "geocode"
    source = {"place": "Ithaca, NY"}
    with (
        nominatim(tmp_path, {"Ithaca, NY": boundary}) as one,
        nominatim(tmp_path, {"Ithaca, NY": boundary}) as other,
    ):
        area = select_area(source, one.url(""), timeout=10, cache_dir=cache)
        select_area(source, one.url(""), timeout=10, cache_dir=cache)
        assert len(one.requests) == 1
        assert area.geometry is not None and area.geometry.equals_exact(boundary, 1e-9)
        select_area(source, other.url(""), timeout=10, cache_dir=cache)
        assert len(other.requests) == 1  # another geocoder: another entry
        with pytest.raises(DataError, match=r"region\.source\.place='Nowhere'"):
            select_area({"place": "Nowhere"}, one.url(""), timeout=10, cache_dir=cache)
    assert len(list(cache.glob("geocode_*.json"))) == 2  # nothing cached for 'Nowhere'
