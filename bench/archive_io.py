"""`edu save` and `edu load` of the debian image beside `docker save` and `docker load`.

Each round, alternating: edu saves the image to a docker-archive; docker saves the same
image (loaded into dockerd first from edu's archive); edu loads the archive into a fresh,
empty store; docker loads it after removing the image, so both really unpack every layer.
Medians and ratios (edu / docker) are reported.

    .venv/bin/python bench/archive_io.py [--image debian:bookworm] [--runs 10]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import alternate, report, save  # noqa: E402

from edu_runtime.images import archive, bootstrap  # noqa: E402
from edu_runtime.images.store import Store  # noqa: E402


def quiet(*cmd: str) -> None:
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main() -> None:
    """Run the benchmark and save bench/results/archive_io.json."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image", default="debian:bookworm")
    ap.add_argument("--runs", type=int, default=10)
    args = ap.parse_args()
    if subprocess.run(["docker", "version"], capture_output=True).returncode != 0:
        sys.exit("dockerd is not running: scripts/services.sh start docker")
    store = Store()
    name = args.image.split(":")[0]
    if name in ("busybox", "debian", "python", "node"):
        bootstrap.bootstrap(store, name, progress=True)
    work = Path(tempfile.mkdtemp(prefix="edu-bench-", dir=Path.home()))
    try:
        ours, theirs = work / "edu.tar", work / "docker.tar"
        archive.save(store, [args.image], ours)
        quiet("docker", "load", "-i", str(ours))

        def edu_save() -> float:
            t = time.perf_counter()
            archive.save(store, [args.image], ours)
            return time.perf_counter() - t

        def edu_load() -> float:
            fresh = Store(work / "fresh")
            t = time.perf_counter()
            archive.load(fresh, ours)
            elapsed = time.perf_counter() - t
            shutil.rmtree(work / "fresh")
            return elapsed

        def docker_save() -> float:
            t = time.perf_counter()
            quiet("docker", "save", "-o", str(theirs), args.image)
            return time.perf_counter() - t

        def docker_load() -> float:
            quiet("docker", "rmi", args.image)
            t = time.perf_counter()
            quiet("docker", "load", "-i", str(ours))
            return time.perf_counter() - t

        times = alternate({"edu save": edu_save, "docker save": docker_save,
                           "edu load": edu_load, "docker load": docker_load},
                          args.runs, warmup=1, desc="save/load")
        saves = report(f"save {args.image}", {k: v for k, v in times.items() if "save" in k},
                       baseline="docker save")
        loads = report(f"load {args.image}", {k: v for k, v in times.items() if "load" in k},
                       baseline="docker load")
        size = ours.stat().st_size
        print(f"archive size {size / 1e6:.1f} MB; "
              f"edu save x{saves['rows']['edu save']['ratio']:.2f} of docker, "
              f"edu load x{loads['rows']['edu load']['ratio']:.2f} of docker")
        medians = {k: statistics.median(v) for k, v in times.items()}
        out = save("archive_io", {"save": saves, "load": loads, "archive_bytes": size,
                                  "medians_s": medians})
        print(f"saved {out}")
    finally:
        subprocess.run(["docker", "rmi", args.image], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
