"""Lesson 09's app (lessons/apps/node-app): a first build, a rebuild after a code change, and
one after a package.json change, with `edu build` beside `docker build` (the classic builder).

Each round builds a fresh copy of the app whose Dockerfile has one more line after FROM, a
LABEL with a random word, so nothing in either builder's cache fits it: its first build is a
real first build (npm downloads and installs express and its 67 dependencies from the npm
registry), then server.js is changed and it is built again (npm install from the cache), then
package.json is changed and it is built again (npm install again). edu and Docker alternate
round by round, from the same node image (edu's, lent to Docker). Afterwards edu gives the
rounds' build cache back and Docker's images are removed.

    .venv/bin/python bench/node_app.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, save  # noqa: E402

from edu_runtime.images import bootstrap  # noqa: E402
from edu_runtime.images import build as builder  # noqa: E402
from edu_runtime.images.store import Store, StoreError  # noqa: E402
from edu_runtime.notebook import apps, building, docker  # noqa: E402

KINDS = ("first build", "server.js changed", "package.json changed")


def copy_for_round(where: Path, base: str) -> Path:
    """A copy of the app whose cache is its own: a LABEL with a random word after FROM."""
    context = apps.copy("node-app", where)
    dockerfile = context / "Dockerfile"
    dockerfile.write_text(dockerfile.read_text().replace(
        "FROM node\n", f"FROM {base}\nLABEL bench.round={uuid.uuid4().hex}\n"))
    return context


def changes(context: Path):
    """The round's edits, in order: none, server.js, package.json."""
    yield
    server = context / "server.js"
    server.write_text(server.read_text() + f"// {uuid.uuid4()}\n")
    yield
    package = context / "package.json"
    meta = json.loads(package.read_text())
    meta["description"] += f" ({uuid.uuid4().hex[:8]})"
    package.write_text(json.dumps(meta, indent=2) + "\n")
    yield


def edu_round(work: Path, n: int, remembered: list[str]) -> list[float]:
    context = copy_for_round(work / f"edu-{n}", "node")
    times = []
    for _ in changes(context):
        built = building.build_image(context, "edu-bench-node-app", progress=False)
        remembered += built["remembered"]
        times.append(built["seconds"])
    return times


def docker_round(work: Path, n: int, base: str, images: list[str]) -> list[float]:
    context = copy_for_round(work / f"docker-{n}", base)
    times = []
    for _ in changes(context):
        iid = work / "iid"
        started = time.monotonic()
        docker.docker("build", "-q", "--iidfile", str(iid), "-t", "edu-bench-node-app",
                      str(context), env={"DOCKER_BUILDKIT": "0"}, timeout=600)
        times.append(time.monotonic() - started)
        images.append(iid.read_text().strip())
    return times


def main() -> None:
    """Run the benchmark; save bench/results/node_app.json."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    store = Store()
    bootstrap.bootstrap(store, "node", progress=True)
    times = {side: {k: [] for k in KINDS} for side in ("edu", "docker")}
    remembered: list[str] = []
    images: list[str] = []
    with tempfile.TemporaryDirectory(prefix="edu-bench-node-") as tmp:
        work = Path(tmp)
        try:
            with docker.borrowed("node", f"edu-bench-node-{os.getpid()}:edu") as base:
                for n in range(args.rounds):
                    rounds = {"edu": edu_round(work, n, remembered),
                              "docker": docker_round(work, n, base, images)}
                    for side, seconds in rounds.items():
                        for kind, took in zip(KINDS, seconds, strict=True):
                            times[side][kind].append(took)
                    print(f"round {n + 1}: " + "; ".join(
                        f"{side} " + ", ".join(f"{times[side][k][-1]:.2f}" for k in KINDS)
                        for side in times), flush=True)
        finally:
            for image in reversed(images):
                docker.docker("rmi", "-f", image, check=False)
            try:
                store.remove("edu-bench-node-app")
            except StoreError:
                pass
            builder.forget(store, remembered)
    rows = {}
    print(f"\nmedians of {args.rounds} rounds (s), and docker over edu:")
    for kind in KINDS:
        e, d = (statistics.median(times[s][kind]) for s in ("edu", "docker"))
        rows[kind] = {"edu_s": e, "docker_s": d, "docker_over_edu": d / e,
                      "edu_runs": times["edu"][kind], "docker_runs": times["docker"][kind]}
        print(f"  {kind:<22} edu {e:6.2f}   docker {d:6.2f}   x{d / e:.2f}")
    first, code = rows["first build"], rows["server.js changed"]
    print(f"  first build / code change: edu x{first['edu_s'] / code['edu_s']:.0f}, "
          f"docker x{first['docker_s'] / code['docker_s']:.0f}")
    out = save("node_app", {"title": "lesson 09's Node.js app: first build, code change, "
                            "package.json change", "machine": machine(),
                            "rounds": args.rounds, "rows": rows})
    print(f"saved {out}")


if __name__ == "__main__":
    main()
