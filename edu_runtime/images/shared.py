"""Shared base images: one machine-wide copy that every user's store takes its images from.

A classroom of 30 students on one machine should not run ``debootstrap`` 30 times (it needs
root anyway, which students do not have). So the administrator *shares* root's base images
once (``sudo edu image share debian busybox python``) into a system-wide directory, and any
user's store that lacks an image it is asked for (``edu run``, ``create``, ``build`` FROM,
``pull``, ``bootstrap``) copies it from there first, saying so in one line, as Docker says
"Unable to find image ... locally" before it pulls.

On disk (``/var/lib/edu-shared``, or ``$EDU_SHARED_DIR``), root's, mode 0755, files 0444::

    blobs/sha256/<hex>   manifests, configs and layer tars, named by their sha256
    index.json           tags -> manifest digests, as a store's own index.json

Why the blobs are copied and each student unpacks them, rather than every student's
containers using one unpacked copy: a rootless container maps one uid, the student's own, to
0; a file that belongs to the host's root belongs to no uid in that namespace, so the
kernel shows it as 65534 (``nobody``), and ``stat -c %u /bin/sh`` would print 65534, dpkg
could not replace it, and so on. Unpacked by the student, every file is theirs, which is 0
inside. (Hard links would save the blob copy, but ``fs.protected_hardlinks`` forbids a user
to link a file they do not own.) bench/shared_images.py measures what that costs.

A shared directory is trusted only if root owns it and no one else can write to it (nor to
its blobs or index): anyone who could write there could put their files in every student's
containers. Every blob is checked against its digest as it is copied, so a damaged or stale
shared store gives one sentence and leaves the student's store as it was.

Introduced in notebooks/04-images (the store); used for a classroom (docs/shared-images.md).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import stat
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from .reference import ReferenceError, parse
from .store import INDEX_VERSION, Image, Store, StoreError, sha256_bytes, sha256_file, write_atomic

DEFAULT_DIR = Path("/var/lib/edu-shared")


def shared_dir() -> Path:
    """Where this machine's shared images are: ``$EDU_SHARED_DIR``, or /var/lib/edu-shared."""
    return Path(os.environ.get("EDU_SHARED_DIR") or DEFAULT_DIR)


def _blob(where: Path, digest: str) -> Path:
    algo, _, hexpart = digest.partition(":")
    if algo != "sha256" or len(hexpart) != 64 or not all(c in "0123456789abcdef"
                                                         for c in hexpart):
        raise StoreError(f"the shared images in {where} name a blob {digest!r}, which is not a "
                         "sha256 digest: the shared store is damaged. Ask the administrator "
                         "to share the images again (sudo edu image share IMAGE...).")
    return where / "blobs" / "sha256" / hexpart


# ---- the administrator's side: share -------------------------------------------------------

@contextlib.contextmanager
def _locked(where: Path) -> Iterator[None]:
    with open(where / "lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _read_index(where: Path) -> dict:
    try:
        index = json.loads((where / "index.json").read_text())
    except FileNotFoundError:
        return {"version": INDEX_VERSION, "tags": {}, "images": {}}
    except (ValueError, UnicodeDecodeError) as exc:
        raise StoreError(f"{where / 'index.json'} is not valid JSON ({exc}): the shared store "
                         "is damaged. Ask the administrator to share the images again "
                         "(sudo edu image share IMAGE...).") from None
    if not isinstance(index, dict) or index.get("version") != INDEX_VERSION \
            or not isinstance(index.get("tags"), dict):
        raise StoreError(f"{where / 'index.json'} is not a shared image index this edu reads "
                         "(version 1 with tags): ask the administrator to share the images "
                         "again (sudo edu image share IMAGE...).")
    return index


def share(store: Store, refs: list[str], where: Path | None = None) -> list[Image]:
    """Put these images of ``store`` (root's) into the shared directory: their blobs (files
    root's, 0444) and their tags. Only root may: the directory is what every user trusts."""
    where = where or shared_dir()
    if os.geteuid() != 0:
        raise StoreError(f"sharing images needs root: the shared images ({where}) are root's "
                         "so that every user can trust them. Run 'sudo edu image share "
                         f"{' '.join(refs)}'.")
    with store.lease():
        images = [store.use(ref) for ref in refs]  # every name checked before anything is made
        (where / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        for d in (where, where / "blobs", where / "blobs" / "sha256"):
            os.chown(d, 0, 0)
            os.chmod(d, 0o755)
        with _locked(where):
            index = _read_index(where)
            for image in images:
                for digest in (image.manifest_digest, image.config_digest,
                               *(d["digest"] for d in image.manifest["layers"])):
                    target = _blob(where, digest)
                    if target.exists() and sha256_file(target) == digest:
                        continue
                    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
                    try:
                        # (a blob the store keeps as its layer only is rebuilt on the way)
                        with store.open_blob(digest) as src, open(tmp, "wb") as out:
                            shutil.copyfileobj(src, out, 1 << 20)
                        if sha256_file(tmp) != digest:
                            raise StoreError(f"blob {digest[:19]}... of {image.tags or image.id}"
                                             " does not hash to its name: the store is "
                                             "damaged ('edu image verify' says more).")
                        os.chmod(tmp, 0o444)
                        os.replace(tmp, target)
                    finally:
                        tmp.unlink(missing_ok=True)
                index["images"][image.manifest_digest] = {"config": image.config_digest,
                                                          "added": time.time()}
                for tag in image.tags:
                    index["tags"][tag] = image.manifest_digest
            write_atomic(where / "index.json", json.dumps(index, indent=1, sort_keys=True)
                         .encode())
            os.chmod(where / "index.json", 0o644)
    return images


def unshare(refs: list[str], where: Path | None = None) -> list[str]:
    """Remove these tags from the shared images (and the blobs no shared image names)."""
    where = where or shared_dir()
    if os.geteuid() != 0:
        raise StoreError("unsharing images needs root: run 'sudo edu image share --rm ...'.")
    with _locked(where):
        index = _read_index(where)
        gone = []
        for ref in refs:
            key = _key(ref)
            if key not in index["tags"]:
                raise StoreError(f"{ref} is not shared: 'edu image share --list' lists what is.")
            del index["tags"][key]
            gone.append(key)
        kept = set(index["tags"].values())
        index["images"] = {m: rec for m, rec in index["images"].items() if m in kept}
        names = set()
        for m, rec in index["images"].items():
            manifest = json.loads(_blob(where, m).read_bytes())
            names |= {m, rec["config"], *(d["digest"] for d in manifest["layers"])}
        write_atomic(where / "index.json", json.dumps(index, indent=1, sort_keys=True).encode())
        os.chmod(where / "index.json", 0o644)
        for blob in (where / "blobs" / "sha256").iterdir():
            if f"sha256:{blob.name}" not in names:
                blob.unlink()
    return gone


# ---- every user's side: list and take ------------------------------------------------------

def _key(ref: str) -> str:
    try:
        return str(parse(ref))
    except ReferenceError as exc:
        raise StoreError(str(exc)) from None


def untrusted(where: Path) -> str:
    """Why the shared directory must not be trusted, in a sentence; "" if it may be.

    Root must own the directory, its blobs and its index, and no one else may write to them:
    a directory a student can write to could hand every other student's containers its
    files."""
    for path in (where, where / "blobs", where / "blobs" / "sha256", where / "index.json"):
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            continue
        if stat.S_ISLNK(st.st_mode):
            return f"{path} is a symbolic link"
        if st.st_uid != 0:
            return f"{path} belongs to uid {st.st_uid}, not root"
        if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            who = "others" if st.st_mode & stat.S_IWOTH else "its group"
            return f"{path} can be written by {who} (mode {stat.S_IMODE(st.st_mode):04o})"
    return ""


def _trusted_index(where: Path) -> dict | None:
    """The shared index, or None if there is no shared store; raises if it is not trusted."""
    try:
        os.stat(where / "index.json")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StoreError(f"the shared images in {where} cannot be read ({exc.strerror}): the "
                         f"administrator makes them readable to all (sudo chmod -R a+rX "
                         f"{where}), or unsets EDU_SHARED_DIR if it points elsewhere.") from None
    why = untrusted(where)
    if why:
        raise StoreError(f"the shared images in {where} are not trusted: {why}. Only root may "
                         f"write there (sudo chown -R root: {where} && sudo chmod -R go-w "
                         f"{where}); until then, nothing is taken from it.")
    return _read_index(where)


def listing(where: Path | None = None) -> list[dict]:
    """The shared images: one entry per tag, with its manifest digest, image ID and size."""
    where = where or shared_dir()
    index = _trusted_index(where) or {"tags": {}, "images": {}}
    out = []
    for tag, m in sorted(index["tags"].items()):
        rec = index["images"].get(m, {})
        try:
            manifest = json.loads(_blob(where, m).read_bytes())
            size = sum(d.get("size", 0) for d in manifest.get("layers", []))
        except (OSError, ValueError):
            size = None  # said as "damaged" by the caller
        out.append({"tag": tag, "manifest": m, "id": rec.get("config", ""), "size": size})
    return out


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def take(store: Store, ref: str, where: Path | None = None,
         say: Callable[[str], None] = _say) -> Image | None:
    """If ``store`` lacks ``ref`` and the shared images have it, copy it in (one line said)
    and return it; None if neither has it. A damaged, stale or untrusted shared store raises
    StoreError with one sentence, and the store is as it was."""
    where = where or shared_dir()
    if store.root.resolve() == where.resolve():
        return None
    try:
        key = _key(ref)
    except StoreError:
        return None  # (not a name: an ID is only ever local)
    try:
        store.get(ref)
        return None  # (the store has it: nothing to take)
    except StoreError:
        pass
    index = _trusted_index(where)
    if index is None or key not in index["tags"]:
        return None
    manifest_digest = index["tags"][key]
    say(f"Unable to find image '{ref}' locally: copying it from this machine's shared images "
        f"({where})")
    damaged = (f"the shared copy of {parse(ref).familiar()} in {where} is damaged or stale: "
               "{what}. Nothing was copied; ask the administrator to share it again "
               f"(sudo edu image share {parse(ref).familiar()}).")

    def read(digest: str) -> bytes:
        try:
            data = _blob(where, digest).read_bytes()
        except FileNotFoundError:
            raise StoreError(damaged.format(what=f"blob {digest[:19]}... is missing")) from None
        if sha256_bytes(data) != digest:
            raise StoreError(damaged.format(what=f"blob {digest[:19]}... does not hash to "
                                            "its name")) from None
        return data

    try:
        manifest = json.loads(read(manifest_digest))
        config = read(manifest["config"]["digest"])
        layer_blobs = [(d["digest"], d["mediaType"]) for d in manifest["layers"]]
    except (ValueError, KeyError, TypeError):
        raise StoreError(damaged.format(what="its manifest is not an image manifest")) from None
    with store.lease(), store.transaction():
        for digest, _ in layer_blobs:
            source = _blob(where, digest)
            if store.has_blob(digest):
                continue
            if not source.exists():
                raise StoreError(damaged.format(what=f"layer {digest[:19]}... is missing"))
            try:
                store.put_blob_file(source, digest)
            except StoreError as exc:
                if "corrupt" not in str(exc):
                    raise
                raise StoreError(damaged.format(
                    what=f"layer {digest[:19]}... does not hash to its name")) from None
        return store.add_image(config, layer_blobs, [key], manifest["config"]["digest"])
