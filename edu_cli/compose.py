"""``edu compose``: up, down, ps, logs, build, pull, stop, start and restart of a compose
file, over ``edu_runtime.compose`` (which a notebook calls too).

Parsing and printing only. Progress lines go to stderr, as Compose v2 prints them; ``ps``
and ``logs`` to stdout. ``up`` without ``-d`` attaches to the services' output, each line
prefixed with its container's name, until they have all exited; Ctrl-C stops them.

Introduced in notebooks/08-web-app.
"""

from __future__ import annotations

import sys

from .errors import UserError


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _project(args):
    from edu_runtime import compose

    try:
        project = compose.load(args.file or None, project_name=args.project_name,
                               project_directory=args.project_directory)
    except compose.ComposeError as exc:
        raise UserError(str(exc), exc.exit_code) from None
    for note in project.warnings:
        print(f"WARN[0000] {note}", file=sys.stderr)
    return project


def _run(fn):
    """Run an engine verb; its refusals and failures become sentences."""
    from edu_runtime import compose

    from .run import supervisor_client

    supervisor_client()  # a supervisor started here serves thin `edu run` clients too
    try:
        return fn()
    except compose.ComposeError as exc:
        raise UserError(str(exc), exc.exit_code) from None


def up_cmd(args) -> int:
    """``edu compose up [-d] [--build] [SERVICE...]``."""
    from edu_runtime import compose

    project = _project(args)
    if args.detach:
        _run(lambda: compose.up(project, args.services or None, build=args.build,
                                out=sys.stdout, say=_say, timeout=args.timeout))
        return 0
    try:  # Ctrl-C while starting or attached: what started is stopped, as Compose does
        _run(lambda: compose.up(project, args.services or None, build=args.build,
                                out=sys.stdout, say=_say, timeout=args.timeout))
        names = [r["name"] for r in compose.containers(project)]
        print(f"Attaching to {', '.join(names)}", flush=True)
        _print_logs(project, args.services or None, follow=True, exits=True)
    except KeyboardInterrupt:
        print("Gracefully stopping... (press Ctrl+C again to force)", file=sys.stderr,
              flush=True)
        try:
            _run(lambda: compose.stop(project, args.services or None, timeout=args.timeout,
                                      say=_say))
        except KeyboardInterrupt:  # forced: SIGKILL at once
            _run(lambda: compose.stop(project, args.services or None, timeout=0, say=_say))
        return 130
    return 0


def _print_logs(project, services, follow: bool, exits: bool = False) -> None:
    from edu_runtime import compose

    width = max((len(r["name"]) for r in compose.containers(project)), default=0)
    for name, stream, text in compose.logs(project, services, follow=follow):
        if stream == "exit":
            if exits:
                print(f"{name} exited with code {text}", flush=True)
            continue
        out = sys.stderr if stream == "stderr" else sys.stdout
        out.write(f"{name.ljust(width)}  | {text}" + ("" if text.endswith("\n") else "\n"))
        out.flush()


def down_cmd(args) -> int:
    """``edu compose down [-v] [-t N]``; with ``-p NAME`` and no compose file, what carries
    that project's label (as ``docker compose -p NAME down`` does)."""
    import os
    from pathlib import Path

    from edu_runtime import compose
    from edu_runtime.compose import project as model

    try:
        project = _project(args)
    except UserError:
        if not args.project_name or args.file or any(
                (Path(args.project_directory or os.getcwd()) / f).exists()
                for f in model.DEFAULT_FILES):
            raise
        try:
            name = model.check_project_name(args.project_name)
        except compose.ComposeError as exc:
            raise UserError(str(exc), exc.exit_code) from None
        project = compose.Project(name=name, directory=Path(os.getcwd()), files=[],
                                  services={}, networks={}, volumes={})
    _run(lambda: compose.down(project, volumes=args.volumes, timeout=args.timeout, say=_say))
    return 0


def ps_cmd(args) -> int:
    """``edu compose ps [-q]``: every container of the project, running or not."""
    from edu_runtime import compose

    project = _project(args)
    rows = compose.ps(project)
    if args.quiet:
        print("\n".join(r["id"][:12] for r in rows))
        return 0
    table = [["NAME", "IMAGE", "COMMAND", "SERVICE", "STATUS", "PORTS"]]
    for r in rows:
        cmd = r["command"]
        cmd = f'"{cmd[:19] + "…" if len(cmd) > 20 else cmd}"'
        table.append([r["name"], r["image"], cmd, r["service"], r["status"], r["ports"]])
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        print("   ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return 0


def logs_cmd(args) -> int:
    """``edu compose logs [-f] [SERVICE...]``."""
    project = _project(args)
    try:
        _run(lambda: _print_logs(project, args.services or None, follow=args.follow))
    except KeyboardInterrupt:
        return 130
    return 0


def build_cmd(args) -> int:
    """``edu compose build [SERVICE...]``."""
    from edu_runtime import compose

    project = _project(args)
    built = _run(lambda: compose.build(project, args.services or None, out=sys.stdout,
                                       say=_say, no_cache=args.no_cache))
    if not built:
        _say(" No service has a build section: nothing to build")
    return 0


def pull_cmd(args) -> int:
    """``edu compose pull [SERVICE...]``."""
    from edu_runtime import compose

    project = _project(args)
    _run(lambda: compose.pull(project, args.services or None, out=sys.stdout, say=_say))
    return 0


def stop_cmd(args) -> int:
    """``edu compose stop [-t N] [SERVICE...]``."""
    from edu_runtime import compose

    project = _project(args)
    _run(lambda: compose.stop(project, args.services or None, timeout=args.timeout, say=_say))
    return 0


def start_cmd(args) -> int:
    """``edu compose start [SERVICE...]``."""
    from edu_runtime import compose

    project = _project(args)
    _run(lambda: compose.start(project, args.services or None, say=_say))
    return 0


def restart_cmd(args) -> int:
    """``edu compose restart [-t N] [SERVICE...]``."""
    from edu_runtime import compose

    project = _project(args)
    _run(lambda: compose.restart(project, args.services or None, timeout=args.timeout,
                                 say=_say))
    return 0


def register(sub) -> None:
    """Add ``edu compose`` to the parser."""

    p = sub.add_parser("compose", help="run a multi-container app from a compose file")
    p.add_argument("-f", "--file", action="append", metavar="FILE",
               help="compose file (default: compose.yaml, docker-compose.yml, ...)")
    p.add_argument("-p", "--project-name", metavar="NAME",
               help="project name (default: the directory's name)")
    p.add_argument("--project-directory", metavar="DIR",
               help="the project's directory (default: the first file's)")
    csub = p.add_subparsers(dest="compose_command", metavar="COMMAND", required=True)

    def cmd(name, fn, what, services=True, timeout=False):
        c = csub.add_parser(name, help=what)
        if services:
            c.add_argument("services", nargs="*", metavar="SERVICE", default=[])
        if timeout:
            c.add_argument("-t", "--timeout", type=float, default=10,
                           help="seconds to wait for a stop before SIGKILL (default 10)")
        c.set_defaults(func=fn)
        return c

    c = cmd("up", up_cmd, "create and start the services", timeout=True)
    c.add_argument("-d", "--detach", action="store_true", default=False,
                   help="start them in the background")
    c.add_argument("--build", action="store_true", default=False,
                   help="build images before starting")
    c = cmd("down", down_cmd, "stop and remove containers and networks", services=False,
            timeout=True)
    c.add_argument("-v", "--volumes", action="store_true", default=False,
                   help="remove the named volumes too")
    c = cmd("ps", ps_cmd, "list the project's containers", services=False)
    c.add_argument("-a", "--all", action="store_true", default=True,
                   help="(the default: stopped ones are listed too)")
    c.add_argument("-q", "--quiet", action="store_true", default=False)
    c = cmd("logs", logs_cmd, "what the services printed")
    c.add_argument("-f", "--follow", action="store_true", default=False)
    c = cmd("build", build_cmd, "build the services' images")
    c.add_argument("--no-cache", action="store_true", default=False)
    cmd("pull", pull_cmd, "pull the services' images")
    cmd("stop", stop_cmd, "stop the services", timeout=True)
    cmd("start", start_cmd, "start stopped services")
    cmd("restart", restart_cmd, "restart the services", timeout=True)
