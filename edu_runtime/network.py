"""Networking: a container's own network namespace, and (later) the veth and bridge that
connect it. With --network none the namespace holds only the loopback device, which starts
down; this step brings it up, as Docker does.

Introduced in notebooks/06-web-app.
"""

from __future__ import annotations

import os
from typing import Any

from . import kernel
from .steps import CHILD, HOST, Step, StepError


def links(pid: int | str) -> list[str]:
    """Network devices in ``pid``'s network namespace, as /proc/PID/net/dev lists them."""
    text = kernel.read(f"/proc/{pid}/net/dev", "") or ""
    return sorted(line.split(":")[0].strip() for line in text.splitlines()[2:] if ":" in line)


class Loopback(Step):
    """Bring ``lo`` up in the container's new network namespace."""

    name = "loopback"
    side = CHILD
    lesson = "notebooks/06-web-app"
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
    from . import networks, paths

    where = paths.ensure(ctx.paths.dir)
    (where / "hostname").write_text(ctx.config.hostname + "\n")
    if networks.uses_bridge(ctx):
        return
    if "net" in ctx.config.shared:
        hosts = kernel.read("/etc/hosts", "") + "\n"
    else:
        hosts = networks.hosts_head()
    (where / "hosts").write_text(hosts)
    (where / "resolv.conf").write_text(networks.resolv_conf())


class NameFiles(Step):
    """Bind-mount the container's own /etc/hostname, /etc/hosts and /etc/resolv.conf."""

    name = "name files"
    side = CHILD
    lesson = "notebooks/06-web-app"
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

        from .copy import ensure_in_root

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
        from . import networks, usernet

        try:
            ctx.holder, ctx.userns_fd = usernet.hold(ctx.container_id)
        except networks.NetworkError as exc:
            raise StepError(self.name, str(exc)) from None

    def undo(self, ctx) -> None:
        """Unregister; wait for the holder to go if this was its last container."""
        from . import usernet

        if ctx.userns_fd >= 0:
            os.close(ctx.userns_fd)
            ctx.userns_fd = -1
        usernet.release(ctx.holder)
        ctx.holder = None

    def observe(self, ctx) -> dict[str, Any]:
        """The holder and its pasta, its namespaces and the devices in its network."""
        from . import usernet

        rec = usernet.running()
        if rec is None:
            return {"holder": "not running"}
        pid = rec["pid"]
        return {"holder": pid, "pasta": rec["pasta"],
                "namespaces": {ns: os.readlink(f"/proc/{pid}/ns/{ns}") for ns in ("user", "net")},
                "devices": links(pid)}
