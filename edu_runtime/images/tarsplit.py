"""A layer's tar, rebuilt byte for byte from its unpacked directory (Docker's tar-split).

The store unpacks every layer once, into the directory overlayfs stacks. Keeping the layer's
tar (its blob) beside that directory stores every file twice, once packed and once not: for
the course's ten images, 437 MB of blobs beside 1298 MB of files (bench/store_size.py). A
tar is only its files' contents, in order, between 512-byte headers and zero padding; the
contents are in the directory already. So, as Docker does (``tar-split``), the store keeps
only the rest: each header and padding byte for byte, and for each file's content its path
and size. That *split* gzips to a few kB per thousand files, and with the directory it gives
back the very same tar, whose sha256 must be the layer's ``diff_id``.

A registry names a layer by its *compressed* bytes (the blob's digest), not by its tar. gzip
is a function of its input and its settings, so a blob that this machine's gzip made (edu's
own ``build``, ``bootstrap`` and ``commit``: Python's ``gzip`` with mtime 0, no file name, a
known level) is rebuilt too: the same tar, compressed the same way, gives the same digest.
One compressed by another program (Go's gzip in Docker, pigz) cannot be, in general: its
blob stays in the store. A layer's blob leaves the store only once its tar has been rebuilt
from the directory and hashed to the ``diff_id``, and its recompression compared byte for
byte with the blob's first 4 MB, and its trailer (the tar's CRC-32 and length) with the
blob's last 8 bytes (``GzipCheck``). One thing is taken on trust: that a deflate stream this
zlib made alike for 4 MB goes on alike (a program that flushed it mid-way would break that;
its rebuilt blob would then be refused by its digest). Every blob rebuilt later is hashed
against its digest before anyone gets it.

Split file (gzip)::

    EDUTS1\\n
    R <u32 n> <n raw bytes>              headers, extended headers, padding, the end blocks
    F <u64 size> <u32 n> <n path bytes>  a file's content: read from the layer dir
    E

Introduced in notebooks/04-images.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import stat
import struct
import tarfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from .. import kernel

MAGIC = b"EDUTS1\n"
BLOCK = 512
_CHUNK = 1 << 20
_REGULAR = (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.CONTTYPE)
_POSIX_MAGIC = b"ustar\x0000"


class SplitError(Exception):
    """A tar that cannot be split (the store keeps its blob), or a split that does not rebuild
    its tar (the layer dir or the split is damaged)."""


# ---- recording ------------------------------------------------------------------------------

class Recorder:
    """Fed the uncompressed tar as it streams by; writes its split to ``out``.

    ``feed`` never raises on odd input: a tar it cannot split (a sparse file, a name with
    ``..``) just makes ``ok`` False, and the layer keeps its blob."""

    def __init__(self, out: BinaryIO):
        self._gz = gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0,
                                 compresslevel=6)
        self._gz.write(MAGIC)
        self.ok = True
        self.tar_size = 0
        self._buf = bytearray()  # input not yet parsed
        self._out = bytearray()  # records not yet compressed
        self._raw = bytearray()  # raw bytes not yet written
        self._state = "header"
        self._left = 0  # bytes left of the current payload
        self._collect = bytearray()  # an extended header's payload, being read
        self._kind = b""
        self._pax_path: bytes | None = None
        self._pax_size: int | None = None
        self._long_name: bytes | None = None

    def feed(self, data: bytes) -> None:
        """The next bytes of the tar stream."""
        self.tar_size += len(data)
        if not self.ok:
            return
        if self._state == "tail":
            self._raw += data
            self._flush_raw(big_only=True)
            return
        self._buf += data
        try:
            self._parse()
        except SplitError:
            self.ok = False

    def _parse(self) -> None:
        buf, pos = self._buf, 0
        while True:
            if self._state == "header":
                if len(buf) - pos < BLOCK:
                    break
                block = bytes(buf[pos:pos + BLOCK])
                pos += BLOCK
                self._raw += block
                if block == bytes(BLOCK):  # the end: all that follows is kept as it is
                    self._state = "tail"
                    self._raw += buf[pos:]
                    pos = len(buf)
                    break
                self._header(block)
            elif self._state == "file":
                n = min(self._left, len(buf) - pos)
                pos += n
                self._left -= n
                if self._left:
                    break
                self._state = "header"
                pad = -self._size % BLOCK
                if pad:
                    self._state, self._left = "raw", pad
            elif self._state in ("raw", "collect"):
                n = min(self._left, len(buf) - pos)
                chunk = buf[pos:pos + n]
                self._raw += chunk
                if self._state == "collect":
                    self._collect += chunk
                pos += n
                self._left -= n
                if self._left:
                    break
                if self._state == "collect":
                    self._extended(bytes(self._collect))
                    self._collect = bytearray()
                self._state = "header"
            else:  # tail
                self._raw += buf[pos:]
                pos = len(buf)
                break
        del buf[:pos]
        self._flush_raw(big_only=True)

    def _header(self, block: bytes) -> None:
        kind, size = _type_and_size(block)
        if kind in (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.GNUTYPE_LONGNAME,
                    tarfile.SOLARIS_XHDTYPE):
            if size > 1 << 20:
                raise SplitError("extended header too large")
            self._kind = kind
            self._state, self._left = "collect", size + (-size % BLOCK)
            self._ext_size = size
            if not self._left:
                self._extended(b"")
                self._state = "header"
            return
        if kind == tarfile.GNUTYPE_SPARSE:
            raise SplitError("sparse file")
        name = self._long_name if self._long_name is not None else _ustar_name(block)
        if self._pax_path is not None:
            name = self._pax_path
        if self._pax_size is not None:
            size = self._pax_size
        self._pax_path = self._pax_size = self._long_name = None
        if kind in _REGULAR and size:
            path = _clean(name)
            self._emit_file(path, size)
            self._state, self._left, self._size = "file", size, size
        elif size:
            self._state, self._left = "raw", size + (-size % BLOCK)

    def _extended(self, data: bytes) -> None:
        data = data[:self._ext_size]
        if self._kind == tarfile.GNUTYPE_LONGNAME:
            self._long_name = data.split(b"\0", 1)[0]
            return
        records = _pax_records(data)
        if any(k.startswith(b"GNU.sparse.") for k in records):
            raise SplitError("sparse file")
        if self._kind == tarfile.XGLTYPE:
            if b"path" in records or b"size" in records:
                raise SplitError("a global header names a path or size")
            return
        if b"path" in records:
            self._pax_path = records[b"path"]
        if b"size" in records:
            try:
                self._pax_size = int(records[b"size"])
            except ValueError:
                raise SplitError("bad pax size") from None

    def _emit_file(self, path: bytes, size: int) -> None:
        self._flush_raw()
        self._out += b"F" + struct.pack(">QI", size, len(path)) + path

    def _flush_raw(self, big_only: bool = False) -> None:
        """Raw bytes become a record (while a file's content streams by, only once they are
        many); records go to gzip in batches."""
        if self._raw and (not big_only or len(self._raw) >= _CHUNK):
            self._out += b"R" + struct.pack(">I", len(self._raw)) + self._raw
            self._raw = bytearray()
        if len(self._out) >= 1 << 16:
            self._gz.write(self._out)
            self._out = bytearray()

    def close(self) -> bool:
        """Finish the split; True if the tar could be split."""
        if self.ok and self._state != "tail" and (self._state != "header" or self._buf):
            self.ok = False  # cut short in a member: tarfile refuses that too
        if self.ok:
            self._raw += self._buf
            self._buf = bytearray()
            self._flush_raw()
            self._gz.write(self._out + b"E")
        self._gz.close()
        return self.ok


def _type_and_size(block: bytes) -> tuple[bytes, int]:
    """A header block's type and size, its checksum checked (tarfile's rules, without
    decoding the names and times it does not need here)."""
    field = block[148:156].split(b"\0", 1)[0].strip()
    try:
        chksum = int(field or b"0", 8)
    except ValueError:
        raise SplitError("a header's checksum is not a number") from None
    unsigned = sum(block[:148]) + 256 + sum(block[156:])
    if chksum != unsigned:
        signed = unsigned - 2 * sum(b for b in block[:148] + block[156:] if b > 127)
        if chksum != signed:
            raise SplitError("a header's checksum is wrong")
    raw = block[124:136]
    if raw[0] == 0x80:
        size = int.from_bytes(raw[1:], "big")
    elif raw[0] & 0x80:
        raise SplitError("a negative size")
    else:
        try:
            size = int(raw.split(b"\0", 1)[0].strip() or b"0", 8)
        except ValueError:
            raise SplitError("a header's size is not a number") from None
    kind = block[156:157]
    if kind == tarfile.AREGTYPE and block[:100].split(b"\0", 1)[0].endswith(b"/"):
        kind = tarfile.DIRTYPE  # old tars' directories, as tarfile reads them
    return kind, size


def _ustar_name(block: bytes) -> bytes:
    name = block[0:100].split(b"\0", 1)[0]
    if block[257:265] == _POSIX_MAGIC:
        prefix = block[345:500].split(b"\0", 1)[0]
        if prefix:
            name = prefix + b"/" + name
    return name


def _pax_records(data: bytes) -> dict[bytes, bytes]:
    out, pos = {}, 0
    while pos < len(data):
        space = data.find(b" ", pos)
        if space < 0:
            break
        try:
            length = int(data[pos:space])
        except ValueError:
            raise SplitError("bad pax record") from None
        if length <= 0:
            raise SplitError("bad pax record")
        record = data[space + 1:pos + length - 1]
        key, _, value = record.partition(b"=")
        out[key] = value
        pos += length
    return out


def _clean(name: bytes) -> bytes:
    """A member's name as ``layers.extract`` places it: relative, without ``.`` parts."""
    parts = [p for p in name.split(b"/") if p not in (b"", b".")]
    if not parts or b".." in parts or name.startswith(b"/"):
        raise SplitError("a name that extract refuses")
    return b"/".join(parts)


# ---- rebuilding ---------------------------------------------------------------------------

def records(split: Path) -> Iterator[tuple[bytes, int, bytes]]:
    """The split's records: ``(b"R", 0, raw)`` and ``(b"F", size, path)``."""
    try:
        with gzip.open(split, "rb") as f:
            if f.read(len(MAGIC)) != MAGIC:
                raise SplitError(f"{split} is not a tar-split")
            while (kind := f.read(1)) != b"E":
                if kind == b"R":
                    (n,) = struct.unpack(">I", f.read(4))
                    raw = f.read(n)
                    if len(raw) != n:
                        raise SplitError(f"{split} is cut short")
                    yield b"R", 0, raw
                elif kind == b"F":
                    size, n = struct.unpack(">QI", f.read(12))
                    yield b"F", size, f.read(n)
                else:
                    raise SplitError(f"{split} is damaged")
    except (OSError, EOFError, struct.error, zlib.error) as exc:
        raise SplitError(f"{split} cannot be read ({exc})") from None


def tar_chunks(split: Path, layer_dir: Path) -> Iterator[bytes]:
    """The layer's tar, rebuilt: raw parts from the split, file contents from ``layer_dir``
    (each opened inside the layer as the unpack placed it, never following a link out)."""
    try:
        root = os.open(layer_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise SplitError(f"layer {layer_dir.name[:12]} cannot be read ({exc.strerror})") \
            from None
    try:
        for kind, size, data in records(split):
            if kind == b"R":
                yield data
                continue
            try:
                fd = kernel.openat2(root, os.fsdecode(data), os.O_RDONLY | os.O_NOFOLLOW,
                                    kernel.RESOLVE_IN_ROOT | kernel.RESOLVE_NO_MAGICLINKS)
            except OSError as exc:
                raise SplitError(f"{os.fsdecode(data)!r} of layer {layer_dir.name[:12]} "
                                 f"cannot be read ({exc.strerror})") from None
            try:
                st = os.fstat(fd)
                if not stat.S_ISREG(st.st_mode) or st.st_size != size:
                    raise SplitError(f"{os.fsdecode(data)!r} of layer {layer_dir.name[:12]} "
                                     "is not the file the layer's tar holds")
                left = size
                while left:
                    chunk = os.read(fd, min(_CHUNK, left))
                    if not chunk:
                        raise SplitError(f"{os.fsdecode(data)!r} is shorter than its header")
                    left -= len(chunk)
                    yield chunk
            finally:
                os.close(fd)
    finally:
        os.close(root)


def gzip_chunks(chunks: Iterator[bytes], level: int, header: bytes) -> Iterator[bytes]:
    """``chunks`` compressed as Python's gzip does it (``gzip.GzipFile`` and
    ``gzip.compress``: zlib's deflate at ``level``, default window and memory), after the
    blob's own 10-byte ``header`` (its mtime, OS byte and flags are not deflate's)."""
    comp = zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS, zlib.DEF_MEM_LEVEL, 0)
    crc = size = 0
    yield header
    for chunk in chunks:
        crc = zlib.crc32(chunk, crc)
        size += len(chunk)
        if out := comp.compress(chunk):
            yield out
    yield comp.flush() + struct.pack("<II", crc, size & 0xFFFFFFFF)


def gzip_level(head: bytes) -> int | None:
    """The level Python's gzip would have written a blob starting with ``head`` at (from the
    header's XFL byte); None if the header is not a plain 10-byte one (a name, a comment)."""
    if len(head) < 10 or head[:4] != b"\x1f\x8b\x08\x00":
        return None
    return {0: 6, 2: 9, 4: 1}.get(head[8])


class GzipCheck:
    """Recompresses the tar as it streams by and compares it, byte for byte, with the blob
    being read: the first ``PREFIX`` bytes of it (all of a smaller blob). A blob another
    program compressed (Go's gzip, pigz, GNU gzip) differs within its first kB; one this
    zlib made at this level goes on the same to its end, since deflate is a function of its
    input and settings. Every rebuilt blob is hashed against its digest all the same."""

    PREFIX = 4 << 20

    def __init__(self, blob: Path, level: int):
        self._blob = open(blob, "rb")
        self.header = self._blob.read(10)
        self.ok = True
        self._done = False  # the prefix matched: no need to compress further
        self._compared = 0
        self._comp = zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS,
                                      zlib.DEF_MEM_LEVEL, 0)
        self._crc = self._size = 0

    def _compare(self, data: bytes) -> None:
        if self.ok and data:
            if self._blob.read(len(data)) != data:
                self.ok = False
            self._compared += len(data)
            self._done = self._compared >= self.PREFIX

    def feed(self, data: bytes) -> None:
        """The next bytes of the tar."""
        if self.ok:
            self._crc = zlib.crc32(data, self._crc)  # of all of it: the blob's trailer
            self._size += len(data)
            if not self._done:
                self._compare(self._comp.compress(data))

    def close(self) -> bool:
        """True if the recompressed tar is the blob (all of it, to its last byte; or its
        prefix, and then the blob must end with this tar's own gzip trailer, CRC-32 and
        length, exactly at its end: a second gzip member or padding after it would not)."""
        trailer = struct.pack("<II", self._crc, self._size & 0xFFFFFFFF)
        try:
            if self.ok and not self._done:
                self._compare(self._comp.flush() + trailer)
                self.ok = self.ok and self._blob.read(1) == b""
            elif self.ok:
                self._blob.seek(-8, os.SEEK_END)
                self.ok = self._blob.read(8) == trailer
            return self.ok
        finally:
            self._blob.close()


def sha256_of(chunks: Iterator[bytes]) -> tuple[str, int]:
    """``sha256:<hex>`` and the length of the stream ``chunks`` makes."""
    h, n = hashlib.sha256(), 0
    for chunk in chunks:
        h.update(chunk)
        n += len(chunk)
    return "sha256:" + h.hexdigest(), n
