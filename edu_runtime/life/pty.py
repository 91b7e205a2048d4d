"""The one terminal relay: a user's keyboard and screen on one side, a container on the other.

``edu exec -it`` (a pty master here), ``edu run -it`` and ``edu attach`` (a socket to the
supervisor, which holds the container's pty) all need the same loop: the terminal in raw
mode, so every key (Ctrl-C included) goes to the container and not to our own process;
what the container prints copied to the screen; and, for attach, Docker's detach keys,
Ctrl-P Ctrl-Q, which leave the container running.

Introduced in notebooks/07-run-it.
"""

from __future__ import annotations

import errno
import os
import selectors
import termios
import tty
from collections.abc import Callable, Iterator
from contextlib import contextmanager

#: Docker's default detach sequence: Ctrl-P then Ctrl-Q.
DETACH = b"\x10\x11"


@contextmanager
def raw(fd: int | None) -> Iterator[None]:
    """``fd``'s terminal in raw mode for the block (nothing if it is not a terminal)."""
    saved = termios.tcgetattr(fd) if fd is not None and os.isatty(fd) else None
    if saved is not None:
        tty.setraw(fd)
    try:
        yield
    finally:
        if saved is not None:
            termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data):]


def _send_file(fd: int, remote: int) -> None:
    while data := os.read(fd, 65536):
        _write_all(remote, data)


def relay(remote: int, stdin: int | None, stdout: int, *, detach: bytes = b"",
          stdin_closed: Callable[[], None] | None = None) -> str:
    """Copy ``remote``'s output to ``stdout`` and ``stdin`` to ``remote`` until ``remote``
    closes ("exited") or the user types ``detach`` ("detached"). ``remote`` is a pty master
    or a socket's fd; ``stdin_closed()`` is called when the keyboard side ends (a socket
    shuts its write side). The terminal on ``stdin`` is raw meanwhile."""
    sel = selectors.DefaultSelector()
    sel.register(remote, selectors.EVENT_READ)
    if stdin is not None:
        try:
            sel.register(stdin, selectors.EVENT_READ)
        except PermissionError:  # a regular file or /dev/null: epoll refuses what is
            _send_file(stdin, remote)  # always readable, so it is sent whole, then closed
            if stdin_closed is not None:
                stdin_closed()
            stdin = None
    pending = b""
    try:
        with raw(stdin):
            while True:
                for key, _ in sel.select():
                    if key.fd == remote:
                        try:
                            data = os.read(remote, 65536)
                        except OSError as exc:  # EIO: every holder of the pty's end exited
                            if exc.errno != errno.EIO:
                                raise
                            data = b""
                        if not data:
                            return "exited"
                        _write_all(stdout, data)
                        continue
                    data = os.read(stdin, 1024)
                    if not data:
                        sel.unregister(stdin)
                        if stdin_closed is not None:
                            stdin_closed()
                        continue
                    data, pending = pending + data, b""
                    if detach and detach in data:
                        _write_all(remote, data[:data.index(detach)])
                        return "detached"
                    if detach and data.endswith(detach[:1]):  # maybe the sequence's start
                        data, pending = data[:-1], data[-1:]
                    _write_all(remote, data)
    finally:
        sel.close()
