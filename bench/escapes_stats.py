"""The escape suite in edu beside Docker, and `edu stats --no-stream` beside `docker stats
--no-stream`: medians and ratios (edu / docker).

The suite is the 14 attempts of edu_runtime.escapes in one container of the python image
(defaults only, no controls); stats is one table for one running busybox container (both
read two samples: edu 0.5 s apart, docker about 1 s apart, which is most of their time).

    .venv/bin/python bench/escapes_stats.py [--runs 5]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import alternate, report, save, timed  # noqa: E402

from edu_runtime import Container, escapes  # noqa: E402
from edu_runtime.images import bootstrap  # noqa: E402
from edu_runtime.images.store import Store  # noqa: E402


def main() -> None:
    """Run the benchmark and save bench/results/escapes_stats.json."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    if subprocess.run(["docker", "version"], capture_output=True).returncode != 0:
        sys.exit("dockerd is not running: scripts/services.sh start docker")
    store = Store()
    for name in ("busybox", "python"):
        bootstrap.bootstrap(store, name, progress=True)
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from docker_reference import load_base
    from test_escapes import load_python

    tag, base = load_python(), load_base()

    def suite(**kw):
        def run() -> float:
            t = time.perf_counter()
            escapes.run("python", prefix="bench-esc", **kw)
            return time.perf_counter() - t
        return run

    times = alternate({"edu suite": suite(), "docker suite": suite(docker_tag=tag, edu=False)},
                      args.runs, warmup=1, desc="escape suite")
    suite_report = report("escape suite, 14 attempts", times, baseline="docker suite")
    edu_c = Container("busybox", ["sleep", "600"], name="bench-stats", network="none").start()
    subprocess.run(["docker", "run", "-d", "--name", "bench-stats", "--network", "none", base,
                    "sleep", "600"], check=True, capture_output=True)
    try:
        edu = [sys.executable, "-m", "edu_cli.main", "stats", "--no-stream", "bench-stats"]
        times = alternate({"edu stats": timed(edu),
                           "docker stats": timed(["docker", "stats", "--no-stream",
                                                  "bench-stats"])},
                          args.runs, warmup=1, desc="stats")
        stats_report = report("stats --no-stream, one container", times,
                              baseline="docker stats")
    finally:
        edu_c.remove(force=True)
        subprocess.run(["docker", "rm", "-f", "bench-stats"], capture_output=True)
    print(f"saved {save('escapes_stats', {'suite': suite_report, 'stats': stats_report})}")


if __name__ == "__main__":
    main()
