"""The project installs what it says, and its lessons are committed the way DESIGN.md says."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib

import pytest
import yaml
from conftest import REPO

NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


def _name(req: str) -> str:
    return re.split(r"[<>=!~ \[]", req, maxsplit=1)[0].strip().lower()


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    conda, pip = set(), set()
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            pip |= {d for d in dep["pip"] if not d.startswith("-e")}
        else:
            conda.add(dep)
    wanted = {d.replace(" ", "") for d in project["dependencies"]}
    got = {d.replace(" ", "") for d in conda | pip if _name(d) not in ("python", "pip")}
    assert got == wanted
    assert any(d.startswith("python>=") and d.endswith(project["requires-python"][2:])
               for d in conda)
    assert "-e .[dev]" in [d for dep in env["dependencies"] if isinstance(dep, dict)
                           for d in dep["pip"]]


def test_console_script_and_cheap_import():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["scripts"]["edu"] == "edu_cli.main:main"
    # `edu` must not load pyroute2, libvirt or matplotlib just to parse its arguments.
    code = ("import sys, edu_cli.main; edu_cli.main.build_parser(); "
            "print(sorted(m for m in ('pyroute2', 'libvirt', 'matplotlib', 'vm_compare') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"


def test_every_lesson_has_a_notebook_and_back():
    lessons = sorted(p.stem for p in (REPO / "lessons").glob("*.py"))
    assert lessons and lessons == [p.stem for p in NOTEBOOKS]


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_stripped_and_in_sync(nb):
    import jupytext

    data = json.loads(nb.read_text())
    for cell in data["cells"]:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None, \
                f"{nb.name} has outputs: run nbstripout {nb}"
    paired = jupytext.read(REPO / "lessons" / f"{nb.stem}.py")
    notebook = jupytext.read(nb)
    assert [(c.cell_type, c.source) for c in paired.cells] == \
        [(c.cell_type, c.source) for c in notebook.cells], \
        f"{nb.name} and lessons/{nb.stem}.py differ: run jupytext --sync lessons/{nb.stem}.py"
