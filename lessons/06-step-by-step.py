# ---
# jupyter:
#   edu:
#     parts:
#       docker:
#         needs:
#         - containers
#         - dockerd
#         what: the same look inside, by edu and by docker run
#       fast:
#         needs:
#         - containers
#         - bridge
#         what: the same container run fast, traced
#       stepper:
#         needs:
#         - containers
#         - bridge
#         what: the stepper over busybox sh on the bridge
#   jupytext:
#     cell_metadata_filter: -all
#     notebook_metadata_filter: kernelspec,jupytext,edu
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.7
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 06 A container, step by step
#
# *The course's design card: what `docker run` asks of the kernel, one step at a time.*
#
# In lesson 01 a container started in milliseconds and a virtual machine in seconds. Here you
# find out what those milliseconds are made of. You build one container with the **stepper**,
# which stops between kernel steps, so you can look at the half-made container from the host.

# %% [markdown]
# ## What you will be able to do
#
# - **name** the steps that turn a process into a container, in order, and say which ones the
#   host does and which ones the container's own process does;
# - **show**, with `/proc/PID/ns` inodes, which namespaces a container has that the host does
#   not;
# - **read** a container's `NSpid`, `CapEff` and `Seccomp` lines, and say what each means;
# - **find** in a trace the step that gives a container its own hostname, and where its
#   start-up time goes;
# - **match** a step with the `docker run` flag that changes it.

# %% [markdown]
# Run each cell with **Shift-Enter**. The first one says, for this machine, which parts of
# the lesson run live and which replay a recording of a real run.

# %%
from edu_runtime.notebook import Lesson, check, exercise, predict, summary

lesson = Lesson("06-step-by-step")
lesson.image("busybox")  # in the store, or built from Debian's packages once

# %% [markdown]
# ## The container we build
#
# One `busybox` container on the default bridge network, running a shell. In Docker's words:
#
#     docker run -d busybox sh -c 'sleep 3600 & wait'
#
# Why this command, and not plain `sh`?
#
# - `sh` alone reads commands from its input. Without `-it` that input is empty, so it exits
#   at once (`docker run busybox sh` does the same). Lesson 07 gives it a terminal.
# - `sh -c 'sleep 3600'` would not keep `sh` either: busybox's shell replaces itself with the
#   last command it runs.
# - `sleep 3600 & wait` starts `sleep` in the background and waits for it. So `sh` stays the
#   container's first process, PID 1, for an hour, and at the end we can look at it.

# %%
COMMAND = ["sh", "-c", "sleep 3600 & wait"]

view = lesson.stepper("stepper", "busybox", COMMAND, network="bridge")
print(view.title())
for number, step in enumerate(view.plan, 1):
    print(f"{number:>2}. {step.name:<15} done by the {step.side}")

# %% [markdown]
# That is the plan: every container of this course starts with these steps, in this order.
#
# - A **host** step is done by the runtime, from outside (here by its helper, the supervisor).
# - A **child** step is done by the container's own process. It waits on a socket, does one
#   step when told, and waits again.
#
# Nothing has run yet. The stepper waits for **Next step**.

# %% [markdown]
# In code, **Next step** is `view.next()`. The helper below presses it until the named steps
# are done, and prints each step: its side, its time, and its first calls to the kernel.

# %%
from edu_runtime.notebook.stepper import cut

done = {}  # step name -> its record: times, calls, and what the host saw before and after


def press_next(*names):
    """Press Next step until the steps called `names` (those this plan has) are applied."""
    planned = [s.name for s in view.plan]
    last = max((planned.index(n) for n in names if n in planned), default=-1)
    while len(view.records) <= last:
        rec = view.next()
        if rec is None or rec.error:
            raise RuntimeError(view.error or "the stepper stopped early")
        done[rec.name] = rec
        print(f"{rec.name} ({rec.side}, {rec.ms:.2f} ms)")
        for call in cut(rec.lines(), 3):
            print("    ", call if len(call) < 90 else call[:88] + "…")


# %% [markdown]
# Each record keeps what the host saw before and after its step: the kernel's evidence.
# `seen("veth", "container", "routes")` reads it; `short()` cuts a container's id to 12
# digits, as Docker shows it.

# %%
import re


def seen(name, *keys, when="after"):
    """What the host saw after (or before) step `name`, down `keys`; None if not there."""
    value = getattr(done.get(name), when, None)
    for key in keys:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def short(text):
    """A 64-digit container id cut to Docker's 12, so a line fits the projector."""
    return re.sub(r"([0-9a-f]{12})[0-9a-f]{52}", r"\1…", str(text))


# %% [markdown]
# ## 1. A process, then a cgroup
#
# A container starts as an ordinary process: the host **forks** it. Then the host makes a
# **cgroup** for it: a directory under `/sys/fs/cgroup` whose files count, and can limit, what
# its processes use. The child moves itself in (on cgroup v2 the host moves it).

# %%
press_next("fork", "cgroup", "cgroup join")

# %% [markdown]
# The kernel's evidence: the child's pid, and its lines of `/proc/PID/cgroup` that changed.

# %%
print(f"pid {seen('fork', 'pid')}; shares the host's namespaces: "
      f"{seen('fork', 'same namespaces as host')}")
before = seen("cgroup join", "/proc/PID/cgroup", when="before") or []
for line in cut([short(x) for x in seen("cgroup join", "/proc/PID/cgroup") or []
                 if x not in before], 4):
    print("now in", line)
for key, value in sorted((seen("cgroup") or {}).items()):
    if key.endswith(("memory.limit_in_bytes", "memory.max", "pids.max")):
        print(f"{key} = {value}")

# %% [markdown]
# `max`, or 9223372036854771712 (the largest page-aligned 64-bit number), means **no limit**.
# A cgroup counts first and limits only when asked: `docker run --memory 64m --pids-limit
# 100` writes those two numbers here (lesson 10 makes them bite).

# %% [markdown]
# ## Predict, then run
#
# Soon the container will have a hostname of its own. Which step makes `hostname` inside
# the container differ from the host's? Choose before you go on.

# %%
q = predict("Which step makes `hostname` inside the container differ from the host's?",
            ["fork", "namespaces", "pivot_root", "hostname", "exec"])
q

# %% [markdown]
# ## 2. Namespaces
#
# One `unshare()` call gives the child new **namespaces**: its own view of process ids
# (`pid`), mounts (`mnt`), the network (`net`), the hostname (`uts`), IPC and cgroups.

# %%
press_next("namespaces")

# %% [markdown]
# From the host, each namespace of a process is a link in `/proc/PID/ns`. The number in
# brackets is an inode: the same number means the same namespace.

# %%
print(f"{'':<8}{'container':<22}{'host':<22}")
for name, ns in sorted((seen("namespaces") or {}).items()):
    new = "new" if ns["new"] else "the host's own"
    print(f"{name:<8}{ns['container']:<22}{ns['host']:<22}{new}")

# %% [markdown]
# Six are new. As root, `user` stays the host's: Docker makes no user namespace either
# (unless its daemon runs with `userns-remap`), so root in this container is root to the
# kernel. The steps still to come hold it back. A rootless run gets a user namespace too,
# and an `id maps` step that writes its `uid_map`.
#
# The new pid namespace has a first process, PID 1. The host panel's `NSpid` line shows its
# two numbers: its pid on the host, then its pid inside.

# %%
for raw, meaning in view.host_view():
    if raw.startswith("NSpid") or "/ns/pid " in raw or "/ns/uts " in raw:
        print(f"{' '.join(raw.split()):<38} {meaning}")

# %% [markdown]
# ## 3. The network
#
# The new network namespace is empty: a loopback device, down, and nothing else. Three host
# steps wire it up, as Docker does with `docker0`:
#
# - `bridge` makes sure the bridge `edu0` exists, a virtual switch on the host;
# - `veth` makes a pair of virtual Ethernet devices: one end joins the bridge, the other
#   moves into the container and becomes its `eth0`;
# - `nat` adds the rules that let the container's packets out with the host's address.

# %%
press_next("bridge", "veth", "nat")

# %%
print("inside, before:", "; ".join(seen("veth", "container", "links", when="before") or []))
for key in ("links", "addresses", "routes"):
    print(f"inside, {key}:", "; ".join(seen("veth", "container", key) or []))
host_end = next((k for k in seen("veth", "host") or {} if k.startswith("veth")), "-")
print(f"on the host, the other end: {host_end}, a port of "
      f"{seen('veth', 'host', host_end, 'master')}")
rules = seen("nat", "network rules") or []
print(f"nft: {len(rules)} rules for the bridge, e.g.",
      next((r for r in rules if "masquerade" in r), "-"))

# %% [markdown]
# ## 4. The filesystem
#
# The container must see the image's files as `/`, and none of the host's. Five child steps:
#
# - `propagation`: its mounts become private, so nothing it mounts shows on the host;
# - `rootfs`: the image's layers, read-only, under an **overlay** with a writable layer on top;
# - `special mounts`: a fresh `/proc`, `/sys` and `/dev`;
# - `name files`: `/etc/hostname`, `/etc/hosts` and `/etc/resolv.conf`, bound in;
# - `pivot_root`: the overlay becomes `/`, and the old root is unmounted.

# %%
press_next("propagation", "rootfs", "special mounts", "name files", "pivot_root")

# %%
print(f"rootfs: {seen('rootfs', 'layers')} image layers, writes go to "
      f"{short(seen('rootfs', 'upperdir'))}")
print(f"/ is {seen('pivot_root', 'root', when='before')} before pivot_root, "
      f"{seen('pivot_root', 'root')} after")
print(f"mounts it sees: {seen('pivot_root', 'mounts', when='before')} before, "
      f"{seen('pivot_root', 'mounts')} after; the host's root still visible: "
      f"{seen('pivot_root', 'host root visible')}")

# %% [markdown]
# ## 5. The hostname
#
# Now check your prediction: the cell finds, in the stepper's records, the first step after
# which the name inside and the host's name differ.

# %%
press_next("hostname")

# %%
def names_differ(rec):
    """The step saw the hostname on both sides ({"container": .., "host": ..}), different."""
    inside, host = rec.after.get("container"), rec.after.get("host")
    return isinstance(inside, str) and isinstance(host, str) and inside != host


first = next(rec for rec in view.records if names_differ(rec))
uts = seen("namespaces", "uts") or {}
q.check(first.name, why=(
    f"`namespaces` gave the container its own UTS namespace ({uts.get('container')}, the "
    f"host's is {uts.get('host')}), but a new UTS namespace starts as a copy: the name inside "
    f"was still {first.before.get('container')!r}. `{first.name}` called sethostname() "
    f"inside it: now {first.after['container']!r}, the first 12 digits of the container's "
    f"id, as Docker does. The host is still {first.after['host']!r}."))

# %% [markdown]
# ## 6. Locks on the door
#
# Root in this container is still root to the kernel. Two child steps limit what it can do
# (after `loopback` brings up `lo`):
#
# - `seccomp` installs a filter: a list of the system calls it may make (Docker's default
#   profile);
# - `capabilities` drops the powers of root a container does not need.

# %%
press_next("loopback", "seccomp", "capabilities")

# %%
print(f"Seccomp: {seen('seccomp', 'mode', when='before')} -> {seen('seccomp', 'mode')} "
      f"({seen('seccomp', 'mode_name')}, {seen('seccomp', 'filters')} filter)")
had = seen("capabilities", "CapEff", when="before") or []
kept = seen("capabilities", "CapEff") or []
print(f"CapEff: {len(had)} capabilities -> {len(kept)}")
print("dropped, among them:", ", ".join(cut([c for c in had if c not in kept], 5)))

# %% [markdown]
# `CAP_SYS_ADMIN` is gone, and with it `mount()` and `sethostname()`. Remember that for the
# exercise.
#
# ## 7. exec
#
# Last, the child replaces itself with the command: `execve()`. From now on it is `sh`,
# PID 1 of its namespaces, and the container runs.

# %%
press_next("exec")
print(view.title())

# %% [markdown]
# From the host, the host panel reads `/proc/PID/status` of PID 1. Each raw line, then what
# it means:

# %%
for raw, meaning in view.host_view():
    if not raw.startswith("/proc"):
        print(f"{' '.join(raw.split()):<26} {meaning}")

# %% [markdown]
# `NSpid` shows two numbers for one process. `CapEff` is a bitmask: `00000000a80425fb` is
# Docker's default set too. `Seccomp: 2` means a filter is installed.
#
# ## Your turn: the same container, with buttons
#
# Press **Next step** and watch: the explanation of each step and of its undo, a table of
# what changed (highlighted), a bar per step for its time, and at the bottom what the host
# sees. **Run to end** does the rest; **Reset** undoes everything. Where widgets cannot
# render, the same appears as text.

# %%
mine = lesson.stepper("stepper", "busybox", COMMAND, network="bridge")
mine

# %% [markdown]
# ## The same container, run fast
#
# `docker run` does not stop between steps. `Container(...).start()` runs the same plan, the
# same code, without stopping, and keeps a **trace**: when each step began and ended.

# %%
def run_fast():
    from edu_runtime import Container

    c = Container("busybox", COMMAND, network="bridge")
    lesson.made(container=c.id)  # noted first: reset finds it, even after a Ctrl-C
    c.start()  # docker run -d
    print(f"container {c.id[:12]} runs: its PID 1 is pid {c.pid} on the host")
    c.remove(force=True)  # docker rm -f
    print(f"removed container {c.id[:12]}")
    return c.trace.to_dict()


fast = lesson.live("fast", run_fast)

# %%
from edu_runtime.notebook.figures import waterfall

waterfall(fast)

# %% [markdown]
# Where did the time go? The three slowest steps:

# %%
spans = sorted(((s["end"] - s["start"]) * 1e3, s["name"], s["side"]) for s in fast["steps"])
total = (max(s["end"] for s in fast["steps"]) - min(s["start"] for s in fast["steps"])) * 1e3
for ms, name, side in spans[::-1][:3]:
    print(f"{name:<12} {side:<6} {ms:7.2f} ms  {ms / total:4.0%} of {total:.1f} ms")
same = [r.name for r in view.records] == [s["name"] for s in fast["steps"]]
print("the same steps as the stepper's, in the same order:", same)

# %% [markdown]
# A namespace or a mount is one system call: a fraction of a millisecond. The network
# steps send the kernel several netlink requests and firewall rules, so they are often the
# slowest, and the first container on a new bridge also pays for making the bridge.
# `docker run --network none` skips them.

# %% [markdown]
# ## Each step, and the `docker run` flag that changes it
#
# | step | what it does | in `docker run` |
# |---|---|---|
# | cgroup | limits memory, CPU, processes | `--memory`, `--cpus`, `--pids-limit` |
# | namespaces | a new view of pids, mounts, network, name | `--pid host`, `--uts host`, `--ipc host`, `--userns` |
# | bridge, veth, nat | a network of its own | `--network`, `-p 8080:80` |
# | rootfs, pivot_root | the image's files as `/` | the image; `--read-only` |
# | special mounts, name files | `/proc`, `/dev`, `/etc/hosts` | `--tmpfs`, `-v`, `--add-host`, `--dns` |
# | hostname | the container's own name | `--hostname` |
# | seccomp | which system calls it may make | `--security-opt seccomp=...` |
# | capabilities | which powers of root it keeps | `--cap-add`, `--cap-drop`, `--privileged` |
# | exec | the command, as which user, where | `COMMAND`, `--entrypoint`, `--user`, `--workdir` |
#
# Where edu and Docker differ: Docker has a daemon (`dockerd`), and a separate runtime
# (`runc`) does these steps; edu does them in one Python program, and you can stop it
# between any two.

# %% [markdown]
# ### Docker beside us (extra details)
#
# The same look from inside, in a container of each: its hostname and three lines of
# `/proc/self/status`. In Docker's words:
#
#     docker run --rm busybox sh -c "hostname; grep -E '^(CapEff|Seccomp|NoNewPrivs):' /proc/self/status"
#
# Where Docker is not running, this replays a run that had it.

# %% [markdown]
# Docker runs images from its own store. Where it has no busybox (a classroom is often
# offline), we hand it ours: `edu save busybox | docker load`. It is the same archive
# format, and Docker forgets it again afterwards.

# %%
import subprocess
import tempfile
from pathlib import Path


def docker_image():
    """busybox in Docker: its own, or ours loaded into it; (name, whether we loaded it)."""
    if subprocess.run(["docker", "image", "inspect", "busybox"],
                      capture_output=True).returncode == 0:
        return "busybox", False
    from edu_runtime.images import archive, store

    with tempfile.TemporaryDirectory() as tmp:
        tar = archive.save(store.Store(), ["busybox"], Path(tmp) / "busybox.tar")
        out = subprocess.run(["docker", "load", "-i", str(tar)], capture_output=True,
                             text=True, check=True).stdout
    return out.split("Loaded image: ")[-1].split()[0], True


# %%
import contextlib
import io

LOOK = "hostname; grep -E '^(CapEff|Seccomp|NoNewPrivs):' /proc/self/status"


def look_in_both():
    from edu_runtime import Container

    c = Container("busybox", ["sh", "-c", LOOK], remove=True)
    lesson.made(container=c.id)
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        c.run()  # docker run --rm
    image, loaded = docker_image()
    try:
        docker = subprocess.run(["docker", "run", "--rm", image, "sh", "-c", LOOK],
                                capture_output=True, text=True, check=True).stdout
    finally:
        if loaded:  # leave Docker's images as they were
            subprocess.run(["docker", "rmi", image], capture_output=True)
    seen_by = {}
    for who, text in (("edu", printed.getvalue()), ("docker", docker)):
        lines = text.splitlines()
        seen_by[who] = {"hostname": lines[0].strip(),
                        **dict(line.split(":\t", 1) for line in lines[1:] if ":\t" in line)}
    print(f"{'':<12}{'edu':<20}docker")
    for key in ("hostname", "CapEff", "Seccomp", "NoNewPrivs"):
        print(f"{key:<12}{seen_by['edu'].get(key, '-'):<20}{seen_by['docker'].get(key, '-')}")
    return seen_by


both = lesson.live("docker", look_in_both)

# %% [markdown]
# The same capabilities, bit for bit, and the same kind of seccomp filter. Each hostname is
# the first 12 digits of its container's id.

# %% [markdown]
# ## Exercise
#
# Make a container whose hostname is your name, **without** `--hostname` (`hostname=`).
# Call it `me`, and have it print its hostname. Hints: which step set the name, and which
# step took away the power to change it?

# %%
ex = exercise(
    "Make a container `me` whose hostname is your name, without --hostname (hostname=), "
    "and have it print its hostname.",
    solution='''
from edu_runtime import Container

NAME = "ada"  # your name
# Only the container's own UTS namespace can be renamed, from inside it. sethostname()
# needs CAP_SYS_ADMIN, which the capabilities step drops: add it back (--cap-add).
me = Container("busybox", ["sh", "-c", f"hostname {NAME} && hostname"],
               cap_add=["SYS_ADMIN"])
lesson.made(container=me.id)
me.run()
''')
ex

# %% [markdown]
# ## Checks
#
# Plain functions: each prints a pass, or "not yet" with a hint.

# %%
def printed(container):
    """The last line a container printed."""
    return [text for _, text in container.logs()][-1].strip()


results = [
    check("the stepper applied every step of the plan, exec last",
          [r.name for r in view.records] == [p.name for p in view.plan],
          hint="run the press_next(...) cells in order, from the top"),
    check("PID 1 of the stepped container is sh, with two pids in NSpid",
          lambda: any(raw.startswith("Name:") and raw.endswith("sh")
                      for raw, _ in view.host_view())
          and any(raw.startswith("NSpid") and len(raw.split()) == 3
                  for raw, _ in view.host_view()),
          hint="step through to exec; the command must keep sh running (sleep 3600 & wait)"),
    check("your container `me` printed your name as its hostname",
          lambda: printed(me) == NAME,
          hint="set NAME, and have the command print `hostname` after changing it; writing "
               "/etc/hostname changes a file, not the kernel's name"),
    check("... without --hostname",
          lambda: "hostname" not in me.spec,
          hint="no hostname= argument: rename it from inside, with CAP_SYS_ADMIN added back "
               "(cap_add=[\"SYS_ADMIN\"], docker run --cap-add SYS_ADMIN)"),
]
summary(results)

# %% [markdown]
# ## Reset
#
# Undo both steppers, and remove every container this lesson made. (Your widget above is
# reset too: its Next step starts a fresh container.)

# %%
for stepper in (view, mine):
    print("stepper:", "; ".join(stepper.reset()))
lesson.reset()

# %% [markdown]
# Next: **[07 run it](07-run-it.ipynb)**: `docker run -it`, a terminal for PID 1, and what
# Ctrl-P Ctrl-Q and `exit` really do.
