"""Class definitions: NLCD codes and the target class schemes lcip maps to.

NLCD is always handled as an *index* 0..16 into :data:`NLCD_CODES` (index 0 = nodata), which
is the column order of every cooccurrence matrix in lcip (and of the paper's matrices).
Target schemes map high-resolution label codes (e.g. Chesapeake ``lc`` 1..6) to class indices
0..C-1; codes not in the mapping become :data:`IGNORE_INDEX`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from lcip.errors import DataError

#: The 17 NLCD codes in lcip's canonical column order (0 = nodata).
NLCD_CODES: tuple[int, ...] = (0, 11, 12, 21, 22, 23, 24, 31, 41, 42, 43, 52, 71, 81, 82, 90, 95)

#: Short NLCD class names, aligned with :data:`NLCD_CODES`.
NLCD_NAMES: tuple[str, ...] = (
    "nodata",
    "open water",
    "perennial ice/snow",
    "developed, open space",
    "developed, low intensity",
    "developed, medium intensity",
    "developed, high intensity",
    "barren land",
    "deciduous forest",
    "evergreen forest",
    "mixed forest",
    "shrub/scrub",
    "grassland/herbaceous",
    "pasture/hay",
    "cultivated crops",
    "woody wetlands",
    "emergent herbaceous wetlands",
)

#: Official NLCD legend colours (RGB), aligned with :data:`NLCD_CODES`.
NLCD_COLORS: tuple[tuple[int, int, int], ...] = (
    (0, 0, 0),
    (70, 107, 159),
    (209, 222, 248),
    (222, 197, 197),
    (217, 146, 130),
    (235, 0, 0),
    (171, 0, 0),
    (179, 172, 159),
    (104, 171, 95),
    (28, 95, 44),
    (181, 197, 143),
    (204, 184, 121),
    (223, 223, 194),
    (220, 217, 57),
    (171, 108, 40),
    (184, 217, 235),
    (108, 159, 184),
)

#: Label value ignored by losses and metrics.
IGNORE_INDEX = 255

_NLCD_LUT = np.full(256, -1, dtype=np.int16)
_NLCD_LUT[list(NLCD_CODES)] = np.arange(len(NLCD_CODES))


def nlcd_to_index(codes: npt.NDArray[Any], source: str = "NLCD raster") -> npt.NDArray[np.uint8]:
    """Map NLCD codes to indices 0..16 into :data:`NLCD_CODES`.

    Args:
        codes: integer array of NLCD codes (0 = nodata).
        source: name of the file the codes came from, used in the error message.

    Returns:
        uint8 array of the same shape with values in 0..16.

    Raises:
        DataError: if any value is not one of the 17 known NLCD codes.
    """
    arr = np.asarray(codes)
    if arr.dtype.kind not in "iu":
        if not np.all(np.equal(np.mod(arr, 1), 0)):
            raise DataError(f"{source}: NLCD codes must be integers, got dtype {arr.dtype}")
        arr = arr.astype(np.int64)
    bad = (arr < 0) | (arr > 255)
    idx = _NLCD_LUT[np.clip(arr, 0, 255)]
    bad |= idx < 0
    if bad.any():
        unknown = sorted({int(v) for v in np.unique(arr[bad])[:10]})
        raise DataError(
            f"{source}: NLCD codes {unknown} are not among the 17 known codes {list(NLCD_CODES)}"
        )
    return idx.astype(np.uint8)


@dataclass(frozen=True)
class ClassScheme:
    """A target class scheme: names, colours and the mapping from label codes to classes.

    Args:
        name: scheme identifier (e.g. ``chesapeake4``).
        classes: class names, index = class id.
        colors: RGB colour per class, for quicklooks and QGIS colour tables.
        label_map: high-resolution label code -> class index. Codes absent from the map are
            ignored (mapped to :data:`IGNORE_INDEX`).
        prior_map: optional override of ``label_map`` used when *forming priors* (EnviroAtlas
            merges shrub into tree for priors but ignores it in evaluation).
    """

    name: str
    classes: tuple[str, ...]
    colors: tuple[tuple[int, int, int], ...]
    label_map: Mapping[int, int]
    prior_map: Mapping[int, int] | None = field(default=None)

    def __post_init__(self) -> None:
        if len(self.classes) != len(self.colors):
            raise ValueError(
                f"class scheme {self.name}: {len(self.classes)} classes but "
                f"{len(self.colors)} colours"
            )
        for mapping in (self.label_map, self.prior_map or {}):
            for code, cls in mapping.items():
                if not 0 <= cls < len(self.classes):
                    raise ValueError(
                        f"class scheme {self.name}: code {code} maps to class "
                        f"{cls}, outside 0..{len(self.classes) - 1}"
                    )

    @property
    def num_classes(self) -> int:
        """Number of target classes."""
        return len(self.classes)

    def _lut(self, mapping: Mapping[int, int]) -> npt.NDArray[np.uint8]:
        lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
        for code, cls in mapping.items():
            lut[int(code)] = cls
        return lut

    def map_labels(
        self, labels: npt.NDArray[Any], *, for_prior: bool = False
    ) -> npt.NDArray[np.uint8]:
        """Map raw label codes to class indices (unknown codes -> :data:`IGNORE_INDEX`).

        Args:
            labels: integer array of raw label codes (0..255).
            for_prior: use ``prior_map`` (if set) instead of ``label_map``.

        Returns:
            uint8 array of class indices or :data:`IGNORE_INDEX`.
        """
        mapping = self.prior_map if (for_prior and self.prior_map is not None) else self.label_map
        arr = np.asarray(labels)
        out = self._lut(mapping)[np.clip(arr, 0, 255).astype(np.intp)]
        out[(arr < 0) | (arr > 255)] = IGNORE_INDEX
        return out

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> ClassScheme:
        """Build a scheme from a plain mapping (e.g. a Hydra config node).

        Args:
            cfg: mapping with keys ``name``, ``classes``, ``colors``, ``label_map`` and optional
                ``prior_map``; map keys may be strings (YAML) and are converted to int.

        Returns:
            the class scheme.
        """
        prior_map = cfg.get("prior_map")
        return cls(
            name=str(cfg["name"]),
            classes=tuple(str(c) for c in cfg["classes"]),
            colors=tuple((int(c[0]), int(c[1]), int(c[2])) for c in cfg["colors"]),
            label_map={int(k): int(v) for k, v in dict(cfg["label_map"]).items()},
            prior_map=None
            if prior_map is None
            else {int(k): int(v) for k, v in dict(prior_map).items()},
        )


#: Chesapeake Land Cover, 4 classes: barren (4) and both impervious codes (5, 6) merged.
CHESAPEAKE4 = ClassScheme(
    name="chesapeake4",
    classes=("water", "tree canopy", "low vegetation", "impervious"),
    colors=((0, 0, 255), (0, 128, 0), (128, 255, 128), (128, 96, 96)),
    label_map={1: 0, 2: 1, 3: 2, 4: 3, 5: 3, 6: 3},
)

#: EPA EnviroAtlas, 5 classes. Labels: 1 water, 2 impervious, 3 barren, 4 tree, 5 shrub,
#: 6 grass, 7 agriculture, 8 orchard, 9 woody wetland, 10 emergent wetland. Shrub is merged
#: into tree when forming priors and ignored in evaluation.
ENVIROATLAS5 = ClassScheme(
    name="enviroatlas5",
    classes=("water", "impervious", "barren", "tree", "grass"),
    colors=((0, 0, 255), (128, 96, 96), (210, 180, 140), (0, 128, 0), (128, 255, 128)),
    label_map={1: 0, 2: 1, 3: 2, 4: 3, 6: 4, 7: 4, 8: 3, 9: 3, 10: 4},
    prior_map={1: 0, 2: 1, 3: 2, 4: 3, 5: 3, 6: 4, 7: 4, 8: 3, 9: 3, 10: 4},
)

#: EPA EnviroAtlas, 5 classes, on the *raw* EnviroAtlas land cover codes (as TorchGeo's
#: EnviroAtlas files hold them): 10 water, 20 impervious, 30 barren, 40 tree, 52 shrub,
#: 70 grass, 80 agriculture, 82 orchard, 91 woody wetland, 92 emergent wetland, 0
#: unclassified. The same classes as :data:`ENVIROATLAS5`; shrub is merged into tree when
#: forming priors and ignored in evaluation.
ENVIROATLAS5_RAW = ClassScheme(
    name="enviroatlas5_raw",
    classes=ENVIROATLAS5.classes,
    colors=ENVIROATLAS5.colors,
    label_map={10: 0, 20: 1, 30: 2, 40: 3, 70: 4, 80: 4, 82: 3, 91: 3, 92: 4},
    prior_map={10: 0, 20: 1, 30: 2, 40: 3, 52: 3, 70: 4, 80: 4, 82: 3, 91: 3, 92: 4},
)

SCHEMES: dict[str, ClassScheme] = {s.name: s for s in (CHESAPEAKE4, ENVIROATLAS5, ENVIROATLAS5_RAW)}


def get_scheme(name_or_cfg: str | Mapping[str, Any] | ClassScheme) -> ClassScheme:
    """Look up a built-in class scheme by name, or build one from a config mapping.

    Args:
        name_or_cfg: a scheme name (``chesapeake4``, ``enviroatlas5``,
            ``enviroatlas5_raw``), a mapping accepted by
            :meth:`ClassScheme.from_config`, or a scheme (returned as is).

    Returns:
        the class scheme.

    Raises:
        ValueError: for an unknown scheme name.
    """
    if isinstance(name_or_cfg, ClassScheme):
        return name_or_cfg
    if isinstance(name_or_cfg, str):
        if name_or_cfg not in SCHEMES:
            raise ValueError(f"unknown class scheme {name_or_cfg!r}; known: {sorted(SCHEMES)}")
        return SCHEMES[name_or_cfg]
    return ClassScheme.from_config(name_or_cfg)


def colormap(colors: Sequence[tuple[int, int, int]]) -> dict[int, tuple[int, int, int, int]]:
    """A rasterio colour table (index -> RGBA) for a class raster.

    Args:
        colors: RGB colour per class index.

    Returns:
        mapping usable with ``rasterio`` ``write_colormap``.
    """
    return {i: (*c, 255) for i, c in enumerate(colors)}
