"""``edu demo LESSON`` as an instructor runs it: in a real terminal (a pty), Enter at each
prompt, every lesson 00 to 10.

For every page: at most 80 columns (escapes not counted), at most 20 lines up to and including
its prompt. While the demo waits at a prompt, the host is asked whether what the page shows is
real: a container listed by a page's ``edu ps`` is in ``edu ps -a`` now; a pid a page names
is alive; a namespace inode the stepper shows is that process's; a boot id a container
printed is the host's; an image a build tagged is in the store. After the demo, and after
Ctrl-C in the middle of one, the host is as it was (tests/hoststate.py).

Introduced in notebooks/00-start-here (lessons/instructor/: the demo mode).
"""

from __future__ import annotations

import os
import pty
import re
import select
import socket
import subprocess
import sys
import time

import hoststate
import pytest

PROMPT = "Enter: next, Ctrl-C: stop "
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
# Each lesson under another of the spellings edu demo accepts.
LESSONS = ["00", "01", "02", "03", "04-images", "05", "6", "07", "08", "09", "10"]


def _free_ports(n: int = 3) -> str:
    """``A-B``: n consecutive free host ports (never the primer's 8080/47561/8081)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            first = s.getsockname()[1]
        if first + n > 65535:
            continue
        socks = []
        try:
            for p in range(first, first + n):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", p))
            return f"{first}-{first + n - 1}"
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()


def _edu(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edu_cli.main", *args], capture_output=True,
                          text=True, timeout=120)


def drive(lesson: str, on_prompt=None, ctrl_c_at: int | None = None,
          env: dict | None = None) -> tuple[int, str, list[str]]:
    """Run ``edu demo LESSON`` in a pty; at each prompt call ``on_prompt(page)`` and press
    Enter (or Ctrl-C at prompt number ``ctrl_c_at``). Returns (exit code, transcript,
    pages: each page's text up to and including its prompt line)."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: a session of its own, the pty its terminal
        os.environ.update(env or {})
        os.execv(sys.executable, [sys.executable, "-m", "edu_cli.main", "demo", lesson])
    text, pages, start = "", [], 0
    # A guard against a hang, not a timing: on a fresh machine 08 and 09 first build their
    # apps from Debian's and npm's packages (2 to 3 minutes each, as the lessons' first runs).
    deadline = time.monotonic() + 900
    try:
        while time.monotonic() < deadline:
            if not select.select([fd], [], [], 1)[0]:
                continue
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            text += chunk.decode(errors="replace")
            if text.endswith(PROMPT):
                pages.append(text[start:])
                if on_prompt:
                    on_prompt(text[start:])
                if ctrl_c_at == len(pages):
                    os.write(fd, b"\x03")
                else:
                    os.write(fd, b"\r")
                start = len(text)
        else:
            os.kill(pid, 9)
            pytest.fail(f"edu demo {lesson} did not end in 900 s; it said:\n{text[-2000:]}")
    finally:
        status = _end(pid)
        os.close(fd)
    return os.waitstatus_to_exitcode(status), text, pages


def _end(pid: int) -> int:
    """The demo's wait status; if a check failed while it waits at a prompt, it is stopped
    as an instructor would (Ctrl-C: SIGINT, so it removes what it made)."""
    done, status = os.waitpid(pid, os.WNOHANG)
    if done:
        return status
    os.kill(pid, 2)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        time.sleep(0.1)
    os.kill(pid, 9)
    return os.waitpid(pid, 0)[1]


def screen_lines(text: str) -> list[str]:
    """What a terminal shows, line by line: escapes gone, a line redrawn after \\r as its last
    drawing."""
    return [ANSI.sub("", line).rsplit("\r", 1)[-1] if line.strip("\r") else ""
            for line in text.replace("\r\n", "\n").split("\n")]


class Evidence:
    """Checks, at a prompt, that what the page shows is on the host now."""

    def __init__(self):
        self.checked: list[str] = []
        self.ids: set[str] = set()
        with open("/proc/sys/kernel/random/boot_id") as f:
            self.boot_id = f.read().strip()

    def __call__(self, page: str) -> None:
        lines = screen_lines(page)
        listed = None
        for i, line in enumerate(lines):
            if line.startswith(("CONTAINER ID", "NAME ")):
                listed = listed or _edu("ps", "-a").stdout
                for row in lines[i + 1:]:
                    m = re.match(r"([0-9a-f]{12}|demo-\d\d-[0-9a-f]{4}-\S+)\s", row)
                    if not m:
                        break
                    assert m.group(1) in listed, f"{m.group(1)} shown but not in edu ps:\n{page}"
                    self.checked.append(f"container {m.group(1)}")
            for pid in re.findall(r"/proc/(\d+)/", line) + re.findall(r"pid on the host: (\d+)",
                                                                       line):
                assert os.path.exists(f"/proc/{pid}"), f"pid {pid} is not running:\n{page}"
                self.checked.append(f"pid {pid}")
        ns = re.search(r"pid on the host: (\d+)", page)
        for kind, inode in re.findall(r"^  (\w+): (?:new|the host's own) (\w+:\[\d+\])",
                                      "\n".join(lines), re.M):
            assert os.readlink(f"/proc/{ns.group(1)}/ns/{kind}") == inode, page
            self.checked.append(f"{kind} namespace {inode}")
        for m in re.finditer(r"^container\s+([0-9a-f-]{36})", "\n".join(lines), re.M):
            assert m.group(1) == self.boot_id, page
            self.checked.append("container boot_id is the host's")
        for m in re.finditer(r"^VM\s+([0-9a-f-]{36})", "\n".join(lines), re.M):
            assert m.group(1) != self.boot_id, page
            self.checked.append("the VM's boot_id is its own")
        if "$ edu run --rm" in page and "boot_id" in page:
            assert self.boot_id in page, page
            self.checked.append("container printed the host's boot_id")
        for tag in re.findall(r"Successfully tagged (\S+)", page):
            assert _edu("inspect", "--type", "image", tag).returncode == 0, page
            self.checked.append(f"image {tag}")
        for m in re.finditer(r"^Hello from ([0-9a-f]{12})", "\n".join(lines), re.M):
            assert m.group(1) in "".join(self.checked), page  # the container edu ps listed
            self.checked.append(f"page served by {m.group(1)}")


def clean_after(before: dict) -> dict:
    """``hoststate.wait_clean``, leaving out processes of other users: the demo runs as root,
    and a class's students (another engineer's hub test) start network holders meanwhile."""
    deadline = time.monotonic() + 30
    while True:
        found = hoststate.leaks(before)
        procs = [p for p in found.get("processes", []) if _uid(p.split(":")[0]) == 0]
        found = {k: v for k, v in found.items() if k != "processes"} | (
            {"processes": procs} if procs else {})
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def _uid(pid: str) -> int | None:
    try:
        return os.stat(f"/proc/{pid.split()[0]}").st_uid
    except OSError:
        return None  # gone meanwhile


def check_pages(pages: list[str], tail: str) -> None:
    for i, page in enumerate(pages + [tail]):
        if i:  # the Enter echoed after a prompt ends the prompt's own line
            assert page.startswith("\r\n"), repr(page[:40])
            page = page[2:]
        lines = screen_lines(page)
        if lines and lines[-1] == "":
            lines.pop()
        for line in lines:
            assert len(line) <= 80, f"{len(line)} columns: {line!r}"
        assert len(lines) <= 20, f"{len(lines)} lines between prompts:\n" + "\n".join(lines)


@pytest.fixture(scope="module")
def ports():
    return {"EDU_PORTS": _free_ports()}


@pytest.mark.parametrize("lesson", LESSONS)
def test_every_lesson_in_a_terminal(lesson, ports, root, busybox):
    before = hoststate.snapshot()
    seen = Evidence()
    code, text, pages = drive(lesson, seen, env=ports)
    assert code == 0, "\n".join(screen_lines(text))[-3000:]
    assert pages, text
    check_pages(pages, text[len("".join(pages)):])
    assert seen.checked, f"no page of demo {lesson} could be checked against the host"
    print(f"demo {lesson}: {len(pages)} pages; checked on the host: {sorted(set(seen.checked))}")
    number = lesson[:2].zfill(2) if lesson[:2].isdigit() else lesson.zfill(2)
    assert f"edu demo {number}" in text
    _edu("ps")
    assert clean_after(before) == {}
    for listing in (_edu("ps", "-a").stdout, _edu("images").stdout,
                    _edu("network", "ls").stdout):
        assert f"demo-{number}-" not in listing


def test_ctrl_c_at_a_prompt_removes_what_the_demo_made(ports, root, busybox):
    """Ctrl-C at the third page of lesson 09 (two images built, a container running, a copy
    of the app): exit 130 and nothing left."""
    before = hoststate.snapshot()
    made: list[str] = []

    def note(page: str) -> None:
        made.extend(re.findall(r"demo-09-[0-9a-f]{4}", page))
        assert _edu("ps").stdout.count("demo-09-") >= (1 if "edu run" in page else 0)

    code, text, pages = drive("09", note, ctrl_c_at=3, env=ports)
    assert code == 130, "\n".join(screen_lines(text))[-2000:]
    assert len(pages) == 3 and "Stopped (Ctrl-C)." in text
    tag = made[0]
    assert "The demo removed what it made" in text
    _edu("ps")
    assert clean_after(before) == {}
    for listing in (_edu("ps", "-a").stdout, _edu("images").stdout):
        assert tag not in listing
    assert not [p for p in os.listdir("/tmp") if p.startswith(tag)]


def test_without_a_terminal_it_runs_straight_through(root, busybox):
    out = subprocess.run([sys.executable, "-m", "edu_cli.main", "demo", "03"],
                         stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.count(PROMPT.rstrip()) >= 3  # the same pages, no waiting
    assert "$ edu run -d --name demo-03-" in out.stdout


def test_the_listing_and_an_unknown_lesson():
    listing = _edu("demo")
    assert listing.returncode == 0
    for number in ("00", "01", "02", "03", "04", "05", "06", "07", "08", "09", "10"):
        assert f"\n{number}  " in listing.stdout
    assert max(len(line) for line in listing.stdout.splitlines()) <= 80
    bad = _edu("demo", "11")
    assert bad.returncode == 125 and bad.stdout == ""
    assert bad.stderr.count("\n") == 1 and "there is no lesson '11'" in bad.stderr
    assert "00, 01, 02, 03, 04, 05, 06, 07, 08, 09, 10" in bad.stderr
