"""Capabilities: root's powers, split into about 40 pieces that can be kept or dropped.

A container's root is the kernel's root, uid 0, so what keeps it from loading modules or
rebooting the host is mostly this: Docker gives it 14 capabilities out of 41 (no
CAP_SYS_ADMIN, no CAP_NET_ADMIN, no CAP_SYS_MODULE ...), and drops the rest from the
bounding set so that no setuid program inside can get them back. The set is intersected
with the host's own bounding set: a process cannot give what it does not have (root on
this project's machines lacks CAP_SYS_RESOURCE, which is why `docker run --privileged`
fails there).

Introduced in notebooks/10-limits-and-security.
"""

from __future__ import annotations

from typing import Any

from . import kernel
from .steps import CHILD, Step

#: Docker's default set (moby oci/caps/defaults.go).
DOCKER_DEFAULT = frozenset({
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
})


def normalize(name: str) -> str:
    """``net_admin``, ``NET_ADMIN`` and ``CAP_NET_ADMIN`` all mean ``CAP_NET_ADMIN``."""
    upper = name.strip().upper()
    full = upper if upper.startswith("CAP_") else f"CAP_{upper}"
    if upper != "ALL" and full not in kernel.CAPS:
        raise ValueError(f"unknown capability {name!r}: use a name such as NET_ADMIN or "
                         f"CAP_SYS_PTRACE (see capabilities(7))")
    return "ALL" if upper in ("ALL", "CAP_ALL") else full


def effective_set(cap_add: list[str], cap_drop: list[str], bounding: list[str]) -> set[str]:
    """Docker's rule: defaults, minus --cap-drop, plus --cap-add; ALL means every one; then
    intersected with the host's bounding set."""
    adds = {normalize(c) for c in cap_add}
    drops = {normalize(c) for c in cap_drop}
    caps = set(DOCKER_DEFAULT)
    if "ALL" in drops:
        caps = set()
    caps -= drops
    caps |= set(kernel.CAPS) if "ALL" in adds else adds - {"ALL"}
    return caps & set(bounding)


def host_bounding() -> list[str]:
    """This process's bounding set, by name."""
    return kernel.decode_caps(kernel.proc_status().get("CapBnd", "0"))


class Capabilities(Step):
    """Drop every capability outside the container's set, from the bounding set too."""

    name = "capabilities"
    side = CHILD
    lesson = "notebooks/10-limits-and-security"
    explain = (
        "Root inside a container is uid 0 to the kernel, so its powers are cut down here: "
        "every capability outside Docker's 14 defaults (adjusted by --cap-add and --cap-drop, "
        "and limited to what the host itself holds) is dropped from the bounding set, so "
        "nothing exec'd later can regain it, and from the effective, permitted and "
        "inheritable sets. Undo: capabilities cannot be regained; the process keeps the "
        "reduced set until it exits.")

    def apply(self, ctx) -> None:
        """PR_CAPBSET_DROP for each unwanted cap, then capset(2) for the rest."""
        keep = ctx.caps
        for bit, name in enumerate(kernel.CAPS):
            if name not in keep and kernel.capbset_read(bit):
                kernel.capbset_drop(bit)
        mask = sum(1 << kernel.CAPS.index(c) for c in keep)
        kernel.capset(effective=mask, permitted=mask, inheritable=mask)

    def observe(self, ctx) -> dict[str, Any]:
        """CapEff and CapBnd of the container's PID 1, decoded into names."""
        if not ctx.pid:
            return {}
        status = kernel.proc_status(ctx.pid)
        return {"CapEff": kernel.decode_caps(status.get("CapEff", "0")),
                "CapBnd": kernel.decode_caps(status.get("CapBnd", "0"))}
