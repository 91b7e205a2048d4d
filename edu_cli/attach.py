"""The terminal side of ``-it`` and ``edu attach``: raw mode, a byte relay, detach keys."""

from __future__ import annotations

import os
import selectors
import socket
import sys
import termios
import tty

#: Docker's default detach sequence: Ctrl-P then Ctrl-Q.
DETACH = b"\x10\x11"


def relay(conn: socket.socket, stdin_fd: int | None = None, stdout_fd: int | None = None
          ) -> str:
    """Copy keystrokes to ``conn`` and its output to the terminal until the container exits
    ("exited") or the user types Ctrl-P Ctrl-Q ("detached")."""
    stdin_fd = sys.stdin.fileno() if stdin_fd is None else stdin_fd
    stdout_fd = sys.stdout.fileno() if stdout_fd is None else stdout_fd
    saved = termios.tcgetattr(stdin_fd) if os.isatty(stdin_fd) else None
    if saved is not None:
        tty.setraw(stdin_fd)
    sel = selectors.DefaultSelector()
    sel.register(conn, selectors.EVENT_READ)
    sel.register(stdin_fd, selectors.EVENT_READ)
    pending = b""
    try:
        while True:
            for key, _ in sel.select():
                if key.fileobj is conn:
                    data = conn.recv(65536)
                    if not data:
                        return "exited"
                    os.write(stdout_fd, data)
                    continue
                data = os.read(stdin_fd, 1024)
                if not data:
                    sel.unregister(stdin_fd)
                    conn.shutdown(socket.SHUT_WR)
                    continue
                data, pending = pending + data, b""
                if DETACH in data:
                    conn.sendall(data[:data.index(DETACH)])
                    return "detached"
                if data.endswith(DETACH[:1]):  # maybe the first half of the sequence
                    data, pending = data[:-1], data[-1:]
                conn.sendall(data)
    finally:
        if saved is not None:
            termios.tcsetattr(stdin_fd, termios.TCSADRAIN, saved)
        sel.close()


def terminal_size() -> tuple[int, int] | None:
    """(rows, cols) of our terminal, for the container's pty."""
    try:
        size = os.get_terminal_size(sys.stdout.fileno())
        return size.lines, size.columns
    except OSError:
        return None
