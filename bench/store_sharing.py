"""Disk used by 10 images that share one base, against the base plus their own layers.

A content-addressed store keeps a shared layer once, so ten images built on one base should
cost the base once plus each image's own layer. Target: within 5%. Docker, when running,
is measured the same way side by side: the growth of /var/lib/docker after loading the same
ten images (as a docker-archive written by `edu save`).

    .venv/bin/python bench/store_sharing.py [--base busybox|debian] [--images 10]
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, save  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from edu_runtime.images import archive, bootstrap, layers  # noqa: E402
from edu_runtime.images.store import OCI_LAYER_GZIP, Store, _du  # noqa: E402


def own_layer(store: Store, i: int) -> tuple[str, str]:
    """A layer with an app of its own: 2 MB of data and a few small files."""
    with store.staging() as stage:
        root = stage / "root"
        (root / "app").mkdir(parents=True)
        (root / "app" / "data.bin").write_bytes(os.urandom(2_000_000))
        for k in range(20):
            (root / "app" / f"file{k}.txt").write_text(f"image {i} file {k}\n" * 50)
        raw = io.BytesIO()
        stats = layers.pack(root, raw)
        blob = store.put_blob_bytes(gzip.compress(raw.getvalue(), mtime=0))
        return blob, stats.diff_id


def derive(store: Store, base, i: int) -> None:
    """Image i: the base's layers plus its own, tagged app-i."""
    blob, diff_id = own_layer(store, i)
    config = json.loads(json.dumps(base.config))
    config["rootfs"]["diff_ids"] = base.diff_ids + [diff_id]
    config["history"] = config.get("history", []) + [{"created_by": f"COPY app {i}"}]
    blobs = [(d["digest"], d["mediaType"]) for d in base.manifest["layers"]]
    store.add_image(json.dumps(config).encode(), blobs + [(blob, OCI_LAYER_GZIP)], [f"app-{i}"])


def docker_root_bytes() -> int | None:
    """Bytes under Docker's data root, or None without a running dockerd."""
    out = subprocess.run(["docker", "info", "--format", "{{.DockerRootDir}}"],
                         capture_output=True, text=True)
    return _du(Path(out.stdout.strip())) if out.returncode == 0 else None


def main() -> None:
    """Measure and save bench/results/store_sharing.json."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", default="busybox", choices=("busybox", "debian"))
    ap.add_argument("--images", type=int, default=10)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="edu-bench-", dir=Path.home()))
    try:
        store = Store(work / "store")
        base = bootstrap.bootstrap(store, args.base, progress=True)
        base_bytes = store.disk_usage()
        own = 0
        for i in tqdm(range(args.images), desc="images", unit="image"):
            before = store.disk_usage()
            derive(store, base, i)
            own += store.disk_usage() - before
        total = store.disk_usage()
        expected = base_bytes + own
        naive = base_bytes * args.images + own  # if every image kept its own base copy
        result = {"machine": machine(), "base": args.base, "images": args.images,
                  "base_bytes": base_bytes, "own_layers_bytes": own, "store_bytes": total,
                  "ratio_to_base_plus_own": total / expected,
                  "naive_copies_bytes": naive}
        print(f"\n{args.images} images on {args.base}: store {total / 1e6:.1f} MB; base "
              f"{base_bytes / 1e6:.1f} MB + own layers {own / 1e6:.1f} MB = "
              f"{expected / 1e6:.1f} MB -> x{total / expected:.3f} (target <= 1.05); "
              f"without sharing it would be {naive / 1e6:.1f} MB")
        before = docker_root_bytes()
        if before is not None:
            tags = [f"app-{i}" for i in range(args.images)]
            tar = work / "all.tar"
            archive.save(store, tags, tar)
            subprocess.run(["docker", "load", "-i", str(tar)], check=True,
                           stdout=subprocess.DEVNULL)
            grown = docker_root_bytes() - before
            subprocess.run(["docker", "rmi", *tags], check=True, stdout=subprocess.DEVNULL)
            result["docker_growth_bytes"] = grown
            result["edu_vs_docker"] = total / grown if grown else None
            print(f"docker: /var/lib/docker grew {grown / 1e6:.1f} MB for the same images "
                  f"(edu store / docker = x{total / grown:.2f})")
        print(f"saved {save('store_sharing', result)}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
