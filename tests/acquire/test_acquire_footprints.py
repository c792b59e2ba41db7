"""Building footprints at scale (issue 17, item 7): each quadkey file parsed once, indexed.

Two tiles share one quadkey file: it is downloaded once (after a throttled 429), parsed once
into a GeoPackage with a spatial index, and each tile gets exactly the footprints a direct
filter of the features gives; a rerun makes no request. The index host is a setting, cached
by its URL.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import numpy as np
import pyogrio
import pytest
import shapely

from lcip.acquire import footprints as fp
from lcip.acquire.place import Options, _footprints
from lcip.errors import DataError
from tests.stand_ins import StandIn

OPTS = Options(dry_run=False, timeout=20, retries=3, progress=False, force=False)


def _features(bounds: tuple[float, float, float, float], n: int, seed: int = 0) -> list[Any]:
    rng = np.random.default_rng(seed)
    minx, miny, maxx, maxy = bounds
    out = []
    for i in range(n):
        x, y = rng.uniform(minx, maxx), rng.uniform(miny, maxy)
        box = shapely.box(x, y, x + 0.0002, y + 0.00015)
        geometry = shapely.geometry.mapping(box)
        # The dataset's lines are Features; the oldest releases held bare geometries.
        out.append(
            geometry
            if i % 10 == 0
            else {"type": "Feature", "geometry": geometry, "properties": {"height": -1.0}}
        )
    return out


def _geometry(feature: Any) -> Any:
    return shapely.geometry.shape(feature.get("geometry", feature))


def _served(root: Path, features: list[Any], key: str) -> None:
    (root / f"{key}.csv.gz").write_bytes(fp.gz_lines(features))
    rows = ["Location,QuadKey,Url,Size,UploadDate"]
    rows.append(f"UnitedStates,{key},FILE/{key}.csv.gz,1MB,2025-02-28")
    rows.append("UnitedStates,021230030,FILE/021230030.csv.gz,90MB,2025-02-28")  # elsewhere
    (root / "dataset-links.template").write_text("\n".join(rows) + "\n")


def _throttled_once(root: Path, path: str) -> StandIn:
    """Files under ``root``; the first GET of ``path`` answered 429 Too Many Requests."""
    state = {"throttled": False}

    def answer(method: str, query: dict[str, list[str]], body: bytes) -> tuple[int, str, bytes]:
        if not state["throttled"]:
            state["throttled"] = True
            return 429, "text/plain", b"Too Many Requests"
        return 200, "application/octet-stream", (root / path).read_bytes()

    return StandIn(root, {path: answer})


def test_two_tiles_one_quadkey_file_parsed_once_and_filtered_exactly(tmp_path: Path) -> None:
    centre = (-88.2, 43.0)
    key = fp.quadkeys_for(shapely.Point(centre).buffer(0.001), 9)[0]
    features = _features((-88.25, 42.95, -88.15, 43.05), 400)
    root = tmp_path / "served"
    root.mkdir()
    _served(root, features, key)
    west = shapely.box(-88.25, 42.97, -88.2, 43.03)
    east = shapely.box(-88.2, 42.97, -88.15, 43.03)  # same quadkey, next tile
    assert fp.quadkeys_for(west, 9) == fp.quadkeys_for(east, 9) == [key]
    cache = tmp_path / "cache"
    with _throttled_once(root, f"{key}.csv.gz") as server:
        index = (root / "dataset-links.template").read_text().replace("FILE/", server.url(""))
        (root / "dataset-links.csv").write_text(index)
        settings = {"index_url": server.url("dataset-links.csv"), "locations": ["UnitedStates"]}
        got_west = _footprints(west, tmp_path / "w.gpkg", cache, settings, OPTS)
        indexed = (
            cache
            / "footprints"
            / fp.indexed_name(fp.FootprintFile(key, "UnitedStates", server.url(f"{key}.csv.gz")))
        )
        parsed_at = indexed.stat().st_mtime_ns
        got_east = _footprints(east, tmp_path / "e.gpkg", cache, settings, OPTS)
        gets = [r for r in server.requests if r[1] == f"{key}.csv.gz"]
        assert len(gets) == 2  # the throttled request, retried once: downloaded once
        assert indexed.stat().st_mtime_ns == parsed_at  # parsed once, for both tiles
        assert not list((cache / "footprints").glob("*.csv.gz"))  # the gzip is not kept
        assert not any("021230030" in r[1] for r in server.requests)
        for tile, path in ((west, got_west), (east, got_east)):
            want = sorted(shapely.to_wkb(g) for g in map(_geometry, features) if g.intersects(tile))
            got = pyogrio.read_dataframe(path).geometry
            assert sorted(shapely.to_wkb(got.to_numpy())) == want and len(want) > 50
        # A rerun (another stage run on the same cache) makes no request at all.
        server.reset_counters()
        _footprints(west, tmp_path / "w2.gpkg", cache, settings, OPTS)
        _footprints(east, tmp_path / "e2.gpkg", cache, settings, OPTS)
        assert server.requests == []
        # Another index host is another cached index (the dataset moved hosts once).
        moved = {**settings, "index_url": server.url("dataset-links.csv?host=moved")}
        _footprints(west, tmp_path / "w3.gpkg", cache, moved, OPTS)
        assert [r[1] for r in server.requests] == ["dataset-links.csv"]
        assert len(list((cache / "footprints").glob("dataset-links_*.csv"))) == 2


def test_index_reads_by_bounding_box_in_chunks(tmp_path: Path) -> None:
    features = _features((10.0, 50.0, 10.2, 50.2), 230, seed=3)
    src = tmp_path / "q.csv.gz"
    src.write_bytes(fp.gz_lines(features))
    dst = fp.index_footprints(src, tmp_path / "q.gpkg", chunk=50)  # five chunks
    assert fp.is_indexed(dst) and pyogrio.read_info(dst, layer=fp.INDEX_LAYER)["features"] == 230
    area = shapely.Point(10.1, 50.1).buffer(0.05)
    want = sorted(shapely.to_wkb(g) for g in map(_geometry, features) if g.intersects(area))
    assert sorted(shapely.to_wkb(np.array(fp.footprints_in(dst, area)))) == want
    assert want and len(want) < 230
    # The old reader, on the same file, agrees.
    assert sorted(shapely.to_wkb(np.array(fp.read_footprints(src, area)))) == want
    empty = tmp_path / "empty.csv.gz"
    empty.write_bytes(gzip.compress(b""))
    assert fp.footprints_in(fp.index_footprints(empty, tmp_path / "e.gpkg"), area) == []


def test_bad_quadkey_file_is_one_line_naming_it(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv.gz"
    bad.write_bytes(gzip.compress(json.dumps({"type": "Feature"}).encode() + b"\nnot json\n"))
    with pytest.raises(DataError, match=r"bad\.csv\.gz: not gzipped GeoJSON lines") as err:
        fp.index_footprints(bad, tmp_path / "bad.gpkg")
    assert "\n" not in str(err.value)
    assert not (tmp_path / "bad.gpkg").exists() and not fp.is_indexed(tmp_path / "bad.gpkg")
    (tmp_path / "partial.gpkg").write_bytes(b"SQLite format 3\x00 cut short")
    assert not fp.is_indexed(tmp_path / "partial.gpkg")
