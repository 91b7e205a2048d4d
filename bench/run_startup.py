"""Container start-up: `edu run` beside runc and docker, and in-process beside unshare.

Side by side in one run, alternating, every contender starts /bin/true from the same
busybox rootfs with no network:

- `edu run --rm --network none busybox true` and `edu run --rm busybox true` (the default
  bridge): the CLI, a new Python process each time, which hands the command line to the
  warm supervisor (started by the first run, as dockerd is already running for docker);
- `runc run` of an OCI bundle whose rootfs is a copy of the same layer;
- `docker run --rm --network none` of the same image, loaded into dockerd from edu's store;
- `Container(...).run()` from this warm process, forking here (the runtime's own start, in
  the process that forks), timed whole (to the exit, with --rm's teardown) and from the
  call to the exec (the exec step's end in its Trace: what issue 18's row 2 measures);
- `Container(...).run()` as a notebook does it: a threaded process never forks, so the
  supervisor makes the container (``fork_here=False``, what a Jupyter kernel gets);
- `unshare -fpmuin --mount-proc /bin/true`, the kernel's floor for "new namespaces".

It also prints where one edu run's time goes (the step timeline from its Trace), and the
round trip of a notebook's stepper: from Next to the step's record, less the step's own
time (the cost of stepping through a helper).

    .venv/bin/python bench/run_startup.py [--runs 20]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import alternate, report, save, timed  # noqa: E402

from edu_runtime.container import Container  # noqa: E402
from edu_runtime.images import archive, bootstrap  # noqa: E402
from edu_runtime.images.store import Store  # noqa: E402


def runc_bundle(store: Store, image, where: Path) -> Path:
    """An OCI bundle: the busybox layer copied as rootfs, and `runc spec` set to /bin/true."""
    bundle = where / "bundle"
    shutil.copytree(store.layer_dir(image.diff_ids[0]), bundle / "rootfs", symlinks=True)
    subprocess.run(["runc", "spec"], cwd=bundle, check=True)
    spec = json.loads((bundle / "config.json").read_text())
    spec["process"]["args"] = ["/bin/true"]
    spec["process"]["terminal"] = False
    (bundle / "config.json").write_text(json.dumps(spec))
    return bundle


def stepper_round_trip(store: Store, runs: int) -> dict:
    """A notebook's stepper (through the supervisor, on the default bridge): per step, the
    time from ``advance()`` to its record, less the step's own time; median over all."""
    import statistics

    trips = []
    for _ in range(max(1, runs // 4)):
        c = Container("busybox", ["true"], store=store, remove=True, fork_here=False)
        stepper = c.steps()
        while stepper.upcoming is not None:
            t = time.perf_counter()
            rec = stepper.advance()
            trips.append(time.perf_counter() - t - (rec.end - rec.start))
        c.wait()
    ms = sorted(x * 1e3 for x in trips)
    out = {"median_ms": statistics.median(ms), "p90_ms": ms[int(len(ms) * 0.9)],
           "steps": len(ms)}
    print(f"\na notebook stepper's round trip, less the step itself: median "
          f"{out['median_ms']:.1f} ms, p90 {out['p90_ms']:.1f} ms over {len(ms)} steps "
          "(goal: median <= 50 ms)")
    return out


def main() -> None:
    """Run the benchmark and save bench/results/run_startup.json."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=20)
    args = ap.parse_args()
    store = Store()
    image = bootstrap.bootstrap(store, "busybox", progress=False)
    edu = str(Path(sys.executable).parent / "edu")
    work = Path(tempfile.mkdtemp(prefix="edu-bench-", dir=Path.home()))
    devnull = os.open(os.devnull, os.O_WRONLY)
    saved = os.dup(1)
    try:
        contenders = {
            "edu run (CLI)": timed([edu, "run", "--rm", "--network", "none", "busybox",
                                    "true"]),
            "edu run (CLI, bridge)": timed([edu, "run", "--rm", "busybox", "true"]),
        }
        if shutil.which("runc"):
            bundle = runc_bundle(store, image, work)
            n = [0]

            def runc() -> float:
                n[0] += 1
                t = time.perf_counter()
                subprocess.run(["runc", "run", "--bundle", str(bundle), f"edu-bench-{n[0]}"],
                               check=True, stdout=subprocess.DEVNULL)
                return time.perf_counter() - t
            contenders["runc run"] = runc
        if subprocess.run(["docker", "version"], capture_output=True).returncode == 0:
            tar = work / "busybox.tar"
            archive.save(store, ["busybox:latest"], tar)
            subprocess.run(["docker", "load", "-i", str(tar)], check=True,
                           stdout=subprocess.DEVNULL)
            contenders["docker run"] = timed(["docker", "run", "--rm", "--network", "none",
                                              "busybox:latest", "true"])
            contenders["docker run (bridge)"] = timed(["docker", "run", "--rm",
                                                       "busybox:latest", "true"])

        to_exec: list[float] = []

        def in_process() -> float:
            os.dup2(devnull, 1)
            try:
                t = time.perf_counter()
                called = time.monotonic()  # the Trace's clock (steps.now)
                c = Container(image, ["true"], store=store, remove=True, network="none",
                              fork_here=True)
                c.run()
                # The runtime's own start: from the call to the exec step's end (the
                # child's end of the step socket closed by a successful execve).
                to_exec.append(c.trace.steps[-1].end - called)
                return time.perf_counter() - t
            finally:
                os.dup2(saved, 1)
        contenders["Container().run() in-process"] = in_process

        def notebook() -> float:
            t = time.perf_counter()
            Container("busybox", ["true"], store=store, remove=True, network="none",
                      fork_here=False).run()
            return time.perf_counter() - t
        contenders["Container().run() from a notebook"] = notebook
        contenders["unshare -fpmuin"] = timed(["unshare", "-fpmuin", "--mount-proc",
                                               "/bin/true"])
        times = alternate(contenders, args.runs, desc="container start-up")
        base = "runc run" if "runc run" in times else "edu run (CLI)"
        result = report("start /bin/true", times, baseline=base)
        if "docker run (bridge)" in times:
            report("on the default bridge", {k: times[k] for k in (
                "edu run (CLI, bridge)", "docker run (bridge)")}, baseline="docker run (bridge)")
        notebook_vs_cli = report("a notebook's container against edu run", {
            k: times[k] for k in ("Container().run() from a notebook", "edu run (CLI)")},
            baseline="edu run (CLI)")
        # The first rounds are warm-up (alternate() drops them): so are their exec times.
        inproc = report("in-process against unshare", {
            "Container().run() in-process": times["Container().run() in-process"],
            "in-process, start call to exec": to_exec[-len(times["unshare -fpmuin"]):],
            "unshare -fpmuin": times["unshare -fpmuin"]}, baseline="unshare -fpmuin")
        trip = stepper_round_trip(store, args.runs)
        c = Container(image, ["true"], store=store, remove=True, network="none",
                      fork_here=True)
        os.dup2(devnull, 1)
        try:
            c.run()
        finally:
            os.dup2(saved, 1)
        print("\nwhere one in-process start goes (Trace):")
        print(c.trace.timeline())
        out = save("run_startup", {"vs_peers": result, "in_process": inproc,
                                   "notebook": notebook_vs_cli, "stepper": trip,
                                   "trace": c.trace.to_dict()})
        print(f"saved {out}")
    finally:
        subprocess.run(["docker", "rmi", "busybox:latest"], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
