"""A real non-root user with a home directory and their own copy of the course.

Students run rootless: on their laptops, and in a classroom where JupyterHub gives each of
them a Unix account. Tests of what they do must run as such a user, not as root and not only
as ``nobody``. ``Student`` is that user, made with ``useradd -m`` as an administrator would:

- a home under /home, a login shell, an entry in /etc/subuid, and /run/user/UID as
  pam_systemd would make it (XDG_RUNTIME_DIR);
- their own copy of the project in ``~/course`` (owned by them), because the checkout under
  test may sit in a directory only root can read (any clone under /root is mode 700);
- the project's Python packages reachable from the system's ``/usr/bin/python3``: the venv's
  site-packages are hard-linked into ``~/.local/lib/edu-site`` (readable, instant, no
  download), because the venv's own interpreter lives under /root too.

The user and everything of theirs are removed at the end of the session, so /etc/passwd is
as it was (``host_is_untouched`` checks it).
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
#: Accounts are named per test session (``edu-st-PID``), so two sessions at once never
#: delete each other's student; a killed session's account is removed by the next one.
PREFIX = "edu-st-"
#: What a student's copy of the course holds (the rest of the checkout is tests and docs).
PROJECT = ("edu_runtime", "edu_cli", "vm_compare", "scripts", "lessons", "notebooks",
           "Makefile", "pyproject.toml", "README.md")
_SKIP = shutil.ignore_patterns("__pycache__", "*.pyc", ".ipynb_checkpoints")


@dataclass
class Student:
    """A real user account; ``run`` and ``edu`` run commands as them, in a login-like env."""

    name: str
    uid: int
    gid: int
    home: Path
    python: str = "/usr/bin/python3"
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def course(self) -> Path:
        """The student's own copy of the project."""
        return self.home / "course"

    @property
    def site(self) -> Path:
        """The project's third-party packages, readable by the student."""
        return self.home / ".local/lib/edu-site"

    @property
    def runtime_dir(self) -> Path:
        """XDG_RUNTIME_DIR, as pam_systemd makes it at login."""
        return Path(f"/run/user/{self.uid}")

    def env(self, **more: str) -> dict[str, str]:
        """A login shell's environment for the student (no root paths, no root env)."""
        return {"HOME": str(self.home), "USER": self.name, "LOGNAME": self.name,
                "SHELL": "/bin/bash", "LANG": "C.UTF-8",
                "PATH": f"{self.home}/.local/bin:/usr/local/bin:/usr/bin:/bin",
                "XDG_RUNTIME_DIR": str(self.runtime_dir),
                "PYTHONPATH": f"{self.course}:{self.site}", **self.extra_env, **more}

    def prefix(self, env: dict[str, str] | None = None) -> list[str]:
        """A command prefix that becomes the student (real and effective ids, their groups)
        with only the student's environment."""
        return ["env", "-i", *[f"{k}={v}" for k, v in self.env(**(env or {})).items()],
                "setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--init-groups"]

    def run(self, argv: list[str], env: dict[str, str] | None = None, cwd: Path | None = None,
            **kw) -> subprocess.CompletedProcess:
        """Run ``argv`` as the student; text output captured unless told otherwise."""
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        kw.setdefault("timeout", 300)
        return subprocess.run([*self.prefix(env), *argv], cwd=cwd or self.home, **kw)

    def popen(self, argv: list[str], env: dict[str, str] | None = None, **kw) -> subprocess.Popen:
        """Start ``argv`` as the student in the background."""
        return subprocess.Popen([*self.prefix(env), *argv], cwd=self.home, **kw)

    def edu(self, *args: str, **kw) -> subprocess.CompletedProcess:
        """``edu ARGS...`` as the student, from their own copy of the course."""
        return self.run([self.python, "-m", "edu_cli.main", *args], **kw)

    def kill_all(self) -> None:
        """End every process of the student (their supervisor, pasta, libvirtd, virtlogd)."""
        subprocess.run(["pkill", "-KILL", "-u", str(self.uid)], capture_output=True)
        for _ in range(100):
            if subprocess.run(["pgrep", "-u", str(self.uid)],
                              capture_output=True).returncode != 0:
                return
            time.sleep(0.05)


def processes(uid: int) -> list[tuple[int, str]]:
    """The student's live processes (zombies waiting for init to reap them are gone) as
    (pid, command line)."""
    out = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            if p.stat().st_uid != uid:
                continue
            state = (p / "stat").read_text().rsplit(")", 1)[1].split()[0]
            cmdline = (p / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        except (OSError, IndexError):
            continue
        if state not in "ZX":
            out.append((int(p.name), cmdline))
    return sorted(out)


def _link_tree(src: Path, dst: Path) -> None:
    """Hard-link ``src`` into ``dst`` (directories made, files linked): no bytes copied."""
    shutil.copytree(src, dst, copy_function=os.link, ignore=_SKIP, symlinks=True,
                    dirs_exist_ok=True)


def _remove_stale() -> None:
    """Remove the accounts of test sessions that are gone (killed before their teardown)."""
    for pw in pwd.getpwall():
        owner = pw.pw_name.removeprefix(PREFIX)
        if pw.pw_name.startswith(PREFIX) and owner.isdigit() \
                and not Path(f"/proc/{owner}").exists():
            remove(Student(pw.pw_name, pw.pw_uid, pw.pw_gid, Path(pw.pw_dir)))


def create() -> Student:
    """Make this session's account and fill its home."""
    _remove_stale()
    name = f"{PREFIX}{os.getpid()}"
    try:
        pw = pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "-m", "-s", "/bin/bash", "-c", "edu test student", name],
                       check=True, capture_output=True)
        pw = pwd.getpwnam(name)
    student = Student(name, pw.pw_uid, pw.pw_gid, Path(pw.pw_dir))
    student.kill_all()
    course = student.course
    shutil.rmtree(course, ignore_errors=True)
    course.mkdir(parents=True)
    for entry in PROJECT:
        src = REPO / entry
        if src.is_dir():
            shutil.copytree(src, course / entry, ignore=_SKIP, symlinks=True)
        elif src.exists():
            shutil.copy2(src, course / entry)
    site = student.site
    shutil.rmtree(site, ignore_errors=True)
    purelib = Path(sysconfig.get_paths()["purelib"])
    try:
        _link_tree(purelib, site)
    except OSError:  # another filesystem: copy instead
        shutil.rmtree(site, ignore_errors=True)
        shutil.copytree(purelib, site, ignore=_SKIP, symlinks=True)
    # The editable install's path entry points into the root-only checkout: drop it.
    for pth in site.glob("*.pth"):
        if str(REPO) in pth.read_text():
            pth.unlink()
    for d in (student.home / ".local", student.home / ".local/lib", course):
        subprocess.run(["chown", "-R", f"{pw.pw_uid}:{pw.pw_gid}", str(d)], check=True)
    os.chown(site, pw.pw_uid, pw.pw_gid)  # their directory; the linked files stay root's 0644
    runtime = student.runtime_dir
    runtime.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chown(runtime, pw.pw_uid, pw.pw_gid)
    os.chmod(runtime, 0o700)
    if not os.access(student.python, os.X_OK):
        student.python = os.path.realpath(sys.executable)
    return student


def remove(student: Student) -> None:
    """Log the student out and delete the account with its home and runtime dir."""
    student.kill_all()
    # The student's rootless mounts live in their own namespaces; nothing of theirs is
    # mounted on the host, so removing the home is safe.
    subprocess.run(["userdel", "-r", "-f", student.name], capture_output=True)
    shutil.rmtree(student.runtime_dir, ignore_errors=True)
    shutil.rmtree(student.home, ignore_errors=True)
