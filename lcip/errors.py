"""Exceptions for errors a user can cause (bad files, bad settings).

Each carries a one-line message that names the file or setting and what is wrong; the CLIs
print that line and exit non-zero instead of showing a traceback.
"""


class LcipError(Exception):
    """Base class for user-facing errors."""


class DataError(LcipError):
    """An input file is missing, unreadable or has invalid contents."""


class ManifestError(DataError):
    """A manifest is malformed or names a missing file."""


class GridMismatchError(DataError):
    """Layers that must share one pixel grid do not."""


class ConfigError(LcipError):
    """A configuration value is invalid (e.g. an unknown loss name)."""


class DownloadError(DataError):
    """A download failed: HTTP error, dropped connection beyond retries, or bad checksum."""
