"""A Jupyter kernel restarted in the middle of lesson 06's stepper (issue 16).

A real ipykernel (jupyter_client, as JupyterLab starts one) runs the lesson's first cell and
its stepper: ``Lesson("06-step-by-step")``, ``lesson.stepper(...)`` over ``busybox`` on the
bridge, and ``view.next()`` a few times. The kernel is threaded, so the supervisor makes the
container (life/remote.py). Then the kernel is restarted as the Restart button does
(``restart_kernel(now=True)``: the old kernel is killed), and the lesson's first cell runs
again in the new kernel: ``Lesson(name)`` with ``fresh=True`` removes what its ledger names.
After that the host must be as it was (tests/hoststate.py): whatever the restart cut off, a
stop at a host-side boundary (after the cgroup is made, the child forked but in no namespace;
after its veth), one after its child mounted its root file system, or after the last step,
when the container runs on (the supervisor undoes an unfinished stepper when its kernel goes;
a finished one's container is the ledger's to remove).

The kernel is driven from a child process: jupyter_client's ZeroMQ sockets and heartbeat
run threads, and this test process must stay single-threaded (conftest).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import hoststate
import pytest
from conftest import REPO, need

LESSON = "06-step-by-step"
COMMAND = ["sh", "-c", "sleep 3600 & wait"]

#: Starts a kernel, steps, waits for "restart" on stdin, restarts it, runs the first cell
#: again. Each cell's outcome is one JSON line on stdout.
DRIVER = r'''
import json, sys
from jupyter_client.manager import KernelManager

last, lesson, command = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])

def cell(kc, code):
    out = []
    def hook(msg):
        kind, content = msg["msg_type"], msg["content"]
        if kind == "stream":
            out.append(content["text"])
        elif kind == "error":
            out.append("\n".join(content["traceback"]))
    reply = kc.execute_interactive(code, timeout=90, output_hook=hook)
    return {"status": reply["content"]["status"], "text": "".join(out)}

km = KernelManager(kernel_name="python3")
km.start_kernel(cwd=sys.argv[4])
kc = km.client()
kc.start_channels()
try:
    kc.wait_for_ready(timeout=60)
    first = cell(kc, f"""
from edu_runtime.notebook import Lesson
lesson = Lesson({lesson!r})
view = lesson.stepper("stepper", "busybox", {command!r}, network="bridge")
while not view.records or view.records[-1].name != {last!r}:
    record = view.next()
    assert record is not None and not record.error, view.error
import json
print("STEPPED", json.dumps({{"id": view.container.id, "pid": view.pid,
                              "fork_here": view.container.fork_here,
                              "done": [r.name for r in view.records],
                              "plan": [s.name for s in view.plan]}}))
""")
    print(json.dumps(first), flush=True)
    assert sys.stdin.readline() == "restart\n"
    km.restart_kernel(now=True)
    kc.wait_for_ready(timeout=60)
    again = cell(kc, f"from edu_runtime.notebook import Lesson\nlesson = Lesson({lesson!r})\n"
                     "print('LEDGER', len(lesson.ledger()))\n")
    print(json.dumps(again), flush=True)
finally:
    kc.stop_channels()
    km.shutdown_kernel(now=True)
'''


#: Where the restart cuts in: after the host's fork and cgroup (the child waits, in no
#: namespace yet); after the host's veth (a lease, a link, the child in its namespaces);
#: after the child's rootfs (its overlay mounted); after the last step (the container runs:
#: the supervisor keeps it when the kernel goes, and the lesson's ledger is what removes it).
CUTS = ["cgroup", "veth", "rootfs", "exec"]


@pytest.mark.parametrize("last", CUTS)
def test_a_kernel_restarted_mid_stepper_then_the_lessons_first_cell_leaves_the_host_clean(
        busybox, python, last):
    need(os.geteuid() == 0, "root (the stepper makes a real container)")
    from edu_runtime.notebook import Lesson

    how, why = Lesson(LESSON, quiet=True, fresh=False).mode("stepper")
    need(how == "live", f"lesson 06's stepper replays here: {why}")
    before = hoststate.snapshot()
    driver = subprocess.Popen([python, "-c", DRIVER, last, LESSON, json.dumps(COMMAND),
                               str(REPO)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, cwd=REPO)
    cid = ""
    try:
        first = json.loads(driver.stdout.readline() or "{}")
        assert first.get("status") == "ok", first or driver.stderr.read()
        line = next(x for x in first["text"].splitlines() if x.startswith("STEPPED"))
        stepped = json.loads(line.removeprefix("STEPPED "))
        cid, names = stepped["id"], stepped["plan"]
        assert stepped["fork_here"] is False  # a kernel is threaded: the supervisor made it
        steps = names.index(last) + 1
        assert stepped["done"] == names[:steps]
        # The cut is real: what the applied steps made is on the host now.
        from edu_runtime.life import states

        assert states.find(cid)["status"] == ("running" if last == "exec" else "creating")
        now = hoststate.snapshot()
        made = {"cgroup": "cgroups", "cgroup join": "processes", "veth": "leases"}
        for step, kind in made.items():
            if names.index(step) < steps:
                assert any(cid in item for item in now[kind]), (step, now[kind])
        if names.index("veth") < steps:
            assert f"veth{cid[:8]}" in now["links"]
        if names.index("rootfs") < steps:  # in the child's own mount namespace
            mounts = Path(f"/proc/{stepped['pid']}/mountinfo").read_text()
            assert f"{cid}/upper" in mounts
        driver.stdin.write("restart\n")
        driver.stdin.flush()
        again = json.loads(driver.stdout.readline() or "{}")
        assert again.get("status") == "ok", again or driver.stderr.read()
        assert "LEDGER 0" in again["text"], again["text"]  # nothing of it is noted any more
        # It says what it removed (if the supervisor had not undone the stepper already as
        # its kernel went), never "left things behind ... nothing to remove".
        assert "nothing to remove" not in again["text"], again["text"]
        if last == "exec":  # a finished stepper's container runs on, as `run -d`'s would
            assert "removed container" in again["text"], again["text"]
        assert driver.wait(timeout=60) == 0, driver.stderr.read()
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
        driver.stdout.close()
        driver.stdin.close()
        driver.stderr.close()
    assert hoststate.wait_clean(before, mine={cid}) == {}
