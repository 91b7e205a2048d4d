"""Disk used by the same 10 images in edu's store and in dockerd's (issue 18, row 6).

The ten images are the course's: the four bases ``edu bootstrap`` makes (busybox, debian,
python, node) and six apps built on them with ``edu build`` from ``lessons/apps`` (greeter,
counter, front, node-app, mariadb, wordpress), tagged ``bench-size-*`` in the machine's
store (a build runs containers, so it uses the default store; the builds are cache hits
once the lessons have run). Those ten are then written once with ``edu save`` and put

- into a **fresh edu store** (a temp dir, used only by this process: no container or
  network ever runs on it) with ``edu load``: ``--archive oci`` (the default) keeps every
  blob byte for byte as the machine's store has it (what bootstrap, build and pull leave);
  ``--archive docker`` is what ``edu load`` of a ``docker save`` file leaves;
- into **dockerd** with ``docker load`` of the docker-archive.

Layer blobs that a layer rebuilds byte for byte (plain tars; this machine's gzip at level 1,
as ``edu build`` writes) are kept as their unpacked layer and a tar-split only, as they come
in; ``Store.compact()`` then does the same for the rest it can (the bases' gzip at level 6,
checked by recompressing each once), and the store is measured again.

Both are measured the same way: blocks allocated (``du``, hardlinks once) of every file the
ten images own. For edu that is the whole fresh store; for docker it is what its layer
chain and image IDs name: ``overlay2/<cache-id>`` (the unpacked ``diff/`` and its
bookkeeping), its ``l/`` link, ``image/overlay2/layerdb/sha256/<chain-id>`` (the
tar-split and the layer's metadata) and ``imagedb`` (the configs). So layers dockerd
already had before the bench count too, exactly once, as the fresh store counts them.
The bases are saved by their IDs (never retagged in the machine's store); in docker all ten
are tagged ``bench-size-*``, and only those tags (and the apps' in edu) are removed after.

    .venv/bin/python bench/store_size.py [--archive oci|docker] [--keep-tags]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from common import machine, save  # noqa: E402

from edu_runtime.images import archive  # noqa: E402
from edu_runtime.images.store import Store  # noqa: E402

BASES = ["busybox", "debian", "python", "node"]
APPS = ["greeter", "counter", "front", "node-app", "mariadb", "wordpress"]
PREFIX = "bench-size-"
DOCKER = Path("/var/lib/docker")


def edu(*args: str) -> str:
    """Run the edu CLI; its stdout."""
    out = subprocess.run([str(ROOT / ".venv/bin/edu"), *args], capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"edu {' '.join(args)} failed: {out.stderr.strip()}")
    return out.stdout


def make_images(work: Path) -> dict[str, str]:
    """The ten images in the machine's store, name -> what ``edu save`` is given: the bases
    by their IDs (tagging them, even for a moment, would show in others' ``edu images``),
    the apps built and tagged ``bench-size-APP``."""
    from edu_runtime.images.store import StoreError
    from edu_runtime.notebook import apps

    have = Store()
    refs = {}
    for base in BASES:
        try:
            refs[base] = have.get(base).id
        except StoreError:
            sys.exit(f"the base {base} is not in the store: run 'edu bootstrap {base}' first")
    for app in APPS:
        ctx = apps.copy(app, work / app)
        print(f"building {app} ...", flush=True)
        edu("build", "-q", "-t", PREFIX + app, str(ctx))
        refs[app] = PREFIX + app
    return refs


def du(path: Path, seen: set[tuple[int, int]]) -> int:
    """Blocks allocated under ``path`` (or of the file itself), each inode once."""
    total = 0
    paths = [path] if not path.is_dir() or path.is_symlink() else None
    walk = [(str(path), [], [])] if paths else os.walk(path)
    for dirpath, dirnames, filenames in walk:
        names = [""] if paths else ["", *dirnames, *filenames]
        for name in names:
            p = os.path.join(dirpath, name) if name else dirpath
            try:
                st = os.lstat(p)
            except FileNotFoundError:
                continue
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            total += st.st_blocks * 512
    return total


def edu_breakdown(root: Path) -> dict[str, int]:
    """Where a store's bytes are: layer blobs, JSON blobs, unpacked layers, tar-splits..."""
    store = Store(root)
    seen: set[tuple[int, int]] = set()
    layer_blobs = set()
    index = json.loads(store.index_path.read_text())
    for m in index["images"]:
        layer_blobs |= {d["digest"][7:] for d in json.loads(store.read_blob(m))["layers"]}
    out = {"layer blobs (compressed or tar)": 0, "json blobs (manifests, configs)": 0,
           "unpacked layers": 0, "layer metadata (.json, tar-split)": 0, "other": 0}
    for blob in store.blobs.iterdir():
        key = "layer blobs (compressed or tar)" if blob.name in layer_blobs \
            else "json blobs (manifests, configs)"
        out[key] += du(blob, seen)
    for kept in store.rebuild.iterdir():
        out["layer metadata (.json, tar-split)"] += du(kept, seen)
    for layer in store.layers.iterdir():
        key = "unpacked layers" if layer.is_dir() else "layer metadata (.json, tar-split)"
        out[key] += du(layer, seen)
    out["other"] = du(root, seen)  # the rest: dirs themselves, index.json, lock
    return out


def chain_ids(diff_ids: list[str]) -> list[str]:
    """Docker's layer chain IDs (the layerdb's names) for a list of diff_ids."""
    chain, out = None, []
    for d in diff_ids:
        chain = d if chain is None else \
            "sha256:" + hashlib.sha256(f"{chain} {d}".encode()).hexdigest()
        out.append(chain)
    return out


def docker_breakdown(tags: list[str]) -> dict[str, int]:
    """What dockerd keeps for these images, by its own layout (overlay2 driver)."""
    info = json.loads(subprocess.run(["docker", "image", "inspect", *tags], check=True,
                                     capture_output=True, text=True).stdout)
    seen: set[tuple[int, int]] = set()
    out = {"unpacked layers (overlay2/*/diff)": 0, "overlay2 bookkeeping (link, lower, l/)": 0,
           "layerdb (tar-split, metadata)": 0, "imagedb (configs)": 0}
    chains = {c for image in info for c in chain_ids(image["RootFS"]["Layers"])}
    for chain in chains:
        db = DOCKER / "image/overlay2/layerdb/sha256" / chain[7:]
        cache = (db / "cache-id").read_text().strip()
        layer = DOCKER / "overlay2" / cache
        out["unpacked layers (overlay2/*/diff)"] += du(layer / "diff", seen)
        link = (layer / "link").read_text().strip()
        out["overlay2 bookkeeping (link, lower, l/)"] += du(layer, seen) + \
            du(DOCKER / "overlay2/l" / link, seen)
        out["layerdb (tar-split, metadata)"] += du(db, seen)
    for image in info:
        hexid = image["Id"][7:]
        out["imagedb (configs)"] += du(
            DOCKER / "image/overlay2/imagedb/content/sha256" / hexid, seen)
        meta = DOCKER / "image/overlay2/imagedb/metadata/sha256" / hexid
        if meta.exists():
            out["imagedb (configs)"] += du(meta, seen)
    return out


def show(title: str, parts: dict[str, int]) -> int:
    total = sum(parts.values())
    print(f"{title}: {total / 1e6:9.1f} MB")
    for k, v in parts.items():
        print(f"    {k:<40} {v / 1e6:9.1f} MB  {100 * v / total:5.1f}%")
    return total


def main() -> None:
    """Measure and save bench/results/store_size.json."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--archive", default="oci", choices=("oci", "docker"),
                    help="how the images reach the fresh edu store (default: oci, byte for "
                         "byte as the machine's store keeps them)")
    ap.add_argument("--keep-tags", action="store_true", help="leave the bench-size-* tags")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root: dockerd's files are root's")
    work = Path(tempfile.mkdtemp(prefix="edu-bench-size-", dir="/var/tmp"))
    refs: dict[str, str] = {}
    tags = [PREFIX + name for name in BASES + APPS]  # in docker: all ten, by these names
    try:
        refs = make_images(work)
        oci_tar, docker_tar = work / "ten.oci.tar", work / "ten.docker.tar"
        edu("save", "-o", str(docker_tar), *refs.values())
        if args.archive == "oci":
            edu("save", "--format", "oci-archive", "-o", str(oci_tar), *refs.values())
        print("loading into a fresh edu store ...", flush=True)
        fresh = work / "store"
        archive.load(Store(fresh), oci_tar if args.archive == "oci" else docker_tar)
        print("docker load ...", flush=True)
        subprocess.run(["docker", "load", "-i", str(docker_tar)], check=True,
                       stdout=subprocess.DEVNULL)
        for base in BASES:  # loaded untagged (saved by ID): named for the measure and rmi
            subprocess.run(["docker", "tag", refs[base], PREFIX + base], check=True)
        print()
        edu_parts = edu_breakdown(fresh)
        docker_parts = docker_breakdown(tags)
        edu_total = show(f"edu store (fresh, loaded from {args.archive} archive)", edu_parts)
        docker_total = show("dockerd (overlay2)", docker_parts)
        t = time.perf_counter()
        compacted = Store(fresh).compact()
        took = time.perf_counter() - t
        after_parts = edu_breakdown(fresh)
        after_total = show(f"edu store after Store.compact() ({compacted['blobs']} blobs more "
                           f"kept as layers only, {took:.1f} s)", after_parts)
        ratio, after = edu_total / docker_total, after_total / docker_total
        print(f"\n10 images ({', '.join(t.removeprefix(PREFIX) for t in tags)}): dockerd "
              f"{docker_total / 1e6:.1f} MB; edu {edu_total / 1e6:.1f} MB as loaded: "
              f"x{ratio:.2f}; after compact {after_total / 1e6:.1f} MB: x{after:.2f} "
              "(goal <= x1.1)")
        result = {"machine": machine(), "images": tags, "archive": args.archive,
                  "edu_bytes": edu_total, "docker_bytes": docker_total, "ratio": ratio,
                  "edu": edu_parts, "docker": docker_parts,
                  "compacted_bytes": after_total, "compacted_ratio": after,
                  "compact_seconds": took, "edu_compacted": after_parts}
        print(f"saved {save('store_size' + ('' if args.archive == 'oci' else '_docker'), result)}")
    finally:
        if refs and not args.keep_tags:
            subprocess.run(["docker", "rmi", *tags], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
            for app in APPS:
                subprocess.run([str(ROOT / ".venv/bin/edu"), "rmi", PREFIX + app],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
