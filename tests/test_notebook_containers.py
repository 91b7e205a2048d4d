"""Containers from a threaded process (a Jupyter kernel) are forked by a single-threaded
helper, never by the caller: the supervisor as root, the user's own one rootless.

Each test runs its "notebook" as a separate Python process with busy threads, as a kernel
has, so a fork from it could inherit a held lock; a hang fails the test by its timeout.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from accounts import processes
from conftest import REPO, need

from edu_runtime import kernel
from edu_runtime.life import client, states

BUSY_THREADS = textwrap.dedent("""
    import logging, sys, threading, time
    from edu_runtime import Container
    stop = threading.Event()
    def hold_logging_lock():
        while not stop.is_set():
            logging._acquireLock()
            time.sleep(0.001)
            logging._releaseLock()
    def print_a_lot():  # takes and leaves stderr's lock, as a kernel's output thread does
        while not stop.is_set():
            print("", end="", file=sys.stderr, flush=True)
    def spin():  # busy, as a kernel's threads are, without starving the rest of the GIL
        while not stop.is_set():
            sum(range(1000))
            time.sleep(0.001)
    threads = [threading.Thread(target=f, daemon=True)
               for f in (hold_logging_lock, print_a_lot, *[spin] * 6)]
    for t in threads:
        t.start()
    assert threading.active_count() == 9
""")


def notebook(script: str, timeout: float, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run ``script`` after BUSY_THREADS in a new Python process; its JSON line result."""
    out = subprocess.run([sys.executable, "-c", BUSY_THREADS + textwrap.dedent(script)],
                         capture_output=True, text=True, timeout=timeout, cwd=REPO,
                         env={**os.environ, **(env or {})})
    assert out.returncode == 0, out.stderr[-3000:]
    return out


def result(out: subprocess.CompletedProcess) -> dict:
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture
def root_store(busybox):
    """The default store with busybox; the supervisor's own leftovers cleaned first."""
    need(os.geteuid() == 0, "root")


def test_single_threaded_is_read_from_the_kernel():
    code = ("import threading, time; from edu_runtime import kernel; a = kernel.single_threaded();"
            "threading.Thread(target=time.sleep, args=(1,), daemon=True).start();"
            "print(a, kernel.single_threaded())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=REPO, check=True)
    assert out.stdout.split() == ["True", "False"]


def test_200_containers_and_20_steppers_from_a_busy_threaded_process(root_store):
    out = notebook("""
        import json, os
        from edu_runtime.life import client
        parents, codes, records = set(), [], []
        first = Container("busybox", ["sleep", "60"], network="none", remove=True)
        assert not first.fork_here
        first.start()  # alive until killed: its parent can be read without a race
        parents.add(int(open(f"/proc/{first.pid}/status").read().split("PPid:")[1].split()[0]))
        first.kill()
        codes.append(first.wait())
        for i in range(199):
            c = Container("busybox", ["sh", "-c", "exit 3"], network="none", remove=True)
            c.start()
            codes.append(c.wait())
        for i in range(20):
            c = Container("busybox", ["echo", f"stepped {i}"], network="none", remove=True)
            stepper = c.steps()
            records.append([r.name for r in stepper])
            codes.append(c.wait())
        stop.set()
        children = [p for p in os.listdir("/proc") if p.isdigit() and
                    f"PPid:\\t{os.getpid()}\\n" in open(f"/proc/{p}/status").read()]
        print(json.dumps({"parents": sorted(parents), "codes": codes, "records": records,
                          "helper": client.running_pid(), "children": children}))
    """, timeout=600)
    got = result(out)
    helper = got["helper"]
    assert helper and helper != os.getpid()
    assert got["parents"] == [helper]  # the helper forked it, not the notebook
    assert got["codes"] == [137] + [3] * 199 + [0] * 20
    assert all(r[-1] == "exec" and "fork" in r for r in got["records"])
    assert got["children"] == []  # the notebook itself forked nothing
    # What the stepped containers printed reached the notebook's sys.stdout.
    assert [line for line in out.stdout.splitlines() if line.startswith("stepped")] == \
        [f"stepped {i}" for i in range(20)]


def _traces_of(cid: str, pid: int) -> list[str]:
    """Everything of container ``cid`` (PID 1 ``pid``) still on the host: its record, its
    cgroups, mounts, veth, nft rules and processes."""
    from edu_runtime.networks import bridge, nat

    found = []
    if (states.base() / cid).exists():
        found.append("record")
    found += [str(p) for p in Path("/sys/fs/cgroup").glob(f"*/edu/{cid}")]
    found += [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()
              if cid in line]
    found += [name for name in bridge.veth_names(cid) if Path(f"/sys/class/net/{name}").exists()]
    found += nat.rule_lines(f"edu:{cid}") if nat.table_exists() else []
    if pid and kernel.pid_alive(pid):
        found.append(f"process {pid}")
    return found


def _shared() -> dict:
    """What containers share and a live supervisor keeps warm: the bridges, the default
    network's rules, the supervisor itself. Not leaks; they must stay as they were."""
    from edu_runtime.networks import nat

    links = subprocess.run(["ip", "-o", "link", "show", "type", "bridge"], capture_output=True,
                           text=True).stdout
    return {"bridges": sorted(line.split(":")[1].strip() for line in links.splitlines()),
            "network rules": nat.rule_lines("edu-net:edu0") if nat.table_exists() else [],
            "helper": client.running_pid()}


def test_a_kernel_killed_mid_step_leaves_nothing_within_5_s(root_store):
    # The warm bridge and its rules belong to the live supervisor: made first, kept.
    warm = notebook("""
        c = Container("busybox", ["true"], remove=True)
        c.start(); print(c.wait())
    """, timeout=120)
    assert warm.stdout.strip().splitlines()[-1] == "0"
    before = _shared()
    kernel_proc = subprocess.Popen([sys.executable, "-c", BUSY_THREADS + textwrap.dedent("""
        c = Container("busybox", ["sleep", "60"], remove=True)
        s = c.steps()
        while s.upcoming.name != "pivot_root":
            s.advance()
        print("mid-step", c.id, c.pid, flush=True)
        time.sleep(600)
    """)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        line = kernel_proc.stdout.readline().split()
        assert line[:1] == ["mid-step"], line
        cid, pid = line[1], int(line[2])
        made = _traces_of(cid, pid)  # half-made: record, cgroups, mounts, veth, rules
        assert {"record", f"process {pid}"} <= set(made) and len(made) > 6, made
    finally:
        kernel_proc.kill()
        kernel_proc.wait()
    killed = time.monotonic()
    while _traces_of(cid, pid):
        assert time.monotonic() - killed < 5, _traces_of(cid, pid)
        time.sleep(0.1)
    assert _shared() == before


@pytest.fixture
def private_store(busybox, tmp_path, python):
    """A state and run dir of our own (busybox in it) and a supervisor that idles out
    after 1 s, so a stepper's patience is tested in seconds, not minutes."""
    env = {"EDU_STATE_DIR": str(tmp_path / "state"), "EDU_RUN_DIR": str(tmp_path / "run"),
           "EDU_SUPERVISOR_IDLE": "1"}
    subprocess.run([python, "-m", "edu_cli.main", "bootstrap", "busybox"], check=True,
                   capture_output=True, env={**os.environ, **env})
    yield env
    subprocess.run([python, "-c", "from edu_runtime.life import client; client.shutdown()"],
                   env={**os.environ, **env}, capture_output=True)


def test_an_open_stepper_keeps_its_helper_past_the_idle_time(private_store):
    out = notebook("""
        import json
        from edu_runtime.life import client
        c = Container("busybox", ["echo", "late"], network="none", remove=True)
        s = c.steps()
        s.advance()
        helper = client.running_pid()
        time.sleep(3)  # three times the helper's idle time, between two steps
        names = [r.name for r in s]
        code = c.wait()
        print(json.dumps({"same": helper == client.running_pid(), "names": names, "code": code}))
    """, timeout=120, env=private_store)
    got = result(out)
    assert got["same"] and got["code"] == 0 and got["names"][-1] == "exec"


def test_a_students_notebook_container_is_forked_by_their_own_helper(student):
    boot = student.edu("bootstrap", "busybox", timeout=120)
    assert boot.returncode == 0, boot.stderr
    script = BUSY_THREADS + textwrap.dedent("""
        import json, os
        from edu_runtime.life import client
        c = Container("busybox", ["sh", "-c", "id -u; sleep 2"], network="none", remove=True)
        c.start()
        ppid = open(f"/proc/{c.pid}/status").read().split("PPid:")[1].split()[0]
        helper = client.running_pid()
        code = c.wait()
        stop.set()
        print(json.dumps({"ppid": int(ppid), "helper": helper, "me": os.getpid(),
                          "code": code}))
    """)
    earlier = processes(student.uid)  # what earlier tests of this student left idling
    out = student.run([student.python, "-c", script], env={"EDU_SUPERVISOR_IDLE": "1"},
                      timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["ppid"] == got["helper"] != got["me"] and got["code"] == 0
    assert "0" in out.stdout.split()  # uid 0 inside: a rootless container
    # The helper is the student's own, and goes once idle: nothing of theirs is left.
    deadline = time.monotonic() + 20
    while set(processes(student.uid)) - set(earlier):
        assert time.monotonic() < deadline, processes(student.uid)
        time.sleep(0.2)


def test_a_stepper_whose_helper_dies_says_so(root_store):
    out = notebook("""
        import json, os, signal
        from edu_runtime.life import client
        from edu_runtime.steps import StepError
        c = Container("busybox", ["true"], network="none", remove=True)
        s = c.steps()
        s.advance()
        os.kill(client.running_pid(), signal.SIGKILL)
        try:
            s.run_rest()
            said = ""
        except StepError as exc:
            said = str(exc)
        print(json.dumps({"said": said}))
    """, timeout=120)
    assert "went away" in result(out)["said"]
    subprocess.run([sys.executable, "-m", "edu_cli.main", "ps"], cwd=REPO, check=True,
                   capture_output=True)  # the next command cleans up after the killed one
    assert not [r for r in states.records() if r.get("status") in ("creating", "running")
                and not kernel.pid_alive(r.get("owner", 0))]


def test_inspect_straight_after_run_shows_the_end(root_store):
    """The supervisor answers a waiting notebook before its teardown; ``run()`` still returns
    only once the record says how the container ended, so ``inspect()`` straight after it
    shows ExitCode 137 and OOMKilled, as after ``docker run``, every time."""
    out = notebook("""
        import json
        from edu_runtime.life import control
        ends = []
        for i in range(5):
            c = Container("busybox", ["sh", "-c", "tail /dev/zero"], network="none",
                          memory="32m", name=f"t-oom-{os.getpid()}-{i}")
            code = c.run()
            state = control.inspect(c.id)["State"]
            ends.append([code, state["Status"], state["ExitCode"], state["OOMKilled"]])
            control.remove(c.id)
        stop.set()
        print(json.dumps(ends))
    """.replace("os.getpid()", "__import__('os').getpid()"), timeout=120)
    ends = json.loads(out.stdout.strip().splitlines()[-1])
    assert ends == [[137, "exited", 137, True]] * 5
