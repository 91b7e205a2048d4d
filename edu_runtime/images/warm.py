"""A warm rebuild, answered from the last build's record without starting the builder.

Run ``edu build`` twice on an unchanged context and every step says ``---> Using cache``:
the builder computes each step's cache key (the image so far, the instruction, a checksum
of what COPY reads), finds the entry, and moves the tag. Each of those answers depends only
on a few inputs, so after every successful build the builder writes down (``Record``) what a
build with the *same inputs* would find, and what it would print:

- the Dockerfile's bytes, the build args, the target and the tags (another Dockerfile or
  another ``--build-arg`` is not this build: the builder runs, and writes its own record);
- the base images, by tag, and the image ID each tag named;
- for each COPY and ADD from the context: its sources and the checksum of their contents
  (names, modes and bytes, after .dockerignore: ``context.sources_digest``, the cache key's
  own part);
- for each step: its cache entry (and a hash of the entry's bytes) and the layers it holds,
  with their blobs (as the builder's ``Store.hold`` checks them);
- the image it ended with, and the lines it printed, as a warm build prints them.

There is one record per context directory and Dockerfile (the last build of it), kept
beside the build cache as ``build-cache/warm-<hash>.json``, so ``edu image prune`` drops it
with the cache, and a class day of builds leaves one file per directory built, not one per
build.

The next ``edu build`` with the same inputs (``replay``) checks every one of them again:
each base tag still names the same image, each COPY's files still hash the same (every file
is read again, as Docker hashes the whole context it is sent; a changed byte, mode or name
is a miss), each cache entry and its layers are still in the store, and each tag still
names the image (an untagged image is still in the store). Only then does it print the
record's lines, which are exactly the builder's: ``Step 2/4 : COPY ...``, ``---> Using
cache``, ``Successfully tagged ...``. If anything differs, it prints nothing and the builder
runs, as before. A replay writes nothing, so it needs no lease: it only reads, under the
store's lock, what the store holds at that moment.

What it saves is the builder's start: the Python modules of the builder, the store, the
Dockerfile parser and argparse take longer to import than the cache look-ups take to do
(bench/build_tiny.py, issue 18). So this module imports nothing but the standard library's
cheapest modules, and ``context`` (for the COPY checksums).

Introduced in notebooks/05-dockerfile.
"""

from __future__ import annotations

import hashlib
import json
import os

#: Written in every record: raise it when a record would now mean something else.
VERSION = 1


def state_dir() -> str:
    """``paths.state_dir()``, without importing pathlib; "" when the user's directory is not
    theirs (or missing), which the normal path then says."""
    if "EDU_STATE_DIR" in os.environ:
        return os.environ["EDU_STATE_DIR"]
    if os.geteuid() == 0:
        return "/var/lib/edu"
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"),
                                                           ".local/share")
    where = os.path.join(base, "edu")
    try:
        st = os.lstat(where)
    except OSError:
        return ""
    return where if st.st_uid == os.geteuid() and not st.st_mode & 0o077 else ""


def store_root() -> str:
    """The image store's directory (``Store().root``), or "" (see ``state_dir``)."""
    state = state_dir()
    return os.path.join(state, "store") if state else ""


def where(root: str, context: str, dockerfile: str) -> str:
    """The record of the last build of this context with this Dockerfile."""
    key = hashlib.sha256(json.dumps(
        [VERSION, os.path.realpath(context), os.path.realpath(dockerfile)]).encode())
    return os.path.join(root, "build-cache", f"warm-{key.hexdigest()}.json")


def inputs(text: bytes, tags: list[str], build_args: dict[str, str],
           target: str | None) -> str:
    """A hash of the other inputs a warm build's answers depend on: the Dockerfile's bytes,
    the tags, the build args and the target (the store and the context files ``replay``
    checks itself)."""
    return hashlib.sha256(json.dumps(
        [hashlib.sha256(text).hexdigest(), list(tags), sorted(build_args.items()), target]
    ).encode()).hexdigest()


def _hex(digest: str) -> str:
    return digest.partition(":")[2]


def replay(root: str, path: str, given: str, context: str) -> tuple[str, list[str]] | None:
    """If the record at ``path`` was made with the ``inputs`` ``given`` and still holds,
    (the image ID, the lines to print); else None.

    Nothing is printed here: the caller prints the lines (or, quiet, only the ID)."""
    import fcntl

    try:
        with open(path, "rb") as f:
            record = json.loads(f.read())
        if record.get("version") != VERSION or record.get("inputs") != given:
            return None
        with open(os.path.join(root, "lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # (as the store's readers: one moment's state)
            try:
                if not _holds(root, record, context):
                    return None
                for key, *_ in record["steps"]:  # used: the build cache's trim keeps them
                    try:
                        os.utime(os.path.join(root, "build-cache", f"{key}.json"))
                    except OSError:
                        pass
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return None
    return record["image"], record["lines"]


def _holds(root: str, record: dict, context: str) -> bool:
    with open(os.path.join(root, "index.json"), "rb") as f:
        index = json.loads(f.read())
    if index.get("version") != 1:
        return False

    def image_of(tag: str) -> str | None:
        manifest = index["tags"].get(tag)
        return index["images"][manifest]["config"] if manifest in index["images"] else None

    if any(image_of(tag) != image for tag, image in record["bases"]):
        return False
    manifest = record["manifest"]  # (the image as built: its config and these blobs)
    if manifest not in index["images"] or index["images"][manifest]["config"] != record["image"]:
        return False  # (removed since: the builder adds it again)
    if any(index["tags"].get(tag) != manifest for tag in record["tags"]):
        return False
    blobs = os.path.join(root, "blobs", "sha256")
    layers = os.path.join(root, "layers", "sha256")
    whole = set(record["image_blobs"])  # (the image is in the store, so these are too)
    for key, entry_hash, blob_digests, diff_ids in record["steps"]:
        with open(os.path.join(root, "build-cache", f"{key}.json"), "rb") as f:
            if hashlib.sha256(f.read()).hexdigest() != entry_hash:
                return False
        for blob, diff_id in zip(blob_digests, diff_ids, strict=True):
            if not os.path.isdir(os.path.join(layers, _hex(diff_id))):
                return False
            with open(os.path.join(layers, _hex(diff_id) + ".json"), "rb") as f:
                info = json.loads(f.read())
            # The blob is there if the image has it, or as a file, or as the blob its layer
            # was made from (which the store keeps, or rebuilds, as long as the layer).
            if not (blob in whole or info.get("blob") == blob
                    or os.path.exists(os.path.join(blobs, _hex(blob)))):
                return False
    if record["sources"]:
        from . import context as ctx

        listed: dict[str, dict] = {}
        for srcs, instruction, dockerfile_rel, add, digest in record["sources"]:
            try:
                if dockerfile_rel not in listed:
                    listed[dockerfile_rel] = ctx.list_context(context, dockerfile_rel)
                entries = listed[dockerfile_rel]
                found = ctx.resolve_sources(context, srcs, instruction=instruction,
                                            entries=entries)
            except ctx.ContextError:
                return False
            if ctx.sources_digest(found, entries, add) != digest:
                return False
    return True


class Record:
    """What one build found and printed, written down for the next one (see the module)."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.bases: list[list[str]] = []
        self.sources: list[list] = []
        self.steps: list[list] = []
        self.usable = True  # False once something happened that a replay could not redo

    def save(self, path: str, given: str, image, tags: list[str]) -> None:
        """Write the record of the build that made ``image`` (a store.Image), atomically (a
        reader sees the old one or this one); a build that cannot be replayed removes the
        one before it."""
        if not self.usable:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            return
        data = json.dumps({"version": VERSION, "inputs": given, "image": image.id,
                           "manifest": image.manifest_digest,
                           "image_blobs": [d["digest"] for d in image.manifest["layers"]],
                           "tags": tags,
                           "bases": self.bases, "sources": self.sources, "steps": self.steps,
                           "lines": self.lines}).encode()
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
