"""Scale-out, measured: a bounded burst of requests at a front, and the figure it makes.

``burst(port, 96)`` sends 96 GET requests to ``127.0.0.1:port``, a few at a time (8 clients,
each with its own keep-alive connection, as browsers keep theirs), and counts what came
back: the status codes, which replica answered each (the app says so in its JSON body,
``{"replica": ...}``), and how many requests a second went through. It only ever talks to
the loopback address, and never sends more than ``MAX_REQUESTS``: a lesson measures its own
containers, not someone's server.

``scale_figure(runs)`` draws a lesson's runs at 1, 2 and 4 replicas for a projector: how many
requests each replica served (the front's round robin gives each the same share), and the
throughput against the number of replicas, with the ratio at 4 replicas written on it.

Introduced in notebooks/02-why-containers.
"""

from __future__ import annotations

import http.client
import json
import os
import threading
import time
from collections import Counter
from typing import Any

HOST = "127.0.0.1"  # never anything else: see the module's docstring
MAX_REQUESTS = 2000
MAX_CLIENTS = 32


def burst(port: int, requests: int, *, clients: int = 8, path: str = "/",
          timeout: float = 10.0) -> dict[str, Any]:
    """``requests`` GETs of ``path`` at 127.0.0.1:``port`` from ``clients`` at a time;
    ``{"requests", "clients", "path", "seconds", "per_second", "codes", "replicas",
    "errors", "visits", "slowest_ms"}`` (``replicas``: who answered how many, from each
    answer's JSON; ``visits``: the highest count an answer gave)."""
    if not 0 < requests <= MAX_REQUESTS:
        raise ValueError(f"a burst is 1 to {MAX_REQUESTS} requests, not {requests}")
    if not 0 < clients <= MAX_CLIENTS:
        raise ValueError(f"a burst has 1 to {MAX_CLIENTS} clients, not {clients}")
    codes: Counter[str] = Counter()
    replicas: Counter[str] = Counter()
    lock = threading.Lock()
    state = {"left": requests, "errors": 0, "visits": 0, "slowest": 0.0}
    problems: list[str] = []

    def client() -> None:
        conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
        try:
            while True:
                with lock:
                    if state["left"] <= 0:
                        return
                    state["left"] -= 1
                began = time.perf_counter()
                try:
                    conn.request("GET", path)
                    reply = conn.getresponse()
                    body = reply.read()
                except (OSError, http.client.HTTPException) as exc:
                    conn.close()  # a new connection for the next request
                    with lock:
                        state["errors"] += 1
                        problems.append(f"{type(exc).__name__}: {exc}")
                    continue
                took = time.perf_counter() - began
                try:
                    answer = json.loads(body)
                except ValueError:  # the front's own error page, not the app's JSON
                    answer = {}
                with lock:
                    codes[str(reply.status)] += 1
                    state["slowest"] = max(state["slowest"], took)
                    if reply.status == 200 and isinstance(answer, dict):
                        replicas[str(answer.get("replica", "?"))] += 1
                        state["visits"] = max(state["visits"], int(answer.get("visits", 0)))
        finally:
            conn.close()

    threads = [threading.Thread(target=client, name=f"burst-{i}") for i in range(clients)]
    began = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - began
    served = sum(codes.values())
    return {"requests": requests, "clients": clients, "path": path,
            "seconds": round(seconds, 4), "per_second": round(served / seconds, 1),
            "codes": dict(sorted(codes.items())), "replicas": dict(sorted(replicas.items())),
            "errors": state["errors"], "problems": problems[:3], "visits": state["visits"],
            "slowest_ms": round(state["slowest"] * 1e3, 1)}


def said(run: dict[str, Any]) -> str:
    """One line for a burst: ``96 requests, 8 at a time: 165 req/s; app-1 48, app-2 48``."""
    shares = ", ".join(f"{name} {n}" for name, n in run["replicas"].items()) or "no replica"
    codes = ", ".join(f"{n}× {code}" for code, n in run["codes"].items())
    failed = f"; {run['errors']} failed to connect" if run["errors"] else ""
    return (f"{run['requests']} requests, {run['clients']} at a time: "
            f"{run['per_second']:6.0f} req/s ({codes}{failed}); {shares}")


# ---- the figure -------------------------------------------------------------------------------

#: One colour per replica, the same in every group of bars.
REPLICA_COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2"]
LINE_COLOURS = {"wait": "#1f77b4", "fast": "#7f7f7f"}


def ratio(runs: list[dict[str, Any]]) -> float:
    """Throughput at the most replicas over throughput at the fewest."""
    ordered = sorted(runs, key=lambda r: r["replicas_started"])
    return ordered[-1]["per_second"] / ordered[0]["per_second"]


def scale_figure(runs: dict[str, list[dict[str, Any]]], labels: dict[str, str],
                 banner: str = "", shares_of: str = "wait"):
    """Left: the requests each replica served, at each number of replicas (from the runs of
    ``shares_of``). Right: requests a second against the number of replicas, one line per
    kind of run (``labels`` names them), each with its ratio at the most replicas. Each run
    is a ``burst()`` result with ``replicas_started``. The subtitle is ``banner`` (a replay
    says so there), else "measured live on this machine". Returns the figure."""
    import matplotlib.pyplot as plt
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from .figures import LABEL_PT, NOTE_PT, SIZE, SUBTITLE_PT, TICK_PT, TITLE_PT

    fig = plt.figure(figsize=SIZE, layout="constrained")
    plt.close(fig)  # shown once, as the cell's value (see figures.py)
    FigureCanvasAgg(fig)
    main = sorted(runs[shares_of], key=lambda r: r["replicas_started"])
    most = main[-1]["replicas_started"]
    fig.suptitle(f"{most} replicas: ×{ratio(main):.1f} the throughput of 1, for "
                 f"{labels.get(shares_of, shares_of)}", fontsize=TITLE_PT, fontweight="bold")
    cores = os.cpu_count() or 1
    body = fig.subfigures(1, 1)
    body.suptitle(banner or f"measured live on this machine ({cores} CPU cores): one front, "
                  "N replicas, one database", fontsize=SUBTITLE_PT, color="#4a4e69")
    left, right = body.subplots(1, 2)

    # Left: each replica's share, grouped by N.
    names = sorted({name for r in main for name in r["replicas"]})
    width = 0.8 / max(1, most)
    for g, run in enumerate(main):
        for i, name in enumerate(sorted(run["replicas"])):
            x = g + (i - (len(run["replicas"]) - 1) / 2) * width
            n = run["replicas"][name]
            left.bar(x, n, width * 0.9, color=REPLICA_COLOURS[names.index(name) %
                                                              len(REPLICA_COLOURS)])
            left.text(x, n, str(n), ha="center", va="bottom", fontsize=NOTE_PT)
    left.set_xticks(range(len(main)), [str(r["replicas_started"]) for r in main],
                    fontsize=TICK_PT)
    left.tick_params(axis="y", labelsize=TICK_PT)
    left.set_xlabel("replicas behind the front", fontsize=LABEL_PT)
    left.set_ylabel(f"requests served (of {main[0]['requests']})", fontsize=LABEL_PT)
    left.set_title("each replica's share: round robin", fontsize=LABEL_PT)
    left.set_ylim(0, max(max(r["replicas"].values(), default=0) for r in main) * 1.15 + 1)
    handles = [plt.Rectangle((0, 0), 1, 1, color=REPLICA_COLOURS[i % len(REPLICA_COLOURS)])
               for i in range(len(names))]
    left.legend(handles, names, fontsize=NOTE_PT, frameon=False, loc="upper right")

    # Right: throughput against N, with its ratio.
    for kind in sorted(runs, key=lambda k: (k != shares_of, k)):  # the main line first
        ordered = sorted(runs[kind], key=lambda r: r["replicas_started"])
        xs = [r["replicas_started"] for r in ordered]
        ys = [r["per_second"] for r in ordered]
        colour = LINE_COLOURS.get(kind, "#d62728")
        right.plot(xs, ys, marker="o", markersize=9, linewidth=3, color=colour,
                   label=f"{labels.get(kind, kind)}: ×{ratio(ordered):.1f}")
        for x, y in zip(xs, ys, strict=True):
            right.annotate(f"{y:.0f}", (x, y), textcoords="offset points", xytext=(0, 10),
                           ha="center", fontsize=NOTE_PT, color=colour)
    right.set_xscale("log", base=2)
    ns = sorted({r["replicas_started"] for rs in runs.values() for r in rs})
    right.set_xticks(ns, [str(n) for n in ns], fontsize=TICK_PT)
    right.minorticks_off()
    right.set_yscale("log")
    low = min(r["per_second"] for rs in runs.values() for r in rs)
    high = max(r["per_second"] for rs in runs.values() for r in rs)
    right.set_ylim(low / 2, high * 3)
    right.tick_params(axis="y", labelsize=TICK_PT)
    right.set_xlabel("replicas behind the front", fontsize=LABEL_PT)
    right.set_ylabel("throughput (requests/s, log scale)", fontsize=LABEL_PT)
    right.set_title(f"throughput, and its ratio at {most} replicas", fontsize=LABEL_PT)
    right.legend(fontsize=NOTE_PT, frameon=False, loc="upper left")
    for ax in (left, right):
        ax.spines[["top", "right"]].set_visible(False)
        ax.grid(axis="y", alpha=0.3)
    return fig


def visit(port: int, path: str = "/", timeout: float = 5.0) -> dict[str, Any]:
    """One GET of ``path`` at 127.0.0.1:``port``: ``{"status", "answer", "ms", "error"}``
    (``status`` None when nothing answered: ``error`` says why; ``answer`` is the JSON
    body, or its text)."""
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    began = time.perf_counter()
    try:
        conn.request("GET", path)
        reply = conn.getresponse()
        body = reply.read().decode(errors="replace")
    except (OSError, http.client.HTTPException) as exc:
        return {"status": None, "answer": None, "ms": (time.perf_counter() - began) * 1e3,
                "error": f"{type(exc).__name__}: {exc}"}
    finally:
        conn.close()
    try:
        answer: Any = json.loads(body)
    except ValueError:
        answer = body.strip()
    return {"status": reply.status, "answer": answer,
            "ms": round((time.perf_counter() - began) * 1e3, 1), "error": ""}
