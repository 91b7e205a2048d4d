"""Networks: the registry behind ``--network bridge``, ``edu network create`` and ``-p``.

A network here is what Docker calls a bridge network: a name, a subnet, a gateway address
and the Linux bridge that carries it. Docker keeps them in its daemon's memory; edu has no
daemon, so every ``edu`` command reads and writes them on disk, one JSON file per network
under ``state_dir()/networks/``. Two ``edu run`` commands may start at the same moment, so
every change happens under one lock (``fcntl.flock`` on ``networks/.lock``) and every file is
written whole to a temporary name and renamed over the old one: a reader sees the old file
or the new one, never half of one.

IP addresses are handed out here too (IPAM, "IP address management"): ``lease`` gives a
container the lowest free address of its network and writes it down, ``release`` gives it
back. A container that died with its ``edu`` (SIGKILL) cannot give its address back, so
``release_stale`` returns the addresses of containers whose records say they are gone.

The default network is ``bridge`` on the device ``edu0``, as Docker's is ``bridge`` on
``docker0``. Its subnet is 10.77.0.0/16: Docker draws its own networks from 172.17-31.x and
192.168.x, podman uses 10.88.0.0/16 and k3s 10.42/10.43, so 10.77 is unlikely to meet any of
them. It is still checked against the host's routes when first made (a VPN may use it), and
the next candidate is taken if it clashes. ``edu network create`` draws /24s from
10.78.0.0/16, checked the same way.

Containers find each other by name through ``/etc/hosts``, which edu writes for each of
them (and rewrites when a neighbour comes or goes). Docker's user-defined networks use an
embedded DNS server at 127.0.0.11 instead, and its default bridge resolves no names at all;
a hosts file is the smallest thing that works and a student can read it with ``cat``.

This module only reads and writes files: the kernel side lives in ``bridge`` (links,
addresses, routes) and ``nat`` (nftables), which import this module for the registry.
Rootless, the same two run inside the user's own network namespace (``holder``).

Introduced in notebooks/08-web-app.
"""

from __future__ import annotations

import fcntl
import ipaddress
import json
import os
import re
import secrets
import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .. import paths

DEFAULT = "bridge"
DEFAULT_BRIDGE = "edu0"
#: Tried in order for the default network; the first that meets no host route is used.
DEFAULT_SUBNETS = ("10.77.0.0/16", "10.177.0.0/16", "172.30.0.0/16")
#: ``edu network create`` without --subnet takes the first free /24 of this pool.
USER_POOL = "10.78.0.0/16"
#: Docker's predefined networks that are not bridges: listed, never created or removed.
PREDEFINED = {"host": "host", "none": "null"}
#: Statuses of a container record that still own a lease.
ALIVE_STATUSES = {"creating", "created", "running", "paused"}
#: Where systemd-resolved lists the upstream servers behind its 127.0.0.53 stub.
RESOLVED_UPSTREAM = "/run/systemd/resolve/resolv.conf"

_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]{0,63}")  # fullmatch: "$" passes "x\n"
_BRIDGE = re.compile(r"^(edu0|edu-[0-9a-f]{8})$")
_held = threading.local()


class NetworkError(Exception):
    """A network request that cannot be done; the message says why and what to do."""


def uses_bridge(ctx) -> bool:
    """Whether a container's plan needs bridge networking (--network bridge or a user one).
    Rootless too: then the bridges live in the user's own network namespace (``holder``)."""
    return (getattr(ctx.config, "network", "none") not in PREDEFINED
            and "net" not in ctx.config.shared)


# ---- the files ------------------------------------------------------------------------------

def base() -> Path:
    """The directory holding one JSON file per network."""
    return paths.state_dir() / "networks"


def assume_locked() -> None:
    """For the rootless network holder (``holder``), which works for ``edu`` processes that
    may hold the lock while they wait for it, and touches no registry file: from now on,
    this thread takes the lock as already held."""
    _held.depth = 1


@contextmanager
def locked() -> Iterator[None]:
    """Hold the registry's lock (re-entrant within one thread) for a read-modify-write."""
    if getattr(_held, "depth", 0):
        _held.depth += 1
        try:
            yield
        finally:
            _held.depth -= 1
        return
    paths.ensure(base())
    fd = os.open(base() / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        _held.depth = 1
        try:
            yield
        finally:
            _held.depth = 0
    finally:
        os.close(fd)  # closing the only descriptor releases the flock


def _path(name: str) -> Path:
    return base() / f"{name}.json"


def write(record: dict[str, Any]) -> None:
    """Write a network's file atomically: a temporary file, then rename.

    Not fsynced, as containers' own records are not: a lease lives as long as a container
    and is written three times per start and stop, where an fsync cost 2 ms each on a busy
    disk (issue 18). After a crash the leases name dead containers anyway, and the next
    cleanup releases them; ext4 writes a renamed file's data before the rename lands."""
    path = _path(record["name"])
    tmp = path.with_name(f".{record['name']}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        json.dump(record, f, indent=1, sort_keys=True)
    os.replace(tmp, path)


def _read(name: str) -> dict[str, Any] | None:
    try:
        return json.loads(_path(name).read_text())
    except FileNotFoundError:
        return None
    except ValueError as exc:
        raise NetworkError(f"the record of network {name} ({_path(name)}) is not valid JSON "
                           f"({exc}): remove that file and create the network again") from None


def records() -> list[dict[str, Any]]:
    out = []
    for path in sorted(base().glob("*.json")) if base().is_dir() else []:
        record = _read(path.stem)
        if record is not None:
            out.append(record)
    return out


# ---- subnets ---------------------------------------------------------------------------------

def host_routes() -> list[tuple[str, ipaddress.IPv4Network]]:
    """The host's IPv4 routes from /proc/net/route as (device, network), default excluded."""
    out = []
    try:
        lines = Path("/proc/net/route").read_text().splitlines()[1:]
    except OSError:
        return out
    for line in lines:
        fields = line.split()
        if len(fields) < 8:
            continue
        dest = ipaddress.IPv4Address(int(fields[1], 16).to_bytes(4, "little"))
        mask = ipaddress.IPv4Address(int(fields[7], 16).to_bytes(4, "little"))
        if int(mask) == 0:
            continue
        out.append((fields[0], ipaddress.IPv4Network(f"{dest}/{mask}", strict=False)))
    return out


def is_edu_bridge(device: str) -> bool:
    """True for the names edu gives its bridges: ``edu0`` and ``edu-`` plus 8 hex digits."""
    return bool(_BRIDGE.match(device))


def _clash(subnet: ipaddress.IPv4Network, skip: str = "") -> str:
    """What ``subnet`` overlaps on this host (a route, another edu network, or a network
    of another state directory's on its own bridge), or ''. A route on one of our own
    bridges, or on ``edu0``, which every root state directory shares, is no clash."""
    nets = records()
    # (a rootless user's bridges are in their holder's namespace: root's are not theirs)
    ours = {n.get("bridge") for n in nets} | {DEFAULT_BRIDGE}
    for dev, net in host_routes():
        if is_edu_bridge(dev) and (dev in ours or not paths.is_root()):
            continue
        if net.overlaps(subnet):
            return (f"another edu state directory's network on {dev} ({net})"
                    if is_edu_bridge(dev) else f"the host's route to {net} on {dev}")
    for n in nets:
        if n["name"] != skip and ipaddress.IPv4Network(n["subnet"]).overlaps(subnet):
            return f"edu network {n['name']} ({n['subnet']})"
    return ""


def _pick_subnet() -> ipaddress.IPv4Network:
    for candidate in ipaddress.IPv4Network(USER_POOL).subnets(new_prefix=24):
        if not _clash(candidate):
            return candidate
    raise NetworkError(f"every /24 of {USER_POOL} is taken by a host route or an edu "
                       "network: remove a network (edu network rm) or give --subnet")


def _new_record(name: str, subnet: ipaddress.IPv4Network, bridge: str = "") -> dict:
    net_id = secrets.token_hex(32)
    return {"name": name, "id": net_id, "driver": "bridge", "subnet": str(subnet),
            "gateway": str(subnet.network_address + 1), "bridge": bridge or f"edu-{net_id[:8]}",
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "containers": {}}


def _default() -> dict[str, Any]:
    """The default network's record, made on first use with the first subnet that is free."""
    record = _read(DEFAULT)
    if record is not None:
        return record
    reasons = []
    for candidate in map(ipaddress.IPv4Network, DEFAULT_SUBNETS):
        why = _clash(candidate)
        if not why:
            record = _new_record(DEFAULT, candidate, DEFAULT_BRIDGE)
            write(record)
            return record
        reasons.append(f"{candidate} meets {why}")
    raise NetworkError("no subnet is free for the default network (" + "; ".join(reasons)
                       + "): create one with edu network create --subnet and use --network")


# ---- the registry: create, ls, inspect, rm ---------------------------------------------------

def create(name: str, subnet: str | None = None, labels: dict[str, str] | None = None
           ) -> dict[str, Any]:
    """``docker network create NAME [--subnet CIDR] [--label K=V]``: register a bridge
    network (``labels`` kept in its record, as ``inspect`` shows them)."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise NetworkError(f"invalid network name {name!r}: use letters, digits and _.- "
                           "(starting with a letter or digit), up to 64 characters")
    if name in PREDEFINED or name == DEFAULT:
        raise NetworkError(f"network with name {name} already exists: {name} is predefined")
    if not paths.is_root() and not shutil.which("pasta"):
        raise NetworkError("rootless networks need pasta (from the passt package) to reach "
                           "the host, and it is not installed: apt-get install passt, or run "
                           "edu as root")
    with locked():
        if _read(name) is not None:
            raise NetworkError(f"network with name {name} already exists: pick another name, "
                               f"or remove it first (edu network rm {name})")
        if subnet is None:
            net = _pick_subnet()
        else:
            try:
                net = ipaddress.IPv4Network(subnet, strict=True)
            except ValueError as exc:
                raise NetworkError(f"invalid subnet {subnet!r} ({exc}): give an IPv4 network "
                                   "such as 10.78.5.0/24") from None
            if not 8 <= net.prefixlen <= 30:
                raise NetworkError(f"subnet {subnet} has a /{net.prefixlen} prefix: use one "
                                   "between /8 and /30")
            why = _clash(net)
            if why:
                raise NetworkError(f"subnet {subnet} overlaps {why}: pick another subnet")
        record = _new_record(name, net)
        record["labels"] = dict(labels or {})
        write(record)
        return record


def get(name: str) -> dict[str, Any]:
    """A network's record by name or id prefix; the default network is made on first use.
    Read without the lock (a record is replaced whole, by rename): a start reads its
    network's record several times, and only making the default one needs the lock."""
    if name in (DEFAULT, "default"):
        record = _read(DEFAULT)
        if record is not None:
            return record
        with locked():
            return _default()
    record = _read(name) if _NAME.fullmatch(name) else None
    if record is not None:
        return record
    hits = [n for n in records() if len(name) >= 3 and n["id"].startswith(name)]
    if len(hits) == 1:
        return hits[0]
    if not _NAME.fullmatch(name):
        raise NetworkError(f"network {name!r} not found: a network's name has only letters, "
                           "digits and _.- (see edu network ls)")
    raise NetworkError(f"network {name} not found: see edu network ls, or create it "
                       f"(edu network create {name})")


def ls() -> list[dict[str, Any]]:
    """``docker network ls``: every network, the predefined host and none included, by name."""
    with locked():
        _default()
        found = records()
    found += [{"name": n, "id": "", "driver": d, "subnet": "", "gateway": "", "bridge": "",
               "containers": {}} for n, d in PREDEFINED.items()]
    return sorted(found, key=lambda r: r["name"])


def inspect(name: str) -> dict[str, Any]:
    """``docker network inspect``: the record, with each container's name, address and ports."""
    return get(name)


def forget(name: str) -> dict[str, Any]:
    """Drop a network's record once nothing is attached (``networks.rm`` removes its bridge
    and rules first); returns the record it dropped."""
    if name in PREDEFINED or name in (DEFAULT, "default"):
        raise NetworkError(f"{name} is a pre-defined network and cannot be removed")
    with locked():
        release_stale()
        record = get(name)
        if record["containers"]:
            names = ", ".join(sorted(c.get("name") or cid[:12]
                                     for cid, c in record["containers"].items()))
            raise NetworkError(f"network {record['name']} has active endpoints (containers: "
                               f"{names}): stop or remove them first")
        _path(record["name"]).unlink(missing_ok=True)
        return record


# ---- IPAM: leases ----------------------------------------------------------------------------

def lease(network: str, container_id: str, name: str = "", hostname: str = "",
          aliases: list[str] | None = None, avoid=()) -> str:
    """Give ``container_id`` the lowest free address of ``network`` (the same one again if it
    already has one) and write it down, with its names there: its own and its ``aliases``
    (``--network-alias``, checked by ``life.states.valid_alias``). Addresses in ``avoid``
    (another state directory's containers on the same bridge) are not free either."""
    with locked():
        record = get(network)
        mine = record["containers"].get(container_id)
        if mine:
            return mine["ip"]
        subnet = ipaddress.IPv4Network(record["subnet"])
        taken = {c["ip"] for c in record["containers"].values()} | {record["gateway"]} \
            | set(avoid)
        for host in subnet.hosts():
            if str(host) not in taken:
                break
        else:
            raise NetworkError(f"network {record['name']} has no free address ({len(taken)} "
                               f"in use in {subnet}): remove a container, or create a network "
                               "with a larger subnet")
        record["containers"][container_id] = {
            "name": name or container_id[:12], "hostname": hostname or container_id[:12],
            "ip": str(host), "prefixlen": subnet.prefixlen, "veth": "", "mac": "", "ports": [],
            "aliases": list(aliases or [])}
        write(record)
        return str(host)


def update_endpoint(network: str, container_id: str, **fields: Any) -> dict[str, Any]:
    """Record more about a leased container (its veth, MAC, published ports)."""
    with locked():
        record = get(network)
        endpoint = record["containers"].get(container_id)
        if endpoint is None:
            raise NetworkError(f"container {container_id[:12]} has no address on network "
                               f"{record['name']}: lease one first")
        endpoint.update(fields)
        write(record)
        return endpoint


def release(network: str, container_id: str) -> bool:
    """Give back ``container_id``'s address on ``network``; False if it had none."""
    with locked():
        record = _read(DEFAULT if network == "default" else network)
        if record is None or container_id not in record["containers"]:
            return False
        del record["containers"][container_id]
        write(record)
        refresh_hosts(record["name"])
        return True


def endpoints() -> dict[str, tuple[str, dict[str, Any]]]:
    """Every leased container: ``{container_id: (network name, endpoint)}``."""
    with locked():
        return {cid: (n["name"], ep) for n in records() for cid, ep in n["containers"].items()}


def alive_ids() -> set[str]:
    """Ids of containers whose record exists and says they may still run."""
    out = set()
    for path in (paths.state_dir() / "containers").glob("*/state.json"):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if record.get("status") in ALIVE_STATUSES:
            out.add(record.get("id", path.parent.name))
    return out


def release_stale(alive: set[str] | None = None) -> list[str]:
    """Release the leases of containers neither in ``alive`` nor alive by their records.

    The records are read under the lock: a container writes its record before it leases,
    and leases under this lock, so every lease seen here has its record. An ``alive`` a
    caller read before the lock may miss a container that has started since, whose lease
    is not stale (a class's 60 runs at once lost addresses to that)."""
    released = []
    with locked():
        alive = alive_ids() | set(alive or ())
        for cid, (network, _) in sorted(endpoints().items()):
            if cid not in alive and release(network, cid):
                released.append(cid)
    return released


# ---- name resolution: /etc/hosts and /etc/resolv.conf ---------------------------------------

_HOSTS_HEAD = ("127.0.0.1\tlocalhost\n"
               "::1\tlocalhost ip6-localhost ip6-loopback\n"
               "fe00::0\tip6-localnet\n"
               "ff00::0\tip6-mcastprefix\n"
               "ff02::1\tip6-allnodes\n"
               "ff02::2\tip6-allrouters\n")


def container_dir(container_id: str) -> Path:
    """Where a container's record lives; its ``hosts`` and ``resolv.conf`` go beside it."""
    return paths.state_dir() / "containers" / container_id


def hosts_head() -> str:
    """The lines every container's /etc/hosts starts with: localhost, IPv4 and IPv6."""
    return _HOSTS_HEAD


def hosts(network: str, container_id: str) -> str:
    """The /etc/hosts of one container: itself, then each neighbour by name, aliases and
    short id. Two containers may share an alias: each has its line, and a resolver that
    reads the file gets both addresses (see the README: no round robin)."""
    return _hosts(get(network), container_id)


def _hosts(record: dict[str, Any], container_id: str) -> str:
    mine = record["containers"].get(container_id)
    if mine is None:
        raise NetworkError(f"container {container_id[:12]} is not on network {record['name']}")
    lines = [_HOSTS_HEAD]
    ordered = sorted(record["containers"].items(),
                     key=lambda item: (item[0] != container_id,
                                       ipaddress.IPv4Address(item[1]["ip"])))
    for cid, ep in ordered:
        names = [ep.get("hostname") or "", ep.get("name") or "", *(ep.get("aliases") or []),
                 cid[:12]]
        if cid != container_id:
            names = names[1:]
        lines.append(ep["ip"] + "\t" + " ".join(dict.fromkeys(n for n in names if n)) + "\n")
    return "".join(lines)


def resolv_conf(host_file: str = "/etc/resolv.conf") -> str:
    """A resolv.conf a container can use: the host's, minus resolvers only the host reaches.

    A container has its own loopback, so a resolver on 127.0.0.x is not there for it. When
    the host runs systemd-resolved (127.0.0.53), the real upstream servers are in
    /run/systemd/resolve/resolv.conf, as Docker reads them. If nothing usable is left, Docker
    writes 8.8.8.8; edu writes no nameserver and says why: glibc and musl then ask 127.0.0.1
    inside the container, which fails at once, where a public resolver would be a silent
    dependency on the internet (and a timeout where there is none).
    """
    source = host_file
    text = _read_text(host_file)
    upstream = RESOLVED_UPSTREAM
    if re.search(r"^\s*nameserver\s+127\.0\.0\.53\s*$", text, re.M) and os.path.exists(upstream):
        source, text = upstream, _read_text(upstream)
    kept, dropped, other = [], [], []
    for line in text.splitlines():
        words = line.split()
        if not words or words[0].startswith(("#", ";")):
            continue
        if words[0] == "nameserver" and len(words) > 1:
            try:
                addr = ipaddress.ip_address(words[1])
            except ValueError:
                addr = None  # e.g. fe80::1%eth0: a scoped address means nothing inside
            (kept if addr is not None and addr.version == 4 and not addr.is_loopback
             else dropped).append(words[1])
        elif words[0] in ("search", "domain", "options"):
            other.append(" ".join(words))
    out = [f"# Generated by edu from {source}."]
    if dropped:
        out.append(f"# Left out (not reachable from a container): {', '.join(dropped)}.")
    if not kept:
        out.append("# No resolver is reachable from here, so none is set: names of containers "
                   "on this network resolve through /etc/hosts.")
    out += [f"nameserver {ns}" for ns in kept] + other
    return "\n".join(out) + "\n"


def _read_text(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def _write_in_place(path: Path, text: str) -> None:
    # Not a rename: the container sees this file through a bind mount, which holds on to
    # the inode. A new file renamed over it would stay invisible inside; rewriting the same
    # inode shows the neighbours that come and go.
    with open(path, "a+") as f:
        f.seek(0)
        f.truncate()
        f.write(text)


def write_files(network: str, container_id: str) -> dict[str, Path]:
    """Write a container's ``hosts`` and ``resolv.conf`` and refresh its neighbours' hosts."""
    with locked():
        where = paths.ensure(container_dir(container_id))
        files = {"hosts": where / "hosts", "resolv.conf": where / "resolv.conf"}
        _write_in_place(files["resolv.conf"], resolv_conf())
        refresh_hosts(network, also=container_id)
        return files


def refresh_hosts(network: str, also: str = "") -> None:
    """Rewrite the hosts file of every container on ``network`` whose directory exists
    (from one read of the network: each start and end rewrites them all)."""
    with locked():
        record = get(network)
        for cid in sorted(record["containers"]):
            if cid == also:
                _write_in_place(paths.ensure(container_dir(cid)) / "hosts", _hosts(record, cid))
                continue
            # A neighbour's file is rewritten only while it is there: one whose container is
            # being removed (a killed run's, whose lease goes after its directory) must not
            # be made again, with a directory that nothing would ever remove.
            try:
                with open(container_dir(cid) / "hosts", "r+") as f:
                    f.truncate()
                    f.write(_hosts(record, cid))
            except FileNotFoundError:
                pass
