"""A built wheel carries its configs: the console scripts run from it, outside the repository.

The wheel is built from a copy of the source tree (so no build folder of the checkout can leak
into it) and installed with ``pip install --no-deps --target`` into an empty folder that comes
first on ``PYTHONPATH``: lcip is then imported from the wheel's files, its dependencies from
this environment. The scripts run from a folder outside the repository.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from tests.paths import ROOT

_SKIP = (".git", ".venv", "outputs", "build", "*.egg-info", "__pycache__", ".*_cache")


def _run(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False
    )


def test_wheel_installs_configs_and_runs_console_scripts(tmp_path: Path) -> None:
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, symlinks=True, ignore=shutil.ignore_patterns(*_SKIP))
    wheels = tmp_path / "wheels"
    env = {k: v for k, v in os.environ.items() if k not in ("LCIP_CONFIG_DIR", "PYTHONPATH")}
    built = _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(wheels),
            str(src),
        ],
        tmp_path,
        env,
    )
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = wheels.glob("lcip-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
    shipped = {p.relative_to(ROOT).as_posix() for p in (ROOT / "lcip" / "conf").rglob("*.yaml")}
    assert shipped and shipped <= names  # every config, the nested launcher group included
    assert "lcip/resources/cooccurrence/chesapeake4.csv" in names

    site = tmp_path / "site"
    installed = _run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--target",
            str(site),
            str(wheel),
        ],
        tmp_path,
        env,
    )
    assert installed.returncode == 0, installed.stderr[-2000:]
    env["PYTHONPATH"] = str(site)
    work = tmp_path / "elsewhere"
    work.mkdir()
    where = _run(
        [sys.executable, "-c", "import lcip.config as c; print(c.__file__); print(c.CONFIG_DIR)"],
        work,
        env,
    )
    module, config_dir = where.stdout.split()
    assert Path(module).is_relative_to(site) and Path(config_dir) == site / "lcip" / "conf"

    region = _run(
        [str(site / "bin" / "lcip-region"), "region=tiny", f"paths.root={work / 'out'}"], work, env
    )
    assert region.returncode == 0, region.stderr[-2000:]
    assert (work / "out" / "regions" / "tiny" / "manifest.csv").is_file()
    demo = _run([str(site / "bin" / "lcip-demo"), "--help"], work, env)
    assert demo.returncode == 0 and "lcip-demo" in demo.stdout + demo.stderr, demo.stderr[-2000:]
