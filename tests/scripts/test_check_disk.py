import shutil
import subprocess
import sys
from pathlib import Path

from tests.paths import ROOT

SCRIPT = ROOT / "scripts" / "check_disk.py"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, check=False
    )


def test_a_short_disk_fails_in_one_line_naming_the_path(tmp_path: Path) -> None:
    venv = tmp_path / "not" / "yet" / ".venv"  # folders that do not exist yet
    free = shutil.disk_usage(tmp_path).free / 2**30
    short = _run(str(venv), f"{free + 100:.0f}")
    assert short.returncode == 1
    lines = short.stderr.strip().splitlines()
    assert len(lines) == 1 and str(venv) in lines[0] and "GiB free" in lines[0]
    enough = _run(str(venv), f"{max(free - 1, 0):.0f}")
    assert enough.returncode == 0 and enough.stderr == ""
