"""OpenStreetMap features around a tile through osmnx and an Overpass API, cached per area.

:func:`fetch_osm` asks ``acquire.place.osm.overpass_url`` (through osmnx's Overpass query
builder and parser, with ``osmnx.settings`` set for the call) for the features the fused prior
draws -- roads (``highway``), waterways, water bodies (``natural=water``, ``water``,
``landuse=reservoir``) and buildings -- within the tile's footprint plus a buffer, and writes
them as a GeoPackage with one column per tag (:func:`lcip.priors.vectors.read_osm` reads it as
the tile's ``osm`` layer). The file is named after a hash of the query (polygon, tags and
server), so a rerun for the same area finds it and makes no request.

Only final answers are cached. Overpass answers a query that ran out of time or memory with
HTTP 200, the elements found so far (often none) and a ``remark`` (``runtime error: Query timed
out in "query" at line 3 after 181 seconds.``); osmnx only logs it. Here such an answer is a
failure: the query is tried again after a pause, and never cached. An empty layer is cached
only when the server answered without a remark and found nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import geopandas as gpd
import pandas as pd
import shapely
from shapely.geometry.base import BaseGeometry

from lcip.acquire.area import osmnx_settings
from lcip.errors import DownloadError
from lcip.io.atomic import atomic_path
from lcip.priors.vectors import OSM_TAGS

log = logging.getLogger(__name__)


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

#: Seconds the Overpass server may run a query (``[timeout:N]``); ``acquire.place.osm.timeout``.
SERVER_TIMEOUT = 180.0
#: Seconds the HTTP read waits beyond the server's own limit, so the server's answer (with its
#: remark) arrives before the client gives up.
HTTP_MARGIN = 30.0
#: Further attempts after an answer that is not final, and the pause before the first of them
#: (doubled for each further one).
RETRIES = 2
BACKOFF = 30.0
#: A remark that means the answer is not final: the query ran out of time or memory, or the
#: server was too busy (Overpass writes ``runtime error: ...`` for each).
_FAILED_REMARK = re.compile(r"error|timed out|out of memory|too busy", re.IGNORECASE)


class OverpassNotFinalError(DownloadError):
    """Overpass gave no final answer (worth trying again later; never cached).

    A ``remark`` saying the query failed, or a timed-out or dropped connection.
    """


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


def _one_line(text: object, limit: int = 300) -> str:
    return " ".join(str(text).split())[:limit]


def check_answer(answer: Any, overpass_url: str) -> dict[str, Any]:
    """An Overpass JSON answer if it is final; raises otherwise.

    Raises:
        OverpassNotFinalError: for a remark saying the query failed (timed out, out of memory).
        DownloadError: for an answer that is not an Overpass result (no ``elements``).
    """
    if not isinstance(answer, dict) or not isinstance(answer.get("elements"), list):
        raise DownloadError(
            f"{overpass_url}: Overpass answered without elements ({_one_line(answer, 200)})"
        )
    remark = answer.get("remark")
    if remark:
        if _FAILED_REMARK.search(str(remark)):
            raise OverpassNotFinalError(
                f"{overpass_url}: Overpass answered without a final result: {_one_line(remark)}"
            )
        log.warning("%s: Overpass remarked %r", overpass_url, _one_line(remark))
    return answer


class _Checked:
    """Overpass answers passed through :func:`check_answer`, noting when all were seen."""

    def __init__(self, answers: Iterable[Any], overpass_url: str) -> None:
        self.answers = answers
        self.url = overpass_url
        self.complete = False

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for answer in self.answers:
            yield check_answer(answer, self.url)
        self.complete = True


def _query(polygon: BaseGeometry, overpass_url: str, server_timeout: float) -> gpd.GeoDataFrame:
    """One try: the features in ``polygon`` from the server (empty only when it found none).

    osmnx writes ``[timeout:N]`` into the query from ``settings.requests_timeout``
    (``osmnx._overpass._make_overpass_settings`` formats ``settings.overpass_settings`` with it),
    and uses the same value as the HTTP read timeout (``_overpass._overpass_request``). Here the
    server's limit is written into ``overpass_settings`` itself and ``requests_timeout`` is that
    plus :data:`HTTP_MARGIN`, so that the server gives up (and says so) before the client does.
    The answers come from ``osmnx._overpass._download_overpass_features`` and are checked
    (:func:`check_answer`) before ``osmnx.features._create_gdf`` turns them into features, as
    ``osmnx.features.features_from_polygon`` does without the check (osmnx 1.9 to 2.1).
    """
    import requests
    from osmnx._errors import InsufficientResponseError

    with osmnx_settings(
        overpass_url=overpass_url,
        overpass_settings=f"[out:json][timeout:{max(1, round(server_timeout))}]{{maxsize}}",
        requests_timeout=server_timeout + HTTP_MARGIN,
        use_cache=False,
        log_console=False,
    ) as ox:
        answers = _Checked(
            ox._overpass._download_overpass_features(polygon, OSM_TAGS), overpass_url
        )
        try:
            return _flat(ox.features._create_gdf(answers, polygon, OSM_TAGS))
        except InsufficientResponseError as exc:
            if answers.complete:  # every answer was final: the server found no such feature
                return _empty()
            raise DownloadError(
                f"{overpass_url}: Overpass query failed ({_one_line(exc)})"
            ) from None
        except (requests.Timeout, requests.ConnectionError) as exc:
            raise OverpassNotFinalError(
                f"{overpass_url}: Overpass query failed ({_one_line(exc)})"
            ) from None
        except (requests.RequestException, ValueError) as exc:
            raise DownloadError(
                f"{overpass_url}: Overpass query failed ({_one_line(exc)})"
            ) from None


def fetch_osm(
    polygon: BaseGeometry,
    overpass_url: str,
    cache_dir: Path,
    timeout: float = SERVER_TIMEOUT,
    *,
    retries: int = RETRIES,
    backoff: float = BACKOFF,
) -> Path:
    """The OSM features in ``polygon`` (EPSG:4326) as a GeoPackage, from the cache if there.

    Args:
        polygon: the area (the tile's footprint plus a buffer), longitude / latitude.
        overpass_url: the Overpass API's base URL (osmnx adds ``/interpreter``).
        cache_dir: folder of the cached answers.
        timeout: seconds the server may run the query (``acquire.place.osm.timeout``); the
            HTTP read waits :data:`HTTP_MARGIN` longer.
        retries: further attempts after an answer that is not final (a failure remark, a
            timed-out or dropped connection).
        backoff: seconds before the first further attempt, doubled for each next one.

    Returns:
        the GeoPackage (EPSG:4326; empty when the server found no such feature).

    Raises:
        DownloadError: one line naming the server (and its remark) when the query fails.
    """
    path = cache_dir / cache_name(polygon, overpass_url)
    if path.is_file():
        return path
    for attempt in range(retries + 1):
        try:
            gdf = _query(polygon, overpass_url, timeout)
            break
        except OverpassNotFinalError as exc:
            if attempt == retries:
                raise OverpassNotFinalError(
                    f"{exc} (after {retries + 1} tries; nothing cached: retry later, or raise "
                    "acquire.place.osm.timeout for a large area)"
                ) from None
            pause = backoff * 2**attempt
            log.warning("%s; trying again in %g s", exc, pause)
            time.sleep(pause)
    log.info("%s: %d OSM features", overpass_url, len(gdf))
    return write_gpkg(gdf, path, "osm")


def write_gpkg(gdf: gpd.GeoDataFrame, dst: Path, layer: str) -> Path:
    """Write a GeoPackage atomically (through a temporary file beside ``dst``)."""
    with atomic_path(dst) as tmp, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The filename extension should be 'gpkg'")
        tmp.unlink()  # the GeoPackage driver creates its own file
        gdf.to_file(tmp, driver="GPKG", layer=layer)
    return dst


__all__ = [
    "BACKOFF",
    "HTTP_MARGIN",
    "KEPT_COLUMNS",
    "OSM_TAGS",
    "RETRIES",
    "SERVER_TIMEOUT",
    "OverpassNotFinalError",
    "cache_name",
    "check_answer",
    "fetch_osm",
    "write_gpkg",
]
