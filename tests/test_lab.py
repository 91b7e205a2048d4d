"""`make lab` starts a real JupyterLab on the course: start it the same way and ask it."""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from conftest import REPO


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def lab_server(tmp_path, env=None):
    """scripts/lab (what `make lab` runs) on a free port with a known token; yields
    (base URL, token, output) and stops it. ``output`` fills in when it has stopped.
    EDU_NOTEBOOK_DIR in ``env`` serves other notebooks than the course's."""
    port, token = free_port(), secrets.token_hex(16)
    env = dict(env or os.environ, JUPYTER_RUNTIME_DIR=str(tmp_path),
               JUPYTER_CONFIG_DIR=str(tmp_path))
    lab = subprocess.Popen(
        [str(REPO / "scripts/lab"), f"--port={port}", f"--IdentityProvider.token={token}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    output: list[str] = []
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and lab.poll() is None:
            try:
                with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2):
                    break
            except OSError:
                time.sleep(0.3)
        else:
            raise AssertionError(f"lab did not answer; exit code {lab.poll()}")
        yield base, token, output
    finally:
        with contextlib.suppress(ProcessLookupError):  # it may have exited on its own
            os.killpg(lab.pid, signal.SIGTERM)
        try:
            out, _ = lab.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(lab.pid, signal.SIGKILL)
            out, _ = lab.communicate()
        output.append(out.decode(errors="replace"))


def test_lab_serves_the_course_with_a_token(tmp_path):
    with lab_server(tmp_path) as (base, token, output):
        # The token is required: without it the API refuses.
        try:
            urllib.request.urlopen(f"{base}/api/contents", timeout=5)
            raise AssertionError("the API answered without the token")
        except urllib.error.HTTPError as exc:
            assert exc.code == 403
        with urllib.request.urlopen(f"{base}/api/contents?token={token}", timeout=5) as r:
            names = [item["name"] for item in json.load(r)["content"]]
        assert "00-start-here.ipynb" in names
        # The start page is the lab's default URL.
        with urllib.request.urlopen(f"{base}/?token={token}", timeout=10) as r:
            assert urllib.parse.urlparse(r.url).path == "/lab/tree/00-start-here.ipynb"
    text = output[0]
    assert "127.0.0.1" in text and "0.0.0.0" not in text.split("is running at")[-1]


def login_env() -> dict[str, str]:
    """What a new login shell of this user has: no venv activated, no .venv/bin on PATH."""
    out = subprocess.run(["env", "-i", f"HOME={os.path.expanduser('~')}", "bash", "-lc",
                          "env -0"], capture_output=True, check=True).stdout.decode()
    env = dict(item.split("=", 1) for item in out.split("\0") if "=" in item)
    assert str(REPO / ".venv/bin") not in env["PATH"].split(":")
    return env


def test_a_new_shell_finds_edu_after_setup():
    """The README's commands are plain `edu ...`: after its set-up (which `make test` ran),
    a new login shell finds this clone's edu and it works."""
    out = subprocess.run(["bash", "-lc", "command -v edu && edu --version"],
                         env=login_env(), capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    found, version = out.stdout.splitlines()
    assert os.path.realpath(found) == os.path.realpath(REPO / ".venv/bin/edu")
    assert version.startswith("edu ")


def test_a_terminal_in_the_lab_finds_edu_and_the_venvs_python(tmp_path):
    """A terminal opened inside JupyterLab (what lessons send students to) has the course's
    edu and python first on PATH, even when the lab was started from a plain login shell."""
    import websocket

    with lab_server(tmp_path, env=login_env()) as (base, token, _):
        req = urllib.request.Request(f"{base}/api/terminals?token={token}", method="POST")
        with urllib.request.urlopen(req, timeout=10) as r:
            name = json.load(r)["name"]
        ws = websocket.create_connection(
            f"ws://127.0.0.1:{base.rsplit(':', 1)[1]}/terminals/websocket/{name}"
            f"?token={token}", timeout=30)
        try:
            ws.send(json.dumps(["stdin", "echo EDU=$(command -v edu) PY=$(command -v python)"
                                         " END\r"]))
            seen = ""
            deadline = time.monotonic() + 30
            while not re.search(r"EDU=(\S*) PY=(\S*) END", seen):
                assert time.monotonic() < deadline, seen
                kind, *data = json.loads(ws.recv())
                if kind == "stdout":
                    seen += data[0]
        finally:
            ws.close()
            urllib.request.urlopen(urllib.request.Request(
                f"{base}/api/terminals/{name}?token={token}", method="DELETE"), timeout=10)
    edu, py = re.search(r"EDU=(\S*) PY=(\S*) END", seen).groups()
    assert edu == str(REPO / ".venv/bin/edu")
    assert py == str(REPO / ".venv/bin/python")


def test_the_lab_asks_no_news_and_checks_no_updates(tmp_path):
    """JupyterLab's first start asks whether to fetch news, over the first lesson: `make lab`
    answers no for the course (and an offline room has no updates to check)."""
    import sys

    setting = "@jupyterlab/apputils-extension:notification"
    with lab_server(tmp_path) as (base, token, _):
        with urllib.request.urlopen(f"{base}/lab/api/settings/{setting}?token={token}",
                                    timeout=10) as r:
            served = json.load(r)["schema"]["properties"]  # overrides apply to defaults
    assert served["fetchNews"]["default"] == "false"
    assert served["checkForUpdates"]["default"] is False
    # JupyterLab's own defaults would ask (and check): the course's overrides answered.
    shipped = json.loads((Path(sys.prefix) / "share/jupyter/lab/schemas/@jupyterlab"
                          / "apputils-extension/notification.json").read_text())["properties"]
    assert shipped["fetchNews"]["default"] != "false"
