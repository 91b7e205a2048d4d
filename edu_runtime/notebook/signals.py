"""PID 1 and signals, measured: why ``edu stop`` waits 10 s for a shell, and what --init does.

``docker stop`` (and ``edu stop``) sends SIGTERM to the container's PID 1, waits (10 s unless
``-t N``), then sends SIGKILL. What a process does with SIGTERM is written in its
``/proc/PID/status``: a bit set in ``SigCgt`` means it *catches* it (a handler runs), in
``SigIgn`` that it *ignores* it, in ``SigBlk`` that it has *blocked* it (the signal waits in
a queue until the process takes it), and in none of them that the *default* applies:
terminate. A process asleep in ``sigtimedwait`` (its ``/proc/PID/wchan``) has *awaited*
signals: it takes them from the queue itself, as tini does.

Except for PID 1 of a pid namespace: the kernel does not apply a default action to it
(``SIGNAL_UNKILLABLE``). From inside its namespace a signal it has no handler for is
dropped; from the host, only SIGKILL (and SIGSTOP) is forced on it. So a shell or a
``sleep`` as PID 1, with no handler for SIGTERM, ignores ``stop``'s SIGTERM and lives until
the SIGKILL ten seconds later: exit code 137 (128 + 9). With ``--init`` PID 1 is tini,
which waits for SIGTERM in ``sigtimedwait`` (an awaited signal is queued, even for PID 1),
then passes it on to your command, now an ordinary process, which dies at once: 143 (128 + 15),
and tini exits with it. An interactive bash ignores SIGTERM by itself,
whatever its pid, so for it --init changes nothing: ``exit`` is the way out.

- ``sigterm(pid)``: ``"caught"``, ``"ignored"``, ``"blocked"``, ``"awaited"`` or
  ``"default"``, from the kernel's bits;
- ``pid1(name)``: a container's PID 1 and its children, each with its SIGTERM, read from
  the host;
- ``stop_all(names)``: ``edu stop`` on several containers at once, each one timed;
- ``stop_figure(rows)``: those times as bars, for a projector.

Introduced in notebooks/07-run-it.
"""

from __future__ import annotations

import signal
import time
from typing import Any

from .figures import LABEL_PT, NOTE_PT, SIZE, SUBTITLE_PT, TICK_PT, TITLE_PT

#: The figure's colours: without --init (the wait) and with it.
COLOURS = {"plain": "#8d99ae", "init": "#2a9d8f"}


def sigterm(pid: int | str, sig: int = signal.SIGTERM) -> str:
    """How process ``pid`` treats ``sig``: "caught", "ignored", "blocked" (its
    /proc/PID/status SigCgt, SigIgn and SigBlk masks, in that order), "awaited" (asleep in
    sigtimedwait, which unblocks the awaited signals while it waits, so /proc shows none:
    it takes them from the queue itself) or "default"; "" if it is gone."""
    from .. import kernel

    status = kernel.proc_status(pid)
    if "SigCgt" not in status:
        return ""
    bit = 1 << (sig - 1)
    if int(status["SigCgt"], 16) & bit:
        return "caught"
    if int(status["SigIgn"], 16) & bit:
        return "ignored"
    if int(status["SigBlk"], 16) & bit:
        return "blocked"
    if (kernel.read(f"/proc/{pid}/wchan", "") or "").startswith("do_sigtimedwait"):
        return "awaited"
    return "default"


def _process(pid: int) -> dict[str, Any]:
    from .. import kernel

    status = kernel.proc_status(pid)
    return {"host_pid": pid, "comm": status.get("Name", "?"),
            "nspid": status.get("NSpid", "").split(), "sigterm": sigterm(pid)}


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def pid1(name: str) -> dict[str, Any]:
    """A running container's PID 1 seen from the host (host pid, name, NSpid, SIGTERM),
    with its children in ``"children"``."""
    from .. import Container

    pid = Container.get(name).pid
    if not pid:
        raise RuntimeError(f"container {name} is not running: it has no PID 1 to look at")
    return {**_process(pid), "children": [_process(c) for c in _children(pid)]}


def wait_ready(name: str, timeout: float = 10) -> dict[str, Any]:
    """Wait until a container just started (``edu run -d``) runs its command, and return
    its ``pid1``: with --init, once tini's child has exec'd (its name is no longer tini's);
    with -t, once the program has printed something (a shell, its prompt: it has set up
    its signals by then). ``TimeoutError`` after ``timeout`` s."""
    from .. import Container

    c = Container.get(name)
    info = c.inspect()
    init, tty = info["HostConfig"]["Init"], info["Config"]["Tty"]
    deadline = time.monotonic() + timeout
    while True:
        p = pid1(name)
        kids = [k for k in p["children"] if k["comm"] != p["comm"]]
        if (not init or kids) and (not tty or any(text for _, text in c.logs())):
            return p
        if time.monotonic() > deadline:
            raise TimeoutError(f"container {name} did not finish starting within "
                               f"{timeout:g} s")
        time.sleep(0.02)


def stop_all(names: list[str], timeout: float = 10) -> dict[str, dict[str, Any]]:
    """``edu stop -t TIMEOUT`` on every container of ``names`` at once; for each, the
    seconds until it was gone and its exit code. One thread per container: a stop is
    waiting (SIGTERM, then SIGKILL after ``timeout``), and a thread forks nothing."""
    from concurrent.futures import ThreadPoolExecutor

    from .. import Container

    def stop(name: str) -> dict[str, Any]:
        c = Container.get(name)
        started = time.monotonic()
        c.stop(timeout)
        seconds = time.monotonic() - started
        return {"seconds": round(seconds, 3),
                "exit_code": c.inspect()["State"]["ExitCode"], "timeout": timeout}

    with ThreadPoolExecutor(max_workers=max(len(names), 1)) as pool:
        return dict(zip(names, pool.map(stop, names), strict=True))


def stop_figure(rows: list[dict[str, Any]], *, faster: tuple[str, str] | None = None,
                replay: str = "", title: str = "How long `stop` takes"):
    """One bar per row (``label``, ``seconds``, ``exit_code``, ``init``, ``timeout``): the
    seconds from ``stop`` to the container gone, a dashed line where SIGKILL comes, and,
    with ``faster=(label without --init, label with it)``, the ratio in the title. The
    subtitle is the replay banner, or "measured live". Returns the figure."""
    if not rows:
        raise ValueError("stop_figure(): no rows to draw")
    by_label = {r["label"]: r for r in rows}
    if faster:
        slow, fast = (by_label[x]["seconds"] for x in faster)
        title = f"{title}: ×{slow / max(fast, 1e-3):.0f} faster with --init"
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=SIZE, layout="constrained")
    plt.close(fig)  # shown once, as the cell's value (see figures.py)
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    fig.suptitle(title, fontsize=TITLE_PT, fontweight="bold")
    body = fig.subfigures(1, 1)
    body.suptitle(replay or "measured live on this machine", fontsize=SUBTITLE_PT,
                  color="#4a4e69")
    ax = body.subplots()
    right = max(max(r["seconds"] for r in rows), max(r.get("timeout", 0) for r in rows)) * 1.45
    for i, r in enumerate(rows):
        kind = "init" if r.get("init") else "plain"
        ax.barh(i, r["seconds"], height=0.6, color=COLOURS[kind], gid=kind)
        how = {137: "SIGKILL", 143: "SIGTERM"}.get(r["exit_code"], "exit")
        ax.text(r["seconds"] + right * 0.01, i, f"{r['seconds']:.1f} s, {how} ({r['exit_code']})",
                ha="left", va="center", fontsize=NOTE_PT)
    timeouts = {r["timeout"] for r in rows if r.get("timeout")}
    for t in sorted(timeouts):
        ax.axvline(t, color="#c1121f", linestyle="--", linewidth=1.5)
        ax.text(t, -0.38, f" SIGKILL after {t:g} s", color="#c1121f", fontsize=NOTE_PT,
                ha="left", va="bottom")
    ax.set_yticks(range(len(rows)), [r["label"] for r in rows], fontsize=TICK_PT)
    ax.set_ylim(len(rows) - 0.1, -0.75)  # room above for the SIGKILL line's label
    ax.set_xlim(0, right)
    ax.tick_params(axis="x", labelsize=TICK_PT)
    ax.set_xlabel("time from `stop` until the container has exited (s)", fontsize=LABEL_PT)
    ax.set_ylabel("container (its PID 1)", fontsize=LABEL_PT)
    ax.spines[["top", "right"]].set_visible(False)
    ax.grid(axis="x", alpha=0.3)
    handles = [plt.Rectangle((0, 0), 1, 1, color=COLOURS[k]) for k in ("plain", "init")]
    ax.legend(handles, ["without --init", "with --init (tini as PID 1)"], loc="lower right",
              fontsize=NOTE_PT, frameon=False)
    return fig
