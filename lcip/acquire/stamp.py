"""The settings stamp of an acquired region: rerun nothing while settings and files hold.

Acquisition writes its settings as JSON beside the manifest (``acquire.json``). A later run
with the same settings whose manifest's files all verify (:mod:`lcip.io.verify`) is up to date and
makes no network request.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lcip.errors import DataError
from lcip.io.manifest import Manifest

log = logging.getLogger(__name__)

#: The acquisition settings recorded beside a region's manifest.
SETTINGS_FILE = "acquire.json"


def up_to_date(manifest_path: Path, stamp: Path, settings: Mapping[str, Any]) -> bool:
    """Whether the manifest was written with these settings and its files still verify."""
    if not (stamp.exists() and manifest_path.exists()):
        return False
    try:
        if json.loads(stamp.read_text()) != json.loads(json.dumps(settings)):
            return False
        Manifest.read(manifest_path, verify=True)
    except (OSError, ValueError, DataError) as exc:
        log.info("%s: acquiring again (%s)", manifest_path, str(exc).splitlines()[0][:200])
        return False
    return True


__all__ = ["SETTINGS_FILE", "up_to_date"]
