"""Members of a remote zip archive, read through HTTP range requests.

Listing a :class:`RemoteZip` transfers the end of the file (at most 64 KiB + 22 bytes) and the
central directory; extracting a member transfers its 30-byte local header and its compressed
bytes. ZIP64 archives (over 4 GiB or 65535 members) are supported. When the server ignores
ranges, :func:`extract_members` downloads the whole archive instead.
"""

from __future__ import annotations

import shutil
import struct
import zipfile
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import BinaryIO

from tqdm.auto import tqdm

from lcip.acquire.http import (
    CHUNK,
    RangeNotSupportedError,
    byte_bar,
    download,
    partial_file,
    probe,
    read_range,
    stream_into,
)
from lcip.errors import DownloadError
from lcip.io.atomic import atomic_path

# Record layouts (APPNOTE.TXT 4.3): signature first, little-endian.
_EOCD = struct.Struct("<4s4H2IH")  # disk, cd disk, entries here, entries, cd size, offset, comment
_ZIP64_LOCATOR = struct.Struct("<4sIQI")  # disk of ZIP64 EOCD, its offset, disks
_ZIP64_EOCD = struct.Struct("<4sQ2H2I4Q")  # record size, versions, disks, entries x2, size, offset
_CENTRAL = struct.Struct("<4s6H3I5H2I")  # versions, flags, method, time, date, crc, sizes, ...
_LOCAL = struct.Struct("<4s5H3I2H")  # version, flags, method, time, date, crc, sizes, lengths
_EOCD_SIG = b"PK\x05\x06"
_ZIP64_LOCATOR_SIG = b"PK\x06\x07"
_ZIP64_EOCD_SIG = b"PK\x06\x06"
_CENTRAL_SIG = b"PK\x01\x02"
_LOCAL_SIG = b"PK\x03\x04"
_MAX_COMMENT = 0xFFFF
_UTF8_FLAG = 0x800
_ENCRYPTED_FLAG = 0x1
_STORED, _DEFLATED = 0, 8


@dataclass(frozen=True)
class ZipMember:
    """One entry of a zip's central directory.

    Attributes:
        name: path inside the archive (``/``-separated; folders end with ``/``).
        compressed_size: bytes stored in the archive.
        size: bytes once extracted.
        crc32: CRC-32 of the extracted bytes.
        method: compression method (0 stored, 8 deflate).
        header_offset: offset of the member's local header in the archive.
        flags: general purpose bit flags.
    """

    name: str
    compressed_size: int
    size: int
    crc32: int
    method: int
    header_offset: int
    flags: int = 0

    @property
    def is_dir(self) -> bool:
        """Whether the entry is a folder."""
        return self.name.endswith("/")

    @property
    def compression(self) -> str:
        """The compression method by name: ``stored``, ``deflated`` or ``method <n>``.

        Only a stored member can be read by ranges like a plain file (e.g. GDAL's
        ``/vsizip//vsicurl/``); reading any part of a deflated one inflates it from its start.
        """
        return {_STORED: "stored", _DEFLATED: "deflated"}.get(self.method, f"method {self.method}")


def _file_crc(path: Path) -> int:
    crc = 0
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            crc = zlib.crc32(chunk, crc)
    return crc


def _is_extracted(dest: Path, size: int, crc32: int) -> bool:
    """Whether ``dest`` already holds a member with this size and CRC-32."""
    return dest.is_file() and dest.stat().st_size == size and _file_crc(dest) == crc32


def _dest_for(root: Path, name: str, source: str) -> Path:
    """``root / name``, refusing names that would land outside ``root``."""
    parts = Path(name).parts
    if not parts or Path(name).is_absolute() or ".." in parts:
        raise DownloadError(f"{source}: member {name!r} has an unsafe path")
    return Path(root, *parts)


def _zip64_extra(extra: bytes, values: list[int]) -> list[int]:
    """Replace the 0xFFFFFFFF placeholders among ``values`` by the ZIP64 extra field's values.

    ``values`` are ``[size, compressed_size, header_offset]`` from the central directory; the
    ZIP64 field (id 0x0001) holds 8-byte values for exactly the placeholders, in that order.
    """
    pos = 0
    while pos + 4 <= len(extra):
        tag, length = struct.unpack_from("<2H", extra, pos)
        if tag == 1:
            wide = iter(struct.unpack_from(f"<{length // 8}Q", extra, pos + 4))
            return [next(wide, v) if v == 0xFFFFFFFF else v for v in values]
        pos += 4 + length
    return values


class RemoteZip:
    """A zip archive on an HTTP server that answers byte-range requests.

    Nothing is transferred until :attr:`members` is first used.

    Args:
        url: the archive.
        size: its length in bytes, if known (saves a ``HEAD`` request).
        timeout: seconds to wait for the server on each read.
        retries: retries per request after a dropped connection.
    """

    def __init__(
        self, url: str, *, size: int | None = None, timeout: float = 60, retries: int = 5
    ) -> None:
        self.url = url
        self.size = size
        self.timeout = timeout
        self.retries = retries
        self._directory_bytes = 0

    def _read(self, start: int, end: int) -> bytes:
        return read_range(self.url, start, end, timeout=self.timeout, retries=self.retries)

    @property
    def directory_bytes(self) -> int:
        """Bytes transferred to list the archive (tail and central directory)."""
        _ = self.members
        return self._directory_bytes

    @cached_property
    def members(self) -> dict[str, ZipMember]:
        """The archive's entries by name, read from its central directory on first use.

        Raises:
            RangeNotSupportedError: the server does not serve byte ranges.
            DownloadError: HTTP error, or not a zip archive.
        """
        if self.size is None:
            info = probe(self.url, timeout=self.timeout)
            if not info.accepts_ranges:
                raise RangeNotSupportedError(f"{self.url}: the server ignores HTTP range requests")
            if info.size is None:
                raise DownloadError(f"{self.url}: the server does not report the file size")
            self.size = info.size
        tail_start = max(0, self.size - _MAX_COMMENT - _EOCD.size)
        tail = self._read(tail_start, self.size)
        self._directory_bytes = len(tail)

        def fetch(start: int, end: int) -> bytes:  # from the tail when it holds these bytes
            if start >= tail_start:
                return tail[start - tail_start : end - tail_start]
            self._directory_bytes += end - start
            return self._read(start, end)

        count, cd_size, cd_offset = self._directory_location(tail, fetch)
        return self._parse_directory(fetch(cd_offset, cd_offset + cd_size), count)

    def _directory_location(
        self, tail: bytes, fetch: Callable[[int, int], bytes]
    ) -> tuple[int, int, int]:
        """Entry count, size and offset of the central directory, from the archive's end."""
        pos = len(tail) - _EOCD.size + len(_EOCD_SIG)
        while True:  # the last signature followed by a record and its whole comment
            pos = tail.rfind(_EOCD_SIG, 0, pos)
            if pos < 0:
                raise DownloadError(f"{self.url}: not a zip archive (no end of central directory)")
            *_, count, cd_size, cd_offset, comment = _EOCD.unpack_from(tail, pos)
            if pos + _EOCD.size + comment <= len(tail):
                break
            pos += len(_EOCD_SIG) - 1
        locator = pos - _ZIP64_LOCATOR.size
        if locator < 0 or tail[locator : locator + 4] != _ZIP64_LOCATOR_SIG:
            return count, cd_size, cd_offset
        offset = _ZIP64_LOCATOR.unpack_from(tail, locator)[2]
        record = fetch(offset, offset + _ZIP64_EOCD.size)
        if len(record) != _ZIP64_EOCD.size or record[:4] != _ZIP64_EOCD_SIG:
            raise DownloadError(f"{self.url}: corrupt ZIP64 end of central directory record")
        *_, count, cd_size, cd_offset = _ZIP64_EOCD.unpack(record)
        return count, cd_size, cd_offset

    def _parse_directory(self, directory: bytes, count: int) -> dict[str, ZipMember]:
        members: dict[str, ZipMember] = {}
        pos = 0
        for _ in range(count):
            if len(directory) < pos + _CENTRAL.size or directory[pos : pos + 4] != _CENTRAL_SIG:
                raise DownloadError(
                    f"{self.url}: corrupt central directory at entry {len(members)}"
                )
            (_, _, _, flags, method, _, _, crc, csize, usize, name_len, extra_len, comment_len,
             _, _, _, offset) = _CENTRAL.unpack_from(directory, pos)  # fmt: skip
            pos += _CENTRAL.size
            raw_name = directory[pos : pos + name_len]
            extra = directory[pos + name_len : pos + name_len + extra_len]
            pos += name_len + extra_len + comment_len
            name = raw_name.decode("utf-8" if flags & _UTF8_FLAG else "cp437", "replace")
            usize, csize, offset = _zip64_extra(extra, [usize, csize, offset])
            members[name] = ZipMember(name, csize, usize, crc, method, offset, flags)
        return members

    def member(self, name: str) -> ZipMember:
        """The entry called ``name``.

        Raises:
            DownloadError: no such entry.
        """
        try:
            return self.members[name]
        except KeyError:
            raise DownloadError(f"{self.url}: no member {name!r} in the archive") from None

    def matching(self, predicate: Callable[[str], bool]) -> list[ZipMember]:
        """Entries (not folders) whose name satisfies ``predicate``, e.g. for a dry run."""
        return [m for m in self.members.values() if not m.is_dir and predicate(m.name)]

    def extract(self, member: str | ZipMember, dest: Path, *, progress: bool = True) -> Path:
        """Extract one member to ``dest``, transferring only its header and compressed bytes.

        A ``dest`` with the member's size and CRC-32 is kept without any transfer. Compressed
        bytes are kept in ``<dest>.zpart`` until the member is verified, so an interrupted
        extraction continues where it stopped.

        Returns:
            ``dest``.

        Raises:
            DownloadError: HTTP error, unsupported compression or encryption, or a CRC-32
                mismatch (the partial files are removed).
        """
        m = self.member(member) if isinstance(member, str) else member
        dest = Path(dest)
        if m.is_dir:
            dest.mkdir(parents=True, exist_ok=True)
            return dest
        if _is_extracted(dest, m.size, m.crc32):
            return dest
        where = f"{self.url}: member {m.name}"
        if m.method not in (_STORED, _DEFLATED) or m.flags & _ENCRYPTED_FLAG:
            kind = "encrypted" if m.flags & _ENCRYPTED_FLAG else f"compression method {m.method}"
            raise DownloadError(f"{where}: {kind} is not supported (only stored or deflate)")
        header = self._read(m.header_offset, m.header_offset + _LOCAL.size)
        if header[:4] != _LOCAL_SIG:
            raise DownloadError(f"{where}: no local file header at offset {m.header_offset}")
        *_, name_len, extra_len = _LOCAL.unpack(header)
        data_start = m.header_offset + _LOCAL.size + name_len + extra_len

        dest.parent.mkdir(parents=True, exist_ok=True)
        zpart = dest.with_name(dest.name + ".zpart")
        have = zpart.stat().st_size if zpart.is_file() else 0
        if have > m.compressed_size:
            zpart.unlink()
            have = 0
        bar = byte_bar(m.compressed_size, have, Path(m.name).name, progress)
        with bar, partial_file(zpart) as out:
            if have < m.compressed_size:
                stream_into(
                    self.url,
                    out,
                    data_start + have,
                    data_start + m.compressed_size,
                    ranges_required=True,
                    timeout=self.timeout,
                    retries=self.retries,
                    bar=bar,
                )
        try:
            with atomic_path(dest) as tmp, open(zpart, "rb") as src, open(tmp, "wb") as out:
                problem = _decompress(src, out, m)
                if problem is not None:
                    raise DownloadError(f"{where}: {problem}; the partial files were removed")
        except DownloadError:
            zpart.unlink()
            raise
        zpart.unlink()
        return dest


def _decompress(src: BinaryIO, out: BinaryIO, member: ZipMember) -> str | None:
    """Decompress a member from ``src`` into ``out``; returns why its bytes are bad, or None."""
    inflater = zlib.decompressobj(-15) if member.method == _DEFLATED else None
    crc = size = 0

    def emit(data: bytes) -> None:
        nonlocal crc, size
        out.write(data)
        crc = zlib.crc32(data, crc)
        size += len(data)

    try:
        while chunk := src.read(CHUNK):
            if inflater is None:
                emit(chunk)
                continue
            while chunk:  # bound the output of highly compressed chunks
                emit(inflater.decompress(chunk, CHUNK))
                chunk = inflater.unconsumed_tail
        if inflater is not None:
            emit(inflater.flush())
    except zlib.error as err:
        return f"corrupt deflate data ({err}), CRC-32 not checked"
    if size != member.size or crc != member.crc32:
        return (
            f"CRC-32 mismatch (expected {member.crc32:08x} for {member.size} bytes, "
            f"got {crc:08x} for {size} bytes)"
        )
    return None


def _extract_local(
    archive: Path, names: list[str], dest_root: Path, *, progress: bool
) -> list[Path]:
    """Extract members from a local zip file atomically, keeping outputs that already match."""
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as err:
        raise DownloadError(f"{archive}: not a readable zip archive ({err})") from err
    paths = []
    with zf:
        for name in tqdm(names, desc=archive.name, unit="file", disable=not progress):
            try:
                info = zf.getinfo(name)
            except KeyError:
                raise DownloadError(f"{archive}: no member {name!r} in the archive") from None
            dest = _dest_for(dest_root, name, str(archive))
            paths.append(dest)
            if info.is_dir():
                dest.mkdir(parents=True, exist_ok=True)
            elif not _is_extracted(dest, info.file_size, info.CRC):
                try:
                    with atomic_path(dest) as tmp, zf.open(info) as src, open(tmp, "wb") as out:
                        shutil.copyfileobj(src, out, CHUNK)
                except (zipfile.BadZipFile, zlib.error) as err:  # CRC-32 checked by zipfile
                    raise DownloadError(f"{archive}: member {name}: {err}") from err
    return paths


def extract_members(
    url: str,
    names: Iterable[str],
    dest_root: Path,
    *,
    archive_path: Path,
    md5: str | None = None,
    progress: bool = True,
) -> list[Path]:
    """Extract the named members of a remote zip to ``dest_root / name``.

    If ``archive_path`` exists (the whole archive downloaded earlier, e.g. by hand), members
    come from it without any network access. Otherwise they are read with range requests;
    when the server does not serve ranges, the whole archive is downloaded (resumably, checked
    against ``md5``) to ``archive_path`` and extracted from there. Outputs that already match
    the member's size and CRC-32 are kept.

    Args:
        url: the archive.
        names: member names, as in the archive.
        dest_root: folder the members are extracted into (keeping their folders).
        archive_path: where the whole archive is (or would be downloaded to).
        md5: expected MD5 of the whole archive, checked when it is downloaded.
        progress: show progress bars.

    Returns:
        the extracted paths, in the order of ``names``.

    Raises:
        DownloadError: HTTP error, missing member, bad checksum or CRC-32.
    """
    names = list(names)
    archive_path = Path(archive_path)
    if not archive_path.exists():
        remote = RemoteZip(url)
        try:
            members = [remote.member(name) for name in names]
            return [
                remote.extract(m, _dest_for(dest_root, m.name, url), progress=progress)
                for m in members
            ]
        except RangeNotSupportedError:
            download(url, archive_path, md5=md5, progress=progress)
    return _extract_local(archive_path, names, dest_root, progress=progress)


__all__ = ["RemoteZip", "ZipMember", "extract_members"]
