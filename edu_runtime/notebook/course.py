"""The course around the lessons: where it lives, what each lesson declares it needs, what
this host can do, and the course's settings (the host ports lessons publish).

**Declarations.** Each lesson says, in its own header (the jupytext YAML at the top of
``lessons/NAME.py``, kept as the notebook's ``edu`` metadata), which of its parts need what::

    #   edu:
    #     parts:
    #       compare: {needs: [containers, qemu], what: "a container and a guest, measured"}

so lesson 00 can list, for this machine, what every lesson will do live and what it will
replay, and a new lesson joins that table without anyone editing 00.

**Needs** are found out the way ``edu doctor`` finds them, by trying (its report, in a
separate process, so a Jupyter kernel never loads libvirt or forks for it):

- ``linux``: the engine's Linux-only modules import here (not macOS, not Windows);
- ``containers``: namespaces and overlay mounts work, as root or with user namespaces;
- ``bridge``: a container can have a network (root's bridge, or rootless pasta/slirp);
- ``root``: the lesson runs as root (cgroup limits on a hybrid host, the host's bridge);
- ``limits``: this user's containers get cgroup limits: root, or a user on cgroup v2 with a
  delegated subtree (a rootless container on a cgroup v1 host gets no cgroup at all);
- ``qemu``: libvirt answers and the probe guest boots (KVM or TCG);
- ``dockerd``: a Docker daemon answers on its socket.

**Settings.** The host ports lessons publish come from one setting, ``ports``: by default the
primer's (``web`` 8080, ``node`` 47561; ``scale`` 8081, lesson 02's front, has none in the
primer); a classroom gives each student a range instead,
``EDU_PORTS=20100-20109`` or ``{"ports": "20100-20109"}`` in ``~/.config/edu/course.json``,
and the lessons' ports are taken from it in order.

Introduced in notebooks/00-start-here.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

#: What each lesson publishes, in order: the primer's ports, unless a range is set.
PORT_NAMES = ("web", "node", "scale")
PRIMER_PORTS = {"web": 8080, "node": 47561, "scale": 8081}
NEEDS = ("linux", "containers", "bridge", "root", "limits", "qemu", "dockerd")


class CourseError(RuntimeError):
    """A course setting or declaration is wrong; the message says which and how to fix it."""


# ---- where the course lives --------------------------------------------------------------------

def course_dir() -> Path:
    """The course checkout: ``EDU_COURSE_DIR`` (``make lab`` sets it), else the directory
    this package was installed from (an editable install, as setup.sh makes)."""
    env = os.environ.get("EDU_COURSE_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2]


def lessons_dir() -> Path:
    return course_dir() / "lessons"


def notebooks_dir() -> Path:
    return course_dir() / "notebooks"


def recordings_dir() -> Path:
    """``lessons/recordings``; ``make record`` writes a new one aside (``EDU_RECORDINGS_DIR``)
    and moves it in only when the whole lesson ran."""
    env = os.environ.get("EDU_RECORDINGS_DIR")
    return Path(env) if env else lessons_dir() / "recordings"


# ---- what lessons declare ------------------------------------------------------------------

@dataclass
class Part:
    """A live part of a lesson: what it shows, and what a host needs to run it for real."""

    lesson: str
    name: str
    needs: list[str]
    what: str = ""


@dataclass
class LessonInfo:
    name: str
    title: str
    parts: list[Part] = field(default_factory=list)

    def part(self, name: str) -> Part:
        for p in self.parts:
            if p.name == name:
                return p
        raise CourseError(f"lesson {self.name} declares no part {name!r} (it declares "
                          f"{', '.join(p.name for p in self.parts) or 'none'}): add it to "
                          f"the edu: parts: list in lessons/{self.name}.py's header")


def read_notebook(name: str) -> dict:
    path = notebooks_dir() / f"{name}.ipynb"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise CourseError(f"no lesson {name}: {path} does not exist (the lessons are "
                          f"{', '.join(lesson_names())})") from None


def lesson_names() -> list[str]:
    return sorted(p.stem for p in notebooks_dir().glob("[0-9][0-9]-*.ipynb"))


def declaration(name: str, nb: dict | None = None) -> LessonInfo:
    """A lesson's title and its parts' needs, from its notebook's ``edu`` metadata."""
    nb = nb if nb is not None else read_notebook(name)
    meta = (nb.get("metadata") or {}).get("edu") or {}
    parts = []
    for pname, spec in (meta.get("parts") or {}).items():
        spec = spec or {}
        needs = list(spec.get("needs") or [])
        unknown = [n for n in needs if n not in NEEDS]
        if unknown:
            raise CourseError(f"lesson {name}, part {pname}: unknown need(s) "
                              f"{', '.join(unknown)}; the needs are {', '.join(NEEDS)}")
        parts.append(Part(name, pname, needs, spec.get("what", "")))
    # In the order the lesson meets them (jupytext sorts the header's keys).
    code = "\n".join("".join(c.get("source", "")) for c in nb.get("cells", [])
                     if c.get("cell_type") == "code")

    def first_use(p: Part) -> int:
        at = [code.find(f"{q}{p.name}{q}") for q in "\"'"]
        return min([i for i in at if i >= 0], default=len(code))

    parts.sort(key=first_use)
    return LessonInfo(name, _title(nb) or name, parts)


def _title(nb: dict) -> str:
    for cell in nb.get("cells", []):
        if cell.get("cell_type") == "markdown":
            src = "".join(cell.get("source", ""))
            for line in src.splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return ""


def declarations() -> list[LessonInfo]:
    return [declaration(n) for n in lesson_names()]


# ---- what this host can do -----------------------------------------------------------------

@dataclass
class Verdict:
    ok: bool
    why: str  # the reason, one line, when not ok (and what doctor saw when ok)


def _doctor_json() -> dict | None:
    """``edu doctor --json`` in its own process (cached verdicts make it quick); None where
    it cannot run at all (no Linux engine here)."""
    try:
        out = subprocess.run([sys.executable, "-m", "edu_cli.main", "doctor", "--json"],
                             capture_output=True, text=True, timeout=180,
                             env={**os.environ, "PYTHONWARNINGS": "ignore"})
        return json.loads(out.stdout)
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return None


def _linux_engine() -> str | None:
    """Why the engine cannot run here, or None. Imported here only to find out."""
    if not sys.platform.startswith("linux"):
        return f"this is {sys.platform}, and containers need a Linux kernel"
    try:
        import pyroute2  # noqa: F401

        from .. import kernel  # noqa: F401
    except ImportError as exc:
        return f"the engine's Linux modules do not import here ({exc})"
    return None


def docker_answers(path: str = "/var/run/docker.sock") -> bool:
    """A Docker daemon answers ``GET /_ping`` on its socket."""
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(2)
            s.connect(path)
            s.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            return b" 200 " in s.recv(64)
    except OSError:
        return False


@lru_cache(maxsize=1)
def host() -> dict[str, Verdict]:
    """This host's verdict for every need (once per process)."""
    out: dict[str, Verdict] = {}
    no_linux = _linux_engine()
    if no_linux:
        return {n: Verdict(False, no_linux) for n in NEEDS}
    out["linux"] = Verdict(True, "the engine imports")
    report = _doctor_json()
    if report is None:
        return {**{n: Verdict(False, "edu doctor could not run here") for n in NEEDS},
                "linux": out["linux"]}
    res = {r["name"]: r for r in report.get("results", [])}

    def status(name: str) -> str:
        return (res.get(name) or {}).get("status", "fail")

    root = os.geteuid() == 0
    out["root"] = Verdict(root, "running as root" if root else "not running as root")
    basics = [n for n in ("namespaces", "overlayfs") if status(n) == "fail"]
    if not root and status("userns") != "pass":
        basics.append("userns")
    out["containers"] = Verdict(not basics, "doctor: " + (
        "; ".join(f"{n}: {res.get(n, {}).get('summary', 'no verdict')}" for n in basics)
        or "namespaces and overlay mounts work"))
    net = status("namespaces") == "pass" and (root or _rootless_net())
    out["bridge"] = Verdict(out["containers"].ok and net,
                            "a network for containers" if net else
                            "no network namespace, or no pasta/slirp4netns for rootless")
    from .. import cgroups

    out["limits"] = Verdict(*cgroups.limits_here())
    kvm, lv = res.get("kvm", {}), res.get("libvirt", {})
    accel = (kvm.get("data") or {}).get("accel")
    qemu_ok = lv.get("status") == "pass" and accel in ("kvm", "tcg")
    out["qemu"] = Verdict(qemu_ok, f"libvirt and the probe guest boot ({accel})" if qemu_ok
                          else "doctor: " + "; ".join(
                              f"{k}: {v.get('summary', 'no verdict')}"
                              for k, v in (("libvirt", lv), ("kvm", kvm))
                              if v.get("status") != "pass"))
    dock = docker_answers()
    out["dockerd"] = Verdict(dock, "dockerd answers" if dock else
                             "no Docker daemon answers on /var/run/docker.sock")
    return out


def _rootless_net() -> bool:
    from shutil import which

    return bool(which("pasta") or which("slirp4netns"))


def can(needs: list[str]) -> Verdict:
    """Whether this host can run a part with these needs for real, and if not, why."""
    verdicts = host()
    reasons: dict[str, list[str]] = {}
    for n in needs:
        if not verdicts[n].ok:
            reasons.setdefault(verdicts[n].why, []).append(n)
    if reasons:
        return Verdict(False, "; ".join(f"{', '.join(ns)}: {why}"
                                        for why, ns in reasons.items()))
    return Verdict(True, "")


# ---- settings ------------------------------------------------------------------------------

def settings_file() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "edu" / "course.json"


def _port_range(text: str, source: str) -> list[int]:
    try:
        lo, _, hi = str(text).partition("-")
        first, last = int(lo), int(hi or lo)
    except ValueError:
        raise CourseError(f"{source}: ports must be a range like 20100-20109, "
                          f"not {text!r}") from None
    if not (1 <= first <= last <= 65535):
        raise CourseError(f"{source}: {text!r} is not a range of ports within 1-65535")
    if last - first + 1 < len(PORT_NAMES):
        raise CourseError(f"{source}: {text!r} has {last - first + 1} port(s); the lessons "
                          f"publish {len(PORT_NAMES)} ({', '.join(PORT_NAMES)})")
    return list(range(first, last + 1))


def ports() -> dict[str, int]:
    """The host ports lessons publish, by name: ``{"web": 8080, "node": 47561, "scale": 8081}``
    unless a range is set (``EDU_PORTS``, or ``ports`` in the settings file)."""
    env = os.environ.get("EDU_PORTS")
    if env:
        found = _port_range(env, "EDU_PORTS")
    else:
        path = settings_file()
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return dict(PRIMER_PORTS)
        except ValueError as exc:
            raise CourseError(f"{path}: not JSON ({exc}); fix or remove it") from None
        if "ports" not in data:
            return dict(PRIMER_PORTS)
        found = _port_range(data["ports"], str(path))
    return dict(zip(PORT_NAMES, found[:len(PORT_NAMES)], strict=True))


def port(name: str) -> int:
    """One named host port (``web``: lesson 08's WordPress, ``node``: lesson 09's app,
    ``scale``: lesson 02's app and its front)."""
    table = ports()
    if name not in table:
        raise CourseError(f"no course port named {name!r}; the names are "
                          f"{', '.join(PORT_NAMES)}")
    return table[name]
