"""``edu build`` from a notebook: a bar for the Dockerfile's steps, the whole output kept aside.

A build prints every line its RUN steps print (apt-get alone prints hundreds), far too many
for a projector. ``build_image(context, tag)`` runs ``edu build -t TAG CONTEXT``, the very
command a student types, with its output going to a log file, behind a progress bar that
ticks once per Dockerfile step and shows the step, then the latest line of its output. It
returns what was built as data a lesson can record: the image, how many steps there were,
how many came from the cache, and how long it took.

Why the command, in a process of its own, rather than ``images.build`` in the notebook's:
a Jupyter kernel is threaded, so each RUN step's container would be made by the supervisor
(``life/remote.py``), which answers with the exit code before it has torn the container
down, and then writes the container's "exited" record; a builder that removes its
intermediate container in between finds it written back afterwards, an exited container
nobody made. ``edu build`` is single-threaded: it forks its RUN containers itself and
removes each one when it is really gone. The bar reads the log's newest lines five times
a second, from a thread of the notebook's that ends with the build.

Introduced in notebooks/02-why-containers.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

STEP = re.compile(r"Step (\d+)/(\d+) : (.*)")
CACHED = "---> Using cache"
WORK = ("RUN", "COPY", "ADD")  # the steps that make a layer (or take one from the cache)


class BuildFailed(RuntimeError):
    """A build that failed: the builder's sentence, the log's last lines, where the log is."""


def _cut(text: str, width: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[:width - 1] + "…"


def log_path(tag: str) -> Path:
    """Where the output of building ``tag`` is kept (the last build of it)."""
    from .. import paths

    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", tag)
    return paths.ensure(paths.cache_dir() / "builds") / f"{safe}.log"


def read_log(text: str) -> dict[str, int]:
    """What a build's output says: ``{"steps", "done", "work", "cached"}`` (``done``: the
    steps begun so far; ``work``: the RUN, COPY and ADD steps; ``cached``: those the
    cache gave)."""
    out = {"steps": 0, "done": 0, "work": 0, "cached": 0}
    working = False
    for line in text.splitlines():
        step = STEP.match(line)
        if step:
            out["done"], out["steps"] = int(step[1]), int(step[2])
            working = step[3].split(None, 1)[0].upper() in WORK
            out["work"] += working
        elif line.strip() == CACHED and working:
            out["cached"] += 1
    return out


def read_steps(text: str) -> list[dict[str, Any]]:
    """Each step of a build's output: ``{"step", "instruction", "cached", "id"}`` (``id``:
    the image so far after it, as ``---> ID`` says; the same ID again means the same
    layers)."""
    rows: list[dict[str, Any]] = []
    for line in text.splitlines():
        step = STEP.match(line)
        if step:
            rows.append({"step": int(step[1]), "instruction": step[3], "cached": False,
                         "id": ""})
        elif rows and line.strip() == CACHED:
            rows[-1]["cached"] = True
        elif rows and line.strip().startswith("---> ") and " " not in line.strip()[5:]:
            rows[-1]["id"] = line.strip()[5:]
    return rows


def _written(store, since: float, ids: set[str]) -> list[str]:
    """The build-cache entries written since ``since`` whose image is one of ``ids`` (short
    IDs): what a build remembered, for ``images.build.forget``."""
    from ..images.store import canonical_json

    keys = []
    for entry in sorted((store.root / "build-cache").glob("*.json")):
        try:
            if entry.stat().st_mtime < since:
                continue
            config = json.loads(entry.read_text())["config"]
        except (OSError, ValueError, KeyError):
            continue
        if hashlib.sha256(canonical_json(config)).hexdigest()[:12] in ids:
            keys.append(entry.stem)
    return keys


def _last_lines(path: Path) -> tuple[str, str]:
    """The last step line and the last non-empty line of the log."""
    text = path.read_text(errors="replace")
    lines = [ln for ln in text.splitlines() if ln.strip()]
    steps = [ln for ln in lines if STEP.match(ln)]
    return (steps[-1] if steps else ""), (lines[-1] if lines else "")


def build_image(context: str | Path, tag: str, *, build_args: dict[str, str] | None = None,
                progress: bool = True, no_cache: bool = False) -> dict[str, Any]:
    """``edu build [--no-cache] -t TAG [--build-arg K=V] CONTEXT``, with a bar and its output
    in a log; ``{"tag", "id", "steps", "work", "cached", "seconds", "size", "log", "rows",
    "remembered"}`` (``work``: the RUN, COPY and ADD steps, ``cached``: those the cache
    gave; ``rows``: each step, as ``read_steps``; ``remembered``: the cache entries it
    wrote, which ``images.build.forget`` gives back). Raises BuildFailed (with the log's
    last lines) when the build fails."""
    from ..images.store import Store
    from ..progress import bar as new_bar

    log = log_path(tag)
    argv = [sys.executable, "-m", "edu_cli.main", "build", "-t", tag]
    if no_cache:
        argv.append("--no-cache")
    for key, value in (build_args or {}).items():
        argv += ["--build-arg", f"{key}={value}"]
    argv.append(str(context))
    log.write_text(f"edu build {'--no-cache ' if no_cache else ''}-t {tag} {context}\n")
    bar = new_bar(total=1, desc=f"build {tag}", unit="step", leave=False, disable=not progress)
    stop = threading.Event()

    def follow() -> None:  # the step under way, and the newest line it printed
        while not stop.wait(0.2):
            step, last = _last_lines(log)
            seen = STEP.match(step)
            if seen:
                bar.total = int(seen[2])
                bar.update(int(seen[1]) - 1 - bar.n)
            if last:
                bar.set_postfix_str(_cut(seen[3] if last == step and seen else last))

    start, since = time.monotonic(), time.time() - 1  # -1: a coarse mtime is not missed
    tail = threading.Thread(target=follow, name="build-progress", daemon=True)
    with open(log, "a") as out:  # the child's stdout and stderr, appended after our line
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
    tail.start()
    try:
        code = proc.wait()
    except BaseException:  # Ctrl-C in the notebook: the build cleans up as edu build does
        proc.send_signal(signal.SIGINT)
        proc.wait()
        raise
    finally:
        stop.set()
        tail.join()
        bar.close()
    text = log.read_text(errors="replace")
    if code != 0:
        raise BuildFailed(f"edu build -t {tag} failed (exit {code}). Its last lines:\n"
                          f"{_tail(text)}\nThe whole output: {log}")
    seconds = round(time.monotonic() - start, 2)
    store = Store()
    image = store.get(tag)
    counts, rows = read_log(text), read_steps(text)
    made = {r["id"] for r in rows if not r["cached"] and r["step"] > 1}
    return {"tag": tag, "id": image.id, "steps": counts["steps"], "work": counts["work"],
            "cached": counts["cached"], "seconds": seconds, "size": image.size,
            "log": str(log), "rows": rows, "remembered": _written(store, since, made)}


def _tail(text: str, lines: int = 15) -> str:
    return "\n".join("    " + line for line in text.splitlines()[-lines:])


def said(built: dict[str, Any]) -> str:
    """One line for a build: ``mariadb   9 steps, RUN/COPY 3 of 3 cached, 0.4 s, 410 MB``."""
    return (f"{built['tag']:<16} {built['steps']} steps, RUN/COPY {built['cached']} of "
            f"{built['work']} cached, {built['seconds']:5.1f} s, "
            f"{built['size'] / 1e6:4.0f} MB  {built['id'].split(':')[-1][:12]}")
