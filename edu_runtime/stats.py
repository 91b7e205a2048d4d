"""``docker stats``: a container's CPU, memory and pids, read from the files of its cgroup.

Docker's numbers are not measured by Docker: the kernel keeps counters in each cgroup, and
``docker stats`` reads them twice and subtracts. This module does the same, from the
cgroup of either version:

===============  =====================================  ======================================
what             cgroup v1                              cgroup v2
===============  =====================================  ======================================
CPU time         cpuacct.usage (ns)                     cpu.stat ``usage_usec``
throttling       cpu.stat ``nr_throttled``,             cpu.stat ``nr_throttled``,
                 ``throttled_time`` (ns)                ``throttled_usec``
memory in use    memory.usage_in_bytes minus            memory.current minus memory.stat
                 memory.stat ``total_inactive_file``    ``inactive_file``
memory limit     memory.limit_in_bytes                  memory.max (``max``: no limit)
processes        pids.current                           pids.current
block I/O        blkio.throttle.io_service_bytes        io.stat ``rbytes`` / ``wbytes``
===============  =====================================  ======================================

Choices, and why:

- Memory leaves out the page cache the kernel can drop at once (inactive files), as Docker's
  CLI does since 19.03: a container that read a big file is not "using" that memory.
- No limit shows the host's memory as the limit (``MemTotal``), as Docker does.
- CPU % is Docker's formula: the container's CPU time over the system's CPU time (all CPUs,
  from /proc/stat) between two readings, times the number of CPUs. One busy process reads
  100 %; two of them on two CPUs read 200 %.
- Where the container's cgroup has no such counter, the numbers come from its processes
  instead, and ``source`` says so. That happens on a v1 host whose cpuacct is mounted apart
  from cpu (edu's containers join cpu, not cpuacct: the CPU time is then the sum of
  /proc/PID/stat of the processes alive now), and for block I/O where edu's containers are in
  no blkio/io cgroup (/proc/PID/io). Network I/O always comes from the container's network
  namespace (/proc/PID/net/dev, every interface but lo), as Docker reads its interfaces.

Every reader takes the cgroup's directories and a ``proc`` root, so the tests can point them
at a temp dir that holds the kernel's file formats.

Introduced in notebooks/10-limits-and-security.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from . import cgroups, kernel

#: v1 keeps a "no limit" as the largest page-aligned 63-bit number; anything this big is none.
_NO_LIMIT = 1 << 62


@dataclass(frozen=True)
class Reading:
    """The kernel's counters for one container at one moment (cumulative, not rates)."""

    when: float            # time.monotonic()
    cpu_ns: int            # CPU time used by the container so far
    system_ns: int         # CPU time of the whole system so far (all CPUs), from /proc/stat
    memory: int            # bytes in use, less inactive file cache
    memory_limit: int      # bytes (the host's memory when no limit is set)
    pids: int
    net_rx: int = 0
    net_tx: int = 0
    block_read: int = 0
    block_write: int = 0
    throttled_periods: int = 0
    throttled_ns: int = 0
    source: dict[str, str] = field(default_factory=dict)  # what each number was read from


@dataclass(frozen=True)
class Sample:
    """One row of ``docker stats``: rates between two readings, levels at the second one."""

    id: str
    name: str
    cpu_percent: float
    memory: int
    memory_limit: int
    memory_percent: float
    pids: int
    net_rx: int = 0
    net_tx: int = 0
    block_read: int = 0
    block_write: int = 0
    throttled_periods: int = 0
    throttled_ns: int = 0
    t: float = 0.0         # seconds since the first reading of a series
    source: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The sample as JSON-ready data (for a lesson's live part)."""
        return asdict(self)


class StatsError(Exception):
    """Stats cannot be read: the message says which container and why."""


# ---- the kernel's files ------------------------------------------------------------------------

def _int(path: Path) -> int | None:
    text = kernel.read(path)
    if text is None:
        return None
    if text == "max":
        return -1
    try:
        return int(text.split()[0])
    except (ValueError, IndexError):
        return None


def flat_keyed(path: Path) -> dict[str, int]:
    """A cgroup file of ``key value`` lines (memory.stat, cpu.stat, pids.events) as a dict."""
    out = {}
    for line in (kernel.read(path) or "").splitlines():
        key, _, value = line.partition(" ")
        if value.strip().lstrip("-").isdigit():
            out[key] = int(value)
    return out


def host_memory(proc: Path = Path("/proc")) -> int:
    """The host's memory in bytes (MemTotal), what Docker shows as the limit of no limit."""
    for line in (kernel.read(proc / "meminfo") or "").splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    return 0


def system_cpu_ns(proc: Path = Path("/proc")) -> int:
    """The system's CPU time so far, all CPUs, in ns (the ``cpu`` line of /proc/stat), as
    Docker's getSystemCPUUsage reads it."""
    line = (kernel.read(proc / "stat") or "cpu 0").splitlines()[0].split()
    ticks = sum(int(v) for v in line[1:8])  # user nice system idle iowait irq softirq
    return ticks * 1_000_000_000 // os.sysconf("SC_CLK_TCK")


def _proc_cpu_ns(pids: list[int], proc: Path) -> int:
    tick = 1_000_000_000 // os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        fields = (kernel.read(proc / str(pid) / "stat") or "").rpartition(")")[2].split()
        if len(fields) > 12:
            total += (int(fields[11]) + int(fields[12])) * tick  # utime + stime
    return total


def _proc_io(pids: list[int], proc: Path) -> tuple[int, int]:
    read = written = 0
    for pid in pids:
        io = flat_keyed_colon(proc / str(pid) / "io")
        read += io.get("read_bytes", 0)
        written += io.get("write_bytes", 0)
    return read, written


def flat_keyed_colon(path: Path) -> dict[str, int]:
    """A ``key: value`` file (/proc/PID/io) as a dict."""
    out = {}
    for line in (kernel.read(path) or "").splitlines():
        key, _, value = line.partition(":")
        if value.strip().isdigit():
            out[key.strip()] = int(value)
    return out


def net_dev(pid: int, proc: Path = Path("/proc")) -> tuple[int, int]:
    """Bytes received and sent by every interface but lo in ``pid``'s network namespace."""
    rx = tx = 0
    for line in (kernel.read(proc / str(pid) / "net" / "dev") or "").splitlines()[2:]:
        name, _, numbers = line.partition(":")
        values = numbers.split()
        if name.strip() != "lo" and len(values) >= 9:
            rx += int(values[0])
            tx += int(values[8])
    return rx, tx


def _blkio_v1(where: Path) -> tuple[int, int] | None:
    text = kernel.read(where / "blkio.throttle.io_service_bytes")
    if text is None:
        return None
    totals = {"Read": 0, "Write": 0}  # "MAJ:MIN Read|Write|Sync|... BYTES" per device
    for parts in (line.split() for line in text.splitlines()):
        if len(parts) == 3 and parts[1] in totals:
            totals[parts[1]] += int(parts[2])
    return totals["Read"], totals["Write"]


def _io_v2(where: Path) -> tuple[int, int] | None:
    text = kernel.read(where / "io.stat")
    if text is None:
        return None
    read = written = 0
    for line in text.splitlines():
        for item in line.split()[1:]:
            key, _, value = item.partition("=")
            if key == "rbytes":
                read += int(value)
            elif key == "wbytes":
                written += int(value)
    return read, written


def read_cgroup(dirs: dict[str, Path], pids: list[int], proc: Path = Path("/proc")
                ) -> Reading:
    """The counters of the cgroup in ``dirs`` (hierarchy name -> directory, as
    ``Cgroup.paths()`` gives them: ``unified`` for v2, controller names for v1), with
    ``pids`` its processes now (for the numbers no cgroup file holds)."""
    source: dict[str, str] = {}
    unified = dirs.get("unified")
    v2 = unified is not None and (unified / "memory.current").exists()
    mem_total = host_memory(proc)
    if v2:
        assert unified is not None
        memory_stat = flat_keyed(unified / "memory.stat")
        usage = _int(unified / "memory.current") or 0
        memory = usage - memory_stat.get("inactive_file", 0) \
            if memory_stat.get("inactive_file", 0) < usage else usage
        limit = _int(unified / "memory.max")
        cpu_stat = flat_keyed(unified / "cpu.stat")
        cpu_ns = cpu_stat.get("usage_usec", 0) * 1000
        throttled = (cpu_stat.get("nr_throttled", 0), cpu_stat.get("throttled_usec", 0) * 1000)
        pid_count = _int(unified / "pids.current")
        io = _io_v2(unified)
        source.update(cpu="cpu.stat usage_usec", memory="memory.current - inactive_file",
                      pids="pids.current" if pid_count is not None else "cgroup.procs")
    else:
        mem_dir = dirs.get("memory")
        memory = limit = None
        if mem_dir is not None:
            usage = _int(mem_dir / "memory.usage_in_bytes") or 0
            inactive = flat_keyed(mem_dir / "memory.stat").get("total_inactive_file", 0)
            memory = usage - inactive if inactive < usage else usage
            limit = _int(mem_dir / "memory.limit_in_bytes")
            source["memory"] = "memory.usage_in_bytes - total_inactive_file"
        cpu_dir = dirs.get("cpuacct") or dirs.get("cpu")
        usage_ns = _int(cpu_dir / "cpuacct.usage") if cpu_dir is not None else None
        if usage_ns is not None:
            cpu_ns = usage_ns
            source["cpu"] = "cpuacct.usage"
        else:
            cpu_ns = _proc_cpu_ns(pids, proc)
            source["cpu"] = "/proc/PID/stat utime+stime (no cpuacct in this cgroup)"
        cpu_stat = flat_keyed(dirs["cpu"] / "cpu.stat") if "cpu" in dirs else {}
        throttled = (cpu_stat.get("nr_throttled", 0), cpu_stat.get("throttled_time", 0))
        pid_count = _int(dirs["pids"] / "pids.current") if "pids" in dirs else None
        source["pids"] = "pids.current" if pid_count is not None else "cgroup.procs"
        io = _blkio_v1(dirs["blkio"]) if "blkio" in dirs else None
    if memory is None:
        memory = sum(flat_keyed_colon(proc / str(p) / "status").get("VmRSS", 0) for p in pids)
        source["memory"] = "/proc/PID/status VmRSS (no memory controller)"
    if limit is None or limit < 0 or limit >= _NO_LIMIT or (mem_total and limit > mem_total):
        limit = mem_total
    if io is None:
        io = _proc_io(pids, proc)
        source["block"] = "/proc/PID/io (no blkio/io controller in this cgroup)"
    else:
        source["block"] = "io.stat" if v2 else "blkio.throttle.io_service_bytes"
    rx, tx = net_dev(min(pids), proc) if pids else (0, 0)
    return Reading(when=time.monotonic(), cpu_ns=cpu_ns, system_ns=system_cpu_ns(proc),
                   memory=max(memory, 0), memory_limit=limit,
                   pids=pid_count if pid_count is not None else len(pids),
                   net_rx=rx, net_tx=tx, block_read=io[0], block_write=io[1],
                   throttled_periods=throttled[0], throttled_ns=throttled[1], source=source)


def cpu_percent(before: Reading, after: Reading, cpus: int | None = None) -> float:
    """Docker's CPU %: container CPU time over system CPU time, times the CPUs."""
    cpus = cpus or os.cpu_count() or 1
    cpu_delta = after.cpu_ns - before.cpu_ns
    system_delta = after.system_ns - before.system_ns
    if cpu_delta <= 0 or system_delta <= 0:
        return 0.0
    return cpu_delta / system_delta * cpus * 100.0


def combine(rec: dict[str, Any], before: Reading, after: Reading, t: float = 0.0) -> Sample:
    """The row for container ``rec`` from two readings of it."""
    limit = after.memory_limit
    return Sample(id=rec["id"], name=rec.get("name") or rec["id"][:12],
                  cpu_percent=round(cpu_percent(before, after), 2), memory=after.memory,
                  memory_limit=limit,
                  memory_percent=round(after.memory / limit * 100, 2) if limit else 0.0,
                  pids=after.pids, net_rx=after.net_rx, net_tx=after.net_tx,
                  block_read=after.block_read, block_write=after.block_write,
                  throttled_periods=after.throttled_periods, throttled_ns=after.throttled_ns,
                  t=round(t, 3), source=after.source)


# ---- containers ---------------------------------------------------------------------------------

def _running(rec: dict[str, Any]) -> bool:
    return rec.get("status") in ("running", "paused")


def read(rec: dict[str, Any]) -> Reading | None:
    """The counters of container ``rec`` (a record), or None when it is not running."""
    if not _running(rec):
        return None
    try:
        cg = cgroups.driver().open(rec["id"])
    except cgroups.CgroupError:
        return None
    dirs = {k: v for k, v in cg.paths().items() if v.is_dir()}
    if not dirs:
        return None
    return read_cgroup(dirs, cg.pids())


def _idle(rec: dict[str, Any]) -> Sample:
    """A stopped container's row: zeros, as ``docker stats`` shows it."""
    return Sample(id=rec["id"], name=rec.get("name") or rec["id"][:12], cpu_percent=0.0,
                  memory=0, memory_limit=0, memory_percent=0.0, pids=0)


def records(refs: list[str] | None = None, all: bool = False) -> list[dict[str, Any]]:
    """The containers ``docker stats`` shows: ``refs`` (names, ids or prefixes; a
    ``NoSuchContainer`` for an unknown one), else the running ones (every one with ``all``)."""
    from .life import control

    if refs:
        return [control.find(ref) for ref in refs]
    return control.ls(all=all)


def samples(refs: list[str] | None = None, interval: float = 0.5,
            all: bool = False) -> list[Sample]:
    """One row per container: two readings ``interval`` seconds apart (``--no-stream``)."""
    recs = records(refs, all)
    first = {r["id"]: read(r) for r in recs}
    if any(first.values()):
        time.sleep(interval)
    out = []
    for rec in recs:
        before, after = first[rec["id"]], read(rec)
        out.append(combine(rec, before, after) if before and after else _idle(rec))
    return out


def sample(ref: str, interval: float = 0.5) -> Sample:
    """``docker stats --no-stream REF``: one row for one container."""
    return samples([ref], interval)[0]


def series(ref: str, seconds: float, interval: float = 0.25) -> list[Sample]:
    """Rows for one container every ``interval`` seconds for ``seconds`` (for a plot); ends
    early when the container stops. ``t`` is the time of each row since the first reading."""
    return series_of([ref], seconds, interval)[ref]


def series_of(refs: list[str], seconds: float, interval: float = 0.25
              ) -> dict[str, list[Sample]]:
    """``series`` for several containers at once, read at the same moments: by ref."""
    from .life import control

    recs = {ref: control.find(ref) for ref in refs}
    before = {ref: read(rec) for ref, rec in recs.items()}
    for ref, reading in before.items():
        if reading is None:
            raise StatsError(f"container {recs[ref].get('name') or ref} is not running: start "
                             "it first (stats are read from a running container's cgroup)")
    start = min(r.when for r in before.values() if r is not None)
    out: dict[str, list[Sample]] = {ref: [] for ref in refs}
    deadline = start + seconds
    while time.monotonic() < deadline and before:
        time.sleep(max(0.0, min(interval, deadline - time.monotonic())))
        for ref in list(before):
            after = read(recs[ref])
            if after is None:  # it stopped: its series ends here
                del before[ref]
                continue
            out[ref].append(combine(recs[ref], before[ref], after, t=after.when - start))
            before[ref] = after
    return out


def limits_files(ref: str) -> dict[str, str]:
    """The raw limit and event files of a running container's cgroup (``Cgroup.observe``),
    the kernel's own evidence for what stats show."""
    from .life import control

    rec = control.find(ref)
    return cgroups.driver().open(rec["id"]).observe()
