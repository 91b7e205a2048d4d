"""``edu build`` and ``edu commit``: Docker's flags over edu_runtime.images.build.

A warm rebuild (nothing changed since the last build of the same inputs) is answered from
that build's record (edu_runtime.images.warm) before the builder is imported: ``warm``
reads the command line itself, so that it can run before argparse is even imported.
"""

from __future__ import annotations

import os
import sys

from .errors import UserError

#: The flags ``warm`` reads (any other, or a bundle such as -qt, leaves it to argparse).
_VALUE_FLAGS = {"-t": "tag", "--tag": "tag", "-f": "file", "--file": "file",
                "--build-arg": "build_arg", "--target": "target", "--network": "network"}
_BARE_FLAGS = {"-q": "quiet", "--quiet": "quiet", "--no-cache": "no_cache"}


def _build_args(items: list[str]) -> dict[str, str]:
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


def _dockerfile(context: str, file: str | None) -> str | None:
    """The -f FILE as the builder is given it: relative to the current directory, else to
    the context (None: the context's own Dockerfile)."""
    if not file or file == "-":
        return None
    if not os.path.isabs(file) and not os.path.exists(file) and \
            os.path.exists(os.path.join(context, file)):
        return os.path.join(context, file)
    return file


def _parse_warm(argv: list[str]) -> dict | None:
    """``edu build``'s flags, read without argparse; None for anything but the plain forms."""
    opts: dict = {"tag": [], "build_arg": [], "file": None, "target": None, "network": None,
                  "quiet": False, "no_cache": False, "context": None}
    i = 0
    while i < len(argv):
        arg = argv[i]
        flag, eq, value = arg.partition("=") if arg.startswith("--") else (arg, "", "")
        if flag in _VALUE_FLAGS:
            if not eq:
                if i + 1 >= len(argv):
                    return None
                i += 1
                value = argv[i]
            field = _VALUE_FLAGS[flag]
            if isinstance(opts[field], list):
                opts[field].append(value)
            else:
                opts[field] = value
        elif arg in _BARE_FLAGS:
            opts[_BARE_FLAGS[arg]] = True
        elif arg.startswith("-") or opts["context"] is not None:
            return None  # (--help, a bundle, a second path: argparse says what it means)
        else:
            opts["context"] = arg
        i += 1
    return opts if opts["context"] is not None else None


def warm(argv: list[str]) -> int | None:
    """``edu build ARGV...`` answered from the last build's record, if it still holds
    (printed as the builder prints it); None if the builder must run."""
    return _replay(_parse_warm(argv))


_tried = False  # (a replay that declined is not tried twice in one process)


def _replay(opts: dict | None) -> int | None:
    global _tried
    if opts is None or opts["no_cache"] or opts["file"] == "-" or _tried:
        return None
    _tried = True
    from edu_runtime.images import warm as record

    root = record.store_root()
    context = opts["context"]
    path = _dockerfile(context, opts["file"]) or os.path.join(context, "Dockerfile")
    try:
        with open(path, "rb") as f:
            text = f.read()
        build_args = _build_args(opts["build_arg"])
    except (OSError, UserError):
        return None
    if not root:
        return None
    found = record.replay(root, record.where(root, context, path),
                          record.inputs(text, opts["tag"], build_args, opts["target"]), context)
    if found is None:
        return None
    image, lines = found
    try:
        sys.stdout.write(image + "\n" if opts["quiet"] else "".join(ln + "\n" for ln in lines))
        sys.stdout.flush()
    except BrokenPipeError:  # (`edu build . | head -1`: as main says it, before argparse)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    return 0


def build_cmd(args) -> int:
    """``edu build [-t NAME[:TAG]] [-f FILE] [--no-cache] [--build-arg K=V] [--target S] DIR``."""
    code = _replay(vars(args))
    if code is not None:
        return code
    from pathlib import Path

    from edu_runtime.images import build
    from edu_runtime.images.reference import ReferenceError, parse
    from edu_runtime.images.store import DiskFull, Store, StoreError

    for tag in args.tag:
        try:
            parse(tag)
        except ReferenceError as exc:
            raise UserError(f"invalid argument {tag!r} for \"-t, --tag\" flag: {exc}") from None
    context = Path(args.context)
    dockerfile = _dockerfile(args.context, args.file)
    dockerfile = Path(dockerfile) if dockerfile else None
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
