"""Networking: a container's own network namespace, and (later) the veth and bridge that
connect it. With --network none the namespace holds only the loopback device, which starts
down; this step brings it up, as Docker does.

Introduced in notebooks/08-web-app.
"""

from __future__ import annotations

import os
import socket
from typing import Any

from .. import kernel, paths
from ..steps import CHILD, HOST, Step, StepError
from . import bridge, holder, manage, nat, registry


def links(pid: int | str) -> list[str]:
    """Network devices in ``pid``'s network namespace, as /proc/PID/net/dev lists them."""
    text = kernel.read(f"/proc/{pid}/net/dev", "") or ""
    return sorted(line.split(":")[0].strip() for line in text.splitlines()[2:] if ":" in line)


class Loopback(Step):
    """Bring ``lo`` up in the container's new network namespace."""

    name = "loopback"
    side = CHILD
    lesson = "notebooks/08-web-app"
    explain = (
        "A new network namespace has exactly one device, the loopback 'lo', and it is down. "
        "The child brings it up (the ioctl behind `ip link set lo up`), so programs can talk "
        "to 127.0.0.1 inside. With --network none that is all the container gets: no route "
        "out. Undo: the namespace and its devices die with the container.")

    def enabled(self, ctx) -> bool:
        """Only when the container has its own network namespace."""
        return "net" not in ctx.config.shared

    def apply(self, ctx) -> None:
        """ioctl(SIOCSIFFLAGS, IFF_UP) on lo."""
        kernel.set_link_up("lo")

    def observe(self, ctx) -> dict[str, Any]:
        """Devices inside beside the host's."""
        if not ctx.pid:
            return {}
        return {"container": links(ctx.pid), "host": links(os.getpid())}


def write_name_files(ctx) -> None:
    """The host's side of NameFiles, before the child is forked: /etc/hostname always, and
    /etc/hosts and /etc/resolv.conf when no bridge step will write them (--network none:
    localhost only; host: the host's own files, as Docker does)."""

    where = paths.ensure(ctx.paths.dir)
    (where / "hostname").write_text(ctx.config.hostname + "\n")
    if registry.uses_bridge(ctx):
        return
    if "net" in ctx.config.shared:
        hosts = kernel.read("/etc/hosts", "") + "\n"
    else:
        hosts = registry.hosts_head()
    (where / "hosts").write_text(hosts)
    (where / "resolv.conf").write_text(registry.resolv_conf())


class NameFiles(Step):
    """Bind-mount the container's own /etc/hostname, /etc/hosts and /etc/resolv.conf."""

    name = "name files"
    side = CHILD
    lesson = "notebooks/08-web-app"
    explain = (
        "How does a container find its neighbours by name? Docker writes an /etc/hostname, "
        "/etc/hosts and /etc/resolv.conf for every container and bind-mounts them over the "
        "image's files. On a network, hosts lists this container and every other container "
        "on it, by name and short id, and is rewritten in place when neighbours come and go; "
        "with --network none it holds localhost only. The image's own files are not "
        "changed. Undo: the mounts die with the namespace.")

    def apply(self, ctx) -> None:
        """Bind each file onto its target, resolved inside the image (never through a link)."""
        import stat

        from ..safepath import ensure_in_root

        root = os.open(ctx.paths.merged, os.O_PATH | os.O_DIRECTORY)
        try:
            etc = ensure_in_root(root, "/etc")  # resolved inside the image, never the host's
            # The host wrote these beside the container's record in the veth step; the child
            # was forked before that, so it finds them by path, not through ctx.endpoint.
            for name in ("hostname", "hosts", "resolv.conf"):
                source = str(ctx.paths.dir / name)
                try:  # a link (resolv.conf -> /run/...) is replaced, never followed
                    if stat.S_ISLNK(os.stat(name, dir_fd=etc, follow_symlinks=False).st_mode):
                        os.unlink(name, dir_fd=etc)
                except FileNotFoundError:
                    pass
                fd = ensure_in_root(root, f"/etc/{name}", directory=False)
                try:
                    kernel.mount(source, f"/proc/self/fd/{fd}", None, kernel.MS_BIND)
                finally:
                    os.close(fd)
            os.close(etc)
        finally:
            os.close(root)

    def observe(self, ctx) -> dict[str, Any]:
        """The container's /etc/hosts, as it reads it."""
        if not ctx.pid:
            return {}
        return {"hosts": (kernel.read(f"/proc/{ctx.pid}/root/etc/hosts", "") or "").splitlines()}


class NetworkHolder(Step):
    """Rootless: register with your network holder (started with its pasta if none runs)."""

    name = "network holder"
    side = HOST
    lesson = "notebooks/08-web-app"
    explain = (
        "Without root, edu may not add a bridge, a veth or a NAT rule to the host's network: "
        "that needs CAP_NET_ADMIN there. But you may be root of a user namespace of your "
        "own, and of a network namespace it owns. So, as Docker's rootless mode does, one "
        "small process of yours, the network holder, keeps such a pair, with pasta (from "
        "the passt project) attached as its way out: a tap device with the host's address, "
        "relayed through ordinary host sockets. Your bridges, veths and NAT rules live in "
        "there, made by the same steps root uses on the host, and containers on one network "
        "reach each other through them. This step starts the holder if none runs and "
        "registers the container with it; the container then joins the holder's user "
        "namespace, so the holder is root over its network namespace too. Undo: the "
        "container unregisters; the last one out stops the holder and pasta, and the "
        "namespace goes with its bridges and rules.")

    def enabled(self, ctx) -> bool:
        """Rootless containers on a bridge network (root ones use the host's own)."""
        return getattr(ctx, "joins_holder", False)

    def apply(self, ctx) -> None:
        """Start the holder if needed; keep a connection to it and its user namespace."""

        try:
            ctx.holder, ctx.userns_fd = holder.hold(ctx.container_id)
        except registry.NetworkError as exc:
            raise StepError(self.name, str(exc)) from None

    def undo(self, ctx) -> None:
        """Unregister; wait for the holder to go if this was its last container."""
        if ctx.userns_fd >= 0:
            os.close(ctx.userns_fd)
            ctx.userns_fd = -1
        holder.release(ctx.holder)
        ctx.holder = None

    def observe(self, ctx) -> dict[str, Any]:
        """The holder and its pasta, its namespaces and the devices in its network."""
        rec = holder.running()
        if rec is None:
            return {"holder": "not running"}
        pid = rec["pid"]
        return {"holder": pid, "pasta": rec["pasta"],
                "namespaces": {ns: os.readlink(f"/proc/{pid}/ns/{ns}") for ns in ("user", "net")},
                "devices": links(pid)}


class Bridge(Step):
    """Make sure the network's bridge exists, has its gateway address, and is up."""

    name = "bridge"
    side = HOST
    lesson = "notebooks/08-web-app"
    explain = (
        "The host makes sure the network's bridge exists: a virtual switch in the kernel, "
        "edu0 for the default network (Docker's docker0). It gets the gateway address "
        "(10.77.0.1/16 by default), which also adds a route to the whole subnet through it, "
        "and the host turns on IP forwarding (net.ipv4.ip_forward=1) so it may route the "
        "containers' packets. This is `ip link add edu0 type bridge`, `ip addr add` and "
        "`ip link set up`, sent as netlink messages. Rootless, all of this happens in your "
        "own network namespace, done by your network holder (see that step). Undo: the "
        "bridge is shared by every container on the network, so only the last one out "
        "removes it.")

    def enabled(self, ctx) -> bool:
        """Only for --network bridge or a user-defined network."""
        return registry.uses_bridge(ctx)

    def apply(self, ctx) -> None:
        """Look the network up (the default one is made on first use) and ensure its bridge
        (rootless: the network holder does, in your own network namespace)."""
        try:
            network = registry.get(ctx.config.network)
            if _holder(ctx) is None:
                bridge.ensure_bridge(network)
            else:
                holder.call(ctx.holder, "bridge", network=network)
        except registry.NetworkError as exc:
            raise StepError(self.name, str(exc)) from None

    def undo(self, ctx) -> None:
        """The last container out removes the bridge (and edu's rules when none is left)."""
        if _holder(ctx) is None:
            manage.retire_if_unused(ctx.config.network)
        else:
            _quietly(ctx, "retire", network=registry.get(ctx.config.network))

    def observe(self, ctx) -> dict[str, Any]:
        """The bridge's state, address and ports, and the forwarding sysctl."""
        network = registry.get(ctx.config.network)
        if _holder(ctx) is None:
            return bridge.host_view(network)
        return holder.call(ctx.holder, "view", network=network)


def _holder(ctx):
    """The connection to the rootless network holder (``holder``), or None as root."""
    return getattr(ctx, "holder", None)


def _quietly(ctx, op: str, **fields: Any) -> None:
    """A request to the holder from an undo, which must never raise."""
    try:
        holder.call(ctx.holder, op, **fields)
    except registry.NetworkError:
        pass  # the holder is gone, and its namespace with everything in it


class Veth(Step):
    """Cable the container to the bridge: a veth pair, eth0 inside, address, default route."""

    name = "veth"
    side = HOST
    lesson = "notebooks/08-web-app"
    explain = (
        "The host leases the container the network's lowest free address, then makes a veth "
        "pair: two devices joined like the ends of a cable. One end (vethXXXXXXXX) is "
        "plugged into the bridge; the other is moved into the container's network namespace "
        "(by an open /proc/PID/ns/net), where it is renamed eth0, given the address, and "
        "brought up with lo. A default route via the gateway sends everything else to the "
        "host. edu also writes the container's /etc/hosts (itself and its neighbours, by "
        "name and by --network-alias) and /etc/resolv.conf. Rootless, the holder makes the "
        "pair in your own network namespace, where it may, since the container's namespaces "
        "belong to its user namespace. Undo: deleting the host end deletes both ends, and "
        "the address goes back to the pool.")

    def enabled(self, ctx) -> bool:
        """Only for --network bridge or a user-defined network."""
        return registry.uses_bridge(ctx)

    def apply(self, ctx) -> None:
        """Lease, create the pair, move and configure the peer, write hosts and resolv.conf."""
        try:
            network = registry.get(ctx.config.network)
            aliases = list(getattr(ctx.config, "aliases", None) or [])
            ctx.endpoint = {"network": network["name"], "ip": "", "veth": "",
                            "aliases": aliases}
            if _holder(ctx) is None:
                # Root's bridges are the host's: another state directory's containers on
                # edu0 hold addresses our registry does not know of. Held until our
                # address is on our eth0, where theirs will look (manage.claim).
                with manage.claim():
                    ip = registry.lease(network["name"], ctx.container_id, ctx.config.name,
                                        ctx.config.hostname, aliases,
                                        avoid=manage.addresses_of_others(network))
                    # With our lease held, no other container's undo can retire the
                    # bridge; if one did just before we leased, this makes it again.
                    ctx.endpoint["ip"] = ip
                    bridge.ensure_bridge(network)
                    ctx.endpoint.update(bridge.attach(network, ctx.pid, ctx.container_id, ip))
            else:  # the holder makes the pair in its namespace, and moves one end into ours
                # (a rootless user's bridges are in their holder's namespace, theirs alone)
                ip = registry.lease(network["name"], ctx.container_id, ctx.config.name,
                                    ctx.config.hostname, aliases)
                ctx.endpoint["ip"] = ip
                ctx.endpoint.update(holder.call(ctx.holder, "attach", network=network,
                                                 pid=ctx.pid, ip=ip))
            registry.update_endpoint(network["name"], ctx.container_id,
                                     veth=ctx.endpoint["veth"], mac=ctx.endpoint["mac"])
            files = registry.write_files(network["name"], ctx.container_id)
            ctx.endpoint["files"] = {k: str(v) for k, v in files.items()}
        except registry.NetworkError as exc:
            raise StepError(self.name, str(exc)) from None

    def undo(self, ctx) -> None:
        """Delete the host end (the peer goes with it) and release the address."""
        endpoint = getattr(ctx, "endpoint", None)
        if not endpoint:
            return
        if _holder(ctx) is None:
            bridge.detach(ctx.container_id)
        else:
            _quietly(ctx, "detach")
        registry.release(endpoint["network"], ctx.container_id)
        ctx.endpoint = None

    def observe(self, ctx) -> dict[str, Any]:
        """Links, addresses and routes inside the container, and the veth's host end."""
        host, _ = bridge.veth_names(ctx.container_id)
        network = registry.get(ctx.config.network)
        if _holder(ctx) is not None:  # both sides are in namespaces only the holder may enter
            return holder.call(ctx.holder, "view", network=network, veth=host, pid=ctx.pid)
        out = {"host": bridge.host_view(network, host)}
        if ctx.pid:
            out["container"] = bridge.container_view(ctx.pid)
        return out


class ReservePorts(Step):
    """Hold every published host port with a socket, before anything else is made."""

    name = "ports"
    side = HOST
    lesson = "notebooks/08-web-app"
    explain = (
        "For each -p HOSTPORT:PORT the host binds a socket to HOSTPORT and keeps it open "
        "while the container runs, as Docker's docker-proxy does. The NAT rule added later "
        "carries the traffic; the socket is there so the port is really ours: if a program "
        "already uses it, bind() fails now, before anything is made ('address already in "
        "use'), and a program started later cannot take it and be silently bypassed. "
        "-p 80 (no host port) lets the kernel pick a free one. Undo: close the sockets.")

    def enabled(self, ctx) -> bool:
        """Only when ports are published on a bridge network."""
        return registry.uses_bridge(ctx) and bool(getattr(ctx.config, "publish", None))

    def apply(self, ctx) -> None:
        """bind() (and listen() for TCP) each host port; remember the real port numbers."""
        try:
            ctx.ports, ctx.port_holds = nat.reserve(list(ctx.config.publish))
        except registry.NetworkError as exc:
            raise StepError(self.name, str(exc)) from None

    def undo(self, ctx) -> None:
        """Close the sockets: the ports are free again."""
        for sock in getattr(ctx, "port_holds", None) or []:
            sock.close()
        ctx.port_holds = []

    def observe(self, ctx) -> dict[str, Any]:
        """The host ports this process holds."""
        held = []
        for sock in getattr(ctx, "port_holds", None) or []:
            if sock.fileno() != -1:
                ip, port = sock.getsockname()
                proto = "tcp" if sock.type == socket.SOCK_STREAM else "udp"
                held.append(f"{ip}:{port}/{proto}")
        return {f"held by edu (pid {os.getpid()})": sorted(held)}


class Nat(Step):
    """Masquerade for the network, and DNAT for each published port of this container."""

    name = "nat"
    side = HOST
    lesson = "notebooks/08-web-app"
    explain = (
        "The host makes sure edu's nftables table has this network's rules: masquerade, so "
        "packets from the containers leave with the host's address; forward accepts; and a "
        "drop towards other edu registry. dockerd's FORWARD policy is DROP, so when its "
        "DOCKER-USER chain exists edu adds accepts for the bridge there too. Then, for each "
        "-p HOSTPORT:PORT, one DNAT rule: a packet for HOSTPORT on a host address (127.0.0.1 "
        "included) is rewritten to go to the container's address and PORT. Rootless, the "
        "rules live in your own network namespace, and no host packet can be rewritten: the "
        "held host ports are handed to your network holder, which accepts each connection "
        "and opens another to the container from inside (as docker-proxy and RootlessKit "
        "do). Undo: delete this container's DNAT rules, found by their comment (rootless: "
        "the holder closes the ports it relays); the network's rules stay.")

    def enabled(self, ctx) -> bool:
        """Only for --network bridge or a user-defined network."""
        return registry.uses_bridge(ctx)

    def apply(self, ctx) -> None:
        """Ensure the network's rules; add the container's DNAT rules and record its ports
        (rootless: hand the held ports to the network holder, which relays them)."""
        try:
            network = registry.get(ctx.config.network)
            ports = getattr(ctx, "ports", None) or []
            conn = _holder(ctx)
            if conn is None:
                nat.ensure_network(network)
                if ports:
                    nat.publish(ctx.container_id, ctx.endpoint["ip"], ports)
            elif ports:  # the rules came with the bridge step; no DNAT crosses the holder

                holder.call(conn, "publish", fds=[s.fileno() for s in ctx.port_holds],
                             ports=[p.to_dict() for p in ports])
            if ports:
                registry.update_endpoint(network["name"], ctx.container_id,
                                         ports=[p.to_dict() for p in ports])
        except registry.NetworkError as exc:
            raise StepError(self.name, str(exc)) from None

    def undo(self, ctx) -> None:
        """Delete the rules tagged with this container's id (rootless: stop relaying)."""
        conn = _holder(ctx)
        if conn is None:
            if getattr(ctx, "ports", None):  # no port published, no rule carries its id
                nat.unpublish(ctx.container_id)
            return

        try:
            holder.call(conn, "unpublish")
        except registry.NetworkError:
            pass  # the holder is gone, and its relays with it

    def observe(self, ctx) -> dict[str, Any]:
        """The network's and the container's rules, as nft and iptables print them."""
        network = registry.get(ctx.config.network)
        conn = _holder(ctx)
        if conn is not None:

            return holder.call(conn, "view", network=network, nat=True)
        return {"network rules": nat.rule_lines(f"edu-net:{network['bridge']}"),
                "container rules": nat.rule_lines(f"edu:{ctx.container_id}"),
                "DOCKER-USER": nat.docker_user_lines()}
