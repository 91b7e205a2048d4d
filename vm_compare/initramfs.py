"""Write an initramfs: a cpio archive in the "newc" format, the one the Linux kernel unpacks.

At boot the kernel unpacks the initramfs into an empty in-memory filesystem (``rootfs``) and
runs ``/init`` from it. The format is old and simple: for every file, a 110-byte ASCII header
(the magic ``070701`` and thirteen 8-digit hex numbers), the file name, then the file's bytes,
each padded to a multiple of 4. A final entry named ``TRAILER!!!`` ends the archive. That is all
``init/initramfs.c`` in the kernel reads, and all this module writes.

We write it in Python rather than calling ``cpio`` so a student can read how an initramfs is
made, and so the output is deterministic: entries are sorted, every mtime is the same fixed
value, owners are root unless an entry names another, and inode numbers are just 1, 2, 3...
The same inputs give the same bytes, so a hash of the image is a fair cache key.

A whole image's root filesystem can be an initramfs too (``guest_image`` does that), so the
writer also streams large files from the host instead of holding them in memory, and keeps
hardlinks as hardlinks: names of one file share an inode number in the archive.

Introduced in notebooks/01-containers-vs-vms.
"""

from __future__ import annotations

import gzip
import io
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

MAGIC = b"070701"  # "newc": ASCII hex fields, no CRC
TRAILER = "TRAILER!!!"
MTIME = 0  # the same timestamp for every entry keeps the archive reproducible


@dataclass(frozen=True)
class Entry:
    """One archive member: a directory, regular file, symlink, FIFO, device node or hardlink."""

    path: str  # inside the archive, without a leading "/", e.g. "bin/busybox"
    mode: int  # file type and permission bits, e.g. stat.S_IFREG | 0o755
    data: bytes = b""  # file contents, or the link target for a symlink
    rdev: tuple[int, int] = (0, 0)  # (major, minor) for a device node
    uid: int = 0
    gid: int = 0
    source: str | None = None  # read the contents from this host file while writing
    link: str | None = None  # a hardlink: the same inode as the regular file at this path


def directory(path: str, perm: int = 0o755) -> Entry:
    """A directory entry."""
    return Entry(_clean(path), stat.S_IFDIR | perm)


def regular(path: str, data: bytes, perm: int = 0o644) -> Entry:
    """A regular file with the given contents."""
    return Entry(_clean(path), stat.S_IFREG | perm, data)


def symlink(path: str, target: str) -> Entry:
    """A symbolic link; the kernel stores the target as the file's contents."""
    return Entry(_clean(path), stat.S_IFLNK | 0o777, target.encode())


def chardev(path: str, major: int, minor: int, perm: int = 0o600) -> Entry:
    """A character device node, e.g. ``chardev("dev/console", 5, 1)``."""
    return Entry(_clean(path), stat.S_IFCHR | perm, rdev=(major, minor))


def host_file(path: str, source: str, st: os.stat_result) -> Entry:
    """A regular file copied from the host, with the mode and owner in ``st``; it is read
    only while the archive is written, so a large tree never has to fit in memory."""
    return Entry(_clean(path), st.st_mode, uid=st.st_uid, gid=st.st_gid, source=source)


def hardlink(path: str, target: str) -> Entry:
    """A second name for the regular file ``target`` (an archive path): one inode, two names."""
    return Entry(_clean(path), stat.S_IFREG, link=_clean(target))


def newc_bytes(entries: list[Entry]) -> bytes:
    """The whole archive as bytes: missing parent directories added, entries sorted by path."""
    out = io.BytesIO()
    write_members(entries, out)
    return out.getvalue()


def write_members(entries: list[Entry], out: BinaryIO) -> None:
    """Stream the archive into ``out``: missing parents added, entries sorted by path.

    Hardlinks share one inode number, and (as GNU cpio writes them) only the last name of a
    group carries the bytes; the kernel links each later name to the first one it made.
    """
    members = sorted(_with_parents(entries), key=lambda e: e.path)
    by_path = {entry.path: entry for entry in members}
    names: dict[str, list[str]] = {}  # inode's first path -> every path of that inode
    for entry in members:
        if entry.link is not None:
            target = by_path.get(entry.link)
            if target is None or not stat.S_ISREG(target.mode) or target.link is not None:
                raise ValueError(f"{entry.path} links to {entry.link}, not a regular file here")
        names.setdefault(entry.link or entry.path, []).append(entry.path)
    inodes = {first: ino for ino, first in enumerate(names, start=1)}
    for entry in members:
        first = entry.link or entry.path
        inode = by_path[first]
        nlink = 2 if stat.S_ISDIR(entry.mode) else len(names[first])
        carries_data = names[first][-1] == entry.path
        size = _size(inode) if carries_data else 0
        out.write(_header(entry.path, inode.mode, inode.uid, inode.gid, inodes[first], nlink,
                          size, inode.rdev))
        if carries_data:
            _write_data(inode, size, out)
        out.write(b"\0" * (-size % 4))
    out.write(_header(TRAILER, 0, 0, 0, 0, 1, 0, (0, 0)))


def write_newc(entries: list[Entry], out_path: Path) -> Path:
    """Write an uncompressed newc archive to ``out_path`` atomically and return the path."""
    with _atomic(Path(out_path)) as f:
        write_members(entries, f)
    return Path(out_path)


def write_newc_gz(entries: list[Entry], out_path: Path, level: int = 9) -> Path:
    """Write a gzip-compressed newc archive (what ``-initrd`` usually gets) atomically."""
    with _atomic(Path(out_path)) as f:
        # mtime=0 and no file name keep the gzip header free of the build, so the bytes
        # stay reproducible.
        with gzip.GzipFile(filename="", mode="wb", compresslevel=level, fileobj=f,
                           mtime=0) as gz:
            write_members(entries, gz)
    return Path(out_path)


def _header(name: str, mode: int, uid: int, gid: int, ino: int, nlink: int, size: int,
            rdev) -> bytes:
    """One header + name, padded to 4 bytes as the kernel expects (the data follows)."""
    encoded = name.encode() + b"\0"
    if size > 0xFFFFFFFF:
        raise ValueError(f"{name} is larger than 4 GiB, the most a newc header can describe")
    fields = [
        ino,
        mode,
        uid,
        gid,
        nlink,
        MTIME,
        size,
        0,  # devmajor: the device the file lived on; meaningless here
        0,  # devminor
        rdev[0],  # rdevmajor: for device nodes, which device this node *is*
        rdev[1],  # rdevminor
        len(encoded),  # namesize, counting the trailing NUL
        0,  # check: only used by the "crc" variant (070702)
    ]
    header = MAGIC + b"".join(b"%08X" % value for value in fields)
    return _pad(header + encoded)


def _size(entry: Entry) -> int:
    """Bytes of an entry's contents: its data, or its host file's size."""
    return os.stat(entry.source).st_size if entry.source is not None else len(entry.data)


def _write_data(entry: Entry, size: int, out: BinaryIO) -> None:
    """Copy an entry's contents into the archive; a host file must not change meanwhile."""
    if entry.source is None:
        out.write(entry.data)
        return
    copied = 0
    with open(entry.source, "rb") as f:
        while chunk := f.read(min(1 << 20, size - copied)):
            out.write(chunk)
            copied += len(chunk)
    if copied != size:
        raise ValueError(f"{entry.source} changed size while it was archived")


def _pad(chunk: bytes) -> bytes:
    """Pad with NULs up to the next multiple of 4 bytes."""
    return chunk + b"\0" * (-len(chunk) % 4)


def _clean(path: str) -> str:
    """Normalise to the archive's relative form: "/bin/sh" -> "bin/sh"."""
    clean = str(PurePosixPath("/", path)).lstrip("/")
    if not clean or ".." in PurePosixPath(clean).parts:
        raise ValueError(f"not a usable path inside an initramfs: {path!r}")
    return clean


def _with_parents(entries: list[Entry]) -> list[Entry]:
    """Add a 0755 directory for every parent nobody listed: the kernel does not create them."""
    by_path = {}
    for entry in entries:
        if entry.path in by_path:
            raise ValueError(f"duplicate initramfs entry: {entry.path}")
        by_path[entry.path] = entry
    for entry in entries:
        for parent in PurePosixPath(entry.path).parents:
            if str(parent) != "." and str(parent) not in by_path:
                by_path[str(parent)] = directory(str(parent))
    return list(by_path.values())


@contextmanager
def _atomic(path: Path) -> Iterator[BinaryIO]:
    """Write to a temp file beside ``path`` then rename, so readers never see half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            yield f
        os.chmod(tmp, 0o644)  # libvirt's qemu user must be able to read the image
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
