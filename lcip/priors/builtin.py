"""Built-in cooccurrence tables: published P(class | NLCD class), shipped with lcip.

A region without 1 m labels needs a cooccurrence matrix for its NLCD-based priors. Instead of
acquiring a whole labelled region to count one, it can borrow a table packaged with lcip
(``lcip/resources/cooccurrence/``), selected with ``cooccurrence.source=builtin:<name>``:

- ``chesapeake4``: the NLCD -> water / tree canopy / low vegetation / impervious fractions
  published with the label super-resolution work on the Chesapeake Land Cover data
  (``calebrob6/land-cover``, ``data/nlcd_mu.txt``), each NLCD class normalized to sum to 1;
  it also carries that work's per-class standard deviations as label super-resolution
  statistics (``loss=lsr``);
- ``pittsburgh``, ``durham``, ``austin``, ``phoenix``: the paper's own EnviroAtlas matrices
  (``estherrolf/implicit-posterior``), in the ``enviroatlas5`` classes and, converted with a
  documented class mapping (:data:`ENVIROATLAS_TO_CHESAPEAKE4`), in the ``chesapeake4`` ones.

A name may exist in several class schemes (``durham``: ``enviroatlas5_raw`` and
``chesapeake4``): ``builtin:<name>`` picks the table whose classes are the region's. Every
table has a JSON record beside its CSV: source repository, path, commit and sha256 of the
file it was converted from, region, years, how it was counted and what lcip changed
(:func:`describe`); ``scripts/make_builtin_cooccurrence.py`` rebuilds the tables from the
upstream files.

``cooccurrence.source=auto`` (the default of ``region=place``) chooses by where the area is
(:func:`choose_table`): the Chesapeake table when the centroid of the region's tiles lies in
one of the Chesapeake Bay watershed states (New York, Pennsylvania, Maryland, Delaware,
Virginia, West Virginia, District of Columbia; their outline is packaged, nothing is
downloaded), otherwise the table of the nearest EnviroAtlas city (great-circle distance).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cache
from importlib.resources import files
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from lcip.classes import CHESAPEAKE4, ENVIROATLAS5_RAW, NLCD_CODES, ClassScheme
from lcip.errors import ConfigError, DataError
from lcip.io.manifest import Manifest
from lcip.priors.cooccurrence import NUM_NLCD, Cooccurrence, LSRStatistics

#: The prefix of a built-in table in ``cooccurrence.source``.
PREFIX = "builtin:"
#: The ``cooccurrence.source`` value that chooses a built-in table by location.
AUTO = "auto"
#: The packaged outline of the Chesapeake Bay watershed states (GeoJSON, longitude/latitude).
STATES_FILE = "chesapeake_states.geojson"

#: The rows of the paper's EnviroAtlas matrices (11 x 17): raw EnviroAtlas land cover codes,
#: 0 = unclassified (the paper's marker row for NLCD classes without labelled pixels).
ENVIROATLAS_ROWS: tuple[int, ...] = (0, 10, 20, 30, 40, 52, 70, 80, 82, 91, 92)

#: EnviroAtlas classes (``enviroatlas5``) -> ``chesapeake4`` classes, the mapping the
#: Chesapeake 4-class labels use themselves: barren is merged into impervious.
ENVIROATLAS_TO_CHESAPEAKE4: dict[str, str] = {
    "water": "water",
    "impervious": "impervious",
    "barren": "impervious",
    "tree": "tree canopy",
    "grass": "low vegetation",
}

EARTH_RADIUS_KM = 6371.0088


def _data_dir() -> Path:
    return Path(str(files("lcip") / "resources" / "cooccurrence"))


# --------------------------------------------------------------------------- conversion


def collapse_rows(
    matrix: npt.NDArray[Any], row_class: Sequence[int | None], num_classes: int
) -> npt.NDArray[np.float64]:
    """Sum the rows of a P(row | NLCD) matrix into classes and renormalize each column.

    Args:
        matrix: (R, 17) source matrix, columns in :data:`NLCD_CODES` order.
        row_class: per source row, its target class index, or None to drop it (unclassified).
        num_classes: number of target classes C.

    Returns:
        (C, 17) float64 whose columns sum to 1; a column with no mass left (and the nodata
        column) is uniform, 1 / C, as lcip's own counting makes an NLCD class without
        labelled pixels.
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.shape != (len(row_class), NUM_NLCD):
        raise DataError(f"matrix of shape {matrix.shape}, expected ({len(row_class)}, {NUM_NLCD})")
    out = np.zeros((num_classes, NUM_NLCD))
    for row, cls in enumerate(row_class):
        if cls is not None:
            out[cls] += matrix[row]
    mass = out.sum(axis=0)
    seen = mass > 1e-12
    seen[0] = False
    result = np.full_like(out, 1.0 / num_classes)
    result[:, seen] = out[:, seen] / mass[seen]
    return result


def enviroatlas_row_classes(scheme: ClassScheme) -> list[int | None]:
    """The target class of each row of the paper's EnviroAtlas matrices in ``scheme``.

    ``enviroatlas5_raw`` (and schemes with its classes) use its ``prior_map`` (shrub,
    orchards and woody wetlands -> tree; agriculture and emergent wetlands -> grass);
    ``chesapeake4`` then goes through :data:`ENVIROATLAS_TO_CHESAPEAKE4`.

    Raises:
        ConfigError: for a scheme with other classes.
    """
    prior_map = ENVIROATLAS5_RAW.prior_map or ENVIROATLAS5_RAW.label_map
    five = [prior_map.get(code) for code in ENVIROATLAS_ROWS]
    if scheme.classes == ENVIROATLAS5_RAW.classes:
        return five
    if scheme.classes == CHESAPEAKE4.classes:
        names = ENVIROATLAS5_RAW.classes
        return [
            None if c is None else CHESAPEAKE4.classes.index(ENVIROATLAS_TO_CHESAPEAKE4[names[c]])
            for c in five
        ]
    raise ConfigError(f"no mapping of EnviroAtlas classes to scheme {scheme.name!r}")


def land_cover_rows(
    values: npt.NDArray[Any], codes: Mapping[int, int], fill: float
) -> npt.NDArray[np.float64]:
    """Reorder the rows of a ``calebrob6/land-cover`` NLCD table into a (4, 17) lcip matrix.

    Args:
        values: (R, 4) table, one row per NLCD row index of ``nlcd_to_lr_labels.txt``.
        codes: NLCD code -> row index (``nlcd_to_lr_labels.txt``).
        fill: value of the columns lcip treats as unseen (nodata 0 and ice / snow 12,
            whose published row is a placeholder).

    Returns:
        (4, 17) float64, columns in :data:`NLCD_CODES` order.
    """
    out = np.full((values.shape[1], NUM_NLCD), fill)
    for n, code in enumerate(NLCD_CODES):
        if code in (0, 12):
            continue
        if code not in codes:
            raise DataError(f"NLCD code {code} has no row in the land-cover code table")
        out[:, n] = values[codes[code]]
    return out


def normalize_columns(matrix: npt.NDArray[Any]) -> npt.NDArray[np.float64]:
    """Columns scaled to sum to 1 (the published fractions are rounded to 0.01)."""
    matrix = np.asarray(matrix, dtype=np.float64)
    return matrix / matrix.sum(axis=0, keepdims=True)


# --------------------------------------------------------------------------- the tables


@dataclass(frozen=True)
class BuiltinTable:
    """One packaged cooccurrence table.

    Args:
        name: the name in ``builtin:<name>``.
        scheme: the class scheme of its rows.
        csv_path: the packaged CSV (as :meth:`Cooccurrence.write` writes it).
        record: its JSON record (``title``, ``area``, ``provenance``, ...).
    """

    name: str
    scheme: str
    csv_path: Path
    record: Mapping[str, Any] = field(default_factory=dict)

    @property
    def classes(self) -> tuple[str, ...]:
        """The class names of its rows."""
        return tuple(str(c) for c in self.record.get("classes", ()))

    @property
    def provenance(self) -> dict[str, Any]:
        """Where its figures come from (repository, path, commit, region, years, ...)."""
        return dict(self.record.get("provenance", {}))

    @property
    def area(self) -> dict[str, Any]:
        """What area it describes: ``name`` and a point (``lon``, ``lat``) or ``polygon``."""
        return dict(self.record.get("area", {}))

    @property
    def label(self) -> str:
        """``builtin:<name>`` with its scheme and upstream file: recorded in the priors."""
        prov = self.provenance
        commit = str(prov.get("commit", ""))[:7]
        return (
            f"{PREFIX}{self.name} ({self.scheme}; {prov.get('repository')}@{commit} "
            f"{prov.get('path')})"
        )

    def load(self) -> Cooccurrence:
        """The table as a :class:`Cooccurrence`, its source and provenance set.

        Raises:
            DataError: if the packaged files are malformed.
        """
        coocc = Cooccurrence.read(self.csv_path)
        lsr_file = self.record.get("lsr_statistics")
        lsr = None
        if lsr_file:
            lsr = replace(
                LSRStatistics.read(self.csv_path.parent / str(lsr_file)), source=self.label
            )
        return replace(coocc, source=self.label, provenance=describe(self), lsr=lsr)


def describe(table: BuiltinTable) -> dict[str, Any]:
    """The table's record as written into ``cooccurrence.json``: name, scheme, area, source."""
    return {
        "builtin": table.name,
        "scheme": table.scheme,
        "title": table.record.get("title"),
        "area": table.area,
        **table.provenance,
    }


@cache
def _tables(folder: str) -> tuple[BuiltinTable, ...]:
    out = []
    for path in sorted(Path(folder).glob("*.json")):
        if path.name.endswith(".lsr_statistics.json"):
            continue
        try:
            record = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise DataError(f"{path}: cannot be read as JSON ({exc})") from None
        if "builtin" not in record:
            continue
        out.append(
            BuiltinTable(
                str(record["builtin"]), str(record["scheme"]), path.with_suffix(".csv"), record
            )
        )
    return tuple(out)


def builtin_tables(folder: str | Path | None = None) -> tuple[BuiltinTable, ...]:
    """Every packaged table (of ``folder``, by default lcip's ``data/cooccurrence``)."""
    return _tables(str(folder or _data_dir()))


def available(tables: Sequence[BuiltinTable] | None = None) -> str:
    """``name (scheme, ...)`` for every table name, for messages."""
    tables = builtin_tables() if tables is None else tables
    names: dict[str, list[str]] = {}
    for t in tables:
        names.setdefault(t.name, []).append(t.scheme)
    return ", ".join(f"{PREFIX}{n} ({', '.join(sorted(s))})" for n, s in sorted(names.items()))


def builtin_table(
    name: str, scheme: ClassScheme, setting: str = "cooccurrence.source"
) -> BuiltinTable:
    """The table ``builtin:<name>`` whose classes are those of ``scheme``.

    Args:
        name: the table name (without the ``builtin:`` prefix).
        scheme: the region's class scheme.
        setting: the setting to name in errors.

    Raises:
        ConfigError: one line, for an unknown name (listing the available ones) or a name
            with no table in the scheme's classes (listing the schemes it has).
    """
    tables = builtin_tables()
    named = [t for t in tables if t.name == name]
    if not named:
        raise ConfigError(
            f"{setting}={PREFIX}{name}: no built-in cooccurrence table of that name; "
            f"available: {available(tables)}"
        )
    for table in named:
        if table.classes == scheme.classes:
            return table
    schemes = sorted(t.scheme for t in named)
    raise ConfigError(
        f"{setting}={PREFIX}{name}: the built-in table is in scheme(s) {schemes}, but the "
        f"region's scheme {scheme.name!r} has classes {list(scheme.classes)}; choose a table "
        f"in its scheme ({available([t for t in tables if t.classes == scheme.classes]) or 'none'})"
    )


# --------------------------------------------------------------------------- by location


def great_circle_km(lon1: float, lat1: float, lon2: float, lat2: float) -> float:
    """Great-circle distance in km between two points in degrees (haversine)."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(a)))


@cache
def _polygon(path: str) -> Any:
    import shapely
    from shapely.geometry import shape

    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: cannot be read as GeoJSON ({exc})") from None
    geoms = [shape(f["geometry"]) for f in data.get("features", [])]
    return shapely.union_all(geoms)


def in_area(table: BuiltinTable, lon: float, lat: float) -> bool:
    """Whether a point lies in a table's packaged polygon (False for point-located tables)."""
    import shapely

    polygon = table.area.get("polygon")
    if not polygon:
        return False
    return bool(_polygon(str(table.csv_path.parent / str(polygon))).covers(shapely.Point(lon, lat)))


def area_centroid(manifest: Manifest) -> tuple[float, float]:
    """The (longitude, latitude) of the tiles' centres, weighted by tile area.

    Raises:
        DataError: for a manifest without tiles or a tile CRS pyproj does not know.
    """
    from pyproj import CRS, Transformer
    from pyproj.exceptions import CRSError

    where = manifest.path or "manifest"
    if len(manifest) == 0:
        raise DataError(f"{where}: no tiles to locate the area by")
    lons, lats, weights = [], [], []
    for tile in manifest:
        left, bottom, right, top = tile.bounds
        try:
            to_lonlat = Transformer.from_crs(CRS.from_user_input(tile.crs), 4326, always_xy=True)
        except CRSError as exc:
            raise DataError(
                f"{where}: tile {tile.tile_id} has an unknown CRS {tile.crs!r} ({exc})"
            ) from None
        lon, lat = to_lonlat.transform((left + right) / 2, (bottom + top) / 2)
        lons.append(lon)
        lats.append(lat)
        weights.append(max(abs((right - left) * (top - bottom)), 1e-12))
    w = np.asarray(weights)
    return float(np.average(lons, weights=w)), float(np.average(lats, weights=w))


def choose_table(lon: float, lat: float, scheme: ClassScheme) -> tuple[BuiltinTable, str]:
    """The built-in table for an area centred at (lon, lat), and why, in the scheme's classes.

    A table whose packaged polygon holds the point wins (the Chesapeake table inside the
    watershed states); otherwise the table whose city is nearest (great-circle distance).

    Returns:
        (table, reason): the reason is a short phrase for the log line.

    Raises:
        ConfigError: if no built-in table has the scheme's classes.
    """
    tables = [t for t in builtin_tables() if t.classes == scheme.classes]
    if not tables:
        raise ConfigError(
            f"cooccurrence.source={AUTO}: no built-in table in the region's scheme "
            f"{scheme.name!r}; available: {available()}"
        )
    for table in tables:
        if in_area(table, lon, lat):
            return table, f"the area's centre lies in {table.area.get('name')}"
    located = [t for t in tables if "lon" in t.area and "lat" in t.area]
    if not located:
        raise ConfigError(
            f"cooccurrence.source={AUTO}: the area's centre ({lat:.4f}, {lon:.4f}) lies outside "
            f"every built-in table's area; name one: {available(tables)}"
        )
    dist = {
        t.name: great_circle_km(lon, lat, float(t.area["lon"]), float(t.area["lat"]))
        for t in located
    }
    best = min(located, key=lambda t: dist[t.name])
    reason = f"nearest EnviroAtlas city: {best.area.get('name')}, {dist[best.name]:.0f} km"
    caveat = best.record.get("caveat")
    return best, f"{reason}; {caveat}" if caveat else reason


__all__ = [
    "AUTO",
    "ENVIROATLAS_ROWS",
    "ENVIROATLAS_TO_CHESAPEAKE4",
    "PREFIX",
    "STATES_FILE",
    "BuiltinTable",
    "area_centroid",
    "available",
    "builtin_table",
    "builtin_tables",
    "choose_table",
    "collapse_rows",
    "describe",
    "enviroatlas_row_classes",
    "great_circle_km",
    "in_area",
    "land_cover_rows",
    "normalize_columns",
]
