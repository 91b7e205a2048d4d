"""``edu pull``, ``push``, ``search``, ``login`` and ``logout``: a registry, printed the way
``docker`` prints it (``Pull complete``, ``Digest: sha256:...``, ``Status: ...``).

The registry client is imported inside the handlers, so building the parser stays cheap for
every other command. A failed pull or push exits 1, as Docker's does.

Introduced in notebooks/04-images.
"""

from __future__ import annotations

import getpass
import sys

from .errors import UserError


def _parse(text: str):
    from edu_runtime.images.reference import ReferenceError, parse

    try:
        return parse(text)
    except ReferenceError as exc:
        raise UserError(str(exc), 1) from None


def _say_default_tag(text: str) -> None:
    from edu_runtime.images.reference import parse

    bare = parse(text, default_tag=False)
    if bare.tag is None and bare.digest is None:
        print("Using default tag: latest")


def _store():
    from edu_runtime.images.store import Store

    return Store()


def _transfer(args, operation: str):
    """Run ``registry.pull`` or ``registry.push`` for ``args.image``: (reference, result)."""
    from edu_runtime.images import registry

    ref = _parse(args.image)
    _say_default_tag(args.image)
    progress = registry.Progress(None if args.quiet else sys.stdout)
    try:
        return ref, getattr(registry, operation)(_store(), ref, progress=progress,
                                                 insecure=args.insecure)
    except registry.StoreError as exc:
        raise UserError(str(exc), 1) from None


def pull_cmd(args) -> int:
    """``edu pull NAME[:TAG|@DIGEST]``."""
    from edu_runtime.images import shared

    try:  # a classroom's shared base image is taken before any registry is asked
        taken = shared.take(_store(), args.image)
    except shared.StoreError as exc:
        raise UserError(str(exc), 1) from None
    if taken is not None:
        print(f"Status: Copied {_parse(args.image).familiar()} from this machine's shared "
              f"images ({shared.shared_dir()})")
        print(_parse(args.image))
        return 0
    ref, pulled = _transfer(args, "pull")
    if not args.quiet:
        print(f"Digest: {pulled.digest}")
        news = "Downloaded newer image" if pulled.downloaded else "Image is up to date"
        print(f"Status: {news} for {ref.familiar()}")
    print(ref)
    return 0


def push_cmd(args) -> int:
    """``edu push NAME[:TAG]``."""
    ref, pushed = _transfer(args, "push")
    if args.quiet:
        print(f"{ref.tag}: digest: {pushed.digest} size: {pushed.size}")
    return 0


def _split_term(text: str, registry: str | None) -> tuple[str, str]:
    """``127.0.0.1:5000/busy`` as (registry, term), as a reference names its registry."""
    first, sep, rest = text.partition("/")
    if registry is None and sep and ("." in first or ":" in first or first == "localhost"):
        return first, rest
    return registry or "docker.io", text


def search_cmd(args) -> int:
    """``edu search [--registry R] [--limit N] [REGISTRY/]TERM``."""
    from edu_runtime.images import registry

    where, term = _split_term(args.term, args.registry)
    local = registry.search_local(_store(), term, limit=args.limit)
    failure = None
    try:
        found = registry.search_registry(where, term, limit=args.limit, insecure=args.insecure)
    except registry.StoreError as exc:
        found, failure = [], exc
    rows = [["NAME", "TAGS", "WHERE"]]
    for f in found + local:
        tags = ", ".join(f.tags[:5]) + (f", ... ({len(f.tags)} tags)" if len(f.tags) > 5 else "")
        rows.append([f.name, tags or "(none)", "local store" if f.where == "local" else f.where])
    if len(rows) > 1:
        widths = [max(len(r[i]) for r in rows) for i in range(3)]
        for r in rows:
            print("   ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    elif failure is None:
        print(f"Nothing named like {term!r} in {where} or in the local store.")
    if failure is not None:
        raise UserError(str(failure), 1)
    return 0


def login_cmd(args) -> int:
    """``edu login [-u USER] [-p PASS | --password-stdin] [REGISTRY]``."""
    from edu_runtime.images import registry

    where = registry.normalize_registry(args.registry)
    user, password = args.username, args.password
    if args.password_stdin:
        if password:
            raise UserError("--password and --password-stdin are mutually exclusive", 1)
        if not user:
            raise UserError("Must provide --username with --password-stdin", 1)
        password = sys.stdin.read().rstrip("\r\n")
    elif password:
        print("WARNING! Using --password via the CLI is insecure. Use --password-stdin.",
              file=sys.stderr)
    if not user or not password:
        if not sys.stdin.isatty():
            raise UserError("edu login needs -u USER and a password (-p, or --password-stdin) "
                            "when not at a terminal", 1)
        user = user or input("Username: ").strip()
        password = password or getpass.getpass("Password: ")
    if not user or not password:
        raise UserError("a user name and a password are both needed to log in", 1)
    try:
        path = registry.login(where, user, password, insecure=args.insecure)
    except registry.StoreError as exc:
        raise UserError(f"Login did not succeed: {exc}", 1) from None
    print(f"WARNING! Your password will be stored unencrypted in {path}.", file=sys.stderr)
    print("Login Succeeded")
    return 0


def logout_cmd(args) -> int:
    """``edu logout [REGISTRY]``: forget the login kept for it."""
    from edu_runtime.images import registry

    where = registry.normalize_registry(args.registry)
    try:
        removed = registry.remove_login(where)
    except registry.StoreError as exc:
        raise UserError(str(exc), 1) from None
    print(f"Removing login credentials for {where}" if removed else f"Not logged in to {where}")
    return 0


def register(sub) -> None:
    """Add the registry commands to the ``edu`` parser."""
    insecure = "speak plain HTTP to this registry (loopback registries always are)"

    p = sub.add_parser("pull", help="download an image from a registry")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the image name")
    p.add_argument("--insecure", action="store_true", help=insecure)
    p.add_argument("image", metavar="NAME[:TAG|@DIGEST]")
    p.set_defaults(func=pull_cmd)

    p = sub.add_parser("push", help="upload an image to a registry")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the digest line")
    p.add_argument("--insecure", action="store_true", help=insecure)
    p.add_argument("image", metavar="NAME[:TAG]")
    p.set_defaults(func=push_cmd)

    p = sub.add_parser("search", help="search a registry's catalog and the local store")
    p.add_argument("--limit", type=int, default=25, help="at most this many results (25)")
    p.add_argument("--registry", help="the registry to search (or give REGISTRY/TERM)")
    p.add_argument("--insecure", action="store_true", help=insecure)
    p.add_argument("term", metavar="[REGISTRY/]TERM")
    p.set_defaults(func=search_cmd)

    p = sub.add_parser("login", help="log in to a registry")
    p.add_argument("-u", "--username")
    p.add_argument("-p", "--password")
    p.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    p.add_argument("--insecure", action="store_true", help=insecure)
    p.add_argument("registry", nargs="?", default="docker.io")
    p.set_defaults(func=login_cmd)

    p = sub.add_parser("logout", help="forget the login kept for a registry")
    p.add_argument("registry", nargs="?", default="docker.io")
    p.set_defaults(func=logout_cmd)
