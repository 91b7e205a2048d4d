"""Dockerfile builds: `edu build` beside `docker build` (the classic builder), in one run.

The context is the lessons' Node.js app grown to a realistic size: a server, a
package.json and a node_modules tree of about 1,000 files and tens of MB (generated, since
there is no registry to install from). The Dockerfile is the primer's:

    FROM node
    WORKDIR /app
    COPY package.json ./
    RUN node -e "require('./package.json')" && echo installed > /app/.installed
    COPY . .
    EXPOSE 8080
    CMD ["node", "server.js"]

Both builders start from the same `node` image (edu's, loaded into docker). Measured,
alternating: the warm rebuild (every step cached, the case a student meets over and over)
and the cold build (`--no-cache`). Docker has to send the whole context to its daemon on
every build, even a fully cached one; edu reads the files where they are.

``--tree NAME=DIR`` adds the CLI of another checkout (a git worktree of an older commit)
as a further contender, as in bench/build_tiny.py: before and after in one run.

    .venv/bin/python bench/build.py [--runs 10] [--files 1000] [--mb 30] [--tree old=DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from build_tiny import contender, forget_record, tree_cli  # noqa: E402
from common import alternate, report, save, timed  # noqa: E402

from edu_runtime.images import archive, bootstrap  # noqa: E402
from edu_runtime.images.store import Store  # noqa: E402

DOCKERFILE = """FROM node
WORKDIR /app
COPY package.json ./
RUN node -e "require('./package.json')" && echo installed > /app/.installed
COPY . .
EXPOSE 8080
CMD ["node", "server.js"]
"""

SERVER = """const http = require('http');
http.createServer((req, res) => res.end('hello from node\\n')).listen(8080);
"""


def make_context(where: Path, files: int, megabytes: int) -> tuple[int, int]:
    """The app: server.js, package.json, and node_modules of ``files`` files; (files, bytes)."""
    where.mkdir(parents=True)
    (where / "Dockerfile").write_text(DOCKERFILE)
    (where / "server.js").write_text(SERVER)
    (where / "package.json").write_text('{"name": "app", "version": "1.0.0"}\n')
    (where / ".dockerignore").write_text("Dockerfile\n.dockerignore\n")
    per_file = megabytes * 2**20 // files
    total = 0
    for i in range(files):
        pkg = where / "node_modules" / f"pkg{i // 20:03d}" / ("lib" if i % 3 else "")
        pkg.mkdir(parents=True, exist_ok=True)
        data = (f"// module {i}\n" * (per_file // 16 + 1)).encode()[:per_file]
        data += os.urandom(min(256, per_file))  # not all alike: real modules compress
        (pkg / f"m{i}.js").write_bytes(data)
        total += len(data)
    return files, total


def main() -> None:
    """Run the benchmark; save bench/results/build.json."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--cold-runs", type=int, default=3)
    ap.add_argument("--files", type=int, default=1000)
    ap.add_argument("--mb", type=int, default=30)
    ap.add_argument("--tree", action="append", default=[], metavar="NAME=DIR",
                    help="also time the edu CLI of the checkout DIR (e.g. an old commit)")
    args = ap.parse_args()
    store = Store()
    bootstrap.bootstrap(store, "node", progress=True)
    edu = str(Path(sys.executable).parent / "edu")
    work = Path(tempfile.mkdtemp(prefix="edu-bench-build-", dir=Path.home()))
    # Docker's node:latest is someone else's (a test's) if it was there before: kept.
    had_node = subprocess.run(["docker", "image", "inspect", "node:latest"],
                              capture_output=True).returncode == 0
    try:
        files, size = make_context(work / "app", args.files, args.mb)
        print(f"context: {files} files in node_modules, {size / 2**20:.1f} MiB")
        tar = work / "node.tar"
        archive.save(store, ["node:latest"], tar)
        subprocess.run(["docker", "load", "-i", str(tar)], check=True,
                       stdout=subprocess.DEVNULL)
        env = {**os.environ, "DOCKER_BUILDKIT": "0"}
        ctx = str(work / "app")
        edu_build = [edu, "build", "-q", "-t", "edu-bench-app", ctx]
        docker_build = ["docker", "build", "-q", "-t", "edu-bench-app", ctx]
        subprocess.run(edu_build, check=True, stdout=subprocess.DEVNULL)  # fill the caches
        subprocess.run(docker_build, check=True, stdout=subprocess.DEVNULL, env=env)

        def docker_timed(cmd):
            def run() -> float:
                import time
                t = time.perf_counter()
                subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, env=env)
                return time.perf_counter() - t
            return run
        trees = {"this tree": str(Path(__file__).resolve().parent.parent),
                 **dict(spec.partition("=")[::2] for spec in args.tree)} if args.tree else {}
        py_env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}

        def of_trees(flags: list[str], label: str) -> dict:
            """A contender for each --tree: its CLI, run from its own directory."""
            out = {}
            for name, where in trees.items():
                cmd, extra = tree_cli(Path(where).resolve())
                out[f"edu ({name}{label})"] = contender(
                    [*cmd, "build", *flags, *edu_build[2:]], {**py_env, **extra},
                    Path(where).resolve())
            return out
        contenders = {"edu build (warm cache)": timed(edu_build),
                      **of_trees([], ", warm cache")}
        for run in contenders.values():
            run()  # (the trees' .pyc files)
        contenders["docker build (warm cache)"] = docker_timed(docker_build)
        warm = alternate(contenders, args.runs, desc="warm rebuild")
        warm_result = report("warm-cache rebuild of the Node.js app", warm,
                             baseline="docker build (warm cache)")
        cold = alternate({"edu build --no-cache": timed(edu_build[:2] + ["--no-cache"]
                                                        + edu_build[2:]),
                          **of_trees(["--no-cache"], " --no-cache"),
                          "docker build --no-cache": docker_timed(
                              docker_build[:2] + ["--no-cache"] + docker_build[2:])},
                         args.cold_runs, warmup=0, desc="cold build")
        cold_result = report("cold build (--no-cache) of the Node.js app", cold,
                             baseline="docker build --no-cache")
        out = save("build", {"context": {"files": files, "bytes": size},
                             "warm": warm_result, "cold": cold_result})
        print(f"saved {out}")
    finally:
        subprocess.run(["docker", "rmi", "-f", "edu-bench-app",
                        *([] if had_node else ["node:latest"])], capture_output=True)
        subprocess.run([edu, "rmi", "edu-bench-app"], capture_output=True)
        forget_record(work / "app")
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
