"""NAIP (and optional 1 m labels) through a STAC API, with pystac-client.

``acquire.place.stac`` names the catalog: ``url`` (default the Microsoft Planetary Computer,
``https://planetarycomputer.microsoft.com/api/stac/v1``), ``collection`` (``naip``), the
imagery ``asset`` key (``image``) and ``sign``: the Planetary Computer serves its blobs
through signed URLs whose SAS tokens expire (about 45 minutes; no account needed). Searches
return the public URLs; :func:`signer` gives the function that signs one right before each
request (:func:`lcip.acquire.http.download`'s ``sign``), fetching a fresh token after a 403.
Other catalogs (e.g. Element 84's Earth Search) need ``sign: false``.

:func:`search` returns the items of a collection that intersect an area in a time range;
:func:`newest_scenes` keeps, for every NAIP quarter quad, its newest scene, and only scenes
that touch the area (or the asked tile ids).
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC
from datetime import datetime as _datetime
from functools import cache
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import numpy as np
import shapely
from shapely.geometry import shape
from shapely.geometry.base import BaseGeometry

from lcip.acquire.area import quarter_quad
from lcip.acquire.http import Sign, get_json, user_agent
from lcip.errors import ConfigError, DataError, DownloadError

log = logging.getLogger(__name__)

_QUAD = re.compile(r"m_(\d{2})(\d{3})(\d{2})_(ne|nw|se|sw)_\d{2}")


@dataclass(frozen=True)
class Scene:
    """A STAC item chosen as a tile.

    Attributes:
        id: the item id (the tile id).
        datetime: its acquisition time (ISO 8601).
        href: the asset's public URL (sign it per request: :func:`signer`).
        size: the asset's size in bytes when the catalog says (``file:size``), else None.
        geometry: the item's footprint (EPSG:4326).
        item: the whole item as a dict.
    """

    id: str
    datetime: str
    href: str
    size: int | None
    geometry: BaseGeometry
    item: Mapping[str, Any]


def quad_box(quad: str) -> BaseGeometry:
    """The footprint (EPSG:4326) of a NAIP quarter quad (``m_4207601_ne_18``).

    The 1 x 1 degree block is named by its south-east corner; its 64 quads of 7.5 minutes are
    numbered from the north-west row by row; the quarter is the quad's ne / nw / se / sw
    3.75-minute corner.

    Raises:
        ConfigError: for a malformed id.
    """
    match = _QUAD.fullmatch(quarter_quad(quad))
    if match is None:  # pragma: no cover (quarter_quad checked the form)
        raise ConfigError(f"NAIP tile {quad!r}: not a quarter-quad id")
    lat, lon, n, corner = int(match[1]), int(match[2]), int(match[3]), match[4]
    if not 1 <= n <= 64:
        raise ConfigError(f"NAIP tile {quad!r}: quad number {n} is not in 1..64")
    row, col = divmod(n - 1, 8)
    top, left = lat + 1 - row / 8, -(lon + 1) + col / 8
    top -= 0 if corner[0] == "n" else 1 / 16
    left += 1 / 16 if corner[1] == "e" else 0
    return shapely.box(left, top - 1 / 16, left + 1 / 16, top)


def open_catalog(url: str, timeout: float = 60) -> Any:
    """A pystac-client ``Client`` on the catalog, sending lcip's ``User-Agent``.

    Asset URLs stay unsigned: a signature made now would expire before later downloads
    (sign each request with :func:`signer`).

    Raises:
        DownloadError: one line naming the URL when the catalog cannot be opened.
    """
    from pystac_client import Client

    try:
        return Client.open(url, headers={"User-Agent": user_agent()}, timeout=timeout)
    except Exception as exc:  # pystac-client raises APIError, requests errors, ValueError
        raise DownloadError(f"{url}: cannot open the STAC API ({_one_line(exc)})") from None


#: The Planetary Computer's SAS token endpoint, ``<url>/<storage account>/<container>``
#: (https://planetarycomputer.microsoft.com/docs/concepts/sas/; the planetary-computer
#: package's default, which its ``PC_SDK_SAS_URL`` setting overrides).
SAS_TOKEN_URL = "https://planetarycomputer.microsoft.com/api/sas/v1/token"
#: Hosts whose URLs get a SAS token: Azure Blob Storage accounts.
BLOB_HOST_SUFFIX = ".blob.core.windows.net"
#: Query parameters of a SAS token (dropped from a URL before it is signed again).
_SAS_KEYS = frozenset(
    "sv ss srt sp se st spr sip sr si sig skoid sktid skt ske sks skv saoid suoid scid".split()
)


def unsigned(url: str) -> str:
    """``url`` without the parameters of a SAS token (other query parameters kept)."""
    parts = urlsplit(url)
    kept = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in _SAS_KEYS]
    return urlunsplit(parts._replace(query=urlencode(kept)))


class SasSigner:
    """Signs Azure Blob URLs with Planetary Computer SAS tokens, one token per container.

    It follows the ``planetary-computer`` package's protocol (``GET <token_url>/<account>/
    <container>`` answers ``{"msft:expiry": "<RFC 3339>", "token": "<query string>"}``; the
    URL gets ``?<token>``; a cached token is reused until less than ``margin_s`` seconds are
    left) but makes its token requests through :mod:`lcip.acquire.http` (lcip's User-Agent,
    per-host limits, ``Retry-After``), and :meth:`fresh` requests a new token whatever the
    cache holds: after an HTTP 403 the cached token is the suspect. URLs of other hosts are
    returned unchanged.

    Args:
        token_url: the token endpoint.
        subscription_key: a Planetary Computer API key (``Ocp-Apim-Subscription-Key``), if any.
        host_suffix: which hosts are signed.
        margin_s: seconds before a token's expiry at which a new one is requested.
        timeout: seconds to wait for the token endpoint.
        retries: retries of a failed token request.
    """

    def __init__(
        self,
        token_url: str = SAS_TOKEN_URL,
        *,
        subscription_key: str | None = None,
        host_suffix: str = BLOB_HOST_SUFFIX,
        margin_s: float = 60.0,
        timeout: float = 60,
        retries: int = 5,
    ) -> None:
        self.token_url = token_url.rstrip("/")
        self.subscription_key = subscription_key
        self.host_suffix = host_suffix
        self.margin_s = margin_s
        self.timeout = timeout
        self.retries = retries
        self.requests = 0  # tokens requested so far
        self._tokens: dict[str, tuple[str, float]] = {}  # token URL -> (token, expiry epoch)
        self._lock = threading.Lock()

    def __call__(self, url: str, /) -> str:
        """``url`` signed, with the cached token while it has ``margin_s`` seconds left."""
        return self._sign(url, fresh=False)

    def fresh(self, url: str, /) -> str:
        """``url`` signed with a newly requested token (the cache is replaced)."""
        return self._sign(url, fresh=True)

    def _token_url(self, url: str) -> str | None:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        container, _, blob = parts.path.lstrip("/").partition("/")
        if not host.endswith(self.host_suffix) or not container or not blob:
            return None
        return f"{self.token_url}/{host.split('.')[0]}/{container}"

    def _sign(self, url: str, fresh: bool) -> str:
        token_url = self._token_url(url)
        if token_url is None:
            return url
        base = unsigned(url)
        return f"{base}{'&' if urlsplit(base).query else '?'}{self._token(token_url, fresh)}"

    def _token(self, token_url: str, fresh: bool) -> str:
        with self._lock:  # one request at a time: threads waiting for a token share it
            cached = self._tokens.get(token_url)
            if cached is not None and not fresh and cached[1] - time.time() > self.margin_s:
                return cached[0]
            headers = (
                {"Ocp-Apim-Subscription-Key": self.subscription_key}
                if self.subscription_key
                else None
            )
            answer = get_json(
                token_url, headers=headers, timeout=self.timeout, retries=self.retries
            )
            self.requests += 1
            try:
                token = str(answer["token"]).lstrip("?")
                when = _datetime.fromisoformat(str(answer["msft:expiry"]))
                expiry = (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()
            except (KeyError, TypeError, ValueError):
                raise DownloadError(
                    f"{token_url}: not a SAS token answer (expected 'token' and 'msft:expiry')"
                ) from None
            self._tokens[token_url] = (token, expiry)
            log.debug("%s: SAS token valid for %.0f s", token_url, expiry - time.time())
            return token


def _unchanged(url: str) -> str:
    return url


def _planetary_computer_settings() -> tuple[str, str | None]:
    """The token endpoint and API key the planetary-computer package is configured with."""
    try:
        from planetary_computer.settings import Settings
    except ImportError:  # pragma: no cover - a declared dependency; its variables still apply
        return os.environ.get("PC_SDK_SAS_URL") or SAS_TOKEN_URL, os.environ.get(
            "PC_SDK_SUBSCRIPTION_KEY"
        )
    settings = Settings.get()
    return settings.sas_url or SAS_TOKEN_URL, settings.subscription_key


@cache
def _shared_signer(token_url: str, key: str | None, timeout: float, retries: int) -> SasSigner:
    return SasSigner(token_url, subscription_key=key, timeout=timeout, retries=retries)


def signer(enabled: bool, *, timeout: float = 60, retries: int = 5) -> Sign:
    """The function that signs an asset URL right before a request.

    Args:
        enabled: ``acquire.place.stac.sign``: when false, URLs are used as they are.
        timeout: seconds to wait for the token endpoint.
        retries: retries of a failed token request.

    Returns:
        the identity when not ``enabled``; else a :class:`SasSigner` on the Planetary
        Computer's token endpoint (as configured for the planetary-computer package: its
        ``PC_SDK_SAS_URL`` and ``PC_SDK_SUBSCRIPTION_KEY``), shared by all calls so that its
        token cache is too.
    """
    if not enabled:
        return _unchanged
    token_url, key = _planetary_computer_settings()
    return _shared_signer(token_url, key, float(timeout), int(retries))


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300] or type(exc).__name__


#: Largest GeoJSON (bytes) of the geometry sent with a search; a larger area is sent as a
#: simplified convex hull, else as its envelope (pgstac, behind the Planetary Computer's API,
#: has answered HTTP 500 to searches with complex polygons: it limits geometries to ~8 KB).
MAX_GEOMETRY_BYTES = 4000


def _geojson_bytes(geometry: BaseGeometry) -> int:
    return len(json.dumps(shapely.geometry.mapping(geometry), separators=(",", ":")))


def _rounded(geometry: BaseGeometry, decimals: int = 6) -> BaseGeometry:
    return shapely.transform(geometry, lambda xy: np.round(xy, decimals))


def search_geometry(area: BaseGeometry, max_bytes: int = MAX_GEOMETRY_BYTES) -> BaseGeometry:
    """The geometry to send with a search of ``area``: small, and covering all of ``area``.

    ``area`` itself when its GeoJSON fits in ``max_bytes``; else its convex hull, simplified
    (grown first by the simplification's tolerance, so that it still covers the area) until it
    fits; else the envelope. Items are then filtered against the exact area
    (:func:`newest_scenes`).
    """
    if _geojson_bytes(area) <= max_bytes:
        return area
    hull = area.convex_hull
    minx, miny, maxx, maxy = area.bounds
    extent = max(maxx - minx, maxy - miny, 1e-6)
    for fraction in (0.0, 0.001, 0.005, 0.02, 0.05):
        tol = extent * fraction
        candidate = hull if tol == 0 else hull.buffer(tol + 1e-5, quad_segs=2).simplify(tol)
        candidate = _rounded(candidate)
        if candidate.covers(area) and _geojson_bytes(candidate) <= max_bytes:
            return candidate
    return shapely.box(
        math.floor(minx * 1e6) / 1e6,
        math.floor(miny * 1e6) / 1e6,
        math.ceil(maxx * 1e6) / 1e6,
        math.ceil(maxy * 1e6) / 1e6,
    )


def search(
    url: str,
    collection: str,
    area: BaseGeometry,
    datetime: str | None,
    *,
    timeout: float = 60,
    max_geometry_bytes: int = MAX_GEOMETRY_BYTES,
) -> list[dict[str, Any]]:
    """The items of ``collection`` intersecting ``area`` (EPSG:4326) in ``datetime``.

    Asset URLs come back unsigned: sign each request with :func:`signer` (a signature made at
    search time would expire before the downloads end).

    The search sends :func:`search_geometry` (at most ``max_geometry_bytes`` of GeoJSON), so
    items that touch only its hull come back too: filter them against ``area``.

    Raises:
        DownloadError: one line naming the URL when the search fails.
    """
    client = open_catalog(url, timeout)
    sent = search_geometry(area, max_geometry_bytes)
    try:
        found = client.search(
            collections=[collection],
            intersects=shapely.geometry.mapping(sent),
            datetime=datetime,
        )
        items = [item.to_dict() for item in found.items()]
    except Exception as exc:
        raise DownloadError(
            f"{url}: STAC search of {collection!r} failed ({_one_line(exc)})"
        ) from None
    log.info("%s: %d %s items", url, len(items), collection)
    return items


def scene_of(item: Mapping[str, Any], asset: str) -> Scene:
    """The :class:`Scene` of an item's asset.

    The size is the asset's ``file:size`` when the catalog gives it; the Planetary Computer's
    NAIP items do not, so the stage asks the server (a ``HEAD`` request) before downloading.

    Raises:
        DataError: when the item has no such asset.
    """
    assets = item.get("assets") or {}
    if asset not in assets:
        raise DataError(
            f"STAC item {item.get('id')}: no asset {asset!r} (has {sorted(assets)}); "
            "set acquire.place.stac.asset"
        )
    a = assets[asset]
    size = a.get("file:size")
    return Scene(
        id=str(item["id"]),
        datetime=str(item.get("properties", {}).get("datetime") or ""),
        href=str(a["href"]),
        size=int(size) if size is not None else None,
        geometry=shape(item["geometry"]),
        item=item,
    )


def _group(item_id: str) -> str:
    try:
        return quarter_quad(item_id)
    except ConfigError:
        return item_id


def newest_scenes(
    items: Sequence[Mapping[str, Any]],
    asset: str,
    area: BaseGeometry | None,
    tiles: Sequence[str] | None = None,
) -> list[Scene]:
    """The newest scene of every NAIP quarter quad that touches the area (or is asked for).

    Args:
        items: STAC items (dicts).
        asset: the asset holding the imagery.
        area: the area (EPSG:4326); None keeps every item (tile ids select them).
        tiles: quarter-quad ids to keep, or None for all.

    Returns:
        the scenes, sorted by id.
    """
    newest: dict[str, Scene] = {}
    for item in items:
        group = _group(str(item["id"]))
        if tiles is not None and group not in tiles:
            continue
        scene = scene_of(item, asset)
        if area is not None and not scene.geometry.intersects(area):
            continue
        old = newest.get(group)
        if old is None or (scene.datetime, scene.id) > (old.datetime, old.id):
            newest[group] = scene
    return sorted(newest.values(), key=lambda s: s.id)


__all__ = [
    "BLOB_HOST_SUFFIX",
    "MAX_GEOMETRY_BYTES",
    "SAS_TOKEN_URL",
    "SasSigner",
    "Scene",
    "newest_scenes",
    "open_catalog",
    "quad_box",
    "scene_of",
    "search",
    "search_geometry",
    "signer",
    "unsigned",
]
