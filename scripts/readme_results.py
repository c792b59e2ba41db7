"""Copy a results table written by ``lcip-demo`` into a markdown file's results block.

``make demo`` runs this after ``lcip-demo``: the README's results block is replaced by the
table and the machine/time line the run wrote, so the README states only what a run showed.
``make acceptance`` does the same for the real-data acceptance table in BENCHMARKS.md (block
``acceptance``).

Usage: python scripts/readme_results.py [results.md] [README.md] [block name, default demo]
"""

from __future__ import annotations

import sys
from pathlib import Path


def markers(block: str = "demo") -> tuple[str, str]:
    """The start and end markers of a results block (``make <block>`` writes it)."""
    start = f"<!-- {block}-results:start (written by `make {block}`: scripts/readme_results.py) -->"
    return start, f"<!-- {block}-results:end -->"


START, END = markers()


def replace_block(readme: str, results: str, block: str = "demo") -> str:
    """The README text with the block between the markers replaced by ``results``.

    Args:
        readme: README text holding both markers once.
        results: the demo's results markdown (its first heading line is dropped).
        block: the block's name (see :func:`markers`).

    Returns:
        the new README text.
    """
    start, end = markers(block)
    if readme.count(start) != 1 or readme.count(end) != 1:
        raise SystemExit(f"the file must hold the markers {start!r} and {end!r} once each")
    body = "\n".join(ln for ln in results.strip().splitlines() if not ln.startswith("# "))
    head, rest = readme.split(start)
    _, tail = rest.split(end)
    return f"{head}{start}\n{body.strip()}\n{end}{tail}"


def main() -> None:
    results = Path(sys.argv[1] if len(sys.argv) > 1 else "outputs/demo/results.md")
    readme = Path(sys.argv[2] if len(sys.argv) > 2 else "README.md")
    block = sys.argv[3] if len(sys.argv) > 3 else "demo"
    readme.write_text(replace_block(readme.read_text(), results.read_text(), block))
    print(f"{readme}: results block updated from {results}")


if __name__ == "__main__":
    main()
