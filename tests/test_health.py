"""Healthchecks: the state machine on its own, then real detached busybox containers whose
checks the supervisor runs inside them (as ``docker exec`` would), through the CLI as a
student types it.

Checks run every 0.5 s here. No test asserts on timing: each waits (with a bound) for the
state it is about, and asserts on what the record says then.
"""

from __future__ import annotations

import os
import re
import subprocess
import uuid
from pathlib import Path

import docker_reference as ref
import pytest
from conftest import need
from conftest import wait_for as poll

from edu_runtime.life import client, health, states

SECOND = health.SECOND
FAST = ["--health-interval", "0.5s"]


# ---- the state machine, without containers ---------------------------------------------------

def fail(at: float, code: int = 1) -> dict:
    return health.result(at, at, code, "no")


def test_failures_count_after_the_start_period_and_retries_make_it_unhealthy():
    config = {"Test": ["CMD", "x"], "Retries": 2, "StartPeriod": 10 * SECOND}
    h = health.started()
    assert h == {"status": "starting", "failing_streak": 0, "log": []}
    h = health.record(h, config, fail(105), container_started=100, check_started=105)
    assert (h["status"], h["failing_streak"], len(h["log"])) == ("starting", 0, 1)
    h = health.record(h, config, fail(111), 100, 111)  # the start period is over
    assert (h["status"], h["failing_streak"]) == ("starting", 1)
    h = health.record(h, config, fail(112), 100, 112)
    assert (h["status"], h["failing_streak"]) == ("unhealthy", 2)
    h = health.record(h, config, health.result(113, 113, 0, ""), 100, 113)
    assert (h["status"], h["failing_streak"]) == ("healthy", 0)
    # Only a container still starting is spared: once healthy, a failure counts at once.
    h = health.record(h, {**config, "StartPeriod": 3600 * SECOND}, fail(114), 100, 114)
    assert (h["status"], h["failing_streak"]) == ("healthy", 1)
    for at in range(120, 130):
        h = health.record(h, config, fail(at), 100, at)
    assert len(h["log"]) == health.MAX_LOG and h["log"][-1]["start"].startswith("1970")
    assert health.stopped(h)["status"] == "unhealthy"
    assert health.started(h)["log"] == h["log"]  # a restart keeps the log, as Docker's does


def test_flags_merge_and_words_as_docker():
    image = {"Test": ["CMD-SHELL", "test -e /x"], "Interval": SECOND, "Retries": 2}
    assert health.from_flags() is None
    assert health.merge(None, image) == image
    own = health.from_flags("exit 1", timeout="1m30s")
    assert health.merge(own, image) == {"Test": ["CMD-SHELL", "exit 1"], "Interval": SECOND,
                                        "Timeout": 90 * SECOND, "StartPeriod": 0, "Retries": 2}
    assert health.merge(health.from_flags(interval="2s"), image)["Test"] == image["Test"]
    off = health.merge(health.from_flags(disabled=True), image)
    assert off["Test"] == ["NONE"] and health.command(off) is None
    assert health.command(image) == ["/bin/sh", "-c", "test -e /x"]
    assert health.command(image, ["/bin/ash", "-eo"]) == ["/bin/ash", "-eo", "test -e /x"]
    assert health.command({"Test": ["CMD", "true", "x"]}) == ["true", "x"]
    assert health.check({"Test": "wget -q x"})["Test"] == ["CMD-SHELL", "wget -q x"]
    for kw, words in ((dict(cmd="true", disabled=True), "--no-healthcheck conflicts with "
                       "--health-* options"),
                      (dict(interval="-1s"), "--health-interval cannot be negative"),
                      (dict(timeout="soon"), 'time: invalid duration "soon"'),
                      (dict(retries=-1), "--health-retries cannot be negative"),
                      (dict(start_period="10us"), "StartPeriod in Healthcheck cannot be less "
                                                  "than 1ms")):
        with pytest.raises(health.HealthcheckError, match=re.escape(words)):
            health.from_flags(**kw)
    for bad in ({"Test": ["CMD"]}, {"Test": ["RUN", "x"]}, {"Tset": ["CMD", "x"]},
                {"Test": ["CMD", "x"], "Interval": "5s"}, {"Test": ["CMD", "x"], "Retries": -1}):
        with pytest.raises(health.HealthcheckError):
            health.check(bad)
    assert [health.go_duration(s) for s in (0.5, 1, 90, 1.5, 3600)] == [
        "500ms", "1s", "1m30s", "1.5s", "1h0m0s"]


def test_ps_words_and_inspect_shape():
    rec = {"status": "running", "started": 100.0,
           "health": {"status": "starting", "failing_streak": 0, "log": []}}
    assert states.human_status(rec, now=105) == "Up 5 seconds (health: starting)"
    rec["health"] = {"status": "unhealthy", "failing_streak": 3,
                     "log": [health.result(101, 102, -1, "Health check exceeded timeout (1s)")]}
    assert states.human_status(rec, now=105) == "Up 5 seconds (unhealthy)"
    assert states.human_status({**rec, "status": "paused"}, now=105) == "Up 5 seconds (Paused)"
    assert health.health_of(rec) == {"Status": "unhealthy", "FailingStreak": 3, "Log": [
        {"Start": "1970-01-01T00:01:41+00:00", "End": "1970-01-01T00:01:42+00:00",
         "ExitCode": -1, "Output": "Health check exceeded timeout (1s)"}]}
    assert health.health_of({"status": "running"}) is None
    assert states.human_status({"status": "running", "started": 100.0}, now=105) == \
        "Up 5 seconds"


# ---- real containers -------------------------------------------------------------------------

@pytest.fixture
def edu(cli):
    """``edu ARGV...``; ``edu.name()`` names a container removed after the test."""
    return cli


def wait_for(pred, timeout: float = 30.0) -> bool:
    """conftest's poll, with the longer patience a supervisor's checks need."""
    return poll(pred, timeout)


def health_of(name: str) -> dict:
    return states.find(name).get("health") or {}


def status_is(name: str, want: str):
    return lambda: health_of(name).get("status") == want


def ps_status(edu, name: str) -> str:
    """The STATUS column of ``edu ps`` for container ``name`` ('' if it is not listed)."""
    for line in edu("ps").stdout.splitlines():
        if line.split() and line.split()[-1] == name:
            return re.search(r"(Up .*?)(\s{2,}|$)", line).group(1)
    return ""


def processes() -> dict[int, tuple[str, str]]:
    """Every process: pid -> (state letter, command line)."""
    out = {}
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            stat = (p / "stat").read_text()
            cmd = (p / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        out[int(p.name)] = (stat.rpartition(")")[2].split()[0], cmd.strip())
    return out


def in_cgroup(name: str) -> list[str]:
    """The command lines of the processes in a container's cgroup (a check joins it)."""
    cgroup = next(iter(states.find(name)["cgroup"].values()))
    pids = (Path(cgroup) / "cgroup.procs").read_text().split()
    procs = processes()
    return [procs[int(p)][1] for p in pids if int(p) in procs]


def test_a_passing_check_makes_it_healthy_and_ps_says_so(edu):
    name = edu.name()
    edu("run", "-d", "--name", name, "--health-cmd", "test -e /etc/hostname", *FAST,
        "busybox", "sleep", "60")
    assert wait_for(status_is(name, "healthy")), health_of(name)
    assert re.fullmatch(r"Up (Less than a second|\d+ seconds?) \(healthy\)",
                        ps_status(edu, name)), ps_status(edu, name)
    shown = health.health_of(states.find(name))
    assert shown["Status"] == "healthy" and shown["FailingStreak"] == 0
    assert shown["Log"] and all(e["ExitCode"] == 0 and e["Output"] == "" for e in shown["Log"])
    # Made with the run, kept in the container's spec (a restart runs the same check).
    assert states.find(name)["spec"]["healthcheck"]["Test"] == ["CMD-SHELL",
                                                                "test -e /etc/hostname"]


def test_health_starting_until_the_first_check(edu):
    name = edu.name()
    edu("run", "-d", "--name", name, "--health-cmd", "true", "--health-interval", "1h",
        "busybox", "sleep", "60")
    assert wait_for(lambda: ps_status(edu, name).endswith(" (health: starting)")), \
        ps_status(edu, name)


def test_a_start_after_stop_is_starting_again_at_once(edu):
    """A stop leaves the health "unhealthy" (Docker's mark when its monitor closes); the
    next start resets it to "starting" before `edu start` returns, as Docker's does, so
    whoever waits for "healthy" (compose's service_healthy) never reads the old mark."""
    name = edu.name()
    edu("run", "-d", "--name", name, "--health-cmd", "true", "--health-interval", "1h",
        "busybox", "sleep", "60")
    edu("stop", "-t", "0", name)
    assert health_of(name)["status"] == "unhealthy"
    for _ in range(5):
        edu("start", name)
        assert health_of(name)["status"] == "starting"  # at once: no wait_for
        edu("stop", "-t", "0", name)


def test_a_failing_check_turns_unhealthy_after_retries(edu):
    name = edu.name()
    edu("run", "-d", "--name", name, "--health-cmd", "echo sick; exit 3", *FAST,
        "--health-retries", "3", "busybox", "sleep", "60")
    seen = []

    def unhealthy():
        h = health_of(name)
        seen.append((h.get("status"), h.get("failing_streak")))
        return h.get("status") == "unhealthy"
    assert wait_for(unhealthy), seen
    # Every state seen on the way: fewer than 3 failures in a row was still "starting".
    assert all(status == "starting" for status, streak in seen if (streak or 0) < 3), seen
    h = health_of(name)
    assert h["failing_streak"] >= 3
    assert h["log"][-1]["exit_code"] == 3 and h["log"][-1]["output"] == "sick\n"
    assert ps_status(edu, name).endswith(" (unhealthy)")


def test_a_hanging_check_is_killed_at_its_timeout_and_counts_as_a_failure(edu):
    name = edu.name()
    edu("run", "-d", "--name", name, "--health-cmd", "sleep 31; echo never", *FAST,
        "--health-timeout", "0.5s", "--health-retries", "2", "busybox", "sleep", "60")
    assert wait_for(status_is(name, "unhealthy")), health_of(name)
    h = health_of(name)
    assert h["failing_streak"] >= 2
    assert all(e["exit_code"] == -1 and e["output"] == "Health check exceeded timeout (500ms)"
               for e in h["log"]), h["log"]
    # Two checks were killed, and with them the sleep their shell started (its process
    # group): at most the check in flight now is left in the container.
    assert sum(cmd == "sleep 31" for cmd in in_cgroup(name)) <= 1, in_cgroup(name)


def test_failures_in_the_start_period_do_not_count(edu):
    name = edu.name()
    edu("run", "-d", "--name", name, "--health-cmd", "false", *FAST, "--health-retries", "1",
        "--health-start-period", "1h", "busybox", "sleep", "60")
    assert wait_for(lambda: len(health_of(name).get("log") or []) >= 3), health_of(name)
    h = health_of(name)
    assert (h["status"], h["failing_streak"]) == ("starting", 0)
    assert [e["exit_code"] for e in h["log"]] == [1] * len(h["log"])


def test_rm_f_leaves_no_check_process(edu):
    name, marker = edu.name(), f"check-{uuid.uuid4().hex[:8]}"
    edu("run", "-d", "--name", name, "--health-cmd", f"sleep 30; : {marker}",
        "--health-interval", "0.2s", "--health-timeout", "20s", "busybox", "sleep", "60")
    assert wait_for(lambda: any(marker in cmd for _, cmd in processes().values()))
    cgroups = [Path(p) for p in states.find(name)["cgroup"].values()]
    edu("rm", "-f", name)
    supervisor = client.ask({"op": "ping"})["pid"]

    def gone():
        procs = processes()
        zombies = [pid for pid, (state, _) in procs.items() if state == "Z" and
                   Path(f"/proc/{pid}/status").exists() and
                   f"PPid:\t{supervisor}\n" in Path(f"/proc/{pid}/status").read_text()]
        return not zombies and not any(marker in cmd for _, cmd in procs.values())
    assert wait_for(gone)
    assert not any(p.exists() for p in cgroups)  # the check had joined them: none is left


def test_the_api_takes_dockers_shape_and_the_supervisor_runs_it(busybox, python):
    from edu_runtime.container import Container

    need(os.geteuid() == 0, "root")
    with pytest.raises(ValueError, match="Interval in Healthcheck cannot be less than 1ms"):
        Container("busybox", ["true"], healthcheck={"Test": ["CMD", "true"], "Interval": 5})
    with pytest.raises(ValueError, match="unknown healthcheck field"):
        Container("busybox", ["true"], healthcheck={"Cmd": ["true"]})
    check = {"Test": ["CMD", "nosuch"], "Interval": SECOND // 2, "Retries": 1}
    c = Container("busybox", ["true"], healthcheck=check)
    assert c.spec["healthcheck"] == check and c.config.healthcheck["Test"] == ["CMD", "nosuch"]
    name = f"t-{uuid.uuid4().hex[:8]}"
    reply, conn = client.request({"op": "run", "spec": {
        "image": "busybox", "command": ["sleep", "60"], "name": name, "healthcheck": check},
        "tty": False, "interactive": False, "restart": "no", "attach": False})
    conn.close()
    try:
        assert "error" not in reply, reply
        assert wait_for(status_is(name, "unhealthy")), health_of(name)
        last = health_of(name)["log"][-1]  # an exec that cannot start: -1 and why, as Docker
        assert last["exit_code"] == -1 and "executable file not found: nosuch" in last["output"]
    finally:
        client.ask({"op": "kill", "id": reply["id"]})
        wait_for(lambda: states.find(name)["status"] == "exited")
        subprocess.run([python, "-m", "edu_cli.main", "rm", "-f", name],
                       capture_output=True)


# ---- an image's HEALTHCHECK, and the flags over it ------------------------------------------

@pytest.fixture(scope="module")
def checked_image(tmp_path_factory, python, busybox):
    """An image built by ``edu build`` from a Dockerfile with a HEALTHCHECK."""
    need(os.geteuid() == 0, "root")
    ctx = tmp_path_factory.mktemp("ctx")
    (ctx / "Dockerfile").write_text(
        "FROM busybox\nHEALTHCHECK --interval=500ms --timeout=5s --retries=2 "
        "CMD test -e /etc/passwd || exit 1\n")
    tag = f"edu-test-health-{uuid.uuid4().hex[:8]}"
    out = subprocess.run([python, "-m", "edu_cli.main", "build", "-t", tag, str(ctx)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    yield tag
    subprocess.run([python, "-m", "edu_cli.main", "rmi", "-f", tag], capture_output=True)


def test_an_image_healthcheck_runs_and_flags_change_it_field_by_field(edu, checked_image):
    off, plain, sick = edu.name(), edu.name(), edu.name()
    edu("run", "-d", "--name", off, "--no-healthcheck", checked_image, "sleep", "60")
    edu("run", "-d", "--name", plain, checked_image, "sleep", "60")
    edu("run", "-d", "--name", sick, "--health-cmd", "exit 1", checked_image, "sleep", "60")
    assert wait_for(status_is(plain, "healthy")), health_of(plain)
    assert states.find(plain)["healthcheck"] == {
        "Test": ["CMD-SHELL", "test -e /etc/passwd || exit 1"], "Interval": SECOND // 2,
        "Timeout": 5 * SECOND, "Retries": 2}
    # The run's command over the image's interval and retries: unhealthy, just as fast.
    assert wait_for(status_is(sick, "unhealthy")), health_of(sick)
    assert states.find(sick)["healthcheck"]["Interval"] == SECOND // 2
    # Started before the others, and never checked: no health at all, none shown.
    assert "health" not in states.find(off)
    assert re.fullmatch(r"Up (Less than a second|\d+ seconds?)", ps_status(edu, off))
    assert states.find(off)["healthcheck"]["Test"] == ["NONE"]


def test_health_flags_are_refused_as_docker_refuses_them(edu):
    """edu's sentence has Docker's words; and Docker does say them (when dockerd runs,
    which it does in CI)."""
    out = edu("run", "-d", "--no-healthcheck", "--health-cmd", "true", "busybox", "true",
              check=False)
    assert out.returncode == 125 and "--no-healthcheck conflicts with --health-* options" \
        in out.stderr and "Traceback" not in out.stderr
    out = edu("run", "--rm", "--health-interval", "soon", "busybox", "true", check=False)
    assert out.returncode == 125 and 'invalid argument "soon" for "--health-interval"' \
        in out.stderr
    need(ref.docker_up(), "dockerd is not running: scripts/services.sh start docker")
    theirs = subprocess.run(["docker", "run", "--rm", "--no-healthcheck", "--health-cmd",
                             "true", ref.load_base(), "true"], capture_output=True, text=True,
                            timeout=60)
    assert theirs.returncode == 125
    assert "--no-healthcheck conflicts with --health-* options" in theirs.stderr, theirs.stderr
