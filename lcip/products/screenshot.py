"""A map page rendered to PNG by headless Chromium (``map.screenshot=true``; README figures).

:func:`render_page` runs Chromium (Debian's ``chromium`` package) headless on a local page,
with no network (background networking, component updates and sync off) and a throw-away
profile, and writes the screenshot atomically.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from lcip.errors import ConfigError, DataError
from lcip.io.atomic import atomic_path

#: Browser executables tried, in this order.
BROWSERS: tuple[str, ...] = ("chromium", "chromium-browser", "google-chrome")
#: Window size of a screenshot (width, height), px.
WINDOW: tuple[int, int] = (1200, 1000)


def find_browser() -> str | None:
    """The first Chromium found on ``PATH``, or None."""
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    return None


def render_page(
    page: Path,
    png: Path,
    *,
    fragment: str = "",
    size: tuple[int, int] = WINDOW,
    browser: str | None = None,
    timeout: float = 120,
) -> Path:
    """Render ``page`` (a local HTML file) to ``png`` with headless Chromium.

    Args:
        page: the HTML file.
        png: the screenshot to write (whole or not at all).
        fragment: appended to the page's URL (e.g. ``#layer=confidence``).
        size: window (width, height) in px.
        browser: the executable; None: :func:`find_browser`.
        timeout: seconds before the browser is given up on.

    Returns:
        ``png``.

    Raises:
        ConfigError: no Chromium is installed (one line: how to install it).
        DataError: the browser failed or wrote no image.
    """
    exe = browser or find_browser()
    if exe is None:
        raise ConfigError(
            "map.screenshot=true needs Chromium on PATH (Debian: apt-get install chromium)"
        )
    with tempfile.TemporaryDirectory(prefix="lcip-chromium-") as profile, atomic_path(png) as tmp:
        out = Path(profile) / "shot.png"
        cmd = [
            exe,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--hide-scrollbars",
            "--force-device-scale-factor=1",
            f"--user-data-dir={profile}",
            f"--screenshot={out}",
            f"--window-size={size[0]},{size[1]}",
            f"{Path(page).resolve().as_uri()}{fragment}",
        ]
        try:
            run = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            raise DataError(f"{page}: {exe} did not render it within {timeout:.0f} s") from None
        if run.returncode != 0 or not out.is_file():
            last = (run.stderr.strip().splitlines() or ["no message"])[-1]
            raise DataError(f"{page}: {exe} wrote no screenshot (exit {run.returncode}: {last})")
        shutil.copyfile(out, tmp)
    return Path(png)


__all__ = ["BROWSERS", "WINDOW", "find_browser", "render_page"]
