"""Networking: a container's own network namespace, and (later) the veth and bridge that
connect it. With --network none the namespace holds only the loopback device, which starts
down; this step brings it up, as Docker does.

Introduced in notebooks/06-web-app.
"""

from __future__ import annotations

import os
from typing import Any

from . import kernel
from .steps import CHILD, HOST, Step


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


class Pasta(Step):
    """Rootless: connect the container's network namespace to the host with pasta."""

    name = "pasta"
    side = HOST
    lesson = "notebooks/06-web-app"
    explain = (
        "Without root there is no bridge, veth or NAT rule to make: those need "
        "CAP_NET_ADMIN on the host. pasta (from the passt project) does it in user space: it "
        "opens a tap device inside the container's network namespace, copies the host's "
        "address and routes onto it, and relays the container's TCP and UDP through ordinary "
        "host sockets, which is also how -p works (pasta listens on the host port). Undo: "
        "pasta is stopped.")

    def enabled(self, ctx) -> bool:
        """Rootless containers on a network (root ones get a bridge)."""
        return ctx.rootless and ctx.config.network not in ("none", "host")

    def apply(self, ctx) -> None:
        """Start pasta against the container's PID 1 (it joins its user and net namespaces)."""
        import shutil
        import subprocess

        if not shutil.which("pasta"):
            raise OSError(2, "rootless networking needs pasta: apt-get install passt "
                             "(or run with --network none)")
        pidfile = ctx.paths.dir / "pasta.pid"
        cmd = ["pasta", "--config-net", "--quiet", "-P", str(pidfile)]
        for m in ctx.config.publish:
            where = "" if m.host_ip == "0.0.0.0" else f"{m.host_ip}/"
            cmd += ["-t" if m.proto == "tcp" else "-u",
                    f"{where}{m.host_port}:{m.container_port}"]
        out = subprocess.run(cmd + [str(ctx.pid)], capture_output=True, text=True)
        if out.returncode != 0:
            why = " ".join(line for line in out.stderr.splitlines()
                           if "syslog" not in line) or f"exit {out.returncode}"
            raise OSError(5, f"pasta could not connect the container: {why} (is /dev/net/tun "
                             "usable by this user? Debian's default mode is 0666)")
        ctx.pasta_pid = int(pidfile.read_text())
        ctx.ports = list(ctx.config.publish)

    def undo(self, ctx) -> None:
        """Stop pasta (it would outlive the namespace)."""
        import signal

        pid = getattr(ctx, "pasta_pid", 0)
        if pid:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            ctx.pasta_pid = 0

    def observe(self, ctx) -> dict[str, Any]:
        """Devices inside (pasta's tap appears as eth0)."""
        return {"container": links(ctx.pid)} if ctx.pid else {}
