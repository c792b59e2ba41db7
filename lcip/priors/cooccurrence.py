"""Cooccurrence matrices P(target class | NLCD class), counted on training tiles.

For every pixel of every (training) tile, the high-resolution label is mapped to a target
class with the class scheme's ``map_labels(..., for_prior=True)`` (e.g. EnviroAtlas shrub ->
tree), and the NLCD code at that pixel is read onto the label's grid (nearest; the NLCD
source may be a 30 m region-wide raster, a 1 m per-tile one or one in another CRS). Pixels
whose label is ignored (nodata, unmapped codes) or whose NLCD is nodata are skipped. The
matrix ``counts[c, n]`` (C x 17, columns in the order of :data:`lcip.classes.NLCD_CODES`) is
counted with one ``np.bincount`` per tile, and each column is normalized to sum to 1.

A column with no pixels gets the uniform distribution ``1 / C`` (and a warning naming the
NLCD codes). The nodata column (index 0, code 0) never has pixels and is always uniform; the
NLCD prior ignores it anyway (nodata pixels carry no prior).

Test tiles are refused unless explicitly allowed: the priors of test tiles must not see
their own labels.

Files written by :meth:`Cooccurrence.write`: ``cooccurrence.csv`` (rows = target classes,
columns = NLCD codes, the matrix; human-readable and authoritative), ``cooccurrence.json``
(metadata: tiles, pixel counts, class scheme, date, lcip version) and ``cooccurrence.png``
(a labelled heat map), and ``lsr_statistics.json``.

Label super-resolution statistics (:class:`LSRStatistics`, for :class:`lcip.losses.LSRLoss`)
are counted in the same pass over the same tiles: the 30 m NLCD blocks of each tile
(:class:`lcip.priors.blocks.BlockLayout`) are split by NLCD class into *units*; a unit with at
least ``min_fraction`` of a whole block's pixels labelled contributes its target class
fractions ``f_l``, and per NLCD class ``c`` the statistics are ``eta[l, c] = mean f_l`` and
``rho2[l, c] = var f_l`` (population variance) over its units. An NLCD class with no unit gets
``eta = 1 / C`` and ``rho2 = 0.25`` (the largest variance of a fraction): no constraint to
speak of.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import numpy as np
import numpy.typing as npt
from tqdm import tqdm

from lcip import __version__
from lcip.classes import IGNORE_INDEX, NLCD_CODES, NLCD_NAMES, ClassScheme, get_scheme
from lcip.errors import ConfigError, DataError
from lcip.io.atomic import atomic_write
from lcip.io.manifest import Manifest
from lcip.io.raster import Grid, check_same_grid, open_raster
from lcip.priors.blocks import BlockLayout
from lcip.priors.nlcd import read_nlcd_index

logger = logging.getLogger(__name__)

NUM_NLCD = len(NLCD_CODES)
CSV_NAME = "cooccurrence.csv"
JSON_NAME = "cooccurrence.json"
PNG_NAME = "cooccurrence.png"
LSR_NAME = "lsr_statistics.json"
#: A unit (block part of one NLCD class) counts if this fraction of a whole block is labelled.
LSR_MIN_FRACTION = 0.5
#: Block rows per strip when counting LSR statistics.
STRIP_BLOCKS = 16


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def normalize_counts(
    counts: npt.NDArray[np.integer[Any]],
) -> tuple[npt.NDArray[np.float64], list[int]]:
    """Column-normalize a (C, 17) count matrix; empty columns become uniform.

    Args:
        counts: (C, 17) pixel counts, columns in :data:`NLCD_CODES` order.

    Returns:
        (matrix, empty): the (C, 17) float64 matrix whose columns sum to 1, and the NLCD codes
        (other than nodata 0) whose column had no pixels and was set uniform.
    """
    counts = np.asarray(counts)
    num_classes = counts.shape[0]
    totals = counts.sum(axis=0)
    matrix = np.full(counts.shape, 1.0 / num_classes)
    seen = totals > 0
    seen[0] = False  # nodata column: always uniform
    matrix[:, seen] = counts[:, seen] / totals[seen]
    empty = [NLCD_CODES[n] for n in range(1, NUM_NLCD) if not seen[n]]
    return matrix, empty


@dataclass
class LSRStatistics:
    """Per NLCD class, the mean and variance of each target class's fraction in 30 m blocks.

    Args:
        eta: (C, 17) mean fraction of target class l in blocks of NLCD class c.
        rho2: (C, 17) variance of that fraction over blocks.
        blocks: (17,) number of blocks (units) counted per NLCD class.
        scheme_name: the target class scheme.
        class_names: the C target class names (rows).
        block_px: (rows, cols) block size in pixels.
        min_fraction: labelled fraction of a whole block a unit needed to count.
        tiles: ids of the tiles counted.
        created: creation time (ISO 8601, UTC).
        lcip_version: lcip version that counted it.
        source: where borrowed statistics came from (``cooccurrence.source``), else None.
    """

    eta: npt.NDArray[np.float64]
    rho2: npt.NDArray[np.float64]
    blocks: npt.NDArray[np.int64]
    scheme_name: str
    class_names: tuple[str, ...]
    block_px: tuple[int, int] = (30, 30)
    min_fraction: float = LSR_MIN_FRACTION
    tiles: list[str] = field(default_factory=list)
    created: str = field(default_factory=_now)
    lcip_version: str = __version__
    source: str | None = None

    @classmethod
    def from_sums(
        cls,
        sums: BlockSums,
        scheme: ClassScheme,
        tiles: Sequence[str] = (),
        block_px: tuple[int, int] = (30, 30),
    ) -> LSRStatistics:
        """Statistics from accumulated block sums (unseen NLCD classes: eta 1/C, rho2 0.25)."""
        num = scheme.num_classes
        n = sums.count.astype(np.float64)
        seen = n > 0
        eta = np.full((num, NUM_NLCD), 1.0 / num)
        rho2 = np.full((num, NUM_NLCD), 0.25)
        eta[:, seen] = sums.total[:, seen] / n[seen]
        rho2[:, seen] = np.maximum(sums.squares[:, seen] / n[seen] - eta[:, seen] ** 2, 0.0)
        return cls(
            eta,
            rho2,
            sums.count,
            scheme.name,
            scheme.classes,
            block_px,
            sums.min_fraction,
            list(tiles),
        )

    def metadata(self) -> dict[str, Any]:
        """The JSON content (provenance, then the statistics)."""
        return {
            "scheme": self.scheme_name,
            "classes": list(self.class_names),
            "nlcd_codes": list(NLCD_CODES),
            "tiles": list(self.tiles),
            "num_tiles": len(self.tiles),
            "block_px": list(self.block_px),
            "min_fraction": self.min_fraction,
            "created": self.created,
            "lcip_version": self.lcip_version,
            "source": self.source,
            "blocks": [int(b) for b in self.blocks],
            "eta": self.eta.tolist(),
            "rho2": self.rho2.tolist(),
        }

    def write(self, out_dir: str | Path) -> Path:
        """Write ``lsr_statistics.json`` into a folder (atomically); returns its path."""
        path = Path(out_dir) / LSR_NAME
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(
            path, lambda f: f.write((json.dumps(self.metadata(), indent=2) + "\n").encode())
        )
        return path

    @classmethod
    def read(cls, path: str | Path, setting: str | None = None) -> LSRStatistics:
        """Read ``lsr_statistics.json`` (or the folder holding it).

        Args:
            path: the JSON file or its folder.
            setting: the config setting to name in errors (e.g. ``loss.statistics``).

        Raises:
            ConfigError: if the file does not exist (naming ``setting`` and the remedy).
            DataError: if it is malformed.
        """
        path = Path(path)
        path = path / LSR_NAME if path.is_dir() or path.suffix != ".json" else path
        if not path.is_file():
            where = f"{setting}={path}" if setting else str(path)
            raise ConfigError(
                f"{where}: no LSR statistics (run lcip-cooccurrence on the region's training "
                "tiles; a borrowed cooccurrence.source needs lsr_statistics.json beside its CSV)"
            )
        try:
            meta = json.loads(path.read_text())
            eta = np.asarray(meta["eta"], dtype=np.float64)
            rho2 = np.asarray(meta["rho2"], dtype=np.float64)
            classes = tuple(str(c) for c in meta["classes"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DataError(f"{path}: not LSR statistics ({exc})") from None
        shape = (len(classes), NUM_NLCD)
        if eta.shape != shape or rho2.shape != shape:
            raise DataError(f"{path}: eta and rho2 must be {shape}, got {eta.shape}, {rho2.shape}")
        if not (np.isfinite(eta).all() and np.isfinite(rho2).all() and (rho2 >= 0).all()):
            raise DataError(f"{path}: eta and rho2 must be finite, rho2 non-negative")
        return cls(
            eta=eta,
            rho2=rho2,
            blocks=np.asarray(meta.get("blocks", [0] * NUM_NLCD), dtype=np.int64),
            scheme_name=str(meta.get("scheme", "unknown")),
            class_names=classes,
            block_px=tuple(meta.get("block_px", (30, 30))),
            min_fraction=float(meta.get("min_fraction", LSR_MIN_FRACTION)),
            tiles=[str(t) for t in meta.get("tiles", [])],
            created=str(meta.get("created", "")),
            lcip_version=str(meta.get("lcip_version", "")),
            source=None if meta.get("source") is None else str(meta["source"]),
        )


@dataclass
class BlockSums:
    """Running sums of block class fractions per NLCD class (see :func:`block_sums`).

    Args:
        count: (17,) units counted per NLCD class.
        total: (C, 17) sum of the fractions.
        squares: (C, 17) sum of the squared fractions.
        min_fraction: labelled fraction of a whole block a unit needs to count.
    """

    count: npt.NDArray[np.int64]
    total: npt.NDArray[np.float64]
    squares: npt.NDArray[np.float64]
    min_fraction: float = LSR_MIN_FRACTION

    @classmethod
    def zeros(cls, num_classes: int, min_fraction: float = LSR_MIN_FRACTION) -> BlockSums:
        """Empty sums."""
        return cls(
            np.zeros(NUM_NLCD, np.int64),
            np.zeros((num_classes, NUM_NLCD)),
            np.zeros((num_classes, NUM_NLCD)),
            min_fraction,
        )

    def __iadd__(self, other: BlockSums) -> BlockSums:
        self.count += other.count
        self.total += other.total
        self.squares += other.squares
        return self


def _add_block_sums(
    sums: BlockSums,
    classes: npt.NDArray[Any],
    nlcd: npt.NDArray[Any],
    ids: npt.NDArray[np.int64],
    layout: BlockLayout,
) -> None:
    """Add the units of one strip of whole block rows to ``sums``."""
    num_classes = sums.total.shape[0]
    keep = (classes != IGNORE_INDEX) & (nlcd != 0)
    unit = ids[keep] * NUM_NLCD + nlcd[keep].astype(np.int64)  # dense: blocks x 17
    num_units = (int(ids.max()) + 1) * NUM_NLCD if ids.size else 0
    counts = np.bincount(
        unit * num_classes + classes[keep].astype(np.int64), minlength=num_units * num_classes
    ).reshape(num_units, num_classes)
    size = counts.sum(axis=1)
    enough = (size > 0) & (size >= sums.min_fraction * layout.period[0] * layout.period[1])
    frac = counts[enough] / size[enough, None]
    code = np.flatnonzero(enough) % NUM_NLCD
    sums.count += np.bincount(code, minlength=NUM_NLCD)
    for c in range(num_classes):
        sums.total[c] += np.bincount(code, weights=frac[:, c], minlength=NUM_NLCD)
        sums.squares[c] += np.bincount(code, weights=frac[:, c] ** 2, minlength=NUM_NLCD)


def block_sums(
    classes: npt.NDArray[Any],
    nlcd: npt.NDArray[Any],
    layout: BlockLayout,
    num_classes: int,
    min_fraction: float = LSR_MIN_FRACTION,
) -> BlockSums:
    """Class fraction sums of the units (block x NLCD class) of one tile.

    Args:
        classes: (H, W) target classes (:data:`IGNORE_INDEX` = unlabelled).
        nlcd: (H, W) NLCD indices 0..16 on the same grid (0 = nodata).
        layout: the tile's block layout.
        num_classes: number of target classes C.
        min_fraction: a unit counts if at least this fraction of a whole block is labelled.

    Returns:
        the sums.
    """
    sums = BlockSums.zeros(num_classes, min_fraction)
    height = classes.shape[0]
    strip = layout.period[0] * STRIP_BLOCKS  # strips of whole block rows bound the memory
    edges = sorted({0, height, *range(layout.phase[0] or strip, height, strip)})
    for r0, r1 in itertools.pairwise(edges):
        _add_block_sums(
            sums, classes[r0:r1], nlcd[r0:r1], layout.ids(r0, 0, r1 - r0, classes.shape[1]), layout
        )
    return sums


@dataclass
class Cooccurrence:
    """A cooccurrence matrix P(target class | NLCD class) and how it was made.

    Args:
        matrix: (C, 17) float64, columns (NLCD codes in :data:`NLCD_CODES` order) sum to 1.
        counts: (C, 17) int64 pixel counts the matrix was normalized from.
        scheme_name: the target class scheme (e.g. ``chesapeake4``).
        class_names: the C target class names (rows).
        tiles: ids of the tiles counted.
        created: creation time (ISO 8601, UTC).
        lcip_version: lcip version that counted it.
        source: where a borrowed matrix came from (``cooccurrence.source``: another region's
            name or a CSV file); None when counted on this region's tiles.
        lsr: the label super-resolution statistics counted with the matrix (None if absent).
        provenance: for a published table (``builtin:<name>``, :mod:`lcip.priors.builtin`):
            its source repository, file, commit, region, years, how it was counted and what
            lcip changed; None for a matrix counted by lcip.
    """

    matrix: npt.NDArray[np.float64]
    counts: npt.NDArray[np.int64]
    scheme_name: str
    class_names: tuple[str, ...]
    tiles: list[str] = field(default_factory=list)
    created: str = field(default_factory=_now)
    lcip_version: str = __version__
    source: str | None = None
    lsr: LSRStatistics | None = None
    provenance: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        self.matrix = np.asarray(self.matrix, dtype=np.float64)
        self.counts = np.asarray(self.counts, dtype=np.int64)
        self.class_names = tuple(self.class_names)
        shape = (len(self.class_names), NUM_NLCD)
        if self.matrix.shape != shape or self.counts.shape != shape:
            raise ValueError(
                f"cooccurrence for {len(self.class_names)} classes needs matrix and counts of "
                f"shape {shape}, got {self.matrix.shape} and {self.counts.shape}"
            )

    @classmethod
    def from_counts(
        cls,
        counts: npt.NDArray[np.integer[Any]],
        scheme: ClassScheme | str,
        tiles: Sequence[str] = (),
    ) -> Cooccurrence:
        """Normalize counts into a cooccurrence, warning about NLCD classes never seen.

        Args:
            counts: (C, 17) pixel counts.
            scheme: the target class scheme (or its name).
            tiles: ids of the tiles counted.

        Returns:
            the cooccurrence.
        """
        scheme = get_scheme(scheme)
        matrix, empty = normalize_counts(counts)
        if empty:
            msg = (
                f"cooccurrence ({scheme.name}): no labelled pixels for NLCD codes {empty}; "
                f"using uniform columns (1/{scheme.num_classes}) for them"
            )
            warnings.warn(msg, UserWarning, stacklevel=2)
        return cls(
            matrix=matrix,
            counts=np.asarray(counts, dtype=np.int64),
            scheme_name=scheme.name,
            class_names=scheme.classes,
            tiles=list(tiles),
        )

    @property
    def num_classes(self) -> int:
        """Number of target classes C."""
        return len(self.class_names)

    @property
    def pixels_per_nlcd(self) -> dict[int, int]:
        """Labelled pixels counted per NLCD code."""
        totals = self.counts.sum(axis=0)
        return {code: int(totals[n]) for n, code in enumerate(NLCD_CODES)}

    @property
    def uniform_codes(self) -> list[int]:
        """NLCD codes (besides nodata) whose column is uniform for lack of pixels.

        A published table comes without counts: its uniform columns are then read off the
        matrix.
        """
        if not self.counts.any():
            uniform = np.all(np.isclose(self.matrix, 1.0 / self.num_classes), axis=0)
            return [NLCD_CODES[n] for n in range(1, NUM_NLCD) if uniform[n]]
        return normalize_counts(self.counts)[1]

    # ------------------------------------------------------------------ files
    def to_csv(self) -> str:
        """The matrix as CSV text: header ``class,0,11,...,95``, one row per target class."""
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["class", *NLCD_CODES])
        for name, row in zip(self.class_names, self.matrix, strict=True):
            writer.writerow([name, *(repr(float(v)) for v in row)])
        return buf.getvalue()

    def metadata(self) -> dict[str, Any]:
        """The JSON metadata: scheme, tiles, pixel counts, date, version, source, counts, matrix."""
        return {
            "scheme": self.scheme_name,
            "classes": list(self.class_names),
            "nlcd_codes": list(NLCD_CODES),
            "nlcd_names": list(NLCD_NAMES),
            "tiles": list(self.tiles),
            "num_tiles": len(self.tiles),
            "pixels_per_nlcd": {str(k): v for k, v in self.pixels_per_nlcd.items()},
            "total_pixels": int(self.counts.sum()),
            "uniform_columns": self.uniform_codes,
            "created": self.created,
            "lcip_version": self.lcip_version,
            "source": self.source,
            "provenance": self.provenance,
            "counts": self.counts.tolist(),
            "matrix": self.matrix.tolist(),
        }

    def write(self, out_dir: str | Path) -> Path:
        """Write ``cooccurrence.csv``, ``.json``, ``.png`` and ``lsr_statistics.json``, atomically.

        Without LSR statistics a stale ``lsr_statistics.json`` in the folder is removed (it
        would not belong to this matrix).

        Args:
            out_dir: destination folder (created if needed).

        Returns:
            the path of ``cooccurrence.csv``.
        """
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write(
            out / JSON_NAME,
            lambda f: f.write((json.dumps(self.metadata(), indent=2) + "\n").encode()),
        )
        atomic_write(out / PNG_NAME, self._plot)
        if self.lsr is not None:
            self.lsr.write(out)
        else:
            (out / LSR_NAME).unlink(missing_ok=True)
        atomic_write(out / CSV_NAME, lambda f: f.write(self.to_csv().encode()))
        return out / CSV_NAME

    def _plot(self, f: IO[bytes]) -> None:
        """Draw the heat map as PNG into a binary file object."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        num = self.num_classes
        width, height = 2.6 + 0.62 * NUM_NLCD, 1.6 + 0.5 * num  # inches
        fig = Figure(figsize=(width, height), dpi=100)
        FigureCanvasAgg(fig)
        # Fixed margins (in inches) instead of tight_layout: cheaper and stable.
        fig.subplots_adjust(
            left=1.5 / width, right=1 - 1.1 / width, bottom=0.75 / height, top=1 - 0.45 / height
        )
        ax = fig.add_subplot()
        image = ax.imshow(self.matrix, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
        uniform = set(self.uniform_codes) | {0}
        ax.set_xticks(
            range(NUM_NLCD),
            [f"{c}*" if c in uniform else str(c) for c in NLCD_CODES],
            fontsize=8,
        )
        ax.set_yticks(range(num), list(self.class_names), fontsize=9)
        ax.set_xlabel("NLCD code  (* = no labelled pixels: uniform column)", fontsize=9)
        for row in range(num):
            for col in range(NUM_NLCD):
                value = self.matrix[row, col]
                ax.text(
                    col,
                    row,
                    f"{value:.2f}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if value < 0.6 else "black",
                )
        ax.set_title(
            f"P(class | NLCD), {self.scheme_name}, {len(self.tiles)} "
            f"tile{'' if len(self.tiles) == 1 else 's'}, {int(self.counts.sum()):,} px",
            fontsize=10,
        )
        fig.colorbar(image, ax=ax, fraction=0.03, pad=0.02)
        fig.savefig(f, format="png")

    @classmethod
    def read(cls, path: str | Path) -> Cooccurrence:
        """Read a cooccurrence from ``cooccurrence.csv`` (or a folder holding it).

        The matrix comes from the CSV; metadata (counts, tiles, scheme, date, version) from
        the JSON file beside it when present.

        Args:
            path: the CSV file or its folder.

        Returns:
            the cooccurrence.

        Raises:
            DataError: if the file is missing or malformed (the message names it).
        """
        path = Path(path)
        csv_path = path / CSV_NAME if path.is_dir() else path
        if not csv_path.exists():
            raise DataError(f"{csv_path}: cooccurrence file does not exist")
        with open(csv_path, newline="") as f:
            rows = [r for r in csv.reader(f) if r]
        if not rows:
            raise DataError(f"{csv_path}: empty cooccurrence file")
        header = rows[0]
        try:
            codes = [int(c) for c in header[1:]]
        except ValueError:
            codes = []
        if codes != list(NLCD_CODES):
            raise DataError(
                f"{csv_path}: header must be 'class' and the NLCD codes {list(NLCD_CODES)}, "
                f"got {header}"
            )
        names, values = [], []
        for lineno, row in enumerate(rows[1:], start=2):
            if len(row) != NUM_NLCD + 1:
                raise DataError(
                    f"{csv_path}:{lineno}: expected {NUM_NLCD + 1} fields, got {len(row)}"
                )
            try:
                values.append([float(v) for v in row[1:]])
            except ValueError:
                raise DataError(f"{csv_path}:{lineno}: values must be numbers") from None
            names.append(row[0])
        if not names:
            raise DataError(f"{csv_path}: no class rows")
        matrix = np.array(values, dtype=np.float64)
        if not np.all(np.isfinite(matrix)) or np.any(matrix < 0):
            raise DataError(f"{csv_path}: values must be finite and non-negative")
        sums = matrix.sum(axis=0)
        if not np.allclose(sums, 1.0, atol=1e-6):
            bad = [NLCD_CODES[n] for n in np.flatnonzero(~np.isclose(sums, 1.0, atol=1e-6))]
            raise DataError(f"{csv_path}: columns for NLCD codes {bad} do not sum to 1")
        meta: dict[str, Any] = {}
        json_path = csv_path.with_suffix(".json")
        if json_path.exists():
            try:
                meta = json.loads(json_path.read_text())
            except (OSError, json.JSONDecodeError) as exc:
                raise DataError(f"{json_path}: cannot be read as JSON ({exc})") from None
            if meta.get("classes", names) != names:
                raise DataError(
                    f"{json_path}: classes {meta.get('classes')} do not match "
                    f"the rows of {csv_path} {names}"
                )
        counts = np.asarray(meta.get("counts", np.zeros_like(matrix, dtype=np.int64)))
        if counts.shape != matrix.shape:
            raise DataError(f"{json_path}: counts of shape {counts.shape}, expected {matrix.shape}")
        return cls(
            matrix=matrix,
            counts=counts.astype(np.int64),
            scheme_name=str(meta.get("scheme", "unknown")),
            class_names=tuple(names),
            tiles=[str(t) for t in meta.get("tiles", [])],
            created=str(meta.get("created", "")),
            lcip_version=str(meta.get("lcip_version", "")),
            source=None if meta.get("source") is None else str(meta["source"]),
            provenance=dict(meta["provenance"])
            if isinstance(meta.get("provenance"), dict)
            else None,
            lsr=LSRStatistics.read(csv_path.parent / LSR_NAME)
            if (csv_path.parent / LSR_NAME).is_file()
            else None,
        )


def check_scheme(coocc: Cooccurrence, scheme: ClassScheme, where: str) -> Cooccurrence:
    """Check that a cooccurrence (e.g. one borrowed from another region) fits a class scheme.

    The rows must be the scheme's classes, in its order (schemes that differ only in their
    label codes, such as ``enviroatlas5`` and ``enviroatlas5_raw``, share matrices).

    Args:
        coocc: the cooccurrence.
        scheme: the target class scheme.
        where: what to name in the message (e.g. ``cooccurrence.source=<value> (<path>)``).

    Returns:
        the cooccurrence, unchanged.

    Raises:
        ConfigError: one line naming ``where``, the matrix's classes and the scheme's.
    """
    if coocc.class_names != scheme.classes or coocc.matrix.shape != (scheme.num_classes, NUM_NLCD):
        raise ConfigError(
            f"{where}: matrix of scheme {coocc.scheme_name!r} has classes "
            f"{list(coocc.class_names)}, but the region's scheme {scheme.name!r} has "
            f"{list(scheme.classes)}"
        )
    return coocc


def count_pairs(
    label_path: str | Path,
    nlcd_path: str | Path,
    scheme: ClassScheme,
    *,
    nlcd_encoding: str = "codes",
) -> npt.NDArray[np.int64]:
    """Count (target class, NLCD class) pixel pairs on one label raster.

    Args:
        label_path: high-resolution label raster (band 1, raw label codes).
        nlcd_path: NLCD raster, read onto the label's grid with nearest resampling.
        scheme: class scheme; labels are mapped with ``map_labels(..., for_prior=True)``.
        nlcd_encoding: ``codes`` (NLCD class codes) or ``index`` (indices 0..16), see
            :data:`lcip.priors.nlcd.NLCD_ENCODINGS`.

    Returns:
        (C, 17) int64 counts, columns in :data:`NLCD_CODES` order (column 0 is always 0).

    Raises:
        DataError: for a missing or unreadable file or unknown NLCD codes (or indices).
    """
    classes, nlcd, _ = read_pair(label_path, nlcd_path, scheme, nlcd_encoding=nlcd_encoding)
    return pair_counts(classes, nlcd, scheme.num_classes)


def read_pair(
    label_path: str | Path,
    nlcd_path: str | Path,
    scheme: ClassScheme,
    *,
    nlcd_encoding: str = "codes",
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8], Grid]:
    """Target classes (``for_prior`` mapping) and NLCD indices on a label raster's grid."""
    grid = Grid.of(label_path)
    with open_raster(label_path) as src:
        labels = src.read(1)
    classes = scheme.map_labels(labels, for_prior=True)
    return classes, read_nlcd_index(nlcd_path, grid, encoding=nlcd_encoding), grid


def pair_counts(
    classes: npt.NDArray[Any], nlcd: npt.NDArray[Any], num: int
) -> npt.NDArray[np.int64]:
    """(C, 17) counts of (target class, NLCD index) pairs, skipping ignored and nodata pixels."""
    keep = (classes != IGNORE_INDEX) & (nlcd != 0)
    flat = nlcd[keep].astype(np.int64) * num + classes[keep]
    counts = np.bincount(flat, minlength=NUM_NLCD * num).reshape(NUM_NLCD, num).T
    return np.ascontiguousarray(counts, dtype=np.int64)


def count_cooccurrence(
    manifest: Manifest,
    scheme: ClassScheme | str,
    label_layer: str = "lc",
    nlcd_layer: str = "nlcd",
    allow_test: bool = False,
    progress: bool = True,
    nlcd_encoding: str = "codes",
    image_layer: str | None = "naip",
) -> Cooccurrence:
    """Count the cooccurrence matrix over the tiles of a manifest.

    Pass the training tiles only (e.g. ``manifest.select("train")``): tiles of the ``test``
    split are refused unless ``allow_test`` is set. Each tile's labels must be on its imagery's
    grid (where the tile has imagery): labels off the grid would pair pixels with the wrong
    NLCD and imagery.

    Args:
        manifest: the tiles to count.
        scheme: target class scheme (or its name).
        label_layer: manifest layer holding the high-resolution labels.
        nlcd_layer: manifest layer holding NLCD (any grid; read onto the label grid).
        allow_test: allow tiles of the ``test`` split.
        progress: show a progress bar.
        nlcd_encoding: how the NLCD rasters store classes (``codes`` or ``index``).
        image_layer: manifest layer holding the imagery (the tile grid) the labels must be on;
            None, or a tile without it: not checked.

    Returns:
        the cooccurrence (columns with no pixels uniform, with a warning).

    Raises:
        ConfigError: if test tiles are included without ``allow_test``, or there are no tiles.
        ManifestError: if a tile lacks one of the layers.
        GridMismatchError: one line naming the tile and both files, if its labels are not on
            its imagery's grid.
        DataError: for a missing or unreadable file or unknown NLCD codes.
    """
    scheme = get_scheme(scheme)
    where = manifest.path or "manifest"
    if len(manifest) == 0:
        raise ConfigError(f"{where}: no tiles to count the cooccurrence matrix on")
    test_tiles = [t.tile_id for t in manifest if t.split == "test"]
    if test_tiles and not allow_test:
        shown = ", ".join(test_tiles[:5]) + (", ..." if len(test_tiles) > 5 else "")
        raise ConfigError(
            f"{where}: refusing to count the cooccurrence matrix on {len(test_tiles)} test "
            f"tile(s) ({shown}); count on training tiles (region.train_splits) or set "
            "cooccurrence.allow_test=true to count on them anyway"
        )
    counts = np.zeros((scheme.num_classes, NUM_NLCD), dtype=np.int64)
    sums = BlockSums.zeros(scheme.num_classes)
    block_px = (30, 30)
    for tile in tqdm(manifest.tiles, desc="cooccurrence", unit="tile", disable=not progress):
        if image_layer and image_layer in tile.layers:
            layers = {image_layer: tile.layer(image_layer), label_layer: tile.layer(label_layer)}
            check_same_grid(layers, f"tile {tile.tile_id}")
        classes, nlcd, grid = read_pair(
            tile.layer(label_layer), tile.layer(nlcd_layer), scheme, nlcd_encoding=nlcd_encoding
        )
        counts += pair_counts(classes, nlcd, scheme.num_classes)
        layout = BlockLayout.detect(nlcd, grid)
        sums += block_sums(classes, nlcd, layout, scheme.num_classes)
        block_px = layout.period
    tile_ids = [t.tile_id for t in manifest]
    coocc = Cooccurrence.from_counts(counts, scheme, tile_ids)
    coocc.lsr = LSRStatistics.from_sums(sums, scheme, tile_ids, block_px)
    logger.info(
        "cooccurrence (%s) counted on %d tiles, %d labelled pixels",
        scheme.name,
        len(manifest),
        int(counts.sum()),
    )
    return coocc
