"""A lesson's throwaway student (lesson 03's rootless part): made as root with useradd, noted
in the lesson's ledger first, able to run the course's edu (rootless: uid 0 inside is the
account's uid outside), and deleted by the lesson's reset with everything of theirs."""

from __future__ import annotations

import json
import os
import pwd
import shutil
from pathlib import Path

import pytest

from edu_runtime.notebook import accounts
from edu_runtime.notebook.lesson import Lesson

SCRATCH = {"cells": [{"cell_type": "markdown", "metadata": {}, "source": "# 97 accounts"}],
           "metadata": {"edu": {"parts": {"rootless": {"needs": ["containers"],
                                                       "what": "a rootless container"}}}},
           "nbformat": 4, "nbformat_minor": 5}


@pytest.fixture
def scratch(tmp_path, monkeypatch, root):
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "notebooks" / "97-accounts.ipynb").write_text(json.dumps(SCRATCH))
    monkeypatch.setenv("EDU_COURSE_DIR", str(tmp_path))
    yield Lesson("97-accounts", quiet=True)
    Lesson("97-accounts", quiet=True).reset()


def _in(path: str, name: str) -> bool:
    return any(line.startswith(f"{name}:") for line in Path(path).read_text().splitlines())


def test_a_throwaway_student_runs_a_rootless_container_and_reset_deletes_them(scratch):
    sessions = f"{accounts.PREFIX}{os.getpid()}"  # the test session's own (tests/accounts)
    had_session_account = sessions in {pw.pw_name for pw in pwd.getpwall()}
    student = accounts.throwaway(note=scratch.made)
    # Never the session's own account: a reset would delete it under the later tests.
    assert student.name == f"{sessions}-lesson" and student.throwaway
    assert {"kind": "user", "ref": student.name} in scratch.ledger()  # noted first
    assert student.uid != 0 and student.home.is_dir()
    assert student.run(["id", "-u"]).stdout.strip() == str(student.uid)
    assert student.run(["sh", "-c", "echo $HOME"]).stdout.strip() == str(student.home)
    assert accounts.named(student.name) == student
    made = student.edu("bootstrap", "busybox", timeout=120)
    assert made.returncode == 0, made.stderr
    inside = student.edu("run", "--rm", "--network", "none", "busybox", "sh", "-c",
                         "id -u; cat /proc/self/uid_map")
    assert inside.returncode == 0, inside.stderr
    uid_inside, *mapping = inside.stdout.split()
    assert uid_inside == "0" and mapping[:3] == ["0", str(student.uid), "1"]
    uid, home = student.uid, student.home
    said = Lesson("97-accounts", quiet=True, fresh=False).reset()  # a new kernel: on disk
    assert said.removed == [f"deleted user {student.name}"]
    for path in ("/etc/passwd", "/etc/group", "/etc/subuid", "/etc/subgid"):
        assert not _in(path, student.name), path
    assert not home.exists() and not Path(f"/run/user/{uid}").exists()
    assert accounts.processes(uid) == []
    assert accounts.remove(student.name) is False  # gone already: nothing to do
    assert str(Lesson("97-accounts", quiet=True).reset()).endswith("the host is as it was.")
    assert (sessions in {pw.pw_name for pw in pwd.getpwall()}) == had_session_account


def test_a_private_checkout_is_copied_for_the_student(scratch, tmp_path, monkeypatch):
    """A clone under /root is mode 700: the student gets the packages in their home."""
    repo = Path(__file__).resolve().parents[1]
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    for p in accounts.PACKAGES:
        shutil.copytree(repo / p, private / p, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(accounts, "packages_root", lambda: private)
    student = accounts.throwaway(note=scratch.made)
    assert student.pythonpath[0] == str(student.home / ".local/lib/edu-course")
    assert pwd.getpwuid((student.home / ".local/lib/edu-course").stat().st_uid).pw_name \
        == student.name
    shown = student.edu("--version")
    assert shown.returncode == 0 and shown.stdout.strip(), shown.stderr


def test_only_a_lessons_throwaway_account_is_ever_deleted(root):
    with pytest.raises(accounts.AccountError, match="refusing"):
        accounts.remove("root")
    assert accounts.remove(f"{accounts.PREFIX}0") is False


def test_you_are_an_account_too():
    me = accounts.me()
    assert me.uid == os.getuid() and not me.throwaway
    assert me.argv(["true"]) == ["true"] and me.env()["PATH"] == os.environ["PATH"]
    with pytest.raises(accounts.AccountError, match="no user"):
        accounts.named("edu-st-no-such-user")
