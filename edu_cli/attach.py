"""The terminal side of ``-it`` and ``edu attach``: the runtime's relay (life/pty.py) on a
socket to the supervisor, with Docker's detach keys."""

from __future__ import annotations

import os
import socket
import sys


def check_tty(interactive: bool, tty: bool) -> None:
    """``-it`` with a keyboard that is not a terminal (a pipe, a file): Docker's refusal,
    before anything is made."""
    from .errors import UserError

    if interactive and tty and not os.isatty(sys.stdin.fileno()):
        raise UserError("the input device is not a TTY: run it from a terminal, or leave "
                        "out -t to pipe input into the container (-i alone)", 1)


def relay(conn: socket.socket, stdin_fd: int | None = None, stdout_fd: int | None = None,
          *, keyboard: bool = True) -> str:
    """Copy keystrokes to ``conn`` (unless ``keyboard`` is False: ``-t`` without ``-i``)
    and its output to the terminal until the container exits ("exited") or the user types
    Ctrl-P Ctrl-Q ("detached")."""
    from edu_runtime.life import pty

    stdin_fd = sys.stdin.fileno() if stdin_fd is None else stdin_fd
    stdin_fd = stdin_fd if keyboard else None
    stdout_fd = sys.stdout.fileno() if stdout_fd is None else stdout_fd
    return pty.relay(conn.fileno(), stdin_fd, stdout_fd, detach=pty.DETACH,
                     stdin_closed=lambda: conn.shutdown(socket.SHUT_WR))


def terminal_size() -> tuple[int, int] | None:
    """(rows, cols) of our terminal, for the container's pty."""
    try:
        size = os.get_terminal_size(sys.stdout.fileno())
        return size.lines, size.columns
    except OSError:
        return None
