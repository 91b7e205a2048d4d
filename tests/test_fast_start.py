"""A fast start tells the child a run of its steps at once; a stepped start one at a time.

Nobody looks between the steps of an ``edu run``, so the host sends the child one message
for a run of CHILD steps in a row ("go N to M", issue 18) instead of one per step. What a
student sees must not change: the Trace of a fast run names the same steps, sides and calls
in the same order as the stepper shows, a step that fails in the middle of such a run fails
with the same sentence and record as when stepped, and nothing is left behind either way.
Real containers from the busybox image, as root. Introduced in notebooks/06-step-by-step.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from edu_runtime import container as container_mod
from edu_runtime.container import Container
from edu_runtime.steps import CHILD, StepError

sys.path.insert(0, str(Path(__file__).parent))
import hoststate  # noqa: E402


def quietly(run):
    """Call ``run`` with stdout thrown away (the container's output is not the test's)."""
    saved, devnull = os.dup(1), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    try:
        return run()
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)


@pytest.fixture
def gos(monkeypatch):
    """Every "go" message the host sends a child, as (first, end) step indexes."""
    sent = []
    real = container_mod.send

    def send(sock, fds=None, **msg):
        if "go" in msg:
            sent.append((msg["go"], msg.get("to", msg["go"] + 1)))
        return real(sock, fds, **msg)

    monkeypatch.setattr(container_mod, "send", send)
    return sent


def _runs_of_child_steps(sides: list[str]) -> list[tuple[int, int]]:
    """(first, end) of each run of CHILD steps in a row in a plan, given its steps' sides."""
    runs, i = [], 0
    while i < len(sides):
        if sides[i] != CHILD:
            i += 1
            continue
        j = i
        while j < len(sides) and sides[j] == CHILD:
            j += 1
        runs.append((i, j))
        i = j
    return runs


def test_a_fast_run_tells_the_child_once_per_run_of_steps_and_records_what_stepping_does(
        busybox, gos):
    before = hoststate.snapshot()
    fast = Container(busybox, ["true"], remove=True, network="none", memory="64m",
                     hostname="st-fast", fork_here=True)
    assert quietly(fast.run) == 0
    told_fast = list(gos)
    gos.clear()
    stepped = Container(busybox, ["true"], remove=True, network="none", memory="64m",
                        hostname="st-fast", fork_here=True)
    records = quietly(lambda: list(stepped.steps()))
    assert quietly(stepped.wait) == 0

    plan = [(r.name, r.side) for r in stepped.trace.steps]
    child_steps = [i for i, (_, side) in enumerate(plan) if side == CHILD]
    assert told_fast == _runs_of_child_steps([side for _, side in plan])
    assert any(end - first > 1 for first, end in told_fast)  # a batch was sent at all
    assert gos == [(i, i + 1) for i in child_steps]  # stepped: one message per step
    assert [r.name for r in records] == [name for name, _ in plan]
    assert [(r.name, r.side, r.syscalls) for r in fast.trace.steps] == [
        (r.name, r.side, r.syscalls) for r in stepped.trace.steps]
    assert all(r.end >= r.start > 0 for r in fast.trace.steps)
    starts = [r.start for r in fast.trace.steps]
    assert starts == sorted(starts)  # each child step recorded when it ran, in order
    assert hoststate.wait_clean(before, mine={fast.id, stepped.id}) == {}


def test_a_step_failing_in_the_middle_of_a_batch_fails_as_when_stepped(busybox, tmp_path):
    """A volume whose mount point is under a file of the image (/bin/busybox) fails in the
    volumes step, after five child steps of the same batch succeeded."""
    before = hoststate.snapshot()
    made, errors = [], []
    for stepping in (False, True):
        c = Container(busybox, ["true"], remove=True, network="none", fork_here=True,
                      volumes=[f"{tmp_path}:/bin/busybox/x"])
        made.append(c)
        with pytest.raises(StepError) as err:
            if stepping:
                quietly(lambda c=c: list(c.steps()))
            else:
                quietly(c.run)
        errors.append((err.value.step, str(err.value), err.value.exit_code))
    fast, stepped = made
    assert errors[0] == errors[1]
    assert errors[0][0] == "volumes" and "Not a directory" in errors[0][1]
    assert [(r.name, r.error) for r in fast.trace.steps] == [
        (r.name, r.error) for r in stepped.trace.steps]
    assert fast.trace.steps[-1].name == "volumes" and fast.trace.steps[-1].error
    assert hoststate.wait_clean(before, mine={fast.id, stepped.id}) == {}
