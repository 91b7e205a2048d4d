"""``edu demo LESSON``: a lesson's key demonstration in a terminal, paced for a projector.

Each page is what an instructor would type and what it printed: the command (``$ edu run
...``, or ``>>>`` for the engine call a notebook makes where no command exists), its real
output, one line saying what to look at, and a prompt. A page is at most ``WIDTH`` columns
wide and ``HEIGHT`` lines tall, prompt included, so it fits a projector without scrolling;
longer output is cut in the middle with "... N more lines". When stdin is not a terminal, or
with ``--no-pause``, the same pages run straight through.

The demonstrations themselves (which commands, in which order) are in ``edu_cli/demos.py``,
one small function per lesson. This module is the face: the pager, the demo's clean-up, the
command line. Everything a demo makes is named ``demo-NN-XXXX-...`` and removed at the end,
on Ctrl-C and on error; the student's own containers are never touched.

Introduced in notebooks/00-start-here (the instructor's notes: lessons/instructor/).
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from .errors import UserError

WIDTH = 80  # columns of a projector's terminal
HEIGHT = 20  # lines between two prompts, the prompt included
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def quote(args: list[str]) -> str:
    """A command line as a person types it: ``'...'`` where that is enough, ``"..."`` around
    an argument that has single quotes itself (shlex.join would write ``'"'"'``)."""
    out = []
    for arg in args:
        if arg and re.fullmatch(r"[\w@%+=:,./-]+", arg):
            out.append(arg)
        elif "'" not in arg:
            out.append(f"'{arg}'")
        else:
            out.append('"' + re.sub(r'([\\"$`])', r"\\\1", arg) + '"')
    return " ".join(out)


class DemoError(RuntimeError):
    """A command of the demo failed; the message says which and what it printed."""


def clip(line: str, width: int = WIDTH) -> str:
    """One output line as a projector shows it: no escapes or tabs, at most ``width`` columns
    (what is cut is marked with "…")."""
    line = ANSI.sub("", line).rsplit("\r", 1)[-1].expandtabs(8).rstrip()
    return line if len(line) <= width else line[:width - 1] + "…"


def fit(lines: list[str], room: int) -> list[str]:
    """At most ``room`` lines: the first and the last ones, "... N more lines" between."""
    if len(lines) <= room:
        return lines
    head = (room - 1 + 1) // 2
    tail = room - 1 - head
    cut = len(lines) - head - tail
    return lines[:head] + [f"  ... {cut} more lines ..."] + (lines[-tail:] if tail else [])


class Pager:
    """Pages of at most HEIGHT lines and WIDTH columns; waits for Enter between them."""

    def __init__(self, lesson: str, title: str, pause: bool):
        self.lesson, self.pause, self.number, self.ticking = lesson, pause, 0, False
        self.pending = textwrap.wrap(title, WIDTH) + [""]

    def say(self, text: str = "") -> None:
        print(text, flush=True)

    def ticker(self, text: str) -> None:
        """Progress on one line, drawn over itself (nothing is added to the page)."""
        if sys.stdout.isatty():
            sys.stdout.write("\r\x1b[K" + clip(text, WIDTH - 1))
            sys.stdout.flush()
            self.ticking = True

    def untick(self) -> None:
        """Erase the progress line, if there is one."""
        if self.ticking:
            sys.stdout.write("\r\x1b[K")
            sys.stdout.flush()
            self.ticking = False

    def page(self, commands: list[str], output: str | list[str], explain: str) -> None:
        """Show one page: the command(s), the output (cut to fit), the explanation, the
        prompt; then wait for Enter (unless running straight through)."""
        self.untick()
        self.number += 1
        top = self.pending
        self.pending = []
        shown = []
        for cmd in commands:
            parts = textwrap.wrap(cmd, WIDTH - 2, subsequent_indent="    ",
                                  break_on_hyphens=False, break_long_words=True)
            shown += [p + " \\" for p in parts[:-1]] + parts[-1:]
        said = textwrap.wrap("» " + explain, WIDTH, subsequent_indent="  ")[:4]
        lines = output.splitlines() if isinstance(output, str) else list(output)
        lines = [clip(line) for line in lines]
        while lines and not lines[-1]:
            lines.pop()
        room = HEIGHT - len(top) - len(shown) - len(said) - 1
        for line in top + shown + fit(lines, max(room, 1)) + said:
            print(line)
        self.prompt()

    def prompt(self) -> None:
        text = f"[edu demo {self.lesson}, page {self.number}] Enter: next, Ctrl-C: stop "
        if self.pause:
            sys.stdout.write(text)
            sys.stdout.flush()
            if not sys.stdin.readline():  # stdin closed: go on without waiting
                self.pause = False
                print()
        else:
            print(text.rstrip(), flush=True)


class Demo:
    """What a lesson's demo uses: run a command onto a page, name what it makes, clean up."""

    def __init__(self, lesson: str, pager: Pager):
        self.lesson, self.pager = lesson, pager
        self.tag = f"demo-{lesson}-{secrets.token_hex(2)}"
        self.made: dict[str, list[str]] = {"container": [], "network": [], "volume": [],
                                           "image": [], "dir": []}

    # ---- names: everything the demo makes is named after self.tag -------------------------
    def name(self, what: str, kind: str = "container") -> str:
        """A name for something the demo will make (``demo-NN-XXXX-what``), noted for the
        clean-up before it exists, so Ctrl-C at any moment removes it."""
        name = f"{self.tag}-{what}"
        self.made[kind].append(name)
        return name

    def workdir(self, what: str) -> Path:
        """A fresh directory the clean-up removes (a copy of an app to change)."""
        import tempfile

        path = Path(tempfile.mkdtemp(prefix=f"{self.tag}-{what}-"))
        self.made["dir"].append(str(path))
        return path

    # ---- pages ----------------------------------------------------------------------------
    def page(self, commands: list[str] | str, output: str | list[str], explain: str) -> None:
        self.pager.page([commands] if isinstance(commands, str) else commands, output,
                        explain)

    def run(self, argv: list[str], check: bool = True, env: dict | None = None,
            live: bool = True) -> tuple[int, str]:
        """Run a command, its stdout and stderr in one stream (as a terminal shows them);
        if ``live``, its progress (lines redrawn with \\r) on one line meanwhile."""
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL,
                                env={**os.environ, **(env or {})})
        text = b""
        try:
            while chunk := os.read(proc.stdout.fileno(), 65536):
                text += chunk
                sofar = text.decode(errors="replace").replace("\r\n", "\n")
                current = re.split(r"[\r\n]", sofar.rstrip("\r\n"))[-1]
                if current.strip() and live:
                    self.pager.ticker(current)
            code = proc.wait()
        except BaseException:
            self.pager.untick()
            try:  # the child had the same Ctrl-C; let it finish its own clean-up first
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            raise
        finally:
            proc.stdout.close()
        self.pager.untick()
        out = text.decode(errors="replace").replace("\r\n", "\n")
        out = "\n".join(line.rsplit("\r", 1)[-1] for line in out.split("\n"))
        if check and code != 0:
            last = [line for line in out.splitlines() if line.strip()][-1:] or ["(nothing)"]
            raise DemoError(f"`{quote(self.shown(argv))}` exited {code}: {last[0]}")
        return code, out

    @staticmethod
    def shown(argv: list[str]) -> list[str]:
        return ["edu", *argv[3:]] if argv[:3] == [sys.executable, "-m", "edu_cli.main"] \
            else argv

    def edu(self, *args: str, explain, check: bool = True, show=None,
            env: dict | None = None) -> str:
        """``$ edu ARGS`` and its output on a page; ``show(output)`` may pick the lines to
        show, ``explain`` may be a function of the output. Returns the whole output."""
        code, out = self.quiet(*args, check=check, env=env)
        self.page("$ " + quote(["edu", *args]) + getattr(show, "shown", ""),
                  show(out) if show else out,
                  explain(out) if callable(explain) else explain)
        return out

    def quiet(self, *args: str, check: bool = True, env: dict | None = None,
              live: bool = True) -> tuple[int, str]:
        """``edu ARGS`` without a page (the demo's own preparation and checks)."""
        return self.run([sys.executable, "-m", "edu_cli.main", *args], check=check, env=env,
                        live=live)

    def sh(self, command: str, explain: str, check: bool = True) -> str:
        """``$ COMMAND`` (a host shell command: ps, nft, ip, grep) and its output."""
        code, out = self.run(["sh", "-c", command], check=check)
        self.page("$ " + command, out, explain)
        return out

    def prepare(self, *args: str) -> None:
        """``edu ARGS`` before the pages (bootstrap, build): one line, progress on it."""
        self.pager.ticker("preparing: " + quote(["edu", *args]))
        self.quiet(*args)

    # ---- clean-up -------------------------------------------------------------------------
    def cleanup(self) -> list[str]:
        """Remove everything the demo named, newest first; what was there, by name."""
        removed = []
        for kind, verb in (("container", ["rm", "-f"]), ("network", ["network", "rm"]),
                           ("volume", ["volume", "rm"]), ("image", ["rmi"])):
            for name in reversed(self.made[kind]):
                code, _ = self.quiet(*verb, name, check=False, live=False)
                if code == 0:
                    removed.append(name)
        for path in self.made["dir"]:
            shutil.rmtree(path, ignore_errors=True)
        return removed


def _wanted(text: str) -> str:
    """``06``, ``6`` or ``06-step-by-step`` -> ``06``."""
    from . import demos

    for number in demos.DEMOS:
        if text in (number, number.lstrip("0") or "0", demos.notebook(number)):
            return number
    raise UserError(f"there is no lesson {text!r}: edu demo takes one of "
                    f"{', '.join(demos.DEMOS)} (or a name such as 06-step-by-step); "
                    f"'edu demo' lists them")


def listing() -> str:
    """The lessons and what each demo shows."""
    from . import demos

    out = ["edu demo LESSON: a lesson's key demonstration, paced for a projector", ""]
    for number, fn in demos.DEMOS.items():
        what = demos.summary(fn)
        out += textwrap.wrap(f"{number}  {what}", WIDTH, subsequent_indent="    ")
    out += ["", "e.g. edu demo 06 (Enter for each page; --no-pause runs straight through)"]
    return "\n".join(out)


def demo_cmd(args) -> int:
    """``edu demo [LESSON] [--no-pause]``."""
    from . import demos

    if not args.lesson:
        print(listing())
        return 0
    number = _wanted(args.lesson)
    fn = demos.DEMOS[number]
    pause = sys.stdin.isatty() and not args.no_pause
    pager = Pager(number, f"edu demo {number}: {demos.summary(fn)} "
                          f"(notebooks/{demos.notebook(number)})", pause)
    demo = Demo(number, pager)

    def on_term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    code = 0
    try:
        fn(demo)
    except KeyboardInterrupt:
        pager.untick()
        print("\nStopped (Ctrl-C).")
        code = 130
    except (DemoError, UserError) as exc:
        pager.untick()
        print(f"\nedu: demo {number} stopped: {exc}", file=sys.stderr)
        code = 1
    except Exception as exc:  # an engine call's own error (a guest that did not boot, ...)
        pager.untick()
        print(f"\nedu: demo {number} stopped: {type(exc).__name__}: {exc}", file=sys.stderr)
        code = 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the clean-up is not interrupted
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        removed = demo.cleanup()
        said = (f"The demo removed what it made: {', '.join(removed)}." if removed
                else "The demo left nothing behind.")
        print(said if len(said) <= WIDTH else
              f"The demo removed what it made: {len(removed)} things named {demo.tag}-*.",
              flush=True)
    return code


def register(sub) -> None:
    """Add ``demo`` to the ``edu`` parser."""
    p = sub.add_parser("demo", help="a lesson's key demonstration, paced for a projector")
    p.add_argument("lesson", nargs="?", metavar="LESSON",
                   help="a lesson: 06, 6 or 06-step-by-step (none: list them)")
    p.add_argument("--no-pause", action="store_true",
                   help="run straight through without waiting for Enter")
    p.set_defaults(func=demo_cmd)
