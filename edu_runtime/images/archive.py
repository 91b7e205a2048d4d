"""``docker save`` and ``docker load``: images in and out of the store as files.

An image is portable because it is only files: JSON that names other files by the sha256 of
their bytes, and layer tars. This module writes and reads the three ways those files travel:

- **docker-archive**, what ``docker save`` wrote up to Docker 24 and what every Docker loads:
  ``manifest.json`` (``[{"Config": "<id>.json", "RepoTags": [...], "Layers": [...]}]``), the
  config, ``repositories``, and each layer as an *uncompressed* tar, so its sha256 is the
  layer's ``diff_id``.
- **OCI image layout**: ``oci-layout``, ``index.json`` naming manifests, and every blob under
  ``blobs/sha256/<hex>`` exactly as a registry serves it. ``format="oci"`` writes it as a
  directory, ``format="oci-archive"`` as a tar of one: skopeo's ``oci:DIR:TAG`` and
  ``oci-archive:FILE:TAG``. Each tag gets a descriptor annotated the way Docker and containerd
  do it: ``io.containerd.image.name`` (the full name), ``org.opencontainers.image.ref.name``
  (the tag alone).
- **Docker 25+** ``docker save``: both at once, an OCI layout that also carries a
  ``manifest.json`` whose paths point into ``blobs/sha256/``.

``load`` recognises the format from the archive's contents, never from its name. An archive
is input from outside, so nothing in it is trusted: its tar is never unpacked to disk; files
are read by name, and a name that is absolute or climbs out with ``..`` (in the tar, in a
manifest, in a symlink) refuses the whole archive. Every blob is hashed against the digest it
is named by, every layer against the config's ``diff_ids`` (the store checks that as it
unpacks), and JSON is read only up to a size limit. A compressed archive (``.tar.gz``) is
decompressed into staging at most up to ``EDU_MAX_LAYER_BYTES`` (the limit of ``layers``),
because its size on disk says nothing about what it expands to. The load runs in one store
transaction, so a refused archive leaves the store exactly as it was.

``save`` writes to a temp file (or dir) beside the target and renames it at the end: a save
that fails half-way leaves no half-written archive that a later ``docker load`` might trust.

Introduced in notebooks/04-images.
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import hashlib
import io
import json
import lzma
import os
import platform
import posixpath
import re
import shutil
import tarfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from . import layers
from .reference import Reference, ReferenceError, parse
from .store import (
    DOCKER_MANIFEST,
    OCI_INDEX,
    OCI_LAYER,
    OCI_LAYER_GZIP,
    OCI_MANIFEST,
    Image,
    Store,
    StoreError,
    _oci_layer_type,
    sha256_bytes,
)

FORMATS = ("docker", "oci", "oci-archive")
DOCKER_INDEX = "application/vnd.docker.distribution.manifest.list.v2+json"
ANNOTATION_NAME = "io.containerd.image.name"  # the full reference, as containerd and Docker write
ANNOTATION_REF = "org.opencontainers.image.ref.name"  # OCI's name: usually just the tag

# Limits on what an archive may make us read into memory or walk. Real configs are a few KB
# (a long history is a few hundred KB); real archives have a few files per layer.
MAX_JSON_BYTES = 4 << 20
MAX_MEMBERS = 10_000
MAX_IMAGES = 1_000
MAX_LAYERS = 500

_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_NAMED_BY_DIGEST = re.compile(r"(?:blobs/sha256/([0-9a-f]{64})|([0-9a-f]{64})\.json)")
_CHUNK = 1 << 20
_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386"}
_ALTERED = ("the archive is damaged or was altered. Save it again, or fetch it again from a "
            "source you trust")
_HOSTILE = ("the archive is damaged or hostile. Do not use it; make it again with "
            "'docker save' or 'edu save'")


class ArchiveError(StoreError):
    """An archive cannot be written or read; the message says what is wrong and what to do."""


# ---- save ---------------------------------------------------------------------------------

def save(store: Store, refs: list[str], out: Path, *, format: str = "docker",
         progress: bool | None = None) -> Path:
    """Write images to ``out`` (``docker save -o``); ``format`` is docker, oci or oci-archive."""
    if format not in FORMATS:
        raise ArchiveError(f"unknown archive format {format!r}: use one of {', '.join(FORMATS)}.")
    if not refs:
        raise ArchiveError("nothing to save: name at least one image.")
    out = Path(out)
    if not out.parent.is_dir():
        raise ArchiveError(f"cannot save to {out}: the directory {out.parent} does not exist.")
    if format != "oci" and out.is_dir():
        raise ArchiveError(f"cannot save to {out}: it is a directory. Give a file name, or "
                           "use the format 'oci' to write an OCI layout directory.")
    with store.lease():  # an image removed meanwhile stays whole until it is written out
        return _save(store, _choose(store, refs), out, format, progress)


def _save(store: Store, chosen: list[tuple[Image, list[Reference]]], out: Path, format: str,
          progress: bool | None) -> Path:
    try:
        if format == "oci":
            with _dir_output(out) as root:
                _write_oci(store, chosen, _DirSink(root), progress)
            return out
        with _file_output(out) as f, tarfile.open(fileobj=f, mode="w",
                                                  format=tarfile.PAX_FORMAT) as tar:
            write = _write_docker if format == "docker" else _write_oci
            write(store, chosen, _TarSink(tar), progress)
    except OSError as exc:
        raise ArchiveError(f"cannot save to {out}: {exc.strerror or exc}. Nothing was "
                           "written; free some space or choose another place.") from exc
    return out


def _choose(store: Store, refs: list[str]) -> list[tuple[Image, list[Reference]]]:
    """The images ``refs`` name, each once, with the tags that named them (for RepoTags)."""
    chosen: dict[str, tuple[Image, list[Reference]]] = {}
    for ref in refs:
        image = store.use(ref)
        _, tags = chosen.setdefault(image.id, (image, []))
        tag = _tag_named_by(ref, image)
        if tag is not None and tag not in tags:
            tags.append(tag)
    return list(chosen.values())


def _tag_named_by(ref: str, image: Image) -> Reference | None:
    # An ID or a digest names no tag: Docker saves such an image with "RepoTags": null.
    try:
        parsed = parse(ref)
    except ReferenceError:
        return None
    return parsed if not parsed.digest and str(parsed) in image.tags else None


@contextlib.contextmanager
def _file_output(out: Path) -> Iterator[BinaryIO]:
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            yield f
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def _dir_output(out: Path) -> Iterator[Path]:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ArchiveError(f"cannot save an OCI layout to {out}: it exists and is not an empty "
                           "directory. Choose a new path, or remove it first.")
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        if out.exists():
            out.rmdir()
        os.rename(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class _TarSink:
    """Files go into a tar: owned by root, dated 1970, so equal images give equal archives."""

    def __init__(self, tar: tarfile.TarFile):
        self.tar = tar

    def dir(self, name: str) -> None:
        info = tarfile.TarInfo(name)
        info.type, info.mode = tarfile.DIRTYPE, 0o755
        self.tar.addfile(info)

    def file(self, name: str, size: int, src: BinaryIO) -> None:
        info = tarfile.TarInfo(name)
        info.size, info.mode = size, 0o644
        self.tar.addfile(info, src)  # reads exactly `size` bytes, or raises


class _DirSink:
    """Files go into a directory (an OCI layout)."""

    def __init__(self, root: Path):
        self.root = root

    def dir(self, name: str) -> None:
        (self.root / name).mkdir(parents=True, exist_ok=True)

    def file(self, name: str, size: int, src: BinaryIO) -> None:
        written = 0
        with open(self.root / name, "wb") as f:
            while chunk := src.read(_CHUNK):
                f.write(chunk)
                written += len(chunk)
        if written != size:
            raise ArchiveError(f"{name} should have {size} bytes but {written} were read.")


def _add_bytes(sink: _TarSink | _DirSink, name: str, data: bytes) -> None:
    sink.file(name, len(data), io.BytesIO(data))


def _write_docker(store: Store, chosen: list[tuple[Image, list[Reference]]],
                  sink: _TarSink, progress: bool | None) -> None:
    """The docker-archive that ``docker load`` reads: layers uncompressed, named by diff_id."""
    entries: list[dict[str, Any]] = []
    repositories: dict[str, dict[str, str]] = {}
    written: set[str] = set()
    for image, tags in chosen:
        paths = []
        for desc, diff_id in zip(image.manifest["layers"], image.diff_ids, strict=True):
            hexpart = diff_id.removeprefix("sha256:")
            if diff_id not in written:
                sink.dir(hexpart)
                _add_layer_tar(store, sink, f"{hexpart}/layer.tar", desc["digest"], diff_id,
                               progress)
                written.add(diff_id)
            paths.append(f"{hexpart}/layer.tar")
        config_name = image.config_digest.removeprefix("sha256:") + ".json"
        if config_name not in written:
            _add_bytes(sink, config_name, _verified_blob(store, image.config_digest))
            written.add(config_name)
        entries.append({"Config": config_name,
                        "RepoTags": [t.familiar() for t in tags] or None, "Layers": paths})
        for t in tags:
            if paths:  # docker load ignores this file; older tools read it
                repositories.setdefault(t.familiar_name, {})[t.tag] = paths[-1].split("/")[0]
    _add_bytes(sink, "manifest.json", json.dumps(entries).encode())
    if repositories:
        _add_bytes(sink, "repositories", json.dumps(repositories).encode())


def _add_layer_tar(store: Store, sink: _TarSink, name: str, blob: str, diff_id: str,
                   progress: bool | None) -> None:
    """Put a layer into the archive as a plain tar, checked against its diff_id first."""
    tar_size = store.layer_tar_size(blob)
    if tar_size is not None:  # kept as its layer: the tar is rebuilt from it, and hashed
        with _open_layer(store, blob) as f, _bar(progress, tar_size,
                                                 f"layer {diff_id[7:19]}") as bar:
            reader = _HashingReader(f, bar)
            sink.file(name, tar_size, reader)
        _check_layer(store, diff_id, reader.digest())
        return
    path = store.blob_path(blob)
    with open(path, "rb") as f:
        compressed = f.read(2) == b"\x1f\x8b"
    if not compressed:  # already the tar: one pass, hashed on its way into the archive
        with open(path, "rb") as f, _bar(progress, path.stat().st_size,
                                         f"layer {diff_id[7:19]}") as bar:
            reader = _HashingReader(f, bar)
            sink.file(name, path.stat().st_size, reader)
        _check_layer(store, diff_id, reader.digest())
        return
    # A tar header holds the member's size, and gzip does not record it reliably: so the
    # layer is unpacked once into staging, hashed on the way, and then copied in.
    with store.staging() as stage:
        tar_path = stage / "layer.tar"
        try:
            with _open_layer(store, blob) as f, open(tar_path, "wb") as out, \
                    _bar(progress, path.stat().st_size, f"layer {diff_id[7:19]}") as bar:
                reader = _HashingReader(f, _position_of(getattr(f, "fileobj", f), bar))
                shutil.copyfileobj(reader, out, _CHUNK)
        except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
            raise ArchiveError(f"layer {diff_id[:19]}... in the store at {store.root} cannot "
                               f"be decompressed ({exc}): the store's copy is damaged. Remove "
                               "the image and pull or load it again.") from None
        _check_layer(store, diff_id, reader.digest())
        with open(tar_path, "rb") as f:
            sink.file(name, reader.count, f)


def _position_of(raw: BinaryIO, bar: Callable[[int], object]) -> Callable[[int], None]:
    """A progress update that counts how far into the blob (compressed) reading has got."""
    done = 0

    def update(_: int) -> None:
        nonlocal done
        now = raw.tell()
        bar(now - done)
        done = now
    return update


def _check_layer(store: Store, diff_id: str, actual: str) -> None:
    if actual != diff_id:
        raise ArchiveError(f"layer {diff_id[:19]}... in the store at {store.root} unpacks to "
                           f"{actual}: the store's copy is damaged. Remove the image and pull "
                           "or load it again.")


@contextlib.contextmanager
def _open_layer(store: Store, blob: str) -> Iterator[BinaryIO]:
    f = store.open_layer_tar(blob)
    try:
        yield f
    finally:
        # GzipFile.close() leaves the file it wraps open, so close that one too.
        inner = getattr(f, "fileobj", None) if isinstance(f, gzip.GzipFile) else None
        f.close()
        if inner is not None:
            inner.close()


def _verified_blob(store: Store, digest: str) -> bytes:
    data = store.read_blob(digest)
    if sha256_bytes(data) != digest:
        raise ArchiveError(f"blob {digest[:19]}... in the store at {store.root} is damaged "
                           "(its bytes no longer match its name). Remove the image and pull "
                           "or load it again.")
    return data


def _write_oci(store: Store, chosen: list[tuple[Image, list[Reference]]],
               sink: _TarSink | _DirSink, progress: bool | None) -> None:
    """An OCI image layout: the store's manifests, configs and layer blobs, byte for byte."""
    _add_bytes(sink, "oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
    sink.dir("blobs")
    sink.dir("blobs/sha256")
    written: set[str] = set()
    manifests: list[dict[str, Any]] = []
    for image, tags in chosen:
        for desc in image.manifest["layers"]:
            if desc["digest"] not in written:
                _copy_blob(store, sink, desc["digest"], progress)
                written.add(desc["digest"])
        for digest in (image.config_digest, image.manifest_digest):
            if digest not in written:
                _add_bytes(sink, f"blobs/sha256/{digest[7:]}", _verified_blob(store, digest))
                written.add(digest)
        descriptor = {"mediaType": OCI_MANIFEST, "digest": image.manifest_digest,
                      "size": store.blob_size(image.manifest_digest),
                      "platform": {"architecture": image.config.get("architecture", "amd64"),
                                   "os": image.config.get("os", "linux")}}
        if not tags:
            manifests.append(descriptor)
        for t in tags:  # Docker's and containerd's convention: full name, and the tag alone
            manifests.append({**descriptor,
                              "annotations": {ANNOTATION_NAME: str(t), ANNOTATION_REF: t.tag}})
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}
    _add_bytes(sink, "index.json", json.dumps(index).encode())


def _copy_blob(store: Store, sink: _TarSink | _DirSink, digest: str,
               progress: bool | None) -> None:
    size = store.blob_size(digest)
    with store.open_blob(digest) as f, _bar(progress, size, f"blob {digest[7:19]}") as bar:
        reader = _HashingReader(f, bar)
        sink.file(f"blobs/sha256/{digest[7:]}", size, reader)
    if reader.digest() != digest:
        raise ArchiveError(f"blob {digest[:19]}... in the store at {store.root} is damaged "
                           "(its bytes no longer match its name). Remove the image and pull "
                           "or load it again.")


# ---- load ---------------------------------------------------------------------------------

@dataclass
class _Layer:
    name: str  # the file in the archive
    digest: str | None = None  # what its bytes must hash to, when the archive says
    size: int | None = None
    media: str | None = None


@dataclass
class _Planned:
    what: str  # "image 2 (busybox:latest)", for messages
    config: bytes
    config_digest: str
    diff_ids: list[str]
    layers: list[_Layer]
    tags: list[str] = field(default_factory=list)


def load(store: Store, path: Path, *, progress: bool | None = None) -> list[Image]:
    """Add the images in a docker-archive or OCI layout (file or dir) to the store."""
    path = Path(path)
    # One transaction for the whole archive: if image 3 is refused, images 1 and 2 (their
    # blobs, layers and tags) are taken out again too.
    with store.transaction(), store.staging() as stage:
        try:
            with _open_source(path, stage) as src:
                plans = _plan(src)
                images = [_load_one(store, src, stage, plan, progress) for plan in plans]
        except (StoreError, layers.LayerError, tarfile.TarError, OSError) as exc:
            why = str(exc).rstrip(".")
            if isinstance(exc, tarfile.ReadError) and "unexpected end" in why:
                why = ("it ends in the middle of a file: it is truncated (an interrupted "
                       "download or copy). Fetch or save it again")
            raise ArchiveError(f"Cannot load {path}: {why}. Nothing was loaded; the image "
                               "store is as it was.") from exc
    unique = {image.manifest_digest: image for image in images}
    return [store.get(digest) for digest in unique]


def summary(images: list[Image]) -> list[str]:
    """What ``docker load`` prints: one line per tag, or the ID of an untagged image."""
    lines = []
    for image in images:
        tags = image.familiar_tags()
        lines += [f"Loaded image: {t}" for t in tags] or [
            f"Loaded image ID: {image.id} (the archive gives it no name; "
            f"'edu tag {image.short_id} NAME:TAG' names it)"]
    return lines


def _plan(src: _Source) -> list[_Planned]:
    # Docker 25+ writes both manifest.json and index.json: read manifest.json, as Docker does
    # (Docker 25.0.0's index.json listed manifests with no layers).
    if src.has("manifest.json"):
        return _plan_docker(src)
    if src.has("index.json") and src.has("oci-layout"):
        return _plan_oci(src)
    raise ArchiveError(f"{src.label} is neither a docker-archive (it has no manifest.json) nor "
                       "an OCI image layout (it has no index.json and oci-layout). Make it "
                       "with 'docker save', 'edu save' or 'skopeo copy ... oci:DIR'.")


def _load_one(store: Store, src: _Source, stage: Path, plan: _Planned,
              progress: bool | None) -> Image:
    blobs = []
    for n, (layer, diff_id) in enumerate(zip(plan.layers, plan.diff_ids, strict=True), 1):
        what = f"layer {n} of {plan.what}"
        blobs.append(_import_layer(store, src, stage, layer, diff_id, what, progress))
    try:
        return store.add_image(plan.config, blobs, plan.tags, plan.config_digest)
    except (StoreError, layers.LayerError) as exc:
        raise ArchiveError(f"{plan.what} was refused: {exc}") from exc


def _import_layer(store: Store, src: _Source, stage: Path, layer: _Layer, diff_id: str,
                  what: str, progress: bool | None) -> tuple[str, str]:
    """Copy one layer blob into the store, hashed on the way; return (blob digest, media)."""
    if layer.media and "zstd" in layer.media:
        raise ArchiveError(f"{what} is zstd-compressed, which edu cannot unpack yet. Save the "
                           "image with gzip or uncompressed layers.")
    if layer.media:
        try:
            _oci_layer_type(layer.media)
        except StoreError:
            raise ArchiveError(f"{what} has the media type {layer.media!r}, which edu cannot "
                               "unpack: it loads gzip and plain tar layers only. Save the "
                               "image with such layers.") from None
    src.size(layer.name)  # it must be in the archive, even when the store has it already
    known = store.layer_info(diff_id)
    if known and store.has_blob(known["blob"]) and store.layer_dir(diff_id).is_dir():
        return known["blob"], OCI_LAYER_GZIP if store.is_gzip(known["blob"]) else OCI_LAYER
    tmp = stage / diff_id[7:]
    with src.open(layer.name) as f, _bar(progress, src.size(layer.name),
                                         f"layer {diff_id[7:19]}") as bar:
        reader = _HashingReader(f, bar)
        with open(tmp, "wb") as out:
            shutil.copyfileobj(reader, out, _CHUNK)
    digest = reader.digest()
    if layer.digest and digest != layer.digest:
        raise ArchiveError(f"{what}, {layer.name}, hashes to {digest}, but the archive names "
                           f"it {layer.digest}: {_ALTERED}.")
    if layer.size is not None and reader.count != layer.size:
        raise ArchiveError(f"{what}, {layer.name}, has {reader.count} bytes, but the archive "
                           f"says {layer.size}: {_ALTERED}.")
    media = layer.media or _sniff_media(tmp)
    if media in (OCI_LAYER, "application/vnd.docker.image.rootfs.diff.tar") \
            and digest != diff_id:
        raise ArchiveError(f"{what}, {layer.name}, hashes to {digest}, but the image config "
                           f"says its diff_id is {diff_id}: {_ALTERED}.")
    return store.put_blob_file(tmp, digest), media


def _sniff_media(path: Path) -> str:
    with open(path, "rb") as f:
        return OCI_LAYER_GZIP if f.read(2) == b"\x1f\x8b" else OCI_LAYER


# ---- reading docker-archives --------------------------------------------------------------

def _plan_docker(src: _Source) -> list[_Planned]:
    """The images a docker-archive's manifest.json lists (Docker 1.10 to 24, and 25+)."""
    entries = _read_json(src, "manifest.json", "manifest.json")
    if not isinstance(entries, list) or not entries:
        raise ArchiveError("its manifest.json should be a list of images, and is not.")
    if len(entries) > MAX_IMAGES:
        raise ArchiveError(f"its manifest.json lists {len(entries)} images; at most "
                           f"{MAX_IMAGES} are loaded at once.")
    plans = []
    for i, entry in enumerate(entries, 1):
        ok = (isinstance(entry, dict) and isinstance(entry.get("Config"), str)
              and isinstance(entry.get("Layers"), list)
              and all(isinstance(x, str) for x in entry["Layers"])
              and isinstance(entry.get("RepoTags") or [], list)
              and all(isinstance(x, str) for x in entry.get("RepoTags") or []))
        if not ok:
            raise ArchiveError(f"entry {i} of its manifest.json needs a Config path, a Layers "
                               "list and a RepoTags list of strings.")
        repo_tags = entry.get("RepoTags") or []
        what = f"image {i}" + (f" ({', '.join(repo_tags)})" if repo_tags else "")
        config_name = _clean(entry["Config"], f"manifest.json puts the config of {what} at")
        config = _read_bytes(src, config_name, f"the config of {what}", MAX_JSON_BYTES)
        digest = sha256_bytes(config)
        named = _named_digest(config_name)
        if named and named != digest:
            raise ArchiveError(f"the config of {what}, {config_name}, hashes to {digest}, "
                               f"not to its name: {_ALTERED}.")
        diff_ids = _check_config(config, len(entry["Layers"]), what)
        image_layers = [_Layer(name, _named_digest(name))
                        for name in (_clean(x, f"manifest.json puts a layer of {what} at")
                                     for x in entry["Layers"])]
        plans.append(_Planned(what, config, digest, diff_ids, image_layers,
                              [_tag(t, what) for t in repo_tags]))
    return plans


def _named_digest(name: str) -> str | None:
    """The digest a file's name promises: ``blobs/sha256/<hex>``, or ``<hex>.json`` configs."""
    m = _NAMED_BY_DIGEST.fullmatch(name)
    return f"sha256:{m.group(1) or m.group(2)}" if m else None


def _tag(text: str, what: str) -> str:
    try:
        ref = parse(text)
    except ReferenceError as exc:
        raise ArchiveError(f"{what} has the tag {text!r}, which is not valid ({exc}).") from None
    if ref.digest:
        raise ArchiveError(f"{what} has {text!r} as a tag, but a tag cannot hold a digest.")
    return str(ref)


def _check_config(config: bytes, n_layers: int, what: str) -> list[str]:
    """The config's diff_ids, after checking it is a Linux image config with one per layer."""
    cfg = _parse_json(config, f"the config of {what}")
    diff_ids = cfg.get("rootfs", {}).get("diff_ids") if isinstance(cfg, dict) else None
    if not isinstance(diff_ids, list) or not all(
            isinstance(d, str) and _DIGEST.fullmatch(d) for d in diff_ids):
        raise ArchiveError(f"the config of {what} has no valid rootfs.diff_ids list.")
    if cfg.get("os", "linux") != "linux":
        raise ArchiveError(f"{what} is a {cfg.get('os')!r} image; edu runs Linux images only.")
    arch = _ARCH.get(platform.machine(), platform.machine())
    if cfg.get("architecture", arch) != arch:
        raise ArchiveError(f"{what} has no image for linux/{arch}, only for "
                           f"linux/{cfg.get('architecture')} (its config says so): it cannot "
                           f"run here. Save an image built for linux/{arch}.")
    if len(diff_ids) != n_layers:
        raise ArchiveError(f"the config of {what} lists {len(diff_ids)} layers, but the "
                           f"archive gives {n_layers}: the archive is damaged.")
    if n_layers > MAX_LAYERS:
        raise ArchiveError(f"{what} has {n_layers} layers; edu loads at most {MAX_LAYERS}.")
    return diff_ids


# ---- reading OCI image layouts ------------------------------------------------------------

def _plan_oci(src: _Source) -> list[_Planned]:
    """The images an OCI layout's index.json names (skopeo's oci:, containerd, edu save)."""
    layout = _read_json(src, "oci-layout", "oci-layout")
    if not isinstance(layout, dict) or "imageLayoutVersion" not in layout:
        raise ArchiveError("its oci-layout file has no imageLayoutVersion: it is not an OCI "
                           "image layout.")
    index = _read_json(src, "index.json", "index.json")
    manifests = index.get("manifests") if isinstance(index, dict) else None
    if not isinstance(manifests, list) or not manifests:
        raise ArchiveError("its index.json lists no manifests: there is no image in it.")
    if len(manifests) > MAX_IMAGES:
        raise ArchiveError(f"its index.json lists {len(manifests)} manifests; at most "
                           f"{MAX_IMAGES} are loaded at once.")
    plans: dict[str, _Planned] = {}
    for i, desc in enumerate(manifests, 1):
        what = f"manifest {i} of index.json"
        if not isinstance(desc, dict):
            raise ArchiveError(f"{what} is not a descriptor.")
        annotations = desc.get("annotations") or {}
        if not isinstance(annotations, dict):
            raise ArchiveError(f"the annotations of {what} are not a map.")
        manifest_desc = _platform_manifest(src, desc, what)
        digest = _descriptor_digest(manifest_desc, what)
        if digest not in plans:
            plans[digest] = _plan_manifest(src, manifest_desc, what)
        for tag in _oci_tags(annotations, what):
            if tag not in plans[digest].tags:
                plans[digest].tags.append(tag)
    return list(plans.values())


def _platform_manifest(src: _Source, desc: dict[str, Any], what: str,
                       depth: int = 0) -> dict[str, Any]:
    """The image manifest a descriptor leads to; in a multi-platform index, this host's."""
    media = desc.get("mediaType", OCI_MANIFEST)  # optional in early OCI layouts
    if media in (OCI_MANIFEST, DOCKER_MANIFEST):
        return desc
    if media not in (OCI_INDEX, DOCKER_INDEX):
        raise ArchiveError(f"{what} is a {media!r}, which is not an image manifest or index.")
    if depth >= 2:
        raise ArchiveError(f"{what} nests indexes too deeply.")
    index = _parse_json(_read_blob(src, desc, what, MAX_JSON_BYTES), what)
    arch = _ARCH.get(platform.machine(), platform.machine())
    found = []
    for entry in (index.get("manifests") if isinstance(index, dict) else None) or []:
        plat = entry.get("platform") if isinstance(entry, dict) else None
        plat = plat if isinstance(plat, dict) else {}
        found.append(f"{plat.get('os')}/{plat.get('architecture')}")
        if found[-1] == f"linux/{arch}":
            return _platform_manifest(src, entry, what, depth + 1)
    raise ArchiveError(f"{what} has no linux/{arch} image (it has: "
                       f"{', '.join(found) or 'none'}).")


def _plan_manifest(src: _Source, desc: dict[str, Any], what: str) -> _Planned:
    manifest = _parse_json(_read_blob(src, desc, what, MAX_JSON_BYTES), what)
    if not isinstance(manifest, dict) or not isinstance(manifest.get("config"), dict) \
            or not isinstance(manifest.get("layers"), list):
        raise ArchiveError(f"the manifest of {what} needs a config and a layers list.")
    config = _read_blob(src, manifest["config"], f"the config of {what}", MAX_JSON_BYTES)
    image_layers = []
    for n, layer in enumerate(manifest["layers"], 1):
        digest = _descriptor_digest(layer, f"layer {n} of {what}")
        image_layers.append(_Layer(f"blobs/sha256/{digest[7:]}", digest, layer["size"],
                                   str(layer.get("mediaType", ""))))
    diff_ids = _check_config(config, len(image_layers), what)
    return _Planned(what, config, sha256_bytes(config), diff_ids, image_layers)


def _descriptor_digest(desc: Any, what: str) -> str:
    """A descriptor's digest and size, checked for form (a digest is also a file name)."""
    if not isinstance(desc, dict) or not isinstance(desc.get("digest"), str) \
            or not _DIGEST.fullmatch(desc["digest"]):
        shown = desc.get("digest") if isinstance(desc, dict) else desc
        raise ArchiveError(f"{what} has the digest {str(shown)[:80]!r}; edu reads sha256 "
                           "digests only (sha256: and 64 lowercase hex digits).")
    if not isinstance(desc.get("size"), int) or desc["size"] < 0:
        raise ArchiveError(f"{what} has no valid size.")
    return desc["digest"]


def _read_blob(src: _Source, desc: dict[str, Any], what: str, limit: int) -> bytes:
    """A small blob (JSON) read whole, checked against its descriptor's digest and size."""
    digest = _descriptor_digest(desc, what)
    if desc["size"] > limit:
        raise ArchiveError(f"{what} says it is {desc['size']} bytes; edu reads at most {limit} "
                           "bytes of JSON, so the archive is refused.")
    data = _read_bytes(src, f"blobs/sha256/{digest[7:]}", what, limit)
    if sha256_bytes(data) != digest or len(data) != desc["size"]:
        raise ArchiveError(f"{what} (blobs/sha256/{digest[7:19]}...) does not hash to its name "
                           f"or has the wrong size: {_ALTERED}.")
    return data


def _oci_tags(annotations: dict[str, Any], what: str) -> list[str]:
    """Tags from OCI annotations: a full name wins; a bare tag needs a name to go with it."""
    name, ref = annotations.get(ANNOTATION_NAME), annotations.get(ANNOTATION_REF)
    if isinstance(name, str) and name:
        try:
            parsed = parse(name, default_tag=False)
        except ReferenceError as exc:
            raise ArchiveError(f"{what} is named {name!r}, which is not valid ({exc}).") \
                from None
        tag = parsed.tag
        if tag is None and isinstance(ref, str) and ref and _is_bare_tag(ref):
            tag = ref
        if tag is None and parsed.digest:
            return []  # pinned by digest only: no tag to give it
        return [_tag(str(parsed.with_tag(tag or "latest")), what)]
    if isinstance(ref, str) and ref and not _is_bare_tag(ref):
        return [_tag(ref, what)]
    return []  # only a tag like "latest", and no repository: the image loads untagged


def _is_bare_tag(text: str) -> bool:
    return not any(c in text for c in "/:@")


# ---- reading an archive's files safely ----------------------------------------------------

def _clean(name: str, what: str) -> str:
    """An archive path, normalised; refused if it is absolute or climbs out with ``..``."""
    if not name or "\0" in name:
        raise ArchiveError(f"{what} an empty or invalid path: {_HOSTILE}.")
    norm = posixpath.normpath(name)
    if name.startswith("/") or norm == ".." or norm.startswith("../"):
        raise ArchiveError(f"{what} {name[:120]!r}, a path outside the archive: {_HOSTILE}.")
    return norm


class _Source:
    """An archive's files, read by name; never a path outside it."""

    label = ""

    def has(self, name: str) -> bool:
        raise NotImplementedError

    def size(self, name: str) -> int:
        raise NotImplementedError

    def open(self, name: str) -> BinaryIO:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self) -> _Source:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _DirSource(_Source):
    """A directory: a skopeo ``oci:`` layout, or a ``docker save`` tar someone unpacked."""

    def __init__(self, root: Path):
        self.root = root.resolve()
        self.label = str(root)

    def _path(self, name: str) -> Path:
        path = (self.root / _clean(name, "it names the file")).resolve()
        if not path.is_relative_to(self.root):
            raise ArchiveError(f"{name[:120]!r} is a symlink to {path}, outside the archive: "
                               f"{_HOSTILE}.")
        return path

    def has(self, name: str) -> bool:
        return self._path(name).is_file()

    def size(self, name: str) -> int:
        path = self._path(name)
        if not path.is_file():
            raise ArchiveError(f"{self.label} has no file {name[:120]!r}, which its manifest "
                               "names: the archive is incomplete.")
        return path.stat().st_size

    def open(self, name: str) -> BinaryIO:
        self.size(name)
        return open(self._path(name), "rb")


class _TarSource(_Source):
    """A tar, read member by member: nothing is extracted to disk."""

    def __init__(self, path: Path, label: str):
        self.label = label
        try:
            self.tar = tarfile.open(path, "r:")
        except tarfile.TarError:
            raise ArchiveError(f"{label} is not a tar archive (or is cut short) nor an image "
                               "layout directory. Give a whole file made by 'docker save', "
                               "'edu save' or skopeo.") \
                from None
        self.members: dict[str, tarfile.TarInfo] = {}
        try:
            self._index()
        except BaseException:
            self.tar.close()
            raise

    def _index(self) -> None:
        for count, info in enumerate(self.tar, 1):
            if count > MAX_MEMBERS:
                raise ArchiveError(f"it has more than {MAX_MEMBERS} files; an image archive "
                                   "has a few per layer, so it is refused.")
            name = _clean(info.name, "it has a file named")
            if not (info.isfile() or info.isdir() or info.issym() or info.islnk()):
                raise ArchiveError(f"it holds {name[:120]!r}, a device or fifo; an image "
                                   "archive holds only files, directories and links.")
            if name in self.members and not info.isdir():
                raise ArchiveError(f"it holds {name[:120]!r} twice, so which one counts is "
                                   f"ambiguous: {_HOSTILE}.")
            self.members[name] = info

    def _file(self, name: str, hops: int = 0) -> tarfile.TarInfo:
        name = _clean(name, "it names the file")
        info = self.members.get(name)
        if info is None or info.isdir():
            raise ArchiveError(f"{self.label} has no file {name[:120]!r}, which its manifest "
                               "names: the archive is incomplete.")
        if info.issym() or info.islnk():
            # docker save (before 25) links a layer that two images share to its first copy.
            if hops > 8:
                raise ArchiveError(f"{name[:120]!r} is a chain of too many links.")
            target = info.linkname
            if info.issym() and not target.startswith("/"):
                target = posixpath.join(posixpath.dirname(name), target)
            return self._file(_clean(target, f"its link {name[:120]!r} points to"), hops + 1)
        return info

    def has(self, name: str) -> bool:
        info = self.members.get(_clean(name, "it names the file"))
        return info is not None and not info.isdir()

    def size(self, name: str) -> int:
        return self._file(name).size

    def open(self, name: str) -> BinaryIO:
        f = self.tar.extractfile(self._file(name))
        assert f is not None  # a regular file always has a reader
        return f  # type: ignore[return-value]

    def close(self) -> None:
        self.tar.close()


_COMPRESSED = [(b"\x1f\x8b", gzip.open), (b"BZh", bz2.open), (b"\xfd7zXZ\x00", lzma.open)]


@contextlib.contextmanager
def _open_source(path: Path, stage: Path) -> Iterator[_Source]:
    """The archive at ``path``: a directory, a tar, or a compressed tar (unpacked to staging)."""
    if path.is_dir():
        yield _DirSource(path)
        return
    if not path.is_file():
        raise ArchiveError(f"{path} does not exist.")
    with open(path, "rb") as f:
        magic = f.read(6)
    tar_path = path
    for prefix, opener in _COMPRESSED:
        if magic.startswith(prefix):
            # Reading members by name seeks back and forth, which a compressed stream
            # cannot do cheaply: so it is decompressed once, into the store's staging.
            tar_path = stage / "archive.tar"
            try:
                with opener(path, "rb") as packed, open(tar_path, "wb") as out:
                    _copy_at_most(packed, out, layers.max_layer_bytes(), path)
            except (OSError, EOFError, lzma.LZMAError) as exc:
                raise ArchiveError(f"{path} is compressed but cannot be decompressed "
                                   f"({exc}): the file is damaged.") from None
    if magic.startswith(b"\x28\xb5\x2f\xfd"):
        raise ArchiveError(f"{path} is zstd-compressed; decompress it first "
                           "('zstd -d FILE') and load the .tar.")
    with _TarSource(tar_path, str(path)) as src:
        yield src


def _copy_at_most(src: BinaryIO, out: BinaryIO, limit: int, path: Path) -> None:
    """Decompress ``src`` into ``out``, refused (never written) past ``limit`` bytes."""
    done = 0
    while chunk := src.read(min(_CHUNK, limit + 1 - done)):
        done += len(chunk)
        if done > limit:
            raise ArchiveError(f"{path} decompresses to more than {limit} bytes: refused "
                               "before anything past the limit was written (a compressed "
                               f"archive may expand to at most what one layer may; "
                               f"{layers.limit_hint(limit)}, or decompress it yourself and "
                               "load the .tar")
        out.write(chunk)


def _read_bytes(src: _Source, name: str, what: str, limit: int) -> bytes:
    size = src.size(name)
    if size > limit:
        shown = what if what == name else f"{what} ({name[:120]})"
        raise ArchiveError(f"{shown} is {size} bytes; edu reads at most {limit} bytes of "
                           "JSON, so the archive is refused.")
    with src.open(name) as f:
        return f.read(limit + 1)[:limit]


def _read_json(src: _Source, name: str, what: str) -> Any:
    return _parse_json(_read_bytes(src, name, what, MAX_JSON_BYTES), what)


def _parse_json(data: bytes, what: str) -> Any:
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise ArchiveError(f"{what} is not valid JSON ({str(exc)[:100]}): the archive is "
                           "damaged.") from None


# ---- hashing and progress -----------------------------------------------------------------

class _HashingReader:
    """A file's bytes passed through sha256 (and a progress bar) as they are read."""

    def __init__(self, f: BinaryIO, update: Callable[[int], object]):
        self.f, self.update = f, update
        self.hash, self.count = hashlib.sha256(), 0

    def read(self, size: int = -1) -> bytes:
        data = self.f.read(size)
        self.hash.update(data)
        self.count += len(data)
        self.update(len(data))
        return data

    def digest(self) -> str:
        return "sha256:" + self.hash.hexdigest()


@contextlib.contextmanager
def _bar(progress: bool | None, total: int, desc: str) -> Iterator[Callable[[int], object]]:
    """A byte-counting progress bar when asked for one; otherwise a no-op."""
    if not progress:
        yield lambda n: None
        return
    from ..progress import bar

    with bar(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024) as bar:
        yield bar.update
