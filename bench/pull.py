"""`edu pull` beside `docker pull`: a multi-layer image of tens of MB from a local registry.

The image is python:3 from the edu store (debian's layer and python's) plus three layers made
here (a few MB of random bytes and a few hundred small files each), pushed by edu to a private
docker-registry on a free loopback port. Each round, alternating: edu pulls it into a fresh,
empty store; docker pulls it after `docker rmi`, so both download, verify and unpack every
layer. Medians, throughput (compressed MB pulled per second) and the ratio edu / docker are
reported and saved to bench/results/pull.json.

    .venv/bin/python bench/pull.py [--image python:3] [--runs 5]
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
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import alternate, report, save  # noqa: E402

from edu_runtime.images import bootstrap, layers, registry  # noqa: E402
from edu_runtime.images.store import OCI_LAYER_GZIP, Image, Store  # noqa: E402


def quiet(*cmd: str, env: dict[str, str] | None = None) -> str:
    """Run ``cmd``; return its stdout; exit with its stderr if it fails."""
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
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


def build_image(store: Store, base: str, tag: str, work: Path, extra: int) -> Image:
    """``base`` plus ``extra`` layers, each 3 MB of random bytes and 300 small text files."""
    image = store.get(base)
    blobs = [(d["digest"], d["mediaType"]) for d in image.manifest["layers"]]
    diff_ids, history = list(image.diff_ids), list(image.config.get("history", []))
    for n in range(extra):
        src = work / f"layer{n}"
        (src / f"opt/bench{n}/small").mkdir(parents=True)
        (src / f"opt/bench{n}/random.bin").write_bytes(os.urandom(3 << 20))
        for i in range(300):
            (src / f"opt/bench{n}/small/{i}.txt").write_text(f"file {i} of layer {n}\n" * 40)
        buf = io.BytesIO()
        stats = layers.pack(src, buf, compress=True)
        blobs.append((store.put_blob_bytes(buf.getvalue(), stats.digest), OCI_LAYER_GZIP))
        diff_ids.append(stats.diff_id)
        history.append({"created_by": f"bench/pull.py: layer {n}"})
    config = {**image.config, "rootfs": {"type": "layers", "diff_ids": diff_ids},
              "history": history}
    return store.add_image(json.dumps(config).encode(), blobs, [tag])


def main() -> None:
    """Run the benchmark and save bench/results/pull.json."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image", default="python:3", help="the base image from the edu store")
    ap.add_argument("--layers", type=int, default=3, help="layers to add on top")
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    if subprocess.run(["docker", "version"], capture_output=True).returncode != 0:
        sys.exit("dockerd is not running: scripts/services.sh start docker")
    store = Store()
    name = args.image.split(":")[0]
    if name in bootstrap.NAMES:
        bootstrap.bootstrap(store, name, progress=True)
    work = Path(tempfile.mkdtemp(prefix="edu-bench-pull-", dir=Path.home()))
    proc, host = start_registry(work)
    ref = f"{host}/bench/pull:{secrets.token_hex(4)}"
    try:
        # Built and pushed from a store of its own, so the default store is left as it was.
        source = Store(work / "source")
        base = store.get(args.image)
        blobs = [(d["digest"], d["mediaType"]) for d in base.manifest["layers"]]
        for digest, _ in blobs:
            source.put_blob_file(store.blob_path(digest), expected=digest)
        source.add_image(store.read_blob(base.config_digest), blobs, [args.image])
        image = build_image(source, args.image, ref, work / "layers", args.layers)
        registry.push(source, ref)
        size = sum(d["size"] for d in image.manifest["layers"])
        print(f"{ref}: {len(image.diff_ids)} layers, {size / 1e6:.1f} MB compressed, "
              f"{image.size / 1e6:.1f} MB unpacked")
        edu = [sys.executable, "-m", "edu_cli.main", "pull", "-q", ref]
        shared = []

        def edu_pull() -> float:
            state = work / "edu-state"
            t = time.perf_counter()
            quiet(*edu, env=dict(os.environ, EDU_STATE_DIR=str(state)))
            elapsed = time.perf_counter() - t
            shutil.rmtree(state)
            return elapsed

        def docker_pull() -> float:
            subprocess.run(["docker", "rmi", ref], capture_output=True)
            t = time.perf_counter()
            out = quiet("docker", "pull", ref)
            elapsed = time.perf_counter() - t
            shared.append(out.count("Already exists"))
            return elapsed

        times = alternate({"edu pull": edu_pull, "docker pull": docker_pull}, args.runs,
                          warmup=1, desc="pull")
        result = report(f"pull {len(image.diff_ids)} layers, {size / 1e6:.1f} MB",
                        times, baseline="docker pull")
        for row in result["rows"].values():
            row["mb_per_s"] = size / 1e6 / (row["median_ms"] / 1e3)
        print(f"throughput: edu {result['rows']['edu pull']['mb_per_s']:.1f} MB/s, "
              f"docker {result['rows']['docker pull']['mb_per_s']:.1f} MB/s; "
              f"edu x{result['rows']['edu pull']['ratio']:.2f} of docker's time")
        if any(shared):
            print(f"note: docker found {max(shared)} layer(s) it already had")
        out = save("pull", {**result, "compressed_bytes": size, "unpacked_bytes": image.size,
                            "layers": len(image.diff_ids), "docker_layers_already_present":
                            max(shared, default=0)})
        print(f"saved {out}")
    finally:
        subprocess.run(["docker", "rmi", ref], capture_output=True)
        proc.terminate()
        proc.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
