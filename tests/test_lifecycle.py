"""Detached containers and their lifecycle, through the CLI as a student types it:
-d, ps, logs (-f), stop, kill, rm, pause/unpause, --restart, --init, -it with Ctrl-P Ctrl-Q
and attach, and what happens when the supervisor itself is killed."""

from __future__ import annotations

import os
import pty
import re
import select
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from conftest import need, wait_for

from edu_runtime import paths
from edu_runtime.kernel import pid_alive
from edu_runtime.life import states


@pytest.fixture(autouse=True)
def _busybox(python):
    need(os.geteuid() == 0, "root")
    subprocess.run([python, "-m", "edu_cli.main", "bootstrap", "busybox"], check=True,
                   capture_output=True)


@pytest.fixture
def edu(python):
    made = []

    def run(*argv, check=True, timeout=60):
        out = subprocess.run([python, "-m", "edu_cli.main", *argv], capture_output=True,
                             text=True, timeout=timeout)
        if check:
            assert out.returncode == 0, out.stderr
        return out
    run.name = lambda: made.append(f"t-{uuid.uuid4().hex[:8]}") or made[-1]
    yield run
    for name in made:
        subprocess.run([python, "-m", "edu_cli.main", "rm", "-f", name], capture_output=True)


def status(name: str) -> dict:
    return states.find(name)


def test_detached_ps_logs_stop_rm(edu):
    name = edu.name()
    cid = edu("run", "-d", "--name", name, "busybox", "sh", "-c",
              "echo out; echo err >&2; exec sleep 100").stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{64}", cid)
    assert wait_for(lambda: "out" in edu("logs", name).stdout)
    logs = edu("logs", name)
    assert logs.stdout == "out\n" and logs.stderr == "err\n"
    ps = edu("ps").stdout
    assert name in ps and "Up " in ps and cid[:12] in ps
    dup = edu("run", "-d", "--name", name, "busybox", "true", check=False)
    assert dup.returncode == 125 and "already in use" in dup.stderr
    refused = edu("rm", name, check=False)
    assert refused.returncode == 1 and "Stop the container" in refused.stderr
    pid = status(name)["pid"]
    edu("stop", "-t", "1", name)
    assert status(name)["status"] == "exited" and status(name)["exit_code"] == 137
    assert not pid_alive(pid)
    assert name in edu("ps", "-a").stdout and name not in edu("ps").stdout
    edu("rm", name)
    assert not (paths.state_dir() / "containers" / cid).exists()


def test_logs_follow_until_exit(edu):
    name = edu.name()
    edu("run", "-d", "--name", name, "busybox", "sh", "-c",
        "for i in 1 2 3; do echo line$i; sleep 0.3; done")
    out = edu("logs", "-f", name, timeout=30)
    assert out.stdout.split() == ["line1", "line2", "line3"]
    assert edu("logs", "--tail", "1", name).stdout == "line3\n"


def test_pause_unpause_and_invalid_transitions(edu):
    name = edu.name()
    edu("run", "-d", "--name", name, "busybox", "sleep", "100")
    wait_for(lambda: status(name)["status"] == "running")
    edu("pause", name)
    assert "(Paused)" in edu("ps").stdout
    freezer = Path(f"/sys/fs/cgroup/freezer/edu/{status(name)['id']}/freezer.state")
    if freezer.exists():
        assert freezer.read_text().strip() == "FROZEN"
    again = edu("pause", name, check=False)
    assert again.returncode == 1 and "paused" in again.stderr
    edu("unpause", name)
    assert "(Paused)" not in edu("ps").stdout
    edu("kill", name)
    assert wait_for(lambda: status(name)["status"] == "exited")
    bad = edu("pause", name, check=False)
    assert bad.returncode == 1 and "exited" in bad.stderr


def test_restart_on_failure_and_always_then_stop(edu):
    name = edu.name()
    edu("run", "-d", "--restart", "on-failure:2", "--name", name, "busybox", "sh", "-c",
        "echo run; exit 3")
    assert wait_for(lambda: edu("logs", name).stdout.count("run") == 3
                    and status(name)["status"] == "exited", timeout=15)
    time.sleep(1.5)
    assert edu("logs", name).stdout.count("run") == 3  # 1 start + 2 restarts, no more
    assert status(name)["exit_code"] == 3

    name2 = edu.name()
    edu("run", "-d", "--restart", "always", "--name", name2, "busybox", "sh", "-c",
        "echo again; sleep 0.2")
    assert wait_for(lambda: edu("logs", name2).stdout.count("again") >= 3, timeout=15)
    edu("stop", "-t", "1", name2)
    restarts = status(name2)["restart_count"]
    time.sleep(1.5)
    # A stopped container stays stopped: no restart after `edu stop` returned.
    assert status(name2)["status"] == "exited"
    assert status(name2)["restart_count"] == restarts


def test_init_forwards_sigterm(edu):
    plain, tini = edu.name(), edu.name()
    edu("run", "-d", "--name", plain, "busybox", "sleep", "100")
    edu("run", "-d", "--init", "--name", tini, "busybox", "sleep", "100")
    wait_for(lambda: status(tini)["status"] == "running" and status(plain)["status"] ==
             "running")
    edu("stop", "-t", "2", tini)
    edu("stop", "-t", "2", plain)
    # With tini the SIGTERM reached sleep (143); without it PID 1 ignored it until SIGKILL.
    assert status(tini)["exit_code"] == 143
    assert status(plain)["exit_code"] == 137


def _pty_run(argv: list[str]):
    pid, fd = pty.fork()
    if pid == 0:
        os.execvp(argv[0], argv)
    return pid, fd


def _read_until(fd: int, needle: bytes, timeout: float = 15) -> bytes:
    data = b""
    deadline = time.monotonic() + timeout
    while needle not in data and time.monotonic() < deadline:
        r, _, _ = select.select([fd], [], [], 0.2)
        if r:
            try:
                data += os.read(fd, 4096)
            except OSError:
                break
    return data


def test_it_detach_with_ctrl_p_ctrl_q_and_attach(edu, python):
    name = edu.name()
    pid, fd = _pty_run([python, "-m", "edu_cli.main", "run", "-it", "--name", name,
                        "busybox", "sh"])
    assert b"#" in _read_until(fd, b"# ")
    os.write(fd, b"echo hello-$((40+2))\r")
    assert b"hello-42" in _read_until(fd, b"hello-42")
    os.write(fd, b"\x10\x11")  # Ctrl-P Ctrl-Q
    _, st = os.waitpid(pid, 0)
    os.close(fd)
    assert os.WEXITSTATUS(st) == 0
    assert status(name)["status"] == "running"  # detached, still running

    pid, fd = _pty_run([python, "-m", "edu_cli.main", "attach", name])
    time.sleep(0.5)
    os.write(fd, b"echo back-$((1+1))\r")
    assert b"back-2" in _read_until(fd, b"back-2")
    os.write(fd, b"exit 5\r")
    _read_until(fd, b"never", timeout=3)
    _, st = os.waitpid(pid, 0)
    os.close(fd)
    assert os.WEXITSTATUS(st) == 5
    assert wait_for(lambda: status(name)["status"] == "exited")


def test_killed_supervisor_leaves_nothing_the_next_command_does_not_clean(edu):
    name = edu.name()
    edu("run", "-d", "--name", name, "busybox", "sleep", "100")
    rec = status(name)
    sup = rec["owner"]
    os.kill(sup, signal.SIGKILL)
    assert wait_for(lambda: not pid_alive(rec["pid"]))  # PDEATHSIG took the container
    out = edu("ps", "-a").stdout  # the next command cleans up
    assert name in out and "Exited (137)" in out
    cg = [Path(p) for p in rec["cgroup"].values()]
    assert not any(p.exists() for p in cg)
    # Its address, veth and the bridge's rules went too (no other container uses them).
    bridge = (rec.get("network") or {}).get("veth")
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert not bridge or bridge not in links


def test_restart_policy_is_checked(edu):
    """A policy Docker would refuse is refused with the choices, before anything runs;
    unless-stopped is taken (as always: edu has no daemon to restart)."""
    before = {r["id"] for r in states.records()}
    for bad in ("bogus", "on-failure:x", "always:3"):
        out = edu("run", "-d", "--restart", bad, "busybox", "true", check=False)
        assert out.returncode == 125 and "invalid restart policy" in out.stderr
        assert "on-failure[:N]" in out.stderr
    assert {r["id"] for r in states.records()} == before
    name = edu.name()
    edu("run", "-d", "--restart", "unless-stopped", "--name", name, "busybox", "sleep", "30")
    assert status(name)["restart"] == "always"
