"""``edu network create|ls|inspect|rm``: bridges that let containers find each other."""

from __future__ import annotations

import json
import sys

from .errors import UserError


def _nets():
    from edu_runtime import networks

    return networks


def create_cmd(args) -> int:
    """``edu network create [--subnet CIDR] NAME``."""
    n = _nets()
    try:
        print(n.create(args.name, args.subnet)["id"])
    except (n.NetworkError, ValueError) as exc:
        raise UserError(f"Error: {exc}", 1) from None
    return 0


def ls_cmd(args) -> int:
    """``edu network ls``."""
    nets = _nets().ls()
    if args.quiet:
        print("\n".join(x.get("id", x["name"])[:12] for x in nets))
        return 0
    rows = [["NETWORK ID", "NAME", "DRIVER", "SUBNET"]]
    for x in nets:
        rows.append([x.get("id", "")[:12], x["name"], x.get("driver", ""),
                     x.get("subnet", "")])
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        print("   ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return 0


def inspect_cmd(args) -> int:
    """``edu network inspect NAME...``."""
    n = _nets()
    try:
        print(json.dumps([n.inspect(x) for x in args.names], indent=4))
    except n.NetworkError as exc:
        raise UserError(f"Error: {exc}", 1) from None
    return 0


def rm_cmd(args) -> int:
    """``edu network rm NAME...``: refused while containers are attached."""
    n, code = _nets(), 0
    for name in args.names:
        try:
            n.rm(name)
            print(name)
        except n.NetworkError as exc:
            print(f"Error: {exc}", file=sys.stderr)
            code = 1
    return code


def register(sub) -> None:
    """Add ``edu network`` to the parser."""
    net = sub.add_parser("network", help="manage networks")
    nsub = net.add_subparsers(dest="network_command", metavar="COMMAND", required=True)
    p = nsub.add_parser("create")
    p.add_argument("--subnet")
    p.add_argument("name")
    p.set_defaults(func=create_cmd)
    p = nsub.add_parser("ls")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=ls_cmd)
    p = nsub.add_parser("inspect")
    p.add_argument("names", nargs="+")
    p.set_defaults(func=inspect_cmd)
    p = nsub.add_parser("rm")
    p.add_argument("names", nargs="+")
    p.set_defaults(func=rm_cmd)
