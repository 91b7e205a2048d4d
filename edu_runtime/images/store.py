"""The image store: content-addressed blobs, layers unpacked once, and a tag index.

An OCI image is three kinds of JSON and some tar files, all named by the sha256 of their
bytes: a *manifest* lists a *config* (Env, Cmd, history, and the ``diff_ids`` of the layers)
and the layer *blobs*. Naming content by its hash is what lets two images share a layer: the
same bytes have the same name, so they are stored once. Every blob is hashed as it is written
and refused if the hash is not the one promised.

On disk (``/var/lib/edu/store`` for root, ``~/.local/share/edu/store`` otherwise)::

    blobs/sha256/<hex>          manifests, configs and layer tars (as pulled: usually gzip)
    layers/sha256/<hex>/        each layer unpacked once, named by its diff_id: an overlay lowerdir
    layers/sha256/<hex>.json    the layer's size and member count (and how its blob is rebuilt)
    rebuild/sha256/<hex>.split  a layer tar's headers and padding (tarsplit), by diff_id, gzipped
    rebuild/sha256/<hex>.blob   a layer blob kept as its unpacked layer only: names the diff_id
    index.json                  tags -> manifest digests, and the images' configs
    pins/<owner>.json           layers that containers are using (kept by garbage collection)
    pins/lease-<pid>-<r>.json   what a running build or pull is using (kept while it lives)
    tmp/<pid>-<random>/         staging; renamed into place when complete, else deleted
    lock                        flock: one writer at a time

Concurrent ``edu`` processes are safe: writers hold ``lock``; everything becomes visible by
``rename(2)``, which is atomic, so a reader sees the old state or the new one, never half.
A process killed mid-write leaves only a staging dir, which the next writer deletes.

A layer's blob is stored once, not twice: where the tar can be rebuilt byte for byte from
the unpacked layer (a plain tar, or a tar that this machine's gzip compressed at level 1, as
``edu build`` does), the store keeps the tar's headers (``.split``, see ``tarsplit``) instead
of the blob, and ``blob_path``, ``open_blob`` and ``open_layer_tar`` rebuild it when asked
(push, save, share). The blob goes only after its rebuild was checked against the blob
(see ``tarsplit.GzipCheck`` for how far), and only once the layer is in the store for good
(after its transaction). ``compact`` does the same for the blobs kept so far (gzip at other
levels: a recompression each). A rebuilt blob file is dropped again by the next collection
once no lease holds it.

Garbage collection (``rmi``, ``image prune``) deletes what no image, pin or lease names, and
runs under ``lock``. A build uses blobs and layers that no image names yet (its base may be
untagged and pruned meanwhile, the layers it makes belong to no image until it ends), so it
takes a *lease*, as containerd's clients do: a pin owned by a live process. Everything it
puts in the store or reuses is added to the lease under ``lock``, in the same hold as it is
found or renamed into place, so there is no moment at which GC could take it away. The lease
names its process by pid *and* start time: a SIGKILLed builder's lease is recognised as
stale (and deleted) by the next GC, even once its pid has been given to another process.

Introduced in notebooks/04-images.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import gzip
import hashlib
import json
import os
import secrets
import shutil
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from .. import paths
from .reference import Reference, ReferenceError, parse

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"

INDEX_VERSION = 1
_CHUNK = 1 << 20


class StoreError(Exception):
    """Something the user asked of the store cannot be done; the message says why and how."""


class DiskFull(StoreError):
    """The file system that holds the store (or a container's files) ran out of space."""


#: errno values that mean "no room": the disk is full, or the user's quota is.
NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def full_disk(what: str, where: Path, exc: OSError | None = None) -> DiskFull:
    """The one sentence for a full disk: what failed, which file system, how to free space."""
    mount = Path(where).resolve()
    while not os.path.ismount(mount) and mount != mount.parent:
        mount = mount.parent
    why = "its quota is used up" if exc is not None and exc.errno == errno.EDQUOT else \
        "the disk is full"
    return DiskFull(f"{what} failed: {why} (no space left on {mount}, which holds {where}). "
                    "Free some space and try again: 'edu image prune' removes unused images "
                    "and the build cache, 'edu prune' stopped containers.")


@contextlib.contextmanager
def no_space_is(what: str, where: Path) -> Iterator[None]:
    """Inside the block, a write that finds no space raises ``full_disk``'s DiskFull (after
    the block's own clean-up has run) instead of a bare OSError."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in NO_SPACE:
            raise
        raise full_disk(what, where, exc) from None


def sha256_file(path: Path) -> str:
    """``sha256:<hex>`` of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    """``sha256:<hex>`` of ``data``."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _hex(digest: str) -> str:
    algo, _, hexpart = digest.partition(":")
    if algo != "sha256" or len(hexpart) != 64 or not all(c in "0123456789abcdef" for c in hexpart):
        raise StoreError(f"{digest!r} is not a sha256 digest")
    return hexpart


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` in one rename, so readers see the old or the new file.

    The temp file's name is unique to this writer (pid and a random part: two threads of one
    process never share it); writers of one file in the store still hold the store's lock,
    so that the last rename is the last write."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def canonical_json(obj: Any) -> bytes:
    """JSON as the store writes it: stable key order, so equal content has equal digests."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


@dataclass
class Image:
    """One image in the store: its manifest, config and tags. ``id`` is the config digest."""

    manifest_digest: str
    manifest: dict[str, Any]
    config_digest: str
    config: dict[str, Any]
    tags: list[str] = field(default_factory=list)
    layer_sizes: list[int] = field(default_factory=list)

    @property
    def id(self) -> str:
        """The image ID, as Docker defines it: the digest of the config."""
        return self.config_digest

    @property
    def short_id(self) -> str:
        """The 12 hex digits ``docker images`` shows."""
        return _hex(self.config_digest)[:12]

    @property
    def diff_ids(self) -> list[str]:
        """The layers' uncompressed digests, bottom layer first."""
        return list(self.config.get("rootfs", {}).get("diff_ids", []))

    @property
    def size(self) -> int:
        """Bytes of all its layers' files, unpacked (what ``docker images`` calls SIZE)."""
        return sum(self.layer_sizes)

    @property
    def created(self) -> str:
        """The config's creation time (RFC 3339), or empty."""
        return self.config.get("created", "")

    def familiar_tags(self) -> list[str]:
        """Tags as Docker prints them (``busybox:latest``)."""
        return [parse(t).familiar() for t in self.tags]


class Store:
    """A content-addressed image store rooted at ``root``."""

    def __init__(self, root: Path | None = None):
        self.root = Path(root) if root else paths.state_dir() / "store"
        self.blobs = self.root / "blobs" / "sha256"
        self.layers = self.root / "layers" / "sha256"
        self.rebuild = self.root / "rebuild" / "sha256"
        self.pins = self.root / "pins"
        self.tmp = self.root / "tmp"
        for d in (self.blobs, self.layers, self.rebuild, self.pins, self.tmp):
            d.mkdir(parents=True, exist_ok=True)
        self.index_path = self.root / "index.json"
        self._lock_depth = 0
        self._added: list[Path] | None = None
        self._dry_later: set[str] = set()  # blobs (hex) to drop once the transaction holds
        self._lease: dict[str, Any] | None = None  # this process's lease, while it has one
        self._lease_path: Path | None = None
        self.clean_staging()  # what a killed writer left: every edu command tidies it up

    # ---- locking and staging --------------------------------------------------------------

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the store's writer lock (flock, released even if the process dies).

        Re-entrant within one process, so a loader can hold it around ``add_image``.
        """
        if self._lock_depth:
            self._lock_depth += 1
            try:
                yield
            finally:
                self._lock_depth -= 1
            return
        with open(self.root / "lock", "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            self._lock_depth = 1
            try:
                yield
            finally:
                self._lock_depth = 0
                fcntl.flock(f, fcntl.LOCK_UN)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """All or nothing: under the lock, and if anything fails, every blob and layer this
        transaction added is deleted again, so a refused image leaves the store as it was."""
        with self.lock():
            outer = self._added is not None
            if not outer:
                self._added = []
                index_before = self.index_path.read_bytes() if self.index_path.exists() \
                    else None
            try:
                yield
            except BaseException:
                if not outer:
                    if index_before is None:
                        self.index_path.unlink(missing_ok=True)
                    else:
                        write_atomic(self.index_path, index_before)
                    for path in reversed(self._added):
                        if path.is_dir():
                            shutil.rmtree(path, ignore_errors=True)
                        else:
                            path.unlink(missing_ok=True)
                raise
            else:
                if not outer and self._dry_later:  # committed: their layers hold them now
                    self._dehydrate(self._dry_later, self._leased_blobs(others_only=True))
            finally:
                if not outer:
                    self._added = None
                    self._dry_later = set()

    def _created(self, path: Path) -> None:
        if self._added is not None:
            self._added.append(path)

    @contextlib.contextmanager
    def staging(self) -> Iterator[Path]:
        """A private temp dir inside the store, always deleted afterwards."""
        d = self.tmp / f"{os.getpid()}-{secrets.token_hex(4)}"
        d.mkdir()
        try:
            yield d
        finally:
            shutil.rmtree(d, ignore_errors=True)

    def clean_staging(self) -> int:
        """Delete staging dirs, leases and ``write_atomic`` temp files (of the index, at the
        top of the store) of processes that no longer exist; return how many staging dirs
        went.

        Cheap (the staging dir is empty but while something is written), so every ``Store()``
        calls it: a SIGKILLed pull or build leaves nothing half-written past the next ``edu``
        command. A staging dir is its process's own, so no lock is needed to drop a dead
        one's; the blobs' and layers' temp files go with the next collection (``_collect``)."""
        removed = 0
        for d in self.tmp.iterdir():
            if _gone(d.name.split("-", 1)[0]):
                shutil.rmtree(d, ignore_errors=True)
                removed += 1
        for f in self.root.glob(".*.tmp"):
            _temp_file(f)
        for lease in self.pins.glob("lease-*.json"):  # (one of a live pid: see _lease_alive)
            if _gone(lease.name.split("-")[1]):
                lease.unlink(missing_ok=True)
        return removed

    # ---- leases: what a live process is using ---------------------------------------------

    @contextlib.contextmanager
    def lease(self) -> Iterator[None]:
        """Until the block ends, GC keeps every blob and layer this process puts in the
        store (``put_blob_*``, ``ensure_layer``) or takes from it (``use``, ``hold``).

        For a build or a pull: what they make or reuse belongs to no image until they end.
        A lease inside a lease is the outer one."""
        if self._lease is not None:
            yield
            return
        pid = os.getpid()
        self._lease = {"pid": pid, "process": _process(pid), "blobs": [], "layers": []}
        self._lease_path = self.pins / f"lease-{pid}-{secrets.token_hex(4)}.json"
        try:
            with self.lock():
                self._write_lease()
            yield
        finally:
            if os.getpid() == pid:  # (not in a forked child that unwinds: the lease is ours)
                with self.lock():
                    self._lease_path.unlink(missing_ok=True)
            self._lease = self._lease_path = None

    def _write_lease(self) -> None:
        write_atomic(self._lease_path, json.dumps(self._lease, sort_keys=True).encode())

    def _held(self, blobs=(), layers=()) -> None:
        """Add blobs and layers to this process's lease, if it has one (lock held)."""
        if self._lease is None:
            return
        new_blobs = [b for b in blobs if b not in self._lease["blobs"]]
        new_layers = [d for d in layers if d not in self._lease["layers"]]
        if new_blobs or new_layers:
            self._lease["blobs"] += new_blobs
            self._lease["layers"] += new_layers
            self._write_lease()

    def hold(self, blobs=(), layers=()) -> bool:
        """If these blobs and (unpacked) layers are all in the store, add them to this
        process's lease and return True; else False, and nothing is held."""
        with self.lock():
            if not all(self.has_blob(b) for b in blobs):
                return False
            if not all(self.layer_info(d) is not None and self.layer_dir(d).is_dir()
                       for d in layers):
                return False
            self._held(blobs, layers)
            return True

    def use(self, ref: str) -> Image:
        """``get``, and hold the image's manifest, config and layers in this process's
        lease: a build's base stays whole even if the image is removed meanwhile."""
        with self.lock():
            image = self.get(ref)
            self._held([image.manifest_digest, image.config_digest,
                        *(d["digest"] for d in image.manifest["layers"])], image.diff_ids)
            return image

    # ---- blobs ----------------------------------------------------------------------------

    def blob_path(self, digest: str) -> Path:
        """Where the blob named ``digest`` lives as a file (it may not exist). A layer blob
        the store keeps only as its layer is rebuilt into that file first (and held in this
        process's lease, if it has one); ``open_blob`` reads without making the file."""
        path = self._blob_file(digest)
        if not path.exists() and self._rebuilds(digest) is not None:
            self._materialize(digest)
        return path

    def _blob_file(self, digest: str) -> Path:
        return self.blobs / _hex(digest)

    def _stub(self, digest: str) -> Path:
        return self.rebuild / f"{_hex(digest)}.blob"

    def has_blob(self, digest: str) -> bool:
        """True if the blob is in the store (as a file, or as a layer that rebuilds it)."""
        return self._blob_file(digest).exists() or self._rebuilds(digest) is not None

    def read_blob(self, digest: str) -> bytes:
        """A blob's bytes; raises StoreError if missing."""
        try:
            return self._blob_file(digest).read_bytes()
        except FileNotFoundError:
            if self._rebuilds(digest) is not None:
                with self.open_blob(digest) as f:
                    return f.read()
            raise StoreError(f"blob {digest} is missing from the store at {self.root}; "
                             "pull or load the image again") from None

    def blob_size(self, digest: str) -> int:
        """The blob's length in bytes (what a manifest's descriptor records)."""
        try:
            return self._blob_file(digest).stat().st_size
        except FileNotFoundError:
            info = self._rebuilds(digest)
            if info is None:
                raise StoreError(f"blob {digest} is missing from the store at {self.root}; "
                                 "pull or load the image again") from None
            return info["blob_size"]

    def is_gzip(self, digest: str) -> bool:
        """Whether the blob is gzip (else a plain tar, or JSON)."""
        info = self._rebuilds(digest)
        if info is not None and not self._blob_file(digest).exists():
            return info["rebuild"] != "tar"
        with open(self.blob_path(digest), "rb") as f:
            return f.read(2) == b"\x1f\x8b"

    @contextlib.contextmanager
    def open_blob(self, digest: str) -> Iterator[BinaryIO]:
        """The blob's bytes as a stream: its file, or rebuilt from its layer (not checked
        here: a reader that needs the digest hashes what it reads, as it would a file)."""
        try:
            f = open(self._blob_file(digest), "rb")
        except FileNotFoundError:
            info = self._rebuilds(digest)
            if info is None:
                raise StoreError(f"blob {digest} is missing from the store at {self.root}; "
                                 "pull or load the image again") from None
            f = _ChunkReader(self._rebuilt(info, info["rebuild"]))  # type: ignore[assignment]
        with f:
            yield f

    def _rebuilds(self, digest: str) -> dict[str, Any] | None:
        """The info of the layer that rebuilds this blob, or None."""
        try:
            diff_id = self._stub(digest).read_text().strip()
            info = self.layer_info(diff_id)
        except (OSError, StoreError):
            return None
        if not info or info.get("blob") != digest or not info.get("rebuild") or \
                not self._split(info["diff_id"]).exists():
            return None
        return info

    def _split(self, diff_id: str) -> Path:
        return self.rebuild / f"{_hex(diff_id)}.split"

    def _rebuilt(self, info: dict[str, Any], how: str) -> Iterator[bytes]:
        """The layer's blob (``how``: its rebuild, e.g. gzip-1) or tar ("tar"), rebuilt."""
        from . import tarsplit

        def chunks() -> Iterator[bytes]:
            try:
                tar = tarsplit.tar_chunks(self._split(info["diff_id"]),
                                          self.layer_dir(info["diff_id"]))
                if how == "tar":
                    yield from tar
                else:
                    yield from tarsplit.gzip_chunks(tar, int(how.removeprefix("gzip-")),
                                                    bytes.fromhex(info["gzip_header"]))
            except tarsplit.SplitError as exc:
                raise StoreError(f"layer {info['diff_id'][:19]}... cannot rebuild its blob "
                                 f"({exc}): the store is damaged. Remove the image and pull, "
                                 "load or build it again.") from None
        return chunks()

    def _materialize(self, digest: str) -> None:
        """Rebuild a blob kept only as its layer into its file, checked against its digest.
        GC drops the file again once no lease holds it."""
        info = self._rebuilds(digest)
        if info is None:
            return
        with self.staging() as stage:
            tmp, h = stage / "blob", hashlib.sha256()
            with no_space_is("rebuilding a layer blob", self.root), open(tmp, "wb") as f:
                for chunk in self._rebuilt(info, info["rebuild"]):
                    f.write(chunk)
                    h.update(chunk)
            self._verify("sha256:" + h.hexdigest(), digest, f"the rebuilt blob {digest[:19]}")
            with self.lock():
                target = self._blob_file(digest)
                if not target.exists():
                    os.replace(tmp, target)
                self._held(blobs=[digest])

    def put_blob_bytes(self, data: bytes, expected: str | None = None) -> str:
        """Store ``data``; verify it against ``expected`` if given; return its digest."""
        digest = sha256_bytes(data)
        self._verify(digest, expected, "blob")
        target = self._blob_file(digest)
        with self.lock():
            if not target.exists():
                write_atomic(target, data)
                self._created(target)
            self._held(blobs=[digest])
        return digest

    def put_blob_file(self, path: Path, expected: str | None = None) -> str:
        """Store a file's bytes (moved if it is in staging, else copied); return its digest."""
        digest = sha256_file(path)
        self._verify(digest, expected, f"blob {path.name}")
        target = self._blob_file(digest)
        with contextlib.ExitStack() as stack:
            if not Path(path).is_relative_to(self.tmp):  # copied first, outside the lock
                copy = stack.enter_context(self.staging()) / "blob"
                shutil.copyfile(path, copy)
                path = copy
            with self.lock():
                if not target.exists():
                    os.replace(path, target)
                    self._created(target)
                self._held(blobs=[digest])
        return digest

    @staticmethod
    def _verify(actual: str, expected: str | None, what: str) -> None:
        if expected and actual != expected:
            raise StoreError(f"{what} is corrupt: its content hashes to {actual}, but it "
                             f"should be {expected}. Nothing was stored; fetch it again.")

    # ---- layers ---------------------------------------------------------------------------

    def layer_dir(self, diff_id: str) -> Path:
        """The unpacked layer (an overlay lowerdir) for ``diff_id``."""
        return self.layers / _hex(diff_id)

    def layer_info(self, diff_id: str) -> dict[str, Any] | None:
        """The layer's recorded size and member count, or None if it is not unpacked."""
        try:
            return json.loads((self.layers / f"{_hex(diff_id)}.json").read_text())
        except (FileNotFoundError, ValueError):
            return None

    def ensure_layer(self, blob_digest: str, diff_id: str, limits=None) -> dict[str, Any]:
        """Unpack the blob into its layer dir, once; check it really has ``diff_id``.

        Where the blob can be rebuilt from the layer (a plain tar, or this machine's gzip at
        level 1: see ``tarsplit``), its split is recorded as it streams by, checked, and the
        blob file is dropped. The blob must be safe from GC while it is read: held in a
        lease, or inside a transaction (which holds the lock throughout)."""
        from . import layers  # tarfile and friends: only loads and builds pay for them

        if self.hold(layers=[diff_id]):
            return self.layer_info(diff_id)
        with self.staging() as stage:
            dest = stage / "layer"
            dest.mkdir()
            blob = self._blob_file(blob_digest)
            split: _Splitter | None = None
            try:
                try:
                    src = open(blob, "rb")
                except FileNotFoundError:  # kept as its layer, whose dir is gone: no bytes
                    raise StoreError(f"blob {blob_digest} is missing from the store at "
                                     f"{self.root}; pull or load the image again") from None
                with src, _Splitter(src, blob, stage / "split") as split:
                    stats = layers.extract(split.stream, dest, limits=limits or layers.Limits())
            except layers.LayerError as exc:  # (the staging dir goes, and nothing else was made)
                raise StoreError(f"layer {blob_digest[:19]}... was not unpacked: {exc}") \
                    from None
            if stats.diff_id != diff_id:
                raise StoreError(
                    f"layer {blob_digest[:19]}... unpacks to {stats.diff_id}, but the image "
                    f"config says {diff_id}: the image is corrupt. Nothing was stored.")
            info = {"diff_id": diff_id, "blob": blob_digest, "size": stats.bytes,
                    "members": stats.members}
            rebuild = split.rebuild(dest, diff_id) if split else None
            if rebuild == "tar" and blob_digest != diff_id:
                rebuild = None
            if rebuild:
                info |= split.info(rebuild)
            with self.lock():
                # Another process may have unpacked the same layer meanwhile: keep theirs.
                if self.layer_info(diff_id) is None or not self.layer_dir(diff_id).is_dir():
                    self._install_layer(dest, info, stage / "split" if rebuild else None)
                self._held(layers=[diff_id])
        return self.layer_info(diff_id)

    def _install_layer(self, unpacked: Path, info: dict[str, Any],
                       split: Path | None = None) -> None:
        """Rename an unpacked layer into place, then its split and info files; then, if the
        blob rebuilds from them, drop the blob's file (lock held)."""
        target = self.layer_dir(info["diff_id"])
        if target.is_dir():  # a dir without info (its writer was killed in between): the
            split = None  # split was checked against ours, not it, so the blob stays
        else:
            os.rename(unpacked, target)
            self._created(target)
        if split is not None:
            os.replace(split, self._split(info["diff_id"]))
            self._created(self._split(info["diff_id"]))
        meta = self.layers / f"{_hex(info['diff_id'])}.json"
        write_atomic(meta, canonical_json(info))
        self._created(meta)
        if split is not None:
            stub = self._stub(info["blob"])
            write_atomic(stub, info["diff_id"].encode())
            self._created(stub)
            if self._added is None:
                self._dehydrate({_hex(info["blob"])}, self._leased_blobs(others_only=True))
            else:  # a rollback could not bring the file back: once the transaction holds
                self._dry_later.add(_hex(info["blob"]))

    def _leased_blobs(self, others_only: bool = False) -> set[str]:
        """The blobs (hex) live leases hold: their readers may be about to open the file."""
        held: set[str] = set()
        for lease in self.pins.glob("lease-*.json"):
            if others_only and lease == self._lease_path:
                continue
            try:
                data = json.loads(lease.read_text())
            except (OSError, ValueError):
                continue
            if isinstance(data, dict) and _lease_alive(data):
                held |= {b.removeprefix("sha256:") for b in data.get("blobs", [])}
        return held

    def _dehydrate(self, blobs: set[str], leased: set[str]) -> int:
        """Delete the files of these blobs (hex) that their layer rebuilds and no lease holds;
        the bytes freed (lock held)."""
        freed = 0
        for hexpart in blobs - leased:
            path = self.blobs / hexpart
            if path.exists() and self._rebuilds(f"sha256:{hexpart}") is not None:
                freed += path.stat().st_blocks * 512
                path.unlink()
        return freed

    def compact(self) -> dict[str, int]:
        """Keep as layers only the blobs still kept as files that a layer rebuilds byte for
        byte: gzip of this machine's at any level (each one recompressed once, to check) and
        plain tars. Returns how many blobs went and the bytes freed. Safe to interrupt."""
        from . import tarsplit

        done = {"blobs": 0, "bytes": 0}
        for meta in sorted(self.layers.glob("*.json")):
            info = self.layer_info(f"sha256:{meta.name.removesuffix('.json')}")
            if not info or "rebuild" in info or not info.get("blob"):
                continue  # (rebuilt already, or found not to be: False)
            with self.lease():
                if not self.hold([info["blob"]], [info["diff_id"]]):
                    continue
                blob = self._blob_file(info["blob"])
                if not blob.exists():
                    continue
                with self.staging() as stage:
                    try:
                        with open(blob, "rb") as src, \
                                _Splitter(src, blob, stage / "split", any_level=True) as split:
                            while split.how and split.stream.read(_CHUNK):
                                if split.check is not None and not split.check.ok:
                                    break  # compressed elsewhere: seen in its first kB
                        rebuild = split.rebuild(self.layer_dir(info["diff_id"]),
                                                info["diff_id"])
                    except (OSError, EOFError, zlib.error, tarsplit.SplitError):
                        continue
                    if not rebuild:  # noted, so that the next compact does not try again
                        with self.lock():
                            if self.layer_info(info["diff_id"]) is not None:
                                write_atomic(self.layers / meta.name,
                                             canonical_json(info | {"rebuild": False}))
                        continue
                    info |= split.info(rebuild)
                    size = blob.stat().st_blocks * 512
                    with self.lock():
                        if self.layer_info(info["diff_id"]) is None:
                            continue
                        os.replace(stage / "split", self._split(info["diff_id"]))
                        write_atomic(self.layers / meta.name, canonical_json(info))
                        write_atomic(self._stub(info["blob"]), info["diff_id"].encode())
                        if self._dehydrate({_hex(info["blob"])},
                                           self._leased_blobs(others_only=True)):
                            done["blobs"] += 1
                            done["bytes"] += size
        return done

    # ---- images and tags ------------------------------------------------------------------

    def _read_index(self) -> dict[str, Any]:
        try:
            index = json.loads(self.index_path.read_text())
        except FileNotFoundError:
            return {"version": INDEX_VERSION, "tags": {}, "images": {}}
        except ValueError as exc:
            raise StoreError(f"{self.index_path} is not valid JSON ({exc}); restore it or "
                             "remove it and load your images again") from None
        if index.get("version") != INDEX_VERSION:
            raise StoreError(f"{self.index_path} has index version {index.get('version')}, "
                             f"this edu reads version {INDEX_VERSION}")
        return index

    def _write_index(self, index: dict[str, Any]) -> None:
        write_atomic(self.index_path, json.dumps(index, indent=1, sort_keys=True).encode())

    def add_image(self, config: bytes, layer_blobs: list[tuple[str, str]],
                  tags: list[str] | tuple[str, ...] = (), config_digest: str | None = None
                  ) -> Image:
        """Record an image whose config and layer blobs are in (or go into) the store.

        ``layer_blobs`` is ``[(blob_digest, media_type), ...]``, bottom layer first; each is
        unpacked (once) and checked against the config's ``rootfs.diff_ids``. The manifest is
        written as OCI. Tags move to this image, as ``docker tag`` and ``docker load`` do.
        """
        with self.transaction():
            return self._add_image(config, layer_blobs, tags, config_digest)

    def _add_image(self, config: bytes, layer_blobs: list[tuple[str, str]],
                   tags: list[str] | tuple[str, ...], config_digest: str | None) -> Image:
        try:  # refuse a bad tag before storing anything
            refs = [str(parse(t)) for t in tags]
        except ReferenceError as exc:
            raise StoreError(str(exc)) from None
        cfg_digest = self.put_blob_bytes(config, config_digest)
        try:
            cfg = json.loads(config)
        except ValueError as exc:
            raise StoreError(f"the image config is not JSON ({exc})") from None
        diff_ids = cfg.get("rootfs", {}).get("diff_ids", [])
        if len(diff_ids) != len(layer_blobs):
            raise StoreError(f"the image config lists {len(diff_ids)} layers but "
                             f"{len(layer_blobs)} were given: the image is corrupt")
        descs = []
        for (blob, media), diff_id in zip(layer_blobs, diff_ids, strict=True):
            self.ensure_layer(blob, diff_id)
            descs.append({"mediaType": _oci_layer_type(media), "digest": blob,
                          "size": self.blob_size(blob)})
        manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                    "config": {"mediaType": OCI_CONFIG, "digest": cfg_digest,
                               "size": len(config)},
                    "layers": descs}
        manifest_digest = self.put_blob_bytes(canonical_json(manifest))
        index = self._read_index()
        index["images"].setdefault(manifest_digest, {"config": cfg_digest,
                                                     "added": time.time()})
        for ref in refs:
            index["tags"][ref] = manifest_digest
        self._write_index(index)  # the commit point: the image exists from here on
        return self.get(manifest_digest)

    def _image(self, index: dict[str, Any], manifest_digest: str) -> Image:
        manifest = json.loads(self.read_blob(manifest_digest))
        cfg_digest = manifest["config"]["digest"]
        config = json.loads(self.read_blob(cfg_digest))
        tags = sorted(t for t, m in index["tags"].items() if m == manifest_digest)
        sizes = [(self.layer_info(d) or {}).get("size", 0)
                 for d in config.get("rootfs", {}).get("diff_ids", [])]
        return Image(manifest_digest, manifest, cfg_digest, config, tags, sizes)

    # Readers hold the lock too, briefly: an image read from the index while another process
    # removes it and collects its blobs would otherwise be found, then be missing.

    def images(self) -> list[Image]:
        """Every image, newest first (as ``docker images`` lists them)."""
        with self.lock():
            index = self._read_index()
            out = [self._image(index, m) for m in index["images"]]
        return sorted(out, key=lambda i: (i.created, i.id), reverse=True)

    def get(self, ref: str) -> Image:
        """Find an image by tag, ``name@digest``, manifest digest, or (a prefix of) its ID."""
        with self.lock():
            index = self._read_index()
            found = self._resolve(index, ref)
            if found is None:
                raise StoreError(f"No such image: {ref}. 'edu images' lists what is here; "
                                 f"'edu bootstrap busybox' or 'edu load -i FILE' adds images.")
            return self._image(index, found)

    def _resolve(self, index: dict[str, Any], ref: str) -> str | None:
        if ref.startswith("sha256:") and ref in index["images"]:
            return ref
        candidate = ref.removeprefix("sha256:")
        if len(candidate) >= 4 and all(c in "0123456789abcdef" for c in candidate):
            hits = {m for m, rec in index["images"].items()
                    if _hex(rec["config"]).startswith(candidate)}
            if len(hits) > 1:
                raise StoreError(f"{ref} matches {len(hits)} images; give more digits")
            if hits:
                return hits.pop()
        try:
            parsed = parse(ref)
        except ReferenceError as exc:  # as Docker: rmi, history, save say why, not "no such"
            raise StoreError(str(exc)) from None
        if parsed.digest:
            if parsed.digest in index["images"]:
                return parsed.digest
            return None
        return index["tags"].get(str(parsed))

    def tag(self, source: str, target: str) -> Reference:
        """Point tag ``target`` at the image ``source`` names (``docker tag``)."""
        new = parse(target)
        if new.digest:
            raise StoreError(f"cannot tag with a digest: {target}")
        with self.lock():
            index = self._read_index()
            found = self._resolve(index, source)
            if found is None:
                raise StoreError(f"No such image: {source}")
            index["tags"][str(new)] = found
            self._write_index(index)
        return new

    def remove(self, ref: str, force: bool = False) -> list[str]:
        """``docker rmi``: untag; delete the image when no tag is left. Returns what was done."""
        done = []
        with self.lock():
            index = self._read_index()
            found = self._resolve(index, ref)
            if found is None:
                raise StoreError(f"No such image: {ref}")
            tags = sorted(t for t, m in index["tags"].items() if m == found)
            by_tag = self._is_tag(ref, index)
            if by_tag:
                del index["tags"][by_tag]
                done.append(f"Untagged: {parse(by_tag).familiar()}")
            elif len(tags) > 1 and not force:
                raise StoreError(f"image {ref} is referenced by {len(tags)} tags "
                                 f"({', '.join(parse(t).familiar() for t in tags)}): remove "
                                 "the tags one by one, or use --force")
            else:
                for t in tags:
                    del index["tags"][t]
                    done.append(f"Untagged: {parse(t).familiar()}")
            if found not in index["tags"].values():
                rec = index["images"].pop(found)
                done.append(f"Deleted: {rec['config']}")
            self._write_index(index)
            self._collect(index)
        return done

    def _is_tag(self, ref: str, index: dict[str, Any]) -> str | None:
        try:
            parsed = parse(ref)
        except ReferenceError:
            return None
        return str(parsed) if not parsed.digest and str(parsed) in index["tags"] else None

    # ---- pins and garbage collection ------------------------------------------------------

    def pin(self, owner: str, diff_ids: list[str]) -> None:
        """Keep these layers while ``owner`` (a container) uses them, even if untagged.

        Under the lock, and only if they are all still here: a layer that GC has deleted
        cannot be pinned back to life (StoreError: the image was removed meanwhile)."""
        with self.lock():
            missing = [d for d in diff_ids if not self.layer_dir(d).is_dir()]
            if missing:
                raise StoreError(f"layer {missing[0]} is no longer in the store (its image "
                                 "was removed meanwhile): pull, load or build it again")
            write_atomic(self.pins / f"{owner}.json", json.dumps(diff_ids).encode())

    def unpin(self, owner: str) -> None:
        """Release ``owner``'s layers."""
        with self.lock():
            (self.pins / f"{owner}.json").unlink(missing_ok=True)

    def prune(self, dangling: bool = True, labels: dict[str, str | None] | None = None
              ) -> dict[str, int]:
        """``edu image prune``: drop untagged images and the build cache, then every
        unreferenced blob and layer. With ``labels`` (Docker's ``--filter label=K[=V]``; a
        value of None matches any), only untagged images whose config has them go, and the
        build cache stays."""
        with self.lock():
            if labels is None:
                shutil.rmtree(self.root / "build-cache", ignore_errors=True)
                self.unpin("build-cache")
            index = self._read_index()
            removed_images = 0
            if dangling:
                tagged = set(index["tags"].values())
                for m in [m for m in index["images"] if m not in tagged
                          and self._labelled(index["images"][m]["config"], labels)]:
                    del index["images"][m]
                    removed_images += 1
                self._write_index(index)
            stats = self._collect(index)
        stats["images"] = removed_images
        return stats

    def _labelled(self, config_digest: str, labels: dict[str, str | None] | None) -> bool:
        """Whether the image config carries every one of ``labels`` (lock held)."""
        if not labels:
            return True
        have = (json.loads(self.read_blob(config_digest)).get("config") or {}).get(
            "Labels") or {}
        return all(k in have and (v is None or have[k] == v) for k, v in labels.items())

    def collect(self) -> dict[str, int]:
        """Delete what nothing references any more (after ``build.trim_cache``)."""
        with self.lock():
            return self._collect(self._read_index())

    def _collect(self, index: dict[str, Any]) -> dict[str, int]:
        """Delete blobs, layers and staging dirs that nothing references (lock held)."""
        keep_blobs, keep_layers = set(), set()
        for m, rec in index["images"].items():
            keep_blobs |= {_hex(m), _hex(rec["config"])}
            manifest = json.loads(self.read_blob(m))
            keep_blobs |= {_hex(d["digest"]) for d in manifest["layers"]}
            config = json.loads(self.read_blob(rec["config"]))
            keep_layers |= {_hex(d) for d in config.get("rootfs", {}).get("diff_ids", [])}
        for pin in self.pins.iterdir():
            if _temp_file(pin) or pin.suffix != ".json":
                continue
            pinned, leased = self._pinned(pin)
            keep_layers |= pinned
            keep_blobs |= leased
            for blob in leased:  # a blob kept only as its layer is that layer, split and all
                stub = self.rebuild / f"{blob}.blob"
                if stub.exists():
                    try:
                        keep_layers.add(_hex(stub.read_text().strip()))
                    except OSError:
                        pass
            for layer in pinned:  # a pinned layer keeps its blob too (commit, build cache)
                info = self.layer_info(f"sha256:{layer}")
                if info and info.get("blob"):
                    keep_blobs.add(_hex(info["blob"]))
        freed = blobs = lays = 0
        for blob in self.blobs.iterdir():
            if _temp_file(blob):
                continue
            if blob.name not in keep_blobs:
                freed += blob.stat().st_size
                blob.unlink()
                blobs += 1
        stubs = set()
        for kept in self.rebuild.iterdir():  # kept while their layer is
            name, _, kind = kept.name.partition(".")
            if _temp_file(kept):
                continue
            if kind == "blob":
                try:
                    layer = kept.read_text().strip().removeprefix("sha256:")
                except OSError:
                    layer = ""
                if layer in keep_layers:
                    stubs.add(name)
                    continue
            elif name in keep_layers:
                continue
            kept.unlink()
        freed += self._dehydrate(stubs & {b.name for b in self.blobs.iterdir()},
                                 self._leased_blobs())
        for layer in self.layers.iterdir():
            name = layer.name.removesuffix(".json")
            if _temp_file(layer):
                continue
            if name not in keep_layers:
                if layer.is_dir():
                    freed += _du(layer)
                    shutil.rmtree(layer)
                    lays += 1
                else:
                    layer.unlink()
        staging = self.clean_staging()
        return {"blobs": blobs, "layers": lays, "bytes": freed, "staging": staging}

    def _pinned(self, pin: Path) -> tuple[set[str], set[str]]:
        """The layers and blobs (hex) one pin file keeps: a container's pin is a list of
        layers; a lease also names blobs, and keeps nothing once its process is gone (the
        file is deleted then). Lock held."""
        try:
            held = json.loads(pin.read_text())
        except (OSError, ValueError):
            return set(), set()
        if isinstance(held, dict):
            if not _lease_alive(held):
                pin.unlink(missing_ok=True)
                return set(), set()
            layers, blobs = held.get("layers", []), held.get("blobs", [])
        elif self._container_gone(pin):
            pin.unlink(missing_ok=True)
            return set(), set()
        else:
            layers, blobs = held, []
        try:
            return {_hex(d) for d in layers}, {_hex(b) for b in blobs}
        except StoreError:
            return set(), set()

    # ---- checking it --------------------------------------------------------------------------

    def verify(self, blobs: bool | set[str] = True) -> list[str]:
        """What is wrong with the store, one sentence each; ``[]`` when it is consistent.

        Every tag names an image; every image's manifest, config and layer blobs are here,
        and its layers are unpacked (dir and info) under the diff_ids its config lists; and
        every blob's bytes hash to its name (``blobs=True``: all of them, which reads the
        whole store; a set of digests: only those; False: none). Under the lock, so what it
        sees is one moment's store. ``edu image verify`` prints it."""
        problems = []
        with self.lock():
            index = self._read_index()
            for tag, m in sorted(index["tags"].items()):
                if m not in index["images"]:
                    problems.append(f"tag {tag} names {m}, which is not an image here")
            for m, rec in sorted(index["images"].items()):
                problems += self._verify_image(m, rec)
            if blobs:
                for stub in sorted(self.rebuild.glob("*.blob")):  # kept as layers: rebuilt
                    name = stub.name.removesuffix(".blob")
                    if (blobs is True or f"sha256:{name}" in blobs) and \
                            not (self.blobs / name).exists():
                        problems += self._verify_rebuild(f"sha256:{name}")
                for blob in sorted(self.blobs.iterdir()):
                    if blob.name.startswith(".") or (
                            blobs is not True and f"sha256:{blob.name}" not in blobs):
                        continue
                    actual = sha256_file(blob)
                    if actual != f"sha256:{blob.name}":
                        problems.append(f"blob sha256:{blob.name} is damaged: its content "
                                        f"hashes to {actual}")
        return problems

    def _verify_rebuild(self, digest: str) -> list[str]:
        """A blob kept as its layer: its tar, rebuilt from the layer, hashes to the diff_id
        (the gzip over it was compared with the blob before the blob went). Lock held."""
        from . import tarsplit

        info = self._rebuilds(digest)
        if info is None:  # a stub whose layer went: garbage for the next collection (an
            return []     # image that names the blob is told of by _verify_image)
        try:
            actual, _ = tarsplit.sha256_of(self._rebuilt(info, "tar"))
        except StoreError as exc:
            return [f"blob {digest}: {exc}"]
        if actual != info["diff_id"]:
            return [f"blob {digest} is damaged: its layer {info['diff_id']} rebuilds a tar "
                    f"that hashes to {actual}"]
        return []

    def _verify_image(self, m: str, rec: dict[str, Any]) -> list[str]:
        """What is missing of one image of the index (lock held)."""
        try:
            manifest = json.loads(self.read_blob(m))
            config = json.loads(self.read_blob(rec["config"]))
        except (StoreError, ValueError) as exc:
            return [f"image {m}: {exc}"]
        out = []
        if manifest.get("config", {}).get("digest") != rec["config"]:
            out.append(f"image {m}: its manifest names another config than the index")
        for d in manifest.get("layers", []):
            if not self.has_blob(d["digest"]):
                out.append(f"image {m}: layer blob {d['digest']} is missing")
        for diff_id in config.get("rootfs", {}).get("diff_ids", []):
            if self.layer_info(diff_id) is None or not self.layer_dir(diff_id).is_dir():
                out.append(f"image {m}: layer {diff_id} is not unpacked")
        return out

    def _container_gone(self, pin: Path, min_age: float = 60.0) -> bool:
        """A container's pin whose container directory (beside the store) is gone: its
        ``edu`` process was SIGKILLed and the next command removed what it left, but could
        not unpin. Only after a minute: a container pins its layers before it makes its
        directory."""
        containers = self.root.parent / "containers"
        name = pin.name.removesuffix(".json")
        try:
            _hex(f"sha256:{name}")
            return containers.is_dir() and not (containers / name).exists() and \
                time.time() - pin.stat().st_mtime > min_age
        except (StoreError, OSError):
            return False

    # ---- reading images back out ----------------------------------------------------------

    def lowerdirs(self, image: Image) -> list[Path]:
        """The image's layer dirs, top layer first: overlayfs's ``lowerdir=`` order."""
        return [self.layer_dir(d) for d in reversed(image.diff_ids)]

    def open_layer_tar(self, blob_digest: str) -> BinaryIO:
        """The layer blob as an *uncompressed* tar stream (gunzipped if needed; rebuilt from
        its layer, with no gzip, if the store keeps it as its layer only)."""
        path = self._blob_file(blob_digest)
        try:
            with open(path, "rb") as f:
                gzipped = f.read(2) == b"\x1f\x8b"
        except FileNotFoundError:
            info = self._rebuilds(blob_digest)
            if info is None:
                raise StoreError(f"blob {blob_digest} is missing from the store at "
                                 f"{self.root}; pull or load the image again") from None
            return _ChunkReader(self._rebuilt(info, "tar"))  # type: ignore[return-value]
        return gzip.open(path, "rb") if gzipped else open(path, "rb")  # type: ignore[return-value]

    def layer_tar_size(self, blob_digest: str) -> int | None:
        """The uncompressed tar's length, if the store knows it without reading the blob."""
        info = self._rebuilds(blob_digest)
        return info.get("tar_size") if info else None

    def disk_usage(self) -> int:
        """Bytes the store uses on disk (blocks actually allocated, hardlinks once)."""
        return _du(self.root)


class _ChunkReader:
    """A read-only binary stream over an iterator of byte chunks."""

    def __init__(self, chunks: Iterator[bytes]):
        self._chunks, self._chunk, self._at, self._pos = chunks, b"", 0, 0

    def read(self, n: int = -1) -> bytes:
        """Up to ``n`` bytes (all that is left if ``n`` < 0); b"" at the end."""
        parts, want = [], n
        while want != 0:
            if self._at == len(self._chunk):
                chunk = next(self._chunks, None)
                if chunk is None:
                    break
                self._chunk, self._at = chunk, 0
                continue
            take = len(self._chunk) - self._at if want < 0 else \
                min(want, len(self._chunk) - self._at)
            parts.append(self._chunk[self._at:self._at + take])
            self._at += take
            if want > 0:
                want -= take
        data = b"".join(parts)
        self._pos += len(data)
        return data

    def tell(self) -> int:
        """How many bytes have been read."""
        return self._pos

    def readable(self) -> bool:
        """Yes."""
        return True

    def close(self) -> None:
        """Stop the rebuild (its files are closed)."""
        close = getattr(self._chunks, "close", None)
        if close:
            close()

    def __enter__(self) -> _ChunkReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Splitter:
    """A layer blob opened for ``layers.extract``: where the blob may be rebuilt from the
    layer (a plain tar; this machine's gzip at level 1, or at any level with ``any_level``),
    the tar streams through a ``tarsplit.Recorder`` (and a recompression compared with the
    blob) on its way; otherwise the blob goes to extract as it is, untouched."""

    def __init__(self, src: BinaryIO, blob: Path, out: Path, any_level: bool = False):
        from . import tarsplit

        self.blob_size = os.fstat(src.fileno()).st_size
        head = src.read(10)
        src.seek(0)
        self.how: str | None = None
        self.stream: Any = src
        self.recorder = self.check = None
        self.header = None
        self._out = out
        self._file = None
        self._ok = False
        if head[:2] == b"\x1f\x8b":
            level = tarsplit.gzip_level(head)
            if level is None or not (any_level or level == 1):
                return
            self.how = f"gzip-{level}"
            self.check = tarsplit.GzipCheck(blob, level)
            self.header = self.check.header
            inner: Any = gzip.GzipFile(fileobj=src, mode="rb")
        elif head[:4] in (b"\x28\xb5\x2f\xfd", b"\xfd7zX") or head[:3] == b"BZh":
            return  # compressed otherwise: extract says so
        else:
            self.how, inner = "tar", src
        self._file = open(out, "wb")
        self.recorder = tarsplit.Recorder(self._file)
        self.stream = _Tee(inner, [self.recorder, *([self.check] if self.check else [])])

    def info(self, rebuild: str) -> dict[str, Any]:
        """What the layer's info records to rebuild the blob."""
        out = {"rebuild": rebuild, "blob_size": self.blob_size, "tar_size": self.tar_size}
        if self.header is not None:
            out["gzip_header"] = self.header.hex()
        return out

    @property
    def tar_size(self) -> int:
        """Bytes of the uncompressed tar that streamed by."""
        return self.recorder.tar_size if self.recorder else 0

    def rebuild(self, layer_dir: Path, diff_id: str) -> str | None:
        """How the blob is rebuilt from ``layer_dir`` and the split (``tar``, ``gzip-N``),
        once checked: the split's tar hashes to ``diff_id`` and the recompression was the
        blob, byte for byte; None if it cannot be (the blob stays)."""
        from . import tarsplit

        if not self._ok:
            return None
        try:
            digest, size = tarsplit.sha256_of(tarsplit.tar_chunks(self._out, layer_dir))
        except tarsplit.SplitError:
            return None
        return self.how if digest == diff_id and size == self.tar_size else None

    def __enter__(self) -> _Splitter:
        return self

    def __exit__(self, kind: object, *exc: object) -> None:
        """Finish the split and the comparison (both read to the end of the blob)."""
        self._ok = False
        try:
            if self.recorder is not None:
                self._ok = self.recorder.close() and kind is None
            if self.check is not None:
                self._ok = self.check.close() and self._ok
        finally:
            if self._file is not None:
                self._file.close()


class _Tee:
    """A reader that hands every byte it reads to ``sinks`` (their ``feed``) as well."""

    def __init__(self, f: Any, sinks: list[Any]):
        self._f, self._sinks = f, sinks

    def read(self, n: int = -1) -> bytes:
        """Up to ``n`` bytes of the stream."""
        from .layers import LayerError

        try:
            data = self._f.read(n)
        except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
            raise LayerError(f"the layer is not a valid gzip stream: {exc}. The download is "
                             "damaged or this is not a layer; pull the image again.") from None
        for sink in self._sinks:
            sink.feed(data)
        return data


def _gone(pid: str) -> bool:
    """True if ``pid`` (a number in a file name) names no process any more."""
    return pid.isdigit() and int(pid) != os.getpid() and not Path(f"/proc/{pid}").exists()


def _temp_file(path: Path) -> bool:
    """A ``write_atomic`` temp file (``.NAME.PID.RANDOM.tmp``), not a blob or a layer; one a
    killed writer left is deleted here, one a live writer is writing is left alone."""
    if not path.name.startswith("."):
        return False
    parts = path.name.split(".")
    if path.name.endswith(".tmp") and len(parts) > 3 and _gone(parts[-3]):
        path.unlink(missing_ok=True)
    return True


def _process(pid: int) -> str:
    """``BOOT_ID START``: with the pid, this names one process on this boot; '' once gone."""
    from .. import kernel

    started = kernel.start_time(pid)
    return f"{kernel.boot_id()} {started}" if started else ""


def _lease_alive(lease: dict[str, Any]) -> bool:
    """True while the process that took ``lease`` runs."""
    pid = lease.get("pid")
    return isinstance(pid, int) and _process(pid) == lease.get("process") != ""


def _du(path: Path) -> int:
    seen, total = set(), 0
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            st = os.lstat(os.path.join(dirpath, name))
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            total += st.st_blocks * 512
    return total


def _oci_layer_type(media: str) -> str:
    if media in (OCI_LAYER, OCI_LAYER_GZIP):
        return media
    if media == DOCKER_LAYER_GZIP or media.endswith("gzip"):
        return OCI_LAYER_GZIP
    if media.endswith(".tar") or media == "application/vnd.docker.image.rootfs.diff.tar":
        return OCI_LAYER
    raise StoreError(f"layer media type {media!r} is not supported (gzip or plain tar only)")
