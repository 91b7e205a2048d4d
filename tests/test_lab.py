"""`make lab` starts a real JupyterLab on the course: start it the same way and ask it."""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request

from conftest import REPO


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_lab_serves_the_course_with_a_token(tmp_path):
    port, token = free_port(), secrets.token_hex(16)
    env = dict(os.environ, JUPYTER_RUNTIME_DIR=str(tmp_path), JUPYTER_CONFIG_DIR=str(tmp_path))
    lab = subprocess.Popen(
        [str(REPO / "scripts/lab"), f"--port={port}", f"--IdentityProvider.token={token}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        status = None
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and lab.poll() is None:
            try:
                with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2) as r:
                    status = json.load(r)
                break
            except OSError:
                time.sleep(0.3)
        assert status is not None, f"lab did not answer; exit code {lab.poll()}"
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
    finally:
        os.killpg(lab.pid, signal.SIGTERM)
        try:
            out, _ = lab.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(lab.pid, signal.SIGKILL)
            out, _ = lab.communicate()
    text = out.decode(errors="replace")
    assert "127.0.0.1" in text and "0.0.0.0" not in text.split("is running at")[-1]
