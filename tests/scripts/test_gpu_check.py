"""The GPU check script runs end to end in its tiny CPU mode and writes a well-formed table."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.paths import ROOT

MEASURES = (
    "model-only step",
    "full step",
    "model-only / full",
    "host-to-device transfer",
    "host-to-device share",
    "loader alone",
    "prediction, whole tile",
    "network forward passes alone",
    "self-epitomic LSR",
)


def test_gpu_check_smoke_run_writes_the_table(tmp_path: Path) -> None:
    out = tmp_path / "gpu_check.md"
    env = {**os.environ, "GPU_CHECK_SMOKE": "1", "PYTHON": sys.executable}
    run = subprocess.run(
        [str(ROOT / "scripts" / "gpu_check.sh"), str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    text = out.read_text()
    assert text.startswith("GPU check (`scripts/gpu_check.sh`, tiny CPU smoke run): no GPU")
    rows = [line for line in text.splitlines() if line.startswith("|")]
    assert rows[0] == "| measure | value | setting |" and rows[1] == "| --- | ---: | --- |"
    body = rows[2:]
    assert [next(m for m in MEASURES if r.startswith(f"| {m}")) for r in body] == list(MEASURES)
    for row in body:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert len(cells) == 3, row
        assert re.fullmatch(r"[\d,]+(\.\d+)?( %)?", cells[1]), row  # a figure, not an error
    share = float(body[4].split("|")[2].strip().rstrip(" %"))
    assert 0 <= share <= 100
    assert text in run.stdout  # printed as well
