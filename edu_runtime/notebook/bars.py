"""Bar figures for a projector, where the point is a ratio: the number that matters is written
on the figure in bold, and a replayed value says so in the subtitle.

- ``engine_memory(docker, edu)``: lesson 03's memory of an engine's own processes while one
  container runs: Docker's dockerd, containerd and the container's shim, stacked, against
  edu's supervisor (PSS, which splits shared pages fairly between their users);
- ``rebuild_times(result)``: lesson 05's rebuild after a code change, a Dockerfile with the
  dependencies installed before the code is copied against one that copies the code first:
  each rebuild a dot, the median a bar;
- ``build_times(result)``: lesson 09's builds of one app: from nothing, after a code change,
  after a change to its dependencies; each build a dot, the median a bar, how many times
  faster the code change rebuilt than the first build in the title.

Both draw from plain data (a lesson's part value, live or replayed), and import matplotlib
only when drawing, so a replay draws them on a machine without the engine.

Introduced in notebooks/03-installing.
"""

from __future__ import annotations

import statistics
from typing import Any

from .figures import LABEL_PT, NOTE_PT, SIZE, SUBTITLE_PT, TICK_PT, TITLE_PT

#: Colours: edu as in lesson 01's figures (the container's blue), Docker grey as a peer.
EDU, DOCKER = "#1f77b4", "#7f7f7f"
SHADES = ("#4d4d4d", "#7f7f7f", "#b3b3b3", "#d9d9d9")
#: A segment narrower than this share of the longest bar is too narrow for its label.
INSIDE = 0.14


def _figure(title: str, banner: str):
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=SIZE, layout="constrained")
    plt.close(fig)  # shown once, as the cell's value (see figures.py)
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    fig.suptitle(title, fontsize=TITLE_PT, fontweight="bold")
    body = fig.subfigures(1, 1)
    body.suptitle(banner, fontsize=SUBTITLE_PT, color="#4a4e69")
    return fig, body.subplots()


def times(ratio: float) -> str:
    """A ratio as the title writes it: ×7.6, but ×74 (a tenth means nothing there)."""
    return f"×{ratio:.0f}" if ratio >= 10 else f"×{ratio:.1f}"


def _mib(kib: float | None) -> float:
    return (kib or 0) / 1024


def engine_memory(docker: dict[str, Any], edu: dict[str, Any]):
    """Two bars of PSS in MiB: Docker's processes stacked (``docker["parts"]``: name ->
    KiB), edu's supervisor (``edu["parts"]``); the ratio in the title."""
    # Largest first: a recording's JSON keeps its keys sorted, not in the order measured.
    d_parts = sorted(((n, _mib(v)) for n, v in docker["parts"].items() if v),
                     key=lambda p: -p[1])
    e_parts = sorted(((n, _mib(v)) for n, v in edu["parts"].items() if v), key=lambda p: -p[1])
    d_total, e_total = sum(v for _, v in d_parts), sum(v for _, v in e_parts)
    if not d_total or not e_total:
        raise ValueError("engine_memory(): a side has no memory measured (read as root)")
    ratio = d_total / e_total
    banners = [b for b in (docker.get("replay"), edu.get("replay")) if b]
    banner = ("; ".join(sorted(set(banners))) if banners else "measured live on this "
              "machine") + ": one `sleep` container running on each"
    fig, ax = _figure(f"Docker's processes use {times(ratio)} the memory of edu's", banner)
    for row, (parts, colours) in enumerate(((d_parts, SHADES), (e_parts, (EDU,)))):
        left = 0.0
        for i, (name, mib) in enumerate(parts):
            colour = colours[i % len(colours)]
            ax.barh(row, mib, left=left, height=0.55, color=colour, edgecolor="white",
                    gid="docker" if colours is SHADES else "edu")
            if mib >= INSIDE * max(d_total, e_total):  # a label fits inside its segment
                ax.text(left + mib / 2, row, f"{name}\n{mib:.0f} MiB", ha="center",
                        va="center", fontsize=NOTE_PT,
                        color="white" if colour in (EDU, "#4d4d4d", "#7f7f7f") else "black")
            left += mib
        ax.text(left + 0.01 * max(d_total, e_total), row, f"{left:.0f} MiB", ha="left",
                va="center", fontsize=NOTE_PT, fontweight="bold")
    # A bar of one part is named by its tick label; a small part of a stack, down here.
    small = [f"{n} {v:.1f} MiB" for parts in (d_parts, e_parts) if len(parts) > 1
             for n, v in parts if v < INSIDE * max(d_total, e_total)]
    if small:
        ax.text(0.99, 0.02, "too small to label: " + ", ".join(small), ha="right",
                va="bottom", transform=ax.transAxes, fontsize=NOTE_PT, color="#4a4e69")
    ax.set_yticks([0, 1], ["Docker\n(dockerd, containerd,\nshim)", "edu\n(supervisor)"],
                  fontsize=TICK_PT)
    ax.set_ylim(1.6, -0.6)
    ax.set_xlim(0, max(d_total, e_total) * 1.15)
    ax.tick_params(axis="x", labelsize=TICK_PT)
    ax.set_xlabel("memory of the engine's own processes, PSS (MiB)", fontsize=LABEL_PT)
    ax.set_ylabel("engine", fontsize=LABEL_PT)
    ax.spines[["top", "right"]].set_visible(False)
    ax.grid(axis="x", alpha=0.3)
    return fig


def rebuild_times(result: dict[str, Any]):
    """Rebuild time after a code change, per Dockerfile order (``result["orders"]``: a list
    of ``{"label", "seconds": [...]}``, the good order first; a list, so a recording keeps
    the order): each rebuild a dot, the median a bar, the ratio of the medians in the
    title."""
    orders = [(o["label"], o["seconds"]) for o in result["orders"]]
    medians = [statistics.median(runs) for _, runs in orders]
    return _median_bars(
        result, orders, (EDU, "#d62728"), "order",
        f"Code copied first: {times(medians[1] / medians[0])} longer to rebuild after a code "
        "change", "rebuilds each, one file changed",
        "edu build, after editing app.py (s)", "the Dockerfile's order")


def build_times(result: dict[str, Any]):
    """Builds of one app (``result["builds"]``: a list of ``{"label", "seconds": [...]}``:
    the first build, then one after a code change, then any others): each build a dot, the
    median a bar, the first's median over the code change's in the title."""
    builds = [(b["label"], b["seconds"]) for b in result["builds"]]
    medians = [statistics.median(runs) for _, runs in builds]
    return _median_bars(
        result, builds, ("#7f7f7f", EDU, "#d62728", "#9467bd"), "build",
        f"A code change rebuilds {times(medians[0] / medians[1])} faster than the first build",
        "builds each", "edu build, start to tag (s)", "the build")


def _median_bars(result: dict[str, Any], series: list[tuple[str, list[float]]],
                 colours: tuple[str, ...], gid: str, title: str, counted: str, ylabel: str,
                 xlabel: str):
    """Each run a dot, each series' median a labelled bar, the banner in the subtitle."""
    banner = result.get("replay") or "measured live on this machine"
    n = min(len(runs) for _, runs in series)
    fig, ax = _figure(title, f"{banner}: median of {n} {counted}")
    top = max(max(runs) for _, runs in series)
    for i, (_, runs) in enumerate(series):
        med = statistics.median(runs)
        ax.bar(i, med, width=0.55, color=colours[i % len(colours)], alpha=0.85,
               gid=f"{gid}-{i}")
        ax.scatter([i] * len(runs), runs, color="black", zorder=3, s=36)
        ax.text(i, max(max(runs), med) + 0.04 * top, f"median {med:.2f} s", ha="center",
                va="bottom", fontsize=NOTE_PT, fontweight="bold")
    ax.set_xticks(range(len(series)), [label for label, _ in series], fontsize=TICK_PT)
    ax.set_ylim(0, top * 1.18)
    ax.tick_params(axis="y", labelsize=TICK_PT)
    ax.set_ylabel(ylabel, fontsize=LABEL_PT)
    ax.set_xlabel(xlabel, fontsize=LABEL_PT)
    ax.spines[["top", "right"]].set_visible(False)
    ax.grid(axis="y", alpha=0.3)
    return fig
