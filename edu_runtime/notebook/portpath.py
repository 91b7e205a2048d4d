"""What is behind ``-p 8080:80``, drawn for a projector from what lesson 08 read off the host:
one request from the notebook to the container, hop by hop, each box a kernel object with
the name and number the kernel gave it (the nft rule, the bridge, the veth pair's ends and
their ifindexes, the two network namespaces), and under it the conntrack entry that
remembers the rewrite, both directions. It draws plain data (lesson 08's "behind" part,
live or replayed), so a replay draws it on a machine without the engine; a replayed value
says so in the subtitle.

Introduced in notebooks/08-web-app.
"""

from __future__ import annotations

from typing import Any

from .figures import LABEL_PT, NOTE_PT, SIZE, SUBTITLE_PT, TITLE_PT

HOST, NFT, BRIDGE, CONTAINER = "#e8eef7", "#fde8d7", "#e6f2e6", "#dcebf7"


def port_path(behind: dict[str, Any], port: int, banner: str = ""):
    """The request's path as five boxes, left to right (the notebook, nft's DNAT rule, the
    bridge, the veth pair, the container), and the conntrack entry beneath them. ``behind``
    holds what lesson 08 read: ``entry`` (conntrack's two directions), ``dnat``, ``bridge``,
    ``gateway``, ``veth`` (host end, ifindex and iflink of both ends), ``ip`` and
    ``netns``. Returns the figure."""
    import matplotlib.pyplot as plt
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    fig = plt.figure(figsize=SIZE, layout="constrained")
    plt.close(fig)  # shown once, as the cell's value (see figures.py)
    FigureCanvasAgg(fig)
    fig.suptitle(f"Behind -p {port}:80: one request, four kernel objects",
                 fontsize=TITLE_PT, fontweight="bold")
    body = fig.subfigures(1, 1)
    body.suptitle(banner or "read live off this machine", fontsize=SUBTITLE_PT,
                  color="#4a4e69")
    ax = body.subplots()
    ax.set_xlim(0, 100)
    ax.set_ylim(0, 100)
    ax.axis("off")

    veth, entry, ns = behind["veth"], behind["entry"], behind["netns"]
    original = entry["original"].split(" -> ")
    boxes = [
        (HOST, "the notebook", f"host netns\n{_ns(ns, 'host')}\nconnects to\n{original[1]}"),
        (NFT, "nft: DNAT", f"table ip edu\ndaddr {original[1].split(':')[0]}\n"
                           f"dport {port}\nto {behind['ip']}:80"),
        (BRIDGE, "the bridge", f"{behind['bridge']}\n{behind['gateway']}\n"
                               f"(the containers'\ngateway)"),
        (BRIDGE, "the veth pair", f"{veth['host']}\nifindex {veth['ifindex']}\n"
                                  f"⇅\neth0, ifindex {veth['eth0_ifindex']}"),
        (CONTAINER, "the container", f"its own netns\n{_ns(ns, 'container')}\n"
                                     f"apache on\n{behind['ip']}:80"),
    ]
    width, gap, top, height = 17.0, 3.0, 86.0, 48.0
    for i, (colour, title, text) in enumerate(boxes):
        x = 1 + i * (width + gap)
        ax.add_patch(FancyBboxPatch((x, top - height), width, height,
                                    boxstyle="round,pad=0.4,rounding_size=1.5",
                                    facecolor=colour, edgecolor="#33415c", linewidth=1.5))
        ax.text(x + width / 2, top - 5, title, ha="center", va="center",
                fontsize=LABEL_PT, fontweight="bold")
        ax.text(x + width / 2, top - height / 2 - 3, text, ha="center", va="center",
                fontsize=NOTE_PT, family="monospace", linespacing=1.5)
        if i:
            ax.add_patch(FancyArrowPatch((x - gap + 0.3, top - height / 2),
                                         (x - 0.3, top - height / 2), arrowstyle="-|>",
                                         mutation_scale=22, color="#33415c", linewidth=2))
    ax.text(50, 26, "conntrack remembers the rewrite, so the answer finds its way back:",
            ha="center", va="center", fontsize=LABEL_PT)
    ax.text(50, 16, f"sent      {entry['original']}\nanswered  {entry['reply']}",
            ha="center", va="center", fontsize=LABEL_PT, family="monospace",
            multialignment="left", linespacing=1.6,
            bbox={"boxstyle": "round,pad=0.6", "facecolor": NFT, "edgecolor": "#33415c"})
    source = entry["reply"].split(" -> ")[1].split(":")[0]
    ax.text(50, 3, f"apache sees the request come from {source}" + (
        ", the bridge: edu masquerades 127.0.0.1, which could not come back" if
        entry.get("snat") else "") + f".\nIts answer is turned back into {original[1]} "
        "on the way out.", ha="center", va="center", fontsize=NOTE_PT, color="#4a4e69")
    return fig


def _ns(netns: dict[str, str], which: str) -> str:
    """The namespace inode of the host (the notebook's) or the container's, as
    ``net:[4026531833]``: lesson 08 keys them by who they belong to."""
    for who, inode in netns.items():
        if ("host" in who) == (which == "host"):
            return inode
    return "?"
