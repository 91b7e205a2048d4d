"""Lesson 07's by-hand steps in a real JupyterLab terminal, as a student types them: Debian's
Chromium, driven by Playwright, opens a terminal from the lab's launcher (started as
`make lab` starts it) and types `edu run -it`, Ctrl-P Ctrl-Q, `edu exec`, `edu attach`,
Enter and `exit`. What only a browser can show: that the lab's terminal has `edu` on its
PATH, and that xterm.js hands Ctrl-P and Ctrl-Q to the terminal (the browser keeps neither).
The screen is a canvas, so what happened is read from the container's state and from files
the typed commands write."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid

from conftest import wait_for
from test_browser import browser  # noqa: F401 - the fixture: Debian's headless Chromium
from test_lab import lab_server


def state(name: str) -> str:
    out = subprocess.run([sys.executable, "-m", "edu_cli.main", "inspect", "--type",
                          "container", name], capture_output=True, text=True)
    return json.loads(out.stdout)[0]["State"]["Status"] if out.returncode == 0 else ""


def inside(name: str, *argv: str) -> str:
    return subprocess.run([sys.executable, "-m", "edu_cli.main", "exec", name, *argv],
                          capture_output=True, text=True).stdout


def test_run_it_detach_exec_attach_and_exit_by_hand(browser, tmp_path, busybox):  # noqa: F811
    name, seen = f"t-hand-{uuid.uuid4().hex[:6]}", tmp_path / "seen"
    try:
        with lab_server(tmp_path) as (base, token, _):
            page = browser.new_page()
            page.goto(f"{base}/lab?token={token}")
            page.click(".jp-LauncherCard:has-text('Terminal')", timeout=60_000)  # New > Terminal
            page.wait_for_selector(".jp-Terminal .xterm", timeout=60_000)
            page.click(".jp-Terminal .xterm")
            keys = page.keyboard
            keys.type(f"edu run -it --network none --name {name} busybox sh\n")
            assert wait_for(lambda: state(name) == "running", 60)
            page.wait_for_timeout(1500)  # for edu to take the keyboard (raw mode flushes)
            keys.type("echo $$ > /pid; tty >> /pid\n")
            assert wait_for(lambda: len(inside(name, "cat", "/pid").split()) == 2, 30)
            keys.press("Control+p")
            keys.press("Control+q")  # back at the lab's own shell, which runs the next line
            page.wait_for_timeout(1000)  # once edu has gone: keys with Ctrl-Q's are dropped
            keys.type(f"edu exec {name} cat /pid > {seen}\n")
            assert wait_for(lambda: seen.exists() and seen.read_text().count("\n") == 2, 30)
            assert seen.read_text().split() == ["1", "/dev/pts/0"]
            assert state(name) == "running"  # detached, not stopped
            keys.type(f"edu attach {name}\n")
            page.wait_for_timeout(1500)  # keys typed before attach relays them are flushed
            keys.press("Enter")
            keys.type("exit\n")
            assert wait_for(lambda: state(name) == "exited", 30)
            page.close()
    finally:
        subprocess.run([sys.executable, "-m", "edu_cli.main", "rm", "-f", name],
                       capture_output=True)
