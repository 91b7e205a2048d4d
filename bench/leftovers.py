"""Leftovers over a long day: does anything in the state directory grow with use?

Rounds of what a class does all day, five operations each: ``run --rm``; ``run -d`` then
``rm -f``; ``network create``, a container on it, ``network rm``; ``volume create``, a
container writing to it, ``volume rm``; ``build`` then ``rmi``. Every ``--every`` rounds it
counts what the state directory holds: files and directories (outside the store's blobs and
layers), container records, IPAM leases, build-cache entries, volumes, networks, and
``/run/edu``'s files. It reports the first and last counts and the growth per 100
operations. The same Dockerfile is built each round but one in ``--distinct`` rounds, which
changes it (a student editing their app): that is the build cache's growth, which only
``edu image prune`` takes back (as ``docker builder prune`` does).

    .venv/bin/python bench/leftovers.py [--rounds 100] [--every 10] [--distinct 5]

tests/test_long_day.py is the short form (10 rounds of the same build).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, save  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402


def counts() -> dict[str, int]:
    """What the state directory holds now."""
    from edu_runtime import networks, paths, volumes
    from edu_runtime.life import states

    root = paths.state_dir()
    files = 0
    for top, dirs, names in os.walk(root):
        if os.path.relpath(top, root).startswith(("store/blobs", "store/layers")):
            dirs[:] = []
            continue
        files += len(dirs) + len(names)
    nets = networks.ls()
    cache = root / "store" / "build-cache"
    return {"state files": files, "records": len(states.records()),
            "leases": sum(len(n.get("containers") or {}) for n in nets),
            "build cache": sum(not p.name.startswith(".") for p in cache.iterdir())
            if cache.is_dir() else 0,  # (not the trim's stamp)
            "volumes": len(volumes.ls()), "networks": len(nets),
            "run dir files": len(os.listdir(paths.run_dir()))}


def one_round(image, tag: str, context: Path, distinct: bool) -> None:
    """Five operations, each cleaned up as a student would."""
    from edu_runtime import networks, volumes
    from edu_runtime.container import Container
    from edu_runtime.images.build import Options, build
    from edu_runtime.images.store import Store
    from edu_runtime.life import control

    Container(image, ["true"], remove=True).run()
    d = Container(image, ["sleep", "60"])
    d.start()
    d.kill()
    d.wait()
    control.remove(d.id)
    networks.create(tag)
    Container(image, ["true"], network=tag, remove=True).run()
    networks.rm(tag)
    volumes.create(tag)
    Container(image, ["sh", "-c", "echo x > /data/x"], volumes=[f"{tag}:/data"],
              remove=True).run()
    volumes.rm(tag)
    line = f"RUN echo {tag if distinct else 'same'} > /made\n"
    (context / "Dockerfile").write_text("FROM busybox\n" + line)
    with open(os.devnull, "w") as quiet:
        build(Store(), Options(context=context, tags=[tag + ":1"], quiet=True), out=quiet)
    Store().remove(tag + ":1")


def main() -> None:
    from edu_runtime.images import bootstrap
    from edu_runtime.images.store import Store

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=100)
    p.add_argument("--every", type=int, default=10)
    p.add_argument("--distinct", type=int, default=5, help="one changed build in N rounds")
    a = p.parse_args()
    image = bootstrap.bootstrap(Store(), "busybox", progress=False)
    context = Path(f"/tmp/day-leftovers-{os.getpid()}")
    context.mkdir()
    rows = [{"operations": 0, **counts()}]
    start = time.perf_counter()
    try:
        for i in tqdm(range(a.rounds), desc="rounds", unit="round"):
            one_round(image, f"day-left-{uuid.uuid4().hex[:8]}", context,
                      a.distinct > 0 and i % a.distinct == 0)
            if (i + 1) % a.every == 0:
                rows.append({"operations": 5 * (i + 1), **counts()})
    finally:
        (context / "Dockerfile").unlink(missing_ok=True)
        context.rmdir()
    took = time.perf_counter() - start
    first, last = rows[0], rows[-1]
    per100 = {k: (last[k] - first[k]) * 100 / last["operations"] for k in first
              if k != "operations"}
    print(f"\n{last['operations']} operations in {took:.0f} s "
          f"({took / last['operations'] * 1e3:.0f} ms each); growth per 100 operations:")
    for k, v in per100.items():
        print(f"  {k:<14} {first[k]:>7} -> {last[k]:>7}   {v:+.1f}")
    save("leftovers", {"machine": machine(), "rounds": a.rounds, "distinct": a.distinct,
                       "seconds": took, "rows": rows, "growth_per_100": per100})
    print(json.dumps(per100))


if __name__ == "__main__":
    main()
