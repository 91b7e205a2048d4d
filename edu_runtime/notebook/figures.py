"""Figures for a projector, drawn from a lesson's JSON data (live, or a recording's).

``waterfall(trace)`` draws a container's start as a waterfall: one bar per step, from when it
began to when it ended, in the stepper's colours (the host's side blue, the child's orange,
a failed step red), each bar's duration beside it, and the total in the title, because the
number that matters is "how long from fork to exec, and where did it go". The data is a
``Trace.to_dict()`` (schema ``edu.trace/1`` or ``/2``): a lesson's ``lesson.live("fast",
...)`` returns one, live or replayed. A replayed value carries the replay's banner
(``"replay"``), and the figure says so in its subtitle: a figure from a recording never
passes for a live measurement.

Why the figure is closed in pyplot before it is returned: a lesson displays it as the
value of a cell (pyplot, imported here, sets up Jupyter's inline display of figures), and
pyplot would show it a second time at the cell's end. Only the stepper's colours are
imported from the notebook layer, and matplotlib only when a figure is drawn, so this works
in a replay on a Mac as well.

Introduced in notebooks/06-step-by-step.
"""

from __future__ import annotations

from typing import Any

from .stepper import COLOURS

SIZE = (12.8, 7.2)  # inches: 16:9
TITLE_PT, SUBTITLE_PT, LABEL_PT, TICK_PT, NOTE_PT = 22, 15, 15, 13, 13
#: Beyond this share of the axis a bar's label goes left of its bar, so it stays inside.
LABEL_FLIP = 0.72
#: A label needs about this share of the axis (its width at NOTE_PT) before a bar's start.
LABEL_ROOM = 0.12


def _plt():
    import matplotlib.pyplot as plt

    return plt


def duration(ms: float) -> str:
    """A step's duration as the figure writes it: 126 ms, 8.5 ms, 0.21 ms, 1.2 s."""
    if ms >= 1000:
        return f"{ms / 1000:.1f} s"
    if ms >= 100:
        return f"{ms:.0f} ms"
    return f"{ms:.1f} ms" if ms >= 1 else f"{ms:.2f} ms"


def _command(trace: dict[str, Any]) -> str:
    words = [w if w and " " not in w and "'" not in w else "'" + w.replace("'", "'\\''") + "'"
             for w in trace.get("command") or []]
    return " ".join(words)


def waterfall(trace: dict[str, Any], title: str = "A container's start, step by step"):
    """One bar per step of ``trace`` (a ``Trace.to_dict()``), from its start to its end,
    coloured by side; the total from the first step to exec in the title, the replay
    banner (``trace["replay"]``) or "measured live" in the subtitle. Returns the figure."""
    steps = [s for s in trace.get("steps") or [] if s.get("end", 0) >= s.get("start", 0)]
    if not steps:
        raise ValueError("waterfall(): the trace has no steps (did the container start?)")
    t0 = min(s["start"] for s in steps)
    spans = [((s["start"] - t0) * 1e3, (s["end"] - s["start"]) * 1e3) for s in steps]
    total = max(a + d for a, d in spans)
    sides = {"host": 0.0, "child": 0.0}
    for s, (_, ms) in zip(steps, spans, strict=True):
        sides[s["side"]] = sides.get(s["side"], 0.0) + ms

    plt = _plt()
    n = len(steps)
    fig = plt.figure(figsize=(SIZE[0], max(SIZE[1], 2.0 + 0.28 * n)), layout="constrained")
    # Shown once, as the cell's value, not again by pyplot at the cell's end; closing it
    # leaves a bare canvas, so it gets Agg's back (to draw, to save, to be displayed).
    plt.close(fig)
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    last = steps[-1]
    ended = last["name"] + (", which failed" if last.get("error") else "")
    fig.suptitle(f"{title}: {duration(total)} from {steps[0]['name']} to {ended}",
                 fontsize=TITLE_PT, fontweight="bold")
    body = fig.subfigures(1, 1)
    what = f"{trace.get('image', '?')} {_command(trace)}".strip()
    banner = trace.get("replay") or f"measured live on this machine: {what}"
    body.suptitle(banner, fontsize=SUBTITLE_PT, color="#4a4e69")
    ax = body.subplots()
    right = total * 1.02 or 1.0
    for i, (s, (start, ms)) in enumerate(zip(steps, spans, strict=True)):
        kind = "failed" if s.get("error") else s["side"]
        colour = COLOURS.get(kind, "#777777")
        # A step of a few microseconds is still drawn: an edge one pixel wide.
        ax.barh(i, ms, left=start, height=0.62, color=colour, edgecolor=colour,
                linewidth=1, gid=kind)
        label = "failed" if s.get("error") else duration(ms)
        pad = right * 0.01
        if start + ms <= LABEL_FLIP * right:  # after the bar
            ax.text(start + ms + pad, i, label, ha="left", va="center", fontsize=NOTE_PT)
        elif start >= LABEL_ROOM * right:  # before it: this row is empty until it starts
            ax.text(start - pad, i, label, ha="right", va="center", fontsize=NOTE_PT)
        else:  # a long bar from near the start to near the end: inside it
            ax.text(start + ms - pad, i, label, ha="right", va="center", fontsize=NOTE_PT,
                    color="white", fontweight="bold")
    ax.set_yticks(range(n), [s["name"] for s in steps], fontsize=TICK_PT)
    ax.tick_params(axis="x", labelsize=TICK_PT)
    ax.set_ylim(n - 0.5, -0.5)  # the first step at the top, as they happen
    ax.set_xlim(0, right)
    ax.set_xlabel(f"time since {steps[0]['name']} began (ms)", fontsize=LABEL_PT)
    ax.set_ylabel("step, in order", fontsize=LABEL_PT)
    ax.spines[["top", "right"]].set_visible(False)
    ax.grid(axis="x", alpha=0.3)
    handles = [plt.Rectangle((0, 0), 1, 1, color=COLOURS[side])
               for side in ("host", "child") if side in {s["side"] for s in steps}]
    names = [f"{side} side: {duration(sides[side])} in all" for side in ("host", "child")
             if side in {s["side"] for s in steps}]
    ax.legend(handles, names, loc="lower left", fontsize=NOTE_PT, frameon=False)
    return fig


def png(fig, dpi: int = 100) -> bytes:
    """The figure as PNG bytes (to save it, or to display it where pyplot is not set up)."""
    import io

    out = io.BytesIO()
    fig.savefig(out, format="png", dpi=dpi)
    return out.getvalue()
