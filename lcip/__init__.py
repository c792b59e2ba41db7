"""lcip: 1 m land cover from coarse public map data by implicit posterior learning."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("lcip")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0"

__all__ = ["__version__"]
