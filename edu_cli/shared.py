"""``edu image share``: the administrator's side of a classroom's shared base images.

    sudo edu image share debian busybox python    put root's images in /var/lib/edu-shared
    edu image share --list                        what every user's store can take from there
    sudo edu image share --rm debian:latest       stop sharing a tag

Every user's store takes a shared image it lacks by itself (edu_runtime/images/shared.py).
"""

from __future__ import annotations

from .errors import UserError


def share_cmd(args) -> int:
    """Share, list or unshare images."""
    from edu_runtime.images import shared
    from edu_runtime.images.store import Store, StoreError

    from .images import human_size

    where = shared.shared_dir()
    try:
        if args.list or not args.images:
            print(f"{'SHARED IMAGE':<36} {'IMAGE ID':<14} COMPRESSED SIZE")
            for entry in shared.listing(where):
                size = "damaged" if entry["size"] is None else human_size(entry["size"])
                tag = entry["tag"].removeprefix("docker.io/").removeprefix("library/")
                print(f"{tag:<36} {entry['id'].removeprefix('sha256:')[:12]:<14} {size}")
            return 0
        if args.rm:
            for tag in shared.unshare(args.images, where):
                print(f"Unshared: {tag}")
            return 0
        for image in shared.share(Store(), args.images, where):
            print(f"Shared {', '.join(image.familiar_tags())}  {image.short_id}  "
                  f"{human_size(image.size)}  in {where}")
    except StoreError as exc:
        raise UserError(str(exc), 1) from None
    return 0


def register(isub) -> None:
    """Add ``edu image share`` to ``edu image``'s subcommands."""
    p = isub.add_parser("share", help="share root's images with every user of this machine")
    p.add_argument("--list", action="store_true", help="list the shared images")
    p.add_argument("--rm", action="store_true", help="stop sharing these tags")
    p.add_argument("images", nargs="*", metavar="IMAGE")
    p.set_defaults(func=share_cmd)
