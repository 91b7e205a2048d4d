"""Entering a running container: ``docker exec``.

A running container is not a place you can step into. It is a handful of kernel objects that
its PID 1 happens to hold: a cgroup, up to seven namespaces, a root directory, a capability
set and a seccomp filter. ``docker exec`` makes a *new* process hold the same ones, and that
is all it does. runc's ``nsexec`` does it in C; here it is in the same order:

1. A helper is forked. It writes its own pid into the container's cgroup in every hierarchy,
   so the container's limits count what exec starts, and the teardown's cgroup kill reaches
   it. This must come before any setns: inside the mount namespace the host's cgroup
   filesystem is out of sight, and inside the cgroup namespace the kernel refuses a move
   from a cgroup outside that namespace (ours) to one inside it.
2. It joins each namespace with setns(2), on fds of /proc/PID/ns/* opened *before* joining
   anything (in the container's mount namespace, /proc is the container's own). The order
   is runc's: user, ipc, uts, net, pid, mnt, cgroup. The user namespace comes first because
   joining it is what grants the capabilities the other joins need in a rootless container;
   mnt comes late because it takes the host's filesystem away, and it also moves the root
   and working directory to the container's root (checked: that is the overlay PID 1
   pivoted into). A namespace PID 1 shares with us (``--pid host``) is not joined.
3. Joining a pid namespace moves only the caller's future *children*: a process never changes
   its own pid. So the helper forks once more; the grandchild is inside, numbered like the
   container's processes. We are a subreaper for that moment: the helper exits, its child
   becomes ours, and nothing is left between us and the command to linger or leak.
4. The grandchild takes on the container's security with the very step code the container
   ran (``seccomp.Seccomp``, ``capabilities.Capabilities``), in the same order: the filter
   is loaded while CAP_SYS_ADMIN is still held, then capabilities are dropped; then the
   user (from the container's own /etc/passwd), environment, working directory and
   no_new_privs; then execve.

What exec does not get: our file descriptors. Everything but stdin, stdout and stderr is
closed before execve, because a host directory fd that leaks into a container is a way out
of it (runc's CVE-2024-21626).

Introduced in notebooks/07-run-it.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import signal
import socket
import termios
import threading
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from .. import capabilities, kernel, namespaces, process, seccomp
from ..steps import StepError
from . import oom

#: runc's order for joining namespaces (libcontainer/configs NamespaceTypes): user first.
JOIN_ORDER = ["user", "ipc", "uts", "net", "pid", "mnt", "cgroup"]

#: How long the command may take to get from fork to execve before we give up on it.
START_TIMEOUT = 30.0


class ExecError(StepError):
    """``edu exec`` could not start the command; ``exit_code`` is Docker's (125, 126, 127)."""

    def __init__(self, message: str, exit_code: int = 125):
        super().__init__("exec", message, exit_code)


@dataclass
class _Entry:
    """Everything the forked processes need, worked out before forking."""

    pid: int
    argv: list[str]
    name: str
    ns_fds: list[tuple[str, int]] = field(default_factory=list)
    cgroup_procs: list[tuple[str, bool]] = field(default_factory=list)  # (file, required)
    caps: set[str] = field(default_factory=set)
    bpf: bytes | None = None
    no_new_privs: bool = False
    user: str = ""
    env: dict[str, str] = field(default_factory=dict)
    image_env: list[str] = field(default_factory=list)
    hostname: str = ""
    workdir: str = "/"
    tty: bool = False
    session: bool = False  # lead a session (and process group) of its own
    oom_score_adj: int | None = None  # PID 1's (the exec'er's own must not pass on)


def running_pid(record: dict[str, Any], statuses: tuple[str, ...] = ("running",)) -> int:
    """The host pid of the container's PID 1 while its status is one of ``statuses``; else 0.

    A pid alone could have been reused by another process since the record was written, so
    the process must also still be in the container's cgroup, when it has one.
    """
    pid = int(record.get("pid") or 0)
    if record.get("status") not in statuses or not pid:
        return 0
    state = (kernel.read(f"/proc/{pid}/stat", "") or "").rpartition(")")[2].split()[:1]
    if state in ([], ["Z"]):
        return 0
    if record.get("cgroup"):
        lines = (kernel.read(f"/proc/{pid}/cgroup", "") or "").splitlines()
        if not any(line.endswith("/" + record["id"]) for line in lines):
            return 0
    return pid


def _cgroup_targets(record: dict[str, Any], pid: int) -> list[tuple[str, bool]]:
    """The cgroup.procs files to write: the container's own cgroup (required), then PID 1's
    place in every other mounted hierarchy (accounting ones such as cpuacct or blkio, which
    the runtime did not make: best effort, as ``edu exec`` may run from another session)."""
    targets = [(os.path.join(d, "cgroup.procs"), True)
               for _, d in sorted((record.get("cgroup") or {}).items())]
    covered = {t for t, _ in targets}
    mounts = [m for m in kernel.mountinfo() if m["fstype"] in ("cgroup", "cgroup2")
              and m["root"] == "/"]
    for line in (kernel.read(f"/proc/{pid}/cgroup", "") or "").splitlines():
        _, controllers, path = line.split(":", 2)
        want = set(controllers.split(",")) - {""}
        for m in mounts:
            opts = set(m["super_options"].split(",")) - {"rw", "ro"}
            if (m["fstype"] == "cgroup2") == (not want) and (not want or want <= opts):
                target = os.path.join(m["mount_point"] + path, "cgroup.procs")
                if target not in covered:
                    covered.add(target)
                    targets.append((target, False))
                break
    return targets


def _prepare(record: dict[str, Any], argv: list[str], user: str | None,
             env: dict[str, str] | None, workdir: str | None, tty: bool) -> _Entry:
    """Check the container, open its namespaces and compile its filter, all before forking."""
    if not argv:
        raise ExecError("no command given: say what to run, as in edu exec NAME sh", 125)
    if workdir and not workdir.startswith("/"):
        raise ExecError(f"the working directory {workdir!r} is invalid: it must be an "
                        "absolute path, such as /tmp", 126)  # docker exec's code (run's is 125)
    name = record.get("name") or record.get("id", "?")[:12]
    pid = running_pid(record)
    # Docker's daemon refuses these two, and docker exec exits 1 (not 125) for them.
    if record.get("status") == "paused":
        raise ExecError(f"container {name} is paused: edu unpause it before edu exec", 1)
    if not pid:
        raise ExecError(f"container {name} is not running (status: {record.get('status')}): "
                        "edu exec needs a running container; start one with edu run", 1)
    proc, sec = record.get("process") or {}, record.get("security") or {}
    caps = set(sec.get("caps") or []) & set(capabilities.host_bounding())
    entry = _Entry(pid=pid, argv=list(argv), name=name, caps=caps,
                   no_new_privs=bool(sec.get("no_new_privs")),
                   user=user if user is not None else proc.get("user") or "",
                   env={**(proc.get("env") or {}), **(env or {})},
                   image_env=list(proc.get("image_env") or []),
                   hostname=proc.get("hostname") or "",
                   workdir=workdir or proc.get("workdir") or "/", tty=tty)
    try:  # Docker's: an exec'd process has the container's oom_score_adj
        entry.oom_score_adj = oom.score_adj(pid)
    except (OSError, ValueError):
        pass  # it is exiting: found below
    if tty:
        entry.env.setdefault("TERM", "xterm")  # what docker exec -t sets
    # Compiled (or read from the cache) here: the child only loads it, as in the container.
    entry.bpf = seccomp.default_filter(frozenset(caps)) if sec.get("seccomp") else None
    entry.cgroup_procs = _cgroup_targets(record, pid)
    mine = namespaces.inodes("self")
    try:
        for ns in JOIN_ORDER:
            path = f"/proc/{pid}/ns/{ns}"
            if os.readlink(path) != mine[ns]:
                entry.ns_fds.append((ns, os.open(path, os.O_RDONLY | os.O_CLOEXEC)))
    except OSError as exc:
        _close(entry)
        raise ExecError(f"cannot open the namespaces of container {name} ({exc.filename}: "
                        f"{exc.strerror}): edu exec needs the rights of the user who "
                        "started it", 125) from None
    if running_pid(record) != pid:  # it exited while we opened its namespaces
        _close(entry)
        raise ExecError(f"container {name} stopped while edu exec was entering it", 125)
    return entry


def _close(entry: _Entry) -> None:
    for _, fd in entry.ns_fds:
        os.close(fd)
    entry.ns_fds = []


def exec_in(record: dict[str, Any], argv: list[str], *, user: str | None = None,
            env: dict[str, str] | None = None, workdir: str | None = None, tty: bool = False,
            stdin: int | None = None, stdout: int = 1, stderr: int = 2) -> int:
    """``docker exec``: run ``argv`` inside the running container ``record``; its exit code.

    ``user``, ``env`` and ``workdir`` are ``-u``, ``-e`` and ``-w`` (defaults: the
    container's). ``stdin`` None is /dev/null, as without ``-i``. With ``tty`` the command
    gets a new terminal from the container's own /dev/pts (``-t``), and its bytes are copied
    to ``stdout`` (and from ``stdin``) until it exits. Raises ``ExecError`` (with Docker's
    exit code: 125, 126 cannot execute, 127 not found) when the command cannot be started.
    """
    entry = _prepare(record, argv, user, env, workdir, tty)
    null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC) if stdin is None else None
    stdio = (null if stdin is None else stdin, stdout, stderr)
    host_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    handover = _Handover()
    helper = pid = master = 0
    error: dict[str, Any] | None = None
    try:
        handover.begin()
        try:
            helper = os.fork()
            if helper == 0:
                host_end.close()
                _helper_main(entry, child_end, stdio)  # never returns
        finally:
            child_end.close()
            _close(entry)
            if null is not None:
                os.close(null)
        # The helper says "handoff"; the command maybe "pty", then "error" or nothing: its
        # end of the socket closes on execve (close-on-exec). They run concurrently, so the
        # messages come in any order.
        while (msg := _recv(host_end, START_TIMEOUT))[0] is not None:
            body, fds = msg
            if "handoff" in body:
                pid = body["handoff"]
                kernel.wait_status(helper, timeout=5)  # it exits right after saying so
                helper = 0
                handover.end()  # its child is ours now
            elif "pty" in body:
                master = fds[0]
            elif "error" in body:
                error = body
        if error is not None or not pid:
            if pid:
                kernel.wait_status(pid, timeout=5)  # it exits right after reporting
                pid = 0
            error = error or {"error": "the exec helper died before it could enter the "
                                       "container"}
            raise ExecError(error["error"], error.get("exit_code", 125))
        if master:
            _relay(master, stdin, stdout)
        status = kernel.wait_status(pid)
        pid = 0
        return 128 - status if status < 0 else status
    finally:
        if helper:
            kernel.wait_status(helper, timeout=5)
        handover.end()
        host_end.close()
        if master:
            os.close(master)
        if pid:  # interrupted (Ctrl-C, a timeout): the command must not outlive us unreaped
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            kernel.wait_status(pid)


def spawn(record: dict[str, Any], argv: list[str], output: int) -> tuple[int, socket.socket]:
    """Start ``argv`` in the running container ``record`` and return at once, for a caller
    that must never wait (the supervisor's health checks): (the helper's pid, our end of
    the socket that brings ``handoff`` with the command's pid, maybe ``error``, then EOF
    at execve). Its stdout and stderr are ``output``, its stdin /dev/null; it leads a
    process group of its own, so killing the group ends all it started. The caller must
    already be a subreaper, and reaps the helper and the command. Raises ExecError."""
    entry = _prepare(record, argv, None, None, None, False)
    entry.session = True
    null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    host_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        helper = os.fork()
        if helper == 0:
            host_end.close()
            _helper_main(entry, child_end, (null, output, output))  # never returns
    except BaseException:
        host_end.close()
        raise
    finally:
        child_end.close()
        _close(entry)
        os.close(null)
    return helper, host_end


class _Handover:
    """We are a subreaper from the fork until the helper has exited, and only then (as in
    container.py): any longer, and someone else's orphan would become our zombie. The lock
    keeps two threads' exec_in from ending each other's window early."""

    _lock = threading.Lock()

    def __init__(self) -> None:
        self.active = self.was = False

    def begin(self) -> None:
        """Become a subreaper (remembering whether we were one)."""
        self._lock.acquire()
        self.active, self.was = True, kernel.get_child_subreaper()
        kernel.prctl(kernel.PR_SET_CHILD_SUBREAPER, 1)

    def end(self) -> None:
        """Stop being one, unless we were before; idempotent."""
        if self.active:
            self.active = False
            if not self.was:
                kernel.prctl(kernel.PR_SET_CHILD_SUBREAPER, 0)
            self._lock.release()


def _recv(sock: socket.socket, timeout: float) -> tuple[dict[str, Any] | None, list[int]]:
    sock.settimeout(timeout)
    try:
        data, fds, _, _ = socket.recv_fds(sock, 1 << 16, 1)
    except TimeoutError:
        raise ExecError(f"the command did not start within {timeout:.0f} s; it was "
                        "killed", 125) from None
    return (json.loads(data) if data else None), fds


def _send(sock: socket.socket, fds: list[int] | None = None, **msg: Any) -> None:
    socket.send_fds(sock, [json.dumps(msg).encode()], fds or [])


# ---- the forked side: both functions end in os._exit or execve, never return --------------

def _helper_main(entry: _Entry, sock: socket.socket, stdio: tuple[int, int, int]) -> None:
    """The helper: join the cgroup and the namespaces, fork the command's process, exit."""
    code = 125
    try:
        process.reset_signals()  # nothing ignored or blocked survives into the container
        me = str(os.getpid())
        for procs, required in entry.cgroup_procs:
            try:
                with open(procs, "w") as f:
                    f.write(me)
            except OSError as exc:
                if required:
                    raise OSError(exc.errno, f"could not join the container's cgroup "
                                  f"({procs}: {exc.strerror})") from None
        if entry.oom_score_adj is not None:
            oom.set_score_adj("self", entry.oom_score_adj)
        for ns, fd in entry.ns_fds:
            try:
                kernel.setns(fd, kernel.NAMESPACES[ns])
            except OSError as exc:
                raise OSError(exc.errno, f"could not join the container's {ns} namespace "
                              f"(setns: {exc.strerror})") from None
            os.close(fd)
        try:
            pid = os.fork()
        except OSError as exc:
            hint = (": the container's --pids-limit is reached"
                    if exc.errno == errno.EAGAIN else "")
            raise OSError(exc.errno, f"fork: {exc.strerror}{hint}") from None
        if pid == 0:
            _command_main(entry, sock, stdio)  # never returns
        _send(sock, handoff=pid)
        code = 0
    except OSError as exc:
        _report(sock, f"{exc.strerror or exc}", 125)
    except BaseException as exc:  # noqa: BLE001 - report anything, never return to the caller
        _report(sock, repr(exc), 125)
    finally:
        os._exit(code)


def _command_main(entry: _Entry, sock: socket.socket, stdio: tuple[int, int, int]) -> None:
    """Inside every namespace now: terminal, security, user, env, cwd, then execve."""
    code = 125
    try:
        if entry.tty:
            # openpty() opens /dev/ptmx, which is the container's now: the terminal belongs
            # to the container's devpts, as with docker exec -t. We keep the master end.
            master, slave = os.openpty()
            _send(sock, [master], pty=True)
            os.close(master)
            os.setsid()
            fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
            stdio = (slave, slave, slave)
        elif entry.session:  # its own group: a check killed at its timeout takes its children
            os.setsid()
        _install_stdio(stdio)
        keep = sock.fileno()
        os.closerange(3, keep)
        os.closerange(keep + 1, os.sysconf("SC_OPEN_MAX"))
        ctx = SimpleNamespace(caps=entry.caps, seccomp_bpf=entry.bpf, pid=0,
                              config=SimpleNamespace(no_new_privs=entry.no_new_privs))
        if entry.bpf is not None:
            seccomp.Seccomp().apply(ctx)  # while CAP_SYS_ADMIN is still held, as runc does
        capabilities.Capabilities().apply(ctx)
        code = process.EXIT_CANNOT_EXECUTE
        try:
            uid, gid, groups, home = process.resolve_user(entry.user)
        except LookupError as exc:
            raise _Fail(str(exc), process.EXIT_CANNOT_EXECUTE) from None
        env = process.build_env(entry.image_env, entry.env, entry.hostname, home)
        try:
            os.chdir(entry.workdir)
        except OSError as exc:
            raise _Fail(f"cannot change to working directory {entry.workdir}: "
                        f"{exc.strerror}", process.EXIT_CANNOT_EXECUTE) from None
        # Only when something changes: in a rootless container setgroups() is refused.
        process.set_groups(groups, gid)
        if (uid, gid) != (os.getuid(), os.getgid()):
            os.setgid(gid)
            os.setuid(uid)  # from root to a user: the kernel clears all capabilities
        if entry.no_new_privs:
            kernel.set_no_new_privs()
        path = process.find_executable(entry.argv[0], env.get("PATH", process.DEFAULT_PATH))
        if path is None:
            raise _Fail(f"executable file not found: {entry.argv[0]} in container "
                        f"{entry.name} (not in $PATH, or no such file)", process.EXIT_NOT_FOUND)
        try:
            os.execve(path, entry.argv, env)
        except OSError as exc:
            raise _Fail(f"cannot execute {path}: {exc.strerror}",
                        process.EXIT_NOT_FOUND if exc.errno == errno.ENOENT
                        else process.EXIT_CANNOT_EXECUTE) from None
    except _Fail as exc:
        code = exc.code
        _report(sock, exc.message, code)
    except OSError as exc:
        _report(sock, f"{exc.strerror or exc}", code)
    except BaseException as exc:  # noqa: BLE001 - report anything, never return to the caller
        _report(sock, repr(exc), code)
    finally:
        os._exit(code)


class _Fail(Exception):
    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.message, self.code = message, code


def _report(sock: socket.socket, message: str, code: int) -> None:
    try:
        _send(sock, error=message, exit_code=code)
    except OSError:
        pass


def _install_stdio(stdio: tuple[int, int, int]) -> None:
    # Duplicate first: the caller may pass 1 as stderr and 2 as stdout.
    copies = [os.dup(fd) for fd in stdio]
    for target, fd in enumerate(copies):
        os.dup2(fd, target, inheritable=True)
    for fd in copies:
        os.close(fd)


# ---- -t: copy bytes between our side and the container's terminal --------------------------

def _relay(master: int, stdin: int | None, stdout: int) -> None:
    """Copy the terminal's output to ``stdout`` (and ``stdin`` to it) until it closes; the
    pty gets the size of our terminal first."""
    from .pty import relay

    if stdin is not None and os.isatty(stdin):
        try:
            size = fcntl.ioctl(stdin, termios.TIOCGWINSZ, b"\0" * 8)
            fcntl.ioctl(master, termios.TIOCSWINSZ, size)
        except OSError:
            pass
    relay(master, stdin, stdout)


def _main(request: str) -> int:
    """``python -m edu_runtime.life.enter JSON``: ``exec_in`` for a threaded caller (a
    notebook), which must not fork into a container itself. JSON holds the record's id and
    exec_in's arguments; the command's streams are ours; we exit with its code."""
    import sys

    from .states import find

    req = json.loads(request)
    try:
        return exec_in(find(req["id"]), req["argv"], user=req.get("user"), env=req.get("env"),
                       workdir=req.get("workdir"))
    except ExecError as exc:
        print(f"edu: {exc.message}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    import sys

    sys.exit(_main(sys.argv[1]))
