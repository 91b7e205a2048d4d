"""The notebook layer around the lessons: settings, declarations, recording and replay
(stale recordings refused with the command that refreshes them), predictions, exercises,
checks, and a reset that removes what a lesson made, real containers, networks and volumes
included."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

from edu_runtime.notebook import checks, course, replay
from edu_runtime.notebook.lesson import Lesson

LESSONS_PY = sorted((REPO / "lessons").glob("[0-9][0-9]-*.py"))


# ---- settings: the host ports lessons publish ----------------------------------------------

def test_ports_are_the_primers_unless_a_range_is_set(monkeypatch, tmp_path):
    monkeypatch.delenv("EDU_PORTS", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert course.ports() == {"web": 8080, "node": 47561, "scale": 8081}
    settings = tmp_path / "edu" / "course.json"
    settings.parent.mkdir()
    settings.write_text(json.dumps({"ports": "20100-20109"}))
    assert course.ports() == {"web": 20100, "node": 20101, "scale": 20102}
    monkeypatch.setenv("EDU_PORTS", "30000-30002")  # the environment wins over the file
    assert course.port("node") == 30001 and course.port("scale") == 30002


@pytest.mark.parametrize("value, words", [
    ("8080", "has 1 port(s); the lessons publish 3"),
    ("8080-8081", "has 2 port(s); the lessons publish 3 (web, node, scale)"),
    ("a-b", "a range like 20100-20109"),
    ("70000-70010", "within 1-65535"),
    ("20109-20100", "within 1-65535"),
])
def test_a_bad_port_range_is_refused_with_a_sentence(monkeypatch, value, words):
    monkeypatch.setenv("EDU_PORTS", value)
    with pytest.raises(course.CourseError, match="EDU_PORTS") as err:
        course.ports()
    assert words in str(err.value)


def test_no_lesson_hard_codes_a_published_port():
    """Markdown may quote the primer (`-p 8080:80`); code takes host ports from the setting.
    A container's own port (after the colon: `{PORT}:8080`) is the app's, not the host's."""
    import re

    import jupytext

    for path in LESSONS_PY:
        for cell in jupytext.read(path).cells:
            if cell.cell_type == "code":
                for port in ("8080", "47561", "8081"):
                    assert not re.search(rf"(?<![:\d]){port}(?!\d)", cell.source), \
                        f"{path.name} hard-codes {port}: use edu_runtime.notebook." \
                        "port('web'), port('node') or port('scale')"


# ---- declarations --------------------------------------------------------------------------

def test_every_lesson_declares_its_parts_with_known_needs():
    for info in course.declarations():
        assert info.parts, f"{info.name} declares no live part"
        assert info.title.startswith(info.name[:2]), info.title
        for p in info.parts:
            assert p.what and set(p.needs) <= set(course.NEEDS)


def test_an_unknown_need_is_refused():
    nb = {"metadata": {"edu": {"parts": {"x": {"needs": ["gpu"]}}}}, "cells": []}
    with pytest.raises(course.CourseError, match="unknown need.*gpu.*the needs are"):
        course.declaration("99-x", nb)


def test_this_host_can_do_every_need_as_root(root):
    """CI is root with qemu, a bridge and dockerd: every lesson runs live here."""
    course.host.cache_clear()
    verdicts = course.host()
    assert {n: v.ok for n, v in verdicts.items()} == dict.fromkeys(course.NEEDS, True), \
        {n: v.why for n, v in verdicts.items() if not v.ok}


# ---- recording and replay, in a course of one scratch lesson --------------------------------

SCRATCH = {
    "cells": [{"cell_type": "markdown", "metadata": {}, "source": ["# 98 Scratch"]},
              {"cell_type": "code", "metadata": {}, "execution_count": None, "outputs": [],
               "source": ["x = 1"]}],
    "metadata": {"edu": {"parts": {
        "numbers": {"needs": ["linux"], "what": "numbers"},
        "stepper": {"needs": ["containers"], "what": "the stepper"}}}},
    "nbformat": 4, "nbformat_minor": 5}


@pytest.fixture
def scratch(tmp_path, monkeypatch):
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "lessons").mkdir()
    (tmp_path / "notebooks" / "98-scratch.ipynb").write_text(json.dumps(SCRATCH))
    monkeypatch.setenv("EDU_COURSE_DIR", str(tmp_path))
    for var in ("EDU_REPLAY", "EDU_RECORD", "EDU_RECORDINGS_DIR"):
        monkeypatch.delenv(var, raising=False)
    yield tmp_path
    Lesson("98-scratch", quiet=True).reset()  # the ledger lives in the real state dir


def _record(scratch, monkeypatch, root_needed=True):
    monkeypatch.setenv("EDU_RECORD", "1")
    lesson = Lesson("98-scratch", quiet=True)

    def numbers():
        print("measured for real")
        return {"answer": 42}

    assert lesson.live("numbers", numbers) == {"answer": 42}
    view = lesson.stepper("stepper", "busybox", ["sleep", "30"], network="none")
    view.reset()
    monkeypatch.delenv("EDU_RECORD")
    return lesson


def test_a_recording_replays_with_its_banner_and_its_steps(scratch, monkeypatch, capsys,
                                                           root, busybox):
    _record(scratch, monkeypatch)
    rec = replay.Recording("98-scratch")
    assert rec.index["machine"] == replay.machine() and rec.index["date"]
    assert rec.index["parts"]["numbers"]["outputs"] == [{"text": "measured for real\n"}]
    capsys.readouterr()
    monkeypatch.setenv("EDU_REPLAY", "1")
    lesson = Lesson("98-scratch", quiet=True)
    value = lesson.live("numbers", lambda: pytest.fail("a replay ran the part"))
    shown = capsys.readouterr().out
    assert shown.startswith(f"[replay of a real run on {replay.machine()}, ")
    assert "EDU_REPLAY=1" in shown and "measured for real" in shown
    assert value["answer"] == 42 and value["replay"].startswith("replay of a real run on")
    view = lesson.stepper("stepper", "busybox", ["sleep", "30"], network="none")
    recorded = rec.value("stepper")
    while view.upcoming is not None:
        view.next()
    assert [r.name for r in view.records] == [s["record"]["name"] for s in recorded["steps"]]
    assert view.title().startswith("[replay of a real run on")
    assert view.host_view() == [tuple(x) for x in recorded["steps"][-1]["host"]]
    assert "nothing to undo" in view.reset()[0]


def test_a_stale_recording_names_the_command_that_refreshes_it(scratch, monkeypatch, root,
                                                               busybox):
    _record(scratch, monkeypatch)
    rec = replay.Recording("98-scratch")
    assert rec.stale() == []
    steps = rec.index["parts"]["stepper"]["steps"]
    with pytest.raises(replay.RecordingError,
                       match="steps.*make record LESSON=98-scratch"):
        rec.check(step_names={"stepper": [*steps, "a new step"]})
    assert rec.stale(step_names={"stepper": ["x", *steps]}, exact=False) == []
    index = json.loads(rec.index_path.read_text())
    index["trace_schema"] = "edu.trace/0"
    rec.index_path.write_text(json.dumps(index))
    with pytest.raises(replay.RecordingError, match="trace schema edu.trace/0"):
        replay.Recording("98-scratch").check()
    nb = json.loads((scratch / "notebooks" / "98-scratch.ipynb").read_text())
    nb["cells"][1]["source"] = ["x = 2"]
    (scratch / "notebooks" / "98-scratch.ipynb").write_text(json.dumps(nb))
    with pytest.raises(replay.RecordingError) as err:
        replay.Recording("98-scratch").check()
    assert "code cells changed" in str(err.value)
    assert str(err.value).endswith("make record LESSON=98-scratch")


def test_a_missing_recording_says_how_to_make_one(scratch, monkeypatch):
    monkeypatch.setenv("EDU_REPLAY", "1")
    lesson = Lesson("98-scratch", quiet=True)
    with pytest.raises(replay.RecordingError, match="no recording.*make record LESSON=98"):
        lesson.live("numbers", lambda: 1)


def test_replay_needs_no_linux_module(scratch, monkeypatch, root, busybox):
    """A Mac: the engine, netlink and libvirt cannot import; every part replays."""
    _record(scratch, monkeypatch)
    code = """
import importlib.abc, sys
class NotHere(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("pyroute2", "libvirt") or name.startswith(
                ("edu_runtime.kernel", "edu_runtime.steps", "edu_runtime.container")):
            raise ImportError(name)
sys.meta_path.insert(0, NotHere())
from edu_runtime.notebook import Lesson
lesson = Lesson("98-scratch")
print(lesson.live("numbers", lambda: 1 / 0)["answer"])
view = lesson.stepper("stepper", "busybox", ["sleep", "30"])
view.run_to_end()
print(len(view.records), view.state)
print(lesson.reset())
print(sorted(m for m in sys.modules if m.startswith(("edu_runtime.", "pyroute2", "libvirt"))))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "EDU_COURSE_DIR": str(scratch)}, cwd=REPO)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert "  replay numbers" in lines[1] and "do not import here" in lines[1]
    assert "42" in lines
    steps = len(replay.Recording("98-scratch").value("stepper")["steps"])
    assert f"{steps} running" in lines
    assert "nothing to remove" in out.stdout
    loaded = eval(lines[-1])  # noqa: S307 - our own print of a list of names
    assert not [m for m in loaded if m.startswith(("edu_runtime.kernel", "pyroute2"))]


# ---- predictions, exercises, checks --------------------------------------------------------

def test_a_prediction_is_checked_with_its_why():
    q = checks.predict("Which step makes hostname differ?", ["uts", "mount"])
    assert "no prediction" in q.check("uts", why="a new UTS namespace")
    q.choose("mount")
    said = q.check("uts", why="a new UTS namespace")
    assert not said and "You predicted mount; it is uts. Why: a new UTS namespace" in said
    assert q.choose("uts").check("uts")
    with pytest.raises(ValueError, match="not one of the choices"):
        q.choose("cgroup")
    n = checks.predict("How many times longer?", number=True, within=3)
    assert n.choose(100).check(250) and not n.check(400)


def test_checks_print_a_hint_for_what_did_not_pass(capsys):
    def broken():
        raise KeyError("no such container")

    results = [checks.check("one", True), checks.check("two", broken, hint="run cell 3")]
    out = capsys.readouterr().out
    assert "\u2714 one" in out and "not yet: two ('no such container')" in out
    assert "hint: run cell 3" in out
    assert str(checks.summary(results)).startswith("1 of 2 checks passed: read the hints")


def test_an_exercise_hides_its_solution_and_EDU_SOLVE_runs_it(monkeypatch):
    monkeypatch.delenv("EDU_SOLVE", raising=False)
    ex = checks.exercise("set x", solution="solved_here = 7")
    assert "solved_here" not in globals()
    assert "<details><summary>Show the solution</summary>" in ex._repr_html_()
    assert "solved_here" not in ex.text()
    monkeypatch.setenv("EDU_SOLVE", "1")
    checks.exercise("set x", solution="solved_here = 7")
    assert globals().pop("solved_here") == 7


# ---- reset ---------------------------------------------------------------------------------

def test_reset_removes_what_the_lesson_made_and_says_so(scratch, root, busybox, tmp_path):
    from edu_runtime import Container, networks, volumes

    lesson = Lesson("98-scratch", quiet=True)
    before = {v["Name"] for v in volumes.ls()}
    lesson.made(network="edu-lesson-test-net")
    networks.create("edu-lesson-test-net")
    lesson.made(volume="edu-lesson-test-vol")
    volumes.create("edu-lesson-test-vol")
    # Made by the supervisor, as a notebook's are (a Jupyter kernel is threaded): its
    # parent reaps it when reset removes it from another process.
    c = Container("busybox", ["sleep", "60"], network="edu-lesson-test-net",
                  volumes=["edu-lesson-test-vol:/data", "/anonymous"],
                  name="edu-lesson-test",
                  fork_here=False)
    lesson.made(container=c.id)
    c.start()
    lesson.made(container="0" * 64)  # noted, then never made (a Ctrl-C before the start)
    said = Lesson("98-scratch", quiet=True, fresh=False).reset()  # a new kernel: from disk
    # Newest first: the container, then what it used.
    assert said.removed == ["removed container edu-lesson-test", "removed volume "
                            "edu-lesson-test-vol", "removed network edu-lesson-test-net"]
    assert str(said).startswith("Reset 98-scratch: removed container")
    assert not [x for x in Container.list(all=True) if x.id == c.id]
    assert {v["Name"] for v in volumes.ls()} == before  # its anonymous volume went too
    assert str(Lesson("98-scratch", quiet=True).reset()).endswith(
        "nothing to remove, the host is as it was.")
    assert not Path(lesson.ledger_path).exists()


def test_reset_removes_containers_before_what_they_use_whatever_the_order_noted(scratch, root,
                                                                                 busybox):
    """A compose project notes its containers before its network and volume: reset still
    removes everything, the containers first."""
    from edu_runtime import Container, networks, volumes

    lesson = Lesson("98-scratch", quiet=True)
    networks.create("edu-lesson-order-net")
    volumes.create("edu-lesson-order-vol")
    c = Container("busybox", ["sleep", "60"], network="edu-lesson-order-net",
                  volumes=["edu-lesson-order-vol:/data"], name="edu-lesson-order",
                  fork_here=False)
    lesson.made(container=c.id)  # the container noted first, then what it uses
    lesson.made(network="edu-lesson-order-net", volume="edu-lesson-order-vol")
    c.start()
    said = Lesson("98-scratch", quiet=True, fresh=False).reset()
    assert said.removed == ["removed container edu-lesson-order", "removed volume "
                            "edu-lesson-order-vol", "removed network edu-lesson-order-net"]
    assert bool(said) and lesson.ledger() == []


UNDONE: list[str] = []


def undo_spy(ref: str) -> bool:
    """A face's own undo (as vm_compare's guests name theirs): records what it removed."""
    UNDONE.append(ref)
    return ref != "gone-already"


def test_a_faces_own_thing_is_removed_by_the_undo_it_named(scratch):
    lesson = Lesson("98-scratch", quiet=True)
    with pytest.raises(ValueError, match="or any other with undo="):
        lesson.made(guest="g1")  # the engine cannot know how to remove a guest
    lesson.made(guest="g1", undo="test_notebook_lesson:undo_spy")
    lesson.made(guest="gone-already", undo="test_notebook_lesson:undo_spy")
    said = Lesson("98-scratch", quiet=True, fresh=False).reset()  # a new kernel: on disk
    assert UNDONE == ["gone-already", "g1"] and said.removed == ["removed guest g1"]


def test_a_new_run_first_removes_what_an_interrupted_one_left(scratch, root, capsys):
    """Run All again after a Ctrl-C or a kernel restart before the reset cell: the new run
    starts clean (no "name already in use"), and says what it removed."""
    from edu_runtime import networks

    lesson = Lesson("98-scratch", quiet=True)
    lesson.made(network="edu-lesson-left-net")
    networks.create("edu-lesson-left-net")
    capsys.readouterr()
    again = Lesson("98-scratch", quiet=True)  # the next run's first cell
    assert capsys.readouterr().out == ("An earlier run of this lesson left things behind, "
                                       "removed first: removed network edu-lesson-left-net.\n")
    assert "edu-lesson-left-net" not in {n["name"] for n in networks.ls()}
    assert again.ledger() == []
    Lesson("98-scratch", quiet=True)
    assert capsys.readouterr().out == ""  # nothing left: nothing said


def test_wait_until_says_how_long_and_what_it_waited_for():
    from edu_runtime.notebook import wait_until

    calls = iter([False, False, True])
    assert 0 <= wait_until("the third call", lambda: next(calls), timeout=5) < 5
    with pytest.raises(TimeoutError, match="the database healthy: still not so after 0.2 s"):
        wait_until("the database healthy", lambda: False, timeout=0.2)
