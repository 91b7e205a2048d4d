"""What the course's JupyterHub does for each student, in one place: the config
(jupyterhub_config.py), the test (tests/test_hub.py) and the bench (bench/hub_class.py) all
use it, so the port a student is told is the port their lessons publish.

- ``COURSE``: where the hub installs the course for students (``deploy/hub/install.py``): a
  venv and a copy of the course's code, lessons and notebooks, root's and world-readable,
  because the instructor's clone may sit where students cannot read it (any clone under /root).
- ``ports_for(uid)``: each student's own range of host ports, so lessons 08 and 09 (``-p``)
  work for a whole class at once. The course takes its lessons' ports from ``EDU_PORTS``
  (edu_runtime/notebook/course.py): web, node, scale, in that order.
- ``prepare(name)``: the student's home closed to others (mode 700), what a login would make
  (``/run/user/UID``, as pam_systemd does) and, on the first start only, the student's own
  copy of the notebooks in ``~/notebooks``.
- ``environment(name)``: the single-user server's environment: the course's venv on PATH,
  the student's ports, their XDG runtime dir. The engine then runs rootless for them (their
  own store under ~/.local/share/edu, user namespaces, pasta; edu_runtime/paths.py).

Introduced in docs/hub.md.
"""

from __future__ import annotations

import os
import pwd
import shutil
from pathlib import Path

#: Where the course is installed for students (EDU_HUB_COURSE overrides it).
COURSE = Path(os.environ.get("EDU_HUB_COURSE", "/opt/edu-course"))
#: Student port ranges: PORTS_FIRST + slot * PORTS_PER_STUDENT, slot = (uid - UID_MIN) % SLOTS.
PORTS_FIRST = int(os.environ.get("EDU_HUB_PORTS_FIRST", "20000"))
PORTS_PER_STUDENT = int(os.environ.get("EDU_HUB_PORTS_PER_STUDENT", "10"))
UID_MIN = 1000
#: Ranges stay below 60000 (Linux's ephemeral ports start at 32768 by default, so a busy
#: host may hand one out as a client port: the error then names the holder; see docs/hub.md).
SLOTS = max(1, (60000 - PORTS_FIRST) // PORTS_PER_STUDENT)


def ports_for(uid: int) -> tuple[int, int]:
    """The first and last host port of the student with ``uid``: ten ports per student from
    20000 on, by uid (uid 1000 gets 20000-20009, uid 1001 gets 20010-20019, ...). Two
    students share a range only if their uids differ by a multiple of SLOTS (4000)."""
    first = PORTS_FIRST + ((uid - UID_MIN) % SLOTS) * PORTS_PER_STUDENT
    return first, first + PORTS_PER_STUDENT - 1


def runtime_dir(uid: int) -> Path:
    """XDG_RUNTIME_DIR, as pam_systemd makes it at login (no systemd here to do it)."""
    return Path(f"/run/user/{uid}")


def prepare(name: str) -> None:
    """Before a student's server starts: their home closed to others (Debian makes homes
    0755, and a student's image store and notebooks live there), their runtime dir, and on
    first start their own copy of the course's notebooks in ``~/notebooks`` (never
    overwritten: it is their work)."""
    pw = pwd.getpwnam(name)
    os.chmod(pw.pw_dir, 0o700)
    run = runtime_dir(pw.pw_uid)
    run.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chown(run, pw.pw_uid, pw.pw_gid)
    os.chmod(run, 0o700)
    mine = Path(pw.pw_dir) / "notebooks"
    if not mine.exists():
        shutil.copytree(COURSE / "course" / "notebooks", mine,
                        ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
        for path in [mine, *mine.rglob("*")]:
            os.chown(path, pw.pw_uid, pw.pw_gid, follow_symlinks=False)


def environment(name: str) -> dict[str, str]:
    """The single-user server's environment for student ``name`` (JupyterHub adds its own
    JUPYTERHUB_* variables, HOME, USER and SHELL)."""
    pw = pwd.getpwnam(name)
    first, last = ports_for(pw.pw_uid)
    venv = COURSE / "venv"
    return {
        "PATH": f"{venv}/bin:/usr/local/bin:/usr/bin:/bin",
        "VIRTUAL_ENV": str(venv),
        "EDU_COURSE_DIR": str(COURSE / "course"),
        "EDU_PORTS": f"{first}-{last}",
        "XDG_RUNTIME_DIR": str(runtime_dir(pw.pw_uid)),
        "LANG": "C.UTF-8",
    }
