"""The API reference (``docs/``, ``make docs``) builds without a warning and documents lcip.

One Sphinx build (HTML, ``-W --keep-going``, as ``make docs``) into a temporary folder, in a
subprocess so that Sphinx's global state stays out of the test process; the tests then read
the pages it wrote.
"""

import html
import importlib
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import pytest

import lcip
from lcip.losses import QRLoss
from tests.paths import ROOT

DOCS = ROOT / "docs"
#: Subpackages with no API page: the console scripts (documented by ``--help`` and the README).
NO_PAGE = {"cli"}
#: An object's entry: its signature line (``<dt id=...>``) and the start of its description.
ENTRY = r'<dt class="sig sig-object py" id="{}">(.*?)</dt>\s*<dd>(.*?)</dd>'


def _packages() -> list[str]:
    return sorted(i.name for i in pkgutil.iter_modules(lcip.__path__) if i.ispkg)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The HTML folder of one warning-free build of ``docs/``."""
    out = tmp_path_factory.mktemp("docs")
    command = [sys.executable, "-m", "sphinx", "-b", "html", "-W", "--keep-going", "-E", "-q"]
    command += ["-d", str(out / "doctrees"), str(DOCS), str(out / "html")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr
    return out / "html"


def _entry(built: Path, page: str, name: str) -> tuple[str, str]:
    """The signature and description text of ``name``'s entry on ``api/<page>.html``."""
    source = (built / "api" / f"{page}.html").read_text()
    match = re.search(ENTRY.format(re.escape(name)), source, re.DOTALL)
    assert match, f"{name} is not documented on api/{page}.html"
    text = [html.unescape(re.sub(r"<[^>]+>|¶", "", part)) for part in match.groups()]
    return text[0].strip(), " ".join(text[1].split())


def test_every_package_has_a_page_in_the_index() -> None:
    pages = {p.stem for p in (DOCS / "api").glob("*.rst")}
    assert set(_packages()) - NO_PAGE <= pages
    assert {"classes", "config", "errors"} <= pages
    index = (DOCS / "index.rst").read_text()
    assert all(f"api/{page}\n" in index for page in pages)


def test_every_export_is_documented_once_under_its_public_name(built: Path) -> None:
    for package in sorted(set(_packages()) - NO_PAGE):
        module = importlib.import_module(f"lcip.{package}")
        page = (built / "api" / f"{package}.html").read_text()
        ids = re.findall(r'id="((?:module-)?lcip\.[\w.]+)"', page)
        assert len(ids) == len(set(ids)), f"lcip.{package}: an object is documented twice"
        if hasattr(module, "__all__"):
            expected = {f"lcip.{package}.{name}" for name in module.__all__}
        else:  # documented module by module
            modules = [m.name for m in pkgutil.iter_modules(module.__path__)]
            expected = {f"module-lcip.{package}.{m}" for m in modules if not m.startswith("_")}
        assert expected <= set(ids), f"lcip.{package}: undocumented {expected - set(ids)}"


def test_entries_show_docstrings_and_type_hints(built: Path) -> None:
    signature, text = _entry(built, "losses", "lcip.losses.QRLoss")
    assert signature.startswith("class lcip.losses.QRLoss(")
    summary = QRLoss.__doc__.splitlines()[0] if QRLoss.__doc__ else ""
    assert summary and summary.replace("``", "") in text
    assert "Parameters:" in text  # napoleon turned the Args section into fields
    signature, text = _entry(built, "data", "lcip.data.TileDataModule")
    assert "LightningDataModule" in text  # its base, from show-inheritance
    _, text = _entry(built, "io", "lcip.io.Grid")
    assert text
    _, text = _entry(built, "priors", "lcip.priors.build_prior")
    assert "request (PriorRequest)" in text  # the parameter's type, from its annotation
    # A constant re-exported by its package shows the #: comment of the module defining it.
    _, text = _entry(built, "losses", "lcip.losses.LOSSES")
    assert "config name" in text
    # napoleon leaves constants' comments alone (no "Type:" made of the text before a colon).
    _, text = _entry(built, "classes", "lcip.classes.CHESAPEAKE4")
    assert text.startswith("Chesapeake Land Cover, 4 classes: barren") and "Type:" not in text
    _, text = _entry(built, "errors", "lcip.errors.ConfigError")
    assert text
