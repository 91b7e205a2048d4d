"""Regenerate SECURITY.md's escape table from a real run: every attempt of edu_runtime.escapes
in `edu run`, `docker run`, `edu exec`, `docker exec`, and rootless (`edu run` and `edu exec`
as a throwaway unprivileged user, made and removed as tests/accounts.py does), default
configurations. tests/test_escapes_extended.py fails when the committed table differs from a
fresh run's; this rewrites it. With --check it only says whether it differs (exit 1 if so).

    .venv/bin/python bench/escapes_table.py [--check]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

import accounts  # noqa: E402
from test_escapes import load_python  # noqa: E402
from test_escapes_extended import rootless_run  # noqa: E402

from edu_runtime import escapes  # noqa: E402
from edu_runtime.images import bootstrap  # noqa: E402
from edu_runtime.images.store import Store  # noqa: E402


def main() -> int:
    """Run the suite everywhere, then rewrite (or --check) SECURITY.md's table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="only say whether it is stale")
    args = ap.parse_args()
    if subprocess.run(["docker", "version"], capture_output=True).returncode != 0:
        sys.exit("dockerd is not running: scripts/services.sh start docker")
    bootstrap.bootstrap(Store(), "python", progress=True)
    t = time.perf_counter()
    results = escapes.run("python", docker_tag=load_python(), via_exec=True,
                          prefix="bench-esct")
    print(f"edu run, docker run, edu exec, docker exec: {time.perf_counter() - t:.1f} s")
    student = accounts.create()
    try:
        t = time.perf_counter()
        results += rootless_run(student, "bench-esct")
        print(f"rootless run and exec, as {student.name}: {time.perf_counter() - t:.1f} s")
    finally:
        accounts.remove(student)
    table = escapes.markdown(results)
    path = REPO / "SECURITY.md"
    text = path.read_text()
    begin, end = escapes.TABLE_MARKERS
    head, rest = text.split(begin, 1)
    old, tail = rest.split(end, 1)
    print(table)
    if old.strip() == table.strip():
        print("SECURITY.md's table is what this run gives")
        return 0
    if args.check:
        print("SECURITY.md's table is stale: run this without --check")
        return 1
    path.write_text(f"{head}{begin}\n{table}{end}{tail}")
    print(f"rewrote the table in {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
