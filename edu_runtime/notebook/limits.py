"""Lesson 10's figure: a CPU quota biting, drawn from the cgroup's own counters over time.

``throttle_figure(rows, cpus)`` takes the rows of ``edu_runtime.stats.series`` (as dicts) for a
busy container run with ``--cpus``, and draws, for a projector: left, its CPU % over time
against the quota; right, how many CFS periods the kernel throttled it in, and for how long
(cpu.stat ``nr_throttled`` and ``throttled_time``/``throttled_usec``). The title writes the
number that matters: the share of one core it got, against what it asked for.

Introduced in notebooks/10-limits-and-security.
"""

from __future__ import annotations

from typing import Any


def got(rows: list[dict[str, Any]]) -> float:
    """The mean CPU % over the rows (100 = one core)."""
    return sum(r["cpu_percent"] for r in rows) / len(rows) if rows else 0.0


def throttle_figure(rows: list[dict[str, Any]], cpus: float, free: list[dict[str, Any]] = (),
                    banner: str = ""):
    """CPU % over time (and, if given, a container without a limit beside it, ``free``) and
    the throttling counters; ``banner`` is the subtitle (a replay says so there)."""
    import matplotlib.pyplot as plt
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from .figures import LABEL_PT, NOTE_PT, SIZE, SUBTITLE_PT, TICK_PT, TITLE_PT

    fig = plt.figure(figsize=SIZE, layout="constrained")
    plt.close(fig)  # shown once, as the cell's value (see figures.py)
    FigureCanvasAgg(fig)
    quota = cpus * 100
    fig.suptitle(f"--cpus {cpus:g}: it got {got(rows):.0f} % of one core "
                 f"(×{got(rows) / quota:.2f} its quota)", fontsize=TITLE_PT, fontweight="bold")
    body = fig.subfigures(1, 1)
    body.suptitle(banner or "measured live on this machine: a busy loop, read from its cgroup "
                  "every 0.25 s", fontsize=SUBTITLE_PT, color="#4a4e69")
    left, right = body.subplots(1, 2)
    ts = [r["t"] for r in rows]
    left.plot(ts, [r["cpu_percent"] for r in rows], marker="o", linewidth=3, color="#d62728",
              label=f"--cpus {cpus:g}")
    if free:
        left.plot([r["t"] for r in free], [r["cpu_percent"] for r in free], marker="o",
                  linewidth=3, color="#1f77b4", label="no limit")
    left.axhline(quota, linestyle="--", color="#555555", linewidth=2,
                 label=f"quota: {quota:.0f} %")
    left.set_ylim(0, 130)
    left.set_xlabel("seconds", fontsize=LABEL_PT)
    left.set_ylabel("CPU % (100 = one core)", fontsize=LABEL_PT)
    left.set_title("CPU %, as edu stats shows it", fontsize=LABEL_PT)
    left.legend(fontsize=NOTE_PT, frameon=False, loc="upper right")
    periods = [r["throttled_periods"] for r in rows]
    ms = [r["throttled_ns"] / 1e6 for r in rows]
    right.plot(ts, ms, marker="o", linewidth=3, color="#9467bd")
    if rows:
        right.text(0.04, 0.96, f"{periods[-1]} periods throttled,\n{ms[-1]:.0f} ms in all",
                   transform=right.transAxes, ha="left", va="top", fontsize=NOTE_PT,
                   color="#9467bd")
    right.set_ylim(0, max(ms, default=1) * 1.25 + 1)
    right.set_xlabel("seconds", fontsize=LABEL_PT)
    right.set_ylabel("throttled time so far (ms)", fontsize=LABEL_PT)
    right.set_title("cpu.stat: time held back", fontsize=LABEL_PT)
    for ax in (left, right):
        ax.tick_params(labelsize=TICK_PT)
        ax.spines[["top", "right"]].set_visible(False)
        ax.grid(axis="y", alpha=0.3)
    return fig
