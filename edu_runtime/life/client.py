"""The CLI's side of the supervisor: find it (or start it), send one request, read answers.

Kept apart from ``supervisor`` so that a command talking to the supervisor imports only
this: a socket, JSON and the paths. ``edu run`` on a bridge network is such a command: the
warm supervisor does the work, and this process only waits (see notebooks/07-run-it).

The protocol is one JSON line per request on a unix stream socket, with file descriptors
passed alongside (SCM_RIGHTS) when a container should use the caller's terminal. Answers
are JSON lines too; ``attach`` then turns the connection into a raw byte stream.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
import zlib
from typing import Any

from .. import paths


def scope() -> str:
    """One supervisor per state directory: a test or a student with EDU_STATE_DIR set gets
    its own, and never talks to one that keeps its records somewhere else."""
    return f"{zlib.crc32(str(paths.state_dir().resolve()).encode()):08x}"


def socket_path() -> str:
    """Where the supervisor of this state directory listens."""
    return str(paths.run_dir() / f"supervisor-{scope()}.sock")


#: The program a new supervisor runs (``python -m PROGRAM --daemonize``): the runtime's
#: own, unless a face brings a front that also reads its own kind of request (the CLI's
#: reads thin clients' command lines: ``edu_cli.supervise``).
_program = "edu_runtime.life.supervisor"


def use_program(module: str) -> None:
    """Start supervisors as ``python -m MODULE``, a front that calls ``supervisor.main``."""
    global _program
    _program = module


def connect(start: bool = True) -> socket.socket:
    """A connection to the supervisor, starting one if none is running (unless not
    ``start``: then OSError)."""
    where = socket_path()
    for attempt in range(200):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            s.connect(where)
            return s
        except OSError:
            s.close()
            if not start:
                raise
        if attempt == 0:
            _spawn()
        time.sleep(0.025)
    raise OSError(f"the edu supervisor did not start; see {paths.run_dir() / 'supervisor.log'}")


def _spawn() -> None:
    """Start a supervisor, daemonized (double fork), so nobody must reap it but init."""
    import subprocess

    log = paths.ensure(paths.run_dir(), 0o700) / "supervisor.log"
    with open(log, "ab") as out:
        subprocess.run([sys.executable, "-m", _program, "--daemonize"],
                       stdin=subprocess.DEVNULL, stdout=out, stderr=out, check=True)


def sweep_gone() -> list[str]:
    """Remove the lock and socket of every supervisor that is gone (SIGKILLed, so it could
    not remove its own) from the run directory; the locks removed. Every container
    command's clean-up calls this. A lock nobody holds has no supervisor; a held one is
    left alone, and one a starting supervisor opened meanwhile is told apart by its inode
    (as ``supervisor.main`` does)."""
    import fcntl

    run = paths.run_dir()
    gone = []
    for where in sorted(run.glob("supervisor-*.lock")) if run.is_dir() else []:
        try:
            lock = open(where, "a")
        except OSError:
            continue
        with lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # its supervisor is alive
            if same_file(lock, where):
                where.with_suffix(".sock").unlink(missing_ok=True)
                where.unlink(missing_ok=True)
                gone.append(where.name)
    return gone


def same_file(lock, where) -> bool:
    """Whether the locked file is still the one at ``where`` (not one an exiting supervisor
    unlinked after it was opened)."""
    try:
        return os.stat(where).st_ino == os.fstat(lock.fileno()).st_ino
    except FileNotFoundError:
        return False


def send(s: socket.socket, msg: dict[str, Any], fds: list[int] | None = None) -> None:
    """Send one request line (with ``fds`` passed along, if any)."""
    socket.send_fds(s, [(json.dumps(msg) + "\n").encode()], fds or [])


def readline(s: socket.socket) -> str:
    """One line from the supervisor ('' if it closed the connection). Only the line is
    taken: the next answer, or an attached container's output, may follow in the same
    segment, and must stay in the socket for whoever reads next. So the line's end is
    found with a peek, and exactly that much is read (not a byte per call: in a busy
    threaded process each call waits its turn for the GIL)."""
    data = b""
    while True:
        chunk = s.recv(65536, socket.MSG_PEEK)
        if not chunk:
            break
        end = chunk.find(b"\n")
        data += s.recv(len(chunk) if end < 0 else end + 1)
        if end >= 0:
            break
    return data.decode()


def answer(s: socket.socket) -> dict[str, Any]:
    """The next answer on ``s``; OSError if the supervisor hung up instead."""
    line = readline(s)
    if not line:
        raise OSError("the supervisor closed the connection without an answer")
    return json.loads(line)


def request(msg: dict[str, Any], fds: list[int] | None = None
            ) -> tuple[dict[str, Any], socket.socket]:
    """Send one request; return the first answer and the still-open connection.

    A supervisor that idles out closes its listener; a client still queued on it gets
    ECONNRESET (or EPIPE) with its request unread, so it asks again, and the next connect
    starts a new supervisor. A supervisor that hung up after reading (it crashed) is not
    asked again: the request may have been done.
    """
    for attempt in range(2):
        s = connect()
        try:
            send(s, msg, fds)
            return answer(s), s
        except (ConnectionResetError, BrokenPipeError):
            s.close()
            if attempt:
                raise
        except BaseException:
            s.close()
            raise
    raise AssertionError("unreachable")


def ask(msg: dict[str, Any]) -> dict[str, Any]:
    """One request, one answer, connection closed."""
    reply, s = request(msg)
    s.close()
    return reply


def running_pid() -> int:
    """The pid of this state directory's supervisor, or 0 if none is running."""
    try:
        s = connect(start=False)
    except OSError:
        return 0
    with s:
        send(s, {"op": "ping"})
        try:
            return int(answer(s).get("pid", 0))
        except (OSError, ValueError):
            return 0


def shutdown(timeout: float = 30.0) -> bool:
    """Stop this state directory's supervisor as SIGTERM does: its containers are killed and
    torn down, idle bridges retired. True if one was running."""
    pid = running_pid()
    if not pid:
        return False
    os.kill(pid, 15)
    deadline = time.monotonic() + timeout
    while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    break
        except OSError:
            break
        time.sleep(0.02)
    return True
