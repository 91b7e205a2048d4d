"""Layer tars in and out: unpack an OCI layer into an overlay lowerdir, and pack a dir back.

An image layer is a tar of the files one build step added, changed or deleted. We unpack each
layer on its own into its own directory, and overlayfs stacks those directories into a
container's root. Three things make that more than ``tar -x``:

* **Deletions.** A layer cannot leave a file out to delete it, so OCI marks deletions with
  names: ``.wh.NAME`` removes ``NAME`` from the layers below, and ``DIR/.wh..wh..opq`` hides
  everything below in ``DIR``. Overlayfs has its own markers, so we translate: ``.wh.NAME``
  becomes a character device 0:0 called ``NAME`` (overlay's *whiteout*), and the opaque marker
  becomes the xattr ``trusted.overlay.opaque=y`` on ``DIR`` (``user.overlay.opaque`` when
  rootless, for overlay's ``userxattr`` mode). :func:`pack` translates back. Since Linux 5.8
  any user may mknod a 0:0 device (only that one), so rootless unpacks make the same
  whiteouts. Where mknod is refused anyway (a seccomp or LSM policy), a rootless unpack
  falls back to overlay's other whiteout (Linux 6.7+): an empty file with
  ``user.overlay.whiteout=y``, honoured in lower layers when its directory is marked as
  holding such files with ``user.overlay.opaque=x``.
* **Hostile input.** A layer is a file from the internet, unpacked as root. A member named
  ``../../etc/cron.d/x``, or a symlink ``etc -> /etc`` followed by a member ``etc/passwd``,
  must not write outside the layer. Every path is opened with ``openat2(RESOLVE_IN_ROOT)``,
  which resolves ``..`` and every symlink *as if the layer dir were /*, and the last
  component is always created fresh (``O_EXCL``, never followed). A parent symlink inside the
  layer is allowed, as Docker allows it, but it lands inside the layer: ``etc -> /x`` makes
  ``etc/passwd`` go to ``<layer>/x/passwd``. Names with ``..`` and absolute names are refused.
* **Bombs.** A gzip layer of a few kB can expand to terabytes. One setting bounds what a layer
  may unpack to: ``EDU_MAX_LAYER_BYTES`` (default 8g; bytes, or with a unit k, m, g, t). The
  uncompressed stream is counted as it is read and every member's size is checked from its
  header *before* a byte of it is written, so a refused layer never writes past the limit.
* **Duplicates and conflicts**, as Docker treats them (its tar-split refuses "duplicates of
  file paths", overlay2's mknod a whiteout over an existing name): a path that appears twice
  in one layer (``a``, ``./a`` and ``a/`` are one path) is refused, whatever the two entries
  are, since which one counts would be ambiguous; so is a hardlink to a member that comes later
  or to a directory, and a whiteout for a name this same layer holds (a whiteout deletes only
  what lower layers have). A directory made implicitly for ``a/x`` may later be given by its
  own entry (its metadata is applied) or replaced by a file or symlink ``a``, as in Docker.
* **Setuid in rootless unpacks.** Where a rootless unpack cannot give a file its owner from
  the image (a uid outside the user's namespace), the file stays the user's, and its setuid
  and setgid bits are cleared: else an image's setuid-root ``su`` would be a setuid-*student*
  program on the host. Where the owner can be set (inside a user namespace mapping it), the
  bits are kept, as Docker rootless keeps them.
* **Metadata order.** ``chown`` clears setuid bits and file capabilities, and writing a file
  into a directory changes the directory's mtime. So each file gets chown, then chmod, then
  xattrs, then its times; directories get theirs at the very end, deepest first.

Both directions hash as they stream, so nobody reads a layer twice: ``digest`` is the sha256
of the blob as stored (usually gzip) and ``diff_id`` that of the tar inside, which is what an
image config lists. When unpacking, reading, hashing and gunzipping the blob run in a thread
of their own while the caller's thread writes the files (zlib and hashlib let go of the GIL):
on two cores a pull's unpacking takes about a quarter less (bench/pull.py).

Introduced in notebooks/04-images.
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import os
import queue
import re
import shutil
import stat
import tarfile
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import BinaryIO

from .. import kernel

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
# Other ".wh..wh." names are AUFS bookkeeping (.wh..wh.plnk ...), never image content.
_AUFS_META_PREFIX = ".wh..wh."

GiB = 1 << 30
LIMIT_ENV = "EDU_MAX_LAYER_BYTES"
DEFAULT_MAX_LAYER_BYTES = 8 * GiB
_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_CHUNK = 1 << 20
# PAX and GNU long-name headers are read into memory whole, so they get a hard cap.
_MAX_HEADER_BYTES = 1 << 20

_RESOLVE = kernel.RESOLVE_IN_ROOT | kernel.RESOLVE_NO_MAGICLINKS
_DIR_PATH = os.O_PATH | os.O_DIRECTORY

# Overlay's own xattrs are never taken from a tar or written into one: a layer that could
# set trusted.overlay.redirect or .metacopy could make overlay show files it does not own.
_OVERLAY_XATTRS = ("trusted.overlay.", "user.overlay.")
_XATTR_PAX = "SCHILY.xattr."


class LayerError(Exception):
    """A layer that cannot or must not be unpacked (or packed); the message names the member."""


def max_layer_bytes() -> int:
    """The most bytes one layer may unpack to: ``$EDU_MAX_LAYER_BYTES``, else 8 GiB."""
    return env_size(LIMIT_ENV, DEFAULT_MAX_LAYER_BYTES)


def env_size(name: str, default: int) -> int:
    """A size set in the environment: bytes, or a number with a unit k, m, g or t (16g is
    16 GiB); ``default`` when it is not set. LayerError, a sentence, for anything else."""
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    m = re.fullmatch(r"(\d+)\s*([kmgt]?)i?b?", text.lower())
    if not m or int(m[1]) == 0:
        raise LayerError(f"{name}={text!r} is not a size: give bytes, or a number with "
                         "a unit k, m, g or t (e.g. 16g).")
    return int(m[1]) * _UNITS[m[2]]


def limit_hint(limit: int) -> str:
    """The sentence's end that names the limit and how to raise it."""
    return (f"the limit is {_human(limit)} ({LIMIT_ENV}); if you trust this image, raise it, "
            f"e.g. {LIMIT_ENV}={_setting(limit * 2)}")


def _setting(n: int) -> str:
    for unit in "tgmk":
        if n % _UNITS[unit] == 0:
            return f"{n // _UNITS[unit]}{unit}"
    return str(n)


def _human(n: int) -> str:
    for unit in ("T", "G", "M", "K"):
        if n >= _UNITS[unit.lower()] and n % _UNITS[unit.lower()] == 0:
            return f"{n // _UNITS[unit.lower()]} {unit}iB"
    return f"{n} bytes"


@dataclass(frozen=True)
class Limits:
    """How big one layer may be; past a limit the layer is refused, never truncated.

    ``None`` means the one setting, :func:`max_layer_bytes`, read when extract starts."""

    max_member_bytes: int | None = None
    max_total_bytes: int | None = None
    max_members: int = 1_000_000
    max_stream_bytes: int | None = None  # the uncompressed tar, headers and padding too

    def resolved(self) -> Limits:
        """These limits with every ``None`` replaced by the setting."""
        limit = max_layer_bytes()
        return Limits(self.max_member_bytes or limit, self.max_total_bytes or limit,
                      self.max_members, self.max_stream_bytes or limit)


@dataclass(frozen=True)
class ExtractStats:
    """What :func:`extract` unpacked, and the layer's two digests."""

    members: int  # tar entries, whiteouts included
    bytes: int  # bytes of file content written
    whiteouts: int
    opaque_dirs: int
    diff_id: str  # sha256 of the uncompressed tar: what the image config lists
    digest: str  # sha256 of the input as read: the blob's name in a registry
    skipped: int = 0  # owners and xattrs a rootless unpack was not allowed to set
    stripped: int = 0  # setuid/setgid bits cleared: a rootless unpack could not set the owner


@dataclass(frozen=True)
class PackStats:
    """What :func:`pack` wrote, and its digests."""

    members: int
    bytes: int  # bytes of file content packed (as ExtractStats.bytes counts them)
    diff_id: str  # sha256 of the tar
    digest: str  # sha256 of what was written to ``out`` (== diff_id unless compressed)
    size: int  # bytes written to ``out``: the blob size a manifest records


# ---- extract ------------------------------------------------------------------------------

def extract(src: str | Path | BinaryIO, dest: Path, *, limits: Limits | None = None,
            rootless: bool | None = None) -> ExtractStats:
    """Unpack the layer tar ``src`` (a path or binary file; plain tar or gzip) into ``dest``.

    ``dest`` must be an existing, empty directory. ``rootless=None`` decides from who we
    are: root in the initial user namespace writes ``trusted.overlay.*`` markers, anyone else
    ``user.overlay.*`` ones (for an overlay mounted with ``userxattr``). On ``LayerError``
    ``dest`` may hold part of the layer; the caller deletes it.
    """
    if rootless is None:
        # trusted.* xattrs need CAP_SYS_ADMIN in the *initial* user namespace: uid 0 in a
        # user namespace (rootless podman, our own rootless containers) is rootless here.
        rootless = kernel.rootless()
    limits = (limits or Limits()).resolved()
    if isinstance(src, (str, Path)):
        with open(src, "rb") as f:
            return extract(f, dest, limits=limits, rootless=rootless)
    unpacker = _Unpacker(Path(dest), limits, rootless)
    try:
        tar_stream = _TarFeed(src, limits.max_stream_bytes)
    except BaseException:
        unpacker.close()
        raise
    name = None
    try:
        with tarfile.open(fileobj=tar_stream, mode="r|", tarinfo=_Header,
                          encoding="utf-8", errors="surrogateescape") as tar:
            while (info := tar.next()) is not None:
                # Stream mode keeps every header it read; 1,000,000 of them is too many.
                tar.members.clear()
                name = info.name
                unpacker.add(tar, info)
        unpacker.finish()
        # The tar ends with zero padding that tarfile need not read; the digests cover it.
        while tar_stream.read(_CHUNK):
            pass
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        where = f" (at member {name!r})" if name else ""
        raise LayerError(f"the layer is not a valid tar stream{where}: {exc}. The download is "
                         "damaged or this is not a layer; pull the image again.") from None
    finally:
        tar_stream.close()
        unpacker.close()
    diff_id, digest = tar_stream.digests()
    return ExtractStats(unpacker.members, unpacker.bytes, unpacker.whiteouts,
                        unpacker.opaque_dirs, diff_id=diff_id, digest=digest,
                        skipped=unpacker.skipped, stripped=unpacker.stripped)


class _TarFeed:
    """The layer's tar as a binary reader, made in a thread of its own from the blob ``src``.

    The thread reads the blob, hashes it (the blob's digest), gunzips it and hashes the tar
    (the diff_id), while the caller's thread parses headers and writes files: zlib and
    hashlib let go of the GIL while they work, so on two cores the two halves overlap. The
    thread never runs more than ``_AHEAD`` chunks ahead, and hands over no byte past
    ``limit``: a read that reaches past it raises the refusal, so a bomb is refused before
    anything past the limit was written.
    """

    _AHEAD = 8

    def __init__(self, src: BinaryIO, limit: int | None) -> None:
        head = src.read(6)
        for magic, kind in _MAGIC.items():
            if head.startswith(magic):
                raise LayerError(f"this layer is {kind}-compressed, which edu cannot unpack "
                                 "yet (only plain and gzip tars). Pull an image with gzip "
                                 f"layers, or decompress the blob first ({kind} -d).")
        self._src, self._head, self._limit = src, head, limit
        self._raw_sha, self._tar_sha = hashlib.sha256(), hashlib.sha256()
        self._queue: queue.Queue = queue.Queue(self._AHEAD)
        self._stop = threading.Event()
        self._chunk, self._pos = b"", 0
        self._ended = False  # the thread's last word (end or error) has been taken
        self._thread = threading.Thread(target=self._run, name="layer-gunzip", daemon=True)
        self._thread.start()

    # -- the thread ------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            for data in self._tar_chunks():
                if self._stop.is_set():
                    break
                self._queue.put(data)
            self._queue.put(None)
        except BaseException as exc:  # handed to the reader, which raises it in its thread
            self._queue.put(exc)

    def _blob_chunks(self) -> Iterator[bytes]:
        data = self._head
        while data:
            self._raw_sha.update(data)
            yield data
            data = self._src.read(_CHUNK)

    def _tar_chunks(self) -> Iterator[bytes]:
        """The tar, hashed and counted, in chunks: gunzipped if the blob is gzip."""
        count, limit = 0, self._limit
        chunks = self._gunzip() if self._head.startswith(b"\x1f\x8b") else self._blob_chunks()
        for data in chunks:
            if limit is not None and count + len(data) > limit:
                data = data[:limit - count]
                self._tar_sha.update(data)
                yield data
                raise LayerError(f"the layer unpacks to more than {_human(limit)}: refused "
                                 "before anything past the limit was written (a small "
                                 "compressed layer that expands this much is a decompression "
                                 f"bomb); {limit_hint(limit)}.")
            count += len(data)
            self._tar_sha.update(data)
            yield data

    def _gunzip(self) -> Iterator[bytes]:
        """Every member of a gzip stream, decompressed (as ``gzip.GzipFile`` reads it: more
        members may follow, and zero padding may end it; each member's CRC is checked)."""
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        member = True  # inside a gzip member
        for data in self._blob_chunks():
            while data:
                if not member:
                    data = data.lstrip(b"\0")
                    if not data:
                        break
                    if not data.startswith(b"\x1f\x8b"[:len(data)]):
                        raise gzip.BadGzipFile(f"Not a gzipped file ({data[:2]!r})")
                    d, member = zlib.decompressobj(16 + zlib.MAX_WBITS), True
                out = d.decompress(data, _CHUNK)  # bounded: a bomb never fills memory
                while True:
                    if out:
                        yield out
                    if d.eof or not d.unconsumed_tail:
                        break
                    out = d.decompress(d.unconsumed_tail, _CHUNK)
                if d.eof:
                    data, member = d.unused_data, False
                else:
                    data = b""
        if member:
            tail = d.flush()
            if tail:
                yield tail
            if not d.eof:
                raise EOFError("Compressed file ended before the end-of-stream marker was "
                               "reached")

    # -- the reader ------------------------------------------------------------------------

    def _next(self) -> bool:
        """Take the next chunk; False at the end. Raises what the thread raised."""
        if self._ended:
            return False
        item = self._queue.get()
        if item is None or isinstance(item, BaseException):
            self._ended = True
            if item is not None:
                raise item
            return False
        self._chunk, self._pos = item, 0
        return True

    def read(self, n: int = -1) -> bytes:
        """``n`` bytes of the tar (all that is left if ``n`` < 0), fewer only at its end.

        As a buffered reader over ``gzip`` does, a read that reaches a damaged or truncated
        part of the blob raises, even if some bytes before it could have been returned."""
        if n < 0:
            return b"".join(iter(lambda: self.read(_CHUNK), b""))
        end = self._pos + n
        if end <= len(self._chunk):
            self._pos = end
            return self._chunk[end - n:end]
        parts = [self._chunk[self._pos:]]
        need = n - len(parts[0])
        self._pos = len(self._chunk)
        while need > 0 and self._next():
            parts.append(self._chunk[:need])
            self._pos = len(parts[-1])
            need -= self._pos
        return b"".join(parts)

    def close(self) -> None:
        """Stop the thread (it may be blocked handing over a chunk) and wait for it."""
        self._stop.set()
        while not self._ended:
            item = self._queue.get()
            self._ended = item is None or isinstance(item, BaseException)
        self._thread.join()

    def digests(self) -> tuple[str, str]:
        """(diff_id, digest): the tar's sha256 and the blob's, once all was read."""
        return "sha256:" + self._tar_sha.hexdigest(), "sha256:" + self._raw_sha.hexdigest()


_MAGIC = {
    b"\x28\xb5\x2f\xfd": "zstd",
    b"\xfd7zXZ": "xz",
    b"BZh": "bzip2",
}


class _Header(tarfile.TarInfo):
    """A TarInfo that refuses what tarfile would quietly accept."""

    @classmethod
    def frombuf(cls, buf, encoding, errors):
        """tarfile's documented hook for parsing one 512-byte header block."""
        try:
            info = super().frombuf(buf, encoding, errors)
        except (tarfile.InvalidHeaderError, tarfile.TruncatedHeaderError) as exc:
            # tarfile treats a bad header after the first as the end of the archive, which
            # would silently drop the rest of the layer.
            raise LayerError(f"the layer's tar stream is corrupt ({exc}): a header is "
                             "damaged. Pull the image again.") from None
        if info.type in (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE,
                         tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK) \
                and info.size > _MAX_HEADER_BYTES:
            raise LayerError(f"the layer has a {info.size}-byte extended header (the limit "
                             f"is {_MAX_HEADER_BYTES}): refused, it would be read into memory")
        return info


def _clean(name: str, member: str, what: str = "layer member") -> str:
    """``name`` relative to the layer root, without ``.`` parts; '' is the root itself."""
    if name.startswith("/"):
        raise LayerError(f"{what} {member!r} is an absolute path: refused (layer members "
                         "must be relative, like 'etc/passwd' or './etc/passwd')")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise LayerError(f"{what} {member!r} escapes the layer root: refused (names must be "
                         "relative and stay inside the image)")
    return "/".join(parts)


def _at(dirfd: int, name: str) -> str:
    # For the calls that have no dir_fd form (the *xattr family): the magic link is our own
    # fd, and the last component is looked up in that directory, not followed.
    return f"/proc/self/fd/{dirfd}/{name}"


def _mtime_ns(info: tarfile.TarInfo) -> int:
    # A PAX mtime is decimal text with up to nanoseconds; float would round it.
    text = info.pax_headers.get("mtime")
    return int(Decimal(text) * 10**9) if text else int(info.mtime) * 10**9


class _Unpacker:
    """The state of one extract: the root fd, counters, and the deferred directory metadata."""

    def __init__(self, dest: Path, limits: Limits, rootless: bool) -> None:
        self.dest, self.limits, self.rootless = dest, limits, rootless
        self.opaque_xattr = "user.overlay.opaque" if rootless else "trusted.overlay.opaque"
        self.members = self.bytes = self.whiteouts = self.opaque_dirs = self.skipped = 0
        self.stripped = 0
        self.files: set[str] = set()  # non-directories this layer made: hardlink targets
        self.names: set[str] = set()  # every path an entry has named, normalised
        self.dirs: dict[str, tuple[tarfile.TarInfo, int, int]] = {}  # name -> info, dev, ino
        # The last parent directory resolved, kept open for the members that follow it in
        # the same directory (most of a tar). It stays right: a member only ever creates or
        # removes a name inside its own parent, never a component of that parent's path,
        # and a member in another directory replaces it.
        self._parent: tuple[str, int] | None = None
        try:
            self.root = os.open(dest, _DIR_PATH | os.O_CLOEXEC)
        except OSError as exc:
            raise LayerError(f"cannot unpack a layer into {dest}: {exc.strerror} (extract "
                             "needs an existing, empty directory)") from None
        if os.listdir(dest):
            self.close()
            raise LayerError(f"cannot unpack a layer into {dest}: it is not empty (extract "
                             "needs a new, empty directory)")
        try:
            os.close(self._open("", _DIR_PATH))
        except OSError as exc:
            self.close()
            if exc.errno in (errno.ENOSYS, errno.EPERM):
                raise LayerError(
                    f"unpacking layers safely needs openat2(2), from Linux 5.6; this kernel "
                    f"({os.uname().release}) refuses it ({kernel.errno_name(exc.errno)}; a "
                    "seccomp filter can do that too). Run edu on a newer kernel or host."
                ) from None
            raise

    def close(self) -> None:
        """Close the root fd and the kept parent fd (idempotent)."""
        self._forget_parent()
        if self.root >= 0:
            os.close(self.root)
            self.root = -1

    def _open(self, rel: str, flags: int) -> int:
        for _ in range(32):
            try:
                return kernel.openat2(self.root, rel or ".", flags, _RESOLVE)
            except BlockingIOError:  # EAGAIN: a rename raced the lookup; the kernel says retry
                continue
        raise LayerError(f"could not resolve {rel!r} inside {self.dest}: it keeps changing")

    # -- one member ---------------------------------------------------------------------

    def add(self, tar: tarfile.TarFile, info: tarfile.TarInfo) -> None:
        """Unpack one member, or raise LayerError saying why it is refused."""
        self.members += 1
        if self.members > self.limits.max_members:
            raise LayerError(f"the layer has more than {self.limits.max_members} members "
                             f"(reached at {info.name!r}): refused (raise "
                             "Limits.max_members if you trust this image)")
        name = _clean(info.name, info.name)
        if name in self.names:
            raise LayerError(f"layer member {info.name!r} appears twice in this layer: "
                             "refused, as Docker refuses it (\"duplicates of file paths not "
                             "supported\"): which of the two counts would be ambiguous")
        self.names.add(name)
        if info.isreg():
            # Checked from the header, before a byte of the member is written.
            if info.size > self.limits.max_member_bytes:
                raise LayerError(f"layer member {info.name!r} is {info.size} bytes, more than "
                                 "one layer may unpack to: refused before it was written; "
                                 f"{limit_hint(self.limits.max_member_bytes)}")
            if self.bytes + info.size > self.limits.max_total_bytes:
                raise LayerError(f"the layer is larger than {self.limits.max_total_bytes} "
                                 f"bytes (reached at member {info.name!r}): refused before it "
                                 f"was written; {limit_hint(self.limits.max_total_bytes)}")
        parent, _, base = name.rpartition("/")
        if not base and not info.isdir():
            raise LayerError(f"layer member {info.name!r} would replace the layer root "
                             "with a non-directory: refused")
        try:
            if base.startswith(WHITEOUT_PREFIX):
                self._add_whiteout(info, parent, base)
                return
            self._check_type(info)
            self._add_at(tar, info, name, self._parent_fd(parent), base)
        except OSError as exc:
            if isinstance(exc, gzip.BadGzipFile):
                raise  # the stream is damaged, not the disk: extract() says so
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise  # the disk is full, not the layer bad: the caller says so (DiskFull)
            raise LayerError(f"could not unpack layer member {info.name!r}: {exc.strerror} "
                             f"({kernel.errno_name(exc.errno or 0)}). Check free space and "
                             f"permissions under {self.dest}.") from exc

    def _check_type(self, info: tarfile.TarInfo) -> None:
        if info.ischr() or info.isblk():
            if info.ischr() and info.devmajor == info.devminor == 0:
                return  # already an overlay whiteout
            kind = "character" if info.ischr() else "block"
            raise LayerError(f"layer member {info.name!r} is a {kind} device "
                             f"({info.devmajor}:{info.devminor}): refused (images may not "
                             "carry device nodes; a container's /dev is made at run time)")
        if not (info.isreg() or info.isdir() or info.issym() or info.islnk()
                or info.isfifo()):
            raise LayerError(f"layer member {info.name!r} has tar type {info.type!r}, which "
                             "a layer may not contain: refused")

    def _add_at(self, tar: tarfile.TarFile, info: tarfile.TarInfo, name: str, pfd: int,
                base: str) -> None:
        if not base:  # the layer root itself ("./"): only its metadata
            self._defer_dir(name, info, os.stat(self.root))
            return
        if info.islnk():
            self._add_hardlink(info, name, pfd, base)
            return
        # Most names are new: _clear (tar's "last one wins") runs only if the name exists.
        kept_dir = False if info.isreg() else self._clear(pfd, base, name,
                                                           keep_dir=info.isdir())
        if info.isdir():
            self.files.discard(name)  # no longer a hardlink target
            if not kept_dir:
                os.mkdir(base, 0o700, dir_fd=pfd)
            self._defer_dir(name, info, os.stat(base, dir_fd=pfd, follow_symlinks=False))
            return
        if info.isreg():
            try:
                self._add_file(tar, info, pfd, base)
            except FileExistsError:
                self._clear(pfd, base, name, keep_dir=False)
                self._add_file(tar, info, pfd, base)
        elif info.issym():
            os.symlink(info.linkname, base, dir_fd=pfd)  # kept as written, never followed
            self._set_meta_at(info, pfd, base, chmod=False)
        elif info.isfifo():
            os.mkfifo(base, 0o600, dir_fd=pfd)
            self._set_meta_at(info, pfd, base, chmod=True)
        else:  # a character device 0:0: an overlay whiteout written directly
            self._whiteout(info, pfd, base, name.rpartition("/")[0])
            return
        self.files.add(name)

    def _add_file(self, tar: tarfile.TarFile, info: tarfile.TarInfo, pfd: int,
                  base: str) -> None:
        fd = os.open(base, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600, dir_fd=pfd)
        try:
            # The content follows the header as it is (unless sparse: tarfile fills holes),
            # so it is read from the stream itself; tarfile skips the padding after it.
            data = tar.extractfile(info) if info.sparse is not None else tar.fileobj
            left = info.size
            while left:
                chunk = data.read(min(left, _CHUNK))
                if not chunk:
                    raise tarfile.ReadError("unexpected end of data")
                left -= len(chunk)
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view):]
            self.bytes += info.size
            self._set_meta_fd(info, fd)
        finally:
            os.close(fd)

    def _add_hardlink(self, info: tarfile.TarInfo, name: str, pfd: int, base: str) -> None:
        target = _clean(info.linkname, info.name,
                        f"the hardlink target {info.linkname!r} of layer member")
        if target not in self.files:
            raise LayerError(f"layer member {info.name!r} is a hardlink to "
                             f"{info.linkname!r}, which is not an earlier file of this layer: "
                             "refused (a layer can only link to files it contains)")
        if target == name:
            return  # a link to itself: already there
        tparent, _, tbase = target.rpartition("/")
        tfd = self._open(tparent, _DIR_PATH)
        try:
            self._clear(pfd, base, name, keep_dir=False)
            # follow_symlinks=False: a link to a symlink member links the symlink itself.
            os.link(tbase, base, src_dir_fd=tfd, dst_dir_fd=pfd, follow_symlinks=False)
        finally:
            os.close(tfd)
        self.files.add(name)

    def _parent_fd(self, rel: str) -> int:
        """``_make_dirs(rel)``, kept open for the next member in the same directory."""
        if self._parent is not None and self._parent[0] == rel:
            return self._parent[1]
        self._forget_parent()
        pfd = self._make_dirs(rel)
        self._parent = (rel, pfd)
        return pfd

    def _forget_parent(self) -> None:
        if self._parent is not None:
            os.close(self._parent[1])
            self._parent = None

    def _make_dirs(self, rel: str) -> int:
        """An O_PATH fd of directory ``rel`` (resolved inside the root), made if missing."""
        try:
            return self._open(rel, _DIR_PATH)
        except FileNotFoundError:
            pass
        # mkdir -p, one level at a time, each level resolved inside the root again.
        parts = rel.split("/")
        for i in range(len(parts)):
            here = "/".join(parts[: i + 1])
            try:
                os.close(self._open(here, _DIR_PATH))
                continue
            except FileNotFoundError:
                pass
            pfd = self._open("/".join(parts[:i]), _DIR_PATH)
            try:
                os.mkdir(parts[i], 0o755, dir_fd=pfd)
                # Parents a tar does not list are 0755 like tar makes them, whatever the umask.
                os.chmod(parts[i], 0o755, dir_fd=pfd)
            except FileExistsError:
                raise LayerError(f"{here!r} in this layer is a symlink to a directory that "
                                 "does not exist, so members under it have nowhere to go: "
                                 "refused") from None
            finally:
                os.close(pfd)
        return self._open(rel, _DIR_PATH)

    def _clear(self, pfd: int, base: str, name: str, keep_dir: bool) -> bool:
        """Make room for ``base`` (tar's "last one wins"); True if an existing dir was kept."""
        try:
            st = os.stat(base, dir_fd=pfd, follow_symlinks=False)
        except FileNotFoundError:
            return False
        if stat.S_ISDIR(st.st_mode):
            if keep_dir:
                return True
            shutil.rmtree(base, dir_fd=pfd)  # fd-based: never follows a link out
            # Their metadata went with them. (finish() also compares inodes, but the
            # filesystem may give a new directory the inode number just freed.)
            gone = [d for d in self.dirs if d == name or d.startswith(name + "/")]
            for d in gone:
                del self.dirs[d]
            self.files = {f for f in self.files if not f.startswith(name + "/")}
        else:
            os.unlink(base, dir_fd=pfd)  # removes a symlink itself, not its target
            self.files.discard(name)
        return False

    # -- whiteouts ------------------------------------------------------------------------

    def _add_whiteout(self, info: tarfile.TarInfo, parent: str, base: str) -> None:
        if base == OPAQUE_MARKER:
            fd = self._open_dir(parent)
            try:
                os.setxattr(fd, self.opaque_xattr, b"y")
            finally:
                os.close(fd)
            self.opaque_dirs += 1
            return
        if base.startswith(_AUFS_META_PREFIX):
            return
        target = base[len(WHITEOUT_PREFIX):]
        if target in ("", ".", ".."):
            raise LayerError(f"layer member {info.name!r} is a whiteout for {target!r}, "
                             "which is not a file name: refused")
        pfd = self._make_dirs(parent)
        try:
            path = f"{parent}/{target}" if parent else target
            try:
                os.stat(target, dir_fd=pfd, follow_symlinks=False)
            except FileNotFoundError:
                pass
            else:
                # Docker (overlay2) refuses this too: its mknod fails with EEXIST. A whiteout
                # deletes what *lower* layers have (OCI), never this layer's own entries.
                raise LayerError(f"layer member {info.name!r} deletes {path!r}, which this "
                                 "same layer already holds (as a file, a directory or an "
                                 "earlier whiteout): refused, as Docker refuses it; a whiteout "
                                 "may only delete what lower layers have")
            self._whiteout(info, pfd, target, parent)
        finally:
            os.close(pfd)

    def _whiteout(self, info: tarfile.TarInfo, pfd: int, name: str, parent: str) -> None:
        """Overlay's whiteout: a char device 0:0; if rootless mknod is refused, an xattr'd file."""
        self.whiteouts += 1
        try:
            os.mknod(name, stat.S_IFCHR | 0o000, os.makedev(0, 0), dir_fd=pfd)
        except PermissionError:
            if not self.rootless:
                raise
            self._xattr_whiteout(pfd, name, parent)
            return
        # Owner and time too, so that pack() of this dir gives back the same layer.
        self._chown(lambda: os.chown(name, info.uid, info.gid, dir_fd=pfd,
                                     follow_symlinks=False))
        mtime = _mtime_ns(info)
        os.utime(name, ns=(mtime, mtime), dir_fd=pfd, follow_symlinks=False)

    def _xattr_whiteout(self, pfd: int, name: str, parent: str) -> None:
        # Overlay (6.7+) also takes an empty file with overlay.whiteout, in a lower layer,
        # if its directory is marked overlay.opaque=x ("y" already hides everything below).
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600, dir_fd=pfd)
        try:
            os.setxattr(fd, "user.overlay.whiteout", b"y")
        finally:
            os.close(fd)
        dfd = self._open_dir(parent)
        try:
            try:
                opaque = os.getxattr(dfd, "user.overlay.opaque")
            except OSError:
                opaque = b""
            if opaque != b"y":
                os.setxattr(dfd, "user.overlay.opaque", b"x")
        finally:
            os.close(dfd)

    def _open_dir(self, rel: str) -> int:
        pfd = self._make_dirs(rel)
        os.close(pfd)
        return self._open(rel, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)

    # -- metadata -------------------------------------------------------------------------

    def _chown(self, call) -> bool:
        """Give a member its owner; False if a rootless unpack may not (it stays ours)."""
        try:
            call()
            return True
        except OSError as exc:
            # Rootless, ids outside our user namespace cannot be set (EPERM, EINVAL): the
            # files stay ours, as with `podman --storage-opt ignore_chown_errors`.
            if not self.rootless or exc.errno not in (errno.EPERM, errno.EINVAL):
                raise
            self.skipped += 1
            return False

    def _mode(self, info: tarfile.TarInfo, owned: bool) -> int:
        """The member's mode; setuid and setgid cleared on a file whose owner was not set."""
        mode = info.mode & 0o7777
        if not owned and not info.isdir() and mode & (stat.S_ISUID | stat.S_ISGID):
            # It would run as *us* on the host, not as the owner the image gave it.
            self.stripped += 1
            mode &= ~(stat.S_ISUID | stat.S_ISGID)
        return mode

    def _set_xattrs(self, info: tarfile.TarInfo, target: int | str) -> None:
        for key, text in sorted(info.pax_headers.items()):
            if not key.startswith(_XATTR_PAX):
                continue
            attr = key[len(_XATTR_PAX):]
            if attr.startswith(_OVERLAY_XATTRS):
                continue
            value = text.encode("utf-8", "surrogateescape")  # tarfile's decoding, undone
            try:
                if isinstance(target, int):
                    os.setxattr(target, attr, value)
                else:
                    os.setxattr(target, attr, value, follow_symlinks=False)
            except OSError as exc:
                if exc.errno == errno.EOPNOTSUPP or (self.rootless and exc.errno in
                                                     (errno.EPERM, errno.EACCES)):
                    self.skipped += 1  # the filesystem (or a rootless user) cannot keep it
                    continue
                raise LayerError(f"could not set xattr {attr!r} on layer member "
                                 f"{info.name!r}: {exc.strerror}") from exc

    def _set_meta_fd(self, info: tarfile.TarInfo, fd: int) -> None:
        # Order matters: chown clears setuid bits and file capabilities.
        owned = self._chown(lambda: os.chown(fd, info.uid, info.gid))
        os.chmod(fd, self._mode(info, owned))
        self._set_xattrs(info, fd)
        mtime = _mtime_ns(info)
        os.utime(fd, ns=(mtime, mtime))

    def _set_meta_at(self, info: tarfile.TarInfo, pfd: int, base: str, chmod: bool) -> None:
        owned = self._chown(lambda: os.chown(base, info.uid, info.gid, dir_fd=pfd,
                                             follow_symlinks=False))
        if chmod:
            # A FIFO we made a moment ago in a directory only we write: nothing to follow.
            # (Python 3.11 has no chmod that refuses to follow a link.)
            os.chmod(base, self._mode(info, owned), dir_fd=pfd)
        self._set_xattrs(info, _at(pfd, base))
        mtime = _mtime_ns(info)
        os.utime(base, ns=(mtime, mtime), dir_fd=pfd, follow_symlinks=False)

    def _defer_dir(self, name: str, info: tarfile.TarInfo, st: os.stat_result) -> None:
        # A later entry for the same dir wins; (dev, ino) tells finish() if it was replaced.
        self.dirs[name] = (info, st.st_dev, st.st_ino)

    def finish(self) -> None:
        """Apply directories' owners, modes, xattrs and times: deepest first, root last."""
        order = sorted(self.dirs, key=lambda n: n.count("/") + 1 if n else 0, reverse=True)
        for name in order:
            info, dev, ino = self.dirs[name]
            try:
                fd = self._open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
            except (FileNotFoundError, NotADirectoryError):
                continue  # a later member removed it
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    continue  # a later member replaced it with a symlink
                raise
            try:
                st = os.fstat(fd)
                if (st.st_dev, st.st_ino) == (dev, ino):
                    try:
                        self._set_meta_fd(info, fd)
                    except OSError as exc:
                        raise LayerError(f"could not set the metadata of layer directory "
                                         f"{info.name!r}: {exc.strerror}") from exc
            finally:
                os.close(fd)


# ---- pack ---------------------------------------------------------------------------------

def pack(src_dir: Path, out: BinaryIO, *, upper: bool = False,
         compress: bool = False, level: int = 6) -> PackStats:
    """Write ``src_dir`` to ``out`` as a deterministic layer tar (gzip if ``compress``).

    ``upper=True`` reads an overlay upper dir (a container's changes): its whiteouts become
    ``.wh.NAME`` entries and its opaque dirs get a ``DIR/.wh..wh..opq`` entry. This is how
    ``edu commit`` and a Dockerfile ``RUN`` step make a layer. The same tree gives the same
    bytes: names sorted, numeric owners only, whole-second mtimes, gzip mtime 0.
    """
    blob = _HashingWriter(out)
    gz = None
    if compress:
        gz = gzip.GzipFile(filename="", mode="wb", fileobj=blob, mtime=0,  # type: ignore
                           compresslevel=level)
    tar_out = _HashingWriter(gz) if gz else blob
    packer = _Packer(upper)
    root = os.open(src_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        with tarfile.open(fileobj=tar_out, mode="w|", format=tarfile.PAX_FORMAT,
                          encoding="utf-8", errors="surrogateescape") as tar:
            packer.walk(tar, root, "")
    finally:
        os.close(root)
        if gz:
            gz.close()  # writes the gzip trailer; leaves ``out`` open
    return PackStats(packer.members, packer.bytes, diff_id=tar_out.digest(),
                     digest=blob.digest(), size=blob.size)


class _HashingWriter:
    """A binary writer that hashes and counts what passes through it."""

    def __init__(self, f) -> None:
        self._f = f
        self._sha = hashlib.sha256()
        self.size = 0

    def write(self, data) -> int:
        """Write all of ``data``."""
        self._f.write(data)
        self._sha.update(data)
        self.size += len(data)
        return len(data)

    def flush(self) -> None:
        """Flush the file underneath."""
        self._f.flush()

    def digest(self) -> str:
        """``sha256:<hex>`` of every byte written so far."""
        return "sha256:" + self._sha.hexdigest()


def _header(name: str, st: os.stat_result, kind: bytes) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = stat.S_IMODE(st.st_mode)
    info.uid, info.gid = st.st_uid, st.st_gid
    info.uname = info.gname = ""  # numeric owners: the image's /etc/passwd is not ours
    info.mtime = st.st_mtime_ns // 10**9
    return info


def _xattr_names(fd: int) -> list[str]:
    try:
        return os.listxattr(fd)
    except OSError as exc:
        if exc.errno == errno.EOPNOTSUPP:
            return []
        raise


def _kept_xattrs(fd: int, names: list[str]) -> dict[str, str]:
    # Docker keeps security.capability (ping's cap_net_raw) and we also keep user.*; overlay's
    # own xattrs describe this host's overlay, not the image.
    headers = {}
    for attr in sorted(names):
        if attr == "security.capability" or (attr.startswith("user.")
                                             and not attr.startswith(_OVERLAY_XATTRS)):
            headers[_XATTR_PAX + attr] = os.getxattr(fd, attr).decode("utf-8",
                                                                      "surrogateescape")
    return headers


def _overlay_xattr(fd: int, names: list[str], suffix: str) -> bytes | None:
    for prefix in _OVERLAY_XATTRS:
        if prefix + suffix in names:
            return os.getxattr(fd, prefix + suffix)
    return None


class _Packer:
    """One pack: the hardlinks seen so far and the counters."""

    def __init__(self, upper: bool) -> None:
        self.upper = upper
        self.links: dict[tuple[int, int], str] = {}  # (st_dev, st_ino) -> first name
        self.members = self.bytes = 0

    def _add(self, tar: tarfile.TarFile, info: tarfile.TarInfo, data=None) -> None:
        tar.addfile(info, data)
        self.members += 1

    def walk(self, tar: tarfile.TarFile, dirfd: int, prefix: str) -> None:
        """Add every entry under ``dirfd`` (named ``prefix...``), depth first, sorted."""
        entries = []
        for name in os.listdir(dirfd):
            st = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
            whiteout = self.upper and stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
            entries.append((WHITEOUT_PREFIX + name if whiteout else name, name, st))
        # Sorted by the names as written, byte by byte, like `tar --sort=name`.
        for written, name, st in sorted(entries, key=lambda e: os.fsencode(e[0])):
            rel = prefix + name
            if written != name:
                # Before the hardlink check: overlay links all its whiteouts to one inode.
                self._add(tar, _header(prefix + written, st, tarfile.REGTYPE))
                continue
            if stat.S_ISDIR(st.st_mode):
                self._dir(tar, dirfd, name, rel)
                continue
            inode = (st.st_dev, st.st_ino)
            if st.st_nlink > 1 and inode in self.links:
                info = _header(rel, st, tarfile.LNKTYPE)
                info.linkname = self.links[inode]
                self._add(tar, info)
                continue
            if stat.S_ISREG(st.st_mode):
                if not self._file(tar, dirfd, name, prefix):
                    continue  # it was an xattr whiteout
            elif stat.S_ISLNK(st.st_mode):
                info = _header(rel, st, tarfile.SYMTYPE)
                info.linkname = os.readlink(name, dir_fd=dirfd)
                self._add(tar, info)
            elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                kind = tarfile.CHRTYPE if stat.S_ISCHR(st.st_mode) else tarfile.BLKTYPE
                info = _header(rel, st, kind)
                info.devmajor, info.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
                self._add(tar, info)
            elif stat.S_ISFIFO(st.st_mode):
                self._add(tar, _header(rel, st, tarfile.FIFOTYPE))
            else:
                continue  # a socket: tar cannot hold one, and Docker skips them too
            if st.st_nlink > 1:
                self.links[inode] = rel  # later names become hardlinks to this one

    def _dir(self, tar: tarfile.TarFile, dirfd: int, name: str, rel: str) -> None:
        fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                     dir_fd=dirfd)
        try:
            st = os.fstat(fd)
            names = _xattr_names(fd)
            info = _header(rel, st, tarfile.DIRTYPE)
            info.pax_headers = _kept_xattrs(fd, names)
            self._add(tar, info)
            if self.upper:
                if _overlay_xattr(fd, names, "redirect") is not None:
                    raise LayerError(f"{rel!r} in the upper dir is a renamed directory stored "
                                     "as an overlay redirect, which a layer cannot express: "
                                     "mount with redirect_dir=off (overlay.mount_options)")
                if _overlay_xattr(fd, names, "opaque") == b"y":
                    marker = _header(rel + "/" + OPAQUE_MARKER, st, tarfile.REGTYPE)
                    self._add(tar, marker)
            self.walk(tar, fd, rel + "/")
        finally:
            os.close(fd)

    def _file(self, tar: tarfile.TarFile, dirfd: int, name: str, prefix: str) -> bool:
        """Add a regular file; False if it was an (xattr) whiteout instead."""
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dirfd)
        try:
            st = os.fstat(fd)
            names = _xattr_names(fd)
            if self.upper:
                if st.st_size == 0 and _overlay_xattr(fd, names, "whiteout") is not None:
                    self._add(tar, _header(prefix + WHITEOUT_PREFIX + name, st,
                                           tarfile.REGTYPE))
                    return False
                if _overlay_xattr(fd, names, "metacopy") is not None:
                    raise LayerError(f"{prefix + name!r} in the upper dir holds only metadata "
                                     "(overlay metacopy), not its data: mount with "
                                     "metacopy=off (overlay.mount_options)")
            info = _header(prefix + name, st, tarfile.REGTYPE)
            info.size = st.st_size
            info.pax_headers = _kept_xattrs(fd, names)
            with open(fd, "rb", closefd=False) as data:
                self._add(tar, info, data)
            self.bytes += st.st_size
            return True
        finally:
            os.close(fd)
