"""A terminal a notebook can type into: a program in a real pty, keys in, screen out.

``edu run -it``, ``edu attach`` and ``edu exec -it`` want a terminal: they put it in raw
mode, read single keys (Ctrl-P Ctrl-Q among them) and size the container's pty after it.
A notebook cell has no terminal, so this module makes one, as a terminal window does::

    with Terminal(edu("run", "-it", "--name", "box", "debian", "bash")) as t:
        t.expect(PROMPT)              # wait, with a timeout, for the shell's prompt
        print(t.run("echo $$"))       # type a command, Enter; its output ("1")
        t.send(DETACH)                # Ctrl-P Ctrl-Q: edu detaches and exits
        t.wait()                      # its exit code (0)

How the terminal is made, and why this way:

- ``os.openpty()`` gives a pty pair. The program gets the *slave* end as its stdin, stdout
  and stderr; we keep the *master*: what we write there is typed on its keyboard, what it
  prints we read there.
- The program is started by ``subprocess.Popen``, whose fork and exec happen in C. A
  Jupyter kernel runs several threads, and a child forked in Python from a threaded process
  may inherit a lock another thread held at that moment and hang on it (DESIGN.md), so
  nothing here calls ``os.fork()``.
- The program runs under ``setsid --ctty`` (util-linux): a new session whose controlling
  terminal is the pty, as in a terminal window. So Ctrl-C typed before the program puts the
  terminal in raw mode still interrupts it, and closing the terminal hangs it up (SIGHUP).
  setsid makes the session in the child itself (the child is never a process group leader,
  so it does not fork), and the pid we hold is the program's. Where there is no setsid
  command, ``start_new_session`` makes the session without the controlling terminal.
- Reading never blocks for ever: every read waits on ``select`` with a timeout, and a
  timeout raises ``TimeoutError`` with the screen so far, so a cell fails with a sentence.

The screen is kept twice: ``raw`` (the bytes) and ``text`` (what a person would read:
escape sequences removed, carriage returns and backspaces applied, line by line).

Introduced in notebooks/07-run-it.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import select
import shutil
import signal
import struct
import subprocess
import sys
import termios
import time

#: Docker's detach keys, Ctrl-P then Ctrl-Q (edu_runtime/life/pty.py reads them).
DETACH = b"\x10\x11"
CTRL_C, CTRL_D = b"\x03", b"\x04"
#: A shell prompt: bash's ``root@HOST:DIR# `` or busybox's ``/ # `` (at a line's end).
PROMPT = r"(?:\w+@[\w.-]+:[^\n]*|/[^\n]*)[#$] $"

_ESCAPES = re.compile(rb"\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)"  # OSC: a window title
                      rb"|\x1b\[[0-?]*[ -/]*[@-~]"           # CSI: colours, cursor, modes
                      rb"|\x1b[()][0-9A-Za-z]|\x1b[=>78]")   # charsets, keypad, save/restore


def plain(data: bytes) -> str:
    """What a person reads on a screen that received ``data``: escape sequences dropped,
    ``\\r`` returning to the line's start (the text after it overwrites), ``\\b`` one column
    back, other control characters (a bell) dropped."""
    text = _ESCAPES.sub(b"", data).decode(errors="replace")
    lines = []
    for line in text.replace("\r\n", "\n").split("\n"):
        cells: list[str] = []
        col = 0
        for ch in line:
            if ch == "\r":
                col = 0
            elif ch == "\b":
                col = max(col - 1, 0)
            elif ch < " " and ch != "\t":
                continue
            else:
                if col < len(cells):
                    cells[col] = ch
                else:
                    cells.append(ch)
                col += 1
        lines.append("".join(cells))
    return "\n".join(lines)


def edu(*args: str) -> list[str]:
    """The ``edu`` command line a student types, for this Python's course (its venv)."""
    return [sys.executable, "-m", "edu_cli.main", *args]


class Terminal:
    """``argv`` running in a new pty of ``rows`` x ``cols``: type with ``send``, read with
    ``expect``/``read``, end with ``wait`` or ``close``."""

    def __init__(self, argv: list[str], *, rows: int = 24, cols: int = 100,
                 env: dict[str, str] | None = None, cwd: str | None = None):
        self.argv = list(argv)
        self.raw = b""
        self._seen = 0  # where in ``text`` the next expect() starts looking
        self.returncode: int | None = None
        self._master, slave = os.openpty()
        try:
            fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
            setsid = shutil.which("setsid")
            full = {"TERM": "xterm", **os.environ, **(env or {})}
            if full["TERM"] in ("dumb", ""):  # a kernel's own TERM; this is a real terminal
                full["TERM"] = "xterm"
            self.proc = subprocess.Popen(
                [setsid, "--ctty", *self.argv] if setsid else self.argv,
                stdin=slave, stdout=slave, stderr=slave, env=full, cwd=cwd,
                close_fds=True, start_new_session=not setsid)
        except BaseException:
            os.close(self._master)
            raise
        finally:
            os.close(slave)  # the program's now: we see EOF (EIO) when it has gone
        self.pid = self.proc.pid
        self._eof = False

    # ---- the screen ------------------------------------------------------------------------

    @property
    def text(self) -> str:
        """Everything the program printed, as a person reads it."""
        return plain(self.raw)

    def _pump(self, timeout: float) -> bool:
        """Read what arrives within ``timeout`` seconds (at least one chunk, if any); False
        once the program's side has closed."""
        if self._eof:
            return False
        ready, _, _ = select.select([self._master], [], [], max(timeout, 0))
        if not ready:
            return True
        try:
            data = os.read(self._master, 65536)
        except OSError as exc:  # EIO: every holder of the slave end has closed it
            if exc.errno != errno.EIO:
                raise
            data = b""
        if not data:
            self._eof = True
            return False
        self.raw += data
        return True

    def read(self, timeout: float = 0.3) -> str:
        """What the program prints from now until it has been quiet for ``timeout`` s."""
        start = len(self.raw)
        while True:
            before = len(self.raw)
            if not self._pump(timeout) or len(self.raw) == before:
                break
        return plain(self.raw[start:])

    def expect(self, pattern: str, timeout: float = 15) -> re.Match:
        """Wait until the text printed since the last match matches ``pattern`` (a regular
        expression, multiline); the match. ``TimeoutError`` (with the screen) if it does not
        come within ``timeout`` seconds, ``EOFError`` if the program ends first."""
        regex = re.compile(pattern, re.MULTILINE)
        deadline = time.monotonic() + timeout
        while True:
            text = self.text
            m = regex.search(text, self._seen)
            if m:
                self._seen = m.end()
                return m
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"waited {timeout:g} s for {pattern!r} from "
                                   f"{' '.join(self.argv[-6:])}; the screen ends with:\n"
                                   f"{self.tail()}")
            if not self._pump(min(left, 0.5)):
                if not regex.search(self.text, self._seen):
                    raise EOFError(f"{' '.join(self.argv[-6:])} ended before printing "
                                   f"{pattern!r}; the screen ends with:\n{self.tail()}")

    def tail(self, lines: int = 8) -> str:
        """The screen's last ``lines`` lines."""
        return "\n".join(self.text.rstrip("\n").splitlines()[-lines:])

    # ---- the keyboard ------------------------------------------------------------------------

    def send(self, keys: bytes | str) -> None:
        """Type ``keys`` (a str is UTF-8): ``"ls\\r"`` is ls and Enter, ``DETACH`` is
        Ctrl-P Ctrl-Q."""
        data = keys.encode() if isinstance(keys, str) else keys
        while data:
            data = data[os.write(self._master, data):]

    def wait_raw(self, timeout: float = 15) -> None:
        """Wait until the program has put the terminal in raw mode, as ``edu run -it``,
        ``attach`` and ``exec -it`` do once they relay keys: keys typed before that are
        discarded (tcsetattr's TCSAFLUSH), so type only after it. (The master end reads the
        pty's settings.) ``TimeoutError`` if it does not within ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while termios.tcgetattr(self._master)[3] & termios.ICANON:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{' '.join(self.argv[-6:])} did not take the keyboard "
                                   f"within {timeout:g} s; the screen ends with:\n"
                                   f"{self.tail()}")
            if not self._pump(0.02) and self.proc.poll() is not None:
                raise EOFError(f"{' '.join(self.argv[-6:])} ended; the screen ends with:\n"
                               f"{self.tail()}")

    def run(self, command: str, prompt: str = PROMPT, timeout: float = 15) -> str:
        """Type ``command`` and Enter at a shell's prompt; what it printed before the next
        prompt (the echoed command line left out)."""
        self.send(command + "\r")
        start = self._seen
        m = self.expect(prompt, timeout)
        out = self.text[start:m.start()].split("\n")
        return "\n".join(out[1:-1]) if len(out) > 1 else ""  # [echo, output..., prompt]

    def resize(self, rows: int, cols: int) -> None:
        """Resize the terminal, as dragging a window's corner does (SIGWINCH)."""
        fcntl.ioctl(self._master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    # ---- the end -----------------------------------------------------------------------------

    def wait(self, timeout: float = 15) -> int:
        """Wait for the program to exit, reading what it prints meanwhile; its exit code.
        ``TimeoutError`` if it is still running after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{' '.join(self.argv[-6:])} still runs after "
                                   f"{timeout:g} s; the screen ends with:\n{self.tail()}")
            if not self._pump(min(left, 0.1)):
                try:
                    self.proc.wait(max(deadline - time.monotonic(), 0))
                except subprocess.TimeoutExpired:
                    pass
        while self._pump(0.05):  # what it printed last, unless someone else holds the pty
            if time.monotonic() > deadline:
                break
        self.returncode = self.proc.returncode
        return self.returncode

    def close(self, grace: float = 3) -> int:
        """Close the terminal, as closing its window does: the program's session is hung up
        (SIGHUP); SIGKILL after ``grace`` seconds if it is still there. Its exit code."""
        if self.proc.poll() is None:
            os.close(self._master)  # the kernel hangs up the session (its ctty's master)
            self._master = -1
            if not shutil.which("setsid"):
                _killpg(self.pid, signal.SIGHUP)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                _killpg(self.pid, signal.SIGKILL)
                self.proc.wait()
        if self._master >= 0:
            os.close(self._master)
            self._master = -1
        self.returncode = self.proc.returncode
        return self.returncode

    def __enter__(self) -> Terminal:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "running" if self.proc.poll() is None else f"exited {self.proc.returncode}"
        return f"<Terminal {' '.join(self.argv[-6:])} ({state})>"


def _killpg(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass
