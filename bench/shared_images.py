"""What a student's debian costs, in time and disk: built, or taken from the shared images.

A class of 30 on one machine needs debian (and python, built on it) in every student's
store. Three ways, measured here:

- **bootstrap**: ``debootstrap`` into a fresh store. Only root can (a student has no root to
  run dpkg as), so it is measured as root, into a store of its own: the cost the shared
  images save, 30 times.
- **take from shared**: a fresh rootless student's ``edu pull debian:12`` copies the shared
  blob (checked against its digest) and unpacks it into their own store: the way edu does it.
- **layers in place** (not offered): one unpacked copy for everyone would save the unpack,
  but a file of the host's root is uid 65534 (nobody) in a student's one-uid user namespace,
  so ``/bin/sh`` would not be root's in their container. Checked, not timed.

Prints medians and the ratio bootstrap / take, and the disk per student against the shared
copy; writes bench/results/shared_images.json.

    .venv/bin/python bench/shared_images.py [--runs 5] [--bootstraps 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from common import machine, save  # noqa: E402
from shr_students import shared_dir, students  # noqa: E402

from edu_runtime.images import bootstrap  # noqa: E402
from edu_runtime.images.store import Store, _du  # noqa: E402

STUDENTS = 30


def bootstrap_once() -> tuple[float, int]:
    """debootstrap debian:12 into a fresh store of its own (root); seconds and store bytes."""
    with tempfile.TemporaryDirectory(prefix="shr-boot-", dir="/var/tmp") as tmp:
        store = Store(Path(tmp) / "store")
        t = time.perf_counter()
        bootstrap.bootstrap(store, "debian", progress=False)
        took = time.perf_counter() - t
        return took, _du(store.root)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5, help="takes from the shared images")
    ap.add_argument("--bootstraps", type=int, default=3, help="debootstraps (about 35 s each)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root: it shares root's debian and makes a student account")

    root_store = Store()
    debian = root_store.get("debian:12")
    with shared_dir() as where, students("m") as (mia,):
        env = {"EDU_SHARED_DIR": str(where)}
        subprocess.run([sys.executable, "-m", "edu_cli.main", "image", "share", "debian:12"],
                       check=True, capture_output=True, env={**os.environ, **env})
        shared_bytes = _du(where)
        takes, student_bytes = [], 0
        store = mia.home / ".local/share/edu/store"
        for _ in range(args.runs):
            shutil.rmtree(store, ignore_errors=True)
            t = time.perf_counter()
            out = mia.edu("pull", "debian:12", env=env)
            takes.append(time.perf_counter() - t)
            assert out.returncode == 0, out.stderr
            student_bytes = _du(store)
        blob = max((where / "blobs/sha256").iterdir(), key=lambda b: b.stat().st_size)
        blob_bytes = blob.stat().st_size
        copies = []
        for _ in range(args.runs):  # the blob copy alone: what reading it in place would save
            out = mia.run([mia.python, "-c", "import shutil, sys, time; t = time.perf_counter()"
                           "; shutil.copyfile(sys.argv[1], sys.argv[2]); "
                           "print(time.perf_counter() - t)", str(blob), str(mia.home / "b")])
            copies.append(float(out.stdout))
        shown = mia.edu("run", "--rm", "--network", "none", "debian:12", "stat", "-c", "%u",
                        "/bin/sh").stdout.strip()
        in_place = mia.run(["unshare", "-r", "stat", "-c", "%u",
                            str(root_store.layer_dir(debian.diff_ids[0]) / "bin/sh")])
        in_place_uid = in_place.stdout.strip()
    boots = [bootstrap_once() for _ in range(args.bootstraps)]
    boot_s = statistics.median(b[0] for b in boots)
    boot_bytes = statistics.median(b[1] for b in boots)
    take_s = statistics.median(takes)

    mb = 1e6
    print(f"\ndebian:12 for one student (medians; {args.runs} takes, {args.bootstraps} "
          "bootstraps)")
    print(f"  bootstrap (debootstrap, root only):  {boot_s:7.2f} s   {boot_bytes / mb:6.0f} MB")
    print(f"  take from the shared images:         {take_s:7.2f} s   "
          f"{student_bytes / mb:6.0f} MB in the student's store")
    print(f"  of which copying the blob:           {statistics.median(copies):7.2f} s   "
          f"{blob_bytes / mb:6.0f} MB (the rest: unpacking)")
    print(f"  ratio bootstrap / take:              {boot_s / take_s:7.1f}x faster to take")
    print(f"  shared images (once per machine):              {shared_bytes / mb:6.0f} MB")
    print(f"  {STUDENTS} students: {STUDENTS * student_bytes / mb / 1000:.1f} GB in their "
          f"stores + {shared_bytes / mb:.0f} MB shared; {STUDENTS * take_s:.0f} s of takes "
          f"(each on first use) against {STUDENTS * boot_s / 60:.0f} min of bootstraps")
    print(f"  /bin/sh in a student's container: uid {shown}; a root-owned layer used in "
          f"place: uid {in_place_uid} (why each student unpacks their own)")
    save("shared_images", {
        "machine": machine(), "runs": args.runs, "bootstraps": args.bootstraps,
        "bootstrap_s": sorted(b[0] for b in boots), "take_s": sorted(takes),
        "blob_copy_median_s": statistics.median(copies), "blob_bytes": blob_bytes,
        "bootstrap_median_s": boot_s, "take_median_s": take_s, "ratio": boot_s / take_s,
        "bootstrap_store_bytes": boot_bytes, "student_store_bytes": student_bytes,
        "shared_bytes": shared_bytes, "container_sh_uid": shown,
        "root_layer_in_place_uid": in_place_uid})


if __name__ == "__main__":
    main()
