"""The notebook's terminal (edu_runtime/notebook/terminal.py), and what runs in it.

- A program started in it has a real pty of the given size as its controlling terminal, in a
  session of its own; it is started without ``os.fork()`` in Python, from a threaded
  process (a Jupyter kernel is one); keys typed reach it; Ctrl-C interrupts it; reading
  times out with the screen in the message; closing the terminal hangs the program up.
- ``edu run -it`` in it: the shell is PID 1 and its terminal is the container's own
  (``tty`` says /dev/pts/0 of the container's devpts, as under Docker, with the size of the
  terminal it was started from); Ctrl-P Ctrl-Q detaches and leaves it running; ``edu exec
  -it`` is a second process with a terminal of its own, and its ``exit`` leaves PID 1
  running; ``edu attach`` comes back to PID 1, whose ``exit`` stops the container.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import uuid

import pytest
from conftest import need, wait_for

from edu_runtime.notebook.terminal import CTRL_C, DETACH, PROMPT, Terminal, edu, plain


def test_plain_is_what_a_person_reads():
    assert plain(b"\x1b[?2004hroot@x:/# ls\r\n\x1b[01;34mbin\x1b[0m\r\n") == "root@x:/# ls\nbin\n"
    assert plain(b"\x1b]0;title\x07abc\rX") == "Xbc"  # a window title; \r returns
    assert plain(b"abd\bc\x07") == "abc"  # backspace overwrites; a bell is not shown


@pytest.fixture
def threaded():
    """This test process as a Jupyter kernel is: another thread running (and no os.fork)."""
    stop = threading.Event()
    t = threading.Thread(target=stop.wait, name="like-a-kernel")
    t.start()
    real_fork = os.fork

    def no_fork():
        raise AssertionError("os.fork() in a threaded process")
    os.fork = no_fork
    try:
        yield
    finally:
        os.fork = real_fork
        stop.set()
        t.join()


CHILD = r"""
import os, sys
print("tty", os.ttyname(0), os.ttyname(1), os.ttyname(2))
print("size", *os.get_terminal_size(1))
print("leader", os.getsid(0) == os.getpid())
os.close(os.open("/dev/tty", os.O_RDWR))  # fails without a controlling terminal
print("ctty yes")
print("got", input("type: "))
"""


def test_a_program_gets_a_real_terminal_of_its_own(threaded):
    with Terminal([sys.executable, "-c", CHILD], rows=31, cols=97) as t:
        t.expect("type: ")
        t.send("hello\r")
        assert t.wait() == 0
        lines = t.text.splitlines()
    assert lines[0].startswith("tty /dev/pts/") and len(set(lines[0].split()[1:])) == 1
    assert "size 97 31" in lines and "leader True" in lines and "ctty yes" in lines
    assert "type: hello" in lines  # the pty echoed the keys
    assert lines[-1] == "got hello"


def test_ctrl_c_interrupts_and_closing_hangs_up(threaded):
    with Terminal([sys.executable, "-c", "import time; print('ready'); time.sleep(60)"]) as t:
        t.expect("ready")
        t.send(CTRL_C)  # the line discipline sends SIGINT to its foreground process group
        assert t.wait(10) in (-signal.SIGINT, 1, 130)
        assert "KeyboardInterrupt" in t.text or t.returncode == -signal.SIGINT
    t = Terminal(["sh", "-c", "echo up; sleep 60"])
    t.expect("up")
    assert t.close() == -signal.SIGHUP  # as closing a terminal window does


def test_reading_times_out_with_the_screen_and_ends_at_eof():
    with Terminal(["sh", "-c", "echo hello; sleep 5"]) as t:
        with pytest.raises(TimeoutError, match="(?s)waited 0.3 s.*hello"):
            t.expect("never", timeout=0.3)
    with Terminal(["sh", "-c", "echo bye"]) as t:
        with pytest.raises(EOFError, match="bye"):
            t.expect("never")
        assert t.wait() == 0


def test_run_types_a_command_at_a_prompt():
    with Terminal(["sh", "-i"], env={"PS1": "/tmp $ ", "ENV": ""}) as t:
        t.expect(PROMPT)
        assert t.run("echo $((6 * 7))") == "42"
        assert t.run("echo a; echo b") == "a\nb"
        t.send("exit 3\r")
        assert t.wait() == 3


# ---- edu run -it, detach, exec -it, attach --------------------------------------------------

@pytest.fixture
def box(root, busybox):
    name = f"t-{uuid.uuid4().hex[:8]}"
    yield name
    Terminal(edu("rm", "-f", name)).wait(60)


def status(name: str) -> str:
    from edu_runtime.life import states

    return states.find(name)["status"]


def test_run_it_gets_a_terminal_of_its_own_detaches_and_comes_back(box, threaded):
    need(os.path.exists("/usr/bin/setsid"), "util-linux's setsid")
    with Terminal(edu("run", "-it", "--name", box, "busybox", "sh"), rows=33, cols=101) as t:
        t.expect(PROMPT, 60)
        assert t.run("echo $$") == "1"  # the shell is PID 1
        assert t.run("tty") == "/dev/pts/0"  # of the container's own devpts, as Docker's
        assert t.run("ls /dev/pts").split() == ["0", "ptmx"]
        assert t.run("readlink /proc/self/fd/0") == "/dev/pts/0"
        assert t.run("stty size") == "33 101"  # the size of the terminal it came from
        t.run("touch /i-was-here")
        t.send(DETACH)
        assert t.wait() == 0
        assert "detached from " + box in t.text
    assert status(box) == "running"

    with Terminal(edu("exec", "-it", box, "sh")) as t:  # a second process, PID 1 goes on
        t.expect(PROMPT, 30)
        assert t.run("echo $$") != "1"
        assert t.run("ls /i-was-here") == "/i-was-here"  # the same container
        assert t.run("tty").startswith("/dev/pts/")
        t.send("exit\r")
        assert t.wait() == 0
    assert status(box) == "running"

    with Terminal(edu("attach", box)) as t:  # back to PID 1: Enter shows its prompt again
        t.wait_raw(30)  # keys typed before attach relays them are flushed
        t.send("\r")
        t.expect(PROMPT, 30)
        assert t.run("echo $$") == "1"
        t.send("exit 4\r")
        assert t.wait() == 4
    assert wait_for(lambda: status(box) == "exited")


def test_a_failed_it_start_leaves_no_terminal_behind(box):
    """The exec step made the terminal, then exec failed: nothing of it stays open."""
    def ptys() -> int:
        return sum(1 for fd in os.listdir(f"/proc/{sup}/fd")
                   if os.readlink(f"/proc/{sup}/fd/{fd}").endswith("ptmx"))

    from edu_runtime.life import client

    Terminal(edu("run", "-d", "--name", box, "busybox", "sleep", "30")).wait(60)
    sup = client.running_pid()
    before = ptys()
    with Terminal(edu("run", "-it", "--rm", "busybox", "/no/such/program")) as t:
        assert t.wait(60) == 127
        assert "no/such/program" in t.text
    assert ptys() == before


def test_run_it_as_a_user_owns_its_terminal(box):
    """-u: the terminal is the container user's, as runc chowns its console."""
    with Terminal(edu("run", "-it", "--rm", "--network", "none", "-u", "1234", "busybox",
                      "sh", "-c", "ls -ln $(tty)")) as t:
        assert t.wait(60) == 0
    fields = t.text.split()
    assert fields[0].startswith("crw") and fields[2] == "1234" and fields[-1] == "/dev/pts/0"



def test_a_keyboard_that_is_not_a_terminal(root, busybox, tmp_path):
    """Docker's rules when stdin is a file or /dev/null (a CI job, a cron line, a pipe):
    ``-it`` is refused before anything is made; ``-t`` alone does not read stdin; ``-i``
    alone pipes it in. Never a traceback."""
    import subprocess

    from edu_runtime.life import states

    script = tmp_path / "script"
    script.write_text("echo from-the-file\nexit 3\n")
    name = f"t-{uuid.uuid4().hex[:8]}"

    def run(*flags: str, stdin: str = "/dev/null", cmd: tuple = ("sh",)):
        with open(stdin) as f:
            return subprocess.run(edu("run", *flags, "--rm", "--name", name, "--network",
                                      "none", "busybox", *cmd),
                                  stdin=f, capture_output=True, text=True, timeout=60)

    refused = run("-it")
    assert refused.returncode == 1
    assert refused.stderr.startswith("edu: the input device is not a TTY")
    assert name not in {r.get("name") for r in states.records()}  # nothing half-made
    alone = run("-t", cmd=("echo", "hi"))
    assert (alone.returncode, alone.stdout.strip(), alone.stderr) == (0, "hi", "")
    piped = run("-i", stdin=str(script))
    assert (piped.returncode, piped.stdout.strip()) == (3, "from-the-file")
    detached = subprocess.run(edu("run", "-dit", "--name", name, "--network", "none",
                                  "busybox", "sh"), stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=60)
    try:  # -dit attaches no keyboard: a script or CI job starts it, as with Docker
        assert detached.returncode == 0, detached.stderr
        assert states.find(name)["status"] == "running"
    finally:
        subprocess.run(edu("rm", "-f", name), capture_output=True, timeout=60)
    for proc in (refused, alone, piped, detached):
        assert "Traceback" not in proc.stderr
