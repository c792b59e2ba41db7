"""Array type aliases and the canvas window type shared by the generator's modules."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["F32", "F64", "I32", "I64", "U8", "Bool", "Win"]

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
U8 = npt.NDArray[np.uint8]
I32 = npt.NDArray[np.int32]
I64 = npt.NDArray[np.int64]
Bool = npt.NDArray[np.bool_]

#: A window of the canvas: (rows, columns).
Win = tuple[slice, slice]
