"""Exact, fast Gaussian blur of one-hot class maps that are piecewise constant on blocks.

The NLCD prior blurs one-hot NLCD at the 1 m tile grid. NLCD is 30 m data, so at 1 m it is
piecewise constant on (about) 30 x 30 px blocks, cut at the tile edges and with an arbitrary
offset. This module computes the blur *exactly* (up to float rounding) at a small fraction of
the cost of a direct 1 m convolution.

Reference blur
--------------
The reference is what ``scipy.ndimage.gaussian_filter(x, sigma, truncate=truncate,
mode="nearest")`` computes on each float one-hot layer ``x``:

- a separable filter: the same 1-D kernel along rows, then along columns;
- the 1-D kernel is the *sampled* Gaussian ``w[k] ∝ exp(-k² / (2 sigma²))`` for integer
  ``k = -r..r`` with radius ``r = int(truncate * sigma + 0.5)`` (124 px for sigma = 31,
  truncate = 4), normalized to sum to 1 (see :func:`gaussian_kernel1d`);
- edge mode ``nearest``: outside the image, the edge pixel is repeated
  (``x[-1] = x[-2] = ... = x[0]``).

Hence ``out[y, x] = sum_{i,j} w[i] w[j] x[clip(y + i), clip(x + j)]``.

Method
------
Rows ``y`` and ``y - 1`` belong to the same *row segment* when the index map is identical on
both rows; likewise for columns. The row and column segments form a product partition of the
image into cells on which the map is constant (proof: within a cell, no value changes from one
column to the next in any row, nor from one row to the next). With ``V`` the (rows x columns)
matrix of cell values of one layer,

    out = A_r @ V @ A_c.T,   A_r[y, b] = sum of w[k] over the k with clip(y + k) in segment b,

and likewise ``A_c``. Edge mode ``nearest`` is folded into the first and last segments (they
extend to -inf and +inf). ``A_r[y, b]`` is a difference of two values of the kernel's
cumulative sum, so the matrices are built in closed form. They are banded (a row of ``A_r``
is non-zero only for the segments within ``r`` px), so the products are evaluated in chunks of
128 output rows / columns against just the segments that chunk can see. For 30 px blocks and
sigma = 31 the first product (``V @ A_c.T``, one row per row segment) is ~30x smaller than the
image, and the second costs ~15 multiply-adds per output pixel (BLAS matrix products via
torch), against 2 x 249 for a direct separable convolution.

Any product partition is handled exactly, including cut blocks, irregular block sizes and
maps that are not block-structured at all (e.g. NLCD reprojected from another CRS): there the
segments degrade to single pixels and the method becomes a banded dense matrix product,
still exact but slower (a warning is logged). Only layers that are non-zero somewhere are
computed; with ``weights`` the classes are combined linearly *before* blurring (the blur is
linear), so the NLCD prior blurs C + 1 layers rather than 17.

Streaming: :class:`StripBlur` does the first product of every layer once and evaluates the
second one strip of output rows at a time, so that a large tile's prior can be normalized and
written strip by strip (bounded memory, and the compression of one strip overlaps the
computation of the next) with the very values :func:`blur_onehot` gives.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

#: Output rows / columns evaluated per matrix product.
CHUNK = 128

#: Mean segment length (px) below which the partition is reported as not block-structured.
MIN_MEAN_SEGMENT = 4.0

_BIG = 1 << 40  # stands for +-infinity in segment bounds


def kernel_radius(sigma: float, truncate: float = 4.0) -> int:
    """Radius of the truncated Gaussian kernel, as in ``scipy.ndimage.gaussian_filter``.

    Args:
        sigma: standard deviation in pixels.
        truncate: truncation in standard deviations.

    Returns:
        ``int(truncate * sigma + 0.5)``.
    """
    return int(truncate * float(sigma) + 0.5)


def gaussian_kernel1d(sigma: float, truncate: float = 4.0) -> npt.NDArray[np.float64]:
    """The sampled, truncated, normalized 1-D Gaussian kernel used by the reference blur.

    Identical to the kernel ``scipy.ndimage.gaussian_filter(x, sigma, truncate=truncate)``
    applies along each axis.

    Args:
        sigma: standard deviation in pixels (> 0).
        truncate: truncation in standard deviations (> 0).

    Returns:
        float64 array of length ``2 r + 1`` (``r`` = :func:`kernel_radius`) summing to 1.

    Raises:
        ValueError: if ``sigma`` or ``truncate`` is not positive.
    """
    if not (sigma > 0 and truncate > 0):
        raise ValueError(f"sigma and truncate must be positive, got {sigma} and {truncate}")
    radius = kernel_radius(sigma, truncate)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    phi = np.exp(-0.5 / (float(sigma) * float(sigma)) * x**2)
    return phi / phi.sum()


@dataclass(frozen=True)
class _Axis:
    """Segments of one image axis and the output range wanted along it."""

    starts: npt.NDArray[np.int64]  # first pixel of each segment (sorted, starts[0] == 0)
    length: int  # number of pixels along the axis
    out_start: int  # first output pixel (input coordinates)
    out_stop: int  # one past the last output pixel

    @property
    def count(self) -> int:
        return len(self.starts)

    @property
    def lo(self) -> npt.NDArray[np.int64]:
        """Segment starts with the first one extended to -inf (edge mode ``nearest``)."""
        lo = self.starts.copy()
        lo[0] = -_BIG
        return lo

    @property
    def hi(self) -> npt.NDArray[np.int64]:
        """Segment ends (exclusive) with the last one extended to +inf."""
        hi = np.empty_like(self.starts)
        hi[:-1] = self.starts[1:]
        hi[-1] = _BIG
        return hi

    def band(self, p0: int, p1: int, radius: int) -> tuple[int, int]:
        """Segments ``[j0, j1)`` seen by output pixels ``[p0, p1)``."""
        first = max(p0 - radius, 0)
        last = min(p1 - 1 + radius, self.length - 1)
        j0 = int(np.searchsorted(self.starts, first, side="right")) - 1
        j1 = int(np.searchsorted(self.starts, last, side="right"))
        return j0, j1

    def mean_band(self, radius: int) -> float:
        """Average number of segments per output chunk (a cost estimate)."""
        total, n = 0, 0
        for p0 in range(self.out_start, self.out_stop, CHUNK):
            j0, j1 = self.band(p0, min(p0 + CHUNK, self.out_stop), radius)
            total += j1 - j0
            n += 1
        return total / max(n, 1)


def _fold_matrix(
    p0: int,
    p1: int,
    lo: npt.NDArray[np.int64],
    hi: npt.NDArray[np.int64],
    cum: npt.NDArray[np.float64],
    radius: int,
) -> npt.NDArray[np.float64]:
    """``A[p, b]``: kernel weight that output pixel ``p`` (in ``[p0, p1)``) gives segment ``b``.

    ``A[p, b] = F(hi_b - 1 - p) - F(lo_b - 1 - p)`` with ``F(t) = sum_{k <= t} w[k]``.
    """
    p = np.arange(p0, p1, dtype=np.int64)[:, None]
    top = np.clip(hi[None, :] - 1 - p + radius + 1, 0, 2 * radius + 1)
    bottom = np.clip(lo[None, :] - 1 - p + radius + 1, 0, 2 * radius + 1)
    return cum[top] - cum[bottom]


def _segment_starts(change: npt.NDArray[np.bool_]) -> npt.NDArray[np.int64]:
    """Segment starts from a boolean "differs from the previous line" vector."""
    return np.concatenate([[0], np.flatnonzero(change) + 1]).astype(np.int64)


def partition(index: npt.NDArray[Any]) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Row and column segment starts of the coarsest product partition of a label map.

    A row starts a new segment when it differs from the previous row anywhere; likewise for
    columns. The map is constant on every (row segment x column segment) cell.

    Args:
        index: 2-D integer label map.

    Returns:
        (row starts, column starts), each sorted and starting with 0.
    """
    rows = np.any(index[1:] != index[:-1], axis=1)
    cols = np.any(index[:, 1:] != index[:, :-1], axis=0)
    return _segment_starts(rows), _segment_starts(cols)


def _pass_columns(
    cells: torch.Tensor,
    rows: _Axis,
    cols: _Axis,
    cum: npt.NDArray[np.float64],
    radius: int,
    mats: dict[tuple[str, int], tuple[int, int, torch.Tensor]],
) -> torch.Tensor:
    """Pass 1 of the blur of one layer: ``cells @ A_c.T``, (row segments, output columns).

    ``mats`` caches the fold matrices of each chunk across layers.
    """
    import torch

    u = torch.empty((rows.count, cols.out_stop - cols.out_start), dtype=cells.dtype)
    lo_c, hi_c = cols.lo, cols.hi
    for x0 in range(cols.out_start, cols.out_stop, CHUNK):
        x1 = min(x0 + CHUNK, cols.out_stop)
        key = ("c", x0)
        if key not in mats:
            j0, j1 = cols.band(x0, x1, radius)
            a = _fold_matrix(x0, x1, lo_c[j0:j1], hi_c[j0:j1], cum, radius)
            mats[key] = (j0, j1, torch.from_numpy(np.ascontiguousarray(a.T)).to(cells.dtype))
        j0, j1, at = mats[key]
        u[:, x0 - cols.out_start : x1 - cols.out_start] = cells[:, j0:j1] @ at
    return u


def _pass_rows(
    u: torch.Tensor,
    rows: _Axis,
    cum: npt.NDArray[np.float64],
    radius: int,
    out: torch.Tensor,
    mats: dict[tuple[str, int], tuple[int, int, torch.Tensor]],
    start: int | None = None,
) -> None:
    """Pass 2 of the blur of one layer: ``out = A_r @ u`` for output rows from ``start``.

    ``out`` holds consecutive output rows (``start`` defaults to the first); they are
    evaluated in chunks of :data:`CHUNK` rows aligned on the first output row, so any strip
    of whole chunks gives the very same values as the whole layer.
    """
    import torch

    start = rows.out_start if start is None else start
    stop = start + out.shape[0]
    lo_r, hi_r = rows.lo, rows.hi
    for y0 in range(start, stop, CHUNK):
        y1 = min(y0 + CHUNK, stop)
        key = ("r", y0)
        if key not in mats:
            j0, j1 = rows.band(y0, y1, radius)
            a = _fold_matrix(y0, y1, lo_r[j0:j1], hi_r[j0:j1], cum, radius)
            mats[key] = (j0, j1, torch.from_numpy(a).to(u.dtype))
        j0, j1, a_r = mats[key]
        if a_r.shape[0] != y1 - y0:  # a shorter last chunk of a strip: not cached
            j0, j1 = rows.band(y0, y1, radius)
            a_r = torch.from_numpy(_fold_matrix(y0, y1, lo_r[j0:j1], hi_r[j0:j1], cum, radius))
            a_r = a_r.to(u.dtype)
        torch.matmul(a_r, u[j0:j1], out=out[y0 - start : y1 - start])


def _blur_cells(
    cells: torch.Tensor,
    rows: _Axis,
    cols: _Axis,
    cum: npt.NDArray[np.float64],
    radius: int,
    out: torch.Tensor,
    mats: dict[tuple[str, int], tuple[int, int, torch.Tensor]],
) -> None:
    """Blur one layer given by its cell values: ``out = A_r @ cells @ A_c.T`` (banded)."""
    u = _pass_columns(cells, rows, cols, cum, radius, mats)
    _pass_rows(u, rows, cum, radius, out, mats)


@contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    """Temporarily set torch's intra-op thread count (None: leave it)."""
    import torch

    if threads is None or threads == torch.get_num_threads():
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass(frozen=True)
class _Setup:
    """What every blur of one label map shares: its partition, cells and kernel."""

    rows: _Axis
    cols: _Axis
    cell_index: npt.NDArray[np.intp]
    present: npt.NDArray[np.bool_]
    cum: npt.NDArray[np.float64]
    radius: int
    transpose: bool

    @property
    def out_shape(self) -> tuple[int, int]:
        """(rows, columns) of the output."""
        return (
            self.rows.out_stop - self.rows.out_start,
            self.cols.out_stop - self.cols.out_start,
        )

    @classmethod
    def of(
        cls, index: npt.NDArray[Any], num_classes: int, sigma: float, truncate: float, crop: int
    ) -> _Setup:
        """Partition a label map and choose the evaluation order (see :func:`blur_onehot`)."""
        if index.ndim != 2 or index.dtype.kind not in "iub":
            raise ValueError(f"index must be a 2-D integer array, got {index.dtype} {index.shape}")
        height, width = index.shape
        if crop < 0 or 2 * crop >= min(height, width):
            raise ValueError(f"crop {crop} leaves no output for an image of {height}x{width} px")
        row_starts, col_starts = partition(index)
        cell_index = index[np.ix_(row_starts, col_starts)]
        if cell_index.min() < 0 or cell_index.max() >= num_classes:
            raise ValueError(
                f"index values must lie in 0..{num_classes - 1}, "
                f"got {cell_index.min()}..{cell_index.max()}"
            )
        cell_index = cell_index.astype(np.intp)
        rows = _Axis(row_starts, height, crop, height - crop)
        cols = _Axis(col_starts, width, crop, width - crop)
        if height / rows.count < MIN_MEAN_SEGMENT or width / cols.count < MIN_MEAN_SEGMENT:
            logger.warning(
                "label map of %dx%d px is not block-structured (%d row x %d column segments): "
                "the blur stays exact but is slower",
                height,
                width,
                rows.count,
                cols.count,
            )
        else:
            logger.debug("blur: %d row x %d column segments", rows.count, cols.count)

        kernel = gaussian_kernel1d(sigma, truncate)
        radius = (len(kernel) - 1) // 2
        cum = np.concatenate([[0.0], np.cumsum(kernel)])

        # Evaluate rows-last (default) or, when clearly cheaper (strongly anisotropic partitions,
        # e.g. stripes), columns-last on the transposed problem, paying one transposing copy.
        n_out = (rows.out_stop - rows.out_start) * (cols.out_stop - cols.out_start)
        band_r, band_c = rows.mean_band(radius), cols.mean_band(radius)
        cost_rows_last = rows.count * band_c * (cols.out_stop - cols.out_start) + band_r * n_out
        cost_cols_last = cols.count * band_r * (rows.out_stop - rows.out_start) + band_c * n_out
        transpose = cost_cols_last + 4 * n_out < cost_rows_last
        present = np.zeros(num_classes, dtype=bool)
        present[np.unique(cell_index)] = True
        return cls(rows, cols, cell_index, present, cum, radius, transpose)


def blur_onehot(
    index: npt.NDArray[Any],
    num_classes: int,
    sigma: float = 31.0,
    truncate: float = 4.0,
    weights: npt.NDArray[Any] | None = None,
    *,
    crop: int = 0,
    dtype: npt.DTypeLike = np.float32,
    threads: int | None = 1,
    out: npt.NDArray[Any] | None = None,
) -> npt.NDArray[Any]:
    """Gaussian blur of the one-hot encoding of a label map, exactly and fast.

    Computes ``gaussian_filter(onehot[k], sigma, truncate=truncate, mode="nearest")`` for every
    class ``k`` (see the module docstring for the exact definition and method), or, with
    ``weights``, the blur of the weighted combinations ``sum_k weights[m, k] * onehot[k]``
    (equal to ``weights @ blur(onehot)`` since the blur is linear, but cheaper).

    Args:
        index: (H, W) integer label map with values in ``0..num_classes - 1``.
        num_classes: number of classes K.
        sigma: Gaussian standard deviation in pixels.
        truncate: kernel truncation in standard deviations.
        weights: optional (M, K) matrix combining classes into M layers before blurring.
        crop: number of pixels to drop from every side of the output (e.g. a halo read
            around a tile). The blur still sees the whole input; only the kept pixels are
            computed.
        dtype: output dtype (float32, or float64 for exactness checks).
        threads: torch intra-op threads for the matrix products while this call runs (torch's
            setting is restored afterwards). The default 1 suits the many small, largely
            memory-bound products and oversubscribed machines (prior building parallelizes over
            tiles instead); None keeps torch's current setting.
        out: optional C-contiguous float32/float64 array of the output shape to write into
            (e.g. a buffer reused across tiles); ``dtype`` is then ``out.dtype``.

    Returns:
        (K or M, H - 2 crop, W - 2 crop) array of blurred layers. Layers that are zero
        everywhere in the input are exactly zero.

    Raises:
        ValueError: on a bad shape, out-of-range class values or a too-large crop.
    """
    w_mat = _weights(weights, num_classes)
    out_dtype = _out_dtype(dtype if out is None else out.dtype)
    setup = _Setup.of(index, num_classes, sigma, truncate, crop)
    shape = (w_mat.shape[0], *setup.out_shape)
    zeroed = out is None
    if out is None:
        out = np.zeros(shape, dtype=out_dtype)  # absent layers stay untouched zero pages
    elif out.shape != shape or not out.flags.c_contiguous:
        raise ValueError(f"out must be a C-contiguous array of shape {shape}, got {out.shape}")
    rows, cols, cum, radius = setup.rows, setup.cols, setup.cum, setup.radius

    import torch  # imported here: modules that only read NLCD need not load torch

    mats: dict[tuple[str, int], tuple[int, int, torch.Tensor]] = {}
    tmp: torch.Tensor | None = None
    with torch.no_grad(), _torch_threads(threads):
        for m in range(w_mat.shape[0]):
            if not np.any(w_mat[m, setup.present]):
                if not zeroed:
                    out[m] = 0  # layer is zero everywhere
                continue
            cells = torch.from_numpy(w_mat[m].astype(out_dtype)[setup.cell_index])
            if setup.transpose:
                if tmp is None:
                    tmp = torch.empty(out.shape[:0:-1], dtype=cells.dtype)
                _blur_cells(cells.T.contiguous(), cols, rows, cum, radius, tmp, mats)
                out[m] = tmp.numpy().T
            else:
                _blur_cells(cells, rows, cols, cum, radius, torch.from_numpy(out[m]), mats)
    return out


def _weights(weights: npt.NDArray[Any] | None, num_classes: int) -> npt.NDArray[np.float64]:
    """The (M, K) layer weights (identity when None), checked."""
    w_mat = np.eye(num_classes) if weights is None else np.asarray(weights, dtype=np.float64)
    if w_mat.ndim != 2 or w_mat.shape[1] != num_classes:
        raise ValueError(f"weights must have shape (M, {num_classes}), got {w_mat.shape}")
    return w_mat


def _out_dtype(dtype: npt.DTypeLike) -> np.dtype[Any]:
    """The output dtype, float32 or float64."""
    out_dtype = np.dtype(dtype)
    if out_dtype not in (np.float32, np.float64):
        raise ValueError(f"output dtype must be float32 or float64, got {out_dtype}")
    return out_dtype


class StripBlur:
    """:func:`blur_onehot` evaluated by strips of output rows, for streaming large tiles.

    The first pass of every layer (one row per row segment, small) is done when the object is
    made; :meth:`rows` then evaluates any strip of output rows. Strips whose first row is a
    multiple of :data:`CHUNK` give exactly the values of :func:`blur_onehot` (same chunks, same
    products); a partition that :func:`blur_onehot` would evaluate columns-last (strongly
    anisotropic ones) is blurred whole here and served by slices.

    Args:
        index: (H, W) integer label map with values in ``0..num_classes - 1``.
        num_classes: number of classes K.
        sigma: Gaussian standard deviation in pixels.
        truncate: kernel truncation in standard deviations.
        weights: optional (M, K) matrix combining classes into M layers before blurring.
        crop: pixels dropped from every side of the output.
        dtype: output dtype (float32 or float64).
        threads: torch intra-op threads while evaluating (as :func:`blur_onehot`).
    """

    def __init__(
        self,
        index: npt.NDArray[Any],
        num_classes: int,
        sigma: float = 31.0,
        truncate: float = 4.0,
        weights: npt.NDArray[Any] | None = None,
        *,
        crop: int = 0,
        dtype: npt.DTypeLike = np.float32,
        threads: int | None = 1,
    ) -> None:
        import torch

        self._w = _weights(weights, num_classes)
        self._dtype = _out_dtype(dtype)
        self._setup = _Setup.of(index, num_classes, sigma, truncate, crop)
        self._threads = threads
        self._mats: dict[tuple[str, int], tuple[int, int, torch.Tensor]] = {}
        self._whole: npt.NDArray[Any] | None = None
        self._u: list[torch.Tensor | None] = []
        setup = self._setup
        if setup.transpose:
            self._whole = blur_onehot(
                index,
                num_classes,
                sigma,
                truncate,
                self._w,
                crop=crop,
                dtype=self._dtype,
                threads=threads,
            )
            return
        with torch.no_grad(), _torch_threads(threads):
            for m in range(self._w.shape[0]):
                if not np.any(self._w[m, setup.present]):
                    self._u.append(None)
                    continue
                cells = torch.from_numpy(self._w[m].astype(self._dtype)[setup.cell_index])
                self._u.append(
                    _pass_columns(
                        cells, setup.rows, setup.cols, setup.cum, setup.radius, self._mats
                    )
                )

    @property
    def shape(self) -> tuple[int, int, int]:
        """(M, output rows, output columns) of the whole result."""
        return (self._w.shape[0], *self._setup.out_shape)

    @property
    def present(self) -> npt.NDArray[np.bool_]:
        """(K,) which classes occur in the label map."""
        return self._setup.present

    def rows(self, start: int, out: npt.NDArray[Any]) -> npt.NDArray[Any]:
        """Evaluate output rows ``start .. start + out.shape[1]`` of every layer into ``out``.

        Args:
            start: first output row (0 = the first row kept after the crop).
            out: (M, rows, output columns) array of the output dtype whose layers are
                C-contiguous (e.g. a strip of rows of a whole (M, H, W) result).

        Returns:
            ``out``.
        """
        import torch

        m_layers, height, width = self.shape
        if (
            out.ndim != 3
            or out.shape[0] != m_layers
            or out.shape[2] != width
            or not 0 <= start <= start + out.shape[1] <= height
            or out.dtype != self._dtype
            or not all(layer.flags.c_contiguous for layer in out)
        ):
            raise ValueError(
                f"out must be {self._dtype} ({m_layers}, rows, {width}) with C-contiguous "
                f"layers within {height} rows, got {out.dtype} {out.shape} from row {start}"
            )
        stop = start + out.shape[1]
        if self._whole is not None:
            out[...] = self._whole[:, start:stop]
            return out
        setup = self._setup
        first = setup.rows.out_start + start
        with torch.no_grad(), _torch_threads(self._threads):
            for m, u in enumerate(self._u):
                if u is None:
                    out[m] = 0
                    continue
                target = torch.from_numpy(out[m])
                _pass_rows(u, setup.rows, setup.cum, setup.radius, target, self._mats, first)
        return out
