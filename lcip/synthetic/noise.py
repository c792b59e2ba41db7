"""Random fields: white noise, smooth noise on coarse grids and a bank of canvas fields."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from lcip.synthetic.arrays import F32, F64, Bool, Win

__all__ = ["Coarse", "NoiseBank", "coarse_noise", "gauss_unit", "smooth1d", "white"]


def _interp_axis(z: F32, f: int, start: int, stop: int, axis: int) -> F32:
    """Samples ``start:stop`` of the linear interpolation of ``z`` along ``axis``.

    Coarse cell i is centred at fine coordinate (i - 0.5) * f, so fine sample p lies at coarse
    position (p + 0.5) / f + 0.5. Samples with the same phase p mod f share their weights,
    so each phase is one strided slice operation.
    """
    zt = np.moveaxis(z, axis, 0)
    n = stop - start
    out = np.empty((n, *zt.shape[1:]), np.float32)
    for j in range(f):
        p0 = start + (j - start) % f
        if p0 >= stop:
            continue
        m = len(range(p0, stop, f))
        pos = (j + 0.5) / f + 0.5
        k = (p0 - j) // f + math.floor(pos)
        t = np.float32(pos - math.floor(pos))
        dst = out[p0 - start :: f]
        if t == 0:
            dst[...] = zt[k : k + m]
        else:
            np.multiply(zt[k : k + m], 1 - t, out=dst)
            dst += zt[k + 1 : k + 1 + m] * t
    return np.moveaxis(out, 0, axis)


def white(rng: np.random.Generator, shape: tuple[int, ...]) -> F32:
    """White noise with zero mean and unit variance (triangular distribution).

    The sum of two random bytes: an order of magnitude cheaper than normal deviates, close
    enough to Gaussian for sensor noise, and Gaussian anyway once smoothed.
    """
    n = math.prod(shape)
    b = np.frombuffer(rng.bytes(2 * n), np.uint8).reshape(2, n)
    z = b[0].astype(np.float32)
    z += b[1]
    z -= np.float32(255.0)
    z *= np.float32(1.0 / math.sqrt(2 * (256**2 - 1) / 12))
    return z.reshape(shape)


@dataclass(frozen=True)
class Coarse:
    """A smooth field stored on a coarse grid (factor ``f``), upsampled bilinearly on demand."""

    z: F32
    f: int

    def window(self, rows: slice, cols: slice) -> F32:
        """The upsampled field on fine rows ``rows`` and columns ``cols``."""
        # columns first, on the small coarse array, then rows (contiguous slices)
        r0 = rows.start // self.f
        r1 = min(self.z.shape[0], (rows.stop - 1) // self.f + 3)
        a = np.ascontiguousarray(_interp_axis(self.z[r0:r1], self.f, cols.start, cols.stop, 1))
        return _interp_axis(a, self.f, rows.start - r0 * self.f, rows.stop - r0 * self.f, 0)


def coarse_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> Coarse:
    """Gaussian-smoothed white noise (unit standard deviation) on a coarse grid.

    The grid is coarse enough that ``sigma`` spans about 1.5 coarse cells.
    """
    f = max(1, int(sigma / 1.5))
    z = white(rng, (shape[0] // f + 3, shape[1] // f + 3))
    z = ndimage.gaussian_filter(z, sigma / f, mode="wrap", truncate=3.0)
    z /= max(float(z.std()), 1e-6)
    return Coarse(z, f)


def gauss_unit(white: F32, sigma: float) -> F32:
    """Gaussian filter of white noise, scaled to unit standard deviation.

    The scale comes from the kernel (not the data), so that windows of one noise field are
    filtered identically.
    """
    radius = int(3.0 * sigma + 0.5)
    k = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    k /= k.sum()
    out = ndimage.gaussian_filter(white, sigma, mode="reflect", truncate=3.0)
    out *= np.float32(1.0 / float((k**2).sum()))
    return out


def smooth1d(rng: np.random.Generator, n: int, sigma: float) -> F64:
    """Smoothed 1-D white noise with unit standard deviation."""
    z = ndimage.gaussian_filter1d(rng.standard_normal(n + 1), max(sigma, 0.5), mode="reflect")
    return np.asarray(z[:n] / max(float(z.std()), 1e-9), dtype=np.float64)


class NoiseBank:
    """Smooth noise fields of the canvas, stored coarse and upsampled window by window.

    Variant k of a field is the field flipped (k % 4: none, up-down, left-right, both) and, for
    k >= 4, negated: cheap, effectively independent patterns for unrelated features.
    """

    def __init__(self, rng: np.random.Generator, shape: tuple[int, int]) -> None:
        self.rng, self.shape = rng, shape
        self.fields: dict[float, Coarse] = {}

    def get(self, sigma: float, variant: int = 0, win: Win | None = None) -> F32:
        """A variant of the field of scale ``sigma`` on a window.

        The field is drawn from the bank's generator the first time ``sigma`` is asked for.

        Args:
            sigma: smoothing scale (pixels).
            variant: which flipped / negated variant of the field (see the class).
            win: canvas window; None for the whole canvas.

        Returns:
            the field (unit standard deviation) on the window.
        """
        if sigma not in self.fields:
            self.fields[sigma] = coarse_noise(self.rng, self.shape, sigma)
        h, w = self.shape
        rows, cols = win if win is not None else (slice(0, h), slice(0, w))
        flip_r, flip_c = variant % 4 in (1, 3), variant % 4 in (2, 3)
        if flip_r:
            rows = slice(h - rows.stop, h - rows.start)
        if flip_c:
            cols = slice(w - cols.stop, w - cols.start)
        z = self.fields[sigma].window(rows, cols)
        return z[:: -1 if flip_r else 1, :: -1 if flip_c else 1]

    def above(self, sigma: float, variant: int, t: float, win: Win | None = None) -> Bool:
        """Where a variant of the field of scale ``sigma`` exceeds ``t`` on a window.

        Args:
            sigma: smoothing scale (pixels).
            variant: which variant of the field; variants >= 4 are negated.
            t: threshold (in standard deviations).
            win: canvas window; None for the whole canvas.

        Returns:
            the mask.
        """
        z = self.get(sigma, variant, win)
        return z > np.float32(t) if variant < 4 else z < np.float32(-t)
