"""``edu ps``, ``logs``, ``stop``, ``kill``, ``rm``, ``attach``, ``pause`` and ``unpause``.

They read and change container records directly (``edu_runtime.life.states``); only
``attach`` needs the supervisor, which holds the container's terminal.
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


def _alive(rec: dict) -> bool:
    from edu_runtime.steps import pid_alive

    return bool(rec.get("pid")) and pid_alive(rec["pid"])


def _wait_exited(ref: str, timeout: float) -> bool:
    from edu_runtime.life import states

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            rec = states.find(ref)
        except states.NoSuchContainer:
            return True  # removed (--rm) after it exited
        if rec.get("status") == states.EXITED:
            return True
        time.sleep(0.02)
    return False


def ps_cmd(args) -> int:
    """``edu ps [-a] [-q]``."""
    from edu_runtime.container import cleanup_stale
    from edu_runtime.life import states

    cleanup_stale()
    recs = [r for r in states.records() if args.all or r.get("status") in
            (states.RUNNING, states.PAUSED)]
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
    from edu_runtime.life import states

    rec = _find(args.container)
    path = states.base() / rec["id"] / "container.log"
    offset = 0
    lines = path.read_text().splitlines() if path.exists() else []
    if args.tail is not None and args.tail != "all":
        lines = lines[-int(args.tail):] if int(args.tail) else []
    _print_log_lines(lines)
    offset = path.stat().st_size if path.exists() else 0
    while args.follow:
        time.sleep(0.1)
        if path.exists() and path.stat().st_size > offset:
            with open(path) as f:
                f.seek(offset)
                chunk = f.read()
            offset += len(chunk.encode())
            _print_log_lines(chunk.splitlines())
            continue
        try:
            current = states.find(rec["id"])
        except states.NoSuchContainer:
            break
        if current.get("status") == states.EXITED:
            break
    return 0


def _print_log_lines(lines: list[str]) -> None:
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        out = sys.stderr if entry.get("stream") == "stderr" else sys.stdout
        out.write(entry["log"])
        out.flush()


def stop_cmd(args) -> int:
    """``edu stop [-t N]``: SIGTERM, then SIGKILL after N seconds (Docker's default 10)."""
    from edu_runtime.life import states

    code = 0
    for ref in args.containers:
        rec = _find(ref)
        # First, so --restart does not bring it back: also when it is between two runs.
        rec = states.update(rec["id"], stopping=True)
        if rec.get("status") == states.EXITED or not _alive(rec):
            print(rec["name"])
            continue
        if rec.get("status") == states.PAUSED:
            _freeze(rec, False)
        stopped = False
        for _ in range(3):  # a restart already under way when we said stop gets stopped too
            _signal(rec, signal.SIGTERM)
            if not _wait_exited(rec["id"], args.time):
                _signal(rec, signal.SIGKILL)
                if not _wait_exited(rec["id"], 10):
                    break
            time.sleep(0.3)  # longer than the supervisor's first restart delay
            try:
                rec = states.find(rec["id"])
            except states.NoSuchContainer:
                stopped = True
                break
            if rec.get("status") == states.EXITED:
                stopped = True
                break
        if not stopped:
            print(f"Error: {rec['name']} did not stop", file=sys.stderr)
            code = 1
            continue
        print(rec["name"])
    return code


def kill_cmd(args) -> int:
    """``edu kill [-s SIGNAL]``."""
    from edu_runtime.life import states

    sig = _parse_signal(args.signal)
    for ref in args.containers:
        rec = _find(ref)
        if rec.get("status") not in (states.RUNNING, states.PAUSED) or not _alive(rec):
            raise UserError(f"Error response: cannot kill container {rec['name']}: it is not "
                            "running", 1)
        if sig in (signal.SIGKILL, signal.SIGTERM):
            states.update(rec["id"], stopping=True)
        _signal(rec, sig)
        print(rec["name"])
    return 0


def rm_cmd(args) -> int:
    """``edu rm [-f]``: remove exited containers (running ones only with -f)."""
    from edu_runtime.container import remove_dir
    from edu_runtime.images.store import Store
    from edu_runtime.life import states

    code = 0
    for ref in args.containers:
        try:
            rec = _find(ref)
        except UserError as exc:
            print(exc, file=sys.stderr)
            code = 1
            continue
        if rec.get("status") != states.EXITED and _alive(rec):
            if not args.force:
                print(f"Error: you cannot remove a running container {rec['id'][:12]}. Stop "
                      "the container before attempting removal or force remove (-f)",
                      file=sys.stderr)
                code = 1
                continue
            states.update(rec["id"], stopping=True)
            if rec.get("status") == states.PAUSED:
                _freeze(rec, False)
            _signal(rec, signal.SIGKILL)
            _wait_exited(rec["id"], 10)
        if args.volumes:
            from edu_runtime import volumes

            volumes.remove_anonymous_of(rec)
        remove_dir(states.base() / rec["id"])
        Store().unpin(rec["id"])
        print(rec["name"])
    return code


def pause_cmd(args, freeze: bool = True) -> int:
    """``edu pause``: freeze every process of the container (the cgroup freezer)."""
    from edu_runtime.life import states

    for ref in args.containers:
        rec = _find(ref)
        try:
            states.check(rec, states.PAUSED if freeze else states.RUNNING)
            if not freeze and rec.get("status") != states.PAUSED:
                raise states.InvalidTransition(f"container {rec['name']} is not paused")
        except states.InvalidTransition as exc:
            raise UserError(f"Error: {exc}", 1) from None
        _freeze(rec, freeze)
        states.update(rec["id"], status=states.PAUSED if freeze else states.RUNNING)
        print(rec["name"])
    return 0


def unpause_cmd(args) -> int:
    """``edu unpause``."""
    return pause_cmd(args, freeze=False)


def attach_cmd(args) -> int:
    """``edu attach``: back to a container's terminal (Ctrl-P Ctrl-Q leaves again)."""
    from edu_runtime.life import client, states

    from . import attach

    rec = _find(args.container)
    if rec.get("status") != states.RUNNING:
        raise UserError(f"Error: you cannot attach to a container that is "
                        f"{rec.get('status')}", 1)
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

    from .run import _env

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


def _signal(rec: dict, sig: int) -> None:
    import os

    try:
        os.kill(rec["pid"], sig)
    except ProcessLookupError:
        pass


def _freeze(rec: dict, freeze: bool) -> None:
    from edu_runtime import cgroups

    try:
        cg = cgroups.driver().open(rec["id"])
        cg.freeze() if freeze else cg.thaw()
    except cgroups.CgroupError as exc:
        raise UserError(f"Error: cannot {'pause' if freeze else 'unpause'} {rec['name']}: "
                        f"{exc}", 1) from None


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

    p = sub.add_parser("stop", help="stop containers (SIGTERM, then SIGKILL)")
    p.add_argument("-t", "--time", type=float, default=10)
    p.add_argument("containers", nargs="+")
    p.set_defaults(func=stop_cmd)

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
