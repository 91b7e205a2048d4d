"""Who the OOM killer takes: the supervisor is protected, containers are not.

When memory runs out (on the host, or in a memory cgroup), the kernel's OOM killer picks one
process and SIGKILLs it. It picks the one with the highest *badness*: its resident memory
(RSS, swap and page tables, in pages) plus ``oom_score_adj`` thousandths of the memory it
could have used (all of RAM and swap, or the cgroup's limit). ``/proc/PID/oom_score`` shows
the result, scaled to 0..2000 for the whole host.

The supervisor owns every detached container: they ask the kernel to kill them when it dies
(PR_SET_PDEATHSIG). If the OOM killer took it, every container would go with it. So, like
dockerd (-500) and containerd (-999), it lowers its own ``oom_score_adj`` (``SUPERVISOR``):
half of the memory there is must be counted against it before it can be picked.

Lowering a value below 0 needs CAP_SYS_RESOURCE, and some hosts give it to no one: a
Firecracker VM whose init drops it from every process (dockerd there stays at 0 too), a
rootless user. What protects the supervisor is the *gap* between it and its containers (the
badness is compared, so only differences count), and any process may raise a value. So a
container's default is 500 above the process that forks it, and never below 0 (``default``):
Docker's 0 under a supervisor at -500, and 500 where the supervisor had to stay at 0.
``--oom-score-adj N`` is applied as given, as in Docker.

A value is inherited across fork and exec, and the supervisor forks the containers. So each
container's first process is given its own value straight after the fork, and every process
``edu exec`` or a healthcheck starts in it takes PID 1's: a container's processes never keep
the supervisor's value.

cgroup v2 has ``memory.oom.group``: when set, an OOM in that cgroup kills all of its
processes together. edu leaves it at 0, as Docker does (Kubernetes sets it): a container's
OOM kills its biggest process, and PID 1 lives on if it was not that one. The supervisor is
never in a container's cgroup, so no group kill there can reach it.

Introduced in notebooks/10-limits-and-security.
"""

from __future__ import annotations

#: The supervisor's own oom_score_adj (dockerd's).
SUPERVISOR = -500

#: A container's, unless its --oom-score-adj says otherwise (Docker's), when its
#: supervisor is at SUPERVISOR.
CONTAINER = 0

#: How far above the process that forks it a container is by default.
GAP = CONTAINER - SUPERVISOR


def score_adj(pid: int | str = "self") -> int:
    """/proc/PID/oom_score_adj: -1000 (never picked) to 1000 (picked first)."""
    with open(f"/proc/{pid}/oom_score_adj") as f:
        return int(f.read())


def score(pid: int | str = "self") -> int:
    """/proc/PID/oom_score: the kernel's badness for a host-wide OOM, 0..2000."""
    with open(f"/proc/{pid}/oom_score") as f:
        return int(f.read())


def set_score_adj(pid: int | str, value: int) -> None:
    """Write /proc/PID/oom_score_adj (lowering it below what it was needs
    CAP_SYS_RESOURCE: OSError with a sentence when that is missing)."""
    try:
        with open(f"/proc/{pid}/oom_score_adj", "w") as f:
            f.write(str(int(value)))
    except PermissionError:
        raise PermissionError(
            f"cannot set --oom-score-adj {value}: lowering it needs CAP_SYS_RESOURCE (root); "
            "give 0 or more") from None


def default() -> int:
    """A new container's oom_score_adj: GAP above this process (its parent), at least 0."""
    return min(1000, max(CONTAINER, score_adj("self") + GAP))


def protect_supervisor() -> None:
    """Lower this process's oom_score_adj to ``SUPERVISOR``, where the kernel lets it
    (CAP_SYS_RESOURCE); elsewhere it keeps its value, and ``default`` keeps the gap."""
    try:
        set_score_adj("self", SUPERVISOR)
    except OSError:  # EACCES, or EIO in a Firecracker VM: see the module's text
        pass
