"""The image store: content-addressed blobs, layers unpacked once, and a tag index.

An OCI image is three kinds of JSON and some tar files, all named by the sha256 of their
bytes: a *manifest* lists a *config* (Env, Cmd, history, and the ``diff_ids`` of the layers)
and the layer *blobs*. Naming content by its hash is what lets two images share a layer: the
same bytes have the same name, so they are stored once. Every blob is hashed as it is written
and refused if the hash is not the one promised.

On disk (``/var/lib/edu/store`` for root, ``~/.local/share/edu/store`` otherwise)::

    blobs/sha256/<hex>          manifests, configs and layer tars (as pulled: usually gzip)
    layers/sha256/<hex>/        each layer unpacked once, named by its diff_id: an overlay lowerdir
    layers/sha256/<hex>.json    the layer's size and member count
    index.json                  tags -> manifest digests, and the images' configs
    pins/<owner>.json           layers that containers are using (kept by garbage collection)
    pins/lease-<pid>-<r>.json   what a running build or pull is using (kept while it lives)
    tmp/<pid>-<random>/         staging; renamed into place when complete, else deleted
    lock                        flock: one writer at a time

Concurrent ``edu`` processes are safe: writers hold ``lock``; everything becomes visible by
``rename(2)``, which is atomic, so a reader sees the old state or the new one, never half.
A process killed mid-write leaves only a staging dir, which the next writer deletes.

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
        self.pins = self.root / "pins"
        self.tmp = self.root / "tmp"
        for d in (self.blobs, self.layers, self.pins, self.tmp):
            d.mkdir(parents=True, exist_ok=True)
        self.index_path = self.root / "index.json"
        self._lock_depth = 0
        self._added: list[Path] | None = None
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
            finally:
                if not outer:
                    self._added = None

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
        """Where the blob named ``digest`` lives (it may not exist)."""
        return self.blobs / _hex(digest)

    def has_blob(self, digest: str) -> bool:
        """True if the blob is in the store."""
        return self.blob_path(digest).exists()

    def read_blob(self, digest: str) -> bytes:
        """A blob's bytes; raises StoreError if missing."""
        try:
            return self.blob_path(digest).read_bytes()
        except FileNotFoundError:
            raise StoreError(f"blob {digest} is missing from the store at {self.root}; "
                             "pull or load the image again") from None

    def put_blob_bytes(self, data: bytes, expected: str | None = None) -> str:
        """Store ``data``; verify it against ``expected`` if given; return its digest."""
        digest = sha256_bytes(data)
        self._verify(digest, expected, "blob")
        target = self.blob_path(digest)
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
        target = self.blob_path(digest)
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

        The blob must be safe from GC while it is read: held in a lease, or inside a
        transaction (which holds the lock throughout)."""
        from . import layers  # tarfile and friends: only loads and builds pay for them

        if self.hold(layers=[diff_id]):
            return self.layer_info(diff_id)
        with self.staging() as stage:
            dest = stage / "layer"
            dest.mkdir()
            try:
                with open(self.blob_path(blob_digest), "rb") as src:
                    stats = layers.extract(src, dest, limits=limits or layers.Limits())
            except layers.LayerError as exc:  # (the staging dir goes, and nothing else was made)
                raise StoreError(f"layer {blob_digest[:19]}... was not unpacked: {exc}") \
                    from None
            if stats.diff_id != diff_id:
                raise StoreError(
                    f"layer {blob_digest[:19]}... unpacks to {stats.diff_id}, but the image "
                    f"config says {diff_id}: the image is corrupt. Nothing was stored.")
            info = {"diff_id": diff_id, "blob": blob_digest, "size": stats.bytes,
                    "members": stats.members}
            with self.lock():
                # Another process may have unpacked the same layer meanwhile: keep theirs.
                if self.layer_info(diff_id) is None or not self.layer_dir(diff_id).is_dir():
                    self._install_layer(dest, info)
                self._held(layers=[diff_id])
        return self.layer_info(diff_id)

    def _install_layer(self, unpacked: Path, info: dict[str, Any]) -> None:
        """Rename an unpacked layer into place, then its info file (lock held)."""
        target = self.layer_dir(info["diff_id"])
        if not target.is_dir():  # (a dir without info: its writer was killed in between)
            os.rename(unpacked, target)
            self._created(target)
        meta = self.layers / f"{_hex(info['diff_id'])}.json"
        write_atomic(meta, canonical_json(info))
        self._created(meta)

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
                          "size": self.blob_path(blob).stat().st_size})
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
        except ReferenceError:
            return None
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
                for blob in sorted(self.blobs.iterdir()):
                    if blob.name.startswith(".") or (
                            blobs is not True and f"sha256:{blob.name}" not in blobs):
                        continue
                    actual = sha256_file(blob)
                    if actual != f"sha256:{blob.name}":
                        problems.append(f"blob sha256:{blob.name} is damaged: its content "
                                        f"hashes to {actual}")
        return problems

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
        """The layer blob as an *uncompressed* tar stream (gunzipped if needed)."""
        path = self.blob_path(blob_digest)
        with open(path, "rb") as f:
            gzipped = f.read(2) == b"\x1f\x8b"
        return gzip.open(path, "rb") if gzipped else open(path, "rb")  # type: ignore[return-value]

    def disk_usage(self) -> int:
        """Bytes the store uses on disk (blocks actually allocated, hardlinks once)."""
        return _du(self.root)


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
