"""``edu images``, ``history``, ``image inspect``, ``tag``, ``rmi``, ``image prune``, ``save``,
``load`` and ``bootstrap``: the image store, printed the way Docker prints it.

The store's modules are imported inside the handlers: building the parser must stay cheap,
because ``edu run`` builds it too."""

from __future__ import annotations

import json
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import UserError

if TYPE_CHECKING:
    from edu_runtime.images.store import Image, Store


def human_size(n: float) -> str:
    """Bytes as Docker prints them: decimal units, three significant digits (``4.26MB``)."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.3g}{unit}" if unit != "B" else f"{int(n)}B"
        n /= 1000
    return f"{n}TB"


def human_ago(created: str, now: float | None = None) -> str:
    """``2 weeks ago`` from an RFC 3339 time, as ``docker images`` shows CREATED."""
    if not created:
        return "N/A"
    try:
        t = datetime.fromisoformat(created.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return created
    s = max(0.0, (now or time.time()) - t)
    for size, name in ((365 * 86400, "year"), (30 * 86400, "month"), (7 * 86400, "week"),
                       (86400, "day"), (3600, "hour"), (60, "minute")):
        if s >= size:
            k = int(s // size)
            return f"{k} {name}{'s' if k > 1 else ''} ago"
    return "Less than a minute ago"


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("   ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                     for r in rows)


def _store() -> Store:
    from edu_runtime.images.store import Store

    return Store()


def _get(store: Store, ref: str) -> Image:
    from edu_runtime.images.store import StoreError

    try:
        return store.get(ref)
    except StoreError as exc:
        raise UserError(str(exc), 1) from None


def images_cmd(args) -> int:
    """``edu images``: one line per tag, with the bytes each image shares with others."""
    from edu_runtime.images.reference import parse

    store = _store()
    imgs = store.images()
    users: dict[str, int] = {}
    for img in imgs:
        for d in set(img.diff_ids):
            users[d] = users.get(d, 0) + 1
    if args.quiet:
        print("\n".join(dict.fromkeys(i.short_id for i in imgs)))
        return 0
    rows = [["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE", "SHARED SIZE", "UNIQUE SIZE"]]
    for img in imgs:
        shared = sum(s for d, s in zip(img.diff_ids, img.layer_sizes, strict=True)
                     if users[d] > 1)
        names = [parse(t) for t in img.tags] or [None]
        for ref in names:
            rows.append([ref.familiar_name if ref else "<none>", ref.tag if ref else "<none>",
                         img.short_id, human_ago(img.created), human_size(img.size),
                         human_size(shared), human_size(img.size - shared)])
    print(_table(rows))
    return 0


def history_cmd(args) -> int:
    """``edu history``: each layer, its size and the instruction that made it, newest first."""
    store = _store()
    img = _get(store, args.image)
    layers = iter(zip(img.diff_ids, img.layer_sizes, strict=True))
    rows = []
    for h in img.config.get("history", []):
        diff_id, size = (None, 0) if h.get("empty_layer") else next(layers, (None, 0))
        by = h.get("created_by", "")
        if not args.no_trunc and len(by) > 45:
            by = by[:44] + "…"
        rows.append([diff_id[7:19] if diff_id else "(no layer)", human_ago(h.get("created", "")),
                     by, human_size(size), h.get("comment", "")])
    rows.reverse()
    print(_table([["LAYER", "CREATED", "CREATED BY", "SIZE", "COMMENT"]] + rows))
    return 0


def image_json(store: Store, img: Image) -> dict:
    """``docker image inspect``'s fields for one image, in Docker's order."""
    cfg = img.config
    return {
        "Id": img.id,
        "RepoTags": img.familiar_tags(),
        "ManifestDigest": img.manifest_digest,
        "Created": img.created,
        "Author": cfg.get("author", ""),
        "Architecture": cfg.get("architecture", ""),
        "Os": cfg.get("os", ""),
        "Config": cfg.get("config", {}),
        "Size": img.size,
        "RootFS": {"Type": "layers", "Layers": img.diff_ids},
        "LayerDirs": [str(p) for p in store.lowerdirs(img)],
        "History": cfg.get("history", []),
    }


def inspect_cmd(args) -> int:
    """``edu image inspect``: the image and its config as JSON, with Docker's field names."""
    store = _store()
    print(json.dumps([image_json(store, _get(store, ref)) for ref in args.images], indent=4))
    return 0


def tag_cmd(args) -> int:
    """``edu tag SOURCE TARGET``."""
    from edu_runtime.images.reference import ReferenceError
    from edu_runtime.images.store import StoreError

    try:
        _store().tag(args.source, args.target)
    except (StoreError, ReferenceError) as exc:
        raise UserError(str(exc), 1) from None
    return 0


def rmi_cmd(args) -> int:
    """``edu rmi [-f] IMAGE...``: untag, and delete images (and their layers) left untagged."""
    from edu_runtime.images.store import StoreError

    store, code = _store(), 0
    for ref in args.images:
        try:
            print("\n".join(store.remove(ref, force=args.force)))
        except StoreError as exc:
            print(f"Error: {exc}", file=sys.stderr)
            code = 1
    return code


def prune_cmd(args) -> int:
    """``edu image prune``: delete untagged images and every blob and layer nothing uses."""
    if not args.force:
        if not sys.stdin.isatty():
            raise UserError("edu image prune deletes every untagged image: add -f to confirm "
                            "when not at a terminal", 1)
        answer = input("WARNING! This will remove all dangling images.\n"
                       "Are you sure you want to continue? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            return 0
    from .run import label_filter

    stats = _store().prune(labels=label_filter(args.filter))
    print(f"Deleted {stats['images']} image(s), {stats['layers']} layer(s), "
          f"{stats['blobs']} blob(s)")
    print(f"Total reclaimed space: {human_size(stats['bytes'])}")
    return 0


def verify_cmd(args) -> int:
    """``edu image verify``: every tag names an image, every image is whole, every blob's
    bytes hash to its name (not a Docker command: Docker has no such check). Exit 1 if not."""
    store = _store()
    problems = store.verify()
    for problem in problems:
        print(problem)
    if problems:
        raise UserError(f"the store at {store.root} has {len(problems)} problem(s) (above): "
                        "'edu pull' or 'edu load' the images named again", 1)
    print(f"the store at {store.root} is consistent")
    return 0


def save_cmd(args) -> int:
    """``edu save -o FILE IMAGE...`` (docker-archive, or ``--format oci``)."""
    from edu_runtime.images import archive
    from edu_runtime.images.store import StoreError

    if not args.output:
        raise UserError("edu save needs -o FILE (writing an archive to a terminal is not "
                        "useful)", 1)
    try:
        out = archive.save(_store(), args.images, Path(args.output), format=args.format,
                           progress=sys.stderr.isatty())
    except (StoreError, archive.ArchiveError) as exc:
        raise UserError(str(exc), 1) from None
    print(f"Saved {', '.join(args.images)} to {out}", file=sys.stderr)
    return 0


def load_cmd(args) -> int:
    """``edu load -i FILE``: docker-archive, OCI layout, or Docker 25's OCI-based save."""
    from edu_runtime.images import archive
    from edu_runtime.images.store import StoreError

    try:
        loaded = archive.load(_store(), Path(args.input), progress=sys.stderr.isatty())
    except (StoreError, archive.ArchiveError) as exc:
        raise UserError(str(exc), 1) from None
    print("\n".join(archive.summary(loaded)))
    return 0


def bootstrap_cmd(args) -> int:
    """``edu bootstrap busybox|debian|python|node``: base images built offline."""
    from edu_runtime.images import bootstrap
    from edu_runtime.images.store import StoreError

    store = _store()
    for name in args.names:
        try:
            img = bootstrap.bootstrap(store, name, refresh=args.refresh,
                                      progress=sys.stderr.isatty())
        except (StoreError, bootstrap.BootstrapError) as exc:
            raise UserError(str(exc), 1) from None
        print(f"{', '.join(img.familiar_tags())}  {img.short_id}  {human_size(img.size)}")
    return 0


def register(sub) -> None:
    """Add the image commands to the ``edu`` parser."""
    p = sub.add_parser("images", help="list images")
    p.add_argument("-q", "--quiet", action="store_true", help="only IDs")
    p.set_defaults(func=images_cmd)

    p = sub.add_parser("history", help="show the layers of an image")
    p.add_argument("--no-trunc", action="store_true")
    p.add_argument("image")
    p.set_defaults(func=history_cmd)

    p = sub.add_parser("tag", help="give an image another name")
    p.add_argument("source")
    p.add_argument("target")
    p.set_defaults(func=tag_cmd)

    p = sub.add_parser("rmi", help="remove images")
    p.add_argument("-f", "--force", action="store_true")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.set_defaults(func=rmi_cmd)

    image = sub.add_parser("image", help="manage images (ls, prune, ...)")
    isub = image.add_subparsers(dest="image_command", metavar="COMMAND", required=True)
    p = isub.add_parser("ls", help="list images")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=images_cmd)
    p = isub.add_parser("prune", help="remove untagged images and unused layers")
    p.add_argument("-f", "--force", action="store_true", help="do not ask")
    p.add_argument("--filter", action="append", default=[], metavar="label=KEY[=VALUE]",
                   help="only untagged images with these labels (the build cache stays)")
    p.set_defaults(func=prune_cmd)
    p = isub.add_parser("verify", help="check every image is whole and every blob's digest")
    p.set_defaults(func=verify_cmd)
    from . import shared  # edu image share: a classroom's shared base images

    shared.register(isub)
    for name, fn in (("inspect", inspect_cmd), ("history", history_cmd)):
        p = isub.add_parser(name)
        if name == "inspect":
            p.add_argument("images", nargs="+", metavar="IMAGE")
        else:
            p.add_argument("--no-trunc", action="store_true")
            p.add_argument("image")
        p.set_defaults(func=fn)

    p = sub.add_parser("save", help="write images to a docker-archive or OCI layout")
    p.add_argument("-o", "--output")
    p.add_argument("--format", choices=("docker", "oci", "oci-archive"), default="docker",
                   help="docker-archive (default), an OCI layout directory, or it as a tar")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.set_defaults(func=save_cmd)

    p = sub.add_parser("load", help="load images from an archive")
    p.add_argument("-i", "--input", required=True)
    p.set_defaults(func=load_cmd)

    p = sub.add_parser("bootstrap", help="build base images offline (busybox, debian, ...)")
    p.add_argument("--refresh", action="store_true", help="rebuild even if present")
    p.add_argument("names", nargs="+", metavar="NAME",
                   choices=("busybox", "debian", "debian:11", "python", "node"))
    p.set_defaults(func=bootstrap_cmd)
