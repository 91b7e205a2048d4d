"""The lessons' small apps (``lessons/apps/NAME``), copied where a lesson may change them.

A lesson that builds an app must not edit the course's own copy (lesson 05 edits ``app.py``
to show the build cache miss), so it builds a copy: ``copy(name, dest)``.

A Python app's dependencies come from a *wheelhouse*: the wheels its ``requirements.txt``
needs, and pip's own (the course's ``python`` image is Debian's python3, which has no pip),
downloaded once from PyPI with the course's own pip into ``cache_dir()/wheels`` and copied
into the build context as ``wheels/``. The Dockerfile then installs them with
``pip install --no-index --find-links wheels``: a real install, from files, so a build
needs no network, is as fast the hundredth time as the first, and runs in a classroom that
has no internet once the cache is filled (``make lab`` on a connected machine, or one run of
the lesson).

Introduced in notebooks/05-dockerfile.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from . import course

#: The Python of the course's ``python`` image (Debian 12's python3), for pip download.
IMAGE_PYTHON = "3.11"
#: pip's own wheel in every wheelhouse: Debian 12's pip, so a Dockerfile can name its file
#: (``wheels/pip-23.0.1-py3-none-any.whl/pip``: pip runs straight from its wheel).
PIP = "pip==23.0.1"


class AppError(RuntimeError):
    """An app could not be prepared; the message says why and the fix."""


def app_dir(name: str) -> Path:
    """``lessons/apps/NAME`` of the course."""
    path = course.lessons_dir() / "apps" / name
    if not path.is_dir():
        raise AppError(f"there is no app {name!r} in {path.parent}")
    return path


def wheelhouse(requirements: Path, python: str = IMAGE_PYTHON) -> Path:
    """The wheels that ``requirements`` needs, and pip's, for Python ``python``: downloaded
    once (pip download, binary wheels only) into the cache, by the requirements' content."""
    from .. import paths

    text = requirements.read_text()
    key = hashlib.sha256(f"{python}\n{PIP}\n{text}".encode()).hexdigest()[:16]
    where = paths.ensure(paths.cache_dir() / "wheels") / key
    if where.is_dir():
        return where
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=where.parent))
    try:
        got = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
             "--only-binary=:all:", "--python-version", python, "--dest", str(tmp), PIP,
             "-r", str(requirements)], capture_output=True, text=True, timeout=600)
        if got.returncode != 0:
            raise AppError(f"pip could not download the wheels of {requirements} "
                           f"({got.stderr.strip().splitlines()[-1:]}). The first build needs "
                           "PyPI once: connect this machine, or copy a filled "
                           f"{where.parent} from one that has it")
        os.chmod(tmp, 0o755)
        try:
            tmp.rename(where)
        except OSError:  # another kernel filled it meanwhile: theirs is the same
            pass
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return where


def copy(name: str, dest: Path) -> Path:
    """A copy of app ``name`` in ``dest`` (made), with its wheelhouse as ``wheels/`` when it
    has a requirements.txt; the copy's path."""
    src = app_dir(name)
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns("wheels", "__pycache__"),
                    dirs_exist_ok=True)
    if (src / "requirements.txt").exists():
        wheels = wheelhouse(src / "requirements.txt")
        shutil.copytree(wheels, dest / "wheels", dirs_exist_ok=True)
    return dest
