"""The thin ``edu run``: hand the command line to the warm supervisor, and wait.

``docker run`` is a small client: dockerd, already running, parses the request, makes the
container and streams its output. ``edu run`` as root works the same way when the
supervisor is up: this module sends it the raw command line, the environment and the
working directory, with our stdin, stdout and stderr (SCM_RIGHTS), and waits for one line
back. Python pays for every module it imports at start-up (argparse, pathlib, json and
socket together cost more than the container's own namespaces), so this file imports
nothing but ``os``, ``sys`` and the C modules ``_socket`` and ``zlib``.

Whenever the supervisor declines (no supervisor running, ``-t``, a flag it cannot parse,
``--help``) or the user is not root, the normal CLI runs instead, so the answers are
the same either way. The supervisor's side is ``supervisor.Supervisor._argv`` and
``edu_cli.run.supervised_request``.

The wire format (one request per connection)::

    ARGV <length>\\n <cwd> \\0 <argc> \\0 <argv...> \\0 <env KEY=VALUE...>   (client)
    declined\\n                                                         (supervisor)
    error <code>\\n <message>
    detached <id>\\n                                                (-d)
    started <id>\\n ... exit <code>\\n <text for stderr>

Introduced in notebooks/07-run-it.
"""

import os
import sys


def socket_path() -> str:
    """``edu_runtime.life.client.socket_path()`` for root, without importing pathlib."""
    import zlib

    state = os.environ["EDU_STATE_DIR"] if "EDU_STATE_DIR" in os.environ else "/var/lib/edu"
    run = os.environ["EDU_RUN_DIR"] if "EDU_RUN_DIR" in os.environ else "/run/edu"
    scope = f"{zlib.crc32(os.path.realpath(state).encode()):08x}"
    return os.path.join(run, f"supervisor-{scope}.sock")


def _payload(argv: list[str]) -> bytes:
    fields = [os.getcwd(), str(len(argv)), *argv,
              *(f"{k}={v}" for k, v in os.environ.items())]
    body = b"\0".join(os.fsencode(f) for f in fields)
    return b"ARGV %d\n" % len(body) + body


def _recv_all(s) -> bytes:
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    return data


def try_run(argv: list[str]) -> int | None:
    """Run ``edu run ARGV...`` through the supervisor; None if it declines (or none runs)."""
    if os.geteuid() != 0 or "--help" in argv:
        return None
    import _signal

    _signal.signal(_signal.SIGTERM, _interrupt)  # SIGTERM ends the container, as Ctrl-C
    code = _run(argv)
    if code is None:
        _signal.signal(_signal.SIGTERM, _signal.SIG_DFL)
    return code


def _run(argv: list[str]) -> int | None:
    import _socket

    s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
    try:
        try:
            s.connect(socket_path())
        except OSError:
            return None  # no supervisor yet: the normal path starts one
        fds = b"".join(fd.to_bytes(4, sys.byteorder) for fd in (0, 1, 2))
        head, interrupted = b"", False
        try:
            s.sendmsg([_payload(argv)], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, fds)])
        except ConnectionError:
            return None  # it was exiting (idle) as we connected: the normal path
        while not head.endswith(b"\n"):
            try:
                chunk = s.recv(1)
            except KeyboardInterrupt:  # too early to stop it: it is stopped once started
                interrupted = True
                continue
            except ConnectionResetError:  # it closed its listener with us still queued,
                chunk = b""  # exiting idle: it never read the run
            if not chunk:
                return None  # the supervisor went away before it took the run
            head += chunk
        word, _, rest = head.decode().strip().partition(" ")
        if word == "declined":
            return None
        if word == "error":
            sys.stderr.write(f"edu: {_recv_all(s).decode()}\n")
            return int(rest)
        if word == "detached":  # -d: the supervisor has it; print its id, as docker does
            sys.stdout.write(rest + "\n")
            return 0
        try:
            if interrupted:
                raise KeyboardInterrupt
            tail = _recv_all(s)
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM: the container goes (SIGKILL)
            _kill(rest)
            tail = _recv_all(s)
        line, _, text = tail.partition(b"\n")
        if not line.startswith(b"exit "):
            sys.stderr.write("edu: the supervisor stopped before the container exited\n")
            return 125
        if text:
            os.write(2, text)
        return int(line.split()[1])
    finally:
        s.close()


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _kill(container_id: str) -> None:
    import _socket

    s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
    try:
        s.connect(socket_path())
        s.sendall(b'{"op": "kill", "id": "%s"}\n' % container_id.encode())
        s.recv(4096)
    except OSError:
        pass
    finally:
        s.close()
