"""The stepper widget (edu_runtime/notebook/stepper.py), pressed from Python.

Two kinds of test: a scripted stepper (no root, milliseconds) for what the widget shows and
how its buttons behave, and real busybox containers as root, made here (a single-threaded
process forks its own) and by the supervisor (``fork_here=False``, the path a Jupyter
kernel takes), where Reset must leave the host as it was.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, need
from test_notebook_containers import _traces_of

from edu_runtime.notebook import StepperView
from edu_runtime.notebook.stepper import _failed_step, cut, flatten, rows
from edu_runtime.steps import StepError, StepRecord, Trace

# ---- a scripted stepper: the engine's stepper interface, no kernel work ---------------------


class FakeStep:
    def __init__(self, name, side, before, after, fail=""):
        self.name, self.side, self.lesson = name, side, "notebooks/06-step-by-step"
        self.explain = f"{name} does its thing. Undo: {name} is undone."
        self.before, self.after, self.fail = before, after, fail


PLAN = [
    FakeStep("fork", "host", {}, {"pid": 4242, "same namespaces as host": True}),
    FakeStep("namespaces", "child", {}, {"net": {"container": "net:[4026532999]",
                                                  "host": "net:[4026531840]", "new": True}}),
    FakeStep("special mounts", "child", {"mounts": ["/", "/proc"]},
             {"mounts": ["/", "/proc"] + [f"/m{i}" for i in range(10)]}),
    FakeStep("capabilities", "child", {"CapEff": ["CAP_CHOWN", "CAP_SYS_ADMIN"]},
             {"CapEff": ["CAP_CHOWN"]}),
    FakeStep("exec", "child", {}, {"comm": "sleep"}),
]


class FakeStepper:
    def __init__(self, container):
        self.container, self.index, self.aborted = container, 0, False
        self.plan = container.plan

    @property
    def upcoming(self):
        return self.plan[self.index] if self.index < len(self.plan) else None

    def advance(self):
        step = self.upcoming
        if step is None:
            raise StopIteration
        rec = StepRecord(step.name, step.side, start=self.index, end=self.index + 0.001 *
                         (self.index + 1), before=step.before, after=step.after)
        rec.syscalls = [("unshare", "CLONE_NEWNET")] if step.name == "namespaces" else []
        if step.fail:
            rec.error = step.fail
            self.container.trace.steps.append(rec)
            self.abort()
            raise StepError(step.name, step.fail, 127)
        self.container.trace.steps.append(rec)
        self.index += 1
        return rec

    def run_rest(self):
        while self.upcoming is not None:
            self.advance()

    def abort(self):
        self.aborted = True
        self.container.aborted += 1


class FakeContainer:
    made = 0

    def __init__(self, plan=PLAN):
        FakeContainer.made += 1
        self.id = f"{FakeContainer.made:064x}"
        self.spec = {"image": "busybox", "command": ["sleep", "60"]}
        self.store, self.fork_here, self.pid = None, True, 0
        self.trace = Trace(self.id, "busybox", ["sleep", "60"])
        self.plan, self.aborted = plan, 0

    def steps(self):
        return FakeStepper(self)


def bars(view) -> int:
    return view._ui["timing"].value.count("class='edu-bar'")


def table_rows(view) -> int:
    return view._ui["table"].value.count("<tr") - 1  # less the header


def test_each_press_of_next_adds_a_bar_grows_the_table_and_changes_the_explanation():
    view = StepperView(FakeContainer())
    view.widget  # noqa: B018 - the widgets, built as a notebook's display would
    assert bars(view) == 0 and "press Next step" in view._ui["table"].value
    explained = {view._ui["explain"].value}
    sizes = [0]
    for i in range(len(PLAN)):
        assert not view.next_button.disabled
        view.next_button.click()
        assert bars(view) == i + 1
        sizes.append(table_rows(view))
        explained.add(view._ui["explain"].value)
        assert f"Last step: {PLAN[i].name}" in view._ui["explain"].value
    assert sizes == sorted(sizes) and sizes[-1] > len(PLAN)
    assert len(explained) == len(PLAN) + 1
    assert view.state == "running" and view.next_button.disabled and view.run_button.disabled
    assert "all 5 steps applied" in view._ui["title"].value
    view.next_button.click()  # nothing left: no change, no error
    assert bars(view) == len(PLAN)


def test_the_table_shows_only_changes_highlighted_and_cuts_long_lists():
    rec = StepRecord("special mounts", "child", before=PLAN[2].before, after=PLAN[2].after)
    (row,) = rows(rec)
    assert row.key == "mounts" and row.before == ["/", "/proc"]
    assert row.after == ["+ /m0", "+ /m1", "+ /m2", "+ /m3", "+ /m4", "+ /m5", "... 6 more"]
    caps = rows(StepRecord("capabilities", "child", before=PLAN[3].before,
                           after=PLAN[3].after))
    assert caps[0].before == ["- CAP_SYS_ADMIN", "CAP_CHOWN"] and caps[0].after == ["CAP_CHOWN"]
    assert flatten({"net": {"container": 1, "host": 2}, "a": "x\ny"}) == {
        "a": ["x", "y"], "net.container": 1, "net.host": 2}
    assert cut(list("abc"), 2) == ["a", "b", "... 1 more"]
    view = StepperView(FakeContainer())
    view.widget  # noqa: B018
    view.run_button.click()
    table = view._ui["table"].value
    assert "background:#fff3b0'>+ /m0" in table and "... 6 more" in table
    assert "net.container" in table and "same namespaces as host" in table


def test_reset_aborts_an_unfinished_stepper_and_next_starts_a_fresh_container(monkeypatch):
    import edu_runtime.container as container_mod

    monkeypatch.setattr(container_mod, "Container", lambda **kw: FakeContainer())
    first = FakeContainer()
    view = StepperView(first)
    view.widget  # noqa: B018
    view.next_button.click()
    view.next_button.click()
    view.reset_button.click()
    assert first.aborted == 1 and view.state == "reset" and view.container is None
    assert bars(view) == 0 and "undid the 2 applied step(s)" in view._ui["explain"].value
    assert "Next step: fork" in view._ui["explain"].value  # the plan is still read out
    view.next_button.click()
    assert view.container is not first and bars(view) == 1 and view.state == "stepping"


def test_a_failed_step_shows_its_error_and_stops_the_buttons():
    plan = [*PLAN[:4], FakeStep("exec", "child", {}, {}, fail="no such file: /nope")]
    c = FakeContainer(plan)
    view = StepperView(c)
    view.widget  # noqa: B018
    view.run_button.click()
    assert view.state == "failed" and c.aborted == 1
    assert "exec: no such file: /nope" in view._ui["explain"].value
    assert "FAILED" in view._ui["explain"].value and bars(view) == 5
    assert "#d62728" in view._ui["timing"].value  # the failed step's bar is red
    assert view.next_button.disabled and not view.reset_button.disabled
    assert "ERROR: exec: no such file: /nope" in view.text()
    view.reset_button.click()
    assert c.aborted == 1 and "failed start undid itself" in view.text()


def test_a_helpers_error_names_the_step_that_failed():
    plan = [FakeStep(n, "child", {}, {}) for n in ("ports", "fork", "exec")]
    assert _failed_step(StepError("ports", "exec: No such file or directory"), plan).name == \
        "exec"
    assert _failed_step(StepError("fork", "it died"), plan).name == "fork"


def test_the_text_fallback_says_what_the_widget_shows():
    view = StepperView(FakeContainer())
    assert "Next step: fork (host)" in repr(view) and "nothing yet" in str(view)
    view.run_to_end()
    text = view.text()
    for step in PLAN:
        assert f"{step.name} does its thing" in text or step.name in text
    assert "Last step: exec (child)" in text and "Undo: exec is undone." in text
    assert "namespaces: net.container" in text and "after   net:[4026532999]" in text
    assert "+ /m0" in text and "... 6 more" in text and "Time per step:" in text
    assert "Introduced in notebooks/06-step-by-step" in text
    normal = view.text(normalise=True)
    assert "4242" not in normal and "[4026532999]" not in normal and " ms" in normal
    assert re.search(r"\d\.\d\d ms", normal) is None
    bundle = view._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert bundle["text/plain"] == text and "edu-bar" in bundle["text/html"]


def test_importing_the_face_does_not_import_ipywidgets():
    code = ("import sys; import edu_runtime.notebook as nb; nb.StepperView; nb.step_through; "
            "print('ipywidgets' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=REPO, check=True)
    assert out.stdout.split() == ["False"]


# ---- real containers, as root ------------------------------------------------------------


def host() -> dict:
    """What any container could leave behind, counted host-wide, and which other
    containers are alive (the counts are compared only while that stays the same)."""
    from edu_runtime.life import states

    return {"mounts": Path("/proc/self/mountinfo").read_text().count("\n"),
            "cgroups": sorted(str(p) for p in Path("/sys/fs/cgroup").glob("*/edu/*")
                              if p.is_dir()),
            "links": sorted(os.listdir("/sys/class/net")),
            "others": sorted(r["id"] for r in states.records()
                             if r.get("status") in ("creating", "running", "paused"))}


def settled(before: dict, cids: list[str], pids: list[int]) -> None:
    """Nothing of the view's containers is left (their records, cgroups, mounts, veths, nft
    rules, processes), and the host-wide counts are as before, unless another container
    started or ended meanwhile (the suite may run beside other work). A helper's teardown
    may finish a moment after its answer, so this waits up to 5 s."""
    deadline = time.monotonic() + 5
    while True:
        left = [t for cid, pid in zip(cids, pids, strict=True) for t in _traces_of(cid, pid)]
        now = host()
        quiet = now["others"] == before["others"]
        if not left and (now == before or not quiet) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert left == []
    if quiet:
        assert now == before


@pytest.fixture(params=["local", "helper"])
def path(request, busybox):
    """``fork_here`` for each way a container is made; the helper warmed first (its bridge
    and rules stay while it lives, as they would for any notebook)."""
    need(os.geteuid() == 0, "root")
    from edu_runtime import Container

    fork_here = request.param == "local"
    warm = Container("busybox", ["true"], remove=True, fork_here=fork_here)
    warm.start()
    assert warm.wait() == 0
    return fork_here


def test_stepping_a_real_container_then_reset_leaves_the_host_as_it_was(path):
    from edu_runtime import Container

    before = host()
    c = Container("busybox", ["sleep", "60"], fork_here=path)
    view = StepperView(c)
    assert view.container.fork_here is path
    view.widget  # noqa: B018
    names, explained = [], set()
    while view.upcoming is not None:
        names.append(view.upcoming.name)
        n = bars(view)
        view.next_button.click()
        assert view.error == "" and bars(view) == n + 1
        assert f"Last step: {names[-1]}" in view._ui["explain"].value
        explained.add(view._ui["explain"].value)
    assert names[-1] == "exec" and len(explained) == len(names) == len(view.plan)
    assert view.state == "running" and view.pid == c.pid > 0
    text = view.text()
    for key in ("namespaces: net.container", "CapEff", "seccomp: mode", "mounts",
                "uts.new"):
        assert key in text, key
    assert f"/proc/{c.pid}/ns/net -> net:[" in text and "new: not the host's" in text
    assert "Seccomp:\t2    (filter)" in text
    assert "pivot_root" in text and "What it does:" in text and "Undo:" in text
    assert table_rows(view) > len(names)
    view.reset_button.click()
    assert view.error == "" and "killed, waited for and removed" in view.text()
    settled(before, [c.id], [c.pid])

    # Again, with a fresh container of the same spec; undone half-way this time.
    for _ in range(8):
        view.next_button.click()
    second = view.container
    assert second.id != c.id and bars(view) == 8 and view.state == "stepping"
    pid = second.pid
    view.reset_button.click()
    assert "undid the 8 applied step(s)" in view.text()
    settled(before, [c.id, second.id], [c.pid, pid])


def test_run_to_end_on_the_bridge_shows_links_and_the_text_is_stable(path):
    from edu_runtime.notebook import step_through

    before = host()
    view = step_through("busybox", ["sleep", "60"], fork_here=path)
    view.run_button.click()
    assert view.state == "running" and bars(view) == len(view.plan)
    cid, pid = view.container.id, view.pid
    text = view.text(normalise=True)
    assert "eth0" in text and "lo" in text  # the veth and loopback steps' links
    assert "net:[INODE]" in text and "/proc/<pid>/ns/net" in text
    assert f"/proc/{pid}/" not in text and f"PID {pid}" not in text
    view.reset()
    settled(before, [cid], [pid])


def test_a_command_that_does_not_exist_fails_in_the_widget_and_leaves_nothing(path):
    from edu_runtime import Container

    before = host()
    c = Container("busybox", ["/no/such/command"], fork_here=path)
    view = StepperView(c)
    view.widget  # noqa: B018
    view.run_button.click()
    assert view.state == "failed" and "exec" in view.error
    assert "No such file" in view.error or "not found" in view.error, view.error
    assert view.records[-1].name == "exec" and view.records[-1].error
    assert "Error:" in view._ui["explain"].value and view.next_button.disabled
    settled(before, [c.id], [0])
    view.reset_button.click()
    settled(before, [c.id], [0])
