"""The terminal side of ``-it`` and ``edu attach``: the runtime's relay (life/pty.py) on a
socket to the supervisor, with Docker's detach keys."""

from __future__ import annotations

import os
import socket
import sys


def relay(conn: socket.socket, stdin_fd: int | None = None, stdout_fd: int | None = None
          ) -> str:
    """Copy keystrokes to ``conn`` and its output to the terminal until the container exits
    ("exited") or the user types Ctrl-P Ctrl-Q ("detached")."""
    from edu_runtime.life import pty

    stdin_fd = sys.stdin.fileno() if stdin_fd is None else stdin_fd
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
