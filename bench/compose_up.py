"""`edu compose up -d` and `down -v` beside Debian's `docker-compose` 1.29 on the same file.

The file: two busybox services, one depending on the other, a published port, a named volume
and the default network, so each `up -d` makes a network, a volume and two containers, and
each `down -v` removes them all. Rounds alternate edu and docker; medians and ratios
(edu / docker-compose) are reported for `up -d`, `ps` and `down -v`. Docker runs our busybox
(loaded into dockerd from edu's store, as tests/docker_reference.py does).

    .venv/bin/python bench/compose_up.py [--runs 10]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from common import report, save  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

FILE = """
services:
  app:
    image: ${IMAGE:-busybox}
    command: ["sh", "-c", "trap 'exit 0' TERM; sleep 1000 & wait"]
    depends_on: [db]
    ports: ["127.0.0.1::8000"]
  db:
    image: ${IMAGE:-busybox}
    command: ["sh", "-c", "trap 'exit 0' TERM; sleep 1000 & wait"]
    volumes: [data:/data]
volumes:
  data: {}
"""


def main() -> None:
    """Run the benchmark and save bench/results/compose_up.json."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10)
    args = ap.parse_args()
    from docker_reference import load_base

    image = load_base()
    tools = {"edu compose": [sys.executable, "-m", "edu_cli.main", "compose"],
             "docker-compose 1.29": ["docker-compose"]}
    envs = {"edu compose": {}, "docker-compose 1.29": {"IMAGE": image}}
    phases = {p: {t: [] for t in tools} for p in ("up -d", "ps", "down -v")}
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp) / "cmp-bench"
        d.mkdir()
        (d / "compose.yaml").write_text(FILE)
        for i in tqdm(range(args.runs + 1), desc="compose", unit="round"):
            for tool, cmd in tools.items():
                env = {**os.environ, **envs[tool]}
                for phase in phases:
                    t = time.perf_counter()
                    subprocess.run([*cmd, *phase.split()], cwd=d, env=env, check=True,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                    if i:  # the first round warms caches up
                        phases[phase][tool].append(time.perf_counter() - t)
    out = {p: report(f"compose {p}: 2 services, a network, a volume", times,
                     "docker-compose 1.29") for p, times in phases.items()}
    print(f"saved {save('compose_up', out)}")


if __name__ == "__main__":
    main()
