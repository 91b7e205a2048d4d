"""``edu stats``: real containers on this host's cgroups (v1 controllers), cgroup v2 in the
kernel's file formats in a temp dir (this host's v2 tree has no controllers), the CLI's table,
JSON and errors, and Docker's own ``docker stats`` beside edu's for the same load.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from conftest import REPO, running, wait_for

from edu_runtime import stats

MIB = 1024 * 1024
TICK_NS = 1_000_000_000 // os.sysconf("SC_CLK_TCK")


def write(where: Path, files: dict[str, str]) -> None:
    where.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (where / name).write_text(text)


@pytest.fixture
def proc(tmp_path) -> Path:
    """A /proc with what stats reads: meminfo, stat, and PID 42's net/dev, io and stat."""
    root = tmp_path / "proc"
    write(root, {"meminfo": "MemTotal:        8000000 kB\nMemFree:  100 kB\n",
                 "stat": "cpu  100 0 50 1000 10 0 0 0 0 0\ncpu0 50 0 25 500 5 0 0 0 0 0\n"})
    write(root / "42", {
        "stat": "42 (sh) S 1 42 42 0 -1 4194560 1 0 0 0 300 100 0 0 20 0 1 0 5 1 1\n",
        "io": "rchar: 1\nwchar: 2\nread_bytes: 4096\nwrite_bytes: 8192\n",
        "status": "Name:\tsh\nVmRSS:\t 2048 kB\n"})
    write(root / "42/net", {"dev": (
        "Inter-|   Receive                                                |  Transmit\n"
        " face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets\n"
        "    lo:     500       5    0    0    0     0          0         0      500       5"
        "    0    0    0     0       0          0\n"
        "  eth0:    1500      10    0    0    0     0          0         0      700       7"
        "    0    0    0     0       0          0\n")})
    return root


def test_v2_files_in_kernel_format(tmp_path, proc):
    cg = tmp_path / "sys/fs/cgroup/edu/web"
    write(cg, {"memory.current": "52428800\n", "memory.max": "67108864\n",
               "memory.stat": "anon 41943040\nfile 10485760\nactive_file 2097152\n"
                              "inactive_file 8388608\nshmem 0\n",
               "cpu.stat": "usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\n"
                           "nr_periods 30\nnr_throttled 12\nthrottled_usec 400000\n",
               "pids.current": "3\n",
               "io.stat": "254:0 rbytes=1000 wbytes=2000 rios=1 wios=2 dbytes=0 dios=0\n"
                          "253:0 rbytes=24 wbytes=0 rios=1 wios=0 dbytes=0 dios=0\n"})
    r = stats.read_cgroup({"unified": cg}, [42], proc)
    assert r.memory == 50 * MIB - 8 * MIB          # memory.current less inactive_file
    assert r.memory_limit == 64 * MIB
    assert r.cpu_ns == 2_500_000_000 and r.pids == 3
    assert (r.throttled_periods, r.throttled_ns) == (12, 400_000_000)
    assert (r.block_read, r.block_write) == (1024, 2000)
    assert (r.net_rx, r.net_tx) == (1500, 700)     # eth0 only, not lo
    assert r.system_ns == 1160 * TICK_NS
    assert r.source["cpu"] == "cpu.stat usage_usec" and r.source["block"] == "io.stat"
    (cg / "memory.max").write_text("max\n")         # no limit: the host's memory, as Docker
    assert stats.read_cgroup({"unified": cg}, [42], proc).memory_limit == 8_000_000 * 1024


def test_v1_files_in_kernel_format(tmp_path, proc):
    base = tmp_path / "sys/fs/cgroup"
    dirs = {"memory": base / "memory/edu/db", "cpu": base / "cpu,cpuacct/edu/db",
            "pids": base / "pids/edu/db"}
    write(dirs["memory"], {"memory.usage_in_bytes": "20971520\n",
                           "memory.limit_in_bytes": "9223372036854771712\n",
                           "memory.stat": "cache 4194304\nrss 16777216\n"
                                          "total_inactive_file 3145728\n"})
    write(dirs["cpu"], {"cpuacct.usage": "123456789\n",
                        "cpu.stat": "nr_periods 10\nnr_throttled 4\nthrottled_time 5000\n"})
    write(dirs["pids"], {"pids.current": "2\n"})
    r = stats.read_cgroup(dirs, [42], proc)
    assert r.memory == 20 * MIB - 3 * MIB          # usage less total_inactive_file
    assert r.memory_limit == 8_000_000 * 1024      # v1's "no limit" number: the host's
    assert r.cpu_ns == 123456789 and r.source["cpu"] == "cpuacct.usage"
    assert (r.throttled_periods, r.throttled_ns, r.pids) == (4, 5000, 2)
    # No blkio here: the processes' own /proc/PID/io, and stats says so.
    assert (r.block_read, r.block_write) == (4096, 8192)
    assert r.source["block"].startswith("/proc/PID/io")
    # cpu without cpuacct (this host mounts them apart): the processes' utime + stime.
    (dirs["cpu"] / "cpuacct.usage").unlink()
    r = stats.read_cgroup(dirs, [42], proc)
    assert r.cpu_ns == 400 * TICK_NS and r.source["cpu"].startswith("/proc/PID/stat")


def test_cpu_percent_is_dockers_formula():
    def at(cpu, system):
        return stats.Reading(when=0, cpu_ns=cpu, system_ns=system, memory=0,
                             memory_limit=1, pids=1)
    # Half of all CPU time on a 2-CPU machine: one CPU busy, 100 %.
    assert stats.cpu_percent(at(0, 0), at(1_000, 2_000), cpus=2) == 100.0
    assert stats.cpu_percent(at(0, 0), at(500, 2_000), cpus=2) == 50.0
    assert stats.cpu_percent(at(5, 5), at(5, 5), cpus=2) == 0.0


# ---- real containers --------------------------------------------------------------------------

def _on_cpu_ns(pid: int) -> int:
    """The time the kernel's scheduler has run ``pid`` (ns): a second witness, not stats'."""
    return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0])


def test_busy_loop_reads_the_core_it_got(busybox, root):
    """A busy loop reads 100 % when it has a core to itself; on a shared host, what the
    scheduler gave it (its schedstat over the same second), never more than one core."""
    with running(busybox, ["sh", "-c", "while :; do :; done"], name=_name()) as (c, rec):
        pid = c.processes()[0]
        before, started = _on_cpu_ns(pid), time.monotonic()
        s = stats.sample(rec["id"], interval=1.0)
        witness = (_on_cpu_ns(pid) - before) / ((time.monotonic() - started) * 1e9) * 100
        assert abs(s.cpu_percent - witness) <= 15, (s.cpu_percent, witness)
        assert 20 <= s.cpu_percent <= 105, s
        assert s.pids == 1 and s.name == rec["name"]


def test_cpu_quota_throttles_and_series(busybox, root):
    with running(busybox, ["sh", "-c", "while :; do :; done"], cpus=0.2,
                 name=_name()) as (c, rec):
        rows = stats.series(rec["id"], seconds=1.5, interval=0.5)
        assert len(rows) == 3 and [r.t for r in rows] == sorted(r.t for r in rows)
        assert all(r.cpu_percent <= 30 for r in rows), rows  # 0.2 CPUs: at most about 20 %
        assert sum(r.cpu_percent for r in rows) / len(rows) >= 5, rows
        assert rows[-1].throttled_periods > rows[0].throttled_periods > 0


def test_memory_and_pids(busybox, root):
    # 40 MiB written to /dev/shm (tmpfs) is charged to the container's memory cgroup.
    hog = "head -c 41943040 /dev/zero > /dev/shm/hog; sleep 60 & sleep 60 & sleep 60 & wait"
    with running(busybox, ["sh", "-c", hog], memory="96m", name=_name()) as (c, rec):
        assert wait_for(lambda: stats.sample(rec["id"], 0.1).pids == 4)
        s = stats.sample(rec["id"], 0.2)
        assert 40 * MIB <= s.memory <= 48 * MIB, s
        assert s.memory_limit == 96 * MIB
        assert s.memory_percent == pytest.approx(s.memory / (96 * MIB) * 100, abs=0.01)
        assert s.pids == 4 == len(c.processes())


def test_not_running_raises_for_series_and_is_zero_in_samples(busybox, root):
    from edu_runtime import Container

    c = Container(busybox, ["true"], name=_name())
    c.create()
    try:
        with pytest.raises(stats.StatsError, match="is not running: start it first"):
            stats.series(c.id, 1)
        [s] = stats.samples([c.id], interval=0.1)
        assert (s.cpu_percent, s.memory, s.pids) == (0.0, 0, 0)
    finally:
        c.remove(force=True)


def test_docker_stats_beside_edu(busybox, root):
    """The same 40 MiB in /dev/shm and a busy loop, read by docker stats and by edu."""
    from docker_reference import docker_up, load_base

    if not docker_up():
        pytest.fail("dockerd must answer here for the reference comparison")
    tag = load_base()
    name = _name()
    load = "head -c 41943040 /dev/zero > /dev/shm/hog; while :; do :; done"
    subprocess.run(["docker", "run", "-d", "--name", name, "-m", "96m", tag, "sh", "-c", load],
                   check=True, capture_output=True)
    try:
        with running(busybox, ["sh", "-c", load], memory="96m", name=_name()) as (c, rec):
            time.sleep(1.0)
            out = subprocess.run(["docker", "stats", "--no-stream", "--format", "{{json .}}",
                                  name], check=True, capture_output=True, text=True).stdout
            theirs = json.loads(out)
            ours = stats.sample(rec["id"], 1.0)
            fields = sorted(_cli_json(rec["id"]))
        their_mem = float(theirs["MemUsage"].split("MiB")[0])
        assert abs(ours.memory / MIB - their_mem) < 4, (ours, theirs)
        assert theirs["MemUsage"].endswith("/ 96MiB")
        # Two busy loops side by side on a shared 2-core host: each gets up to one core.
        assert 15 <= float(theirs["CPUPerc"].rstrip("%")) <= 105
        assert 15 <= ours.cpu_percent <= 105
        assert sorted(theirs) == fields  # the same fields as docker's {{json .}}
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)


# ---- the CLI ---------------------------------------------------------------------------------

def _edu(*argv, timeout=60):
    return subprocess.run([sys.executable, "-m", "edu_cli.main", *argv], capture_output=True,
                          text=True, timeout=timeout, cwd=REPO)


def _cli_json(ref: str) -> dict:
    out = _edu("stats", "--no-stream", "--format", "json", ref)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def _name() -> str:
    return f"l10-st-{uuid.uuid4().hex[:8]}"


def test_cli_table_and_json(busybox, root):
    with running(busybox, ["sleep", "60"], name=_name(), memory="64m") as (c, rec):
        out = _edu("stats", "--no-stream", rec["name"])
        assert out.returncode == 0, out.stderr
        header, line = out.stdout.splitlines()
        assert header.split("   ")[:2] == ["CONTAINER ID", "NAME"]
        for column in ("CPU %", "MEM USAGE / LIMIT", "MEM %", "NET I/O", "BLOCK I/O", "PIDS"):
            assert column in header
        assert line.startswith(rec["id"][:12] + "   " + rec["name"])
        assert " / 64MiB " in line and line.endswith("1")
        row = _cli_json(rec["name"])
        assert row["ID"] == rec["id"][:12] and row["PIDs"] == "1"
        assert row["MemUsage"].endswith(" / 64MiB") and row["CPUPerc"].endswith("%")


def test_cli_errors():
    out = _edu("stats", "--no-stream", "l10-no-such-container")
    assert (out.returncode, out.stdout) == (1, "")
    assert out.stderr == "Error: No such container: l10-no-such-container\n"
    out = _edu("stats", "--no-stream", "--format", "{{.Name}}")
    assert out.returncode == 125 and out.stderr.startswith("Error: unsupported --format")


def test_sizes_as_docker_prints_them():
    from edu_cli.stats import bytes_size, human_size

    assert bytes_size(64 * MIB) == "64MiB" and bytes_size(2048000) == "1.953MiB"
    assert bytes_size(0) == "0B" and bytes_size(8_000_000 * 1024) == "7.629GiB"
    assert human_size(0) == "0B" and human_size(1050) == "1.05kB"
    assert human_size(20480) == "20.5kB" and human_size(736) == "736B"


def test_cli_streams_until_interrupted(busybox, root):
    """Without --no-stream the table is redrawn about every second until Ctrl-C."""
    import signal

    with running(busybox, ["sleep", "60"], name=_name()) as (c, rec):
        proc = subprocess.Popen([sys.executable, "-m", "edu_cli.main", "stats", rec["name"]],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                cwd=REPO)
        time.sleep(3.5)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)
    frames = out.split("\033[2J\033[H")[1:]
    assert len(frames) >= 2, out
    assert all(f.startswith("CONTAINER ID") and rec["name"] in f for f in frames)
    assert proc.returncode == 130 and "Traceback" not in err


def test_v2_driver_cgroup_read_as_made(tmp_path, proc):
    """A v2 container cgroup as the driver makes it (test_cgroups plays the kernel), with
    limits set through it, read back by stats."""
    from test_cgroups import fake_kernel_mkdir_v2, write_files

    from edu_runtime.cgroups import Limits, V2Driver

    root = tmp_path / "sys/fs/cgroup"
    write_files(root, {"cgroup.controllers": "cpu io memory pids\n",
                       "cgroup.subtree_control": "\n", "cgroup.procs": "1\n"})
    write_files(root / "edu", {"cgroup.subtree_control": "\n", "cgroup.procs": "",
                               "cgroup.type": "domain\n"})
    cg = V2Driver(root).create("web")
    where = cg.paths()["unified"]
    fake_kernel_mkdir_v2(where)
    cg.set_limits(Limits(memory=32 * MIB, pids=10))
    (where / "memory.current").write_text(f"{5 * MIB}\n")
    (where / "memory.stat").write_text(f"anon {4 * MIB}\ninactive_file {MIB}\n")
    (where / "pids.current").write_text("7\n")
    (where / "cpu.stat").write_text("usage_usec 750\nnr_throttled 0\nthrottled_usec 0\n")
    r = stats.read_cgroup(cg.paths(), [42], proc)
    assert (r.memory, r.memory_limit, r.pids, r.cpu_ns) == (4 * MIB, 32 * MIB, 7, 750_000)
