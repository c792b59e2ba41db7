"""The skip markers, defined once: real sample data present, CUDA present.

Under ``LCIP_REQUIRE_REALDATA`` (set by ``.ci/run``) a real-data test never skips: a missing
file then fails the test that reads it, instead of passing silently.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.paths import REALDATA

#: Set by CI (``.ci/run``): the real-data tests must run there.
REQUIRE_REALDATA = "LCIP_REQUIRE_REALDATA"


def needs_realdata(*paths: Path) -> pytest.MarkDecorator:
    """Skip unless every path (files or folders under ``../shared/realdata``) exists.

    Args:
        *paths: what the test reads; none: the real sample data folder itself.
    """
    missing = [p for p in (paths or (REALDATA,)) if not p.exists()]
    skip = bool(missing) and not os.environ.get(REQUIRE_REALDATA)
    reason = f"real sample data not found: {missing[0]}" if missing else "real sample data found"
    return pytest.mark.skipif(skip, reason=reason)


def _cuda() -> bool:
    import torch

    return bool(torch.cuda.is_available())


#: Skip unless torch sees a CUDA device.
needs_cuda = pytest.mark.skipif(not _cuda(), reason="needs a CUDA device")
