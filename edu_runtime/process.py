"""The container's process: user, environment, working directory, and execve.

Everything before this step built a room; this step puts a program in it. The user name is
looked up in the *image's* /etc/passwd (the host's users mean nothing inside), the
environment is the image's Env plus -e, and the command is found on the container's PATH.
``execve`` replaces the Python child with the program, keeping its pid (1), namespaces,
cgroup, capabilities and seccomp filter: that is what makes it "in a container".

Introduced in notebooks/07-run-it.
"""

from __future__ import annotations

import errno
import fcntl
import os
import signal
import struct
import termios
from pathlib import Path
from typing import Any

from . import kernel
from .namespaces import die_with_host
from .steps import CHILD, Step, now, send

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

#: Docker's exit codes when the command cannot run.
EXIT_CANNOT_EXECUTE, EXIT_NOT_FOUND = 126, 127


def _table(path: str) -> list[list[str]]:
    try:
        text = Path(path).read_text()
    except OSError:
        return []
    return [line.split(":") for line in text.splitlines() if line and not line.startswith("#")]


def resolve_user(spec: str, passwd: str = "/etc/passwd", group: str = "/etc/group"
                 ) -> tuple[int, int, list[int], str]:
    """``user``, ``uid``, ``user:group`` or ``uid:gid`` -> (uid, gid, groups, home), read from
    the container's own files, as Docker does."""
    name, _, grp = (spec or "0").partition(":")
    users = _table(passwd)
    entry = next((u for u in users if len(u) >= 7 and (u[0] == name or u[2] == name)), None)
    if entry:
        uid, gid, home, uname = int(entry[2]), int(entry[3]), entry[5], entry[0]
    elif name.isdigit():
        uid, gid, home, uname = int(name), 0, "/", None
    else:
        raise LookupError(f"unable to find user {name}: no matching entries in passwd file")
    groups_table = _table(group)
    if grp:
        g = next((g for g in groups_table if len(g) >= 3 and grp in (g[0], g[2])), None)
        if g:
            gid = int(g[2])
        elif grp.isdigit():
            gid = int(grp)
        else:
            raise LookupError(f"unable to find group {grp}: no matching entries in group file")
    # The primary group is a supplementary group too, as Docker 20.10.18 and later make it
    # (CVE-2022-36109: otherwise a negative group permission could be escaped).
    extra = sorted({gid} | {int(g[2]) for g in groups_table
                            if len(g) >= 4 and uname and uname in g[3].split(",")})
    return uid, gid, extra, home or "/"


def set_groups(groups: list[int], gid: int) -> None:
    """setgroups(2); in a user namespace that refuses it (rootless), being left with the
    groups we have is fine when the list is only the primary group."""
    try:
        os.setgroups(groups)
    except PermissionError:
        if groups != [gid]:
            raise


def build_env(image_env: list[str], extra: dict[str, str], hostname: str, home: str
              ) -> dict[str, str]:
    """The environment Docker gives: PATH, HOSTNAME, the image's Env, -e, then HOME."""
    env: dict[str, str] = {"PATH": DEFAULT_PATH, "HOSTNAME": hostname}
    for item in image_env:
        k, _, v = item.partition("=")
        env[k] = v
    env.update(extra)
    env.setdefault("HOME", home)
    return env


def reset_signals() -> None:
    """Every signal back to its default and none blocked, as a new program expects.

    An ignored signal stays ignored across execve, and so does the signal mask: Python
    ignores SIGPIPE and SIGXFSZ, and whoever started us (a CI runner, a terminal, a
    supervisor) may ignore or block others. runc does the same before exec.
    """
    for sig in range(1, signal.NSIG):
        if sig in (signal.SIGKILL, signal.SIGSTOP):
            continue
        try:
            signal.signal(sig, signal.SIG_DFL)
        except (OSError, ValueError):  # 32 and 33: glibc keeps them, the kernel does not
            kernel.sigaction_default(sig)
    signal.pthread_sigmask(signal.SIG_SETMASK, [])


def find_executable(name: str, path: str) -> str | None:
    """Look ``name`` up on ``path`` the way execvp does; a name with a '/' is used as is."""
    if "/" in name:
        return name if os.path.exists(name) else None
    for d in path.split(":"):
        candidate = os.path.join(d or ".", name)
        if os.path.isfile(candidate):
            return candidate
    return None


class Exec(Step):
    """Switch to the container's user, set env and cwd, and execve the command."""

    name = "exec"
    side = CHILD
    lesson = "notebooks/07-run-it"
    explain = (
        "Finally the child becomes the program: it switches to the image's user (looked up "
        "in the image's /etc/passwd), changes to the working directory, and calls execve() "
        "with the image's Entrypoint and Cmd (or your command) and the image's environment. "
        "The program keeps pid 1, the namespaces, the cgroup, the capabilities and the "
        "seccomp filter. Undo: stopping the container kills it (SIGTERM, then SIGKILL).")

    def apply(self, ctx) -> None:
        """Never returns: execve, or report the failure to the host and exit 126/127."""
        die_with_host(ctx)  # from here on (before a setuid, which would clear it)
        cfg = ctx.config
        try:
            uid, gid, groups, home = resolve_user(cfg.user)
        except LookupError as exc:
            self._fail(ctx, str(exc), EXIT_CANNOT_EXECUTE)
        env = build_env(cfg.image_env, cfg.env, cfg.hostname, home)
        if cfg.tty:
            console(ctx, uid)
            env.setdefault("TERM", "xterm")
        workdir = cfg.workdir or "/"
        try:
            os.makedirs(workdir, exist_ok=True)  # Docker creates a missing WORKDIR
            os.chdir(workdir)
        except OSError as exc:
            self._fail(ctx, f"cannot change to working directory {workdir}: {exc.strerror}",
                       EXIT_CANNOT_EXECUTE)
        set_groups(groups, gid)
        if gid or uid:
            os.setgid(gid)
            os.setuid(uid)  # from root to a user: the kernel clears all capabilities
        if cfg.no_new_privs:
            kernel.set_no_new_privs()
        argv = ctx.argv
        path = find_executable(argv[0], env.get("PATH", DEFAULT_PATH))
        if path is None:
            self._fail(ctx, f"executable file not found: {argv[0]} in image {cfg.image_name}",
                       EXIT_NOT_FOUND)
        send(ctx.sock, exec=path, start=now())
        _close_on_exec_from(3)
        try:
            os.execve(path, argv, env)
        except OSError as exc:
            code = EXIT_NOT_FOUND if exc.errno == errno.ENOENT else EXIT_CANNOT_EXECUTE
            self._fail(ctx, f"cannot execute {path}: {exc.strerror}", code)

    @staticmethod
    def _fail(ctx, message: str, code: int) -> None:
        send(ctx.sock, error=message, step="exec", exit_code=code)
        os._exit(code)

    def observe(self, ctx) -> dict[str, Any]:
        """The program now running as the container's PID 1."""
        if not ctx.pid:
            return {}
        cmdline = (kernel.read(f"/proc/{ctx.pid}/cmdline", "") or "").split("\0")
        return {"comm": kernel.read(f"/proc/{ctx.pid}/comm"),
                "cmdline": [c for c in cmdline if c]}


def _close_on_exec_from(first: int) -> None:
    """Mark every descriptor from ``first`` up close-on-exec, as runc does before it execs:
    the program gets stdin, stdout and stderr, and nothing its parent happened to hold (a
    supervisor's netlink socket for nftables, another client's terminal waiting its turn).
    The step socket stays open until the execve succeeds, which is how the host knows."""
    try:
        fds = [int(n) for n in os.listdir("/proc/self/fd")]
    except OSError:  # no /proc in here: every number a process may have
        fds = list(range(first, min(os.sysconf("SC_OPEN_MAX"), 1 << 16)))
    for fd in fds:
        if fd >= first:
            try:
                os.set_inheritable(fd, False)
            except OSError:
                pass  # (listdir's own descriptor, closed by now)


def console(ctx, uid: int = 0) -> None:
    """-t: the container's terminal, made inside it as runc makes its console. After
    pivot_root, /dev/ptmx is the ptmx of the container's private devpts instance, so the new
    pty is /dev/pts/0 *of the container*, and `tty` inside names it (a pty opened on the
    host would be /dev/pts/N of the host's instance, which the container cannot see). The
    master end goes to the host over the step socket (the supervisor relays it to
    `edu run -it` and `edu attach`); the slave becomes stdin, stdout and stderr, owned by the
    container's user, and the controlling terminal of a new session: job control, Ctrl-C.
    (Its modules are imported with this one, on the host: after pivot_root the child can
    import nothing more.)"""
    master, slave = os.openpty()
    if ctx.config.tty_size:
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", *ctx.config.tty_size, 0, 0))
    try:
        os.fchown(slave, uid, -1)
    except OSError:  # no CAP_CHOWN (--cap-drop ALL): root's terminal, still usable
        pass
    send(ctx.sock, fds=[master], console=True)
    os.close(master)
    os.setsid()
    fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
    for fd in (0, 1, 2):
        os.dup2(slave, fd)
    if slave > 2:
        os.close(slave)


#: Docker's --init: a tiny init (tini) as PID 1 that forwards signals and reaps zombies.
INIT_BINARY = "/usr/bin/tini-static"
INIT_PATH = "/sbin/docker-init"


class Init(Step):
    """--init: bind-mount a static tini into the container to run as PID 1."""

    name = "init"
    side = CHILD
    lesson = "notebooks/07-run-it"
    explain = (
        "PID 1 is special: the kernel delivers it no signal it has not asked for, so a shell "
        "as PID 1 ignores `edu stop`'s SIGTERM and must be SIGKILLed after the timeout, and "
        "orphans are re-parented to it, so it must reap them. With --init a tiny init (tini) "
        "is bind-mounted in as /sbin/docker-init and runs your command as its child: it "
        "forwards signals and reaps zombies. Undo: the mount dies with the namespace.")

    def enabled(self, ctx) -> bool:
        """Only with --init."""
        return ctx.config.init

    def apply(self, ctx) -> None:
        """Bind the host's static tini over an empty file in the container's /sbin."""
        from .safepath import ensure_in_root

        # Resolve the target inside the image (openat2 RESOLVE_IN_ROOT): the host's root is
        # still ours here, and an image's /sbin -> / link must not lead to the host's files.
        root = os.open(ctx.paths.merged, os.O_PATH | os.O_DIRECTORY)
        try:
            target = ensure_in_root(root, INIT_PATH, directory=False)
        finally:
            os.close(root)
        try:
            kernel.mount(INIT_BINARY, f"/proc/self/fd/{target}", None, kernel.MS_BIND)
        finally:
            os.close(target)
        ctx.argv = [INIT_PATH, "--", *ctx.argv]

    def observe(self, ctx) -> dict[str, Any]:
        """The command PID 1 will run."""
        return {"argv": ctx.argv}
