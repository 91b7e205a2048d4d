"""The container's hostname: one field of the UTS namespace. Introduced in
notebooks/06-step-by-step."""

from __future__ import annotations

import os
from typing import Any

from . import kernel
from .steps import CHILD, Step


def hostname_of(pid: int) -> str:
    """The hostname ``pid`` sees: read by joining its UTS namespace in a throwaway child."""
    r, w = os.pipe()
    fd = os.open(f"/proc/{pid}/ns/uts", os.O_RDONLY)

    def child() -> int:
        kernel.setns(fd, kernel.CLONE_NEWUTS)
        os.write(w, os.uname().nodename.encode())
        return 0

    try:
        kernel.in_child(child, timeout=5)
    finally:
        os.close(fd)
        os.close(w)
    with os.fdopen(r, "rb") as f:
        return f.read().decode()


class Hostname(Step):
    """sethostname(2) inside the new UTS namespace."""

    name = "hostname"
    side = CHILD
    lesson = "notebooks/06-step-by-step"
    explain = (
        "The container gets its own name with sethostname(). Only its UTS namespace sees "
        "it: the host's hostname does not change. Docker uses the first 12 hex digits of the "
        "container id unless you pass --hostname. Undo: the name dies with the namespace.")

    def enabled(self, ctx) -> bool:
        """Skipped with --uts host, where setting it would rename the host."""
        return "uts" not in ctx.config.shared

    def apply(self, ctx) -> None:
        """Set the hostname."""
        kernel.sethostname(ctx.config.hostname)

    def observe(self, ctx) -> dict[str, Any]:
        """The hostname inside, beside the host's."""
        if not ctx.pid:
            return {}
        return {"container": hostname_of(ctx.pid), "host": os.uname().nodename}
