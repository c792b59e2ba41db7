"""Fused prior: the NLCD prior plus blurred OSM / building-footprint layers (DESIGN §2.2).

For each vector layer k (buildings, roads, waterways, waterbodies; see
:data:`lcip.priors.vectors.LAYER_NAMES`) with binary raster V_k, box radius r_k and weight
w_k, the fused prior at pixel i is

.. code-block:: text

    B_k    = box mean of V_k over the (2 r_k + 1) x (2 r_k + 1) window around i
             (edges: nearest-pixel padding; r_k = 0 means no blur)
    f_i(l) = p_i(l) + sum_{k: class(k) = l} w_k B_k(i)
    fused_i(l) = f_i(l) / sum_l' f_i(l')

where class(buildings) = class(roads) = impervious and class(waterways) =
class(waterbodies) = water. The reference uses radius 4 for roads and buildings and 2 for
water, with unit weights (the defaults here). The prior config gives the radii in metres
(``prior.radius_m``), converted to pixels of each tile's grid (:func:`radius_in_pixels`), so
a 0.6 m tile gets the same physical box as a 1 m tile. Pixels that are not valid (the prior is zero
or NaN over all classes, or outside a given ``valid`` mask) are 0 in every band.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.ndimage import uniform_filter

from lcip.classes import ClassScheme
from lcip.errors import ConfigError
from lcip.priors.vectors import LAYER_NAMES

#: Default box radius (px) per vector layer (reference: 4 for roads/buildings, 2 for water).
DEFAULT_RADIUS: Mapping[str, int] = {"buildings": 4, "roads": 4, "waterways": 2, "waterbodies": 2}

#: Default box radius in metres per vector layer (the reference's pixels at 1 m).
DEFAULT_RADIUS_M: Mapping[str, float] = {name: float(r) for name, r in DEFAULT_RADIUS.items()}

#: Default weight per vector layer.
DEFAULT_WEIGHTS: Mapping[str, float] = {name: 1.0 for name in LAYER_NAMES}

#: Which target class each layer adds mass to.
LAYER_CLASS: Mapping[str, str] = {
    "buildings": "impervious",
    "roads": "impervious",
    "waterways": "water",
    "waterbodies": "water",
}


def fusion_classes(scheme: ClassScheme) -> tuple[int, int]:
    """The (water, impervious) class indices of a scheme, found by class name.

    Names are matched case-insensitively; a name that *starts with* ``water`` /
    ``impervious`` (e.g. ``"impervious surfaces"``) is accepted when there is no exact match.

    Args:
        scheme: the target class scheme.

    Returns:
        (water_class, impervious_class).

    Raises:
        ConfigError: if the scheme has no water or no impervious class.
    """
    names = [c.strip().lower() for c in scheme.classes]

    def find(target: str) -> int:
        if target in names:
            return names.index(target)
        candidates = [i for i, n in enumerate(names) if n.startswith(target)]
        if len(candidates) == 1:
            return candidates[0]
        raise ConfigError(
            f"class scheme {scheme.name!r} has no {target!r} class (classes: "
            f"{list(scheme.classes)}); the fused prior adds vector layers to the water and "
            f"impervious classes"
        )

    return find("water"), find("impervious")


def _per_layer(
    values: Mapping[str, Any] | None, default: Mapping[str, Any], what: str
) -> dict[str, Any]:
    out = dict(default)
    if values is not None:
        unknown = set(values) - set(LAYER_NAMES)
        if unknown:
            raise ConfigError(
                f"fused prior {what}: unknown layer(s) {sorted(unknown)}; "
                f"layers are {list(LAYER_NAMES)}"
            )
        out.update(values)
    return out


def radius_in_pixels(radius_m: Mapping[str, float] | None, resolution_m: float) -> dict[str, int]:
    """Box radii in pixels of a grid: ``round(radius_m / resolution_m)`` per layer.

    Args:
        radius_m: radius in metres per layer name; missing names take
            :data:`DEFAULT_RADIUS_M` (4, 4, 2, 2 m).
        resolution_m: the grid's pixel size in metres.

    Returns:
        the radius in pixels of every layer (4 m is 4 px at 1 m, 7 px at 0.6 m).

    Raises:
        ConfigError: for unknown layer names or negative radii.
    """
    radii = _per_layer(radius_m, DEFAULT_RADIUS_M, "radius_m")
    for name, r in radii.items():
        if not (np.isfinite(r) and r >= 0):
            raise ConfigError(f"fused prior radius_m[{name!r}]={r} must be finite, >= 0")
    return {name: round(float(r) / resolution_m) for name, r in radii.items()}


def fuse_prior(
    prior: npt.NDArray[np.floating[Any]],
    layers: npt.NDArray[Any],
    *,
    water_class: int,
    impervious_class: int,
    radius: Mapping[str, int] | None = None,
    weights: Mapping[str, float] | None = None,
    valid: npt.NDArray[np.bool_] | None = None,
    halo: int = 0,
) -> npt.NDArray[np.float32]:
    """Fuse a prior with the four binary vector layers (formula in the module docstring).

    Args:
        prior: (C, H, W) prior, summing to 1 over classes where valid (0 or NaN where
            invalid).
        layers: (4, H + 2 halo, W + 2 halo) binary layers in
            :data:`~lcip.priors.vectors.LAYER_NAMES` order (buildings, roads, waterways,
            waterbodies).
        water_class: index of the water class (see :func:`fusion_classes`).
        impervious_class: index of the impervious class.
        radius: box radius (px) per layer name; missing names take
            :data:`DEFAULT_RADIUS` (4, 4, 2, 2).
        weights: weight per layer name; missing names take 1.0.
        valid: optional (H, W) mask of valid pixels; by default, pixels where the prior has
            any mass. Invalid pixels are 0 in the output.
        halo: extra pixels on each side of ``layers`` (rasterized on ``grid.expand(halo)``),
            so that the box means near the tile edge see the features beyond it; cropped away.

    Returns:
        (C, H, W) float32 fused prior, summing to 1 over classes on valid pixels.

    Raises:
        ValueError: if shapes or class indices do not fit.
        ConfigError: for unknown layer names or negative radii / weights.
    """
    prior = np.asarray(prior)
    layers = np.asarray(layers)
    if prior.ndim != 3:
        raise ValueError(f"prior must be (C, H, W), got shape {prior.shape}")
    num_classes, height, width = prior.shape
    expected = (len(LAYER_NAMES), height + 2 * halo, width + 2 * halo)
    if halo < 0 or layers.shape != expected:
        raise ValueError(
            f"vector layers must have shape {expected} for a prior of shape {prior.shape} and "
            f"halo {halo}, got {layers.shape}"
        )
    for name, idx in (("water_class", water_class), ("impervious_class", impervious_class)):
        if not 0 <= idx < num_classes:
            raise ValueError(f"{name}={idx} is outside 0..{num_classes - 1}")
    radii = _per_layer(radius, DEFAULT_RADIUS, "radius")
    wts = _per_layer(weights, DEFAULT_WEIGHTS, "weights")
    for name in LAYER_NAMES:
        if int(radii[name]) != radii[name] or radii[name] < 0:
            raise ConfigError(f"fused prior radius[{name!r}]={radii[name]} must be an int >= 0")
        if not np.isfinite(wts[name]) or wts[name] < 0:
            raise ConfigError(f"fused prior weights[{name!r}]={wts[name]} must be finite, >= 0")
    class_of = {"water": water_class, "impervious": impervious_class}

    out = prior.astype(np.float32, copy=True)
    np.nan_to_num(out, copy=False, nan=0.0, posinf=0.0, neginf=0.0)  # NaN nodata -> invalid
    if valid is None:
        valid = out.sum(axis=0) > 0
    else:
        valid = np.asarray(valid, dtype=bool)
        if valid.shape != (height, width):
            raise ValueError(f"valid mask has shape {valid.shape}, expected {(height, width)}")

    # The box mean is linear, so layers that share a target class and a radius are summed
    # (weighted) first and blurred once.
    groups: dict[tuple[int, int], npt.NDArray[np.float32]] = {}
    for k, name in enumerate(LAYER_NAMES):
        if wts[name] == 0:
            continue
        key = (class_of[LAYER_CLASS[name]], int(radii[name]))
        binary = layers[k] != 0
        if key in groups:
            groups[key] += np.float32(wts[name]) * binary
        else:
            groups[key] = np.multiply(binary, np.float32(wts[name]), dtype=np.float32)
    for (cls, r), acc in groups.items():
        if r > 0:
            uniform_filter(acc, size=2 * r + 1, output=acc, mode="nearest")
        out[cls] += acc[halo : halo + height, halo : halo + width]

    total = out.sum(axis=0)
    ok = valid & (total > 0)
    # multiply by 1 / total (0 where invalid): one pass that also zeroes invalid pixels
    scale = np.divide(np.float32(1.0), total, out=np.zeros_like(total), where=ok)
    out *= scale[None]
    return out
