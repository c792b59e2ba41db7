"""Resumable, verified HTTP downloads with the standard library.

One loop, :func:`stream_into`, moves bytes: it asks for a byte range, appends what arrives to an
open file, and after a dropped connection asks again from where it stopped. :func:`download`
(whole files, ``<dest>.part`` kept between runs), :func:`read_range` (a few bytes into memory)
and :mod:`lcip.acquire.remotezip` (members of a remote zip) are built on it.
"""

from __future__ import annotations

import hashlib
import http.client
import io
import os
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

from tqdm.auto import tqdm

from lcip.errors import DownloadError

#: Bytes read from the network (and from disk when hashing) at a time.
CHUNK = 1 << 20
#: Seconds before the first retry; doubled for each further one (capped at 30 s).
_BACKOFF = 1.0
#: HTTP statuses worth retrying: rate limiting and temporary server trouble.
_RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
#: Failures after which a request is tried again (a dropped or timed-out connection).
_TRANSIENT = (http.client.HTTPException, ConnectionError, TimeoutError, urllib.error.URLError)
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")

T = TypeVar("T")


class RangeNotSupportedError(DownloadError):
    """The server answered a byte-range request with the whole file (status 200)."""


@dataclass(frozen=True)
class RemoteInfo:
    """What a server says about a file.

    Attributes:
        url: the address asked about.
        size: length in bytes, ``None`` when the server does not say.
        accepts_ranges: whether the server answers ``Range`` requests with 206 Partial Content.
    """

    url: str
    size: int | None
    accepts_ranges: bool


def _open(
    url: str, start: int = 0, end: int | None = None, *, timeout: float, method: str = "GET"
) -> Any:
    """Send one request for bytes ``[start, end)`` (no ``Range`` header for the whole file)."""
    request = urllib.request.Request(url, method=method)
    if start or end is not None:
        request.add_header("Range", f"bytes={start}-{'' if end is None else end - 1}")
    try:
        return urllib.request.urlopen(request, timeout=timeout)
    except ValueError as err:  # unknown scheme, malformed address
        raise DownloadError(f"{url}: invalid URL ({err})") from err


def _with_retries(url: str, retries: int, attempt: Callable[[], T]) -> T:
    """Call ``attempt`` until it succeeds, retrying transient failures with backoff.

    HTTP errors other than temporary ones (e.g. 404) and exhausted retries become one-line
    :class:`~lcip.errors.DownloadError` messages naming ``url``.
    """
    for i in range(retries + 1):
        try:
            return attempt()
        except urllib.error.HTTPError as err:
            if err.code not in _RETRY_STATUSES or i == retries:
                raise DownloadError(f"{url}: HTTP {err.code} {err.reason}") from err
        except _TRANSIENT as err:
            if i == retries:
                reason = err.reason if isinstance(err, urllib.error.URLError) else err
                raise DownloadError(
                    f"{url}: transfer failed after {retries + 1} attempts ({reason!r})"
                ) from err
        time.sleep(min(_BACKOFF * 2**i, 30.0))
    raise AssertionError("unreachable")


def _content_range(url: str, response: Any) -> tuple[int, int | None]:
    """First byte and total length from a 206 response's ``Content-Range`` header."""
    match = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", "").strip())
    if match is None:
        raise DownloadError(f"{url}: 206 response without a valid Content-Range header")
    total = match.group(3)
    return int(match.group(1)), None if total == "*" else int(total)


def stream_into(
    url: str,
    out: BinaryIO,
    start: int = 0,
    end: int | None = None,
    *,
    ranges_required: bool = False,
    timeout: float = 60,
    retries: int = 5,
    bar: tqdm[Any] | None = None,
) -> None:
    """Append bytes ``[start, end)`` of ``url`` to ``out``, resuming after dropped connections.

    A connection that drops, times out or ends before the announced length is opened again
    for the bytes still missing, up to ``retries`` times.

    Args:
        url: the file to read.
        out: binary file open for writing at its end.
        start: first byte wanted.
        end: one past the last byte wanted; ``None`` for the end of the file.
        ranges_required: raise :class:`RangeNotSupportedError` when the server ignores the
            ``Range`` header. When ``False``, ``out`` must hold the file from its first byte
            (as a ``.part`` file does): it is emptied and the whole file is written instead.
        timeout: seconds to wait for the server on each read.
        retries: how many times a failed request is tried again.
        bar: progress bar, advanced by the bytes received (and given a total if it has none).

    Raises:
        RangeNotSupportedError: see ``ranges_required``.
        DownloadError: HTTP error, or the transfer still failed after ``retries`` retries.
    """
    pos = start

    def attempt() -> None:
        nonlocal pos
        with _open(url, pos, end, timeout=timeout) as response:
            if response.status == 206:
                first, _ = _content_range(url, response)
                if first != pos:
                    raise DownloadError(f"{url}: asked for bytes from {pos}, got from {first}")
            elif pos or end is not None:  # a range was asked for, the whole file came
                if ranges_required:
                    raise RangeNotSupportedError(f"{url}: the server ignores HTTP range requests")
                out.seek(0)
                out.truncate()
                pos = 0
                if bar is not None:
                    bar.reset(bar.total)
            expected = None if response.length is None else pos + response.length
            if bar is not None and bar.total is None:
                bar.total = expected
            while chunk := response.read(CHUNK):
                out.write(chunk)
                pos += len(chunk)
                if bar is not None:
                    bar.update(len(chunk))
            if expected is not None and pos < expected:
                raise http.client.IncompleteRead(b"", expected - pos)

    _with_retries(url, retries, attempt)


def byte_bar(total: int | None, initial: int, desc: str, progress: bool) -> tqdm[Any]:
    """A progress bar counting bytes (disabled when ``progress`` is false)."""
    return tqdm(
        total=total, initial=initial, desc=desc, unit="B", unit_scale=True, disable=not progress
    )


@contextmanager
def partial_file(path: Path) -> Iterator[BinaryIO]:
    """``path`` open for appending; removed again if it is still empty when an error leaves."""
    try:
        with open(path, "ab") as f:
            yield f
    except BaseException:
        if path.is_file() and path.stat().st_size == 0:
            path.unlink()
        raise


def probe(url: str, *, timeout: float = 60) -> RemoteInfo:
    """Ask the server for a file's size and whether it serves byte ranges; no body is read.

    A ``HEAD`` request is tried first; when it fails or does not advertise
    ``Accept-Ranges: bytes``, a ``GET`` of byte 0 tells: 206 (read the total from
    ``Content-Range``) or 200 (ranges are ignored).

    Raises:
        DownloadError: HTTP error (e.g. 404) or no answer.
    """
    size: int | None = None
    try:
        with _open(url, method="HEAD", timeout=timeout) as response:
            length = response.headers.get("Content-Length")  # http.client says 0 for HEAD
            size = None if length is None else int(length)
            if size is not None and response.headers.get("Accept-Ranges", "").lower() == "bytes":
                return RemoteInfo(url, size, True)
    except (http.client.HTTPException, OSError, ValueError):
        pass  # some servers refuse HEAD; the GET below gives the real answer

    def attempt() -> RemoteInfo:
        with _open(url, 0, 1, timeout=timeout) as response:
            if response.status == 206:
                return RemoteInfo(url, _content_range(url, response)[1] or size, True)
            return RemoteInfo(url, response.length, False)

    return _with_retries(url, 2, attempt)


def read_range(url: str, start: int, end: int, *, timeout: float = 60, retries: int = 5) -> bytes:
    """Bytes ``[start, end)`` of a remote file (``end`` exclusive).

    Raises:
        RangeNotSupportedError: the server answered with the whole file.
        DownloadError: HTTP error, or still failing after ``retries`` retries.
    """
    buffer = io.BytesIO()
    if end > start:
        stream_into(url, buffer, start, end, ranges_required=True, timeout=timeout, retries=retries)
    data = buffer.getvalue()
    if len(data) != end - start:
        raise DownloadError(f"{url}: asked for {end - start} bytes at {start}, got {len(data)}")
    return data


def _problem(path: Path, size: int | None, md5: str | None, sha256: str | None) -> str | None:
    """Why ``path`` fails the given checks, or ``None`` when it passes them all."""
    actual = path.stat().st_size
    if size is not None and actual != size:
        return f"size mismatch (expected {size} bytes, got {actual})"
    for name, expected in (("md5", md5), ("sha256", sha256)):
        if expected is not None:
            with open(path, "rb") as f:
                got = hashlib.file_digest(f, name).hexdigest()
            if got != expected.lower():
                return f"{name} mismatch (expected {expected}, got {got})"
    return None


def download(
    url: str,
    dest: Path,
    *,
    size: int | None = None,
    md5: str | None = None,
    sha256: str | None = None,
    desc: str | None = None,
    retries: int = 5,
    timeout: float = 60,
    progress: bool = True,
) -> Path:
    """Download ``url`` to ``dest`` resumably and verify it; ``dest`` appears whole or not at all.

    Bytes go to ``<dest>.part``, which a later call continues with a ``Range`` request (from
    scratch when the server ignores ranges); ``dest`` appears by renaming it once verified. A
    ``dest`` that already passes the checks (or exists, when none are given) is kept and nothing
    is transferred.

    Args:
        url: the file to fetch.
        dest: destination path; parent folders are created.
        size: expected length in bytes.
        md5: expected MD5 hex digest.
        sha256: expected SHA-256 hex digest.
        desc: progress bar label (default: the file name).
        retries: retries per request after a dropped connection.
        timeout: seconds to wait for the server on each read.
        progress: show a progress bar.

    Returns:
        ``dest``.

    Raises:
        DownloadError: HTTP error, retries exhausted, or a failed check (the bad file is
            removed so that the next run starts over).
    """
    dest = Path(dest)
    if dest.is_file() and _problem(dest, size, md5, sha256) is None:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.is_file() else 0
    total = size if size is not None or not have else probe(url, timeout=timeout).size
    if total is not None and have > total:
        part.unlink()
        have = 0
    bar = byte_bar(total, have, desc or dest.name, progress)
    with bar, partial_file(part) as out:
        if total is None or have < total:
            stream_into(url, out, have, timeout=timeout, retries=retries, bar=bar)
    problem = _problem(part, size, md5, sha256)
    if problem is not None:
        part.unlink()
        raise DownloadError(f"{url}: {problem}; the bad file was removed")
    os.replace(part, dest)
    return dest


__all__ = [
    "RangeNotSupportedError",
    "RemoteInfo",
    "byte_bar",
    "download",
    "partial_file",
    "probe",
    "read_range",
    "stream_into",
]
