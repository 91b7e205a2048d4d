"""``edu stats``: Docker's ``docker stats`` table (or JSON lines), from each container's cgroup.

Parsing and printing only: the numbers are ``edu_runtime.stats``'s, which a notebook calls too.
Sizes are printed as Docker's CLI prints them (go-units): memory in binary units with four
significant digits (``1.953MiB / 7.775GiB``), network and block I/O in decimal units with
three (``1.05kB / 0B``).
"""

from __future__ import annotations

import json
import sys

HEADER = ("CONTAINER ID", "NAME", "CPU %", "MEM USAGE / LIMIT", "MEM %", "NET I/O",
          "BLOCK I/O", "PIDS")


def _g(value: float, digits: int) -> str:
    text = f"{value:.{digits}g}"
    return text if "e" not in text else f"{value:.0f}"


def bytes_size(size: float) -> str:
    """go-units BytesSize: binary units, 4 significant digits (``64MiB``, ``1.953MiB``)."""
    units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"]
    i = 0
    while size >= 1024 and i < len(units) - 1:
        size /= 1024
        i += 1
    return _g(size, 4) + units[i]


def human_size(size: float) -> str:
    """go-units HumanSizeWithPrecision(size, 3): decimal units (``1.05kB``, ``0B``)."""
    units = ["B", "kB", "MB", "GB", "TB", "PB"]
    i = 0
    while size >= 1000 and i < len(units) - 1:
        size /= 1000
        i += 1
    return _g(size, 3) + units[i]


def row(s) -> dict[str, str]:
    """A sample as Docker's ``--format '{{json .}}'`` fields."""
    return {"BlockIO": f"{human_size(s.block_read)} / {human_size(s.block_write)}",
            "CPUPerc": f"{s.cpu_percent:.2f}%", "Container": s.name, "ID": s.id[:12],
            "MemPerc": f"{s.memory_percent:.2f}%",
            "MemUsage": f"{bytes_size(s.memory)} / {bytes_size(s.memory_limit)}",
            "Name": s.name, "NetIO": f"{human_size(s.net_rx)} / {human_size(s.net_tx)}",
            "PIDs": str(s.pids)}


def table(samples) -> str:
    """The ``docker stats`` table, columns three spaces apart, as Docker's tabwriter."""
    rows = [HEADER] + [(r["ID"], r["Name"], r["CPUPerc"], r["MemUsage"], r["MemPerc"],
                        r["NetIO"], r["BlockIO"], r["PIDs"])
                       for r in map(row, samples)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADER))]
    lines = ("   ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows)
    return "\n".join(line.rstrip() for line in lines)


def _render(samples, fmt: str | None) -> str:
    if fmt in ("json", "{{json .}}"):
        return "\n".join(json.dumps(row(s), sort_keys=True) for s in samples)
    return table(samples)


def stats_cmd(args) -> int:
    """``edu stats [--no-stream] [-a] [--format json] [CONTAINER...]``."""
    from edu_runtime import stats
    from edu_runtime.life import states

    if args.format not in (None, "table", "json", "{{json .}}"):
        print(f"Error: unsupported --format {args.format!r}: use json (or '{{{{json .}}}}'), "
              "or leave it out for the table", file=sys.stderr)
        return 125
    fmt = None if args.format == "table" else args.format
    try:
        stats.records(args.containers)  # an unknown name fails before anything is printed
        if args.no_stream:
            print(_render(stats.samples(args.containers, all=args.all), fmt))
            return 0
        while True:  # Docker redraws the screen about every second until Ctrl-C
            out = _render(stats.samples(args.containers, interval=1.0, all=args.all), fmt)
            sys.stdout.write("\033[2J\033[H" + out + "\n")  # clear, home, table
            sys.stdout.flush()
    except states.NoSuchContainer as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1


def register(sub) -> None:
    """Add ``stats`` to the parser."""
    p = sub.add_parser("stats", help="live CPU, memory and pids of containers, from their "
                                     "cgroups")
    p.add_argument("-a", "--all", action="store_true",
                   help="show all containers (default shows just running)")
    p.add_argument("--no-stream", action="store_true",
                   help="print one table and exit (Docker's --no-stream)")
    p.add_argument("--format", default=None,
                   help="json (or '{{json .}}'): one JSON object per container")
    p.add_argument("containers", nargs="*", metavar="CONTAINER")
    p.set_defaults(func=stats_cmd)
