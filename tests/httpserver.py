"""A loopback HTTP file server for tests of downloads: ranges, dropped connections, counters.

Usage::

    with LoopbackServer(root) as server:
        download(server.url("data.zip?download=1"), dest)
        assert server.bytes_served == ...

or the ``loopback`` fixture (a server on an empty folder, ``loopback.root``).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest

_RANGE = re.compile(r"bytes=(\d*)-(\d*)")
_CHUNK = 64 * 1024


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients that hang up early are expected here


class LoopbackServer:
    """Serve the files under ``root`` on ``127.0.0.1`` (a free port) from a daemon thread.

    Attributes (may be changed while the server runs):
        ranges: answer ``Range: bytes=a-b`` / ``bytes=a-`` / ``bytes=-n`` with 206; when
            ``False`` the header is ignored (200, whole file, no ``Accept-Ranges``).
        drop_after: ``{relpath: n}``: the first GET of ``relpath`` with a body longer than ``n``
            announces the full length but closes the connection after ``n`` body bytes; other
            requests are served normally.
        drop_at: ``{relpath: offset}``: the first GET of ``relpath`` whose range contains the
            file offset ``offset`` hangs up there (to cut one member of a zip, not its
            directory); ``dropped`` counts the connections cut either way.
        bytes_served: body bytes sent in total (including a chunk a client hung up on);
            ``bytes_by_path`` per relpath.
        requests: ``(method, relpath, Range header or None)`` for every request.
    """

    def __init__(
        self,
        root: Path,
        *,
        ranges: bool = True,
        drop_after: dict[str, int] | None = None,
        drop_at: dict[str, int] | None = None,
    ) -> None:
        self.root = Path(root)
        self.ranges = ranges
        self.drop_after = dict(drop_after or {})
        self.drop_at = dict(drop_at or {})
        self.dropped = 0
        self._dropped: set[str] = set()
        self._lock = threading.Lock()
        self.bytes_served = 0
        self.bytes_by_path: dict[str, int] = {}
        self.requests: list[tuple[str, str, str | None]] = []
        self._httpd = _QuietServer(("127.0.0.1", 0), _handler_for(self))
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    def url(self, relpath: str) -> str:
        return f"http://127.0.0.1:{self.port}/{relpath.lstrip('/')}"

    def reset_counters(self) -> None:
        with self._lock:
            self.bytes_served = 0
            self.bytes_by_path = {}
            self.requests = []

    def _record(self, method: str, relpath: str, range_header: str | None) -> None:
        with self._lock:
            self.requests.append((method, relpath, range_header))

    def _count(self, relpath: str, n: int) -> None:
        with self._lock:
            self.bytes_served += n
            self.bytes_by_path[relpath] = self.bytes_by_path.get(relpath, 0) + n

    def _drop_limit(self, method: str, relpath: str, start: int, end: int) -> int | None:
        """Body bytes to send before hanging up, for the first GET of a path that is cut."""
        with self._lock:
            if method != "GET" or relpath in self._dropped:
                return None
            limit = self.drop_after.get(relpath)
            offset = self.drop_at.get(relpath)
            if offset is not None and start < offset < end:
                limit = offset - start
            if limit is None or limit >= end - start:
                return None
            self._dropped.add(relpath)
            self.dropped += 1
            return limit

    def __enter__(self) -> LoopbackServer:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


def _handler_for(server: LoopbackServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_HEAD(self) -> None:
            self._serve(body=False)

        def do_GET(self) -> None:
            self._serve(body=True)

        def _serve(self, body: bool) -> None:
            relpath = unquote(urlsplit(self.path).path).lstrip("/")
            range_header = self.headers.get("Range")
            server._record(self.command, relpath, range_header)
            path = server.root / relpath
            if not relpath or not path.is_file():
                self.send_error(404)
                return
            size = path.stat().st_size
            start, end = 0, size  # end exclusive
            match = _RANGE.fullmatch(range_header.strip()) if range_header else None
            partial = server.ranges and match is not None and any(match.groups())
            if partial:
                assert match is not None
                first, last = match.groups()
                if first:
                    start, end = int(first), min(size, int(last) + 1 if last else size)
                else:
                    start = max(0, size - int(last))
                if start >= size or start >= end:
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{size}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
            self.send_response(206 if partial else 200)
            if partial:
                self.send_header("Content-Range", f"bytes {start}-{end - 1}/{size}")
            if server.ranges:
                self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(end - start))
            self.end_headers()
            if not body:
                return
            limit = server._drop_limit(self.command, relpath, start, end)
            if limit is not None:
                end = min(end, start + limit)
            with open(path, "rb") as f:
                f.seek(start)
                while start < end:
                    chunk = f.read(min(_CHUNK, end - start))
                    # Counted before sending, so that a client never sees bytes not yet counted.
                    server._count(relpath, len(chunk))
                    try:
                        self.wfile.write(chunk)
                    except OSError:  # the client went away
                        return
                    start += len(chunk)
            if limit is not None:
                self.close_connection = True

    return Handler


@pytest.fixture
def loopback(tmp_path: Path) -> Iterator[LoopbackServer]:
    """A running :class:`LoopbackServer` on the empty folder ``loopback.root``."""
    root = tmp_path / "served"
    root.mkdir()
    with LoopbackServer(root) as server:
        yield server
