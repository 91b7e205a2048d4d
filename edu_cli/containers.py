"""``edu ps``, ``create``, ``start``, ``restart``, ``stop``, ``kill``, ``rm``, ``pause``,
``unpause``, ``logs``, ``inspect``, ``attach``, ``exec`` and ``cp``.

Parsing and printing only: the verbs are ``edu_runtime.life.control``'s, which a notebook
calls too. Only ``attach`` talks to the supervisor itself, which holds the container's
terminal. As Docker's CLI does, a verb given several containers does each it can, prints
the name it was given for each one done and an error for each other, and exits 1 if any
failed.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time

from .errors import UserError


def _find(ref: str) -> dict:
    from edu_runtime.life import states

    try:
        return states.find(ref)
    except states.NoSuchContainer as exc:
        raise UserError(f"Error: {exc}", 1) from None


def _each(refs: list[str], verb, say=None) -> int:
    """``verb(ref)`` for each container; prints the ref (or ``say`` of what ``verb``
    answered), or the error's sentence."""
    from edu_runtime.life import control, states

    code = 0
    for ref in refs:
        try:
            answer = verb(ref)
        except (states.NoSuchContainer, states.InvalidTransition, control.ControlError) as exc:
            print(f"Error: {exc}", file=sys.stderr)
            code = exc.exit_code
            continue
        print(ref if say is None else say(answer), flush=True)
    return code


def ps_cmd(args) -> int:
    """``edu ps [-a] [-q]``."""
    from edu_runtime.life import control, states

    recs = control.ls(all=args.all)
    if args.quiet:
        print("\n".join(r["id"][:12] for r in recs))
        return 0
    rows = [["CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS", "NAMES"]]
    now = time.time()
    for r in recs:
        cmd = " ".join(r.get("command", []))
        cmd = f'"{cmd[:19] + "…" if len(cmd) > 20 else cmd}"'
        created = states._ago(now - r.get("created", now)) + " ago"
        rows.append([r["id"][:12], r.get("image", ""), cmd, created,
                     states.human_status(r, now), ", ".join(r.get("ports", [])),
                     r.get("name", "")])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("   ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return 0


def logs_cmd(args) -> int:
    """``edu logs [-f] [--tail N]``: what the container printed, from its log file."""
    from edu_runtime.life import control

    try:
        lines = control.logs(args.container, follow=args.follow, tail=args.tail)
    except (LookupError, control.ControlError) as exc:
        raise UserError(f"Error: {exc}", 1) from None
    for stream, text in lines:
        out = sys.stderr if stream == "stderr" else sys.stdout
        out.write(text)
        out.flush()
    return 0


def create_cmd(args) -> int:
    """``edu create``: a container made and left in state created (``edu start`` runs it).
    Docker's exits 1 where its daemon refuses a value (a name, a restart policy, an image
    name) and 125 where its flags do; ``docker run`` exits 125 for both. So does edu."""
    from edu_runtime.steps import StepError

    from .run import make_container, restart_policy

    c = make_container(args, refused=1)  # (its restart policy checked there too)
    policy = restart_policy(args.restart, refused=1)
    try:
        c.create(restart=policy)
    except StepError as exc:
        raise UserError(exc.message) from None  # 125, as docker create's errors
    print(c.id)
    return 0


def start_cmd(args) -> int:
    """``edu start``: created or stopped containers run again, detached, with their layer."""
    from edu_runtime.life import control

    from .run import supervisor_client

    supervisor_client()  # a supervisor started here serves thin `edu run` clients too
    return _each(args.containers, control.start)


def restart_cmd(args) -> int:
    """``edu restart [-t N]``: stop (SIGTERM, SIGKILL after N seconds), then start."""
    from edu_runtime.life import control

    from .run import supervisor_client

    supervisor_client()
    return _each(args.containers, lambda ref: control.restart(ref, args.time))


def stop_cmd(args) -> int:
    """``edu stop [-t N]``: SIGTERM, then SIGKILL after N seconds (Docker's default 10)."""
    from edu_runtime.life import control

    return _each(args.containers, lambda ref: control.stop(ref, args.time))


def wait_cmd(args) -> int:
    """``edu wait``: block until each container stops, then print its exit code."""
    from edu_runtime.life import control

    return _each(args.containers, lambda ref: control.wait(ref), say=str)


def kill_cmd(args) -> int:
    """``edu kill [-s SIGNAL]``."""
    from edu_runtime.life import control

    sig = _parse_signal(args.signal)
    return _each(args.containers, lambda ref: control.kill(ref, sig))


def rm_cmd(args) -> int:
    """``edu rm [-f] [-v]``: remove stopped containers (running ones only with -f)."""
    from edu_runtime.life import control

    return _each(args.containers, lambda ref: control.remove(ref, force=args.force,
                                                             volumes=args.volumes))


def pause_cmd(args) -> int:
    """``edu pause``: freeze every process of the container (the cgroup freezer)."""
    from edu_runtime.life import control

    return _each(args.containers, control.pause)


def unpause_cmd(args) -> int:
    """``edu unpause``."""
    from edu_runtime.life import control

    return _each(args.containers, control.unpause)


def inspect_cmd(args) -> int:
    """``edu inspect [--type container|image]``: as docker inspect, a container by that
    name or id first, else an image; JSON, and an error for each name that is neither."""
    from edu_runtime.images.store import Store, StoreError
    from edu_runtime.life import control, states

    from .images import image_json

    out, code, store = [], 0, None
    for ref in args.names:
        found = None
        if args.type != "image":
            try:
                found = control.inspect(ref)
            except states.NoSuchContainer:
                pass
        if found is None and args.type != "container":
            store = store or Store()
            try:
                found = image_json(store, store.get(ref))
            except StoreError:
                pass
        if found is None:
            print(f"Error: No such {args.type or 'object'}: {ref}", file=sys.stderr)
            code = 1
            continue
        out.append(found)
    print(json.dumps(out, indent=4))
    return code


def attach_cmd(args) -> int:
    """``edu attach``: back to a container's terminal (Ctrl-P Ctrl-Q leaves again)."""
    from edu_runtime.life import client, states

    from . import attach

    rec = _find(args.container)
    if rec.get("status") != states.RUNNING:
        raise UserError(f"Error: you cannot attach to a container that is "
                        f"{rec.get('status')}", 1)
    if rec.get("owner") != client.running_pid():  # a foreground run's shim, or a notebook
        raise UserError(f"Error: you cannot attach to {rec.get('name')}: it runs in the "
                        "foreground of the edu run or notebook that started it; attach works "
                        "for containers started with -d or -it", 1)
    try:
        conn = client.connect(start=False)
    except OSError:
        raise UserError("Error: no supervisor owns this container (was it started with "
                        "-d or -it?)", 1) from None
    conn.sendall((json.dumps({"op": "attach", "id": rec["id"]}) + "\n").encode())
    how = attach.relay(conn)
    conn.close()
    if how == "detached":
        print(f"\r\nedu: detached from {rec['name']}", file=sys.stderr)
        return 0
    return client.ask({"op": "wait", "id": rec["id"]}).get("exit_code") or 0


def exec_cmd(args) -> int:
    """``edu exec``: run a command in a running container, with the container's security."""
    from edu_runtime.life.enter import ExecError, exec_in

    from .attach import check_tty
    from .run import _env

    check_tty(args.interactive, args.tty)
    rec = _find(args.container)
    if not args.command:
        raise UserError("edu exec needs a command: edu exec CONTAINER COMMAND [ARG...]", 1)
    try:
        return exec_in(rec, args.command, user=args.user, env=_env(args),
                       workdir=args.workdir, tty=args.tty,
                       stdin=0 if args.interactive else None)
    except ExecError as exc:
        print(f"edu: {exc.message}", file=sys.stderr)
        return exc.exit_code


def cp_cmd(args) -> int:
    """``edu cp``: copy files between a container and the host, in either direction."""
    from edu_runtime.life.cp import CopyError, copy_from, copy_to, split_arg

    (src_c, src_p), (dst_c, dst_p) = split_arg(args.src), split_arg(args.dest)
    if bool(src_c) == bool(dst_c):
        raise UserError("edu cp copies between a container and the host: exactly one of "
                        "SRC and DEST must be CONTAINER:PATH", 1)
    try:
        if src_c:
            done = copy_from(_find(src_c), src_p, dst_p, follow_link=args.L)
        else:
            done = copy_to(_find(dst_c), src_p, dst_p, follow_link=args.L)
    except CopyError as exc:
        raise UserError(str(exc), 1) from None
    for item in done.skipped:
        print(f"edu: warning: skipped {item}", file=sys.stderr)
    print(f"Successfully copied {done.bytes} bytes to {args.dest}")
    return 0


def _parse_signal(text: str) -> int:
    name = text.upper()
    if name.isdigit():
        return int(name)
    name = name if name.startswith("SIG") else f"SIG{name}"
    try:
        return int(getattr(signal, name))
    except AttributeError:
        raise UserError(f"invalid signal: {text}", 1) from None


def register(sub) -> None:
    """Add the container lifecycle commands to the ``edu`` parser."""
    p = sub.add_parser("ps", help="list containers")
    p.add_argument("-a", "--all", action="store_true")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=ps_cmd)

    p = sub.add_parser("logs", help="what a container printed")
    p.add_argument("-f", "--follow", action="store_true")
    p.add_argument("--tail")
    p.add_argument("container")
    p.set_defaults(func=logs_cmd)

    from .run import add_run_flags

    p = sub.add_parser("create", help="make a container without starting it",
                       add_help=False)
    p.add_argument("--help", action="help")
    add_run_flags(p)
    p.add_argument("--restart", default="no", help="no, on-failure[:N] or always")
    p.set_defaults(func=create_cmd)

    p = sub.add_parser("start", help="start created or stopped containers (detached)")
    p.add_argument("containers", nargs="+")
    p.set_defaults(func=start_cmd)

    for name, fn, what in (("stop", stop_cmd, "stop containers (SIGTERM, then SIGKILL)"),
                           ("restart", restart_cmd, "stop containers, then start them")):
        p = sub.add_parser(name, help=what)
        p.add_argument("-t", "--time", type=float, default=10,
                       help="seconds between SIGTERM and SIGKILL (default 10)")
        p.add_argument("containers", nargs="+")
        p.set_defaults(func=fn)

    p = sub.add_parser("inspect", help="containers or images, as JSON")
    p.add_argument("--type", choices=("container", "image"),
                   help="only this kind (default: a container by that name, else an image)")
    p.add_argument("names", nargs="+", metavar="NAME")
    p.set_defaults(func=inspect_cmd)

    p = sub.add_parser("wait", help="wait until containers stop; print their exit codes")
    p.add_argument("containers", nargs="+")
    p.set_defaults(func=wait_cmd)

    p = sub.add_parser("kill", help="send a signal to containers")
    p.add_argument("-s", "--signal", default="KILL")
    p.add_argument("containers", nargs="+")
    p.set_defaults(func=kill_cmd)

    p = sub.add_parser("rm", help="remove containers")
    p.add_argument("-f", "--force", action="store_true")
    p.add_argument("-v", "--volumes", action="store_true", help="remove anonymous volumes too")
    p.add_argument("containers", nargs="+")
    p.set_defaults(func=rm_cmd)

    for name, fn in (("pause", pause_cmd), ("unpause", unpause_cmd)):
        p = sub.add_parser(name, help=f"{name} every process of containers")
        p.add_argument("containers", nargs="+")
        p.set_defaults(func=fn)

    p = sub.add_parser("exec", help="run a command in a running container")
    p.add_argument("-i", "--interactive", action="store_true")
    p.add_argument("-t", "--tty", action="store_true")
    p.add_argument("-u", "--user")
    p.add_argument("-e", "--env", action="append", metavar="KEY=VALUE")
    p.add_argument("--env-file", action="append")
    p.add_argument("-w", "--workdir")
    p.add_argument("container")
    p.add_argument("command", nargs=argparse.REMAINDER)
    p.set_defaults(func=exec_cmd)

    p = sub.add_parser("cp", help="copy files between a container and the host")
    p.add_argument("-L", action="store_true", help="follow a symlink in SRC")
    p.add_argument("src")
    p.add_argument("dest")
    p.set_defaults(func=cp_cmd)

    p = sub.add_parser("attach", help="attach to a running container's terminal")
    p.add_argument("container")
    p.set_defaults(func=attach_cmd)
