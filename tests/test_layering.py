"""The house plan, read from the imports (../shared/DESIGN.md, "Rooms and who may call whom").

- No import cycle inside ``edu_runtime``, counting imports inside functions too: a cycle
  hidden in a function is still two modules that cannot be read one without the other.
- The engine never imports its faces: nothing in ``edu_runtime`` (outside its notebook
  layer) imports ``edu_cli``, ``vm_compare`` or ``edu_runtime.notebook``.
- ``vm_compare`` and the lessons use the public face: no private name of ``edu_runtime``
  (``_command``, ``_ctx``) is imported or reached as an attribute.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from conftest import REPO

PACKAGES = ("edu_runtime", "edu_cli", "vm_compare")


def module_name(path: Path) -> str:
    """``edu_runtime/images/store.py`` -> ``edu_runtime.images.store``."""
    rel = path.relative_to(REPO).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules(package: str) -> dict[str, Path]:
    """Every module of ``package`` by dotted name."""
    return {module_name(p): p for p in sorted((REPO / package).rglob("*.py"))}


KNOWN = {name for pkg in PACKAGES for name in modules(pkg)}


def imports(path: Path) -> Iterator[tuple[str, list[str], int]]:
    """(module imported, names taken from it, line) for every import in the file, at any
    depth (function-level imports included), relative ones resolved."""
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, [], node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            yield target, [a.name for a in node.names], node.lineno


def edges(package: str) -> dict[str, set[str]]:
    """The import graph of ``package``: ``from . import x`` counts as importing module x."""
    graph: dict[str, set[str]] = {}
    for name, path in modules(package).items():
        out = graph.setdefault(name, set())
        for target, names, _ in imports(path):
            subs = [f"{target}.{n}" for n in names if f"{target}.{n}" in KNOWN]
            if subs:
                out.update(subs)
            elif target in KNOWN:
                out.add(target)
        out.discard(name)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph.get(v, ())):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_inside_the_runtime():
    assert cycles(edges("edu_runtime")) == []


def test_the_engine_never_imports_its_faces():
    bad = []
    for name, path in modules("edu_runtime").items():
        if name.startswith("edu_runtime.notebook"):
            continue
        for target, _, line in imports(path):
            if target.split(".")[0] in ("edu_cli", "vm_compare") \
                    or target.startswith("edu_runtime.notebook"):
                bad.append(f"{path.relative_to(REPO)}:{line} imports {target}")
    assert bad == []


def private_names(package: str) -> set[str]:
    """Private names a package defines: functions, classes, module globals and attributes
    (``self._ctx = ...``), single underscore only."""
    names = set()
    for path in modules(package).values():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.FunctionDef | ast.ClassDef | ast.AsyncFunctionDef):
                names.add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
    return {n for n in names if n.startswith("_") and not n.startswith("__")}


RUNTIME_PRIVATE = private_names("edu_runtime")


def private_uses(path: Path, own: set[str] = frozenset()) -> list[str]:
    """Private names of edu_runtime that ``path`` imports, or reaches as an attribute of a
    runtime module or object (``c._ctx``); ``own`` are the file's own package's privates."""
    tree = ast.parse(path.read_text(), str(path))
    bad = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("edu_runtime"):
            bad += [f"{path.name}:{node.lineno} imports {a.name}" for a in node.names
                    if a.name.startswith("_")]
        elif isinstance(node, ast.Attribute) and node.attr in RUNTIME_PRIVATE \
                and node.attr not in own:
            bad.append(f"{path.name}:{node.lineno} reaches {ast.unparse(node)}")
    return bad


def test_private_use_is_found():
    sample = REPO / "tests" / "_private_sample.py"
    sample.write_text("from edu_runtime.container import _waitpid\n"
                      "from edu_runtime import container\nc = container.Container('x')\n"
                      "c._ctx.cgroup\n")
    try:
        assert len(private_uses(sample)) == 2
    finally:
        sample.unlink()


def test_vm_compare_and_lessons_use_only_public_names():
    own = private_names("vm_compare")
    bad = [use for path in sorted((REPO / "vm_compare").rglob("*.py"))
           for use in private_uses(path, own)]
    bad += [use for path in sorted((REPO / "lessons").glob("*.py")) for use in private_uses(path)]
    assert bad == []


def test_importing_the_public_face_costs_nothing():
    """``import edu_runtime`` adds only itself: ``edu run`` pays for every import."""
    import subprocess
    import sys

    code = ("import sys; before = set(sys.modules); import edu_runtime; "
            "print(sorted(set(sys.modules) - before))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=REPO, check=True)
    assert out.stdout.strip() == "['edu_runtime']"
    face = ("from edu_runtime import Container, Stepper, Trace, images, networks, volumes; "
            "print(Container.__name__, Stepper.__name__, Trace.__name__, networks.create.__name__,"
            " volumes.__name__, images.__name__)")
    out = subprocess.run([sys.executable, "-c", face], capture_output=True, text=True,
                         cwd=REPO, check=True)
    assert out.stdout.split() == ["Container", "Stepper", "Trace", "create", "edu_runtime.volumes",
                                  "edu_runtime.images"]


#: The course map (../shared/DESIGN.md): one numbering for notebooks and every backlink.
COURSE = ["00-start-here", "01-containers-vs-vms", "02-why-containers", "03-installing",
          "04-images", "05-dockerfile", "06-step-by-step", "07-run-it", "08-web-app",
          "09-node-app", "10-limits-and-security"]


def test_every_backlink_names_a_lesson_of_the_course_map():
    import re

    found = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            for name in re.findall(r"notebooks/(\d\d-[a-z0-9-]+)", path.read_text()):
                found.setdefault(name, path.relative_to(REPO))
    assert found and {n: p for n, p in found.items() if n not in COURSE} == {}
    # Notebooks that exist carry the map's names too, each paired with its lesson file.
    for nb in (REPO / "notebooks").glob("*.ipynb"):
        assert nb.stem in COURSE and (REPO / "lessons" / f"{nb.stem}.py").exists()


def test_context_declares_every_field_the_steps_set():
    """Steps share one Context; each field is declared there, not added by a step."""
    import re

    ctx_src = (REPO / "edu_runtime/container.py").read_text()
    body = ctx_src[ctx_src.index("class Context"):ctx_src.index("class Fork")]
    declared = set(re.findall(r"self\.([a-z_]+)\s*[:=]", body))
    assigned = set()
    for path in (REPO / "edu_runtime").rglob("*.py"):
        assigned |= set(re.findall(r"\bctx\.([a-z_]+)\s*=[^=]", path.read_text()))
    assert assigned and assigned - declared == set()
