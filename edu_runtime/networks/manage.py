"""Networks as the kernel sees them: what ``edu network rm`` removes, what a killed ``edu``
left behind, and the bridges a live supervisor keeps warm.

The records (networks, leases, hosts files) are ``registry``'s and need no kernel; the
kernel objects are ``bridge``'s (links, addresses, routes) and ``nat``'s (nftables), and
rootless, the network holder's (``holder``), which makes the same objects inside the user's
own network namespace. This module is where they meet, so none of them imports another's
way up: ``bridge`` and ``nat`` read the registry, and only this module calls all three.

Introduced in notebooks/08-web-app.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .. import kernel, paths
from . import registry


def rm(name: str) -> None:
    """``docker network rm``: refuse while containers are attached, else remove it all:
    the nft rules, the bridge, then the record."""
    with registry.locked():
        registry.release_stale()
        record = registry.get(name) if name not in registry.PREDEFINED else None
        if record is not None and not record["containers"]:
            if paths.is_root():
                from . import bridge, nat

                nat.remove_network(record)
                bridge.remove_bridge(record)
            else:  # rootless: the bridge, if there is one, is in the user's own namespace
                from . import holder

                holder.remove_network(record)
        registry.forget(name)  # the checks and their sentences are the registry's
        _teardown_if_idle()


# ---- leftovers -------------------------------------------------------------------------------

def cleanup_stale(alive: set[str] | None = None) -> dict[str, list[str]]:
    """Remove the leases, nft rules and veths of containers not in ``alive``.

    ``alive`` defaults to ``registry.alive_ids()``; run ``life.control.cleanup_stale()``
    first, so a container whose ``edu`` was SIGKILLed is already marked exited. Returns what went:
    ``{"leases": [ids], "rules": [ids], "links": [names]}``.
    """
    if not registry.base().is_dir():  # no network was ever used: nothing to look for, and fast
        return {"leases": [], "rules": [], "links": []}
    from . import bridge, nat

    with registry.locked():  # read under the lock: a container starting meanwhile leases
        alive = registry.alive_ids() if alive is None else set(alive)
        if not paths.is_root():  # rootless: the holder of our namespace does the rest
            from . import holder

            done = {"leases": registry.release_stale(alive), "rules": [], "links": []}
            holder.cleanup_stale()
            return done
        # Rules and veths are the host's, shared by every state directory on it; a container
        # another state directory runs (its processes in its cgroup) keeps its own.
        on_host = alive | running_on_host()
        done = {"leases": registry.release_stale(alive), "rules": nat.cleanup_stale(on_host),
                "links": bridge.cleanup_stale(on_host)}
        # A bridge whose containers all died without their undo (a killed supervisor) is
        # retired here, as the last container out would have done.
        for network in registry.records():
            if not network.get("containers") and network.get("bridge") and \
                    os.path.exists(f"/sys/class/net/{network['bridge']}"):
                retire_if_unused(network["name"])
        return done


def running_on_host() -> set[str]:
    """Ids of containers with a process in an edu cgroup, whichever state directory made
    them (a second store on this host, a test's): their rules and veths are not stale."""
    return {name for name, pids in _edu_cgroups() if pids()}


def _edu_cgroups():
    """(container id, a function listing its pids) for every edu cgroup on this host,
    whichever state directory made it; none where cgroups cannot be read."""
    from .. import cgroups

    try:
        drv = cgroups.driver()
    except cgroups.CgroupError:
        return
    for name in drv.names():
        yield name, drv.open(name).pids


#: One lock for every root state directory's bridged starts on this host (see claim).
CLAIM_LOCK = "/run/lock/edu-bridges.lock"


@contextmanager
def claim() -> Iterator[None]:
    """Held by a root start from its lease until its address is on its ``eth0``: a start of
    another state directory on the same bridge waits, and then ``addresses_of_others``
    finds that address in use, so two stores cannot lease one address at the same moment.
    (One state directory's starts are kept apart by its registry's lock anyway.)"""
    import fcntl

    where = CLAIM_LOCK if os.path.isdir(os.path.dirname(CLAIM_LOCK)) else "/run/edu-bridges.lock"
    fd = os.open(where, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # (closing the only descriptor releases the lock)


def addresses_of_others(network: dict) -> set[str]:
    """Addresses on ``network``'s bridge that another state directory's containers hold:
    two root stores on one host share ``edu0``, each leasing from its own registry, so
    each must see the other's. A port (veth) on the bridge that is not one of this
    network's leases is another store's container: its address is read in its network
    namespace (``/proc/PID/net/fib_trie``, by its cgroup's first process). One listdir,
    and nothing more, when every port is ours."""
    try:
        ports = os.listdir(f"/sys/class/net/{network['bridge']}/brif")
    except OSError:
        return set()
    ours = {cid[:8] for cid in network.get("containers") or {}}
    theirs = {p[4:] for p in ports if p.startswith("veth")} - ours
    if not theirs:
        return set()
    out: set[str] = set()
    for name, pids in _edu_cgroups():
        if name[:8] in theirs:
            for pid in pids()[:1]:
                out |= _local_addresses(pid)
    return out


def _local_addresses(pid: int) -> set[str]:
    """The IPv4 addresses of ``pid``'s network namespace (its fib_trie's ``host LOCAL``
    entries), loopback left out."""
    try:
        lines = Path(f"/proc/{pid}/net/fib_trie").read_text().splitlines()
    except OSError:
        return set()
    return {prev.split()[-1] for prev, line in zip(lines, lines[1:], strict=False)
            if line.strip() == "/32 host LOCAL" and not prev.split()[-1].startswith("127.")}


def bridges_in_use() -> list[str]:
    """edu bridges on this host with a port (a container's veth) on them, whoever made them."""
    from . import bridge

    return [n for n in bridge.host_links() if registry.is_edu_bridge(n)
            and os.path.isdir(f"/sys/class/net/{n}/brif") and os.listdir(
                f"/sys/class/net/{n}/brif")]


# ---- what a forking process learns once ---------------------------------------------------

def warm_up(name: str) -> None:
    """Before a process that forks the runs (the supervisor) forks one on network ``name``:
    import what the bridge's steps import, and learn what the bridge and nat steps check on
    every start (the bridge is up; edu's accepts are in dockerd's DOCKER-USER chain), so
    that every fork starts knowing it. A fork that knew nothing asked pyroute2, loaded
    libnftables and started iptables three times: about 40 ms per run (issue 18).

    Checks only: nothing is made or put right here (the container's steps do that, and its
    trace shows it), and only what is in place is remembered. Rootless, the network holder
    does all this."""
    from . import bridge, nat

    bridge.preload()
    if not paths.is_root():
        return
    try:
        network = registry.get(name)
    except registry.NetworkError:
        return  # the container's own steps say so
    if network.get("driver") == "bridge" and bridge.bridge_ready(network) and \
            nat.network_ready(network):
        nat.docker_user_ensure(network["bridge"], check_only=True)  # once warm: one listing


# ---- keeping bridges warm --------------------------------------------------------------------
#
# Making a bridge and its rules, and removing them again, costs more than the rest of a
# container start. So while a supervisor lives (it starts every bridged `edu run`), an
# empty network keeps its bridge and rules, as docker0 stays while dockerd runs. The
# supervisor names itself in ``networks/warm`` (pid and start time, so a recycled pid is
# not mistaken for it) and retires every unused network when it exits. If it is killed,
# the file names a dead process, and the next cleanup retires them as before.

def _warm_file() -> Path:
    return registry.base() / "warm"


def hold_warm() -> None:
    """Keep empty networks' bridges and rules for as long as this process lives."""
    pid = os.getpid()
    with registry.locked():
        paths.ensure(registry.base())
        _warm_file().write_text(f"{pid} {kernel.start_time(pid)}\n")


def warm_holder() -> int:
    """The pid of the live process keeping bridges warm, or 0."""
    try:
        pid, started = _warm_file().read_text().split()
    except (OSError, ValueError):
        return 0
    return int(pid) if kernel.pid_alive(int(pid), started) else 0


def release_warm() -> list[str]:
    """This process stops keeping bridges warm: every unused network is retired now.
    Returns the networks retired."""
    with registry.locked():
        if warm_holder() == os.getpid():
            _warm_file().unlink(missing_ok=True)
        if warm_holder():
            return []
        retired = [n["name"] for n in registry.records() if n.get("bridge") and
                   os.path.exists(f"/sys/class/net/{n['bridge']}") and
                   retire_if_unused(n["name"])]
        _teardown_if_idle()
        return retired


def _teardown_if_idle() -> None:
    """No container on any network and no warm holder: edu's nft table and DOCKER-USER
    rules go too, even when no bridge was left to retire (the last network was removed
    while a supervisor kept it warm)."""
    if paths.is_root() and not warm_holder() and not bridges_in_use() and \
            not any(n.get("containers") for n in registry.records()):
        from . import nat

        nat.teardown_all()


def retire_if_unused(name: str) -> bool:
    """The last container out of a network takes its bridge and rules with it; when no edu
    network is in use, edu's nft table and DOCKER-USER rules go too. An idle host keeps no
    trace of edu's networking; the next container makes it all again (about 40 ms).
    While a supervisor keeps bridges warm (see ``hold_warm``), nothing goes.
    Returns True if the bridge was removed."""
    from . import bridge, nat

    with registry.locked():
        if warm_holder():
            return False
        try:
            network = registry.get(name)
        except registry.NetworkError:
            return False
        if network.get("containers") or network.get("driver") != "bridge":
            return False
        if network.get("bridge") in bridges_in_use():  # another state directory's container
            return False
        nat.remove_network(network)
        bridge.remove_bridge(network)
        if not any(n.get("containers") for n in registry.records()) and not bridges_in_use():
            nat.teardown_all()
        return True


def teardown_all() -> None:
    """Remove every kernel object edu's networking made: bridges, veths, the nft table,
    the DOCKER-USER rules; forget all leases (network definitions stay). For tests."""
    from . import bridge, nat

    with registry.locked():
        nat.teardown_all()
        bridge.teardown_all([n["bridge"] for n in registry.records()])
        for record in registry.records():
            record["containers"] = {}
            registry.write(record)
