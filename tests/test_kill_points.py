"""Kill points: SIGKILL at every step boundary of a container's start (issue 16).

A container starts as a plan of steps (``edu_runtime.container.plan``). Two processes take
part: the host side (the ``edu`` process, or a notebook's helper, that drives the Stepper)
and the child side (the process that becomes the container, waiting between steps). Either
can be SIGKILLed between any two steps, so each boundary is tested twice:

- host side: the driving process dies after k steps; one ordinary ``edu ps -a`` (what a
  student types next) must bring the host back: ``hoststate.wait_clean(before) == {}``;
- child side: the container's process dies while it waits for step k+1; the host must
  answer one clean ``StepError`` sentence and undo what it applied, by itself.

Then the processes that start containers for others: the supervisor (root ``edu run``) and a
student's own helper (rootless), each killed in the middle of a start.

The boundaries are the plan's own steps, as enabled for a container that uses as many as a
root container can: a bridge network, -p on a free port, a named volume, --memory,
--pids-limit, --init and a hostname. The driving process is a fork of the test process
(single-threaded, like the CLI): it stops at the boundary, says so on a pipe and blocks, so
the kill lands exactly there, with no sleeps.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import hoststate  # noqa: E402
from conftest import wait_for  # noqa: E402

VOLUME = f"kp-vol-{os.getpid()}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spec(port: int) -> dict:
    return dict(image="busybox", command=["sleep", "60"], remove=True, network="bridge",
                publish=[f"{port}:80"], memory="64m", pids_limit=64, init=True,
                hostname="kp-host", volumes=[f"{VOLUME}:/data"], fork_here=True)


def _planned() -> list[str]:
    """The names of the steps of that container's start, from plan() as enabled here."""
    try:
        from edu_runtime import cgroups, volumes
        from edu_runtime.container import Container, Context, plan

        spec = _spec(_free_port())
        c = Container(spec.pop("image"), spec.pop("command"), **spec)
        c.config.volumes = volumes.check(c.config.volume_specs)  # as the start resolves them
        ctx = Context(c)
        ctx.cgroup_driver, _ = cgroups.driver_for(True)
        return [s.name for s in plan() if s.enabled(ctx)]
    except Exception as exc:  # noqa: BLE001 - shown by the test that needs the plan
        return [f"no plan: {exc}"]


STEPS = _planned()


def _rootless_only() -> list[tuple[str, str]]:
    """(network, step) for each step a rootless plan has and a root one has not (the
    network holder on a bridge, the id maps with --network none), from plan()."""
    try:
        from edu_runtime.container import Container, Context, plan
        from edu_runtime.networks import registry

        out = []
        for network in ("bridge", "none"):
            ctx = Context(Container("busybox", ["true"], network=network, fork_here=True))
            ctx.rootless, ctx.cgroup_driver = True, None  # a student's, on cgroup v1
            ctx.joins_holder = registry.uses_bridge(ctx)
            out += [(network, s.name) for s in plan() if s.enabled(ctx)
                    and s.name not in STEPS and s.name not in {n for _, n in out}]
        return out
    except Exception as exc:  # noqa: BLE001 - shown by the test that needs the plan
        return [("none", f"no plan: {exc}")]


ROOTLESS_ONLY = _rootless_only()


@pytest.fixture(scope="module")
def volume(busybox, python):
    """The named volume the containers mount (made once; a named volume outlives them)."""
    made = subprocess.run([python, "-m", "edu_cli.main", "volume", "create", VOLUME],
                          capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    yield VOLUME
    subprocess.run([python, "-m", "edu_cli.main", "volume", "rm", VOLUME],
                   capture_output=True, text=True)


class Driver:
    """A fork of this process that starts a container, stops after ``k`` steps, reports
    (its container id, the container's process), then waits for ``go`` or a SIGKILL."""

    live: list[Driver] = []  # not yet reaped: see no_driver_left

    def __init__(self, k: int | None, **over):
        from edu_runtime.container import new_id

        self.id = new_id()
        report_r, report_w = os.pipe()
        go_r, go_w = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:  # the host side: never returns into pytest
            os.close(report_r)
            os.close(go_w)
            self._host(k, report_w, go_r, over)
        os.close(report_w)
        os.close(go_r)
        self.report, self.go = os.fdopen(report_r), go_w
        Driver.live.append(self)

    def _host(self, k: int | None, out: int, go: int, over: dict) -> None:
        code = 0
        try:
            from edu_runtime.container import Container, Stepper
            from edu_runtime.steps import StepError

            spec = {**_spec(_free_port()), "name": f"kp-{self.id[:12]}", **over}
            c = Container(spec.pop("image"), spec.pop("command"), container_id=self.id,
                          **spec)
            st = Stepper(c)
            for _ in range(len(st.ctx.steps) if k is None else k):  # None: all of them
                st.advance()
            ctx = st.ctx
            os.write(out, (json.dumps({"at": k, "child": ctx.pid or ctx.middle}) + "\n")
                     .encode())
            os.read(go, 1)  # the host-side tests SIGKILL us here
            try:
                st.run_rest()
                c.kill()
                answer = {"started": True, "exit": c.wait()}
            except StepError as exc:
                answer = {"error": str(exc), "step": exc.step, "code": exc.exit_code}
            os.write(out, (json.dumps(answer) + "\n").encode())
        except BaseException as exc:  # noqa: BLE001 - told to the test, never into pytest
            import traceback

            os.write(out, (json.dumps({"crash": traceback.format_exc(), "repr": repr(exc)})
                           + "\n").encode())
            code = 1
        finally:
            os._exit(code)

    def line(self) -> dict:
        text = self.report.readline()
        assert text, "the driving process ended without a word"
        msg = json.loads(text)
        assert "crash" not in msg, msg["crash"]
        return msg

    def kill(self) -> None:
        os.kill(self.pid, signal.SIGKILL)
        self.reap()

    def resume(self) -> dict:
        os.write(self.go, b"g")
        msg = self.line()
        self.reap()
        return msg

    def reap(self) -> None:
        if self.pid:
            os.waitpid(self.pid, 0)
            self.pid = 0
            self.report.close()
            os.close(self.go)


@pytest.fixture(autouse=True)
def no_driver_left():
    """A failed test's driver does not stay blocked: it is killed (the next test's `edu`
    command cleans up after it, as after any kill)."""
    yield
    while Driver.live:
        d = Driver.live.pop()
        if d.pid:
            d.kill()


def _edu(python, *argv):
    return subprocess.run([python, "-m", "edu_cli.main", *argv], capture_output=True,
                          text=True, timeout=60)


@pytest.mark.parametrize("k", range(len(STEPS) + 1),
                         ids=["before " + STEPS[0]] + [f"after {s}" for s in STEPS])
def test_host_side_killed_between_steps(k, volume, python):
    """The process driving the start is SIGKILLed after k steps: `edu ps -a` cleans up."""
    assert not STEPS[0].startswith("no plan"), STEPS[0]
    before = hoststate.snapshot()
    d = Driver(k)
    assert d.line()["at"] == k
    d.kill()
    out = _edu(python, "ps", "-a")
    assert out.returncode == 0, out.stderr
    assert d.id[:12] not in out.stdout
    assert hoststate.wait_clean(before, mine={d.id}) == {}


CHILD_SIDE = [k for k in range(1, len(STEPS)) if "fork" in STEPS[:k]]


@pytest.mark.parametrize("k", CHILD_SIDE, ids=[f"before {STEPS[k]}" for k in CHILD_SIDE])
def test_child_side_killed_between_steps(k, volume):
    """The container's process is SIGKILLed while it waits for step k+1: the host answers
    one StepError sentence and undoes what it applied, by itself."""
    before = hoststate.snapshot()
    d = Driver(k)
    child = d.line()["child"]
    os.kill(child, signal.SIGKILL)
    assert wait_for(lambda: _state(child) in ("Z", "gone")), "SIGKILL did not land"
    answer = d.resume()
    assert answer.get("step") in STEPS[k:], answer
    assert answer["error"] == (
        f"{answer['step']}: the container's process was killed (SIGKILL) before this step "
        "was done; everything made for it so far is undone: start it again")
    assert answer["code"] == 125
    assert hoststate.wait_clean(before, mine={d.id}) == {}


def _state(pid: int) -> str:
    """A process's state letter (Z: a zombie, its parent not yet told), or "gone"."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


#: PID 1 becomes nobody (busybox su execs the shell, which execs sleep): changing its uid
#: makes the kernel clear the PR_SET_PDEATHSIG that kills a container with its owner.
SU = ["su", "-s", "/bin/sh", "nobody", "-c", "exec sleep 300"]


def _uid(pid: int) -> str:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return line.split()[1]
    return ""


def test_a_container_that_changed_uid_outlives_its_killed_owner_and_goes_by_its_cgroup(
        volume, python):
    """PID 1 changed its uid, so it survives its owner's SIGKILL; its record was gone
    before (a deleted state directory). The next `edu ps -a` still kills it: by its cgroup, whose
    owner (named on it when it was made) is dead."""
    before = hoststate.snapshot()
    d = Driver(None, command=SU, init=False)
    pid = d.line()["child"]
    assert wait_for(lambda: _uid(pid) == "65534"), "su did not change PID 1's uid"
    from edu_runtime import paths
    from edu_runtime.life import control

    control.remove_dir(paths.state_dir() / "containers" / d.id)  # its record, gone
    d.kill()
    assert _state(pid) not in ("Z", "gone"), "it died with its owner: no PDEATHSIG lost?"
    out = _edu(python, "ps", "-a")
    assert out.returncode == 0, out.stderr
    assert wait_for(lambda: _state(pid) in ("Z", "gone")), "it outlived edu ps -a"
    assert hoststate.wait_clean(before, mine={d.id}) == {}


def test_supervisor_killed_in_the_middle_of_starts(volume, python):
    """SIGKILL to the supervisor while it holds a stepper half-way through a start (a
    notebook's container), with a detached container running whose PID 1 changed its uid
    (so the kernel does not kill it with the supervisor). One `edu ps -a` brings the host
    back: no container, no half-made one, and no warm bridge or rules, since no supervisor
    keeps them now. (It kills the shared supervisor: run it alone, as CI does.)"""
    from edu_runtime import kernel
    from edu_runtime.container import Container
    from edu_runtime.life import client
    from edu_runtime.steps import StepError

    before = hoststate.snapshot()
    name = f"kp-su-{os.getpid()}"
    out = _edu(python, "run", "-d", "--rm", "--name", name, "-p", f"{_free_port()}:80",
               "busybox", *SU)
    assert out.returncode == 0, out.stderr
    detached = out.stdout.strip()
    pid = int(json.loads(_edu(python, "inspect", name).stdout)[0]["State"]["Pid"])
    assert wait_for(lambda: _uid(pid) == "65534"), "su did not change PID 1's uid"
    spec = _spec(_free_port())
    half = Container(spec.pop("image"), spec.pop("command"), **{**spec, "fork_here": False})
    stepper = half.steps()  # the supervisor makes it, one step per request
    for _ in range(len(stepper.plan) // 2):
        stepper.advance()
    supervisor = client.running_pid()
    assert supervisor and half.remote_pid
    os.kill(supervisor, signal.SIGKILL)
    assert wait_for(lambda: not kernel.pid_alive(supervisor))
    with pytest.raises(StepError, match="went away"):
        stepper.advance()
    assert _state(pid) not in ("Z", "gone"), "it died with the supervisor: no PDEATHSIG lost?"
    out = _edu(python, "ps", "-a")
    assert out.returncode == 0, out.stderr
    assert name not in out.stdout and half.id[:12] not in out.stdout
    assert wait_for(lambda: _state(pid) in ("Z", "gone")), "it outlived edu ps -a"
    assert hoststate.wait_clean(before, mine={detached, half.id}) == {}


#: As a student: a notebook-like start that the user's own helper makes (fork_here=False),
#: stopped half-way on the bridge, a published port reserved; then it waits for a line.
HALF_STARTED = """
import sys
from edu_runtime.container import Container
from edu_runtime.steps import StepError
c = Container("busybox", ["sleep", "60"], remove=True, network="bridge",
              publish=[sys.argv[1] + ":80"], memory="64m", fork_here=False)
st = c.steps()
for _ in range(len(st.plan) // 2):
    st.advance()
print(c.id, st.upcoming.name, flush=True)
sys.stdin.readline()
try:
    st.advance()
except StepError as exc:
    print(exc, flush=True)
"""


def test_rootless_helper_killed_in_the_middle_of_a_start(student, python):
    """A student's own helper (the supervisor of their state directory) is SIGKILLed while
    it holds a start half-way (network holder, bridge and veth in their namespace). The
    notebook is told in a sentence; one `edu ps -a` of theirs cleans up: no helper, holder
    or pasta left, no record, and nothing new on the host."""
    from accounts import processes

    assert student.edu("bootstrap", "busybox", timeout=120).returncode == 0
    before = hoststate.snapshot()
    mine_before = processes(student.uid)
    proc = student.popen([student.python, "-c", HALF_STARTED, str(_free_port())],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        cid, upcoming = proc.stdout.readline().split()
        helper = int(student.run([student.python, "-c", "from edu_runtime.life import client; "
                                  "print(client.running_pid())"]).stdout)
        assert helper, "no helper of the student's runs"
        os.kill(helper, signal.SIGKILL)
        proc.stdin.write("\n")
        proc.stdin.flush()
        told = proc.stdout.readline()
        assert proc.wait(timeout=30) == 0
    finally:
        proc.kill()
        proc.wait()
    assert told.startswith(f"{upcoming}: the helper that makes this container went away "
                           "before this step was done"), told
    out = student.edu("ps", "-a", timeout=60)
    assert out.returncode == 0, out.stderr
    assert cid[:12] not in out.stdout

    def left() -> list:
        return [p for p in processes(student.uid) if p not in mine_before or p[0] == helper]

    assert wait_for(lambda: left() == []), left()
    records = student.run(["ls", f"{student.runtime_dir}/edu/containers"]).stdout.split()
    assert cid not in records
    assert hoststate.wait_clean(before, mine={cid}) == {}


#: As a student: start a container in this process (as `edu run` does), stop right after
#: the step named, say so and wait: the test SIGKILLs it there.
STOPPED_AFTER = """
import sys
from edu_runtime.container import Container, Stepper
c = Container("busybox", ["sleep", "60"], remove=True, network=sys.argv[1], fork_here=True)
st = Stepper(c)
while st.upcoming.name != sys.argv[2]:
    st.advance()
st.advance()
print(c.id, flush=True)
sys.stdin.readline()
"""


@pytest.mark.parametrize("network,step", ROOTLESS_ONLY,
                         ids=[f"after {step}" for _, step in ROOTLESS_ONLY])
def test_rootless_host_side_killed_after_its_own_steps(network, step, student):
    """The boundaries only a rootless start has: a student's `edu run` SIGKILLed right
    after it registered with the network holder, or wrote the id maps. One `edu ps -a`
    of theirs: no holder or pasta left for it, no record, nothing new on the host."""
    from accounts import processes

    assert not step.startswith("no plan"), step
    assert student.edu("bootstrap", "busybox", timeout=120).returncode == 0
    before = hoststate.snapshot()
    mine_before = processes(student.uid)
    proc = student.popen([student.python, "-c", STOPPED_AFTER, network, step],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        cid = proc.stdout.readline().strip()
    finally:
        proc.kill()
        proc.wait()
    assert len(cid) == 64, "the start did not get there"
    out = student.edu("ps", "-a", timeout=60)
    assert out.returncode == 0, out.stderr
    assert cid[:12] not in out.stdout
    assert wait_for(lambda: [p for p in processes(student.uid) if p not in mine_before] == []
                    ), processes(student.uid)
    records = student.run(["ls", f"{student.runtime_dir}/edu/containers"]).stdout.split()
    assert cid not in records
    assert hoststate.wait_clean(before, mine={cid}) == {}


#: Holds a supervisor-like lock and socket in the run directory, as a supervisor does.
LOCK_HOLDER = """
import fcntl, socket, sys
lock = open(sys.argv[1] + ".lock", "a")
fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
s = socket.socket(socket.AF_UNIX)
s.bind(sys.argv[1] + ".sock")
print("held", flush=True)
sys.stdin.readline()
"""


def test_a_killed_supervisors_lock_and_socket_go_at_the_next_command(python):
    """What a SIGKILLed supervisor leaves in the run directory (its lock, its socket) goes
    at the next `edu ps -a`; the files of one that is alive stay."""
    from edu_runtime import paths

    run = paths.ensure(paths.run_dir(), 0o700)
    dead, alive = (run / f"supervisor-kp{os.getpid()}{n}" for n in ("d", "a"))
    holders = [subprocess.Popen([python, "-c", LOCK_HOLDER, str(base)], text=True,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE)
               for base in (dead, alive)]
    try:
        assert [h.stdout.readline() for h in holders] == ["held\n"] * 2
        holders[0].kill()
        holders[0].wait()
        out = _edu(python, "ps", "-a")
        assert out.returncode == 0, out.stderr
        assert not any(Path(f"{dead}{ext}").exists() for ext in (".lock", ".sock"))
        assert all(Path(f"{alive}{ext}").exists() for ext in (".lock", ".sock"))
    finally:
        for h in holders:
            h.kill()
            h.wait()
        for ext in (".lock", ".sock"):
            Path(f"{alive}{ext}").unlink(missing_ok=True)
