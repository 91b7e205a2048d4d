"""``edu volume create|ls|inspect|rm|prune``: named volumes, data that outlives containers."""

from __future__ import annotations

import json
import sys

from .errors import UserError


def _vols():
    from edu_runtime import volumes

    return volumes


def create_cmd(args) -> int:
    """``edu volume create [NAME]``."""
    v = _vols()
    try:
        print(v.create(args.name)["Name"])
    except v.VolumeError as exc:
        raise UserError(str(exc), 1) from None
    return 0


def ls_cmd(args) -> int:
    """``edu volume ls [-q]``."""
    vols = _vols().ls()
    names = [v["Name"] for v in vols]
    if args.quiet:
        print("\n".join(names))
        return 0
    print("DRIVER    VOLUME NAME")
    for n in names:
        print(f"local     {n}")
    return 0


def inspect_cmd(args) -> int:
    """``edu volume inspect NAME...``."""
    v = _vols()
    try:
        print(json.dumps([v.inspect(n) for n in args.names], indent=4))
    except v.VolumeError as exc:
        raise UserError(str(exc), 1) from None
    return 0


def rm_cmd(args) -> int:
    """``edu volume rm NAME...``."""
    v, code = _vols(), 0
    for n in args.names:
        try:
            v.rm(n)
            print(n)
        except v.VolumeError as exc:
            print(f"Error: {exc}", file=sys.stderr)
            code = 1
    return code


def prune_cmd(args) -> int:
    """``edu volume prune [-f]``: remove volumes no container uses."""
    if not args.force and not sys.stdin.isatty():
        raise UserError("edu volume prune deletes data: add -f to confirm when not at a "
                        "terminal", 1)
    if not args.force and input("Remove all unused volumes? [y/N] ").lower() not in ("y",
                                                                                   "yes"):
        return 0
    removed = _vols().prune()
    print("Deleted Volumes:")
    for n in removed or []:
        print(n)
    return 0


def register(sub) -> None:
    """Add ``edu volume`` to the parser."""
    vol = sub.add_parser("volume", help="manage volumes")
    vsub = vol.add_subparsers(dest="volume_command", metavar="COMMAND", required=True)
    p = vsub.add_parser("create")
    p.add_argument("name", nargs="?")
    p.set_defaults(func=create_cmd)
    p = vsub.add_parser("ls")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=ls_cmd)
    p = vsub.add_parser("inspect")
    p.add_argument("names", nargs="+")
    p.set_defaults(func=inspect_cmd)
    p = vsub.add_parser("rm")
    p.add_argument("names", nargs="+")
    p.set_defaults(func=rm_cmd)
    p = vsub.add_parser("prune")
    p.add_argument("-f", "--force", action="store_true")
    p.set_defaults(func=prune_cmd)
