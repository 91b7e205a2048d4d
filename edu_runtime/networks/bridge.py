"""Bridge networking: a virtual switch on the host and a virtual cable into each container.

``docker run --network bridge`` gives a container three kernel objects, and so does edu:

- a **bridge** (``edu0``, Docker's ``docker0``): a switch inside the kernel. The host is
  plugged into it too, through the gateway address (10.77.0.1), so it routes between the
  containers and the rest of the world (``net.ipv4.ip_forward=1``);
- a **veth pair**: two network devices joined like the ends of a cable. One end stays on the
  host, plugged into the bridge (``veth`` plus 8 hex digits of the container id); the other
  is moved into the container's network namespace and renamed ``eth0``;
- inside the namespace, an **address** on ``eth0`` and a **default route** via the gateway.

All of it is netlink, the socket the ``ip`` command speaks, sent here through pyroute2
(never by running ``ip``), except the veth step's requests, sent on every start: those are
packed by hand (``rtnetlink``), which is ten times quicker. A netlink socket acts in the
network namespace it was *created* in, so to configure the container's side edu briefly
joins the container's namespace (``setns``, in this thread only), opens a socket, and comes
back: the ``ip netns exec`` trick without a new process. pyroute2 takes about 0.25 s to
import, so it is imported inside the functions that need it: ``edu run --network none``
never pays for it.

pyroute2 0.9 runs each request on an asyncio loop of its own, which cannot start in a thread
that already runs one (a Jupyter kernel does); there the requests go to a helper thread.

The NAT rules that let packets leave the bridge, and reach published ports, are in ``nat``;
the addresses and names come from ``networks``.

Introduced in notebooks/08-web-app.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .. import kernel, paths
from . import registry, rtnetlink
from .rtnetlink import describe

_OURS = re.compile(r"^(veth|ceth)([0-9a-f]{8})$")


# ---- plumbing --------------------------------------------------------------------------------

def _run(fn: Callable[..., Any], *args: Any) -> Any:
    """Call ``fn``; in a helper thread when this thread already runs an asyncio loop."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return fn(*args)
    with ThreadPoolExecutor(1, thread_name_prefix="edu-netlink") as pool:
        return pool.submit(fn, *args).result()


def preload() -> None:
    """Import here what a bridge's steps import (pyroute2, and asyncio under it: 250
    modules, about 0.1 s), so that the processes forked from this one find them imported.
    The supervisor forks a shim per foreground ``edu run``: without this, every shim
    imported them anew, and a thin ``edu run`` on the bridge took 175 ms instead of about
    65 (bench/run_startup.py)."""
    from concurrent.futures import ThreadPoolExecutor  # noqa: F401 - loaded lazily by name

    from pyroute2 import IPRoute  # noqa: F401
    from pyroute2.netlink.exceptions import NetlinkError  # noqa: F401


def _ipr(netns_fd: int | None = None):
    """An IPRoute (pyroute2's ``ip``) here or in ``netns_fd``'s namespace, noting requests."""
    from pyroute2 import IPRoute

    if netns_fd is None:
        ipr = IPRoute(groups=0)
    else:
        ipr = IPRoute(fileno=netns_socket(netns_fd).detach(), groups=0)
    # pyroute2 (0.9) hands every request, encoded, to its socket's request proxy just
    # before sending it: standing in front of that proxy sees exactly what is sent.
    core = getattr(ipr, "asyncore", None)
    if core is not None and hasattr(core, "request_proxy"):
        core.request_proxy = _Noting(core.request_proxy, "" if netns_fd is None else
                                     "container")
    return ipr


class _Noting:
    """Notes each netlink request while a step is recorded, then hands it to the real proxy."""

    def __init__(self, inner, netns: str):
        self.inner, self.netns = inner, netns

    def handle(self, msg) -> bytes:
        """Note ``msg``; what the real proxy answers (b"" lets the request go out)."""
        if kernel.recording():
            kernel.note("netlink", *describe(msg, self.netns))
        return self.inner.handle(msg) if self.inner is not None else b""


def netns_socket(netns_fd: int) -> socket.socket:
    """A netlink socket that lives in another network namespace (an open /proc/PID/ns/net).

    setns(2) moves only the calling thread, and a socket stays in the namespace it was made
    in, so: join, make the socket, come back.
    """
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        kernel.setns(netns_fd, kernel.CLONE_NEWNET)
        try:
            return socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, 0)  # NETLINK_ROUTE
        finally:
            kernel.setns(own, kernel.CLONE_NEWNET)
    finally:
        os.close(own)


def _netlink_error(exc: Exception, doing: str) -> registry.NetworkError:
    code = getattr(exc, "code", None) or (exc.args[0] if exc.args else 0)
    why = os.strerror(code) if isinstance(code, int) and code > 0 else str(exc)
    return registry.NetworkError(f"{doing} failed: {why}")


def _need_root() -> None:
    if not paths.is_root():
        raise registry.NetworkError(
            "--network bridge needs root: only root can add links and NAT rules on the host. "
            "Run edu as root, or use --network none (or host)")


def sysctl(key: str, value: str | None = None) -> str:
    """Read (and with ``value``, first write) a sysctl such as ``net/ipv4/ip_forward``."""
    path = Path("/proc/sys") / key
    if value is not None and path.read_text().strip() != value:
        kernel.note("write", str(path), value)
        path.write_text(value)
    return path.read_text().strip()


def veth_names(container_id: str) -> tuple[str, str]:
    """The host end and the container end (before it becomes eth0) of a container's veth."""
    return f"veth{container_id[:8]}", f"ceth{container_id[:8]}"


def _mac(name: str) -> str:
    # A fixed address for the bridge: otherwise it takes the lowest MAC of its ports, so
    # the gateway's MAC would change when a container joins and stale ARP entries would
    # cut the others off for a while. 02: "locally administered", like Docker's 02:42.
    digest = hashlib.sha256(name.encode()).digest()
    return "02:42:" + ":".join(f"{b:02x}" for b in digest[:4])


def host_links() -> list[str]:
    """Names of the host's network devices (``ls /sys/class/net``)."""
    return sorted(os.listdir("/sys/class/net"))


def _master(name: str) -> str:
    try:
        return os.path.basename(os.readlink(f"/sys/class/net/{name}/master"))
    except OSError:
        return ""


# ---- the bridge ------------------------------------------------------------------------------

#: bridge name -> its ifindex when this process last made sure of it (see ensure_bridge)
_ensured: dict[str, int] = {}


def _ifindex(name: str) -> int:
    try:
        with open(f"/sys/class/net/{name}/ifindex") as f:
            return int(f.read())
    except (OSError, ValueError):
        return 0


def ensure_bridge(network: dict[str, Any]) -> None:
    """``ip link add edu0 type bridge``, its gateway address, up; forwarding on (idempotent).

    A warm process (the supervisor) that made sure of this bridge before skips the netlink
    round trips while the device is the same one (same ifindex) and up: a bridge removed
    and made again by someone else gets a new index, and is checked in full."""
    _need_root()
    name = network["bridge"]
    if not _known(name):
        with registry.locked():  # two `edu run`s at once must not both add it
            _run(_ensure_bridge, network)
        _ensured[name] = _ifindex(name)
    # Global, and left on (Docker does the same). Unlike dockerd, edu does not then set
    # iptables' FORWARD policy to DROP: that would cut off libvirt's and others' registry.
    sysctl("net/ipv4/ip_forward", "1")
    # Lets 127.0.0.1:PORT be DNATed to a container: without it the kernel refuses to route
    # a packet with a 127.x address out of a real device. This one device is enough
    # (the kernel ORs conf/all with conf/DEVICE); nat.py guards against its danger.
    sysctl(f"net/ipv4/conf/{network['bridge']}/route_localnet", "1")


def bridge_ready(network: dict[str, Any]) -> bool:
    """Whether the network's bridge is there, a bridge, up, with its gateway address: checks
    only, through netlink reads; remembered as ``ensure_bridge`` remembers it, so that a
    process forked from this one skips the netlink round trips (the supervisor's warm-up)."""
    name = network["bridge"]
    if _known(name):
        return True
    if not _is_up(name) or not _run(_is_ready, network):
        return False
    _ensured[name] = _ifindex(name)
    return True


def _is_up(name: str) -> bool:
    return bool(int(kernel.read(f"/sys/class/net/{name}/flags", "0x0"), 16) & 1)  # IFF_UP


def _known(name: str) -> bool:
    """This process made sure of the bridge, and it is the same device (index), still up."""
    return _is_up(name) and _ensured.get(name) == _ifindex(name)


def _is_bridge(ipr, index: int) -> bool:
    return ipr.get_links(index)[0].get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND") == "bridge"


def _has_gateway(ipr, index: int, network: dict[str, Any]) -> bool:
    prefixlen = int(network["subnet"].split("/")[1])
    return (network["gateway"], prefixlen) in {
        (a.get("IFA_ADDRESS"), a["prefixlen"])
        for a in ipr.get_addr(index=index, family=socket.AF_INET)}


def _is_ready(network: dict[str, Any]) -> bool:
    from pyroute2.netlink.exceptions import NetlinkError

    with _ipr() as ipr:
        try:
            found = ipr.link_lookup(ifname=network["bridge"])
            return bool(found) and _is_bridge(ipr, found[0]) and \
                _has_gateway(ipr, found[0], network)
        except NetlinkError:
            return False


def _ensure_bridge(network: dict[str, Any]) -> None:
    from pyroute2.netlink.exceptions import NetlinkError

    name, prefixlen = network["bridge"], int(network["subnet"].split("/")[1])
    with _ipr() as ipr:
        try:
            found = ipr.link_lookup(ifname=name)
            if not found:
                ipr.link("add", ifname=name, kind="bridge", address=_mac(name))
                found = ipr.link_lookup(ifname=name)
            if not _is_bridge(ipr, found[0]):
                raise registry.NetworkError(
                    f"a network device named {name} exists and is not a bridge: rename or "
                    f"remove it (ip link del {name}), edu needs that name for network "
                    f"{network['name']}")
            if not _has_gateway(ipr, found[0], network):
                ipr.addr("add", index=found[0], address=network["gateway"],
                         prefixlen=prefixlen)
            ipr.link("set", index=found[0], state="up")
        except NetlinkError as exc:
            raise _netlink_error(exc, f"setting up bridge {name}") from None


def remove_bridge(network: dict[str, Any]) -> None:
    """``ip link del edu0``: the bridge goes, with its address and its route."""
    _delete_links([network["bridge"]])


def _delete_links(names: list[str]) -> None:
    """``ip link del`` each of ``names`` that is there (packed by hand: every container's
    undo sends one, and pyroute2's first request in a fresh process cost about 9 ms)."""
    present = [n for n in names if os.path.exists(f"/sys/class/net/{n}")]
    if not present:
        return
    with rtnetlink.Socket() as nl:
        for name in present:
            try:
                nl.request(rtnetlink.del_link(name))
            except OSError as exc:
                if exc.errno != errno.ENODEV:  # gone already (a veth goes with its peer)
                    raise _netlink_error(exc, f"deleting {name}") from None


# ---- the veth pair ---------------------------------------------------------------------------

def attach(network: dict[str, Any], pid: int, container_id: str, ip: str) -> dict[str, str]:
    """Connect ``pid``'s network namespace to the network's bridge with address ``ip``.

    The host end joins the bridge; the other end moves into the namespace, becomes eth0,
    gets ``ip`` and a default route via the gateway. Returns the host end's name and eth0's
    MAC address.
    """
    _need_root()
    # Addresses differ from run to run: the trace shows them as placeholders.
    kernel.alias(ip, "<ip>")
    kernel.alias(container_mac(ip), "<mac>")
    fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        return _attach(network, fd, container_id, ip)
    finally:
        os.close(fd)


def container_mac(ip: str) -> str:
    """eth0's MAC address, made from its IP as Docker does (10.77.0.2 -> 02:42:0a:4d:00:02):
    unique on the bridge, and known before the device exists."""
    return "02:42:" + ":".join(f"{int(octet):02x}" for octet in ip.split("."))


def _attach(network: dict[str, Any], netns_fd: int, container_id: str,
            ip: str) -> dict[str, str]:
    host, peer = veth_names(container_id)
    prefixlen = int(network["subnet"].split("/")[1])
    bridge = _ifindex(network["bridge"])
    if not bridge:
        raise registry.NetworkError(f"bridge {network['bridge']} is missing: the bridge "
                                    "step makes it, run it first")
    if os.path.exists(f"/sys/class/net/{host}"):
        raise registry.NetworkError(
            f"a device named {host} exists already (left by a container with the same "
            "id prefix?): edu prune removes leftovers, then try again")
    mac = container_mac(ip)
    # Packed by hand (rtnetlink.py), not through pyroute2: these requests are sent on
    # every container start, and pyroute2 took about 9 ms of Python over them.
    with rtnetlink.Socket() as nl:
        try:
            # One message: the pair, the host end on the bridge and up, the other end
            # made straight inside the container's namespace, already called eth0.
            nl.request(rtnetlink.new_veth(host, bridge, "eth0", netns_fd, mac))
        except OSError as exc:
            raise _netlink_error(exc, f"creating the veth pair {host}/eth0") from None
    with rtnetlink.Socket(netns_socket(netns_fd), netns="container") as nl:
        try:
            index = nl.link_index("eth0")
            nl.request(rtnetlink.add_address(index, ip, prefixlen))
            nl.request(rtnetlink.set_up(index))
            nl.request(rtnetlink.set_up(1))  # lo is always 1 in a new namespace
            nl.request(rtnetlink.add_default_route(network["gateway"]))
        except OSError as exc:
            raise _netlink_error(exc, "configuring eth0 in the container") from None
    return {"veth": host, "mac": mac}


def detach(container_id: str) -> None:
    """``ip link del vethXXXXXXXX``: deleting one end of a veth pair deletes the other."""
    _delete_links(list(veth_names(container_id)))


def _is_ours(name: str) -> bool:
    """A veth edu made: ``ceth`` + 8 hex, or ``veth`` + 8 hex on an edu bridge (or on none,
    half made). Docker's are ``veth`` + 7 hex, on docker0 or br-*: never touched."""
    match = _OURS.match(name)
    if not match:
        return False
    master = _master(name)
    return match.group(1) == "ceth" or not master or registry.is_edu_bridge(master)


def cleanup_stale(alive: set[str]) -> list[str]:
    """Delete edu's veths on the host whose container is not in ``alive``; their names.

    A container's veth usually dies with its network namespace, when its last process
    exits. What can be left is a pair made by an ``edu`` killed before it moved one end.
    """
    prefixes = {cid[:8] for cid in alive}
    stale = [n for n in host_links() if _is_ours(n) and n[4:] not in prefixes]
    _delete_links(stale)
    return sorted(stale)


def teardown_all(bridges: list[str]) -> None:
    """Delete every edu veth and bridge (``bridges``, plus any device named like one)."""
    names = [n for n in host_links() if _is_ours(n)]
    names += [n for n in host_links() if n in bridges or
              (registry.is_edu_bridge(n) and os.path.isdir(f"/sys/class/net/{n}/bridge"))]
    _delete_links(names)


# ---- observing -------------------------------------------------------------------------------

def host_view(network: dict[str, Any], veth: str = "") -> dict[str, Any]:
    """The host's side: the bridge (state, address, ports), a veth, and the forwarding sysctls."""
    name = network["bridge"]
    out: dict[str, Any] = {"ip_forward": sysctl("net/ipv4/ip_forward")}
    if not os.path.exists(f"/sys/class/net/{name}"):
        out[name] = "absent"
        return out
    out[name] = {
        "state": kernel.read(f"/sys/class/net/{name}/operstate", "?"),
        "address": f"{network['gateway']}/{network['subnet'].split('/')[1]}",
        "ports": sorted(os.listdir(f"/sys/class/net/{name}/brif")),
        "route_localnet": sysctl(f"net/ipv4/conf/{name}/route_localnet")}
    if veth:
        out[veth] = ({"master": _master(veth),
                      "state": kernel.read(f"/sys/class/net/{veth}/operstate", "?")}
                     if os.path.exists(f"/sys/class/net/{veth}") else "absent")
    return out


def container_view(pid: int) -> dict[str, Any]:
    """Inside ``pid``'s network namespace: links, IPv4 addresses and routes, as ``ip`` shows."""
    fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        return _run(_container_view, fd)
    finally:
        os.close(fd)


def _container_view(netns_fd: int) -> dict[str, Any]:
    with _ipr(netns_fd) as ipr:
        names = {link["index"]: link.get("IFLA_IFNAME") for link in ipr.get_links()}
        links = sorted(f"{link.get('IFLA_IFNAME')} {link.get('IFLA_OPERSTATE')} "
                       f"{link.get('IFLA_ADDRESS')}" for link in ipr.get_links())
        addrs = sorted(f"{names.get(a['index'])} {a.get('IFA_ADDRESS')}/{a['prefixlen']}"
                       for a in ipr.get_addr(family=socket.AF_INET))
        routes = []
        for r in ipr.get_routes(family=socket.AF_INET, table=254):
            dst = f"{r.get('RTA_DST')}/{r['dst_len']}" if r.get("RTA_DST") else "default"
            via = f" via {r.get('RTA_GATEWAY')}" if r.get("RTA_GATEWAY") else ""
            routes.append(f"{dst}{via} dev {names.get(r.get('RTA_OIF'))}")
    return {"links": links, "addresses": addrs, "routes": sorted(routes)}
