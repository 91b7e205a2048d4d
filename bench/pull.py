"""`edu pull` beside `docker pull`: a 5-layer image of 75 MB from a local registry.

The image: one layer made here at the bottom, python:3 from the edu store (debian's layer and
python's), and two more layers made here (each 3 MB of random bytes and 300 small files):
5 layers, 74.6 MB compressed and 172 MB unpacked, pushed by edu to a private docker-registry on
a free loopback port. Each round, alternating, edu pulls it into a fresh, empty store and
docker pulls it into dockerd, so both download, verify and unpack every layer. Medians,
throughput (compressed MB pulled per second) and the ratio edu / docker are printed and saved
to bench/results/pull.json.

What makes it fair:
- Every round pulls an image of its own: its bottom layer differs (its random bytes), so no
  layer above it is one dockerd has (a layer's identity there is its chain, all the layers
  below it included). Without that, dockerd reused python:3's two layers from the test
  suite's edu-test-python ("Already exists") and pulled 9 MB where edu pulled 75. The bench
  stops if docker says any layer already exists.
- Nothing is deleted between the timed pulls; every copy goes at the end. This VM's ext4 has
  no journal, and then creating a file skips each inode freed in the same block group in the
  last 1 to 6 minutes (the kernel's ``recently_deleted``, one inode-table lookup each): right
  after deleting the previous copy (``docker rmi``, or the last store), a pull's 9,000
  creates spend seconds of system time on that alone (perf: half the samples), whoever
  pulls. So leave 6 minutes after anything deleted many files under $HOME (a previous run
  of this bench deletes 150,000 at its end) before running it again: else the edu pulls,
  whose stores are made under $HOME, pay for it and docker's do not.

    .venv/bin/python bench/pull.py [--image python:3] [--runs 5] [--old-tree DIR]

``--old-tree DIR`` adds a third contender, ``edu pull`` run from another checkout (a git
worktree of an older commit), for before/after figures from the same run.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import alternate, report, save  # noqa: E402

from edu_runtime.images import bootstrap, layers, registry  # noqa: E402
from edu_runtime.images.store import OCI_LAYER_GZIP, Image, Store  # noqa: E402


def quiet(*cmd: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> str:
    """Run ``cmd``; return its stdout; exit with its stderr if it fails."""
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd)
    if r.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed: {r.stderr.strip()}")
    return r.stdout


def start_registry(work: Path) -> tuple[subprocess.Popen, str]:
    """docker-registry on a free loopback port, storing under ``work``."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        host = f"127.0.0.1:{s.getsockname()[1]}"
    config = {"version": 0.1, "log": {"level": "error", "accesslog": {"disabled": True}},
              "storage": {"filesystem": {"rootdirectory": str(work / "registry")}},
              "http": {"addr": host, "secret": secrets.token_hex(16)}}
    (work / "registry.yml").write_text(json.dumps(config))
    proc = subprocess.Popen(["docker-registry", "serve", str(work / "registry.yml")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(200):
        try:
            urllib.request.urlopen(f"http://{host}/v2/", timeout=1).close()
            return proc, host
        except (urllib.error.URLError, OSError):
            time.sleep(0.05)
    proc.kill()
    sys.exit("docker-registry did not start")


def made_layer(store: Store, work: Path, name: str) -> tuple[str, str]:
    """A layer of 3 MB of random bytes and 300 small text files under /opt/NAME: (blob, diff_id)."""
    src = work / name
    (src / f"opt/{name}/small").mkdir(parents=True)
    (src / f"opt/{name}/random.bin").write_bytes(os.urandom(3 << 20))
    for i in range(300):
        (src / f"opt/{name}/small/{i}.txt").write_text(f"file {i} of layer {name}\n" * 40)
    buf = io.BytesIO()
    stats = layers.pack(src, buf, compress=True)
    return store.put_blob_bytes(buf.getvalue(), stats.digest), stats.diff_id


def build_image(store: Store, base: str, tag: str, work: Path, top: list[tuple[str, str]]
                ) -> Image:
    """A layer of its own, then ``base``'s layers, then the layers ``top`` (blob, diff_id)."""
    image = store.get(base)
    bottom = made_layer(store, work, f"bench-{tag.rsplit(':', 1)[-1]}")
    below = list(zip((d["digest"] for d in image.manifest["layers"]), image.diff_ids, strict=True))
    chain = [bottom, *below, *top]
    history = [{"created_by": "bench/pull.py: a layer of this round's own"},
               *image.config.get("history", []),
               *({"created_by": f"bench/pull.py: layer {n}"} for n in range(len(top)))]
    config = {**image.config, "rootfs": {"type": "layers", "diff_ids": [d for _, d in chain]},
              "history": history}
    return store.add_image(json.dumps(config).encode(),
                           [(blob, OCI_LAYER_GZIP) for blob, _ in chain], [tag])


def main() -> None:
    """Run the benchmark and save bench/results/pull.json."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image", default="python:3", help="the base image from the edu store")
    ap.add_argument("--layers", type=int, default=2, help="layers to add on top")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--old-tree", type=Path, help="also time edu pull from this checkout")
    args = ap.parse_args()
    if subprocess.run(["docker", "version"], capture_output=True).returncode != 0:
        sys.exit("dockerd is not running: scripts/services.sh start docker")
    store = Store()
    name = args.image.split(":")[0]
    if name in bootstrap.NAMES:
        bootstrap.bootstrap(store, name, progress=True)
    work = Path(tempfile.mkdtemp(prefix="edu-bench-pull-", dir=Path.home()))
    proc, host = start_registry(work)
    rounds = args.runs + 1  # one warm-up round
    refs = [f"{host}/bench/pull:{secrets.token_hex(4)}" for _ in range(rounds)]
    try:
        # Built and pushed from a store of its own, so the default store is left as it was.
        source = Store(work / "source")
        base = store.get(args.image)
        blobs = [(d["digest"], d["mediaType"]) for d in base.manifest["layers"]]
        for digest, _ in blobs:
            source.put_blob_file(store.blob_path(digest), expected=digest)
        source.add_image(store.read_blob(base.config_digest), blobs, [args.image])
        top = [made_layer(source, work / "layers", f"bench{n}") for n in range(args.layers)]
        for ref in refs:
            image = build_image(source, args.image, ref, work / "layers", top)
            registry.push(source, ref)
        size = sum(d["size"] for d in image.manifest["layers"])
        print(f"{len(refs)} images like {refs[-1]}: {len(image.diff_ids)} layers, "
              f"{size / 1e6:.1f} MB compressed, {image.size / 1e6:.1f} MB unpacked")

        def edu_pull(tree: Path, name: str) -> Callable[[], float]:
            todo = iter(enumerate(refs))

            def pull() -> float:
                n, ref = next(todo)
                env = dict(os.environ, EDU_STATE_DIR=str(work / f"{name}-{n}"),
                           PYTHONPATH=str(tree))
                t = time.perf_counter()
                quiet(sys.executable, "-m", "edu_cli.main", "pull", "-q", ref, env=env, cwd=tree)
                return time.perf_counter() - t
            return pull

        docker_todo = iter(refs)

        def docker_pull() -> float:
            ref = next(docker_todo)
            t = time.perf_counter()
            out = quiet("docker", "pull", ref)
            elapsed = time.perf_counter() - t
            if "Already exists" in out:
                sys.exit(f"docker already had some of {ref}'s layers, so it did not pull them: "
                         "the comparison would not be fair.")
            return elapsed

        contenders = {"edu pull": edu_pull(ROOT, "edu-state")}
        if args.old_tree:
            contenders["edu pull (old)"] = edu_pull(args.old_tree.resolve(), "edu-state-old")
        contenders["docker pull"] = docker_pull
        times = alternate(contenders, args.runs, warmup=1, desc="pull")
        result = report(f"pull {len(image.diff_ids)} layers, {size / 1e6:.1f} MB",
                        times, baseline="docker pull")
        for row in result["rows"].values():
            row["mb_per_s"] = size / 1e6 / (row["median_ms"] / 1e3)
        print("throughput: " + ", ".join(f"{who} {row['mb_per_s']:.1f} MB/s"
                                         for who, row in result["rows"].items()))
        print(f"edu pull takes x{result['rows']['edu pull']['ratio']:.2f} of docker pull's time")
        out = save("pull", {**result, "compressed_bytes": size, "unpacked_bytes": image.size,
                            "layers": len(image.diff_ids)})
        print(f"saved {out}")
    finally:
        for ref in refs:
            subprocess.run(["docker", "rmi", ref], capture_output=True)
        proc.terminate()
        proc.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
