"""Write an initramfs: a cpio archive in the "newc" format, the one the Linux kernel unpacks.

At boot the kernel unpacks the initramfs into an empty in-memory filesystem (``rootfs``) and
runs ``/init`` from it. The format is old and simple: for every file, a 110-byte ASCII header
(the magic ``070701`` and thirteen 8-digit hex numbers), the file name, then the file's bytes,
each padded to a multiple of 4. A final entry named ``TRAILER!!!`` ends the archive. That is all
``init/initramfs.c`` in the kernel reads, and all this module writes.

We write it in Python rather than calling ``cpio`` so a student can read how an initramfs is
made, and so the output is deterministic: entries are sorted, every mtime is the same fixed
value, owners are root, and inode numbers are just 1, 2, 3... The same inputs give the same
bytes, so a hash of the image is a fair cache key.

Introduced in notebooks/01-containers-vs-vms.
"""

from __future__ import annotations

import gzip
import os
import stat
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

MAGIC = b"070701"  # "newc": ASCII hex fields, no CRC
TRAILER = "TRAILER!!!"
MTIME = 0  # the same timestamp for every entry keeps the archive reproducible


@dataclass(frozen=True)
class Entry:
    """One archive member: a directory, regular file, symlink or character device."""

    path: str  # inside the archive, without a leading "/", e.g. "bin/busybox"
    mode: int  # file type and permission bits, e.g. stat.S_IFREG | 0o755
    data: bytes = b""  # file contents, or the link target for a symlink
    rdev: tuple[int, int] = (0, 0)  # (major, minor) for a device node


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


def newc_bytes(entries: list[Entry]) -> bytes:
    """The whole archive as bytes: missing parent directories added, entries sorted by path."""
    members = sorted(_with_parents(entries), key=lambda e: e.path)
    out = bytearray()
    for ino, entry in enumerate(members, start=1):
        nlink = 2 if stat.S_ISDIR(entry.mode) else 1
        out += _member(entry.path, entry.mode, entry.data, ino, nlink, entry.rdev)
    out += _member(TRAILER, 0, b"", 0, 1, (0, 0))
    return bytes(out)


def write_newc(entries: list[Entry], out_path: Path) -> Path:
    """Write an uncompressed newc archive to ``out_path`` atomically and return the path."""
    _write_atomic(Path(out_path), newc_bytes(entries))
    return Path(out_path)


def write_newc_gz(entries: list[Entry], out_path: Path) -> Path:
    """Write a gzip-compressed newc archive (what ``-initrd`` usually gets) atomically."""
    # mtime=0 keeps the gzip header free of the build time, so the bytes stay reproducible.
    data = gzip.compress(newc_bytes(entries), compresslevel=9, mtime=0)
    _write_atomic(Path(out_path), data)
    return Path(out_path)


def _member(name: str, mode: int, data: bytes, ino: int, nlink: int, rdev) -> bytes:
    """One header + name + data, each padded to 4 bytes as the kernel expects."""
    encoded = name.encode() + b"\0"
    fields = [
        ino,
        mode,
        0,  # uid: root
        0,  # gid: root
        nlink,
        MTIME,
        len(data),
        0,  # devmajor: the device the file lived on; meaningless here
        0,  # devminor
        rdev[0],  # rdevmajor: for device nodes, which device this node *is*
        rdev[1],  # rdevminor
        len(encoded),  # namesize, counting the trailing NUL
        0,  # check: only used by the "crc" variant (070702)
    ]
    header = MAGIC + b"".join(b"%08X" % value for value in fields)
    return _pad(header + encoded) + _pad(data)


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


def _write_atomic(path: Path, data: bytes) -> None:
    """Write to a temp file beside ``path`` then rename, so readers never see half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data)
        os.chmod(tmp, 0o644)  # libvirt's qemu user must be able to read the image
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
