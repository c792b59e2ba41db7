"""A polite client: lcip's User-Agent on every request, ``Retry-After`` honoured, per-host limits.

All on loopback servers: a scripted one (answers chosen per request, headers recorded), the
file server of ``tests.httpserver`` and the STAC API stand-in, with a hook recording the
``User-Agent`` each request carried.
"""

from __future__ import annotations

import io
import itertools
import json
import logging
import re
import threading
import time
import tomllib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import shapely

import lcip.acquire.http as http
from lcip.acquire.http import (
    DEFAULT_RATE_LIMITS,
    PROJECT_URL,
    RATE_LIMITS,
    HostLimiter,
    Rate,
    configure_rate_limits,
    download,
    get_json,
    parse_rate,
    probe,
    read_range,
    retry_after,
    stream_into,
    user_agent,
)
from lcip.acquire.stac import search
from lcip.config import CONFIG_DIR
from lcip.errors import ConfigError
from tests.httpserver import LoopbackServer
from tests.paths import ROOT
from tests.stand_ins import stac_api, stac_item

#: What an answer is: (status, headers, body).
Answer = tuple[int, dict[str, str], bytes]


class Scripted:
    """A loopback server whose answers come from ``script(n)`` (n: the request's number).

    ``seen`` holds ``(monotonic time, method, path, headers)`` per request.
    """

    def __init__(self, script: Callable[[int], Answer]) -> None:
        self.script = script
        self.seen: list[tuple[float, str, str, dict[str, str]]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                outer.seen.append((time.monotonic(), "GET", self.path, dict(self.headers)))
                status, headers, body = outer.script(len(outer.seen))
                self.send_response(status)
                for k, v in {"Content-Length": str(len(body)), **headers}.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/{path}"

    def __enter__(self) -> Scripted:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


def record_agents(server: LoopbackServer) -> list[tuple[float, str, str, str | None]]:
    """Record ``(monotonic time, method, path, User-Agent)`` of every request ``server`` gets."""
    seen: list[tuple[float, str, str, str | None]] = []
    base: Any = server._httpd.RequestHandlerClass

    class Recording(base):
        def parse_request(self) -> bool:
            ok = bool(super().parse_request())
            if ok:
                seen.append(
                    (time.monotonic(), self.command, self.path, self.headers.get("User-Agent"))
                )
            return ok

    server._httpd.RequestHandlerClass = Recording
    return seen


@pytest.fixture(autouse=True)
def _default_limits() -> Iterator[None]:
    configure_rate_limits(None)
    yield
    configure_rate_limits(None)


@pytest.fixture
def files(tmp_path: Path) -> Iterator[LoopbackServer]:
    root = tmp_path / "served"
    root.mkdir()
    (root / "a.bin").write_bytes(bytes(range(256)) * 40)
    with LoopbackServer(root) as server:
        yield server


# ------------------------------------------------------------------------------- User-Agent
AGENT = re.compile(r"lcip/\d+\.\d+\.\d+\S* \(\+https://\S+\)")


def test_user_agent_names_version_and_project_url() -> None:
    import lcip

    agent = user_agent()
    assert AGENT.fullmatch(agent)
    assert agent == f"lcip/{lcip.__version__} (+{PROJECT_URL})"
    homepage = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["urls"]["Homepage"]
    assert PROJECT_URL == homepage  # the fallback is the declared address
    assert http.USER_AGENT == agent


def test_user_agent_on_downloads_probes_and_ranges(files: LoopbackServer, tmp_path: Path) -> None:
    seen = record_agents(files)
    url = files.url("a.bin")
    download(url, tmp_path / "a.bin", progress=False)
    probe(url)
    read_range(url, 10, 20)
    methods = [m for _, m, _, _ in seen]
    assert methods == ["GET", "HEAD", "GET"]
    assert {agent for *_, agent in seen} == {user_agent()}


def test_user_agent_on_json_and_stac_searches(tmp_path: Path) -> None:
    box = shapely.box(-80.6, 41.0, -80.5, 41.1)
    items = [stac_item("m_4108053_se_17_1", "naip", box, "2015-07-25T00:00:00Z", {"image": "x"})]
    with stac_api(tmp_path, items) as api:
        seen = record_agents(api)
        found = search(api.url(""), "naip", box, "2015", timeout=10)
        assert get_json(api.url("")).get("id") == "stand-in"
    assert [i["id"] for i in found] == ["m_4108053_se_17_1"]
    methods = [(m, p.split("?")[0]) for _, m, p, _ in seen]
    assert ("GET", "/") in methods and ("POST", "/search") in methods
    assert {agent for *_, agent in seen} == {user_agent()}  # pystac-client's requests too


# ------------------------------------------------------------------------------ Retry-After
def test_retry_after_values() -> None:
    assert retry_after("120") == 120.0
    assert retry_after(" 0 ") == 0.0
    # an HTTP date (RFC 9110's example), 30 s ahead of "now"
    now = 1445412450.0  # Wed, 21 Oct 2015 07:27:30 GMT
    assert retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=now) == pytest.approx(30.0)
    assert retry_after("Wed, 21 Oct 2015 07:27:00 GMT", now=now) == 0.0  # already past
    assert retry_after("soon") is None
    assert retry_after(None) is None


def test_429_with_retry_after_is_waited_out(caplog: pytest.LogCaptureFixture) -> None:
    body = b"x" * 1000

    def script(n: int) -> Answer:
        if n == 1:
            return 429, {"Retry-After": "1", "Content-Type": "text/plain"}, b"slow down"
        return 200, {"Content-Type": "application/octet-stream"}, body

    with Scripted(script) as server, caplog.at_level(logging.WARNING, "lcip.acquire.http"):
        start = time.monotonic()
        data = read_all(server.url("f.bin"))
        elapsed = time.monotonic() - start
    assert data == body
    assert elapsed >= 1.0
    assert server.seen[1][0] - server.seen[0][0] >= 1.0
    assert len(server.seen) == 2
    assert any("asks to wait 1 s (Retry-After)" in r.getMessage() for r in caplog.records)


def read_all(url: str) -> bytes:
    """The whole file at ``url``, read with :func:`stream_into` (2 retries)."""
    out = io.BytesIO()
    stream_into(url, out, retries=2)
    return out.getvalue()


def test_503_with_an_http_date_is_parsed_and_waited_out(tmp_path: Path) -> None:
    body = b"y" * 5000
    when: dict[str, float] = {}

    def script(n: int) -> Answer:
        if n == 1:
            when["asked"] = time.time() + 2  # whole seconds in an HTTP date: 1-2 s from now
            return 503, {"Retry-After": formatdate(when["asked"], usegmt=True)}, b""
        return 200, {}, body

    with Scripted(script) as server:
        start = time.monotonic()
        download(server.url("g.bin"), tmp_path / "g.bin", progress=False, retries=2)
        elapsed = time.monotonic() - start
    assert (tmp_path / "g.bin").read_bytes() == body
    assert 1.0 <= elapsed < 10
    assert len(server.seen) == 2


def test_retry_after_is_capped(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(http, "RETRY_AFTER_MAX", 0.5)

    def script(n: int) -> Answer:
        return (429, {"Retry-After": "3600"}, b"") if n == 1 else (200, {}, b"ok")

    with Scripted(script) as server, caplog.at_level(logging.WARNING, "lcip.acquire.http"):
        start = time.monotonic()
        assert read_all(server.url("h")) == b"ok"
        assert 0.5 <= time.monotonic() - start < 5
    message = next(r.getMessage() for r in caplog.records if "Retry-After" in r.getMessage())
    assert "asks to wait 3600 s" in message and "retrying in 0 s" in message


# --------------------------------------------------------------------------- per-host limits
def test_rates_parse_and_bad_ones_name_the_setting() -> None:
    assert parse_rate("60/min") == Rate(60, 60.0)
    assert parse_rate("2000/hour") == Rate(2000, 3600.0)
    assert parse_rate("2000/hours") == Rate(2000, 3600.0)
    assert parse_rate("1/s") == Rate(1, 1.0)
    assert parse_rate("1/0.5s") == Rate(1, 0.5)
    assert parse_rate("10 / 2 min") == Rate(10, 120.0)
    with pytest.raises(ConfigError, match=r"acquire\.rate_limits\.zenodo\.org: '60 per minute'"):
        configure_rate_limits({"zenodo.org": ["60 per minute"]})
    with pytest.raises(ConfigError, match="at least 1 request"):
        parse_rate("0/s")


def test_default_limits_and_overrides() -> None:
    assert RATE_LIMITS.limits() == {
        "zenodo.org": (Rate(60, 60.0), Rate(2000, 3600.0)),
        "nominatim.openstreetmap.org": (Rate(1, 1.0),),
    }
    assert DEFAULT_RATE_LIMITS == RATE_LIMITS.limits()
    configure_rate_limits({"zenodo.org": [], "example.org": "5/s"})
    assert RATE_LIMITS.limits() == {
        "nominatim.openstreetmap.org": (Rate(1, 1.0),),
        "example.org": (Rate(5, 1.0),),
    }
    configure_rate_limits(None)  # back to the defaults
    assert RATE_LIMITS.limits() == DEFAULT_RATE_LIMITS


def test_zenodo_guest_limits_on_a_simulated_clock() -> None:
    """60 requests a minute and 2,000 an hour, also for a subdomain; other hosts are free."""
    now = [0.0]

    def sleep(s: float) -> None:
        now[0] += s

    limiter = HostLimiter(DEFAULT_RATE_LIMITS, clock=lambda: now[0], sleep=sleep)
    times = []
    for _ in range(2001):
        limiter.wait("https://sandbox.zenodo.org/records/1/files/a.zip")
        times.append(now[0])
    assert times[59] == 0.0 and times[60] == pytest.approx(60.0)  # the 61st waits a minute
    assert times[1999] < 3600.0 and times[2000] >= 3600.0  # the 2001st waits for the hour
    for i in range(60, 2001):  # never more than 60 in any minute
        assert times[i] - times[i - 60] >= 60.0 - 1e-9
    assert limiter.wait("https://example.org/x") == 0.0


def test_limit_spaces_requests_on_loopback(files: LoopbackServer) -> None:
    seen = record_agents(files)
    configure_rate_limits({"127.0.0.1": "1/0.2s"})
    start = time.monotonic()
    for i in range(6):
        read_range(files.url("a.bin"), i, i + 1)
    assert time.monotonic() - start >= 1.0
    # arrival times at the server, which jitter by a few ms around the client's spacing
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(seen)]
    assert len(gaps) == 5 and min(gaps) >= 0.15
    assert seen[-1][0] - seen[0][0] >= 0.95


def test_limit_holds_across_threads(files: LoopbackServer) -> None:
    seen = record_agents(files)
    configure_rate_limits({"127.0.0.1": ["3/0.5s"]})
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda i: read_range(files.url("a.bin"), i, i + 1), range(9)))
    stamps = sorted(t for t, *_ in seen)
    assert len(stamps) == 9
    for i in range(3, 9):  # at most 3 in any half second (server arrival times jitter a bit)
        assert stamps[i] - stamps[i - 3] >= 0.45
    assert stamps[-1] - stamps[0] >= 0.95


def test_config_key_is_there() -> None:
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(CONFIG_DIR / "lcip.yaml")
    assert OmegaConf.to_container(cfg.acquire.rate_limits) == {}
    configure_rate_limits(json.loads('{"127.0.0.1": ["2/s", "100/hour"]}'))
    assert RATE_LIMITS.limits()["127.0.0.1"] == (Rate(2, 1.0), Rate(100, 3600.0))
