"""A warm rebuild of a tiny context: `edu build` beside `docker build` (the classic builder).

Issue 18's row "warm rebuild of a tiny context (4 instructions, 1 file)". The context is
one file and a Dockerfile of four instructions:

    FROM edu-bench-tiny-base
    COPY hello.txt /hello.txt
    RUN cat /hello.txt > /copy.txt
    CMD ["cat", "/copy.txt"]

``edu-bench-tiny-base`` is edu's busybox under a name of the bench's own, saved and loaded
into dockerd, so both builders start from the same image. Every step is cached (one build of
each fills the caches first), so what is timed is the case a student meets over and over:
``edu build -t edu-bench-tiny DIR`` as typed, a new process each time (interpreter start,
imports, the cache look-ups, the tag), against ``docker build -t edu-bench-tiny DIR`` (a
small Go client that sends the context to the already running dockerd). Alternating,
medians, ratio to docker.

``--tree NAME=DIR`` adds the CLI of another checkout (a git worktree of an older commit,
say) as a further contender, started as that checkout's own ``edu`` command starts it
(``tree_cli``): before and after in one run. The main checkout is then timed the same way
too (``edu (this tree)``), so the comparison between trees is like for like.

    .venv/bin/python bench/build_tiny.py [--runs 30] [--tree old=/tmp/wt-old]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import alternate, report, save  # noqa: E402

HERE = Path(__file__).resolve().parent.parent
BASE, TAG = "edu-bench-tiny-base", "edu-bench-tiny"
DOCKERFILE = f"""FROM {BASE}
COPY hello.txt /hello.txt
RUN cat /hello.txt > /copy.txt
CMD ["cat", "/copy.txt"]
"""
CLI = "import sys; from edu_cli.main import main; sys.exit(main())"


def tree_cli(where: Path) -> tuple[list[str], dict[str, str]]:
    """The command line (and environment) that starts checkout ``where``'s ``edu``: ``python
    -S`` with ``where`` put on the path by hand where it has edu_cli/launcher.py (what its
    installer writes), else pip's script, i.e. ``site`` and ``where`` on PYTHONPATH."""
    if (where / "edu_cli" / "launcher.py").exists():
        return [sys.executable, "-S", "-c",
                f"import sys; sys.path.insert(0, {str(where)!r}); " + CLI], {}
    return [sys.executable, "-c", CLI], {"PYTHONPATH": str(where)}


def forget_record(ctx: Path) -> None:
    """Remove the warm-build record of the bench's context (a temporary directory, gone
    after the run: its record would only wait for ``edu image prune``)."""
    from edu_runtime.images import warm

    root = warm.store_root()
    if root:
        Path(warm.where(root, str(ctx), str(ctx / "Dockerfile"))).unlink(missing_ok=True)


def contender(cmd: list[str], env: dict[str, str], cwd: Path | None = None):
    """Run ``cmd`` (must succeed), output thrown away; its wall time in seconds."""
    def run() -> float:
        t = time.perf_counter()
        out = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
                             cwd=cwd)
        took = time.perf_counter() - t
        if out.returncode:
            raise SystemExit(f"{' '.join(cmd)} failed: {out.stderr.decode()[-2000:]}")
        return took
    return run


def main() -> None:
    """Run the benchmark; save bench/results/build_tiny.json."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--tree", action="append", default=[], metavar="NAME=DIR",
                    help="also time the edu CLI of the checkout DIR (e.g. an old commit)")
    args = ap.parse_args()
    edu = str(Path(sys.executable).parent / "edu")
    # As a student's shell has it: Python writes its bytecode caches (a fresh checkout's
    # first run compiles; every later run reads the .pyc files).
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    docker_env = {**env, "DOCKER_BUILDKIT": "0"}
    subprocess.run([edu, "bootstrap", "busybox"], check=True, stdout=subprocess.DEVNULL)
    work = Path(tempfile.mkdtemp(prefix="edu-bench-tiny-", dir=Path.home()))
    try:
        ctx = work / "ctx"
        ctx.mkdir()
        (ctx / "Dockerfile").write_text(DOCKERFILE)
        (ctx / "hello.txt").write_text("hello from a tiny context\n")
        subprocess.run([edu, "tag", "busybox", BASE], check=True)
        subprocess.run([edu, "save", "-o", str(work / "base.tar"), BASE], check=True,
                       stdout=subprocess.DEVNULL)
        subprocess.run(["docker", "load", "-i", str(work / "base.tar")], check=True,
                       stdout=subprocess.DEVNULL)
        build = ["build", "-t", TAG, str(ctx)]
        contenders = {"edu build (warm)": contender([edu, *build], env)}
        trees = {"this tree": str(HERE), **dict(s.partition("=")[::2] for s in args.tree)} \
            if args.tree else {}
        for name, where in trees.items():
            cmd, extra = tree_cli(Path(where).resolve())
            contenders[f"edu ({name})"] = contender([*cmd, *build], {**env, **extra},
                                                    Path(where).resolve())
        contenders["docker build (warm)"] = contender(["docker", "build", "--force-rm",
                                                       *build[1:]], docker_env)
        for run in contenders.values():  # fill the caches (and the .pyc files)
            run()
        out = subprocess.run([edu, *build], check=True, capture_output=True, text=True).stdout
        print("edu's warm output:\n" + "\n".join("  " + ln for ln in out.splitlines()))
        times = alternate(contenders, args.runs, desc="warm tiny rebuild")
        result = report("warm rebuild of a tiny context (4 instructions, 1 file)", times,
                        baseline="docker build (warm)")
        saved = save("build_tiny", {"dockerfile": DOCKERFILE, "warm": result})
        print(f"saved {saved}")
    finally:
        subprocess.run(["docker", "rmi", TAG, BASE], capture_output=True)
        subprocess.run([edu, "rmi", TAG, BASE], capture_output=True)
        forget_record(work / "ctx")
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
