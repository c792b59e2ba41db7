"""NAIP (and optional 1 m labels) through a STAC API, with pystac-client.

``acquire.place.stac`` names the catalog: ``url`` (default the Microsoft Planetary Computer,
``https://planetarycomputer.microsoft.com/api/stac/v1``), ``collection`` (``naip``), the
imagery ``asset`` key (``image``) and ``sign``: the Planetary Computer serves its blobs
through short-lived signed URLs, made by the ``planetary-computer`` package
(:func:`planetary_computer.sign_inplace`, no account needed); other catalogs (e.g. Element 84's
Earth Search) need ``sign: false``.

:func:`search` returns the items of a collection that intersect an area in a time range;
:func:`newest_scenes` keeps, for every NAIP quarter quad, its newest scene, and only scenes
that touch the area (or the asked tile ids).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import shapely
from shapely.geometry import shape
from shapely.geometry.base import BaseGeometry

from lcip.acquire.area import quarter_quad
from lcip.errors import ConfigError, DataError, DownloadError

log = logging.getLogger(__name__)

_QUAD = re.compile(r"m_(\d{2})(\d{3})(\d{2})_(ne|nw|se|sw)_\d{2}")


@dataclass(frozen=True)
class Scene:
    """A STAC item chosen as a tile.

    Attributes:
        id: the item id (the tile id).
        datetime: its acquisition time (ISO 8601).
        href: the asset's URL (signed when the catalog needs it).
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


def open_catalog(url: str, sign: bool, timeout: float = 60) -> Any:
    """A pystac-client ``Client`` on the catalog (asset URLs signed when ``sign``).

    Raises:
        DownloadError: one line naming the URL when the catalog cannot be opened.
        ConfigError: when ``sign`` is set but ``planetary-computer`` is not installed.
    """
    from pystac_client import Client

    modifier = None
    if sign:
        try:
            import planetary_computer
        except ImportError:
            raise ConfigError(
                "acquire.place.stac.sign=true needs the planetary-computer package "
                "(pip install planetary-computer)"
            ) from None
        modifier = planetary_computer.sign_inplace
    try:
        return Client.open(url, modifier=modifier, timeout=timeout)
    except Exception as exc:  # pystac-client raises APIError, requests errors, ValueError
        raise DownloadError(f"{url}: cannot open the STAC API ({_one_line(exc)})") from None


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300] or type(exc).__name__


def search(
    url: str,
    collection: str,
    area: BaseGeometry,
    datetime: str | None,
    *,
    sign: bool = False,
    timeout: float = 60,
) -> list[dict[str, Any]]:
    """The items of ``collection`` intersecting ``area`` (EPSG:4326) in ``datetime``.

    Raises:
        DownloadError: one line naming the URL when the search fails.
    """
    client = open_catalog(url, sign, timeout)
    try:
        found = client.search(
            collections=[collection],
            intersects=shapely.geometry.mapping(area),
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


__all__ = ["Scene", "newest_scenes", "open_catalog", "quad_box", "scene_of", "search"]
