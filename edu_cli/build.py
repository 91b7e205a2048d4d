"""``edu build`` and ``edu commit``: Docker's flags over edu_runtime.images.build."""

from __future__ import annotations

import sys
from pathlib import Path

from .errors import UserError


def _build_args(items: list[str]) -> dict[str, str]:
    import os

    out = {}
    for item in items or []:
        key, eq, value = item.partition("=")
        if not key:
            raise UserError(f"invalid --build-arg {item!r}: use KEY=VALUE")
        if eq:
            out[key] = value
        elif key in os.environ:  # --build-arg NAME takes the value from the environment
            out[key] = os.environ[key]
    return out


def build_cmd(args) -> int:
    """``edu build [-t NAME[:TAG]] [-f FILE] [--no-cache] [--build-arg K=V] [--target S] DIR``."""
    from edu_runtime.images import build
    from edu_runtime.images.reference import ReferenceError, parse
    from edu_runtime.images.store import DiskFull, Store, StoreError

    for tag in args.tag:
        try:
            parse(tag)
        except ReferenceError as exc:
            raise UserError(f"invalid argument {tag!r} for \"-t, --tag\" flag: {exc}") from None
    context = Path(args.context)
    dockerfile = None
    if args.file:
        dockerfile = Path(args.file) if args.file != "-" else None
        if dockerfile is not None and not dockerfile.is_absolute() and \
                not dockerfile.exists() and (context / dockerfile).exists():
            dockerfile = context / dockerfile
    options = build.Options(context=context, dockerfile=dockerfile, tags=list(args.tag),
                            build_args=_build_args(args.build_arg), target=args.target,
                            no_cache=args.no_cache, network=args.network, quiet=args.quiet)
    store = Store()
    try:
        image = build.build(store, options)
    except build.BuildError as exc:
        print(exc, file=sys.stderr)
        return exc.exit_code
    except DiskFull as exc:
        raise UserError(str(exc), 1) from None  # (as docker build's "no space left")
    except StoreError as exc:
        raise UserError(str(exc)) from None
    if args.quiet:
        print(image.id)
    return 0


def commit_cmd(args) -> int:
    """``edu commit CONTAINER [REPOSITORY[:TAG]]``: the container's changes as a new image."""
    from edu_runtime.images import build
    from edu_runtime.images.store import StoreError
    from edu_runtime.life import states

    try:
        rec = states.find(args.container)
    except states.NoSuchContainer as exc:
        raise UserError(f"Error: {exc}", 1) from None
    try:
        image = build.commit(rec, args.repository, message=args.message, author=args.author,
                             changes=args.change, pause=not args.no_pause)
    except (build.BuildError, StoreError) as exc:
        raise UserError(f"Error: {exc}", 1) from None
    print(image.id)
    return 0


def register(sub) -> None:
    """Add ``build`` and ``commit`` to the ``edu`` parser."""
    p = sub.add_parser("build", help="build an image from a Dockerfile")
    p.add_argument("-t", "--tag", action="append", default=[], metavar="NAME[:TAG]")
    p.add_argument("-f", "--file", help="the Dockerfile (default: CONTEXT/Dockerfile)")
    p.add_argument("--build-arg", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--target", help="build up to this stage")
    p.add_argument("--no-cache", action="store_true", help="do not reuse earlier steps")
    p.add_argument("--network", help="for RUN: bridge (default), none, host, or a network")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the image id")
    p.add_argument("context", metavar="PATH")
    p.set_defaults(func=build_cmd)

    p = sub.add_parser("commit", help="make an image of a container's changes")
    p.add_argument("-m", "--message", default="")
    p.add_argument("-a", "--author", default="")
    p.add_argument("-c", "--change", action="append", default=[],
                   help="a Dockerfile instruction for the config (CMD, ENV, ...)")
    p.add_argument("--no-pause", action="store_true",
                   help="do not freeze a running container while its files are read")
    p.add_argument("container")
    p.add_argument("repository", nargs="?")
    p.set_defaults(func=commit_cmd)
