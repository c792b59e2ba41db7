"""Tile manifests: the list of tiles of a region and the files of each tile's layers.

A manifest is a CSV file (one row per tile) with the columns

- ``tile_id``: unique tile identifier;
- ``split``: ``train``, ``val`` or ``test`` (or any other name a region uses);
- ``crs``: the tile grid's CRS (e.g. ``EPSG:32618``);
- ``left``, ``bottom``, ``right``, ``top``: the tile's bounds in that CRS;
- one column per *layer* (``naip``, ``nlcd``, ``lc``, ``prior_nlcd``, ...): the layer's file,
  relative to the manifest's folder (or absolute). An empty cell means the tile has no such
  layer. Several tiles may name the same file (e.g. one region-wide 30 m NLCD raster).
- optional ``<layer>_url``, ``<layer>_sha256`` and ``<layer>_fraction`` columns: where a layer
  came from, its checksum and the fraction of the tile it covers (written by the acquisition
  stage; not layers themselves).

Every stage reads a manifest and writes one that adds the layers it produced.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from lcip.errors import ManifestError
from lcip.io.atomic import write_text

#: Columns every manifest has, in this order.
CORE_COLUMNS: tuple[str, ...] = ("tile_id", "split", "crs", "left", "bottom", "right", "top")
_META_SUFFIXES = ("_url", "_sha256", "_fraction")


@dataclass(frozen=True)
class Tile:
    """One tile of a region.

    Args:
        tile_id: unique identifier.
        split: split name (``train``, ``val``, ``test``).
        crs: CRS string of the tile grid.
        bounds: (left, bottom, right, top) in ``crs``.
        layers: layer name -> absolute file path.
        meta: extra per-layer metadata columns (``<layer>_url``, ``<layer>_sha256``,
            ``<layer>_fraction``).
    """

    tile_id: str
    split: str
    crs: str
    bounds: tuple[float, float, float, float]
    layers: Mapping[str, Path] = field(default_factory=dict)
    meta: Mapping[str, str] = field(default_factory=dict)

    def layer(self, name: str) -> Path:
        """The file of a layer.

        Args:
            name: layer name.

        Returns:
            the layer's absolute path.

        Raises:
            ManifestError: if the tile has no such layer.
        """
        if name not in self.layers:
            raise ManifestError(
                f"tile {self.tile_id}: no layer '{name}' in the manifest "
                f"(layers: {sorted(self.layers)})"
            )
        return self.layers[name]

    def with_layers(self, **layers: Path) -> Tile:
        """A copy of the tile with layers added or replaced.

        A replaced layer loses its ``<layer>_url`` / ``<layer>_sha256``: they described the old
        file.
        """
        meta = {k: v for k, v in self.meta.items() if k.rsplit("_", 1)[0] not in layers}
        return replace(
            self, layers={**self.layers, **{k: Path(v) for k, v in layers.items()}}, meta=meta
        )


@dataclass(frozen=True)
class Manifest:
    """The tiles of a region.

    Args:
        tiles: the tiles, in file order.
        path: the file the manifest was read from (None if built in memory).
    """

    tiles: tuple[Tile, ...]
    path: Path | None = None

    def __post_init__(self) -> None:
        seen: set[str] = set()
        for t in self.tiles:
            if t.tile_id in seen:
                raise ManifestError(f"{self.path or 'manifest'}: duplicate tile_id '{t.tile_id}'")
            seen.add(t.tile_id)

    def __iter__(self) -> Iterator[Tile]:
        return iter(self.tiles)

    def __len__(self) -> int:
        return len(self.tiles)

    @property
    def layer_names(self) -> list[str]:
        """Names of all layers any tile has, in first-seen order."""
        names: dict[str, None] = {}
        for t in self.tiles:
            names.update(dict.fromkeys(t.layers))
        return list(names)

    def tile(self, tile_id: str) -> Tile:
        """Look up one tile by id."""
        for t in self.tiles:
            if t.tile_id == tile_id:
                return t
        raise ManifestError(f"{self.path or 'manifest'}: no tile '{tile_id}'")

    def select(
        self, splits: str | Sequence[str] | None = None, tile_ids: Iterable[str] | None = None
    ) -> Manifest:
        """The manifest restricted to some splits and/or tile ids.

        Args:
            splits: a split name or names to keep (None keeps all).
            tile_ids: tile ids to keep (None keeps all).

        Returns:
            a new manifest.
        """
        keep_splits = (
            {splits} if isinstance(splits, str) else set(splits) if splits is not None else None
        )
        keep_ids = set(tile_ids) if tile_ids is not None else None
        if keep_ids is not None:
            unknown = keep_ids - {t.tile_id for t in self.tiles}
            if unknown:
                raise ManifestError(
                    f"{self.path or 'manifest'}: unknown tile ids {sorted(unknown)}"
                )
        tiles = tuple(
            t
            for t in self.tiles
            if (keep_splits is None or t.split in keep_splits)
            and (keep_ids is None or t.tile_id in keep_ids)
        )
        return Manifest(tiles, self.path)

    def with_layer(self, name: str, paths: Mapping[str, Path]) -> Manifest:
        """A manifest with one layer added for the given tiles.

        Args:
            name: layer name.
            paths: tile id -> file.

        Returns:
            a new manifest (tiles not in ``paths`` keep their layers unchanged).
        """
        tiles = tuple(
            t.with_layers(**{name: paths[t.tile_id]}) if t.tile_id in paths else t
            for t in self.tiles
        )
        return Manifest(tiles, self.path)

    def check_files(self, layers: Iterable[str] | None = None) -> None:
        """Check that layer files exist.

        Args:
            layers: the layers every tile must have (None checks only the files named).

        Raises:
            ManifestError: naming the manifest, the tile and the missing file or layer.
        """
        where = self.path or "manifest"
        for t in self.tiles:
            names = list(layers) if layers is not None else list(t.layers)
            for name in names:
                if name not in t.layers:
                    raise ManifestError(f"{where}: tile {t.tile_id} has no '{name}' layer")
                if not t.layers[name].exists():
                    raise ManifestError(
                        f"{where}: tile {t.tile_id} layer '{name}' names a missing file "
                        f"{t.layers[name]}"
                    )

    @classmethod
    def read(cls, path: str | Path, verify: bool = True) -> Manifest:
        """Read a manifest CSV; layer paths are resolved against the manifest's folder.

        Layers with a ``<layer>_sha256`` column are verified (see :mod:`lcip.io.verify`: each
        file is hashed once, then only its size and mtime are compared).

        Args:
            path: manifest file.
            verify: check the layers' sha256 (``LCIP_VERIFY=0`` turns it off everywhere).

        Returns:
            the manifest.

        Raises:
            ManifestError: if the file is missing or malformed.
            DataError: if a layer's file does not match its sha256.
        """
        path = Path(path).resolve()
        if not path.exists():
            raise ManifestError(f"{path}: manifest does not exist")
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            columns = reader.fieldnames or []
            missing = [c for c in CORE_COLUMNS if c not in columns]
            if missing:
                raise ManifestError(f"{path}: missing columns {missing} (has {columns})")
            layer_cols = [
                c for c in columns if c not in CORE_COLUMNS and not c.endswith(_META_SUFFIXES)
            ]
            meta_cols = [c for c in columns if c.endswith(_META_SUFFIXES)]
            tiles = []
            for lineno, row in enumerate(reader, start=2):
                try:
                    bounds = tuple(float(row[k]) for k in ("left", "bottom", "right", "top"))
                except (TypeError, ValueError):
                    raise ManifestError(f"{path}:{lineno}: bounds must be numbers") from None
                if not row["tile_id"]:
                    raise ManifestError(f"{path}:{lineno}: empty tile_id")
                layers = {c: _resolve(path.parent, row[c]) for c in layer_cols if row.get(c)}
                meta = {c: row[c] for c in meta_cols if row.get(c)}
                tiles.append(
                    Tile(row["tile_id"], row["split"], row["crs"], bounds, layers, meta)  # type: ignore[arg-type]
                )
        manifest = cls(tuple(tiles), path)
        if verify:
            manifest.verify()
        return manifest

    def verify(self) -> int:
        """Verify the layers that carry a ``<layer>_sha256`` checksum.

        Returns:
            the number of files hashed (0 when all were verified before and are unchanged).

        Raises:
            DataError: one line naming the manifest, tile, layer and file that do not match.
        """
        from lcip.io import verify

        if verify.verification_disabled():
            return 0
        return verify.verify_files(verify.manifest_checksums(self.tiles, str(self.path)))

    def write(self, path: str | Path) -> Path:
        """Write the manifest CSV atomically, with layer paths relative to its folder.

        Args:
            path: destination file.

        Returns:
            the destination path.
        """
        path = Path(path).resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        layer_cols = self.layer_names
        meta_cols: dict[str, None] = {}
        for t in self.tiles:
            meta_cols.update(dict.fromkeys(t.meta))
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow([*CORE_COLUMNS, *layer_cols, *meta_cols])
        for t in self.tiles:
            layers = [
                _relative(path.parent, t.layers[c]) if c in t.layers else "" for c in layer_cols
            ]
            bounds = [repr(float(b)) for b in t.bounds]
            writer.writerow(
                [
                    t.tile_id,
                    t.split,
                    t.crs,
                    *bounds,
                    *layers,
                    *(t.meta.get(c, "") for c in meta_cols),
                ]
            )
        write_text(path, buf.getvalue())
        return path


def _resolve(root: Path, value: str) -> Path:
    p = Path(value)
    return p if p.is_absolute() else (root / p).resolve()


def _relative(root: Path, p: Path) -> str:
    try:
        return os.path.relpath(p, root)
    except ValueError:  # different drives on Windows
        return str(p)
