"""Sphinx configuration of lcip's API reference (``make docs``).

The pages in ``api/`` are built from the docstrings (Google style, read by napoleon) with
autodoc, one page per package, as TorchGeo's ``docs/api``. The build needs no network: no
intersphinx inventories are fetched.
"""

import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS.parent))
sys.path.insert(0, str(DOCS / "_ext"))

import lcip  # noqa: E402

# -- Project information -----------------------------------------------------

project = "lcip"
author = "lcip contributors"
copyright = "lcip contributors"
release = lcip.__version__
version = ".".join(release.split(".")[:2])

# -- General configuration ---------------------------------------------------

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "lcip_autopackage",
]
exclude_patterns = ["_build"]
needs_sphinx = "8.0"
nitpicky = False
# Docstrings quote code values ('logits', "running"): keep their quotes straight.
smartquotes = False

# -- HTML output -------------------------------------------------------------

html_theme = "alabaster"
html_title = f"lcip {release}"
html_static_path: list[str] = []
html_show_sourcelink = False

# -- sphinx.ext.autodoc ------------------------------------------------------

autodoc_default_options = {
    "members": True,
    "show-inheritance": True,
}
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented"
autodoc_preserve_defaults = True

# -- sphinx.ext.napoleon -----------------------------------------------------

napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_ivar = True
