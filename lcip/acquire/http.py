"""Resumable, verified HTTP downloads with the standard library.

One loop, :func:`stream_into`, moves bytes: it asks for a byte range, appends what arrives to an
open file, and after a dropped connection asks again from where it stopped. :func:`download`
(whole files, ``<dest>.part`` kept between runs), :func:`read_range` (a few bytes into memory)
and :mod:`lcip.acquire.remotezip` (members of a remote zip) are built on it.

Every request goes through one opener, which makes lcip a polite client:

- it sends lcip's ``User-Agent`` (:func:`user_agent`: version and project URL);
- it waits for the per-host request limits (:data:`RATE_LIMITS`; Zenodo allows guests 60
  requests a minute and 2,000 an hour, Nominatim one a second; ``acquire.rate_limits`` in the
  config overrides them, :func:`configure_rate_limits`);
- a 429 or 503 answer is retried after the ``Retry-After`` the server asks for (seconds or an
  HTTP date, capped at :data:`RETRY_AFTER_MAX` seconds).

URLs that need a short-lived signature (Planetary Computer's SAS tokens, about 45 minutes) are
passed unsigned with a ``sign`` function: the URL is signed right before every request (so also
before every resume), and an HTTP 403 makes it sign again once with a fresh token
(:class:`FreshSign`) and retry. Messages and the manifest only ever show the unsigned URL.
"""

from __future__ import annotations

import email.utils
import hashlib
import http.client
import io
import json
import logging
import os
import re
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any, BinaryIO, Protocol, TypeVar, runtime_checkable
from urllib.parse import urlsplit

from tqdm.auto import tqdm

from lcip.errors import ConfigError, DownloadError

log = logging.getLogger(__name__)

#: Bytes read from the network (and from disk when hashing) at a time.
CHUNK = 1 << 20
#: Seconds before the first retry; doubled for each further one (capped at 30 s).
_BACKOFF = 1.0
#: HTTP statuses worth retrying: rate limiting and temporary server trouble.
_RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
#: Failures after which a request is tried again (a dropped or timed-out connection).
_TRANSIENT = (http.client.HTTPException, ConnectionError, TimeoutError, urllib.error.URLError)
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
#: Statuses whose ``Retry-After`` header says how long to wait before the retry.
_RETRY_AFTER_STATUSES = frozenset({429, 503})
#: The longest ``Retry-After`` wait honoured (seconds); a longer one is cut to this.
RETRY_AFTER_MAX = 300.0
#: Azure Storage's error code in an XML error body (``<Code>AuthenticationFailed</Code>``).
_ERROR_CODE = re.compile(rb"<Code>\s*([A-Za-z]+)\s*</Code>")

T = TypeVar("T")

#: The project's address, when the installed package metadata does not name one.
PROJECT_URL = "https://github.com/lcip-project/lcip"


@cache
def user_agent() -> str:
    """The ``User-Agent`` lcip sends on every request: ``lcip/<version> (+<project url>)``.

    Version and project URL come from the installed package's metadata (``[project.urls]
    Homepage``), falling back to :data:`PROJECT_URL` for a source tree whose metadata predates it.
    Services ask for such an agent: Nominatim's usage policy requires an identifying one and
    blocks stock library agents; Zenodo rate-limits unidentified clients (e.g. ``requests``'
    default) harder and recommends ``tool/version (+url)`` (fatiando/pooch issue #502).
    """
    version, homepage = "0.0.0", PROJECT_URL
    try:
        meta = metadata.metadata("lcip")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a bare source tree
        return f"lcip/{version} (+{homepage})"
    version = meta["Version"] or version
    for entry in meta.get_all("Project-URL") or []:  # "Homepage, https://..."
        label, _, address = entry.partition(",")
        if label.strip().lower() == "homepage" and address.strip():
            homepage = address.strip()
    return f"lcip/{version} (+{homepage})"


#: The User-Agent string (see :func:`user_agent`).
USER_AGENT = user_agent()


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


@dataclass(frozen=True)
class Rate:
    """At most ``count`` requests in any ``seconds`` long window."""

    count: int
    seconds: float

    def __str__(self) -> str:
        return f"{self.count}/{self.seconds:g}s"


_RATE = re.compile(r"\s*(\d+)\s*/\s*(\d*\.?\d*)\s*([a-z]*)\s*")
_UNITS = {
    "": 1.0, "s": 1.0, "sec": 1.0, "second": 1.0,
    "min": 60.0, "minute": 60.0,
    "h": 3600.0, "hour": 3600.0,
    "d": 86400.0, "day": 86400.0,
}  # fmt: skip


def parse_rate(text: str, setting: str = "acquire.rate_limits") -> Rate:
    """A :class:`Rate` from ``"<count>/<unit>"``: ``60/min``, ``2000/hour``, ``1/s``, ``1/0.5s``.

    Raises:
        ConfigError: naming ``setting`` for anything else.
    """
    match = _RATE.fullmatch(str(text).lower())
    unit = match.group(3) if match else ""
    if unit not in _UNITS and unit.endswith("s"):  # plurals: "hours", "seconds"
        unit = unit[:-1]
    if match is None or unit not in _UNITS:
        raise ConfigError(f"{setting}: {text!r} is not a rate like 60/min, 2000/hour, 1/0.5s")
    count, seconds = int(match.group(1)), float(match.group(2) or 1) * _UNITS[unit]
    if count < 1 or seconds <= 0:
        raise ConfigError(f"{setting}: {text!r} must allow at least 1 request in a positive time")
    return Rate(count, seconds)


#: Built-in per-host limits (a host also covers its subdomains): Zenodo's guest limits
#: (https://developers.zenodo.org/#rate-limiting: 60 requests a minute, 2,000 an hour) and
#: Nominatim's usage policy (https://operations.osmfoundation.org/policies/nominatim/: at most
#: one request a second).
DEFAULT_RATE_LIMITS: dict[str, tuple[Rate, ...]] = {
    "zenodo.org": (Rate(60, 60.0), Rate(2000, 3600.0)),
    "nominatim.openstreetmap.org": (Rate(1, 1.0),),
}


class HostLimiter:
    """Per-host request limits shared by all threads.

    :meth:`wait` blocks until a request is allowed under every :class:`Rate` of its host
    (sliding windows) and records it.

    Args:
        limits: host -> rates; a host also covers its subdomains (``zenodo.org`` covers
            ``sandbox.zenodo.org``).
        clock: monotonic clock (seconds).
        sleep: how to wait.
    """

    def __init__(
        self,
        limits: Mapping[str, Sequence[Rate]] | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._limits: dict[str, tuple[Rate, ...]] = {}
        self._history: dict[str, deque[float]] = {}
        self._lock = threading.Lock()
        self._clock = clock
        self._sleep = sleep
        for host, rates in (limits or {}).items():
            self.set(host, rates)

    def set(self, host: str, rates: Sequence[Rate]) -> None:
        """Limit requests to ``host`` (and its subdomains) to ``rates``; none: unlimited."""
        with self._lock:
            key = host.lower().strip(".")
            self._limits[key] = tuple(rates)
            self._history.pop(key, None)

    def limits(self) -> dict[str, tuple[Rate, ...]]:
        """The limits in force, by host."""
        with self._lock:
            return {h: r for h, r in self._limits.items() if r}

    def _rule(self, host: str) -> str | None:
        host = host.lower().strip(".")
        labels = host.split(".")
        for i in range(len(labels)):  # the most specific rule wins
            key = ".".join(labels[i:])
            if key in self._limits:
                return key
        return None

    def wait(self, url: str) -> float:
        """Block until a request to ``url``'s host is allowed, then count it.

        Returns:
            the seconds waited.
        """
        host = urlsplit(url).hostname or ""
        waited = 0.0
        while True:
            with self._lock:
                key = self._rule(host)
                rates = self._limits.get(key, ()) if key is not None else ()
                if not rates or key is None:
                    return waited
                now = self._clock()
                history = self._history.setdefault(key, deque())
                longest = max(r.seconds for r in rates)
                while history and history[0] <= now - longest:
                    history.popleft()
                delay = 0.0
                for r in rates:
                    recent = [t for t in history if t > now - r.seconds]
                    if len(recent) >= r.count:
                        delay = max(delay, recent[-r.count] + r.seconds - now)
                if delay <= 0:
                    history.append(now)
                    return waited
            if delay >= 5:
                log.info(
                    "%s: waiting %.0f s for the request limit %s (acquire.rate_limits)",
                    host,
                    delay,
                    ", ".join(map(str, rates)),
                )
            self._sleep(delay)
            waited += delay


#: The per-host limits every request of lcip waits for (see :func:`configure_rate_limits`).
RATE_LIMITS = HostLimiter(DEFAULT_RATE_LIMITS)


def configure_rate_limits(overrides: Mapping[str, Any] | None = None) -> None:
    """Reset :data:`RATE_LIMITS` to the defaults, then apply ``acquire.rate_limits``.

    Args:
        overrides: host -> a rate (``"60/min"``), a list of rates, or ``null`` / ``[]`` for no
            limit; ``None`` restores the defaults only.

    Raises:
        ConfigError: for a value that is not a rate.
    """
    for host in list(RATE_LIMITS.limits()):
        RATE_LIMITS.set(host, ())
    for host, rates in DEFAULT_RATE_LIMITS.items():
        RATE_LIMITS.set(host, rates)
    for host, value in (overrides or {}).items():
        values = [] if value is None else [value] if isinstance(value, str) else list(value)
        setting = f"acquire.rate_limits.{host}"
        RATE_LIMITS.set(str(host), [parse_rate(v, setting) for v in values])


def retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delay-seconds or an HTTP date.

    Args:
        value: the header, or None.
        now: the current time (epoch seconds), for an HTTP date; default now.

    Returns:
        seconds (0 for a date already past), or None when absent or unreadable.
    """
    if value is None or not value.strip():
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


@runtime_checkable
class FreshSign(Protocol):
    """A signing function that can also bypass its token cache (after an HTTP 403)."""

    def __call__(self, url: str, /) -> str:
        """``url`` signed (with a cached token while it is valid)."""

    def fresh(self, url: str, /) -> str:
        """``url`` signed with a newly requested token."""


#: Signs a public URL for one request (e.g. appends a SAS token).
Sign = Callable[[str], str]


def sign_again(sign: Sign, url: str) -> str:
    """``url`` signed again after an HTTP 403 (a fresh token when ``sign`` is a FreshSign)."""
    return sign.fresh(url) if isinstance(sign, FreshSign) else sign(url)


class _Signed:
    """The URL to request: signed right before each request when a ``sign`` is given."""

    def __init__(self, url: str, sign: Sign | None) -> None:
        self.public = url
        self.sign = sign
        self._fresh = False

    def target(self) -> str:
        if self.sign is None:
            return self.public
        if self._fresh:
            self._fresh = False
            return sign_again(self.sign, self.public)
        return self.sign(self.public)

    def resign(self) -> None:
        """Make the next request sign with a fresh token."""
        self._fresh = True

    @property
    def resign_hook(self) -> Callable[[], None] | None:
        return None if self.sign is None else self.resign


def _open(
    url: str,
    start: int = 0,
    end: int | None = None,
    *,
    timeout: float,
    method: str = "GET",
    headers: Mapping[str, str] | None = None,
) -> Any:
    """Send one request for bytes ``[start, end)`` (no ``Range`` header for the whole file).

    The request carries lcip's ``User-Agent`` and waits for the host's limit first.
    """
    request = urllib.request.Request(url, method=method)
    request.add_header("User-Agent", user_agent())
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    if start or end is not None:
        request.add_header("Range", f"bytes={start}-{'' if end is None else end - 1}")
    RATE_LIMITS.wait(url)
    try:
        return urllib.request.urlopen(request, timeout=timeout)
    except ValueError as err:  # unknown scheme, malformed address
        public = urlsplit(url)._replace(query="").geturl()
        raise DownloadError(f"{public}: invalid URL ({err})") from err


def _error_code(err: urllib.error.HTTPError) -> str | None:
    """The error code of an XML error body (Azure: ``AuthenticationFailed``), if any."""
    try:
        body = err.read(4096) if err.fp is not None else b""
    except (OSError, http.client.HTTPException):
        return None
    match = _ERROR_CODE.search(body or b"")
    return match.group(1).decode() if match else None


def _http_error(url: str, err: urllib.error.HTTPError, note: str = "") -> DownloadError:
    code = _error_code(err)
    detail = f" ({code})" if code else ""
    return DownloadError(f"{url}: HTTP {err.code} {err.reason}{detail}{note}")


def _with_retries(
    url: str,
    retries: int,
    attempt: Callable[[], T],
    resign: Callable[[], None] | None = None,
) -> T:
    """Call ``attempt`` until it succeeds, retrying transient failures with backoff.

    A 429 or 503 with a ``Retry-After`` header waits as long as the server asks (at most
    :data:`RETRY_AFTER_MAX` seconds) instead of the backoff. With ``resign``, an HTTP 403 is
    answered by calling it (the next attempt signs with a fresh token) and trying again at
    once, one time per 403; a 403 right after a fresh signature is final.

    HTTP errors other than temporary ones (e.g. 404) and exhausted retries become one-line
    :class:`~lcip.errors.DownloadError` messages naming ``url``.
    """
    i = 0
    resigned = False
    while True:
        try:
            return attempt()
        except urllib.error.HTTPError as err:
            if err.code == 403 and resign is not None and not resigned:
                log.info("%s: HTTP 403; signing the URL again with a fresh token", url)
                resign()
                resigned = True
                continue
            if err.code not in _RETRY_STATUSES or i == retries:
                note = " after signing it again with a fresh token" if resigned else ""
                raise _http_error(url, err, note) from None
            delay = min(_BACKOFF * 2**i, 30.0)
            asked = retry_after(err.headers.get("Retry-After") if err.headers else None)
            if err.code in _RETRY_AFTER_STATUSES and asked is not None:
                delay = min(asked, RETRY_AFTER_MAX)
                log.warning(
                    "%s: HTTP %d, the server asks to wait %.0f s (Retry-After); retrying in "
                    "%.0f s (retry %d of %d)",
                    url,
                    err.code,
                    asked,
                    delay,
                    i + 1,
                    retries,
                )
        except _TRANSIENT as err:
            if i == retries:
                reason = err.reason if isinstance(err, urllib.error.URLError) else err
                raise DownloadError(
                    f"{url}: transfer failed after {retries + 1} attempts ({reason!r})"
                ) from err
            delay = min(_BACKOFF * 2**i, 30.0)
            resigned = False  # bytes may have arrived: a later 403 is a new expiry
        time.sleep(delay)
        i += 1


def get_json(
    url: str,
    *,
    headers: Mapping[str, str] | None = None,
    timeout: float = 60,
    retries: int = 5,
) -> Any:
    """The JSON document at ``url`` (e.g. a token endpoint's answer).

    Raises:
        DownloadError: HTTP error, retries exhausted, or not JSON.
    """

    def attempt() -> bytes:
        with _open(url, timeout=timeout, headers=headers) as response:
            data: bytes = response.read()
            return data

    data = _with_retries(url, retries, attempt)
    try:
        return json.loads(data)
    except ValueError as err:
        raise DownloadError(f"{url}: not a JSON answer ({err})") from None


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
    sign: Sign | None = None,
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
        sign: signs ``url`` right before each request (each resume too); an HTTP 403 makes
            it sign once more with a fresh token (:class:`FreshSign`) and try again.

    Raises:
        RangeNotSupportedError: see ``ranges_required``.
        DownloadError: HTTP error, or the transfer still failed after ``retries`` retries.
    """
    pos = start
    signed = _Signed(url, sign)

    def attempt() -> None:
        nonlocal pos
        with _open(signed.target(), pos, end, timeout=timeout) as response:
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

    _with_retries(url, retries, attempt, signed.resign_hook)


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


def probe(url: str, *, timeout: float = 60, sign: Sign | None = None) -> RemoteInfo:
    """Ask the server for a file's size and whether it serves byte ranges; no body is read.

    A ``HEAD`` request is tried first; when it fails or does not advertise
    ``Accept-Ranges: bytes``, a ``GET`` of byte 0 tells: 206 (read the total from
    ``Content-Range``) or 200 (ranges are ignored). ``sign`` signs ``url`` before each request
    (see :func:`stream_into`).

    Raises:
        DownloadError: HTTP error (e.g. 404) or no answer.
    """
    size: int | None = None
    signed = _Signed(url, sign)
    try:
        with _open(signed.target(), method="HEAD", timeout=timeout) as response:
            length = response.headers.get("Content-Length")  # http.client says 0 for HEAD
            size = None if length is None else int(length)
            if size is not None and response.headers.get("Accept-Ranges", "").lower() == "bytes":
                return RemoteInfo(url, size, True)
    except (http.client.HTTPException, OSError, ValueError):
        pass  # some servers refuse HEAD; the GET below gives the real answer

    def attempt() -> RemoteInfo:
        with _open(signed.target(), 0, 1, timeout=timeout) as response:
            if response.status == 206:
                return RemoteInfo(url, _content_range(url, response)[1] or size, True)
            return RemoteInfo(url, response.length, False)

    return _with_retries(url, 2, attempt, signed.resign_hook)


def read_range(
    url: str,
    start: int,
    end: int,
    *,
    timeout: float = 60,
    retries: int = 5,
    sign: Sign | None = None,
) -> bytes:
    """Bytes ``[start, end)`` of a remote file (``end`` exclusive).

    ``sign`` signs ``url`` before each request, as in :func:`stream_into`.

    Raises:
        RangeNotSupportedError: the server answered with the whole file.
        DownloadError: HTTP error, or still failing after ``retries`` retries.
    """
    buffer = io.BytesIO()
    if end > start:
        stream_into(
            url,
            buffer,
            start,
            end,
            ranges_required=True,
            timeout=timeout,
            retries=retries,
            sign=sign,
        )
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
    sign: Sign | None = None,
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
        sign: for a URL that needs a short-lived signature: signs the public ``url`` right
            before each request (the first, each resume, a size probe); an HTTP 403 makes it
            sign again once with a fresh token and retry. Messages name the public ``url``.

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
    total = size if size is not None or not have else probe(url, timeout=timeout, sign=sign).size
    if total is not None and have > total:
        part.unlink()
        have = 0
    bar = byte_bar(total, have, desc or dest.name, progress)
    with bar, partial_file(part) as out:
        if total is None or have < total:
            stream_into(url, out, have, timeout=timeout, retries=retries, bar=bar, sign=sign)
    problem = _problem(part, size, md5, sha256)
    if problem is not None:
        part.unlink()
        raise DownloadError(f"{url}: {problem}; the bad file was removed")
    os.replace(part, dest)
    return dest


__all__ = [
    "DEFAULT_RATE_LIMITS",
    "PROJECT_URL",
    "RATE_LIMITS",
    "RETRY_AFTER_MAX",
    "USER_AGENT",
    "FreshSign",
    "HostLimiter",
    "RangeNotSupportedError",
    "Rate",
    "RemoteInfo",
    "Sign",
    "byte_bar",
    "configure_rate_limits",
    "download",
    "get_json",
    "parse_rate",
    "partial_file",
    "probe",
    "read_range",
    "retry_after",
    "sign_again",
    "stream_into",
    "user_agent",
]
