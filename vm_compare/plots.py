"""The figures of `edu compare`: what a student looks at instead of reading a table.

Every figure is drawn from the result JSON alone (``compare.SCHEMA``), so a notebook can redraw
a saved run, and every figure says which accelerator the VM used (KVM or TCG, QEMU's
emulator, which is 10 to 50 times slower), because that changes the story.

Introduced in notebooks/01-containers-vs-vms.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

COLORS = {"container": "#2a9d8f", "vm": "#e76f51", "peer": "#8d99ae", "ref": "#264653"}


def _plt():
    import matplotlib

    matplotlib.use("Agg")  # files, not windows: works in CI and over ssh
    import matplotlib.pyplot as plt

    return plt


def _accel_note(result: dict[str, Any]) -> str:
    accel = result["machine"].get("accel", "?")
    return "VM under KVM" if accel == "kvm" else "VM under TCG (no KVM here: emulated, slow)"


def startup(result: dict[str, Any], out: Path) -> Path:
    """Start-up to ready, log scale, each run a dot, the median a bar."""
    plt = _plt()
    rows = result["startup"]
    names = list(rows)
    fig, ax = plt.subplots(figsize=(8, 0.6 * len(names) + 1.8))
    for i, name in enumerate(names):
        runs = [s * 1e3 for s in rows[name]["runs_s"]]
        kind = rows[name].get("kind", "peer")
        ax.barh(i, rows[name]["median_s"] * 1e3, color=COLORS.get(kind, COLORS["peer"]),
                alpha=0.5)
        ax.scatter(runs, [i] * len(runs), color=COLORS.get(kind, COLORS["peer"]), s=14,
                   zorder=3)
    for ref in result.get("references", []):
        if ref.get("metric") == "startup_ms":
            ax.axvline(ref["value"], color=COLORS["ref"], ls=":", lw=1)
            ax.annotate(ref["label"], (ref["value"], len(names) - 0.5), rotation=90,
                        fontsize=7, va="top", color=COLORS["ref"])
    ax.set_yticks(range(len(names)), names)
    ax.set_xscale("log")
    ax.set_xlabel("time from start to ready marker (ms, log scale)")
    ax.set_ylabel("what started")
    ax.set_title(f"Start-up to ready: container vs VM ({_accel_note(result)})")
    return _save(fig, out / "startup.png")


def sizes(result: dict[str, Any], out: Path) -> Path:
    """Stacked bytes on disk: kernel / guest OS / app for the VM, layers for the container."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4))
    bars = result["sizes"]["stacks"]
    names = list(bars)
    for i, name in enumerate(names):
        left = 0.0
        for part, size in bars[name].items():
            mib = size / 2**20
            ax.barh(i, mib, left=left, label=part)
            if mib > 0.05 * max(1.0, result["sizes"]["largest_mib"]):
                ax.text(left + mib / 2, i, part, ha="center", va="center", fontsize=7)
            left += mib
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("size (MiB)")
    ax.set_ylabel("what is stored")
    ax.set_title(f"What each one carries (image {result['image']})")
    return _save(fig, out / "sizes.png")


def memory(result: dict[str, Any], out: Path) -> Path:
    """Host memory of one idle container and one idle guest, measured the same way (PSS)."""
    plt = _plt()
    mem = result["memory"]
    names = list(mem["pss_kib"])
    fig, ax = plt.subplots(figsize=(7, 3))
    values = [mem["pss_kib"][n] / 1024 for n in names]
    ax.barh(names, values, color=[COLORS["container"] if "container" in n else COLORS["vm"]
                                  for n in names])
    for i, v in enumerate(values):
        ax.text(v, i, f" {v:.1f} MiB", va="center", fontsize=8)
    ax.set_xlabel("host memory, PSS of all its processes (MiB)")
    ax.set_ylabel("one idle instance")
    ax.set_title(f"Memory while idle ({_accel_note(result)})")
    return _save(fig, out / "memory.png")


def scale(result: dict[str, Any], out: Path) -> Path:
    """Start time and memory as the count grows."""
    plt = _plt()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    for kind, series in result["scale"].items():
        counts = [p["count"] for p in series]
        color = COLORS["container"] if kind == "containers" else COLORS["vm"]
        left.plot(counts, [p["start_s"] for p in series], "o-", color=color, label=kind)
        right.plot(counts, [p["pss_kib"] / 1024 for p in series], "o-", color=color,
                   label=kind)
    left.set_xlabel("how many at once")
    left.set_ylabel("time to start them all (s)")
    right.set_xlabel("how many at once")
    right.set_ylabel("host memory, PSS (MiB)")
    left.legend()
    fig.suptitle(f"Scaling out ({_accel_note(result)})")
    return _save(fig, out / "scale.png")


def waterfall(result: dict[str, Any], out: Path) -> Path:
    """Where the time goes: the VM's phases beside the container's steps."""
    plt = _plt()
    rows = result["phases"]
    fig, ax = plt.subplots(figsize=(9, 0.35 * sum(len(v) for v in rows.values()) + 1.5))
    y = 0
    labels = []
    for who, phases in rows.items():
        color = COLORS["container"] if who == "container" else COLORS["vm"]
        for phase in phases:
            ax.barh(y, phase["ms"], left=phase["start_ms"], color=color)
            labels.append(f"{who}: {phase['name']}")
            y += 1
    ax.set_yticks(range(len(labels)), labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xscale("symlog", linthresh=1)
    ax.set_xlim(left=0)
    ax.set_xlabel("ms since the start call (symmetric log scale)")
    ax.set_ylabel("step or phase")
    ax.set_title("Start-up waterfall: the container's kernel steps and the VM's boot phases")
    return _save(fig, out / "waterfall.png")


def all_figures(result: dict[str, Any], out: Path) -> list[Path]:
    """Every figure of a result that has the data for it."""
    made = []
    for name, draw in (("startup", startup), ("sizes", sizes), ("memory", memory),
                       ("scale", scale), ("phases", waterfall)):
        if result.get(name):
            made.append(draw(result, out))
    return made


#: file name -> [(title, x label, y label)] of each axes drawn: what tests and notebooks read
LABELS: dict[str, list[tuple[str, str, str]]] = {}


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    title = fig._suptitle.get_text() if fig._suptitle else ""
    LABELS[path.name] = [(ax.get_title() or title, ax.get_xlabel(), ax.get_ylabel())
                         for ax in fig.axes]
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _plt().close(fig)
    return path
