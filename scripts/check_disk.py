"""Fail fast, in one line, when the disk cannot hold lcip's environment.

``make setup`` runs this before installing torch: PyPI's standard ``torch`` wheel brings its CUDA
libraries, and the environment takes about 6.3 GiB. Without this check a short disk is found only
after minutes of downloading, as a pip ``OSError`` deep in its output.

Usage: ``python scripts/check_disk.py PATH [GIB]`` (exit 0 when PATH's disk has GIB free).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

NEEDED_GIB = 8.0


def main(argv: list[str]) -> int:
    """Check the free space of the disk holding ``argv[0]``; return the exit status."""
    path = Path(argv[0]) if argv else Path(".")
    needed = float(argv[1]) if len(argv) > 1 else NEEDED_GIB
    probe = path.resolve()
    while not probe.exists():  # the venv's folder may not exist yet: ask its nearest parent
        probe = probe.parent
    free = shutil.disk_usage(probe).free / 2**30
    if free < needed:
        print(
            f"make setup: only {free:.1f} GiB free on the disk of {path.resolve()}; installing "
            f"torch with its CUDA libraries needs about {needed:.0f} GiB (free some space, or "
            "set VENV=<path on a larger disk>)",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
