"""The Trace records everything a container's start does, host steps as well as the child's.

Real containers from the busybox image, as root: the cgroup files written and their values,
the uid and gid maps, each netlink request, the nft rules for -p, the name files' targets.
A fast run and a stepped run record the same calls, and an edu.trace/1 document still loads.
The trace is taught in notebooks/06-step-by-step.
"""

from __future__ import annotations

import os
import socket
import time
from types import SimpleNamespace

import pytest

from edu_runtime import Container, kernel, networks
from edu_runtime.namespaces import IdMaps
from edu_runtime.steps import StepRecord, Trace


def free_port() -> int:
    """A TCP port nobody listens on now."""
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        return s.getsockname()[1]


def quietly(c: Container) -> int:
    """Run ``c`` with its output thrown away; its exit code."""
    saved = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    try:
        return c.run()
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)


def record(trace: Trace, name: str) -> StepRecord:
    """The record of step ``name``."""
    return next(s for s in trace.steps if s.name == name)


@pytest.fixture(scope="module")
def network(busybox):
    """A network of this module's own: its bridge and rules are made by its first container."""
    name = f"trace-{os.getpid()}"
    made = networks.create(name)
    yield made
    networks.rm(name)


def test_the_cgroup_step_lists_the_files_written_and_their_values(busybox, no_leaks):
    c = Container(busybox, ["true"], remove=True, network="none", memory="64m",
                  pids_limit=20)
    assert quietly(c) == 0
    calls = record(c.trace, "cgroup").syscalls
    writes = {c[1].rsplit("/", 1)[1]: c[2] for c in calls if c[0] == "write"}
    limit = "memory.max" if "memory.max" in writes else "memory.limit_in_bytes"
    assert writes[limit] == str(64 * 1024 * 1024)
    assert writes["pids.max"] == "20"
    # The container's own directory, with its id shown as <id>, made before its files.
    made = [c for c in calls if c[0] == "mkdir"]
    assert made and all(path.endswith("/edu/<id>") or path.endswith("/edu")
                        for _, path in made)
    assert any(c[1].endswith(f"/edu/<id>/{limit}") for c in calls if c[0] == "write")
    assert calls.index(made[-1]) < next(i for i, c in enumerate(calls) if c[0] == "write")


def test_the_id_maps_step_records_its_writes_in_a_real_user_namespace():
    """IdMaps runs only rootless; its apply is checked here on a real child in a new user
    namespace, the way a rootless start uses it (as root, uid 0 maps to itself)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: a new user namespace, then wait to be mapped and read
        try:
            kernel.unshare(kernel.CLONE_NEWUSER)
            os.close(w)
            os.read(r, 1)
        finally:
            os._exit(0)
    os.close(r)
    try:
        for _ in range(200):  # the child's unshare happens after fork returns here
            if os.readlink(f"/proc/{pid}/ns/user") != os.readlink("/proc/self/ns/user"):
                break
            time.sleep(0.005)
        kernel.record_syscalls(True)
        try:
            IdMaps().apply(SimpleNamespace(pid=pid))
        finally:
            noted = kernel.record_syscalls(False)
        maps = {f: kernel.read(f"/proc/{pid}/{f}").split() for f in ("uid_map", "gid_map")}
    finally:
        os.close(w)
        os.waitpid(pid, 0)
    uid, gid = os.geteuid(), os.getegid()
    assert maps == {"uid_map": ["0", str(uid), "1"], "gid_map": ["0", str(gid), "1"]}
    rec = StepRecord("id maps", "host")
    rec.syscalls = noted
    assert rec.syscalls == [("write", "/proc/<pid>/setgroups", "deny"),
                            ("write", "/proc/<pid>/uid_map", f"0 {uid} 1"),
                            ("write", "/proc/<pid>/gid_map", f"0 {gid} 1")]


def test_bridge_veth_and_nat_steps_list_netlink_requests_and_nft_rules(busybox, network):
    port = free_port()
    c = Container(busybox, ["true"], remove=True, network=network["name"],
                  publish=[f"{port}:80"])
    assert quietly(c) == 0
    bridge = [c[1:] for c in record(c.trace, "bridge").syscalls if c[0] == "netlink"]
    assert ("RTM_NEWLINK", f"create ifname={network['bridge']} address="
            f"{bridge_mac(bridge)} kind=bridge") in bridge
    prefix = network["subnet"].split("/")[1]
    assert ("RTM_NEWADDR", f"create dev={network['bridge']} address={network['gateway']}/"
            f"{prefix}") in bridge
    assert ("RTM_NEWLINK", f"dev={network['bridge']} up") in bridge

    veth = [c[1:] for c in record(c.trace, "veth").syscalls if c[0] == "netlink"]
    assert veth[0] == ("RTM_NEWLINK", f"create up ifname=veth<id:8> master={network['bridge']} "
                       "kind=veth peer=(ifname=eth0 net_ns_fd=<fd> address=<mac>)")
    assert ("RTM_NEWADDR", f"netns=container create dev=2 address=<ip>/{prefix}") in veth
    assert ("RTM_NEWROUTE", f"netns=container create dst=default gateway="
            f"{network['gateway']}") in veth

    rules = [c[1] for c in record(c.trace, "nat").syscalls if c[0] == "nft"]
    assert f'add rule ip edu publish tcp dport {port} dnat to <ip>:80 comment "edu:<id>"' \
        in rules
    tag = f'comment "edu-net:{network["bridge"]}"'
    assert any("masquerade" in rule and rule.endswith(tag) for rule in rules)


def bridge_mac(requests: list[tuple[str, ...]]) -> str:
    """The MAC address the bridge was made with (derived from its name, so not checked)."""
    made = next(r[1] for r in requests if r[0] == "RTM_NEWLINK" and "kind=bridge" in r[1])
    return made.split("address=")[1].split()[0]


def test_the_name_files_step_shows_its_targets(busybox, no_leaks):
    c = Container(busybox, ["true"], remove=True, network="none")
    assert quietly(c) == 0
    assert record(c.trace, "name files").syscalls == [
        ("mount", "bind", "/etc/hostname"), ("mount", "bind", "/etc/hosts"),
        ("mount", "bind", "/etc/resolv.conf")]
    assert "mount(bind, /etc/hosts)" in c.trace.timeline()


def test_a_fast_run_and_a_stepped_run_record_the_same_calls(busybox, network):
    """Fast, then stepped (each record sent through to_dict and from_dict, as a helper does),
    on one network; a container keeps it up meanwhile, so both find the same bridge."""
    keeper = Container(busybox, ["sleep", "60"], remove=True, network=network["name"])
    keeper.start()
    try:
        port = free_port()
        fast = Container(busybox, ["true"], remove=True, network=network["name"],
                         publish=[f"{port}:80"], memory="64m")
        assert quietly(fast) == 0
        stepped = Container(busybox, ["true"], remove=True, network=network["name"],
                            publish=[f"{port}:80"], memory="64m")
        sent = [StepRecord.from_dict(rec.to_dict()) for rec in stepped.steps()]
        assert stepped.wait() == 0
    finally:
        keeper.kill()
        keeper.wait()
    assert fast.id != stepped.id
    calls = [(r.name, r.side, r.syscalls) for r in fast.trace.steps]
    assert calls == [(r.name, r.side, r.syscalls) for r in stepped.trace.steps]
    assert calls == [(r.name, r.side, r.syscalls) for r in sent]
    kinds = {call[0] for _, _, made in calls for call in made}
    assert {"write", "netlink", "nft", "mount", "unshare"} <= kinds
    assert all(r.before or r.after for r in sent if r.name in ("cgroup", "veth"))


def test_an_edu_trace_1_document_loads_converted():
    cid = "ab" * 32
    old = {"schema": "edu.trace/1", "container": cid, "image": "busybox", "command": ["true"],
           "started": 1.0, "exit": {"code": 0, "oom_killed": False},
           "steps": [{"name": "cgroup", "side": "host", "start": 1.5, "end": 2.0,
                      "syscalls": [], "before": {}, "after": {"pids": "1"}},
                     {"name": "capabilities", "side": "child", "start": 2.0, "end": 2.5,
                      "syscalls": ["prctl(PR_CAPBSET_DROP, CAP_NET_RAW)", "capset"],
                      "before": {}, "after": {}, "error": ""},
                     {"name": "rootfs", "side": "child", "start": 2.5, "end": 3.0,
                      "syscalls": [f"mount(bind /var/lib/edu/containers/{cid}/x)"],
                      "before": {}, "after": {}, "error": ""}]}
    t = Trace.from_dict(old)
    assert t.container == cid and t.exit["code"] == 0 and len(t.steps) == 3
    assert t.steps[0].after == {"pids": "1"} and t.steps[0].syscalls == []
    assert t.steps[1].syscalls == [("prctl", "PR_CAPBSET_DROP", "CAP_NET_RAW"), ("capset",)]
    assert t.steps[2].syscalls == [("mount", "bind /var/lib/edu/containers/<id>/x")]
    again = t.to_dict()
    assert again["schema"] == "edu.trace/2"
    assert again["steps"][1]["syscalls"] == [["prctl", "PR_CAPBSET_DROP", "CAP_NET_RAW"],
                                             ["capset"]]
    assert Trace.from_dict(again).to_dict() == again
    with pytest.raises(ValueError, match="not an edu trace"):
        Trace.from_dict({**old, "schema": "edu.trace/9"})
