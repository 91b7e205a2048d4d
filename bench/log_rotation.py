"""One noisy container against the log cap: edu's default (3 files of 10 MB) and docker's
json-file given the same ``--log-opt max-size=10m --log-opt max-file=3``, side by side.

Each run starts a detached busybox that prints N numbered lines as fast as it can (about
twice the cap in JSON), waits for it to exit, and reads what is left: the wall time (start
to exit, so the logging path's cost is in it), the log files' count and total size on disk,
and whether ``logs --tail 1`` is the last line. Alternating runs; medians and the ratio.

    .venv/bin/python bench/log_rotation.py [--lines 500000] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, save  # noqa: E402

EDU = [sys.executable, "-m", "edu_cli.main"]
WRITER = 'i=0; while [ $i -lt {n} ]; do echo "line $i of a noisy container"; i=$((i+1)); done'
CAP = ["--log-opt", "max-size=10m", "--log-opt", "max-file=3"]


def _sizes(log: Path) -> list[int]:
    """The sizes of the log's files (container.log, .1, .2 ...)."""
    out = []
    for p in sorted(log.parent.glob(log.name + "*")):
        try:
            out.append(p.stat().st_size)
        except FileNotFoundError:  # rotated away between the listing and the stat
            pass
    return out


def edu_run(lines: int) -> dict:
    """edu run -d with the default cap (no --log-opt at all)."""
    from edu_runtime.life import control

    name = f"day-bench-{uuid.uuid4().hex[:8]}"
    t = time.perf_counter()
    subprocess.run([*EDU, "run", "-d", "--network", "none", "--name", name, "busybox", "sh",
                    "-c", WRITER.format(n=lines)], check=True, capture_output=True)
    control.wait(name)
    took = time.perf_counter() - t
    files = _sizes(control.log_path(control.find(name)))
    last = subprocess.run([*EDU, "logs", "--tail", "1", name], capture_output=True,
                          text=True).stdout.strip()
    subprocess.run([*EDU, "rm", "-f", name], check=True, capture_output=True)
    return {"s": took, "files": len(files), "bytes": sum(files),
            "last ok": last == f"line {lines - 1} of a noisy container"}


def docker_run(lines: int, image: str) -> dict:
    """docker run -d with json-file and the same cap, given."""
    name = f"day-bench-{uuid.uuid4().hex[:8]}"
    t = time.perf_counter()
    subprocess.run(["docker", "run", "-d", "--network", "none", "--name", name, *CAP, image,
                    "sh", "-c", WRITER.format(n=lines)], check=True, capture_output=True)
    subprocess.run(["docker", "wait", name], check=True, capture_output=True)
    took = time.perf_counter() - t
    log = Path(json.loads(subprocess.run(["docker", "inspect", name], check=True,
                                         capture_output=True).stdout)[0]["LogPath"])
    files = _sizes(log)
    size = sum(files)
    last = subprocess.run(["docker", "logs", "--tail", "1", name], capture_output=True,
                          text=True).stdout.strip()
    subprocess.run(["docker", "rm", "-f", name], check=True, capture_output=True)
    return {"s": took, "files": len(files), "bytes": size,
            "last ok": last == f"line {lines - 1} of a noisy container"}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lines", type=int, default=500_000)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--image", default="edu-test-busybox:latest", help="docker's busybox")
    a = p.parse_args()
    runs: dict[str, list[dict]] = {"edu": [], "docker": []}
    for _ in range(a.runs):
        runs["edu"].append(edu_run(a.lines))
        runs["docker"].append(docker_run(a.lines, a.image))
    rows = {}
    for who, rs in runs.items():
        rows[who] = {"median_s": statistics.median(r["s"] for r in rs),
                     "files": max(r["files"] for r in rs),
                     "max_mb": max(r["bytes"] for r in rs) / 1e6,
                     "last_line_ok": all(r["last ok"] for r in rs)}
    ratio = rows["edu"]["median_s"] / rows["docker"]["median_s"]
    print(f"\n{a.lines} lines, cap 3 x 10 MB, medians of {a.runs} alternating runs")
    for who, r in rows.items():
        print(f"  {who:<7} {r['median_s']:6.2f} s  {r['files']} files  "
              f"{r['max_mb']:5.1f} MB on disk  last line whole: {r['last_line_ok']}")
    print(f"  edu / docker time: x{ratio:.2f}")
    save("log_rotation", {"machine": machine(), "lines": a.lines, "rows": rows,
                          "ratio_edu_docker": ratio, "runs": runs})


if __name__ == "__main__":
    main()
