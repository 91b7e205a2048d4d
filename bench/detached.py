"""Detached containers at scale: start N with `edu run -d` and `docker run -d`, side by side.

For each runtime: the total wall time to start N idle containers (`sleep 3600`), and the
host memory they cost, measured the same way for both: the PSS (proportional set size,
from /proc/PID/smaps_rollup, so shared pages are split fairly) of every process that exists
only because of the containers: for edu the supervisor and the containers' processes; for
docker the containerd-shims and the containers' processes (dockerd and containerd are
counted separately, as they run anyway). Reports the marginal PSS per container.

    .venv/bin/python bench/detached.py [--count 50]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, save  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402


def pss_kib(pid: int) -> int:
    """PSS of one process in KiB (0 if it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def procs(match) -> list[int]:
    """Pids whose command line satisfies ``match``."""
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                cmd = (p / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if match(cmd):
                out.append(int(p.name))
    return out


def descendants(root: int) -> list[int]:
    """``root`` and every process below it."""
    kids: dict[int, list[int]] = {}
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                stat = (p / "stat").read_text().rpartition(")")[2].split()
                kids.setdefault(int(stat[1]), []).append(int(p.name))
            except OSError:
                pass
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo += kids.get(pid, [])
    return out


def measure(label: str, start, count: int, footprint) -> dict:
    """Start ``count`` containers with ``start(i)``; return time and PSS figures."""
    before = footprint()
    t = time.perf_counter()
    for i in tqdm(range(count), desc=label, unit="container"):
        start(i)
    elapsed = time.perf_counter() - t
    time.sleep(2)  # let page faults settle
    after = footprint()
    return {"count": count, "start_total_s": elapsed, "start_each_ms": elapsed / count * 1e3,
            "pss_before_kib": before, "pss_after_kib": after,
            "marginal_pss_kib": (after - before) / count}


def main() -> None:
    """Run the benchmark and save bench/results/detached.json."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=50)
    args = ap.parse_args()
    edu = str(Path(sys.executable).parent / "edu")
    run = dict(check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    subprocess.run([edu, "bootstrap", "busybox"], **run)
    result = {"machine": machine()}

    def edu_footprint() -> int:
        sups = procs(lambda c: "edu_cli.supervise" in c or "edu_runtime.life.supervisor" in c)
        return sum(pss_kib(p) for s in sups for p in descendants(s))

    names = [f"bench-edu-{i}" for i in range(args.count)]
    try:
        result["edu"] = measure("edu run -d", lambda i: subprocess.run(
            [edu, "run", "-d", "--network", "none", "--name", names[i], "busybox", "sleep",
             "3600"], **run),
            args.count, edu_footprint)
    finally:
        subprocess.run([edu, "rm", "-f", *names], capture_output=True)

    if subprocess.run(["docker", "version"], capture_output=True).returncode == 0:
        from edu_runtime.images import archive
        from edu_runtime.images.store import Store

        tar = Path("/tmp/edu-bench-busybox.tar")
        archive.save(Store(), ["busybox:latest"], tar)
        subprocess.run(["docker", "load", "-i", str(tar)], **run)
        tar.unlink()

        def docker_footprint() -> int:
            shims = procs(lambda c: c.startswith("containerd-shim") or
                          "containerd-shim-runc" in c)
            return sum(pss_kib(p) for s in shims for p in descendants(s))

        dnames = [f"bench-docker-{i}" for i in range(args.count)]
        try:
            result["docker"] = measure("docker run -d", lambda i: subprocess.run(
                ["docker", "run", "-d", "--network", "none", "--name", dnames[i],
                 "busybox:latest", "sleep", "3600"], **run), args.count, docker_footprint)
        finally:
            subprocess.run(["docker", "rm", "-f", *dnames], capture_output=True)
            subprocess.run(["docker", "rmi", "busybox:latest"], capture_output=True)
    for k in ("edu", "docker"):
        if k in result:
            r = result[k]
            print(f"{k:>6}: {r['count']} containers in {r['start_total_s']:.1f} s "
                  f"({r['start_each_ms']:.0f} ms each); marginal PSS "
                  f"{r['marginal_pss_kib'] / 1024:.2f} MiB per container")
    if "docker" in result:
        e, d = result["edu"], result["docker"]
        print(f"ratios edu/docker: start time x{e['start_total_s'] / d['start_total_s']:.2f}, "
              f"memory per container x{e['marginal_pss_kib'] / d['marginal_pss_kib']:.2f}")
    print(f"saved {save('detached', result)}")


if __name__ == "__main__":
    main()
