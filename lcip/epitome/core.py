"""Self-epitomic label super-resolution (Malkin, Ortiz, Jojic, ECCV 2020), vectorized in torch.

Each W x W window of a tile is its own epitome: no training data beyond the window itself and
the cooccurrence matrix p(l | c) lcip counts. Notation, per window: epitome pixels (m, n);
positions s = (s1, s2), the top-left corner of a K x K patch inside the epitome; NLCD classes
c (indices 0..16 into :data:`lcip.classes.NLCD_CODES`, 0 = nodata); target classes l.

1. **Epitome** (:func:`downsample_image`): mu = the imagery divided by ``image_scale`` (to
   [0, 1]), averaged over the valid pixels of each f x f block (f = ``downsample``); an
   epitome pixel is valid when its block holds a valid pixel. Fixed variance sigma^2
   (``sigma2`` = 0.01), uniform prior over positions. The NLCD class of an epitome pixel is
   that of its block's centre pixel (:func:`downsample_classes`).
2. **Patches** (:func:`sample_patches`): T = round(``patch_density`` * H * W) (or
   ``num_patches``) K x K patches x^t of the epitome itself, at distinct positions drawn
   uniformly (seeded) among those whose window is all valid and whose centre class c^t is
   not nodata.
3. **Posterior over positions**, normalized over s for each patch t (:func:`log_likelihood`,
   :func:`log_posterior`)::

       log p(s | x^t) = -||x^t - mu_s||^2 / (2 sigma^2) - logsumexp_s'(same at s')
       ||x - mu_s||^2 = ||x||^2 - 2 <x, mu_s> + ||mu_s||^2

   <x, mu_s> is a correlation (``conv2d`` of the epitome with the patches as kernels, one
   batched op per chunk), ||mu_s||^2 a K x K box sum of sum_k mu_k^2. Positions whose window
   holds an invalid epitome pixel get -inf.
4. **Embedding**, normalized over positions (m, n) for each class c (:func:`embed`,
   :func:`class_embedding`)::

       E_c(m, n)   = sum_t [c^t = c] sum_{i,j=0}^{K-1} p(s = (m - i, n - j) | x^t)
       p(m, n | c) = E_c(m, n) / sum_{m',n'} E_c(m', n'),        p(c) = N_c / T

   (N_c patches of class c): per-class sums of the posteriors, spread by a K x K box (a
   transposed convolution with a ones kernel).
5. **EM** for p(l | m, n) (:func:`em`), from p(l | m, n) = 1 / L, until the largest change
   is at most ``tol`` or ``max_iter`` iterations::

       E-step: q_{l,c}(m, n) = p(l | m, n) p(m, n | c) / sum_{m',n'} p(l | m', n') p(m', n' | c)
               -- normalized over POSITIONS (m, n), separately for each pair (l, c);
       M-step: p(l | m, n)   = sum_c p(c) p(l | c) q_{l,c}(m, n) / sum_l' (same for l')
               -- normalized over LABELS l, separately at each position (m, n).

   This is EM for the model c -> (m, n) ~ p(m, n | c) -> l ~ p(l | m, n) fitted to the label
   distribution p(c) p(l | c): it never decreases
   sum_c p(c) sum_l p(l | c) log sum_{m,n} p(m, n | c) p(l | m, n). q is never materialized:
   the M-step numerator is p(l | m, n) sum_c [p(c) p(l | c) / Z_{l,c}] p(m, n | c), with Z
   the E-step normalizer. Epitome pixels no patch explains (E_c = 0 for every c) get p(l | c)
   of their own NLCD class (uniform where that is nodata).
6. **Back to the tile grid** (:func:`upsample`): p(l | m, n) upsampled by f (bilinear over
   the valid epitome pixels, or nearest) is the label distribution. Output pixels are valid
   where the imagery holds data and the NLCD is not nodata (the pixels ``lcip-predict`` maps,
   whose prior is nodata where the NLCD is).

Tiles larger than W are processed in W x W windows (:func:`tile_windows`; the last row and
column of windows are shifted back inside the tile, so every window is W x W). Memory is
bounded by ``chunk_elements``: patches are processed in chunks, and when even a small chunk
of patches times all positions exceeds it, positions are processed in strips of rows (then
the per-patch normalizer takes a first pass over the strips).

:func:`epitome_tile` writes a tile's ``q_prob`` / ``q_class`` rasters exactly as
``lcip-predict`` writes its q outputs (see :mod:`lcip.inference.predict`), so ``lcip-evaluate``
scores them as they are; :func:`epitome_manifest` runs it over a manifest, skipping tiles whose
outputs record the same provenance.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from rasterio.windows import Window
from tqdm.auto import tqdm

from lcip.classes import ClassScheme
from lcip.errors import ConfigError, DataError
from lcip.inference.predict import map_tags, map_writers, maps_up_to_date, output_paths, write_maps
from lcip.io.manifest import Manifest, Tile
from lcip.io.provenance import provenance
from lcip.io.raster import Grid, open_raster, streaming_env, valid_imagery
from lcip.priors.nlcd import NUM_NLCD, read_nlcd_index

log = logging.getLogger(__name__)

#: Output layers written per tile (the q outputs of ``lcip-predict``).
OUTPUT_LAYERS = ("q_prob", "q_class")

#: Upsampling modes of p(l | m, n) back to the tile grid.
UPSAMPLE_MODES = ("bilinear", "nearest")

#: Patches per chunk below which positions are split into strips instead.
MIN_PATCH_CHUNK = 64


class NoValidPixelError(DataError):
    """A tile has no pixel with both valid imagery and valid NLCD."""


@dataclass(frozen=True)
class EpitomeParams:
    """Settings of self-epitomic LSR (``epitome.*``; see the module docstring).

    Args:
        window: W, the window size in tile pixels (tiles larger than W are processed in W x W
            windows).
        downsample: f, the epitome is the imagery downsampled by f.
        patch_size: K, patch side in epitome pixels.
        patch_density: patches per window pixel (T = round(density * H * W)).
        num_patches: a fixed number of patches per window instead (None: from the density).
        sigma2: variance of the epitome's Gaussians (imagery scaled to [0, 1]).
        max_iter: EM iterations at most.
        tol: EM stops when no p(l | m, n) changes by more than this.
        upsample: ``bilinear`` or ``nearest``.
        image_scale: divisor bringing the imagery to [0, 1] (255 for uint8 NAIP).
        seed: seed of the patch sampling.
        chunk_elements: most posterior values held at once (patches x positions).
    """

    window: int = 512
    downsample: int = 2
    patch_size: int = 7
    patch_density: float = 0.05
    num_patches: int | None = None
    sigma2: float = 0.01
    max_iter: int = 100
    tol: float = 1e-4
    upsample: str = "bilinear"
    image_scale: float = 255.0
    seed: int = 0
    chunk_elements: int = 2**24

    def __post_init__(self) -> None:
        def positive(key: str, value: Any, integer: bool = True) -> None:
            kinds = int if integer else int | float
            ok = isinstance(value, kinds) and not isinstance(value, bool)
            if not (ok and math.isfinite(value) and value > 0):
                kind = "an integer" if integer else "a number"
                raise ConfigError(f"epitome.{key}={value!r}: must be {kind} > 0")

        for key in ("window", "downsample", "patch_size", "max_iter", "chunk_elements"):
            positive(key, getattr(self, key))
        for key in ("patch_density", "sigma2", "image_scale"):
            positive(key, getattr(self, key), integer=False)
        if self.num_patches is not None:
            positive("num_patches", self.num_patches)
        tol_ok = isinstance(self.tol, int | float) and not isinstance(self.tol, bool)
        if not (tol_ok and math.isfinite(self.tol) and self.tol >= 0):
            raise ConfigError(f"epitome.tol={self.tol!r}: must be a number >= 0")
        if self.upsample not in UPSAMPLE_MODES:
            raise ConfigError(
                f"epitome.upsample={self.upsample!r}: choose one of {list(UPSAMPLE_MODES)}"
            )
        if self.window < self.min_size:
            raise ConfigError(
                f"epitome.window={self.window}: smaller than one patch (patch_size "
                f"{self.patch_size} x downsample {self.downsample} = {self.min_size} px)"
            )

    @property
    def min_size(self) -> int:
        """The smallest tile side (px) that holds one patch: K * f."""
        return self.patch_size * self.downsample

    def patches_for(self, height: int, width: int) -> int:
        """T, the number of patches sampled from a window of ``height`` x ``width`` px."""
        if self.num_patches is not None:
            return int(self.num_patches)
        return max(1, round(self.patch_density * height * width))

    def as_params(self) -> dict[str, Any]:
        """What shapes the maps (recorded in their provenance): all but ``chunk_elements``."""
        params = asdict(self)
        del params["chunk_elements"]  # memory only: the maps are the same
        return {f"epitome_{k}": v for k, v in params.items()}


# ----------------------------------------------------------------------------------- formulas
def _pad_to(x: torch.Tensor, factor: int, value: float = 0.0) -> torch.Tensor:
    """Pad the last two dims of ``x`` at the bottom / right to multiples of ``factor``."""
    h, w = x.shape[-2:]
    return F.pad(x, (0, -w % factor, 0, -h % factor), value=value)


def downsample_image(
    image: torch.Tensor, valid: torch.Tensor, factor: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The epitome means: block averages of the valid pixels (step 1 of the module docstring).

    Args:
        image: (B, H, W) imagery scaled to [0, 1].
        valid: (H, W) bool, True where the imagery holds data.
        factor: f; H and W need not be multiples of f (the last blocks are partial).

    Returns:
        (mu, mu_valid): (B, ceil(H / f), ceil(W / f)) means (0 where invalid) and their bool
        validity (the block holds a valid pixel).
    """
    weight = _pad_to(valid.to(image.dtype)[None], factor)
    image = _pad_to(torch.where(valid, image, 0.0), factor)  # NaN imagery is invalid too
    total = F.avg_pool2d((image * weight)[None], factor, divisor_override=1)[0]
    count = F.avg_pool2d(weight[None], factor, divisor_override=1)[0]
    mu_valid = count[0] > 0
    return torch.where(mu_valid, total / count.clamp_min(1), 0.0), mu_valid


def downsample_classes(classes: torch.Tensor, factor: int) -> torch.Tensor:
    """NLCD classes on the epitome grid: the class of each f x f block's centre pixel.

    Args:
        classes: (H, W) NLCD indices (0 = nodata).
        factor: f.

    Returns:
        (ceil(H / f), ceil(W / f)) indices; 0 where the centre lies outside the window.
    """
    return _pad_to(classes, factor)[factor // 2 :: factor, factor // 2 :: factor]


def box_sum(x: torch.Tensor, size: int) -> torch.Tensor:
    """Sums of ``x`` (.., h, w) over every size x size window: (.., h - size + 1, w - size + 1)."""
    return F.avg_pool2d(x[None], size, stride=1, divisor_override=1)[0]


def position_validity(mu_valid: torch.Tensor, size: int) -> torch.Tensor:
    """Positions s whose K x K window holds only valid epitome pixels: (h - K + 1, w - K + 1)."""
    count = box_sum(mu_valid.to(torch.float32)[None], size)[0]
    return count > size * size - 0.5


def sample_patches(
    mu_valid: torch.Tensor,
    classes: torch.Tensor,
    size: int,
    count: int,
    generator: torch.Generator,
) -> torch.Tensor:
    """Positions of T patches: distinct, uniform among valid windows with a valid centre class.

    Args:
        mu_valid: (h, w) epitome validity.
        classes: (h, w) NLCD index per epitome pixel (0 = nodata).
        size: K.
        count: T (fewer when fewer positions qualify).
        generator: CPU generator (seeded by the caller).

    Returns:
        (T, 2) int64 top-left corners (s1, s2) on the epitome's device, in drawing order.
    """
    ok = position_validity(mu_valid, size)
    half = size // 2
    ph, pw = ok.shape
    ok &= classes[half : half + ph, half : half + pw] != 0
    candidates = ok.flatten().nonzero()[:, 0].cpu()
    order = torch.randperm(len(candidates), generator=generator)[:count]
    flat = candidates[order].to(mu_valid.device)
    return torch.stack([flat // pw, flat % pw], dim=1)


def extract_patches(epitome: torch.Tensor, positions: torch.Tensor, size: int) -> torch.Tensor:
    """The K x K patches of the epitome at ``positions``: (T, B, K, K)."""
    offsets = torch.arange(size, device=epitome.device)
    rows = (positions[:, 0, None] + offsets)[:, :, None]  # (T, K, 1)
    cols = (positions[:, 1, None] + offsets)[:, None, :]  # (T, 1, K)
    return epitome[:, rows, cols].permute(1, 0, 2, 3)


def log_likelihood(
    patches: torch.Tensor,
    epitome: torch.Tensor,
    sigma2: float,
    positions_ok: torch.Tensor | None = None,
) -> torch.Tensor:
    """Unnormalized log p(s | x^t) = -(||x||^2 - 2 <x, mu_s> + ||mu_s||^2) / (2 sigma^2).

    Args:
        patches: (T, B, K, K) patches x^t.
        epitome: (B, h, w) means mu (or a strip of rows of them).
        sigma2: the variance sigma^2.
        positions_ok: (h - K + 1, w - K + 1) bool; positions not ok get -inf (None: all ok).

    Returns:
        (T, h - K + 1, w - K + 1): one batched correlation (``conv2d``, the patches scaled by
        1 / sigma^2 as kernels) for the cross term, a box sum for ||mu_s||^2; the other terms
        are subtracted in place (the tensor is the largest one the method holds).
    """
    size = patches.shape[-1]
    scale = 1.0 / (2 * sigma2)
    out = F.conv2d(epitome[None], patches * (2 * scale))[0]
    penalty = box_sum(epitome.square().sum(0, keepdim=True), size) * scale
    if positions_ok is not None:
        penalty.masked_fill_(~positions_ok, math.inf)
    out -= penalty
    out -= (patches.square().sum((1, 2, 3)) * scale)[:, None, None]
    return out


def log_posterior(
    patches: torch.Tensor, epitome: torch.Tensor, positions_ok: torch.Tensor, sigma2: float
) -> torch.Tensor:
    """The log posterior log p(s | x^t), normalized over the valid positions s of each patch.

    Args:
        patches: (T, B, K, K).
        epitome: (B, h, w).
        positions_ok: (h - K + 1, w - K + 1) bool, see :func:`position_validity`.
        sigma2: the variance sigma^2.

    Returns:
        (T, h - K + 1, w - K + 1), -inf at invalid positions.
    """
    logp = log_likelihood(patches, epitome, sigma2, positions_ok)
    logp -= logp.flatten(1).logsumexp(1)[:, None, None]
    return logp


def spread(posterior_sums: torch.Tensor, size: int) -> torch.Tensor:
    """E(m, n) = sum_{i,j=0}^{K-1} A(m - i, n - j): a transposed convolution with a ones kernel.

    Args:
        posterior_sums: (C, h - K + 1, w - K + 1) per-class sums A_c(s) of posteriors.
        size: K.

    Returns:
        (C, h, w).
    """
    channels = posterior_sums.shape[0]
    ones = posterior_sums.new_ones(channels, 1, size, size)
    return F.conv_transpose2d(posterior_sums[None], ones, groups=channels)[0]


def _chunks(
    patches: int, positions: tuple[int, int], budget: int
) -> tuple[int, list[tuple[int, int]]]:
    """Patches per chunk and the strips of position rows, within ``budget`` values."""
    rows, cols = positions
    per_chunk = max(1, min(patches, budget // (rows * cols)))
    if per_chunk >= min(patches, MIN_PATCH_CHUNK):
        return per_chunk, [(0, rows)]
    per_chunk = max(1, min(patches, MIN_PATCH_CHUNK))
    step = max(1, budget // (per_chunk * cols))
    return per_chunk, [(r, min(rows, r + step)) for r in range(0, rows, step)]


def embed(
    patches: torch.Tensor,
    patch_classes: torch.Tensor,
    epitome: torch.Tensor,
    positions_ok: torch.Tensor,
    sigma2: float,
    chunk_elements: int = 2**24,
) -> torch.Tensor:
    """E_c(m, n) = sum_t [c^t = c] sum_{i,j} p(s = (m - i, n - j) | x^t), chunked.

    Patches are processed in chunks; when a chunk of :data:`MIN_PATCH_CHUNK` patches times all
    positions exceeds ``chunk_elements``, positions are processed in strips of rows, with a
    first pass over the strips for each patch's normalizer (logsumexp).

    Args:
        patches: (T, B, K, K).
        patch_classes: (T,) int64 NLCD index c^t of each patch (1..16).
        epitome: (B, h, w).
        positions_ok: (h - K + 1, w - K + 1) bool.
        sigma2: the variance sigma^2.
        chunk_elements: most posterior values held at once.

    Returns:
        (17, h, w): E for every NLCD index (zero for classes no patch has).
    """
    size = patches.shape[-1]
    ph, pw = positions_ok.shape
    sums = epitome.new_zeros(NUM_NLCD, ph, pw)
    per_chunk, strips = _chunks(len(patches), (ph, pw), chunk_elements)
    for start in range(0, len(patches), per_chunk):
        x = patches[start : start + per_chunk]
        onehot = F.one_hot(patch_classes[start : start + per_chunk], NUM_NLCD).to(x.dtype).T
        if len(strips) == 1:  # p(s | x^t): a softmax over positions (one exp per value)
            post = torch.softmax(log_likelihood(x, epitome, sigma2, positions_ok).flatten(1), 1)
            sums += (onehot @ post).view(NUM_NLCD, ph, pw)
            continue
        lse = x.new_full((len(x),), -math.inf)
        for r0, r1 in strips:  # pass 1: each patch's normalizer over all strips
            strip = _strip_loglik(x, epitome, positions_ok, sigma2, r0, r1)
            lse = torch.logaddexp(lse, strip.flatten(1).logsumexp(1))
        for r0, r1 in strips:  # pass 2: normalized posteriors, accumulated per class
            post = _strip_loglik(x, epitome, positions_ok, sigma2, r0, r1)
            post = post.sub_(lse[:, None, None]).exp_()
            sums[:, r0:r1] += (onehot @ post.flatten(1)).view(NUM_NLCD, r1 - r0, pw)
    return spread(sums, size)


def _strip_loglik(
    x: torch.Tensor, epitome: torch.Tensor, ok: torch.Tensor, sigma2: float, r0: int, r1: int
) -> torch.Tensor:
    """:func:`log_likelihood` of the position rows r0..r1 (invalid positions -inf)."""
    return log_likelihood(x, epitome[:, r0 : r1 + x.shape[-1] - 1], sigma2, ok[r0:r1])


def class_embedding(
    embedding: torch.Tensor, patch_classes: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """p(m, n | c) (normalized over positions per class) and p(c) of the classes patches have.

    Args:
        embedding: (17, h, w) E from :func:`embed`.
        patch_classes: (T,) NLCD index of each patch.

    Returns:
        (classes, p_mn_c, p_c): the NLCD indices present (C',), (C', h, w) and (C',).
    """
    counts = torch.bincount(patch_classes, minlength=NUM_NLCD)
    classes = counts.nonzero()[:, 0]
    e = embedding[classes]
    p_mn_c = e / e.flatten(1).sum(1).clamp_min(torch.finfo(e.dtype).tiny)[:, None, None]
    p_c = counts[classes].to(e.dtype) / counts.sum()
    return classes, p_mn_c, p_c


def em(
    p_mn_c: torch.Tensor,
    p_c: torch.Tensor,
    p_l_c: torch.Tensor,
    tol: float = 1e-4,
    max_iter: int = 100,
) -> tuple[torch.Tensor, int]:
    """EM for p(l | m, n) (step 5 of the module docstring).

    Args:
        p_mn_c: (C', h, w) p(m, n | c), each class summing to 1 over positions.
        p_c: (C',) p(c).
        p_l_c: (L, C') p(l | c), each column summing to 1 over labels.
        tol: stop when no p(l | m, n) changes by more than this.
        max_iter: iterations at most.

    Returns:
        (p(l | m, n) as (L, h, w), iterations run). Positions no class explains (the M-step
        numerator is 0 for every label: p(m, n | c) = 0 for every c, or underflow) are NaN; the
        caller decides what they get.
    """
    num_labels = p_l_c.shape[0]
    tiny = torch.finfo(p_mn_c.dtype).tiny
    p_l = p_mn_c.new_full((num_labels, *p_mn_c.shape[1:]), 1.0 / num_labels)
    weights = p_c[None, :] * p_l_c  # p(c) p(l | c): (L, C')
    explained = p_mn_c.sum(0) > 0
    change, iterations = math.inf, 0
    while change > tol and iterations < max_iter:
        z = torch.einsum("lmn,cmn->lc", p_l, p_mn_c)  # E-step normalizers, over positions
        w = torch.where(z > 0, weights / z.clamp_min(tiny), 0.0)
        numer = p_l * torch.einsum("lc,cmn->lmn", w, p_mn_c)
        total = numer.sum(0)  # M-step normalizer, over labels
        explained = total > 0
        new = torch.where(explained, numer / total.clamp_min(tiny), 0.0)
        change = float((new - p_l).abs().amax(0)[explained].max()) if explained.any() else 0.0
        p_l, iterations = new, iterations + 1
    if change > tol:
        log.debug("epitome EM: change %.2g > tol after %d iterations", change, iterations)
    return torch.where(explained, p_l, math.nan), iterations


def upsample(
    p: torch.Tensor, valid: torch.Tensor, factor: int, shape: tuple[int, int], mode: str
) -> torch.Tensor:
    """p(l | m, n) (L, h, w) back to a (L, H, W) window, over valid epitome pixels only.

    ``bilinear`` divides the bilinear upsampling of p * valid by that of valid (a normalized
    interpolation: invalid epitome pixels take no part), so each pixel's distribution stays
    normalized; ``nearest`` repeats each epitome pixel f x f times. Pixels whose imagery is
    valid always see their own (valid) epitome pixel.
    """
    if mode == "nearest":
        up = p.repeat_interleave(factor, 1).repeat_interleave(factor, 2)
    else:
        v = valid.to(p.dtype)[None]
        num = F.interpolate((p * v)[None], scale_factor=factor, mode="bilinear")[0]
        den = F.interpolate(v[None], scale_factor=factor, mode="bilinear")[0]
        up = num / den.clamp_min(torch.finfo(p.dtype).tiny)
    return up[:, : shape[0], : shape[1]]


# ------------------------------------------------------------------------------- one window
def epitome_window(
    image: torch.Tensor,
    valid: torch.Tensor,
    nlcd: torch.Tensor,
    cooccurrence: torch.Tensor,
    params: EpitomeParams,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Self-epitomic LSR of one window (every step of the module docstring).

    Args:
        image: (B, H, W) imagery scaled to [0, 1], on the device and in the dtype to compute in.
        valid: (H, W) bool, True where the imagery holds data.
        nlcd: (H, W) int64 NLCD indices (0 = nodata).
        cooccurrence: (L, 17) p(l | c), columns in :data:`lcip.classes.NLCD_CODES` order.
        params: the settings.
        generator: CPU generator for the patch sampling.

    Returns:
        (prob, ok): (L, H, W) p(l | pixel) and (H, W) bool, True where the imagery and the
        NLCD are valid (prob is meaningful only there).

    Raises:
        DataError: if the window is smaller than one patch (K * f px).
    """
    height, width = valid.shape
    f, size = params.downsample, params.patch_size
    if min(height, width) < params.min_size:
        raise DataError(
            f"{width} x {height} px window is smaller than one patch (epitome.patch_size "
            f"{size} x epitome.downsample {f} = {params.min_size} px)"
        )
    ok = valid & (nlcd != 0)
    num_labels = cooccurrence.shape[0]
    if not ok.any():
        return image.new_zeros(num_labels, height, width), ok
    mu, mu_valid = downsample_image(image, valid, f)
    classes_lr = downsample_classes(nlcd, f)
    positions = sample_patches(
        mu_valid, classes_lr, size, params.patches_for(height, width), generator
    )
    half = size // 2
    patch_classes = classes_lr[positions[:, 0] + half, positions[:, 1] + half]
    patches = extract_patches(mu, positions, size)
    e = embed(
        patches,
        patch_classes,
        mu,
        position_validity(mu_valid, size),
        params.sigma2,
        params.chunk_elements,
    )
    classes, p_mn_c, p_c = class_embedding(e.double(), patch_classes)  # EM in float64
    matrix = cooccurrence.double()
    p_l, _ = em(p_mn_c, p_c, matrix[:, classes], params.tol, params.max_iter)
    # Epitome pixels no patch explains: p(l | c) of their own class (uniform for nodata).
    matrix[:, 0] = 1.0 / num_labels
    p_l = torch.where(p_l.isnan(), matrix[:, classes_lr], p_l).to(image.dtype)
    return upsample(p_l, mu_valid, f, (height, width), params.upsample), ok


def tile_windows(height: int, width: int, size: int) -> list[Window]:
    """W x W windows covering a tile; the last row / column is shifted back inside the tile.

    A tile side smaller than W gives windows of that side. Windows overlap only where the tile
    side is not a multiple of W (the later window's values are kept).
    """

    def starts(n: int) -> list[int]:
        return sorted({min(s, max(0, n - size)) for s in range(0, n, size)})

    return [
        Window(c, r, min(size, width), min(size, height))
        for r in starts(height)
        for c in starts(width)
    ]


def window_seed(seed: int, window: Window) -> int:
    """The patch-sampling seed of a window (independent of the order windows run in)."""
    state = np.random.SeedSequence([seed, int(window.row_off), int(window.col_off)])
    return int(state.generate_state(1, np.uint64)[0] >> np.uint64(1))


def cooccurrence_sha256(matrix: npt.ArrayLike) -> str:
    """sha256 of a cooccurrence matrix's float64 values (recorded in the maps' provenance)."""
    return hashlib.sha256(np.ascontiguousarray(matrix, dtype=np.float64).tobytes()).hexdigest()


# --------------------------------------------------------------------------------- one tile
@dataclass(frozen=True)
class EpitomeJob:
    """What :func:`epitome_tile` needs besides the tile.

    Args:
        scheme: the target class scheme (band names, colours).
        cooccurrence: (L, 17) p(l | c).
        params: the algorithm's settings.
        image_layer: imagery layer of the manifest.
        nlcd_layer: NLCD layer (any grid: read onto the tile grid, nearest).
        nlcd_encoding: ``codes`` or ``index`` (see :data:`lcip.priors.nlcd.NLCD_ENCODINGS`).
        zero_is_nodata: all-zero imagery pixels are nodata when the imagery declares none.
        device: torch device to compute on.
        dtype: torch dtype to compute in.
        extra_params: further provenance params (e.g. ``cooccurrence_source``).
    """

    scheme: ClassScheme
    cooccurrence: npt.NDArray[np.float64]
    params: EpitomeParams
    image_layer: str = "naip"
    nlcd_layer: str = "nlcd"
    nlcd_encoding: str = "codes"
    zero_is_nodata: bool = True
    device: str = "cpu"
    dtype: torch.dtype = torch.float32
    extra_params: Mapping[str, Any] | None = None

    def provenance_params(self) -> dict[str, Any]:
        """The maps' provenance params: method, settings, cooccurrence digest, encodings."""
        return {
            "method": "epitome",
            **self.params.as_params(),
            "cooccurrence_sha256": cooccurrence_sha256(self.cooccurrence),
            "scheme": self.scheme.name,
            "nlcd_encoding": self.nlcd_encoding,
            "zero_is_nodata": self.zero_is_nodata,
            **(self.extra_params or {}),
        }


def epitome_windows(
    tile: Tile, job: EpitomeJob
) -> Iterator[tuple[Window, torch.Tensor, torch.Tensor]]:
    """Self-epitomic LSR of a tile, window by window: (window, prob (L, h, w), ok (h, w)).

    Raises:
        DataError: if the tile is smaller than one patch, or a file is missing or unreadable.
    """
    params = job.params
    image_path = tile.layer(job.image_layer)
    grid = Grid.of(image_path)
    if min(grid.shape) < params.min_size:
        raise DataError(
            f"{image_path}: tile {tile.tile_id} is {grid.width} x {grid.height} px, smaller "
            f"than one patch (epitome.patch_size {params.patch_size} x epitome.downsample "
            f"{params.downsample} = {params.min_size} px)"
        )
    matrix = torch.as_tensor(job.cooccurrence, dtype=job.dtype, device=job.device)
    with open_raster(image_path) as src:
        for window in tile_windows(grid.height, grid.width, params.window):
            raw = src.read(window=window)
            valid = valid_imagery(raw, src.nodata, job.zero_is_nodata)
            nlcd = read_nlcd_index(
                tile.layer(job.nlcd_layer), grid.window(window), encoding=job.nlcd_encoding
            )
            image = torch.from_numpy(raw.astype(np.float64) / params.image_scale)
            generator = torch.Generator().manual_seed(window_seed(params.seed, window))
            prob, ok = epitome_window(
                image.to(job.device, job.dtype),
                torch.from_numpy(valid).to(job.device),
                torch.from_numpy(nlcd.astype(np.int64)).to(job.device),
                matrix,
                params,
                generator,
            )
            yield window, prob.float().cpu(), ok.cpu()


def epitome_tile(
    tile: Tile, out_dir: Path, job: EpitomeJob, force: bool = False
) -> dict[str, Path]:
    """Write a tile's ``q_prob`` / ``q_class`` maps (unless up to date), as ``lcip-predict`` does.

    Outputs are Cloud Optimized GeoTIFFs on the tile's grid: ``q_prob`` float32, one band per
    class, NaN = nodata; ``q_class`` uint8, 255 = nodata, with a colour table; tags with the
    params, ``lcip_provenance`` (params + fingerprints of the imagery and NLCD files),
    ``lcip_version``, ``tile_id`` and ``output`` = q. A tile is skipped only when both maps
    are whole, on its grid and record exactly this provenance.

    Args:
        tile: the tile (imagery and NLCD layers).
        out_dir: output folder; files are ``<layer>/<tile_id>.tif``.
        job: scheme, cooccurrence, settings, layers and device.
        force: rewrite even when up to date.

    Returns:
        output layer name -> file.

    Raises:
        NoValidPixelError: no pixel has valid imagery and NLCD (nothing is written; stale
            outputs are removed).
        DataError: the tile is smaller than one patch, or a file is missing or unreadable.
    """
    paths = output_paths(out_dir, tile.tile_id, OUTPUT_LAYERS)
    grid = Grid.of(tile.layer(job.image_layer))
    params = job.provenance_params()
    record = provenance(
        params, {"image": tile.layer(job.image_layer), "nlcd": tile.layer(job.nlcd_layer)}
    )
    if not force and maps_up_to_date(paths, record, grid, job.scheme.num_classes):
        log.info("tile %s: epitome maps up to date, skipped", tile.tile_id)
        return paths
    tags = map_tags(params, record, tile.tile_id, output="q")
    any_valid = False
    try:
        with map_writers(paths, "q", grid, job.scheme, tags) as (prob_dst, class_dst):
            for window, prob, ok in epitome_windows(tile, job):
                any_valid |= bool(ok.any())
                write_maps(prob_dst, class_dst, prob.log(), ok, window)
            if not any_valid:
                raise NoValidPixelError(
                    f"{tile.layer(job.image_layer)}: tile {tile.tile_id} has no pixel with "
                    f"valid imagery and NLCD ({tile.layer(job.nlcd_layer)}); nothing to map"
                )
    except NoValidPixelError:
        for p in paths.values():
            p.unlink(missing_ok=True)
        raise
    return paths


def epitome_manifest(
    manifest: Manifest, out_dir: Path, job: EpitomeJob, force: bool = False
) -> Manifest:
    """Self-epitomic LSR of every tile of a manifest; returns it with ``q_prob`` / ``q_class``.

    A tile with no valid pixel is left out with a warning (its stale maps removed), as
    ``lcip-predict`` does.

    Args:
        manifest: the tiles (imagery and NLCD layers).
        out_dir: output folder.
        job: scheme, cooccurrence, settings, layers and device.
        force: rewrite every tile's maps.

    Returns:
        the manifest restricted to the mapped tiles, with the output layers added.
    """
    if len(manifest) == 0:
        raise DataError(f"{manifest.path or 'manifest'}: no tiles selected")
    manifest.check_files([job.image_layer, job.nlcd_layer])
    outputs: dict[str, dict[str, Path]] = {name: {} for name in OUTPUT_LAYERS}
    with streaming_env():
        for tile in tqdm(manifest.tiles, desc="epitome", unit="tile"):
            try:
                written = epitome_tile(tile, out_dir, job, force)
            except NoValidPixelError as exc:
                log.warning("%s", exc)
                continue
            for name, path in written.items():
                outputs[name][tile.tile_id] = path
    result = manifest.select(tile_ids=list(outputs["q_prob"]))
    for name, paths in outputs.items():
        result = result.with_layer(name, paths)
    return result


def params_from(settings: Mapping[str, Any], seed: int) -> EpitomeParams:
    """:class:`EpitomeParams` from the ``epitome`` config node (keys it does not know ignored)."""
    names: Sequence[str] = [f for f in EpitomeParams.__dataclass_fields__ if f != "seed"]
    return EpitomeParams(**{k: settings[k] for k in names if k in settings}, seed=seed)


__all__ = [
    "OUTPUT_LAYERS",
    "UPSAMPLE_MODES",
    "EpitomeJob",
    "EpitomeParams",
    "NoValidPixelError",
    "box_sum",
    "class_embedding",
    "cooccurrence_sha256",
    "downsample_classes",
    "downsample_image",
    "em",
    "embed",
    "epitome_manifest",
    "epitome_tile",
    "epitome_window",
    "epitome_windows",
    "extract_patches",
    "log_likelihood",
    "log_posterior",
    "params_from",
    "position_validity",
    "sample_patches",
    "spread",
    "tile_windows",
    "upsample",
    "window_seed",
]
