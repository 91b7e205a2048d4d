"""Install what the course's JupyterHub needs, from this clone (``scripts/hub install``, run by
``make hub`` and by ``scripts/setup.sh --test``, as root). Each step checks before it acts,
so a second run takes about a second.

1. The proxy: configurable-http-proxy from npm, in deploy/hub/node_modules (``npm ci`` reads
   package-lock.json; nothing is installed globally).
2. The course for students, in ``/opt/edu-course`` (classroom.COURSE), root's and
   world-readable, because students cannot read a clone under /root:
   - ``venv/``: a Python venv with the course's dependencies, JupyterHub's single-user server
     and ipykernel; rebuilt only when pyproject.toml's dependencies change;
   - ``course/``: a copy of the course's code, lessons, notebooks and scripts, which the
     venv imports (a .pth line); copied again only when one of those files changed.
3. Shared base images: ``edu image share`` puts them in the system-wide read-only store
   every student's store reads from, so thirty students do not each bootstrap debian.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(HERE))
from classroom import COURSE  # noqa: E402

from edu_cli import launcher  # noqa: E402

#: What students' copy of the course holds (the rest of a clone is tests, docs, benches).
ENTRIES = ("edu_runtime", "edu_cli", "vm_compare", "lessons", "notebooks", "scripts",
           "pyproject.toml", "README.md")
#: What the single-user server needs beside the course's own dependencies.
HUB_EXTRA = ("ipykernel>=6.0",)
BASE_PYTHON = "/usr/bin/python3"
SKIP = shutil.ignore_patterns("__pycache__", "*.pyc", ".ipynb_checkpoints")


def say(line: str) -> None:
    print(f"    {line}", flush=True)


def proxy() -> None:
    """configurable-http-proxy in deploy/hub/node_modules, as package-lock.json pins it."""
    binary = HERE / "node_modules/.bin/configurable-http-proxy"
    lock = HERE / "package-lock.json"
    stamp = HERE / "node_modules/.edu-installed"
    want = hashlib.sha256(lock.read_bytes()).hexdigest()[:16]
    if binary.exists() and stamp.exists() and stamp.read_text() == want:
        say("configurable-http-proxy is installed")
        return
    if shutil.which("npm") is None:
        raise SystemExit("npm is not installed: run 'apt-get install nodejs npm' (Debian), "
                         "then 'scripts/hub install' again")
    subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=HERE,
                   check=True)
    stamp.write_text(want)
    say(f"configurable-http-proxy installed in {binary.parent.parent}")


def _requirements() -> list[str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return [*project["dependencies"], *project["optional-dependencies"]["hub"], *HUB_EXTRA]


def venv() -> None:
    """The students' venv: the course's dependencies and JupyterHub's single-user server."""
    reqs = _requirements()
    where = COURSE / "venv"
    stamp = where / ".edu-installed"
    # The system's interpreter, which every user can run: not the clone's (its .venv may
    # link to an interpreter under /root, e.g. pyenv's, which students cannot open).
    base = Path(BASE_PYTHON)
    if not os.access(base, os.X_OK):
        raise SystemExit(f"{base} is not there: the students' venv is made with the "
                         "system's Python; run 'apt-get install python3 python3-venv'")
    version = subprocess.run([str(base), "--version"], capture_output=True, text=True,
                             check=True).stdout.strip()
    want = hashlib.sha256("\n".join([version, *reqs]).encode()).hexdigest()[:16]
    if stamp.exists() and stamp.read_text() == want:
        say(f"{where} is up to date")
        return
    shutil.rmtree(where, ignore_errors=True)
    say(f"building {where} (pip, once; about a minute)")
    subprocess.run([str(base), "-m", "venv", str(where)], check=True)
    pip = [str(where / "bin/python"), "-m", "pip", "install", "-q",
           "--disable-pip-version-check"]
    subprocess.run([*pip, *reqs], check=True)
    site = subprocess.run([str(where / "bin/python"), "-c",
                           "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    # The course's code, importable as an editable install would make it.
    Path(site, "edu-course.pth").write_text(f"{COURSE / 'course'}\n")
    stamp.write_text(want)
    say(f"{where} built")


def _digest() -> str:
    h = hashlib.sha256()
    for entry in ENTRIES:
        src = REPO / entry
        files = [src] if src.is_file() else sorted(
            p for p in src.rglob("*") if p.is_file() and "__pycache__" not in p.parts
            and ".ipynb_checkpoints" not in p.parts and p.suffix != ".pyc")
        for p in files:
            h.update(str(p.relative_to(REPO)).encode() + b"\0" + p.read_bytes() + b"\0")
    h.update((HERE / "bashrc").read_bytes())
    return h.hexdigest()[:16]


def course() -> None:
    """The students' copy of the course, swapped in whole when the clone's files changed."""
    where = COURSE / "course"
    stamp = COURSE / ".course-installed"
    want = _digest()
    if where.exists() and stamp.exists() and stamp.read_text() == want:
        say(f"{where} is up to date")
        return
    new, old = COURSE / "course.new", COURSE / "course.old"
    shutil.rmtree(new, ignore_errors=True)
    shutil.rmtree(old, ignore_errors=True)
    new.mkdir(parents=True)
    for entry in ENTRIES:
        src = REPO / entry
        if src.is_dir():
            shutil.copytree(src, new / entry, ignore=SKIP, symlinks=True)
        else:
            shutil.copy2(src, new / entry)
    shutil.copy2(HERE / "bashrc", new / "hub-bashrc")
    # Students cannot write byte-code here: compile it once, or each `edu` start pays ~80 ms.
    subprocess.run([str(COURSE / "venv/bin/python"), "-m", "compileall", "-q",
                    str(new / "edu_runtime"), str(new / "edu_cli"), str(new / "vm_compare")],
                   check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["chmod", "-R", "a+rX,go-w", str(new)], check=True)
    if where.exists():
        where.rename(old)
    new.rename(where)
    shutil.rmtree(old, ignore_errors=True)
    stamp.write_text(want)
    say(f"{where} copied from {REPO}")


def shared_images() -> None:
    """Base images in the system-wide read-only store that students' stores read from
    (``edu image share``; EDU_HUB_IMAGES names them, busybox by default)."""
    images = os.environ.get("EDU_HUB_IMAGES", "busybox").split()
    out = subprocess.run([str(REPO / ".venv/bin/edu"), "image", "share", *images],
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{out.stderr.strip()}\n(each of {', '.join(images)} must be in "
                         "root's store first: edu bootstrap NAME, as root)")
    say(f"shared read-only for every student: {', '.join(images)} (/var/lib/edu-shared)")


def main() -> int:
    if os.geteuid() != 0:
        print("scripts/hub install needs root: it writes /opt/edu-course and starts servers "
              "as other users; run it with sudo", file=sys.stderr)
        return 1
    COURSE.mkdir(parents=True, exist_ok=True)
    os.chmod(COURSE, 0o755)
    proxy()
    venv()
    course()
    # `edu` for students: the launcher (python -S, the course's code on its path). Written
    # each time: cheap, and the venv's stamp does not cover it.
    where = COURSE / "venv"
    launcher.write(where / "bin/edu", str(where / "bin/python"), str(COURSE / "course"))
    shared_images()
    return 0


if __name__ == "__main__":
    sys.exit(main())
