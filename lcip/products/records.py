"""What made each map product, and the check that lets a rerun skip it.

Rasters (COGs and VRTs) carry their record in the ``lcip_provenance`` tag, as every lcip
raster does (:mod:`lcip.io.provenance`); tables and pages carry it in a sidecar
``<file>.provenance.json`` written after the file. A record is the canonical JSON
:func:`lcip.io.provenance.provenance` makes (``params``, ``inputs`` fingerprints,
``lcip_version``), built here with each input file fingerprinted once per run: the same
prediction COG feeds several products.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lcip
from lcip.io.atomic import write_text
from lcip.io.provenance import fingerprint


class Recorder:
    """Builds provenance records, fingerprinting each input file once.

    Args:
        base: parameters every record shares (e.g. the scheme, the lcip-map settings).
    """

    def __init__(self, base: Mapping[str, Any] | None = None) -> None:
        self.base = dict(base or {})
        self._prints: dict[Path, str] = {}

    def fingerprint(self, path: Path) -> str:
        """The fingerprint of a file (:func:`lcip.io.provenance.fingerprint`), cached per path."""
        key = Path(path).resolve()
        if key not in self._prints:
            self._prints[key] = fingerprint(key)
        return self._prints[key]

    def forget(self, path: Path) -> None:
        """Drop a file's cached fingerprint (after the file was rewritten)."""
        self._prints.pop(Path(path).resolve(), None)

    def record(self, params: Mapping[str, Any], inputs: Mapping[str, Path]) -> str:
        """The canonical provenance JSON of a product.

        Args:
            params: the product's own settings (merged over :attr:`base`).
            inputs: input name -> file.

        Returns:
            JSON with sorted keys, equal to what :func:`lcip.io.provenance.provenance` makes.
        """
        prints = {name: self.fingerprint(p) for name, p in inputs.items()}
        body = {
            "params": {**self.base, **params},
            "inputs": prints,
            "lcip_version": lcip.__version__,
        }
        return json.dumps(body, sort_keys=True, default=str)


def sidecar(path: Path) -> Path:
    """The provenance sidecar of a non-raster product: ``<file>.provenance.json``."""
    return path.with_name(f"{path.name}.provenance.json")


def sidecar_up_to_date(path: Path, record: str) -> bool:
    """Whether a product file exists and its sidecar records exactly ``record``."""
    side = sidecar(path)
    if not (path.is_file() and side.is_file()):
        return False
    try:
        return bool(json.loads(side.read_text()) == json.loads(record))
    except (OSError, json.JSONDecodeError):
        return False


def write_sidecar(path: Path, record: str) -> Path:
    """Write a product's sidecar (atomically, indented), after the product itself."""
    return write_text(sidecar(path), json.dumps(json.loads(record), indent=1, sort_keys=True))


__all__ = ["Recorder", "sidecar", "sidecar_up_to_date", "write_sidecar"]
