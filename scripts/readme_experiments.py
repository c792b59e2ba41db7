"""Write README's "Paper experiments" table from the published results and experiment configs.

Every row of ``lcip/resources/published_results.csv`` (the paper's land cover results) is listed
with its published accuracy / mIoU and the one command that reproduces it: the experiment
config whose ``paper.published`` names the row's id. Rows no config claims are listed as not
reproduced. The table replaces the block between the markers in README.md.

Usage: python scripts/readme_experiments.py [README.md]
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

from lcip.evaluation.experiments import EXPERIMENTS, paper_settings

PUBLISHED_CSV = Path(__file__).resolve().parents[1] / "lcip" / "resources" / "published_results.csv"
START = "<!-- paper-experiments:start (written by scripts/readme_experiments.py) -->"
END = "<!-- paper-experiments:end -->"
FIELDS = ("table", "region", "method", "output", "init", "prior")


def row_id(row: dict[str, str]) -> str:
    """A published row's id: ``table/region/method[/output][/init][/prior]`` (empties left out)."""
    return row.get("id") or "/".join(row[k] for k in FIELDS if row[k])


def published_rows(path: Path = PUBLISHED_CSV) -> list[dict[str, str]]:
    """The rows of the published results CSV (``#`` comment lines skipped)."""
    with open(path, newline="") as f:
        return list(csv.DictReader(line for line in f if not line.startswith("#")))


def claims() -> dict[str, str]:
    """Published row id -> the experiment that reproduces it."""
    found: dict[str, str] = {}
    for path in sorted(EXPERIMENTS.glob("*.yaml")):
        for rid in paper_settings(path.stem).get("published") or []:
            found.setdefault(str(rid), path.stem)
    return found


def command(name: str) -> str:
    """The README command of an experiment."""
    return f"`make experiment EXP={name}`"


def table() -> str:
    """The markdown table, one line per published row."""
    claimed = claims()
    lines = [
        "| Table | Region | Method | Output | Init | Prior | Published acc | Published mIoU "
        "| Command |",
        "|---|---|---|---|---|---|---:|---:|---|",
    ]
    for row in published_rows():
        name = claimed.get(row_id(row))
        how = command(name) if name else "not reproduced (needs a U-Net trained on the whole US)"
        cells = [row[k] or "-" for k in FIELDS] + [row["acc"], row["miou"], how]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def replace_between(text: str, body: str) -> str:
    """``text`` with the block between :data:`START` and :data:`END` replaced by ``body``."""
    if text.count(START) != 1 or text.count(END) != 1:
        raise SystemExit(f"README must hold the markers {START!r} and {END!r} once each")
    head, rest = text.split(START)
    return f"{head}{START}\n{body}\n{END}{rest.split(END)[1]}"


def main() -> None:
    readme = Path(sys.argv[1] if len(sys.argv) > 1 else "README.md")
    readme.write_text(replace_between(readme.read_text(), table()))
    print(f"{readme}: paper experiments table updated")


if __name__ == "__main__":
    main()
