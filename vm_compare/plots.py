"""The figures of `edu compare`: what a student looks at instead of reading a table.

They are made for a projector at the back of a classroom: 16:9, large type, two colours that
mean the same thing in every figure (the container's and the VM's; peers and published
points are grey), the number that matters (a ratio) written on the figure in bold, and
whether the VM ran under KVM or TCG (QEMU's emulator, 10 to 50 times slower) said once, in
the subtitle, because it changes the story. A result a lesson replayed (it has a ``replay``
key) says so on the subtitle's second line: "replay of a real run on MACHINE, DATE". Every
figure is drawn from the result JSON alone (``compare.SCHEMA``, or an older one through
``compare.upgrade``), so a notebook can redraw a saved run; ``figures(result)`` gives them
without saving, for tests and notebooks (``png(figure)`` to show one).

Introduced in notebooks/01-containers-vs-vms.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from . import compare

#: The one place the colours are fixed; artists drawn in them carry the key as their gid.
COLORS = {"container": "#1f8a70", "vm": "#d1495b", "peer": "#8d99ae", "ref": "#4a4e69"}
#: The VM's stacked parts: its colour, lighter for each part further from the app.
VM_SHADES = (1.0, 0.8, 0.6, 0.42, 0.28)
SIZE = (12.8, 7.2)  # inches: 16:9, 1920x1080 at DPI
DPI = 150
STYLE = {"font.size": 14, "axes.titlesize": 16, "axes.labelsize": 15, "xtick.labelsize": 13,
         "ytick.labelsize": 13, "legend.fontsize": 13, "figure.titlesize": 22,
         "axes.spines.top": False, "axes.spines.right": False}
APP = "app (the image's files)"  # in both bars of the size figure: the same files
TITLE_PT, SUBTITLE_PT, RATIO_PT, NOTE_PT = 22, 15, 18, 13


def _plt():
    import matplotlib

    matplotlib.use("Agg")  # files, not windows: works in CI and over ssh
    import matplotlib.pyplot as plt

    return plt


def accel_note(result: dict[str, Any]) -> str:
    """The subtitle: which accelerator the VM used, and what that means."""
    accel = result["machine"].get("accel", "?")
    if accel == "kvm":
        return "VM under KVM (hardware virtualisation)"
    return "VM under TCG: QEMU emulates the CPU (no working KVM here), 10-50× slower than KVM"


def ratio_text(ratio: float, what: str) -> str:
    """``×220`` written the way the figures write a ratio, in a sentence."""
    digits = 0 if ratio >= 20 else 1
    return f"the VM {what.format(f'×{ratio:.{digits}f}')}"


def _figure(result: dict[str, Any], title: str):
    """A 16:9 figure with the title and the accelerator subtitle; (figure, body to draw in)."""
    plt = _plt()
    fig = plt.figure(figsize=SIZE, layout="constrained")
    fig.suptitle(title, fontsize=TITLE_PT, fontweight="bold")
    body = fig.subfigures(1, 1)
    body.suptitle(subtitle(result), fontsize=SUBTITLE_PT, color=COLORS["ref"])
    return fig, body


def subtitle(result: dict[str, Any]) -> str:
    """The accelerator note and, for a result a lesson replayed, its "replay of a real run
    on MACHINE, DATE" banner (``result["replay"]``) on a line of its own."""
    banner = result.get("replay")
    return accel_note(result) + (f"\n{banner}" if banner else "")


def png(fig, dpi: int = 100) -> bytes:
    """The figure as PNG bytes (closed after): for a notebook to show (1280x720 at 100 dpi)."""
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    _plt().close(fig)
    return buf.getvalue()


def _kind(name: str, kind: str | None = None) -> str:
    if kind in COLORS:
        return kind
    return "container" if "container" in name else "vm" if ("guest" in name or "VM" in name
                                                              or "qemu" in name) else "peer"


def _ms(x: float, _pos=None) -> str:
    if x >= 1000:
        return f"{x / 1000:g} s"
    return f"{x:g} ms"


def _duration(ms: float) -> str:
    if ms >= 1000:
        return f"{ms / 1000:.1f} s"
    return f"{ms:.0f} ms" if ms >= 10 else f"{ms:.1f} ms"


def _bytes(n: float) -> str:
    mib = n / 2**20
    if mib >= 1024:
        return f"{mib / 1024:.2f} GiB"
    return f"{mib:.0f} MiB" if mib >= 10 else f"{mib:.1f} MiB"


def _ratio(ax, text: str, row: float) -> None:
    """The ratio in bold, right-aligned in the axes, level with bar ``row`` (a free one)."""
    from matplotlib.transforms import blended_transform_factory

    ax.text(0.98, row, text, transform=blended_transform_factory(ax.transAxes, ax.transData),
            ha="right", va="center", fontsize=RATIO_PT, fontweight="bold", color=COLORS["vm"])


def _ratio_title(ax, text: str) -> None:
    """The ratio in bold as the title of a panel, where no data can run into it."""
    ax.set_title(text, fontsize=RATIO_PT, fontweight="bold", color=COLORS["vm"])


# ---- the figures -------------------------------------------------------------------------------

def startup_figure(result: dict[str, Any]):
    """Start-up to ready, log scale: each run a dot, the median a bar, the ratio written."""
    rows = result["startup"]
    order = sorted(rows, key=lambda n: ("container", "peer", "vm").index(
        _kind(n, rows[n].get("kind"))))
    fig, body = _figure(result, "Start-up: from the start call to \"ready\"")
    ax = body.subplots()
    top = max(max(rows[n]["runs_s"]) for n in order) * 1e3
    for i, name in enumerate(order):
        kind = _kind(name, rows[name].get("kind"))
        runs = [s * 1e3 for s in rows[name]["runs_s"]]
        median = rows[name]["median_s"] * 1e3
        ax.barh(i, median, color=COLORS[kind], alpha=0.55, gid=kind, height=0.7)
        ax.scatter(runs, [i] * len(runs), color=COLORS[kind], s=40, zorder=3, gid=kind)
        ax.text(max(runs) * 1.25, i, _duration(median), va="center", fontsize=NOTE_PT + 1)
    low = min(min(rows[n]["runs_s"]) for n in order) * 1e3
    ax.set_xscale("log")
    ax.set_xlim(10 ** math.floor(math.log10(low / 2)), top * 8)
    ax.xaxis.set_major_formatter(_ms)
    ax.set_yticks(range(len(order)), order)
    ax.invert_yaxis()
    ax.set_xlabel("time from the start call to the ready line (log scale: each step is ×10)")
    ax.set_ylabel("what started")
    ours = [n for n in order if rows[n].get("kind") == "container" or n == "edu container"]
    guests = [n for n in order if n.startswith("libvirt guest")]
    if ours and guests:
        r = rows[guests[0]]["median_s"] / rows[ours[0]]["median_s"]
        _ratio(ax, ratio_text(r, "took {} longer to be ready"), order.index(ours[0]))
    return fig


def sizes_figure(result: dict[str, Any]):
    """Bytes on disk, stacked in parts, one panel per image: the container's layers against
    the VM's kernel, guest OS and the same app, with the ratio on each panel."""
    groups = result["sizes"]["groups"]
    fig, body = _figure(result, "Size on disk: what each one has to carry")
    axes = body.subplots(len(groups), 1, squeeze=False)[:, 0]
    # The VM's own parts, in one order for every panel, each a lighter shade of its colour;
    # the app (the image's files) is drawn first in the container's colour, hatched: the
    # same files the container has, so the two bars start alike and the rest is the VM's.
    parts = []
    for g in groups:
        parts += [p for p in g["vm"] if p not in parts and p != APP]
    shade = {p: VM_SHADES[min(i, len(VM_SHADES) - 1)] for i, p in enumerate(parts)}
    handles = {}
    for ax, g in zip(axes, groups, strict=True):
        totals = []
        stacks = (("container", g["container"]),
                  ("vm", {APP: g["vm"].get(APP, 0),
                          **{p: v for p, v in g["vm"].items() if p != APP}}))
        for i, (side, stack) in enumerate(stacks):
            left = 0.0
            for part, size in stack.items():
                mib = size / 2**20
                mine = "container" if (side == "container" or part == APP) else "vm"
                handles[(side, part)] = ax.barh(
                    i, mib, left=left, color=COLORS[mine], gid=mine, height=0.62,
                    alpha=1.0 if mine == "container" else shade[part], edgecolor="white",
                    hatch="//" if side == "vm" and part == APP else None)
                left += mib
            totals.append(left)
            disk = (f" (a {_bytes(g['disk_virtual'])} disk)"
                    if side == "vm" and g.get("disk_virtual") else "")
            ax.text(left, i, "  " + _bytes(left * 2**20) + disk, va="center",
                    fontsize=NOTE_PT + 1, fontweight="bold" if side == "vm" else "normal")
        ax.set_yticks([0, 1], [f"container\n({g['image']} layers)",
                               f"VM\n({g['guest']} guest)"])
        ax.invert_yaxis()
        ax.set_xlim(0, max(totals) * 1.45)
        gz = ", the initramfs gzipped" if g["guest"] == "minimal" else ""
        ax.set_xlabel(f"{g['image']}: bytes on disk (MiB{gz})")
        _ratio(ax, ratio_text(totals[1] / max(totals[0], 1e-9), "carries {} the bytes"), 0)
    keys = [("container", "image layers"), ("vm", APP), *(("vm", p) for p in parts)]
    body.legend([handles[k] for k in keys if k in handles],
                [("container: " if k[0] == "container" else "VM: ") + k[1]
                 for k in keys if k in handles],
                loc="outside lower center", ncols=3, frameon=False)
    return fig


def memory_figure(result: dict[str, Any]):
    """Host memory of one idle container and one idle guest (PSS), published points grey."""
    mem = result["memory"]["pss_kib"]
    names = list(mem)
    values = [mem[n] / 1024 for n in names]
    kinds = [_kind(n) for n in names]
    for ref in result.get("references", []):
        if ref.get("metric") == "memory_mib":
            names.append(ref["label"].split(":")[0] + "\n(published)")
            values.append(ref["value"])
            kinds.append("peer")
    fig, body = _figure(result, "Memory on the host: one idle instance of each")
    ax = body.subplots()
    for i, (v, kind) in enumerate(zip(values, kinds, strict=True)):
        ax.barh(i, v, color=COLORS[kind], gid=kind, height=0.6)
        ax.text(v, i, f"  {v:.1f} MiB", va="center", fontsize=NOTE_PT + 1)
    ax.set_yticks(range(len(names)), names)
    ax.invert_yaxis()
    ax.set_xlim(0, max(values) * 1.25)
    ax.set_xlabel("host memory: PSS of all its processes (MiB)")
    ax.set_ylabel("one idle instance")
    container = [v for v, k in zip(values, kinds, strict=True) if k == "container"]
    vm = [v for v, k in zip(values, kinds, strict=True) if k == "vm"]
    if container and vm and container[0] > 0:
        _ratio(ax, ratio_text(vm[0] / container[0], "uses {} the memory"),
               kinds.index("container"))
    return fig


def scale_figure(result: dict[str, Any]):
    """Total start time and memory as instances are added, with why each series stopped."""
    from matplotlib.ticker import FixedLocator, NullLocator

    sc = result["scale"]
    fig, body = _figure(result, "Scaling out: start more and keep them all running")
    left, right = body.subplots(1, 2)
    counts = sorted({p["count"] for k in ("containers", "guests") for p in sc[k]})
    for key, kind, label in (("containers", "container", "containers"),
                             ("guests", "vm", "VMs")):
        series = sc[key]
        if not series:
            continue
        xs = [p["count"] for p in series]
        note = _scale_note(sc, key, xs)
        left.plot(xs, [p["start_s"] for p in series], "o-", color=COLORS[kind], lw=3, ms=10,
                  gid=kind, label=f"{label}: {note}")
        right.plot(xs, [p["pss_kib"] / 1024 for p in series], "o-", color=COLORS[kind], lw=3,
                   ms=10, gid=kind)
    for ax, ylabel in ((left, "time to start them all (s, log scale)"),
                       (right, "host memory of them all, PSS (MiB, log scale)")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.xaxis.set_major_locator(FixedLocator(counts))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.xaxis.set_major_formatter(lambda x, _pos: f"{x:.0f}")
        ax.set_xlim(counts[0] / 1.5, counts[-1] * 1.5)
        ax.yaxis.set_major_formatter(lambda y, _pos: f"{y:g}")
        ax.set_xlabel("how many at once (instances)")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="major", alpha=0.3)
    c, g = sc["containers"], sc["guests"]
    if c and g:
        per = {k: (s[-1]["start_s"] / s[-1]["count"], s[-1]["pss_kib"] / s[-1]["count"])
               for k, s in (("c", c), ("g", g))}
        _ratio_title(left, "each " + ratio_text(per["g"][0] / per["c"][0], "took {} longer")
                     .replace("the VM", "VM"))
        if per["c"][1] > 0:
            _ratio_title(right, "each " + ratio_text(per["g"][1] / per["c"][1],
                                                     "used {} the memory").replace("the VM", "VM"))
    body.legend(loc="outside lower center", ncols=1, frameon=False)
    return fig


def _scale_note(sc: dict[str, Any], key: str, reached: list[int]) -> str:
    """What a series ran and why it stopped, for its legend entry."""
    plan = sc.get("plan", {}).get(key, reached)
    why = (sc.get("stopped") or {}).get(key)
    text = ", ".join(str(n) for n in reached)
    if why:
        return f"{text}, then stopped: {why}"
    if sc.get("quick"):
        full = compare.SCALE_CONTAINERS if key == "containers" else compare.SCALE_GUESTS
        return f"{text} (a quick run; a full run goes to {max(full)})"
    return text if reached == plan else f"{text} (of {', '.join(map(str, plan))})"


def waterfall_figure(result: dict[str, Any]):
    """Where the time goes: the container's kernel steps beside the VM's boot phases."""
    rows = result["phases"]
    fig, body = _figure(result, "Where the start-up time goes")
    ax = body.subplots()
    labels, y, ends = [], 0, {}
    for who, phases in rows.items():
        kind = "container" if who == "container" else "vm"
        for phase in phases:
            ax.barh(y, max(phase["ms"], 0.01), left=phase["start_ms"], color=COLORS[kind],
                    gid=kind, height=0.7)
            labels.append(f"{'container' if kind == 'container' else 'VM'}: {phase['name']}")
            ends[kind] = max(ends.get(kind, 0.0), phase["start_ms"] + phase["ms"])
            y += 1
    size = max(8, min(13, int(420 / max(1, len(labels)))))
    ax.set_yticks(range(len(labels)), labels, fontsize=max(12, size))
    ax.invert_yaxis()
    ax.set_xscale("symlog", linthresh=1)
    ax.set_xlim(0, max(ends.values()) * 2)
    ax.xaxis.set_major_formatter(_ms)
    ax.set_xlabel("time since the start call (linear below 1 ms, then log scale)")
    ax.set_ylabel("kernel step or boot phase")
    if ends.get("container") and ends.get("vm"):
        _ratio_title(ax, ratio_text(ends["vm"] / ends["container"],
                                    "took {} longer than the container's steps"))
    return fig


#: file name -> (the result's key it needs, the function that draws it)
FIGURES = {"startup.png": ("startup", startup_figure), "sizes.png": ("sizes", sizes_figure),
           "memory.png": ("memory", memory_figure), "scale.png": ("scale", scale_figure),
           "waterfall.png": ("phases", waterfall_figure)}


def figures(result: dict[str, Any]) -> dict[str, Any]:
    """file name -> matplotlib Figure, for every figure the result has the data for."""
    plt = _plt()
    result = compare.upgrade(result)
    made = {}
    with plt.rc_context(STYLE):
        for name, (key, draw) in FIGURES.items():
            if result.get(key):
                made[name] = draw(result)
    return made


def all_figures(result: dict[str, Any], out: Path) -> list[Path]:
    """Every figure of a result that has the data for it, saved as PNGs under ``out``."""
    plt = _plt()
    out.mkdir(parents=True, exist_ok=True)
    saved = []
    for name, fig in figures(result).items():
        fig.savefig(out / name, dpi=DPI)
        plt.close(fig)
        saved.append(out / name)
    return saved
