"""The process table as lesson 03 reads it: ancestry up to PID 1, listening sockets, the
forest drawing; on real processes of this test (no root needed)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from edu_runtime import proctree


@pytest.fixture
def sleeper():
    """A child ``sleep`` of this test, with a child of its own (sh -c 'sleep & wait')."""
    proc = subprocess.Popen(["sh", "-c", "sleep 60 & wait"])
    try:
        for _ in range(200):
            kids = proctree.children(proc.pid)
            if kids:
                break
            import time

            time.sleep(0.01)
        yield proc, kids[0]
    finally:
        proc.kill()
        proc.wait()
        for kid in proctree.children(proc.pid):
            os.kill(kid, 9)


def test_info_of_this_process():
    me = proctree.info(os.getpid())
    assert me["pid"] == os.getpid() and me["ppid"] == os.getppid()
    assert me["uid"] == os.getuid() and me["user"]
    assert "python" in me["args"][0]
    assert me["nspid"][-1] == os.getpid()  # innermost pid namespace last: ours
    assert set(me["ns"]) >= {"pid", "mnt", "net", "uts"}
    assert me["pss_kib"] is None or me["pss_kib"] > 0
    assert proctree.info(2 ** 22 + 7) == {}  # no such process: nothing, not an error


def test_ancestry_goes_from_the_process_up_to_pid_1(sleeper):
    proc, sleep_pid = sleeper
    chain = proctree.ancestry(sleep_pid)
    pids = [r["pid"] for r in chain]
    assert pids[:3] == [sleep_pid, proc.pid, os.getpid()]
    assert chain[0]["name"] == "sleep" and chain[1]["name"] == "sh"
    assert pids[-1] == 1 or chain[-1]["ppid"] == 0
    assert proctree.children(proc.pid) == [sleep_pid]
    assert sleep_pid in proctree.named("sleep")


def test_listening_finds_a_unix_socket_by_its_path(tmp_path):
    path = tmp_path / "api.sock"
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(path))
        assert str(path) not in proctree.listening(os.getpid())  # bound, not yet listening
        s.listen(1)
        assert str(path) in proctree.listening(os.getpid())
    assert str(path) not in proctree.listening(os.getpid())


def test_tree_draws_children_under_parents_with_notes(sleeper):
    proc, sleep_pid = sleeper
    rows = proctree.ancestry(sleep_pid)[:3]
    text = proctree.tree(rows, {sleep_pid: "<- the container's PID 1"}, width=90)
    lines = text.splitlines()
    assert lines[0].split() == ["PID", "PPID", "USER", "COMMAND"]
    assert str(os.getpid()) in lines[1] and "└─" not in lines[1]
    assert "└─ sh -c" in lines[2]
    assert "   └─ sleep 60" in lines[3] and lines[3].endswith("<- the container's PID 1")
    assert all(len(line) <= 90 for line in lines)


def test_a_long_command_line_is_cut_to_the_width():
    row = {"pid": 10, "ppid": 1, "user": "a-very-long-user-name", "name": "x",
           "args": [sys.executable, "-c", "x" * 300]}
    (line,) = proctree.tree([row], width=80).splitlines()[1:]
    assert len(line) <= 80 and line.endswith("…")
