"""Networking: a container's own network namespace, and (later) the veth and bridge that
connect it. With --network none the namespace holds only the loopback device, which starts
down; this step brings it up, as Docker does.

Introduced in notebooks/06-web-app.
"""

from __future__ import annotations

import os
from typing import Any

from . import kernel
from .steps import CHILD, Step


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
