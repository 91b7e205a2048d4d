"""A real non-root user for a lesson's rootless part: a throwaway account made as root, or you.

Rootless containers are what students run on their own laptops: ``edu run`` (or Docker's
rootless mode) as an ordinary user, whose uid becomes uid 0 inside a user namespace. To show
that for real, the lesson needs a user that is not root:

- run by a student (not root), the account is the student's own (``me()``);
- run as root (an instructor's machine, CI), the lesson makes a throwaway account with
  ``useradd -m``, as an administrator would (``throwaway()``). It is named
  ``edu-st-PID-lesson`` (PID: the notebook's kernel): the test suite's prefix, so a test
  session's /etc/passwd check ignores it, but never a test session's own ``edu-st-PID``,
  which a lesson run inside pytest would otherwise take for its own and delete on reset.
  The lesson notes it in its ledger *before* making it (``note(user=name)``), so its reset
  removes it (``remove``): processes ended, home, mail spool, /etc/subuid entries and
  /run/user/UID deleted.

The account runs the course's own ``edu`` (``Account.edu``): the system's Python 3 with the
course's packages on its path, read where they are when others may read them, else copied
into the account's home (a checkout under /root is private).

Introduced in notebooks/03-installing.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import stat
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass, field
from pathlib import Path

PREFIX = "edu-st-"
#: The course's packages a student's ``edu`` needs (the rest of a checkout is lessons, tests).
PACKAGES = ("edu_runtime", "edu_cli")
_SKIP = shutil.ignore_patterns("__pycache__", "*.pyc", ".ipynb_checkpoints")


class AccountError(RuntimeError):
    """An account could not be made or used; the message says why and the fix."""


@dataclass
class Account:
    """A user that runs commands (``run``) and the course's ``edu`` (``edu``)."""

    name: str
    uid: int
    gid: int
    home: Path
    python: str = sys.executable
    pythonpath: list[str] = field(default_factory=list)
    throwaway: bool = False  # made by the lesson (and removed by its reset)

    def env(self, **more: str) -> dict[str, str]:
        """The account's login environment (none of root's)."""
        if not self.throwaway:
            return {**os.environ, **more}
        env = {"HOME": str(self.home), "USER": self.name, "LOGNAME": self.name,
               "SHELL": "/bin/bash", "LANG": "C.UTF-8", "PATH": "/usr/local/bin:/usr/bin:/bin",
               "XDG_RUNTIME_DIR": f"/run/user/{self.uid}"}
        if self.pythonpath:
            env["PYTHONPATH"] = os.pathsep.join(self.pythonpath)
        return {**env, **more}

    def argv(self, argv: list[str]) -> list[str]:
        """``argv`` run as the account: ``setpriv`` to its uid, gid and groups."""
        if not self.throwaway:
            return list(argv)
        return ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--init-groups",
                *argv]

    def run(self, argv: list[str], **kw) -> subprocess.CompletedProcess:
        """Run ``argv`` as the account in its home; text output captured."""
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        kw.setdefault("timeout", 300)
        kw.setdefault("cwd", self.home)
        return subprocess.run(self.argv(argv), env=self.env(), **kw)

    def edu(self, *args: str, **kw) -> subprocess.CompletedProcess:
        """``edu ARGS...`` as the account types it."""
        return self.run([self.python, "-m", "edu_cli.main", *args], **kw)


def me() -> Account:
    """The user running this notebook, as an Account."""
    pw = pwd.getpwuid(os.getuid())
    return Account(pw.pw_name, pw.pw_uid, pw.pw_gid, Path(pw.pw_dir))


def named(name: str) -> Account:
    """An existing account by name: you, or a throwaway one a lesson made."""
    try:
        pw = pwd.getpwnam(name)
    except KeyError:
        raise AccountError(f"there is no user {name!r} on this machine (a lesson's reset "
                           f"removed it, or it was made on another one): run the lesson's "
                           f"rootless part again") from None
    if pw.pw_uid == os.getuid():
        return me()
    python, path = _access(Path(pw.pw_dir), pw.pw_uid, pw.pw_gid)
    return Account(pw.pw_name, pw.pw_uid, pw.pw_gid, Path(pw.pw_dir), python, path,
                   throwaway=True)


def throwaway(note=None) -> Account:
    """As root: a new account ``edu-st-PID-lesson`` (useradd -m, a /run/user dir as a login makes
    one), able to run the course's ``edu``; ``note(user=name)`` is called before it is made."""
    if os.geteuid() != 0:
        raise AccountError("making a user needs root; as yourself, use accounts.me()")
    for tool in ("useradd", "userdel", "setpriv"):
        if shutil.which(tool) is None:
            raise AccountError(f"{tool} is missing: apt-get install passwd util-linux")
    name = f"{PREFIX}{os.getpid()}-lesson"
    if note is not None:
        note(user=name)
    try:
        pwd.getpwnam(name)
    except KeyError:
        made = subprocess.run(["useradd", "-m", "-s", "/bin/bash", "-c",
                               "edu lesson student (throwaway)", name],
                              capture_output=True, text=True)
        if made.returncode != 0:
            raise AccountError(f"useradd {name} failed: {made.stderr.strip()}") from None
    pw = pwd.getpwnam(name)
    runtime = Path(f"/run/user/{pw.pw_uid}")
    runtime.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chown(runtime, pw.pw_uid, pw.pw_gid)
    return named(name)


def processes(uid: int) -> list[int]:
    """The pids of the live processes of ``uid`` (zombies are gone already)."""
    out = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            if p.stat().st_uid != uid:
                continue
            state = (p / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state not in "ZX":
            out.append(int(p.name))
    return sorted(out)


def remove(name: str) -> bool:
    """End every process of the throwaway account ``name`` and delete it, with its home,
    its /etc/subuid and /etc/subgid entries and /run/user/UID; False if it was not there."""
    if not name.startswith(PREFIX):
        raise AccountError(f"{name!r} is not a lesson's throwaway account ({PREFIX}PID): "
                           "refusing to delete it")
    try:
        pw = pwd.getpwnam(name)
    except KeyError:
        return False
    for _ in range(100):  # its supervisor may be starting a container as we go
        pids = processes(pw.pw_uid)
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.05)
    gone = subprocess.run(["userdel", "-r", "-f", name], capture_output=True, text=True)
    shutil.rmtree(f"/run/user/{pw.pw_uid}", ignore_errors=True)
    shutil.rmtree(pw.pw_dir, ignore_errors=True)
    if gone.returncode not in (0, 12):  # 12: the home or the mail spool was not there
        raise AccountError(f"userdel {name} failed: {gone.stderr.strip()}")
    return True


# ---- the course, reachable by the account -----------------------------------------------------

def _open_to_others(path: Path) -> bool:
    """Others may reach ``path``: every directory above it searchable, it readable."""
    path = path.resolve()
    try:
        for parent in reversed(path.parents):
            if not os.stat(parent).st_mode & stat.S_IXOTH:
                return False
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return bool(mode & stat.S_IROTH) and (not stat.S_ISDIR(mode) or bool(mode & stat.S_IXOTH))


def _same_python(python: str) -> bool:
    """``python`` is this interpreter's version (the packages' compiled parts match it)."""
    want = f"{sys.version_info[0]}.{sys.version_info[1]}"
    try:
        out = subprocess.run([python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                             capture_output=True, text=True, timeout=30)
    except OSError:
        return False
    return out.stdout.strip() == want


def packages_root() -> Path:
    """The directory holding ``edu_runtime`` and ``edu_cli`` (the checkout, as setup.sh
    installs the course: editable)."""
    return Path(__file__).resolve().parents[2]


def _access(home: Path, uid: int, gid: int) -> tuple[str, list[str]]:
    """The Python and the path entries with which the account runs the course's ``edu``."""
    here = os.path.realpath(sys.executable)
    candidates = [here, "/usr/bin/python3"]
    python = next((p for p in candidates if _open_to_others(Path(p)) and _same_python(p)),
                  None)
    if python is None:
        raise AccountError(f"no Python {sys.version_info[0]}.{sys.version_info[1]} that "
                           f"other users may run (tried {', '.join(candidates)}): "
                           "apt-get install python3")
    course_root = packages_root()
    site = Path(sysconfig.get_paths()["purelib"])
    path = []
    if all(_open_to_others(course_root / p) for p in PACKAGES):
        path.append(str(course_root))
    else:  # a private checkout: the account gets its own copy of the packages
        mine = home / ".local/lib/edu-course"
        for p in PACKAGES:
            if not (mine / p).exists():
                shutil.copytree(course_root / p, mine / p, ignore=_SKIP, symlinks=True)
        _own(home / ".local", uid, gid)
        path.append(str(mine))
    if _open_to_others(site):
        path.append(str(site))
    else:
        mine = home / ".local/lib/edu-site"
        if not mine.exists():
            try:  # hard links: instant, no bytes copied
                shutil.copytree(site, mine, copy_function=os.link, ignore=_SKIP,
                                symlinks=True)
            except OSError:
                shutil.rmtree(mine, ignore_errors=True)
                shutil.copytree(site, mine, ignore=_SKIP, symlinks=True)
            for pth in mine.glob("*.pth"):  # an editable install's entry points back here
                pth.unlink()
            os.chown(mine, uid, gid)
        path.append(str(mine))
    return python, path


def _own(top: Path, uid: int, gid: int) -> None:
    for root, dirs, files in os.walk(top):
        for name in [*dirs, *files]:
            os.lchown(os.path.join(root, name), uid, gid)
    os.lchown(top, uid, gid)
