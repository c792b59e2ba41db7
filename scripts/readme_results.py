"""Copy the demo's results table (``outputs/demo/results.md``) into README.md.

``make demo`` runs this after ``lcip-demo``: the README's results block is replaced by the
table and the machine/time line the run wrote, so the README states only what a run showed.

Usage: python scripts/readme_results.py [results.md] [README.md]
"""

from __future__ import annotations

import sys
from pathlib import Path

START = "<!-- demo-results:start (written by `make demo`: scripts/readme_results.py) -->"
END = "<!-- demo-results:end -->"


def replace_block(readme: str, results: str) -> str:
    """The README text with the block between the markers replaced by ``results``.

    Args:
        readme: README text holding both markers once.
        results: the demo's results markdown (its first heading line is dropped).

    Returns:
        the new README text.
    """
    if readme.count(START) != 1 or readme.count(END) != 1:
        raise SystemExit(f"README must hold the markers {START!r} and {END!r} once each")
    body = "\n".join(ln for ln in results.strip().splitlines() if not ln.startswith("# "))
    head, rest = readme.split(START)
    _, tail = rest.split(END)
    return f"{head}{START}\n{body.strip()}\n{END}{tail}"


def main() -> None:
    results = Path(sys.argv[1] if len(sys.argv) > 1 else "outputs/demo/results.md")
    readme = Path(sys.argv[2] if len(sys.argv) > 2 else "README.md")
    readme.write_text(replace_block(readme.read_text(), results.read_text()))
    print(f"{readme}: results block updated from {results}")


if __name__ == "__main__":
    main()
