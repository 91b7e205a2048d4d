"""The thin `edu run` (edu_cli/fastrun.py) and the supervisor's side of it (life/supervisor.py).

The supervisor makes a thin run's container and forks a shim to start it; the cleanup after
killed `edu` processes is split around that fork (issue 18): the records before it (a killed
run's name must be free again), the kernel objects after it, beside the start.
"""

from __future__ import annotations

import json
import secrets
import subprocess
from pathlib import Path

import hoststate

from edu_runtime import paths
from edu_runtime.life import client

KILLED_RUN = """
import os
from edu_runtime.container import Container
c = Container("busybox", ["sleep", "60"], name={name!r}, remove=True, network="none",
              fork_here=True)
c.start()
print(c.id, flush=True)
os.kill(os.getpid(), 9)
"""


def thin_run(python: str, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([python, "-m", "edu_cli.main", "run", *argv], capture_output=True,
                          text=True, timeout=120)


def test_a_thin_run_takes_the_name_of_a_killed_runs_container_and_cleans_up_after_it(
        busybox, python):
    """A SIGKILLed `edu run --rm --name N` leaves a record that says running: the next thin
    `edu run --name N` finds N free (the supervisor reads the records before it makes the
    container), and its cleanup leaves the host as it was, with no other command."""
    assert thin_run(python, "--rm", "--network", "none", "busybox", "true").returncode == 0
    supervisor = client.running_pid()
    assert supervisor
    before = hoststate.snapshot()
    name = "thin-" + secrets.token_hex(4)
    killed = subprocess.run([python, "-c", KILLED_RUN.format(name=name)], capture_output=True,
                            text=True, timeout=60)
    assert killed.returncode == -9, killed.stderr
    cid = killed.stdout.strip()
    record = json.loads((paths.state_dir() / "containers" / cid / "state.json").read_text())
    assert (record["status"], record["name"]) == ("running", name)

    out = thin_run(python, "--rm", "--network", "none", "--name", name, "busybox", "echo",
                   "named")
    assert (out.returncode, out.stdout, out.stderr) == (0, "named\n", "")
    assert client.running_pid() == supervisor  # the thin path: the same warm supervisor
    assert hoststate.wait_clean(before, mine={cid}) == {}


def calls_of(trace: str, step: str) -> list[str]:
    """The calls listed under ``step`` in an ``edu run --trace`` timeline."""
    lines, calls, inside = trace.splitlines(), [], False
    for line in lines:
        if not line.startswith(" "):
            inside = line.split()[:1] == [step]
        elif inside:
            calls.append(line.strip())
    return calls


def test_thin_bridge_runs_find_the_bridge_and_dockers_chain_checked_once_by_the_supervisor(
        busybox, python):
    """Every thin run's shim is a fork of the supervisor: what the supervisor has checked,
    the shim knows. The supervisor checks the bridge and DOCKER-USER once, before its first
    fork; a shim that knew nothing made four netlink requests for the bridge and started
    iptables three times, on every run (about 40 ms)."""
    client.shutdown()
    started = thin_run(python, "--rm", "--network", "none", "busybox", "true")
    assert started.returncode == 0, started.stderr  # no bridge run made it: nothing known
    runs = [thin_run(python, "--rm", "--trace", "busybox", "true") for _ in range(3)]
    assert [r.returncode for r in runs] == [0, 0, 0], runs[-1].stderr
    assert client.running_pid()
    for later in runs[1:]:  # the first may have made the bridge: the supervisor checks after
        assert calls_of(later.stderr, "bridge") == []
        assert not [c for c in calls_of(later.stderr, "nat") if c.startswith("iptables")]
        assert calls_of(later.stderr, "veth")[0].startswith("netlink(RTM_NEWLINK, create up")


def test_the_installed_edu_starts_python_without_site_and_sets_it_up_when_needed(
        busybox, python, tmp_path):
    """scripts/setup.sh writes .venv/bin/edu as a launcher (edu_cli/launcher.py): python -S,
    so a thin `edu run` never pays for `site` and the venv's .pth files; a command that
    needs a package from site-packages (compose reads YAML) still finds it."""
    edu = Path(python).parent / "edu"
    assert edu.read_text().splitlines()[0].endswith(" -S")
    assert thin_run(python, "--rm", "--network", "none", "busybox", "true").returncode == 0
    thin = subprocess.run([python, "-S", "-X", "importtime", str(edu), "run", "--rm",
                           "--network", "none", "busybox", "echo", "thin"],
                          capture_output=True, text=True, timeout=60)
    assert (thin.returncode, thin.stdout) == (0, "thin\n"), thin.stderr
    imported = {line.split("|")[-1].strip() for line in thin.stderr.splitlines()
                if line.startswith("import time:")}
    assert "edu_cli.fastrun" in imported
    assert not imported & {"site", "yaml", "edu_runtime.container"}
    (tmp_path / "compose.yaml").write_text("services:\n  web:\n    image: busybox\n")
    ps = subprocess.run([str(edu), "compose", "-f", str(tmp_path / "compose.yaml"), "ps"],
                        capture_output=True, text=True, timeout=60)
    assert ps.returncode == 0, ps.stderr
    assert ps.stdout.split()[:2] == ["NAME", "IMAGE"]


def _syscall(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/syscall").read_text().split()[0]
    except (OSError, IndexError):
        return ""


def test_edu_wait_gets_a_thin_runs_exit_code_even_with_rm(busybox, python):
    """`edu wait` (``docker wait``) on a container a thin client's shim runs blocks until it
    ends and prints its code, also for --rm, whose record is gone by then: the shim exits
    with the code, and the supervisor keeps it (before, it answered at once, with no code)."""
    from conftest import wait_for

    from edu_runtime.life import states

    name = "thin-" + secrets.token_hex(4)
    run = subprocess.Popen(
        [python, "-m", "edu_cli.main", "run", "--rm", "--network", "none", "--name", name,
         "busybox", "sh", "-c", "until [ -e /tmp/go ]; do sleep 0.05; done; exit 3"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert wait_for(lambda: any(r.get("name") == name and r.get("status") == "running"
                                    for r in states.records()), timeout=60), "never ran"
        cid = states.find(name)["id"]
        waiter = subprocess.Popen([python, "-m", "edu_cli.main", "wait", name],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # Released only once the waiter has found the container and sleeps between looks
        # (clock_nanosleep or nanosleep on x86-64): else --rm could take it first.
        assert wait_for(lambda: _syscall(waiter.pid) in ("230", "35")
                        or waiter.poll() is not None, timeout=60)
        assert waiter.poll() is None, waiter.communicate()
        attach = subprocess.run([python, "-m", "edu_cli.main", "attach", name],
                                capture_output=True, text=True, timeout=60,
                                stdin=subprocess.DEVNULL)
        assert attach.returncode == 1 and attach.stdout == "", attach  # (it printed raw JSON)
        assert "cannot attach" in attach.stderr and attach.stderr.count("\n") == 1, attach
        out = subprocess.run([python, "-m", "edu_cli.main", "exec", name, "touch", "/tmp/go"],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert run.wait(timeout=60) == 3
        assert waiter.communicate(timeout=60) == ("3\n", "")
        assert waiter.returncode == 0
        assert client.ask({"op": "wait", "id": cid}).get("exit_code") == 3
    finally:
        run.kill()
        run.wait()
