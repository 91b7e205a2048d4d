"""``edu``: Docker's verbs over edu_runtime, with Docker's exit codes.

argparse, not click or typer: it is in the standard library and costs a few milliseconds
to import, and ``edu run`` pays every import on every start (see bench/cli_startup.py).
Commands import what they need inside their handler, so ``edu run`` never loads doctor's,
pyroute2's or libvirt's modules. Errors a student can meet are printed as sentences.
"""

# No `from __future__ import annotations`, and edu_runtime only where its version is asked
# for: the thin `edu run` imports this module, and each import is paid on every start.
import os
import sys


def _doctor(args) -> int:
    from . import doctor

    return doctor.main(args)


#: Which module registers each command. Only the module a command needs is imported, and
#: only its parsers are built: `edu run` must not pay for every other command's flags.
COMMANDS = {
    "doctor": "doctor",
    "ps": "containers", "logs": "containers", "stop": "containers", "kill": "containers",
    "wait": "containers",
    "rm": "containers", "pause": "containers", "unpause": "containers",
    "attach": "containers", "exec": "containers", "cp": "containers",
    "create": "containers", "start": "containers", "restart": "containers",
    "inspect": "containers",
    "volume": "volumes", "network": "networks",
    "run": "run", "step": "run", "prune": "run", "container": "run",
    "images": "images", "history": "images", "tag": "images",
    "rmi": "images", "image": "images", "save": "images", "load": "images",
    "bootstrap": "images",
    "pull": "registry", "push": "registry", "search": "registry", "login": "registry",
    "logout": "registry",
    "build": "build", "commit": "build",
    "compare": "compare",
    "stats": "stats",
    "compose": "compose",
    "demo": "demo",
}


def _register_doctor(sub) -> None:
    d = sub.add_parser("doctor", help="what this machine can do for the course")
    d.add_argument("--json", action="store_true", help="print the report as JSON")
    d.add_argument("--refresh", action="store_true",
                   help="probe again instead of using verdicts cached for this boot")
    d.add_argument("--fetch", action="store_true",
                   help="download the guest kernel first if it is missing (about 70 MB)")
    d.set_defaults(func=_doctor)


def _flag_error(parser, message: str) -> None:
    """A command line argparse refuses: one sentence, and Docker's exit code (a missing
    argument 1, a bad or unknown flag 125), instead of argparse's usage text and 2."""
    code = 1 if message.startswith("the following arguments are required") else 125
    parser.exit(code, f"edu: {parser.prog}: {message}: see '{parser.prog} --help'\n")


def build_parser(command: str | None = None):
    """The argument parser: for one command's module if ``command`` is known, else all."""
    import argparse
    import importlib

    class Parser(argparse.ArgumentParser):  # its subparsers are of this class too
        error = _flag_error

    p = Parser(prog="edu", description="A container runtime you can watch.")
    from edu_runtime import __version__

    p.add_argument("--version", action="version", version=f"edu {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    wanted = {COMMANDS[command]} if command in COMMANDS else sorted(set(COMMANDS.values()))
    for module in wanted:
        if module == "doctor":
            _register_doctor(sub)
        else:
            importlib.import_module(f".{module}", __package__).register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run ``edu``; returns the exit code."""
    # Whether this process is the `edu` command itself (the launcher or pip's script), which
    # may end with os._exit once answered; not a test or a notebook calling main().
    program = argv is None and os.path.basename(sys.argv[0]) == "edu"
    argv = sys.argv[1:] if argv is None else argv
    if argv == ["--version"]:  # answered before any parser is built: the cheapest path
        from edu_runtime import __version__

        print(f"edu {__version__}")
        return 0
    code = None
    try:
        if argv[:1] == ["run"]:  # the warm supervisor may take it whole: see fastrun
            from . import fastrun

            code = fastrun.try_run(argv[1:])
        elif argv[:1] == ["build"]:  # a warm rebuild may be answered from its record
            from . import build

            code = build.warm(argv[1:])
        if code is not None and program:  # all done: skip the interpreter's own teardown,
            sys.stdout.flush()  # a few ms on every run (runc's Go binary has none)
            sys.stderr.flush()
            os._exit(code)
    except BrokenPipeError:
        code = _reader_left()
        if program:
            os._exit(code)
    except KeyboardInterrupt:  # (a replayed build re-reads every COPY source: it may take)
        print("edu: interrupted", file=sys.stderr)
        return 130
    if code is not None:
        return code
    if sys.flags.no_site:  # started by the launcher (python -S): now the packages are needed
        import site

        site.main()
    from edu_runtime.paths import NotYours

    from .errors import UserError

    parser = build_parser(argv[0] if argv else None)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return args.func(args)
    except UserError as exc:
        print(f"edu: {exc}", file=sys.stderr)
        return exc.code
    except NotYours as exc:  # a state or run dir that is not the user's
        print(f"edu: {exc}", file=sys.stderr)
        return 125
    except KeyboardInterrupt:
        print("edu: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return _reader_left()


def _reader_left() -> int:
    """`edu images | head`: the reader left. Quietly, as other Unix tools do (Python's own
    advice): stdout goes to /dev/null so the exit flush cannot fail again."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 141  # 128 + SIGPIPE, what a shell reports for a tool killed by it


if __name__ == "__main__":
    sys.exit(main())
