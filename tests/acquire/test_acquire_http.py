"""Resumable downloads and remote zip members against a real loopback HTTP server."""

from __future__ import annotations

import hashlib
import shutil
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest

import lcip.acquire.http as http
from lcip.acquire.http import RangeNotSupportedError, RemoteInfo, download, probe, read_range
from lcip.acquire.remotezip import RemoteZip, extract_members
from lcip.errors import DownloadError
from tests.httpserver import LoopbackServer

SIZE = 3_000_000
TAIL = 65535 + 22  # the most a listing reads from the end of the archive


@pytest.fixture(autouse=True)
def _no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http, "_BACKOFF", 0.0)


@pytest.fixture
def server(loopback: LoopbackServer) -> LoopbackServer:
    return loopback


def random_bytes(n: int, seed: int = 0) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


def compressible_bytes(n: int, seed: int = 0) -> bytes:
    return np.random.default_rng(seed).integers(0, 4, n, dtype=np.uint8).tobytes()


@pytest.fixture
def blob(server: LoopbackServer) -> bytes:
    data = random_bytes(SIZE)
    (server.root / "f.bin").write_bytes(data)
    return data


# Members of the test archive: name -> (content, compression).
MEMBERS: dict[str, tuple[bytes, int]] = {
    "readme.txt": (b"a small stored text\n", zipfile.ZIP_STORED),
    "tiles/": (b"", zipfile.ZIP_STORED),
    "tiles/a/naip_1.tif": (random_bytes(300_000, 1), zipfile.ZIP_STORED),
    "tiles/a/lc_1.tif": (compressible_bytes(400_000, 2), zipfile.ZIP_DEFLATED),
    "tiles/b/naip_2.tif": (random_bytes(300_000, 3), zipfile.ZIP_DEFLATED),
    "tiles/b/lc_2.tif": (compressible_bytes(400_000, 4), zipfile.ZIP_DEFLATED),
    "tiles/b/ümlaut.txt": (b"utf-8 name", zipfile.ZIP_DEFLATED),
}
FILES = [name for name in MEMBERS if not name.endswith("/")]


def write_zip(path: Path) -> bytes:
    with zipfile.ZipFile(path, "w") as zf:
        for name, (content, method) in MEMBERS.items():
            zf.writestr(name, content, compress_type=method)
    return path.read_bytes()


@pytest.fixture
def archive(server: LoopbackServer) -> bytes:
    return write_zip(server.root / "data.zip")


def directory_size(raw: bytes) -> int:
    return int(struct.unpack_from("<I", raw, len(raw) - 22 + 12)[0])


def compressed_sizes(raw_path: Path, names: list[str]) -> int:
    with zipfile.ZipFile(raw_path) as zf:
        return sum(zf.getinfo(n).compress_size for n in names)


# --- download -----------------------------------------------------------------------------


def test_download_verifies_md5_and_sha256(server: LoopbackServer, blob: bytes, tmp_path: Path):
    dest = tmp_path / "out" / "f.bin"
    got = download(
        server.url("f.bin?download=1"),
        dest,
        size=SIZE,
        md5=hashlib.md5(blob).hexdigest(),
        sha256=hashlib.sha256(blob).hexdigest(),
        progress=False,
    )
    assert got == dest and dest.read_bytes() == blob
    assert not dest.with_name("f.bin.part").exists()
    assert server.bytes_served == SIZE


def test_download_resumes_after_dropped_connection(
    server: LoopbackServer, blob: bytes, tmp_path: Path
):
    server.drop_after = {"f.bin": 1_000_000}
    dest = tmp_path / "f.bin"
    download(server.url("f.bin"), dest, md5=hashlib.md5(blob).hexdigest(), progress=False)
    assert dest.read_bytes() == blob
    assert not dest.with_name("f.bin.part").exists()
    assert server.bytes_served == SIZE  # nothing sent twice
    assert [r[2] for r in server.requests] == [None, "bytes=1000000-"]


def test_download_continues_a_part_file_from_an_earlier_run(
    server: LoopbackServer, blob: bytes, tmp_path: Path
):
    dest = tmp_path / "f.bin"
    dest.with_name("f.bin.part").write_bytes(blob[:1234])
    download(server.url("f.bin"), dest, size=SIZE, progress=False)
    assert dest.read_bytes() == blob
    assert server.bytes_served == SIZE - 1234


def test_download_without_ranges_restarts_after_drop(
    server: LoopbackServer, blob: bytes, tmp_path: Path
):
    server.ranges = False
    server.drop_after = {"f.bin": 1_000_000}
    dest = tmp_path / "f.bin"
    download(server.url("f.bin"), dest, sha256=hashlib.sha256(blob).hexdigest(), progress=False)
    assert dest.read_bytes() == blob
    assert not dest.with_name("f.bin.part").exists()
    assert server.bytes_served == SIZE + 1_000_000  # the resume got the whole file again


def test_download_checksum_mismatch_removes_the_file(
    server: LoopbackServer, blob: bytes, tmp_path: Path
):
    dest = tmp_path / "f.bin"
    url = server.url("f.bin")
    with pytest.raises(DownloadError) as info:
        download(url, dest, md5="0" * 32, progress=False)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{url}: md5 mismatch (expected {'0' * 32}, got ")
    assert message.endswith("the bad file was removed")
    assert not dest.exists() and not dest.with_name("f.bin.part").exists()


def test_download_size_mismatch(server: LoopbackServer, blob: bytes, tmp_path: Path):
    with pytest.raises(DownloadError, match="size mismatch"):
        download(server.url("f.bin"), tmp_path / "f.bin", size=SIZE + 1, progress=False)
    assert list(tmp_path.glob("f.bin*")) == []


def test_download_404_names_the_url(server: LoopbackServer, tmp_path: Path):
    url = server.url("missing.bin")
    with pytest.raises(DownloadError, match="404") as info:
        download(url, tmp_path / "missing.bin", progress=False)
    assert url in str(info.value)
    assert list(tmp_path.glob("missing.bin*")) == []


def test_download_gives_up_after_retries(tmp_path: Path):
    with LoopbackServer(tmp_path) as s:  # a port that is closed once the server is gone
        url = s.url("f.bin")
    with pytest.raises(DownloadError, match="after 3 attempts") as info:
        download(url, tmp_path / "f.bin", retries=2, progress=False)
    assert str(info.value).startswith(url)


def test_download_skips_a_valid_existing_file(server: LoopbackServer, blob: bytes, tmp_path: Path):
    dest = tmp_path / "f.bin"
    md5 = hashlib.md5(blob).hexdigest()
    download(server.url("f.bin"), dest, md5=md5, progress=False)
    server.reset_counters()
    download(server.url("f.bin"), dest, md5=md5, progress=False)
    download(server.url("f.bin"), dest, size=SIZE, progress=False)
    assert server.bytes_served == 0 and server.requests == []


def test_probe_and_read_range(server: LoopbackServer, blob: bytes):
    url = server.url("f.bin")
    assert probe(url) == RemoteInfo(url, SIZE, True)
    assert read_range(url, 10, 20) == blob[10:20]
    server.drop_after = {"f.bin": 100}
    assert read_range(url, 1000, 301_000) == blob[1000:301_000]
    server.ranges = False
    assert probe(url) == RemoteInfo(url, SIZE, False)
    with pytest.raises(RangeNotSupportedError, match="range"):
        read_range(url, 10, 20)


# --- remote zip ---------------------------------------------------------------------------


def test_listing_transfers_only_the_directory(server: LoopbackServer, archive: bytes):
    rz = RemoteZip(server.url("data.zip?download=1"))
    assert server.requests == []  # lazy
    members = rz.members
    assert set(members) == set(MEMBERS)
    assert members["tiles/"].is_dir and not members["readme.txt"].is_dir
    assert members["tiles/a/naip_1.tif"].method == 0 and members["tiles/a/lc_1.tif"].method == 8
    with zipfile.ZipFile(server.root / "data.zip") as zf:
        for info in zf.infolist():
            m = members[info.filename]
            assert (m.size, m.compressed_size, m.crc32, m.header_offset) == (
                info.file_size, info.compress_size, info.CRC, info.header_offset,
            )  # fmt: skip
    assert server.bytes_served == rz.directory_bytes <= TAIL + directory_size(archive)
    assert server.bytes_served < len(archive) / 10
    tifs = rz.matching(lambda name: name.endswith(".tif"))
    assert sorted(m.name for m in tifs) == sorted(n for n in FILES if n.endswith(".tif"))


def test_extract_transfers_only_the_members(server: LoopbackServer, archive: bytes, tmp_path: Path):
    rz = RemoteZip(server.url("data.zip"))
    _ = rz.members
    server.reset_counters()
    names = ["tiles/a/lc_1.tif", "tiles/b/naip_2.tif"]
    for name in names:
        dest = rz.extract(name, tmp_path / "out" / name, progress=False)
        assert dest.read_bytes() == MEMBERS[name][0]
        assert not dest.with_name(dest.name + ".zpart").exists()
    needed = compressed_sizes(server.root / "data.zip", names)
    assert needed <= server.bytes_served <= needed + 2 * 30  # + the local headers

    server.reset_counters()  # a rerun finds the outputs complete
    for name in names:
        rz.extract(rz.members[name], tmp_path / "out" / name, progress=False)
    assert server.bytes_served == 0 and server.requests == []


def test_extract_resumes_after_dropped_connection(
    server: LoopbackServer, archive: bytes, tmp_path: Path
):
    rz = RemoteZip(server.url("data.zip"))
    _ = rz.members
    server.reset_counters()
    server.drop_after = {"data.zip": 50_000}
    name = "tiles/a/naip_1.tif"
    dest = rz.extract(name, tmp_path / "naip_1.tif", progress=False)
    assert dest.read_bytes() == MEMBERS[name][0]
    assert not (tmp_path / "naip_1.tif.zpart").exists()
    assert server.bytes_served == rz.members[name].compressed_size + 30


def test_extract_continues_a_zpart_from_an_earlier_run(
    server: LoopbackServer, archive: bytes, tmp_path: Path
):
    rz = RemoteZip(server.url("data.zip"))
    member = rz.members["tiles/b/lc_2.tif"]
    start = member.header_offset + 30 + len(member.name.encode())
    (tmp_path / "lc_2.tif.zpart").write_bytes(archive[start : start + 10_000])
    server.reset_counters()
    dest = rz.extract(member, tmp_path / "lc_2.tif", progress=False)
    assert dest.read_bytes() == MEMBERS[member.name][0]
    assert server.bytes_served == member.compressed_size - 10_000 + 30


@pytest.mark.parametrize("name", ["tiles/a/naip_1.tif", "tiles/b/naip_2.tif"])
def test_corrupt_member_is_rejected(
    server: LoopbackServer, archive: bytes, tmp_path: Path, name: str
):
    raw = bytearray(archive)
    with zipfile.ZipFile(server.root / "data.zip") as zf:
        info = zf.getinfo(name)
    raw[info.header_offset + 30 + len(name) + 5000] ^= 0xFF
    (server.root / "data.zip").write_bytes(bytes(raw))
    rz = RemoteZip(server.url("data.zip"))
    match = "CRC-32 mismatch" if info.compress_type == 0 else "CRC-32|corrupt"
    with pytest.raises(DownloadError, match=match) as error:
        rz.extract(name, tmp_path / "out" / "out.tif", progress=False)
    assert str(error.value).startswith(f"{rz.url}: member {name}: ")
    assert list((tmp_path / "out").iterdir()) == []  # no output, temporary or .zpart left


def test_zip64_archive(server: LoopbackServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    # Lowered limits make zipfile write what a >4 GiB archive holds: ZIP64 extra fields for
    # sizes and offsets in the central directory, and the ZIP64 end records.
    path = server.root / "big.zip"
    with monkeypatch.context() as patch, zipfile.ZipFile(path, "w") as zf:
        patch.setattr(zipfile, "ZIP64_LIMIT", 1000)
        patch.setattr(zipfile, "ZIP_FILECOUNT_LIMIT", 3)
        for name, (content, method) in MEMBERS.items():
            info = zipfile.ZipInfo(name)
            info.compress_type = method
            if name.endswith("/"):
                zf.writestr(info, content)
                continue
            with zf.open(info, "w", force_zip64=True) as f:
                f.write(content)
        zf.close()  # the end records are written while the limits are lowered
    raw = bytearray(path.read_bytes())
    assert raw.find(b"PK\x06\x06") > 0 and raw.find(b"PK\x06\x07") > 0
    # Placeholders in the classic record, as in a real ZIP64 archive.
    struct.pack_into("<2H2I", raw, len(raw) - 22 + 8, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF)
    path.write_bytes(bytes(raw))

    rz = RemoteZip(server.url("big.zip"), size=len(raw))
    assert set(rz.members) == set(MEMBERS)
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            m = rz.members[info.filename]
            assert (m.size, m.compressed_size, m.header_offset) == (
                info.file_size, info.compress_size, info.header_offset,
            )  # fmt: skip
    assert raw.count(b"\xff" * 4) >= 2 * len(FILES)  # placeholders for the ZIP64 extras
    for name in ["tiles/b/lc_2.tif", "tiles/b/ümlaut.txt"]:
        dest = rz.extract(name, tmp_path / "out" / name, progress=False)
        assert dest.read_bytes() == MEMBERS[name][0]


def test_extract_members_falls_back_to_whole_download(
    server: LoopbackServer, archive: bytes, tmp_path: Path
):
    server.ranges = False
    names = ["tiles/a/naip_1.tif", "tiles/b/ümlaut.txt"]
    archive_path = tmp_path / "cache" / "data.zip"
    paths = extract_members(
        server.url("data.zip"),
        names,
        tmp_path / "out",
        archive_path=archive_path,
        md5=hashlib.md5(archive).hexdigest(),
        progress=False,
    )
    assert paths == [tmp_path / "out" / n for n in names]
    assert [p.read_bytes() for p in paths] == [MEMBERS[n][0] for n in names]
    assert archive_path.read_bytes() == archive
    assert not (tmp_path / "out" / "readme.txt").exists()


def test_extract_members_uses_a_local_archive_offline(
    server: LoopbackServer, archive: bytes, tmp_path: Path
):
    archive_path = tmp_path / "data.zip"
    shutil.copy(server.root / "data.zip", archive_path)
    paths = extract_members(
        server.url("data.zip"), FILES, tmp_path / "out", archive_path=archive_path, progress=False
    )
    assert [p.read_bytes() for p in paths] == [MEMBERS[n][0] for n in FILES]
    assert server.requests == []


def test_extract_members_by_range_and_rerun(server: LoopbackServer, archive: bytes, tmp_path: Path):
    names = ["tiles/a/lc_1.tif", "readme.txt"]
    kwargs = {"archive_path": tmp_path / "data.zip", "progress": False}
    paths = extract_members(server.url("data.zip"), names, tmp_path / "out", **kwargs)
    assert [p.read_bytes() for p in paths] == [MEMBERS[n][0] for n in names]
    assert not (tmp_path / "data.zip").exists()
    listing = RemoteZip(server.url("data.zip")).directory_bytes
    server.reset_counters()
    extract_members(server.url("data.zip"), names, tmp_path / "out", **kwargs)
    assert server.bytes_served == listing  # only the listing; no member bytes again


def test_extract_members_unknown_member(server: LoopbackServer, archive: bytes, tmp_path: Path):
    url = server.url("data.zip")
    with pytest.raises(DownloadError, match=r"no member 'nope\.tif'") as info:
        extract_members(url, ["nope.tif"], tmp_path, archive_path=tmp_path / "a.zip")
    assert str(info.value).startswith(url)
