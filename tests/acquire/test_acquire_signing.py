"""Signed URLs that expire: signed right before each request and each resume, re-signed on a 403.

A loopback stand-in of the Planetary Computer plays both sides: its token endpoint answers in the
shape of the real token answer (``tests/fixtures/real/planetary_computer/sas_token.json``), and
its blob store serves files only under a signature it issued that has not expired, answering
403 with Azure's real ``AuthenticationFailed`` body otherwise. Its clock can jump ahead (the 45
minutes a long run takes), which expires every token issued so far.
"""

from __future__ import annotations

import json
import re
import secrets
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, parse_qsl, urlencode, urlsplit

import numpy as np
import pytest

import lcip.acquire.http as http
from lcip.acquire.http import FreshSign, download, probe, user_agent
from lcip.acquire.stac import SAS_TOKEN_URL, SasSigner, search, signer, unsigned
from lcip.errors import DownloadError
from tests.paths import FIXTURES
from tests.stand_ins import stac_api, stac_item

REAL = FIXTURES / "real" / "planetary_computer"
RECORDED_TOKEN = json.loads((REAL / "sas_token.json").read_text())
AUTH_FAILED = (REAL / "authentication_failed_expired.xml").read_bytes()
AZURE_403_REASON = (
    "Server failed to authenticate the request. Make sure the value of Authorization header "
    "is formed correctly including the signature."
)
_RANGE = re.compile(r"bytes=(\d+)-(\d*)")
TOKEN_PATH = "api/sas/v1/token"


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class SasStandIn:
    """Token endpoint + blob store on 127.0.0.1 (see the module doc).

    Attributes:
        lifetime: seconds a token is valid on the server's clock.
        claimed: seconds of validity the answer's ``msft:expiry`` claims (default ``lifetime``).
        offset: seconds the server's clock is ahead of the real one.
        drop_after: ``{path: n}``: the first GET of ``path`` sends ``n`` bytes, hangs up, and
            moves the server's clock ``jump`` seconds ahead (the token expires mid-run).
        revoked: refuse every signature.
        log: ``(method, path, query, Range, User-Agent, status)`` per request.
        tokens: token requests answered.
    """

    def __init__(self, root: Path, lifetime: float = 2700.0, jump: float = 3600.0) -> None:
        self.root = root
        self.lifetime = lifetime
        self.claimed: float | None = None
        self.offset = 0.0
        self.jump = jump
        self.drop_after: dict[str, int] = {}
        self.revoked = False
        self.issued: dict[str, float] = {}  # sig -> expiry on the server's clock
        self.log: list[tuple[str, str, dict[str, list[str]], str | None, str | None, int]] = []
        self.tokens = 0
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/{path}"

    def now(self) -> float:
        return time.time() + self.offset

    def token(self) -> dict[str, Any]:
        """A token answer shaped like the recorded one: its fields, fresh times and signature."""
        with self._lock:
            now = self.now()
            expiry = now + self.lifetime
            sig = secrets.token_urlsafe(24)
            self.issued[sig] = expiry
            self.tokens += 1
        fields = dict(parse_qsl(RECORDED_TOKEN["token"]))
        fields.update(se=_iso(expiry), skt=_iso(now), ske=_iso(now + 86400), sig=sig)
        claimed = expiry if self.claimed is None else time.time() + self.claimed
        return {"msft:expiry": _iso(claimed), "token": urlencode(fields, safe="*")}

    def valid(self, query: dict[str, list[str]]) -> bool:
        sig = (query.get("sig") or [""])[0]
        se = (query.get("se") or [""])[0]
        with self._lock:
            expiry = self.issued.get(sig)
            if self.revoked or expiry is None or se != _iso(expiry):
                return False
            return self.now() < expiry

    def __enter__(self) -> SasStandIn:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


def _handler(server: SasStandIn) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_HEAD(self) -> None:
            self._serve(body=False)

        def do_GET(self) -> None:
            self._serve(body=True)

        def _answer(
            self,
            status: int,
            headers: dict[str, str],
            data: bytes,
            body: bool,
            sent: bytes | None = None,
        ) -> None:
            """Answer with ``data``'s length announced; ``sent`` (part of it) cuts the body."""
            parts = urlsplit(self.path)
            server.log.append(
                (
                    self.command,
                    parts.path.lstrip("/"),
                    parse_qs(parts.query),
                    self.headers.get("Range"),
                    self.headers.get("User-Agent"),
                    status,
                )
            )
            self.send_response(status, AZURE_403_REASON if status == 403 else None)
            for k, v in {"Content-Length": str(len(data)), **headers}.items():
                self.send_header(k, v)
            self.end_headers()
            if body:
                self.wfile.write(data if sent is None else sent)

        def _serve(self, body: bool) -> None:
            parts = urlsplit(self.path)
            path = parts.path.lstrip("/")
            if path.startswith(TOKEN_PATH + "/"):
                data = json.dumps(server.token()).encode()
                self._answer(200, {"Content-Type": "application/json"}, data, body)
                return
            if not server.valid(parse_qs(parts.query)):
                self._answer(403, {"Content-Type": "application/xml"}, AUTH_FAILED, body)
                return
            blob = (server.root / path).read_bytes()
            start, end = 0, len(blob)
            match = _RANGE.fullmatch(self.headers.get("Range") or "")
            headers = {"Accept-Ranges": "bytes", "Content-Type": "image/tiff"}
            if match:
                start = int(match[1])
                end = min(end, int(match[2]) + 1) if match[2] else end
                headers["Content-Range"] = f"bytes {start}-{end - 1}/{len(blob)}"
            cut = server.drop_after.pop(path, None) if body and self.command == "GET" else None
            if cut is None:
                self._answer(206 if match else 200, headers, blob[start:end], body)
                return
            status = 206 if match else 200
            self._answer(status, headers, blob[start:end], True, sent=blob[start : start + cut])
            self.wfile.flush()
            server.offset += server.jump  # the run took long: every token issued has expired
            self.close_connection = True

    return Handler


@pytest.fixture(autouse=True)
def _no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http, "_BACKOFF", 0.0)


@pytest.fixture
def blob(tmp_path: Path) -> tuple[Path, bytes]:
    """A 300 KB scene at ``naip/v002/pa/2015/m_4108053_se_17_1.tif`` under a served root."""
    data = np.random.default_rng(3).integers(0, 256, 300_000, dtype=np.uint8).tobytes()
    path = tmp_path / "served" / "naip" / "v002" / "pa" / "2015" / "m_4108053_se_17_1.tif"
    path.parent.mkdir(parents=True)
    path.write_bytes(data)
    return tmp_path / "served", data


@pytest.fixture
def pc(blob: tuple[Path, bytes]) -> Iterator[SasStandIn]:
    with SasStandIn(blob[0]) as server:
        yield server


def _signer(server: SasStandIn) -> SasSigner:
    """lcip's signer on the stand-in's token endpoint, signing its loopback host."""
    return SasSigner(server.url(TOKEN_PATH), host_suffix="127.0.0.1")


SCENE = "naip/v002/pa/2015/m_4108053_se_17_1.tif"


def _blob_requests(server: SasStandIn) -> list[tuple[str, str | None, int, str]]:
    """(method, Range, status, sig) of the requests for the scene."""
    return [
        (m, rng, status, (q.get("sig") or [""])[0])
        for m, p, q, rng, _, status in server.log
        if p == SCENE
    ]


def test_token_expiring_mid_download_is_renewed_for_the_resume(
    pc: SasStandIn, blob: tuple[Path, bytes], tmp_path: Path
) -> None:
    pc.drop_after[SCENE] = 100_000
    sign = _signer(pc)
    dest = download(pc.url(SCENE), tmp_path / "naip.tif", sign=sign, retries=2, progress=False)
    assert dest.read_bytes() == blob[1]
    requests = _blob_requests(pc)
    assert [(m, rng, status) for m, rng, status, _ in requests] == [
        ("GET", None, 200),  # signed: 100 KB arrive, then the connection drops
        ("GET", "bytes=100000-", 403),  # the resume, signed with the cached (expired) token
        ("GET", "bytes=100000-", 206),  # signed again with a fresh token: the rest
    ]
    first, expired, fresh = (sig for *_, sig in requests)
    assert first == expired != fresh and fresh
    assert pc.tokens == sign.requests == 2
    assert not (tmp_path / "naip.tif.part").exists()


def test_part_file_resumed_after_its_token_expired(
    pc: SasStandIn, blob: tuple[Path, bytes], tmp_path: Path
) -> None:
    pc.drop_after[SCENE] = 120_000
    sign = _signer(pc)
    dest = tmp_path / "naip.tif"
    with pytest.raises(DownloadError, match="transfer failed after 1 attempts"):
        download(pc.url(SCENE), dest, sign=sign, retries=0, progress=False)
    part = tmp_path / "naip.tif.part"
    assert part.stat().st_size == 120_000
    pc.log.clear()
    # The next run: the cached token is expired on the server; the size probe and the resume
    # are signed right before they are sent, and a 403 brings a fresh token.
    download(pc.url(SCENE), dest, sign=sign, retries=2, progress=False)
    assert dest.read_bytes() == blob[1]
    statuses = [(m, rng, status) for m, rng, status, _ in _blob_requests(pc)]
    assert ("GET", "bytes=120000-", 206) in statuses
    assert statuses[-1] == ("GET", "bytes=120000-", 206)
    assert any(status == 403 for *_, status in statuses)
    assert pc.tokens == 2


def test_without_sign_the_403_is_one_line_naming_the_url(pc: SasStandIn, tmp_path: Path) -> None:
    url = pc.url(SCENE)
    with pytest.raises(DownloadError) as err:
        download(url, tmp_path / "naip.tif", retries=3, progress=False)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"{url}: HTTP 403 ")
    assert message.endswith("(AuthenticationFailed)")  # the code of Azure's real XML body
    assert len(_blob_requests(pc)) == 1  # a 403 is not retried without a way to re-sign
    assert not list(tmp_path.glob("naip.tif*"))


def test_a_403_with_a_fresh_token_is_final(pc: SasStandIn, tmp_path: Path) -> None:
    pc.revoked = True
    sign = _signer(pc)
    url = pc.url(SCENE)
    with pytest.raises(DownloadError) as err:
        download(url, tmp_path / "naip.tif", size=300_000, sign=sign, retries=3, progress=False)
    message = str(err.value)
    assert message.startswith(f"{url}: HTTP 403 ")
    assert "after signing it again with a fresh token" in message
    assert "sig=" not in message  # never the signed URL
    assert pc.tokens == 2  # the first token, then one fresh one: re-signed once
    assert [status for _, _, status, _ in _blob_requests(pc)] == [403, 403]


def test_probe_signs_and_resigns(pc: SasStandIn) -> None:
    sign = _signer(pc)
    url = pc.url(SCENE)
    assert probe(url, sign=sign).size == 300_000
    pc.offset += 3600  # the cached token expires on the server
    info = probe(url, sign=sign)
    assert (info.size, info.accepts_ranges, info.url) == (300_000, True, url)
    assert pc.tokens == 2


def test_signer_caches_tokens_and_fresh_forces_a_new_one(pc: SasStandIn) -> None:
    sign = _signer(pc)
    url = pc.url(SCENE)
    first = sign(url)
    assert sign(url) == first and pc.tokens == 1
    public, _, token = first.partition("?")
    assert public == url
    # the real answer's fields, in its order; fresh times and signature
    assert [k for k, _ in parse_qsl(token)] == [k for k, _ in parse_qsl(RECORDED_TOKEN["token"])]
    renewed = sign.fresh(url)
    assert renewed != first and pc.tokens == 2
    assert sign(url) == renewed  # the fresh token replaced the cached one
    assert isinstance(sign, FreshSign)
    # a URL signed before is signed again (its old signature dropped), other queries kept
    assert unsigned(first) == url
    assert sign(first) == renewed
    assert sign(url + "?a=1").startswith(url + "?a=1&")
    # other hosts are not signed
    assert sign("https://example.org/x.tif") == "https://example.org/x.tif"


def test_token_near_its_expiry_is_renewed_before_use(pc: SasStandIn) -> None:
    pc.claimed = 30.0  # under the signer's 60 s margin
    sign = _signer(pc)
    sign(pc.url(SCENE))
    sign(pc.url(SCENE))
    assert pc.tokens == 2


def test_signer_finds_the_real_naip_container(pc: SasStandIn) -> None:
    """The real NAIP href of a recorded Planetary Computer item asks for the token of its
    storage account and container, as the planetary-computer package does."""
    item = json.loads(
        (FIXTURES / "real/naip/pa_m_4108053_se_17_1_20150725_20151201.json").read_text()
    )
    href = item["assets"]["image"]["href"]
    assert href.startswith("https://naipeuwest.blob.core.windows.net/naip/")
    sign = SasSigner(pc.url(TOKEN_PATH))  # default: Azure Blob hosts only
    signed = sign(href)
    assert signed.startswith(href + "?") and "sig=" in signed
    tokens = [(p, ua) for _, p, _, _, ua, _ in pc.log if p.startswith(TOKEN_PATH)]
    assert tokens == [(f"{TOKEN_PATH}/naipeuwest/naip", user_agent())]


def test_signer_setting() -> None:
    assert signer(False)("https://naipeuwest.blob.core.windows.net/naip/x.tif?a=1").endswith("?a=1")
    enabled = signer(True, timeout=5)
    assert isinstance(enabled, SasSigner) and isinstance(enabled, FreshSign)
    assert enabled is signer(True, timeout=5)  # one token cache for the whole run
    assert enabled.token_url.startswith(("http://", "https://"))
    assert SAS_TOKEN_URL == "https://planetarycomputer.microsoft.com/api/sas/v1/token"


def test_search_returns_public_urls(tmp_path: Path) -> None:
    """Nothing is signed at search time (a signature would expire before the download)."""
    import shapely

    box = shapely.box(-80.6, 41.0, -80.5, 41.1)
    href = "https://naipeuwest.blob.core.windows.net/naip/v002/pa/2015/x.tif"
    items = [stac_item("m_4108053_se_17_1_20150725", "naip", box, "2015-07-25T00:00:00Z", {})]
    items[0]["assets"] = {"image": {"href": href, "type": "image/tiff"}}
    with stac_api(tmp_path, items) as api:
        found = search(api.url(""), "naip", box, None, timeout=10)
    assert [i["assets"]["image"]["href"] for i in found] == [href]
