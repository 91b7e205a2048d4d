"""``edu run`` and ``edu step``: Docker's ``run`` flags over ``edu_runtime.Container``.

This is the start-up path that benchmarks compare with runc and docker, so it imports only
what a container needs: no pyroute2, no libvirt, no doctor, no archive code.
"""

from __future__ import annotations

import argparse
import signal
import sys

from .errors import UserError


def _env(args, environ=None, cwd: str = "") -> dict[str, str]:
    """The container's -e and --env-file variables; ``environ`` and ``cwd`` are the
    caller's (the supervisor parses a thin client's command line in its stead)."""
    import os

    environ = os.environ if environ is None else environ
    env: dict[str, str] = {}
    for path in args.env_file or []:
        try:
            lines = open(os.path.join(cwd, path)).read().splitlines()
        except OSError as exc:
            raise UserError(f"cannot read --env-file {path}: {exc.strerror}") from None
        for line in lines:
            line = line.strip()
            if line and not line.startswith("#"):
                _put(env, line, environ)
    for item in args.env or []:
        _put(env, item, environ)
    return env


def _put(env: dict[str, str], item: str, environ) -> None:
    key, eq, value = item.partition("=")
    if not key or "\0" in item:
        from edu_runtime.flags import bad_env

        raise UserError(str(bad_env(item)))
    if eq:
        env[key] = value
    elif key in environ:  # -e NAME passes the host's value through, as Docker does
        env[key] = environ[key]


def _security(opts: list[str]) -> tuple[bool, bool]:
    seccomp, nnp = True, False
    for opt in opts or []:
        if opt in ("seccomp=unconfined", "seccomp:unconfined"):
            seccomp = False
        elif opt in ("no-new-privileges", "no-new-privileges:true", "no-new-privileges=true"):
            nnp = True
        else:
            raise UserError(f"unsupported --security-opt {opt!r}: use seccomp=unconfined or "
                            "no-new-privileges")
    return seccomp, nnp


def _healthcheck(args) -> dict | None:
    """The HealthConfig of the --health-* and --no-healthcheck flags (None without any: the
    image's own HEALTHCHECK, if it has one, is used as it is)."""
    flags = (args.health_cmd, args.health_interval, args.health_timeout, args.health_retries,
             args.health_start_period)
    if not args.no_healthcheck and all(f is None for f in flags):
        return None  # and nothing imported: `edu run` pays for every import
    from edu_runtime.life import health

    try:
        return health.from_flags(*flags[:4], start_period=flags[4],
                                 disabled=args.no_healthcheck)
    except health.HealthcheckError as exc:
        raise UserError(str(exc)) from None


def container_spec(args, environ=None, cwd: str = "", refused: int = 125) -> dict:
    """The ``Container`` keyword arguments for parsed ``run`` flags (JSON-ready, so the
    supervisor can receive them). Host paths of -v are made absolute against ``cwd``.
    ``refused``: the exit code for what Docker's daemon refuses (see ``make_container``)."""
    seccomp, nnp = _security(args.security_opt)
    from edu_runtime import flags
    from edu_runtime.images import reference

    try:  # as numbers in the spec: it is JSON, and a supervisor may be older than this CLI
        cpus = None if args.cpus is None else flags.cpus(args.cpus)
        pids = None if args.pids_limit is None else flags.pids_limit(args.pids_limit)
        flags.network(args.network)
        if getattr(args, "restart", None) is not None:  # run and create; step has none
            if restart_policy(args.restart, refused) != "no" and args.rm:
                raise UserError("conflicting options: cannot specify both --restart and --rm "
                                "(a container that is removed when it exits cannot restart): "
                                "drop one")
        # A name no image can have: its sentence says why, not "not found" (Docker's too).
        reference.parse(args.image)
    except flags.BadValue as exc:
        raise UserError(flags.shown(str(exc))) from None
    except reference.ReferenceError as exc:
        raise UserError(flags.shown(str(exc)), refused) from None
    entrypoint = None
    if args.entrypoint is not None:
        entrypoint = [args.entrypoint] if args.entrypoint else []
    # Given only when set: a supervisor older than this CLI does not know these keywords.
    extra = {k: v for k, v in dict(
        log_driver=args.log_driver, log_opts=args.log_opt or None,
        oom_score_adj=_oom_score_adj(args.oom_score_adj),
        labels=_labels(getattr(args, "label", None))).items() if v is not None}
    return dict(**extra, image=args.image, command=args.command or None, name=args.name,
                hostname=args.hostname, env=_env(args, environ, cwd), workdir=args.workdir,
                user=args.user,
                entrypoint=entrypoint, memory=args.memory, pids_limit=pids,
                cpus=cpus, network=args.network, publish=args.publish,
                publish_all=args.publish_all, cap_add=args.cap_add,
                cap_drop=args.cap_drop, seccomp=seccomp, no_new_privs=nnp,
                read_only=args.read_only, pid=args.pid, ipc=args.ipc, uts=args.uts,
                remove=args.rm, init=args.init, volumes=args.volume,
                aliases=args.network_alias or None, healthcheck=_healthcheck(args))


def _labels(given: list[str] | None) -> dict[str, str] | None:
    """-l KEY=VALUE (or KEY, an empty value) as Docker's --label: a dict, or None if none."""
    if not given:
        return None
    out = {}
    for item in given:
        key, _, value = item.partition("=")
        if not key:
            raise UserError(f"invalid label {item!r}: use KEY=VALUE")
        out[key] = value
    return out


def _oom_score_adj(value: str | None) -> int | None:
    """--oom-score-adj as a number (the runtime checks its range), in Docker's sentence."""
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise UserError(f'invalid argument "{value}" for "--oom-score-adj" flag: '
                        f'strconv.ParseInt: parsing "{value}": invalid syntax') from None


def make_container(args, refused: int = 125):
    """Build a Container from parsed ``run`` flags; errors become sentences. ``refused`` is
    the exit code for what Docker's daemon refuses (no such image, a bad name or one in use,
    a restart policy, an image name): 125 for ``run``, 1 for ``create``, as Docker's."""
    from edu_runtime.container import Container
    from edu_runtime.images.store import StoreError
    from edu_runtime.life.control import cleanup_stale
    from edu_runtime.life.states import InvalidName, InvalidTransition, NameInUse
    from edu_runtime.steps import StepError

    cleanup_stale()  # whatever a SIGKILLed `edu run` left behind, networking included
    try:
        return Container(**container_spec(args, refused=refused))
    except StoreError as exc:
        from edu_runtime.flags import shown

        raise UserError(shown(f"Unable to find image '{args.image}' locally: {exc}"),
                        refused) from None
    except (NameInUse, InvalidName) as exc:
        raise UserError(str(exc), refused) from None
    except (StepError, ValueError, InvalidTransition) as exc:
        raise UserError(str(exc)) from None


def run_supervised(args) -> int:
    """``-d`` and ``-t``: the supervisor owns the container; attach unless detached."""
    from edu_runtime.life.control import cleanup_stale

    client = supervisor_client()

    from . import attach

    attach.check_tty(args.interactive and not args.detach, args.tty)  # -dit: no keyboard
    cleanup_stale()
    make_container(args)  # validates the flags and the image here, with our error messages
    reply, conn = client.request({
        "op": "run", "spec": container_spec(args), "tty": args.tty,
        "interactive": args.interactive, "restart": restart_policy(args.restart),
        "attach": not args.detach, "size": attach.terminal_size() if args.tty else None})
    if "error" in reply:
        conn.close()
        raise UserError(reply["error"], reply.get("code", 125))
    if args.detach:
        conn.close()
        print(reply["id"])
        return 0
    how = attach.relay(conn, keyboard=args.interactive)
    conn.close()
    if how == "detached":
        print(f"\r\nedu: detached from {reply['name']}; it keeps running "
              f"(edu attach {reply['name']} to come back)", file=sys.stderr)
        return 0
    return client.ask({"op": "wait", "id": reply["id"]}).get("exit_code") or 0


def run_foreground_supervised(args) -> int:
    """A foreground run as root: the supervisor, which keeps pyroute2 and the rest of
    the runtime imported, starts the container with *our* stdin, stdout and stderr (passed
    over its socket), and answers with the exit code on the same connection. This process
    stays thin: it imports no more than a socket and JSON."""
    import os

    from edu_runtime.container import image_hint, oom_note

    client = supervisor_client()

    signal.signal(signal.SIGTERM, _raise_on_sigterm)  # as Ctrl-C: the container goes
    reply, conn = client.request({"op": "run", "spec": container_spec(args),
                                  "trace": args.trace, "wait": True}, fds=[0, 1, 2])
    with conn:
        if "error" in reply:
            raise UserError(image_hint(reply["error"], args.image), reply.get("code", 125))
        try:
            done = client.answer(conn)
        except (KeyboardInterrupt, SystemExit):  # Ctrl-C, SIGTERM: the container goes
            client.ask({"op": "kill", "id": reply["id"]})
            done = client.answer(conn)
    if done.get("oom_killed"):
        print(oom_note(args.memory), file=sys.stderr)
    if done.get("trace"):
        os.write(2, (done["trace"] + "\n").encode())
    return done.get("exit_code") or 0


class _Declined(Exception):
    pass


_parser = None


def supervised_request(argv: list[str], environ: dict[str, str], cwd: str) -> dict | None:
    """What the supervisor makes of a thin client's ``edu run ARGV`` (see ``fastrun``):
    a ``run`` request it can serve, or None when the client should run the normal path
    (-d, -t, or a command line only the full parser may answer)."""
    global _parser
    if _parser is None:  # built once: the supervisor parses every thin client's run
        import argparse

        class Parser(argparse.ArgumentParser):
            def error(self, message):
                raise _Declined(message)

            def exit(self, status=0, message=None):
                raise _Declined(message)

        _parser = Parser(prog="edu run", add_help=False)
        register(_parser.add_subparsers(dest="command"))
    try:
        args = _parser.parse_args(["run", *argv])
    except _Declined:
        return None
    if args.tty:
        return None
    if args.detach:  # the supervisor answers with the id, and keeps the container
        return {"op": "run", "spec": container_spec(args, environ, cwd), "detach": True,
                "restart": restart_policy(args.restart), "interactive": args.interactive,
                "image": args.image}
    return {"op": "run", "spec": container_spec(args, environ, cwd), "trace": args.trace,
            "wait": True, "image": args.image, "memory": args.memory}


def restart_policy(value: str, refused: int = 125) -> str:
    """A checked ``--restart`` value: no, on-failure[:N], always (unless-stopped, which
    differs from always only across daemon restarts, and edu has no daemon, is always).
    A count that is no integer is refused by Docker's CLI (125); the rest by its daemon
    (``refused``: 125 for ``run``, 1 for ``create``)."""
    policy, colon, limit = value.partition(":")
    if not value:  # docker run --restart '' is the default, no
        return "no"
    if policy == "unless-stopped" and not colon:
        return "always"
    if (policy in ("no", "always") and not colon) or (
            policy == "on-failure" and (not colon or limit.isdigit())):
        return value
    raise UserError(f"invalid restart policy {value!r}: use no, on-failure[:N] (N a number "
                    "of retries) or always", 125 if policy == "on-failure" and colon
                    and not limit.lstrip("-").isdigit() else refused)


def supervisor_client():
    """The runtime's supervisor client, set to start supervisors with the CLI's front
    (``edu_cli.supervise``), so the thin ``edu run`` clients that follow are served."""
    from edu_runtime.life import client

    client.use_program("edu_cli.supervise")
    return client


def _raise_on_sigterm(signum, frame):
    raise SystemExit(128 + signum)  # unwinds like Ctrl-C, so teardown runs


def run_cmd(args) -> int:
    """``edu run``: start the container in the foreground and return its exit code.

    As root, the supervisor starts it (``fastrun`` hands it the command line when it is
    already up; otherwise this starts one). Rootless, the container is this process's child,
    and the user's network holder (edu_runtime.networks.holder) does the netlink work."""
    import os

    if args.detach or args.tty:
        return run_supervised(args)
    if os.geteuid() == 0:
        return run_foreground_supervised(args)
    from edu_runtime.container import oom_note
    from edu_runtime.steps import StepError

    signal.signal(signal.SIGTERM, _raise_on_sigterm)  # teardown runs, as on Ctrl-C
    c = make_container(args)
    try:
        c.start()
        for m in c.config.volumes:
            if getattr(m, "note", None):
                print(f"edu: note: {m.note}", file=sys.stderr)
        if c.cgroup_note:
            print(f"edu: warning: {c.cgroup_note}", file=sys.stderr)
        code = c.wait()
    except StepError as exc:
        print(f"edu: {exc.message} (step: {exc.step})", file=sys.stderr)
        return exc.exit_code
    if c.oom_killed:
        print(oom_note(args.memory), file=sys.stderr)
    if args.trace:
        print(c.trace.timeline(), file=sys.stderr)
    return code


def step_cmd(args) -> int:
    """``edu step``: Enter for each step; shows its explanation and what it changed."""
    import textwrap

    from edu_runtime.container import diff
    from edu_runtime.steps import StepError

    args.rm = True
    c = make_container(args)
    stepper = c.steps()
    try:
        n = len(stepper.ctx.steps)
        while (step := stepper.upcoming) is not None:
            print(f"\n\033[1m[{stepper.index + 1}/{n}] {step.name}\033[0m ({step.side})")
            print(textwrap.fill(step.explain, 88))
            if step.name == "exec":
                print("(the command's output follows)")
            if not args.yes:
                input("Enter to apply ... ")
            rec = stepper.advance()
            calls = rec.lines()
            print(f"  took {rec.ms:.2f} ms; {len(calls)} call{'' if len(calls) == 1 else 's'}"
                  + (":" if calls else ""))
            for line in calls[:12]:
                print(f"    {line}")
            if len(calls) > 12:
                print(f"    (+{len(calls) - 12} more: edu run --trace shows them all)")
            for line in diff(rec):
                print(f"  {line}")
        code = c.wait()
    except StepError as exc:
        print(f"edu: {exc.message} (step: {exc.step})", file=sys.stderr)
        return exc.exit_code
    except (KeyboardInterrupt, EOFError):
        stepper.abort()
        print("\nedu: stopped; everything applied so far was undone", file=sys.stderr)
        return 130
    print(f"\nexit code {code}")
    return code


def label_filter(filters: list[str] | None) -> dict[str, str | None] | None:
    """Docker's ``--filter label=KEY`` and ``label=KEY=VALUE`` (all must match), or None."""
    if not filters:
        return None
    want: dict[str, str | None] = {}
    for item in filters:
        kind, _, value = item.partition("=")
        key, eq, val = value.partition("=")
        if kind != "label" or not key:
            raise UserError(f"invalid filter {item!r}: edu's prune takes label=KEY or "
                            "label=KEY=VALUE", 1)
        want[key] = val if eq else None
    return want


def prune_cmd(args) -> int:
    """``edu prune`` and ``edu container prune``: remove stopped containers (only those with
    the labels of ``--filter label=...``) and whatever killed runs left behind."""
    from edu_runtime.life.control import prune

    removed = prune(labels=label_filter(getattr(args, "filter", None)))
    print("Deleted Containers:" if removed else "Nothing to remove")
    for cid in removed:
        print(cid)
    return 0


def add_run_flags(p: argparse.ArgumentParser) -> None:
    """Docker's ``run`` flags that edu supports."""
    p.add_argument("--rm", action="store_true", help="remove the container when it exits")
    p.add_argument("--name")
    p.add_argument("-h", "--hostname")
    p.add_argument("-e", "--env", action="append", metavar="KEY=VALUE")
    p.add_argument("--env-file", action="append")
    p.add_argument("-w", "--workdir")
    p.add_argument("-u", "--user")
    p.add_argument("--entrypoint")
    p.add_argument("-m", "--memory", help="memory limit, e.g. 64m")
    p.add_argument("--pids-limit", help="most processes at once (0 or -1: no limit)")
    p.add_argument("--cpus", help="CPU time, in CPUs (e.g. 0.5)")
    p.add_argument("--network", "--net", help="bridge (the default), none, host, or a "
                   "network made with edu network create")
    p.add_argument("-p", "--publish", action="append", default=[],
                   metavar="[IP:]HOST:CONTAINER[/PROTO]")
    p.add_argument("-P", "--publish-all", action="store_true")
    p.add_argument("--network-alias", action="append", default=[], metavar="NAME",
                   help="another name the container has on its user-defined network")
    p.add_argument("--health-cmd", metavar="COMMAND", help="command to check health (sh -c)")
    p.add_argument("--health-interval", metavar="DURATION", help="time between checks (30s)")
    p.add_argument("--health-timeout", metavar="DURATION", help="longest a check may run (30s)")
    p.add_argument("--health-retries", type=int, metavar="N",
                   help="failures in a row that make it unhealthy (3)")
    p.add_argument("--health-start-period", metavar="DURATION",
                   help="time to start up, when failures do not count (0s)")
    p.add_argument("--no-healthcheck", action="store_true",
                   help="disable any HEALTHCHECK the image has")
    p.add_argument("--cap-add", action="append", default=[])
    p.add_argument("--cap-drop", action="append", default=[])
    p.add_argument("--security-opt", action="append", default=[])
    p.add_argument("--read-only", action="store_true")
    p.add_argument("--init", action="store_true", help="run tini as PID 1")
    p.add_argument("-v", "--volume", action="append", default=[], metavar="[SRC:]DEST[:ro]")
    p.add_argument("--log-driver", help="json-file (the only one edu has)")
    p.add_argument("--log-opt", action="append", default=[], metavar="KEY=VALUE",
                   help="max-size=10m, max-file=3 (edu's default cap; Docker has none)")
    p.add_argument("--oom-score-adj", metavar="N",
                   help="-1000 to 1000: how readily the OOM killer picks it (0, or 500 "
                   "where the supervisor may not go below 0)")
    p.add_argument("-l", "--label", action="append", default=[], metavar="KEY=VALUE",
                   help="a label on the container (edu container prune --filter label=...)")
    p.add_argument("--pid", choices=("host",))
    p.add_argument("--ipc", choices=("host",))
    p.add_argument("--uts", choices=("host",))
    p.add_argument("image")
    p.add_argument("command", nargs=argparse.REMAINDER)


def register(sub) -> None:
    """Add ``run`` and ``step`` to the ``edu`` parser."""
    p = sub.add_parser("run", help="run a command in a new container", add_help=False)
    p.add_argument("--help", action="help")
    add_run_flags(p)
    p.add_argument("--trace", action="store_true", help="print the step timeline")
    p.add_argument("-d", "--detach", action="store_true", help="run in the background")
    p.add_argument("-t", "--tty", action="store_true", help="allocate a terminal")
    p.add_argument("-i", "--interactive", action="store_true", help="keep stdin open")
    p.add_argument("--restart", default="no", help="no, on-failure[:N] or always")
    p.set_defaults(func=run_cmd)

    p = sub.add_parser("prune", help="remove exited containers and leftovers of killed runs")
    p.set_defaults(func=prune_cmd)
    container = sub.add_parser("container", help="manage containers (prune)")
    csub = container.add_subparsers(dest="container_command", metavar="COMMAND", required=True)
    p = csub.add_parser("prune", help="remove stopped containers")
    p.add_argument("-f", "--force", action="store_true", help="do not ask (edu never asks)")
    p.add_argument("--filter", action="append", default=[], metavar="label=KEY[=VALUE]")
    p.set_defaults(func=prune_cmd)

    p = sub.add_parser("step", help="build a container one step at a time", add_help=False)
    p.add_argument("--help", action="help")
    p.add_argument("-y", "--yes", action="store_true", help="do not wait for Enter")
    add_run_flags(p)
    p.set_defaults(func=step_cmd)
