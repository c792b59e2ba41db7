"""The NLCD prior: blurred one-hot NLCD times the cooccurrence matrix, on a tile's 1 m grid.

For a tile grid, the prior over the C target classes is

    B_l = blur(sum_c M[l, c] * onehot_c(NLCD)),   V = blur(valid),   valid = (NLCD != 0)
    prior_l = (B_l / V + eps) / sum_k (B_k / V + eps)  =  (B_l + eps V) / sum_k (B_k + eps V)

where ``M`` is the (C, 17) cooccurrence matrix P(target class | NLCD class) with its nodata
column zeroed, ``blur`` is the exact Gaussian blur of :mod:`lcip.priors.blur` (sigma = 31 m,
i.e. 31 px on a 1 m grid and 51.7 px on a 0.6 m grid, see :func:`sigma_in_pixels`; truncated
at 4 sigma, edge mode ``nearest``) and ``eps`` the additive smoothing (1e-4).
Dividing by ``V`` is a *normalized convolution*: NLCD nodata pixels (and pixels outside the
NLCD source) do not dilute the prior of their valid neighbours. Because the columns of ``M``
sum to 1, ``sum_l B_l = V`` and the smoothing step equals the paper's ``(p + eps) / (1 + C
eps)`` on the blurred prior ``p = B / V``, followed by renormalization (done in float32, so
the bands sum to 1 within ~1e-6). Only C + 1 layers are blurred, not 17 (the blur is linear).
Pixels whose own NLCD code is nodata are invalid: their prior is 0 and ``valid`` is False
(the raster writer marks them nodata). The formula lives in :func:`prior_from_index`.

No seams: the NLCD is read onto the tile grid *expanded by a halo* of ``ceil(truncate *
sigma)`` px (>= the kernel radius), from a region-wide source, and the halo is cropped after
blurring. Every kept pixel then sees exactly the NLCD it would see in a prior computed over
the union of neighbouring tiles, so adjacent tiles agree along their shared edge (up to
float rounding). Where the halo leaves the source, the NLCD is nodata and is excluded by the
normalized convolution; the blur's edge mode only matters at the edge of the expanded grid,
which no kept pixel's kernel reaches.

Reprojection: NLCD is distributed in CONUS Albers (EPSG:5070) at 30 m, NAIP tiles are in UTM.
An NLCD raster on another grid or CRS is read onto the (expanded) tile grid on the fly with
*nearest* resampling (:func:`lcip.io.raster.read_on_grid`, a GDAL warp): NLCD is categorical, so
no class mixing happens before the one-hot encoding, and the blur then smooths the staircase
edges that reprojection leaves. A different CRS is logged at INFO. Reprojected NLCD is not
block-structured on the tile grid, so the blur falls back to its slower (still exact) path;
an NLCD raster already on the tile CRS (any 30 m or 1 m grid) keeps the fast path.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
from rasterio.windows import Window

from lcip.classes import NLCD_CODES, nlcd_to_index
from lcip.errors import ConfigError, DataError
from lcip.io.raster import Grid, open_raster, read_on_grid
from lcip.priors.blur import StripBlur, kernel_radius


class HasMatrix(Protocol):
    """Anything holding a (C, 17) cooccurrence matrix, e.g. a ``Cooccurrence``.

    (A protocol, so that this module need not import :mod:`lcip.priors.cooccurrence`, which
    imports it.)
    """

    @property
    def matrix(self) -> npt.NDArray[np.float64]:
        """The (C, 17) matrix P(target class | NLCD class)."""
        ...


#: A cooccurrence matrix or an object holding one.
CooccurrenceLike = HasMatrix | npt.ArrayLike

logger = logging.getLogger(__name__)

NUM_NLCD = len(NLCD_CODES)

#: How an NLCD raster stores its classes (``region.nlcd_encoding``): ``codes`` holds the NLCD
#: class codes (11, 21, ...; 0 nodata); ``index`` holds indices 0..16 into
#: :data:`lcip.classes.NLCD_CODES` (the EnviroAtlas files are re-indexed this way).
NLCD_ENCODINGS: tuple[str, ...] = ("codes", "index")


def check_nlcd_encoding(encoding: str) -> str:
    """``encoding`` if it is one of :data:`NLCD_ENCODINGS`.

    Raises:
        ConfigError: one line naming ``region.nlcd_encoding``.
    """
    if encoding not in NLCD_ENCODINGS:
        raise ConfigError(
            f"region.nlcd_encoding={encoding!r}: unknown encoding; use one of "
            f"{list(NLCD_ENCODINGS)}"
        )
    return encoding


def index_to_index(values: npt.NDArray[Any], source: str = "NLCD raster") -> npt.NDArray[np.uint8]:
    """Check that NLCD values already are indices 0..16 (``nlcd_encoding=index``).

    Args:
        values: integer array of NLCD indices (0 = nodata).
        source: the file the values came from, used in the error message.

    Returns:
        uint8 array of the same shape.

    Raises:
        DataError: if a value is not an integer in 0..16 (the message names the file).
    """
    arr = np.asarray(values)
    if arr.dtype.kind not in "iu":
        if not np.all(np.equal(np.mod(arr, 1), 0)):
            raise DataError(f"{source}: NLCD indices must be integers, got dtype {arr.dtype}")
        arr = arr.astype(np.int64)
    bad = (arr < 0) | (arr >= NUM_NLCD)
    if bad.any():
        found = sorted({int(v) for v in np.unique(arr[bad])[:10]})
        raise DataError(
            f"{source}: NLCD values {found} are not indices 0..{NUM_NLCD - 1} "
            f"(region.nlcd_encoding=index; use 'codes' for NLCD class codes)"
        )
    return arr.astype(np.uint8)


@dataclass(frozen=True)
class NLCDPriorParams:
    """Parameters of the NLCD prior.

    Args:
        sigma: Gaussian blur standard deviation in tile pixels (31 px at 1 m).
        truncate: kernel truncation in standard deviations.
        smoothing: additive smoothing ``eps`` applied before renormalizing.
        halo: pixels of NLCD read around the tile; None for ``ceil(truncate * sigma)``.
            Smaller than the kernel radius gives seams between tiles.
    """

    sigma: float = 31.0
    truncate: float = 4.0
    smoothing: float = 1e-4
    halo: int | None = None

    def __post_init__(self) -> None:
        if not (self.sigma > 0 and self.truncate > 0):
            raise ValueError(
                f"sigma and truncate must be positive, got {self.sigma}, {self.truncate}"
            )
        if self.smoothing < 0:
            raise ValueError(f"smoothing must be >= 0, got {self.smoothing}")
        if self.halo is not None and self.halo < 0:
            raise ValueError(f"halo must be >= 0, got {self.halo}")

    @property
    def halo_px(self) -> int:
        """The halo actually used, in pixels."""
        return math.ceil(self.truncate * self.sigma) if self.halo is None else int(self.halo)

    def as_tags(self) -> dict[str, Any]:
        """The parameters as raster metadata tags (``nlcd_prior_sigma``, ...)."""
        tags = {f"nlcd_prior_{k}": v for k, v in asdict(self).items()}
        tags["nlcd_prior_halo"] = self.halo_px
        return tags

    def compute(
        self,
        tile_grid: Grid,
        nlcd_path: str | Path,
        cooccurrence: CooccurrenceLike,
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.bool_]]:
        """:func:`nlcd_prior` with these parameters."""
        return nlcd_prior(tile_grid, nlcd_path, cooccurrence, **asdict(self))


def metres_per_pixel(grid: Grid) -> float:
    """A grid's pixel size in metres (the mean of x and y), to convert physical parameters.

    Args:
        grid: a grid in a projected CRS with metre units (e.g. a UTM tile grid).

    Returns:
        the pixel size in metres.

    Raises:
        DataError: for a grid without a CRS or in a CRS whose unit is not the metre.
    """
    crs = grid.crs
    if crs is None or not crs.is_projected:
        raise DataError(
            f"grid {grid.describe()}: prior parameters are in metres, but the grid's CRS "
            f"({crs.to_string() if crs else 'none'}) is not projected"
        )
    _, factor = crs.linear_units_factor
    return float(factor) * (grid.res[0] + grid.res[1]) / 2


def sigma_in_pixels(sigma_m: float, resolution_m: float) -> float:
    """The blur sigma in pixels of a grid: ``sigma_m / resolution_m``.

    Args:
        sigma_m: the sigma in metres (31 m in the paper, i.e. 31 px at 1 m).
        resolution_m: the grid's pixel size in metres (:func:`metres_per_pixel`).

    Returns:
        the sigma in pixels.
    """
    return float(sigma_m) / float(resolution_m)


def _as_matrix(cooccurrence: CooccurrenceLike) -> npt.NDArray[np.float64]:
    """The (C, 17) cooccurrence matrix from a matrix or a :class:`Cooccurrence`."""
    matrix = np.asarray(getattr(cooccurrence, "matrix", cooccurrence), dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[1] != NUM_NLCD or matrix.shape[0] < 1:
        raise ValueError(
            f"cooccurrence matrix must have shape (C, {NUM_NLCD}) (columns = NLCD codes "
            f"{list(NLCD_CODES)}), got {matrix.shape}"
        )
    if not np.all(np.isfinite(matrix)) or np.any(matrix < 0):
        raise ValueError("cooccurrence matrix must be finite and non-negative")
    return matrix


def _to_index(
    codes: npt.NDArray[Any], nodata: float | None, encoding: str, source: str
) -> npt.NDArray[np.uint8]:
    """NLCD values (codes or indices) as indices 0..16, the source's nodata value as 0."""
    if nodata is not None and nodata != 0 and np.isfinite(nodata):
        codes[codes == nodata] = 0
    if encoding == "index":
        return index_to_index(codes, source=source)
    return nlcd_to_index(codes, source=source)


def _nearest_axis_aligned(
    src: Any, target: Grid, path: Path, encoding: str
) -> npt.NDArray[np.uint8] | None:
    """NLCD indices on ``target`` by nearest sampling, for a source in the target's CRS.

    Both grids north-up without rotation: the source pixel under each target pixel centre is
    found per row and per column, the window the target needs is read at the source's own
    resolution (a 30 m NLCD raster: ~900x fewer pixels than the 1 m tile), mapped to indices
    there and expanded by indexing, which is what a nearest-neighbour warp gives (pixels
    outside the source: 0). None when the grids do not qualify (then GDAL warps).
    """
    s, t = src.transform, target.transform
    if src.crs is None or src.crs != target.crs or s.b or s.d or t.b or t.d:
        return None
    rows = np.floor((t.f + t.e * (np.arange(target.height) + 0.5) - s.f) / s.e).astype(np.int64)
    cols = np.floor((t.c + t.a * (np.arange(target.width) + 0.5) - s.c) / s.a).astype(np.int64)
    out = np.zeros(target.shape, np.uint8)
    row_in = (rows >= 0) & (rows < src.height)
    col_in = (cols >= 0) & (cols < src.width)
    if not row_in.any() or not col_in.any():
        return out
    r0, r1 = int(rows[row_in].min()), int(rows[row_in].max()) + 1
    c0, c1 = int(cols[col_in].min()), int(cols[col_in].max()) + 1
    codes = src.read(1, window=Window(c0, r0, c1 - c0, r1 - r0))
    index = _to_index(codes, src.nodata, encoding, str(path))
    out[np.ix_(row_in, col_in)] = index[np.ix_(rows[row_in] - r0, cols[col_in] - c0)]
    return out


def read_nlcd_index(
    path: str | Path, grid: Grid, *, halo: int = 0, encoding: str = "codes"
) -> npt.NDArray[np.uint8]:
    """Read NLCD onto a grid (optionally expanded by a halo) as indices 0..16.

    The source may be a 30 m region-wide raster, a 1 m per-tile raster or a raster in another
    CRS (reprojected on the fly with nearest resampling, logged at INFO). Pixels outside the
    source and the source's nodata value become index 0 (nodata).

    Args:
        path: NLCD raster (band 1 holds the NLCD codes, or indices, see ``encoding``).
        grid: target grid (e.g. the tile grid or a label raster's grid).
        halo: pixels to add on every side of ``grid``.
        encoding: ``codes`` (NLCD class codes 11, 21, ...) or ``index`` (indices 0..16 into
            :data:`~lcip.classes.NLCD_CODES`); see :data:`NLCD_ENCODINGS`.

    Returns:
        uint8 array (H + 2 halo, W + 2 halo) of indices into :data:`lcip.classes.NLCD_CODES`.

    Raises:
        DataError: if the file is missing, unreadable or holds unknown NLCD codes (or, for
            ``encoding="index"``, values outside 0..16); the message names the file.
        ConfigError: for an unknown ``encoding``.
    """
    check_nlcd_encoding(encoding)
    path = Path(path)
    target = grid.expand(halo) if halo else grid
    with open_raster(path) as src:
        src_crs, src_nodata = src.crs, src.nodata
        fast = _nearest_axis_aligned(src, target, path, encoding)
    if fast is not None:
        return fast
    if src_crs is not None and src_crs != grid.crs:
        logger.info(
            "%s: NLCD in %s reprojected on the fly onto the tile grid (%s) with nearest resampling",
            path,
            src_crs.to_string(),
            grid.crs.to_string() if grid.crs else "no CRS",
        )
    codes = read_on_grid(path, target, bands=1, fill=0)
    return _to_index(codes, src_nodata, encoding, str(path))


#: Output rows per strip when a prior is computed and written strip by strip (a multiple of
#: the blur's chunk and of the raster block size, so strips write whole blocks).
STRIP_ROWS = 256

#: How far from 1 the column sums of a cooccurrence matrix may be for the normalizer ``V`` to
#: be taken as the sum of the blurred class layers instead of a blur of its own.
COLUMN_SUM_TOL = 1e-9


class PriorStrips:
    """The NLCD prior of an index map (the module docstring's formula), strip by strip.

    The blur's first pass is done when the object is made; :meth:`rows` evaluates any strip of
    output rows, so a large tile is normalized and written strip by strip (see
    :func:`lcip.priors.build.write_prior_strips`). When the matrix's columns sum to 1 for every
    NLCD class present (what :func:`~lcip.priors.cooccurrence.normalize_counts` gives), the
    normalizer ``V = blur(valid)`` equals the sum of the blurred class layers and is taken from
    them (C layers blurred instead of C + 1; the priors agree to float32 rounding).

    Args:
        index: (H, W) NLCD indices 0..16 (0 = nodata), including any halo.
        cooccurrence: (C, 17) matrix P(target class | NLCD class), or a Cooccurrence.
        params: blur and smoothing parameters (``halo`` is not used here).
        crop: halo to drop from every side of the result.
    """

    def __init__(
        self,
        index: npt.NDArray[Any],
        cooccurrence: CooccurrenceLike,
        params: NLCDPriorParams | None = None,
        *,
        crop: int = 0,
    ) -> None:
        params = params or NLCDPriorParams()
        matrix = _as_matrix(cooccurrence)
        self.num_classes = matrix.shape[0]
        self._eps = np.float32(params.smoothing)
        height, width = index.shape[0] - 2 * crop, index.shape[1] - 2 * crop
        self.shape = (height, width)
        self._core = index[crop : crop + height, crop : crop + width]
        self.any_valid = bool(np.any(self._core))
        self._blur: StripBlur | None = None
        self._own_denominator = True
        if not self.any_valid:
            return
        weights = matrix.copy()
        weights[:, 0] = 0.0  # nodata contributes to no class ...
        validity = np.ones((1, NUM_NLCD))
        validity[0, 0] = 0.0  # ... nor to the normalizer
        present = np.bincount(np.ravel(index), minlength=NUM_NLCD)[:NUM_NLCD] > 0
        present[0] = False
        sums = weights[:, present].sum(axis=0)
        layers = weights
        if np.all(np.abs(sums - 1.0) <= COLUMN_SUM_TOL):
            self._own_denominator = False  # V = sum of the class layers
        else:
            layers = np.concatenate([validity, weights])
        self._blur = StripBlur(
            index, NUM_NLCD, params.sigma, params.truncate, weights=layers, crop=crop
        )
        self._work: npt.NDArray[np.float32] | None = None

    def rows(
        self, start: int, prior: npt.NDArray[np.float32], valid: npt.NDArray[np.bool_]
    ) -> None:
        """Evaluate output rows ``start .. start + valid.shape[0]`` into ``prior`` and ``valid``.

        Args:
            start: first output row.
            prior: (C, rows, W) float32 output whose layers are C-contiguous (e.g. rows of a
                whole prior): summing to 1 over classes on valid pixels, 0 elsewhere.
            valid: (rows, W) bool output, False where the NLCD is nodata (or, possible only
                without smoothing, where every class has zero prior).
        """
        count = valid.shape[0]
        np.not_equal(self._core[start : start + count], 0, out=valid)
        if self._blur is None:
            prior[...] = 0
            return
        if self._own_denominator:
            if self._work is None or self._work.shape[1] < count:
                self._work = np.empty((1 + self.num_classes, count, self.shape[1]), np.float32)
            work = self._work[:, :count]
            self._blur.rows(start, work)
            denom, blurred = work[0], work[1:]
        else:
            self._blur.rows(start, prior)
            denom, blurred = np.sum(prior, axis=0), prior
        valid &= denom > 0
        # prior_l = (B_l + eps V) / sum_k (B_k + eps V), in place.
        denom *= self._eps
        blurred += denom
        total = np.sum(blurred, axis=0, out=denom)
        valid &= total > 0
        np.divide(blurred, total, out=prior, where=valid)
        prior *= valid  # invalid pixels -> 0


def prior_from_index(
    index: npt.NDArray[Any],
    cooccurrence: CooccurrenceLike,
    params: NLCDPriorParams | None = None,
    *,
    crop: int = 0,
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.bool_]]:
    """The NLCD prior from an NLCD index map (the formula of the module docstring).

    Args:
        index: (H, W) NLCD indices 0..16 (0 = nodata), including any halo.
        cooccurrence: (C, 17) matrix P(target class | NLCD class), or a Cooccurrence.
        params: blur and smoothing parameters (``halo`` is not used here).
        crop: halo to drop from every side of the result.

    Returns:
        (prior, valid): float32 (C, H - 2 crop, W - 2 crop) summing to 1 over classes on
        valid pixels and 0 elsewhere; bool (H - 2 crop, W - 2 crop), False where the NLCD is
        nodata (or, possible only without smoothing, where every class has zero prior).
    """
    strips = PriorStrips(index, cooccurrence, params, crop=crop)
    prior = np.zeros((strips.num_classes, *strips.shape), np.float32)
    valid = np.zeros(strips.shape, bool)
    strips.rows(0, prior, valid)
    return prior, valid


def nlcd_prior(
    tile_grid: Grid,
    nlcd_path: str | Path,
    cooccurrence: CooccurrenceLike,
    sigma: float = 31.0,
    truncate: float = 4.0,
    smoothing: float = 1e-4,
    halo: int | None = None,
    encoding: str = "codes",
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.bool_]]:
    """Compute the NLCD prior of one tile.

    Args:
        tile_grid: the tile's grid (its NAIP grid).
        nlcd_path: NLCD raster: region-wide (any resolution / CRS) or per tile. Use a
            region-wide one for seamless priors across tiles.
        cooccurrence: (C, 17) matrix P(target class | NLCD class), or a Cooccurrence.
        sigma: blur standard deviation in tile pixels.
        truncate: kernel truncation in standard deviations.
        smoothing: additive smoothing before renormalizing.
        halo: NLCD pixels read around the tile (None: ``ceil(truncate * sigma)``).
        encoding: how the NLCD raster stores classes (``codes`` or ``index``, see
            :data:`NLCD_ENCODINGS`).

    Returns:
        (prior, valid): float32 (C, H, W) summing to 1 on valid pixels, 0 on invalid ones;
        bool (H, W), True where the pixel's NLCD code is not nodata.

    Raises:
        DataError: if the NLCD file is missing, unreadable or holds unknown codes.
        ValueError: for a cooccurrence matrix of the wrong shape or bad parameters.
    """
    params = NLCDPriorParams(sigma=sigma, truncate=truncate, smoothing=smoothing, halo=halo)
    matrix = _as_matrix(cooccurrence)
    pad = params.halo_px
    if pad < kernel_radius(sigma, truncate):
        logger.warning(
            "halo %d px is smaller than the blur radius %d px: priors of adjacent tiles will "
            "not match along their edges",
            pad,
            kernel_radius(sigma, truncate),
        )
    index = read_nlcd_index(nlcd_path, tile_grid, halo=pad, encoding=encoding)
    prior, valid = prior_from_index(index, matrix, params, crop=pad)
    if not valid.any():
        logger.warning("%s: no NLCD data on tile grid %s", nlcd_path, tile_grid.describe())
    return prior, valid
