# ---
# jupyter:
#   edu:
#     parts:
#       cpu:
#         needs:
#         - containers
#         - limits
#         what: a busy loop with --cpus 0.25 beside one without, read by edu stats over
#           time
#       defences:
#         needs:
#         - containers
#         what: a container's CapEff, Seccomp and masked mounts; one capability dropped
#       escapes:
#         needs:
#         - containers
#         what: the escape suite in edu containers, with each defence removed in turn
#       escapes-docker:
#         needs:
#         - containers
#         - dockerd
#         what: the escape suite in Docker containers of the same image
#       memory:
#         needs:
#         - containers
#         - limits
#         what: 200 MiB asked of a container with -m 64m, and the cgroup files of the
#           OOM kill
#       pids:
#         needs:
#         - containers
#         - limits
#         what: a fork bomb in a container with --pids-limit 32
#       rootless:
#         needs:
#         - containers
#         what: a rootless container of a non-root user, and a host root's file inside
#           it
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
# # 10 Limits and security
#
# *The course's design card: what a container may use, and what it may not do.*
#
# Lesson 06 built a container step by step; two of those steps were a **cgroup** (its limits)
# and **capabilities and seccomp** (its defences). Here you make the limits bite, read the
# kernel's own counters that show it, and then try to get out of a container, once per
# isolation layer, beside Docker.

# %% [markdown]
# ## What you will be able to do
#
# - **make** a memory limit, a pids limit and a CPU quota bite, and **name** the cgroup file
#   that shows each one (`memory.oom_control`, `pids.events`, `cpu.stat`);
# - **read** `edu stats` (and `docker stats`) and say where each column comes from;
# - **decode** a container's `CapEff`, drop one capability, and show what breaks;
# - **tell** which layer stopped an escape attempt (a namespace, a capability, seccomp, a
#   masked path, read-only `/sys`) from its errno and the container's evidence;
# - **show** that root in a rootless container is your own uid outside.

# %% [markdown]
# Run each cell with **Shift-Enter**. The first one says, for this machine, which parts of
# the lesson run live and which replay a recording of a real run.

# %%
from edu_runtime.notebook import Lesson, check, exercise, predict, summary

lesson = Lesson("10-limits-and-security")
lesson.image("busybox")
lesson.image("python")  # for the memory hog and the escape attempts (Python's ctypes)

# %%
import os
import subprocess
import tempfile


def quoted(arg):
    """An argument as a shell needs it: as it is, in '...', or in "..." if it has a '."""
    if arg and not any(c in arg for c in " '\"$*|&;(){}<>"):
        return arg
    return f'"{arg}"' if "'" in arg and not any(c in arg for c in '"$`') else f"'{arg}'"


def show(*args):
    """The `edu` command the next lines do through the API, as a student would type it."""
    print("$ edu " + " ".join(quoted(a) for a in args))


def fresh(*names):
    """Remove containers an earlier, interrupted run of this lesson left (edu rm -f)."""
    from edu_runtime import Container

    for name in names:
        try:
            Container.get(name).remove(force=True)
        except Exception:  # noqa: BLE001 - none of that name: nothing to remove
            pass


def run_in(image, argv, **options):
    """`edu run --rm` of ``argv``: (exit code, what it printed)."""
    from edu_runtime import Container

    with tempfile.TemporaryFile() as out:
        devnull = os.open(os.devnull, os.O_RDONLY)
        try:
            code = Container(image, argv, remove=True, network="none",
                             stdio=(devnull, out.fileno(), out.fileno()), **options).run()
        finally:
            os.close(devnull)
        out.seek(0)
        return code, out.read().decode(errors="replace")


def cgroup_lines(files, *names):
    """The lines of a container's cgroup files worth reading here, by file name."""
    for key, text in files.items():
        if key.split("/")[-1] in names:
            lines = text.splitlines()
            print(f"  {key}: {lines[0] if len(lines) == 1 else ''}")
            for line in lines if len(lines) > 1 else []:
                print(f"      {line}")


# %% [markdown]
# ## 1. A memory limit: the OOM killer
#
# `-m 64m` writes 64 MiB into the container's cgroup (`memory.limit_in_bytes` on cgroup v1,
# `memory.max` on v2). The program below asks for 200 MiB: a Python bytes object of 200 MiB,
# every page of it written.

# %%
q_oom = predict("`edu run -m 64m python python3 -c \"b = b'x' * (200 * 2**20)\"`. What happens?",
                ["Python raises MemoryError and exits 1",
                 "the kernel kills it: exit code 137",
                 "it runs, slowly, using swap"])
q_oom

# %%
HOG = "b = b'x' * (200 * 2**20); print('got 200 MiB')"


def memory():
    from edu_runtime import Container, stats

    fresh("l10-oom", "l10-oom-kept")
    lesson.made(container="l10-oom")
    show("run", "--name", "l10-oom", "-m", "64m", "--network", "none", "python",
         "python3", "-c", HOG)
    c = Container("python", ["python3", "-c", HOG], name="l10-oom", memory="64m",
                  network="none")
    code = c.run()
    import time

    deadline = time.monotonic() + 10  # run() answers as PID 1 is reaped; the record follows
    while c.inspect()["State"]["Status"] != "exited" and time.monotonic() < deadline:
        time.sleep(0.05)
    oom = c.inspect()["State"]["OOMKilled"]
    print(f"exit code {code}")
    show("inspect", "-f", "{{.State.OOMKilled}}", "l10-oom")
    print(str(oom).lower())
    # Again, with a shell as PID 1 that outlives its child, so the cgroup's files can be read
    # after the kill (a container's cgroup goes when it stops).
    lesson.made(container="l10-oom-kept")
    kept = Container("python", ["sh", "-c", f'python3 -c "{HOG}"; echo "python: $?"; '
                                            "sleep 60"],
                     name="l10-oom-kept", memory="64m", network="none")
    kept.start()
    deadline = time.monotonic() + 30
    said = ""
    while "python:" not in said and time.monotonic() < deadline:
        time.sleep(0.1)
        said = "".join(text for _, text in kept.logs())
    files = stats.limits_files("l10-oom-kept")
    print("\nthe same in a container whose PID 1 is a shell: it said", said.strip())
    cgroup_lines(files, "memory.limit_in_bytes", "memory.max", "memory.max_usage_in_bytes",
                 "memory.failcnt", "memory.oom_control", "memory.events")
    kept.remove(force=True)
    return {"code": code, "oom": oom, "said": said.strip(), "files": files}


mem = lesson.live("memory", memory)

# %%
q_oom.check("the kernel kills it: exit code 137" if mem["code"] == 137 else
            "Python raises MemoryError and exits 1" if mem["code"] == 1 else
            "it runs, slowly, using swap", why=(
    "Linux hands out memory lazily: the allocation succeeds, and pages are charged to the "
    "cgroup as Python writes them. At 64 MiB the cgroup can neither reclaim nor grow, so the "
    "kernel's OOM killer picks a process in that cgroup and sends it SIGKILL: 128 + 9 = 137. "
    "edu (like Docker) sees the cgroup's oom_kill counter and sets State.OOMKilled. With swap "
    "on the host, Docker lets memory + swap reach twice -m before that (this machine has "
    "none)."))

# %% [markdown]
# Read the files: the limit, the most the cgroup ever used (at the limit), `failcnt` (how many
# times a charge hit the limit and the kernel had to reclaim first), and `oom_kill 1` in
# `memory.oom_control` (on cgroup v2: `memory.events`, `oom_kill 1`). The kernel kills *one*
# process; the container ends only when PID 1 does. With the shell as PID 1, the container
# lived on and only Python died.

# %% [markdown]
# ## 2. A pids limit: a fork bomb held
#
# A fork bomb is a function that starts copies of itself in the background, forever, each of
# which does the same: `bomb() { while :; do bomb & done; }; bomb`. Without a limit it fills
# the host's process table in a second, and nothing new can start anywhere, not even your
# `kill`. Docker has no pids limit by default; `--pids-limit 32` writes 32 into `pids.max`.

# %%
q_pids = predict("A fork bomb runs for two seconds in a container with --pids-limit 32. "
                 "How many processes does `edu stats` count in it then?",
                 ["about 32", "thousands", "1: the limit killed the bomb"])
q_pids

# %%
# PID 1 starts the bomb, then becomes `sleep` (exec: no fork), so the container lives on.
BOMB = "exec 2>/dev/null; bomb() { while :; do bomb & done; }; bomb & exec sleep 60"


def pids():
    import time

    from edu_runtime import Container, stats
    from edu_runtime.notebook.terminal import edu

    fresh("l10-bomb")
    lesson.made(container="l10-bomb")
    show("run", "-d", "--name", "l10-bomb", "--pids-limit", "32", "--cpus", "0.5",
         "--network", "none", "busybox", "sh", "-c", BOMB)
    c = Container("busybox", ["sh", "-c", BOMB], name="l10-bomb", pids_limit=32, cpus=0.5,
                  network="none")
    c.start()
    time.sleep(2)
    row = stats.sample("l10-bomb")
    files = stats.limits_files("l10-bomb")
    show("stats", "--no-stream", "l10-bomb")
    print(subprocess.run(edu("stats", "--no-stream", "l10-bomb"), capture_output=True,
                         text=True).stdout.rstrip())
    cgroup_lines(files, "pids.max", "pids.current", "pids.events")
    host_ok = subprocess.run(["true"]).returncode == 0
    print(f"meanwhile on the host, a new process starts: {host_ok}")
    c.remove(force=True)  # the cgroup's freezer stops them all, then SIGKILL
    events = files.get("pids/pids.events") or files.get("unified/pids.events") or "max 0"
    return {"pids": row.pids, "refused": int(events.split()[-1]), "host_ok": host_ok}


bomb = lesson.live("pids", pids)

# %%
q_pids.check("about 32" if 28 <= bomb["pids"] <= 32 else
             "1: the limit killed the bomb" if bomb["pids"] <= 1 else "thousands", why=(
    f"pids.max caps the processes (threads too) in the cgroup. Past it, fork() fails with "
    f"EAGAIN: pids.events counted {bomb['refused']} refused forks. The bomb lives on, at "
    "the cap, and the host is untouched; `edu rm -f` stops it through the cgroup (freeze, "
    "then SIGKILL to all of them), which a bomb cannot outrun."))

# %% [markdown]
# ## 3. A CPU quota: throttled, period by period
#
# `--cpus 0.25` writes `25000 100000` (`cpu.max` on v2; `cpu.cfs_quota_us` and
# `cpu.cfs_period_us` on v1): in every 100 ms *period*, the cgroup may run 25 ms of CPU time.
# When it has used its 25 ms, the scheduler takes it off the CPU until the next period: it is
# **throttled**, and `cpu.stat` counts it (`nr_throttled`, `throttled_time`).
#
# `edu stats` shows it the way `docker stats` does. Each column is a cgroup file:
#
# | column | cgroup v1 | cgroup v2 |
# |---|---|---|
# | CPU % | `cpuacct.usage`, twice, over the system's CPU time | `cpu.stat` `usage_usec` |
# | MEM USAGE / LIMIT | `memory.usage_in_bytes` less inactive files / `memory.limit_in_bytes` | `memory.current` less inactive files / `memory.max` |
# | PIDS | `pids.current` | `pids.current` |
# | NET I/O | the container's network namespace (`/proc/PID/net/dev`) | same |

# %%
q_cpu = predict("Two busy loops: one with --cpus 0.25, one without. What CPU % does edu "
                "stats show for the one with --cpus 0.25?",
                ["about 25 %", "about 100 %", "about 200 %"])
q_cpu

# %%
LOOP = ["sh", "-c", "while :; do :; done"]


def cpu():
    from edu_runtime import Container, stats
    from edu_runtime.notebook.terminal import edu

    fresh("l10-quarter", "l10-free")
    made = []
    for name, cpus in (("l10-quarter", 0.25), ("l10-free", None)):
        lesson.made(container=name)
        show("run", "-d", "--name", name, *(["--cpus", str(cpus)] if cpus else []),
             "--network", "none", "busybox", *LOOP)
        made.append(Container("busybox", LOOP, name=name, cpus=cpus, network="none").start())
    try:
        runs = stats.series_of(["l10-quarter", "l10-free"], seconds=3, interval=0.25)
        show("stats", "--no-stream", "l10-quarter", "l10-free")
        print(subprocess.run(edu("stats", "--no-stream", "l10-quarter", "l10-free"),
                             capture_output=True, text=True).stdout.rstrip())
        files = stats.limits_files("l10-quarter")
        print("\nl10-quarter's cgroup:")
        cgroup_lines(files, "cpu.cfs_quota_us", "cpu.cfs_period_us", "cpu.max", "cpu.stat")
    finally:
        for c in made:
            c.remove(force=True)
    return {name: [s.to_dict() for s in rows] for name, rows in runs.items()}


cpu_runs = lesson.live("cpu", cpu)

# %%
from edu_runtime.notebook.limits import got, throttle_figure

throttle_figure(cpu_runs["l10-quarter"], 0.25, cpu_runs["l10-free"],
                banner=lesson.banner("cpu"))

# %%
quarter = got(cpu_runs["l10-quarter"])
q_cpu.check("about 25 %" if 15 <= quarter <= 35 else "about 100 %" if quarter < 150 else
            "about 200 %", why=(
    f"it got {quarter:.0f} % of one core, the one without a limit "
    f"{got(cpu_runs['l10-free']):.0f} %. 100 % is one core, as docker stats counts it. The "
    "quota is not a slower CPU: the loop runs at full speed for 25 ms, then waits 75 ms, in "
    "every period. A web server with a quota answers fast, until a burst uses its 25 ms; "
    "then every request waits for the next period: the throttled time on the right."))

# %% [markdown]
# ## 4. Defences: capabilities, seccomp, masked paths
#
# Root in a container is uid 0 to the kernel. What keeps it from the host's clock, disks and
# kernel modules is a set of *other* checks, and the container's own `/proc/self/status` and
# `mountinfo` show each of them:
#
# - **capabilities**: root's powers split in 41 pieces. Docker keeps 14 (`CapEff`);
# - **seccomp**: `Seccomp: 2` means a filter checks every syscall against Docker's list;
# - **masked paths**: files in `/proc` that talk about the host's kernel are covered
#   (`/dev/null` mounted on them, or an empty tmpfs), and `/proc/sys` and `/sys` are
#   read-only mounts.

# %%
LOOK = ("grep -E '^(CapEff|CapBnd|Seccomp|NoNewPrivs):' /proc/self/status; "
        "grep -E ' /(proc/(keys|timer_list|kcore|acpi|sys)|sys|sys/firmware) ' "
        "/proc/self/mountinfo | cut -d' ' -f4-6,9")
CHOWN = "touch /f && chown 65534 /f && echo chown worked"


def defences():
    from edu_runtime import kernel

    show("run", "--rm", "--network", "none", "busybox", "sh", "-c", LOOK)
    _, seen = run_in("busybox", ["sh", "-c", LOOK])
    print(seen.rstrip())
    status = dict(line.split(":\t", 1) for line in seen.splitlines() if ":\t" in line)
    caps = kernel.decode_caps(status["CapEff"].strip())
    print(f"\nCapEff decoded: {len(caps)} of {len(kernel.CAPS)}:")
    print("  " + " ".join(c.removeprefix("CAP_") for c in caps))
    print()
    show("run", "--rm", "--network", "none", "busybox", "sh", "-c", CHOWN)
    _, kept = run_in("busybox", ["sh", "-c", CHOWN])
    print(kept.rstrip())
    show("run", "--rm", "--cap-drop", "CHOWN", "--network", "none", "busybox", "sh", "-c",
         CHOWN)
    code, dropped = run_in("busybox", ["sh", "-c", CHOWN], cap_drop=["CHOWN"])
    print(dropped.rstrip() + f"\n(exit code {code})")
    return {"caps": caps, "seccomp": status["Seccomp"].strip(), "kept": kept.strip(),
            "dropped": dropped.strip(), "code": code}


seen = lesson.live("defences", defences)

# %% [markdown]
# `chown` is one of the 14: with it, root gives a file away; `--cap-drop CHOWN` takes it
# away, and the same command gets `Operation not permitted` (EPERM) while everything else
# still works. That is how you harden an image: drop what it does not need
# (`--cap-drop ALL --cap-add NET_BIND_SERVICE` for a web server on port 80).
#
# `Seccomp: 2` is mode *filter*. Docker's profile is an **allowlist** of about 350 syscalls;
# any other answers EPERM before the kernel does any work. One is special: `clone3` answers
# **ENOSYS** ("no such syscall"), because its flags are in memory where a filter cannot read
# them, and ENOSYS makes glibc fall back to `clone`, whose flags the filter *can* check.
# The masked lines: `/proc/keys` and `/proc/timer_list` have `/null` mounted over them,
# `/proc/acpi` and `/sys/firmware` an empty read-only tmpfs, and `/proc/sys` and `/sys` are
# `ro`.

# %% [markdown]
# ## 5. Attack cells: one escape attempt per layer, edu beside Docker
#
# The **escape suite** (`edu_runtime.escapes`) tries one thing per isolation layer, from
# inside a container of the `python` image, each in a process of its own, and prints what
# the kernel answered. Every attempt is harmless by construction: it stops before any effect
# (the clock gets an invalid time zone, checked *after* the permission; the module is empty;
# the mount asks for a filesystem type that does not exist; files are opened for writing and
# closed unwritten; the process it signals or ptraces is a `sleep` the suite started).
#
# Which layer said no is read from the evidence, not assumed: the errno, the container's
# `CapEff` and `Seccomp:`, what Docker's seccomp profile answers for that syscall with those
# capabilities, and the mount the path is on. Then each attempt runs again **with its defence
# removed** (the *control*): if it then works, or fails differently, the attempt was real.

# %%
q_mount = predict("Root in a container calls mount(). Which layer says no first?",
                  ["the mount namespace", "the capability CAP_SYS_ADMIN",
                   "seccomp, before the kernel looks"])
q_mount

# %%
def escape_table(rows, columns):
    """The suite's rows, as a table for a projector."""
    width = {c: max(len(c), *(len(r.get(c, "")) for r in rows)) for c in columns}
    print("   ".join(c.upper().ljust(width[c]) for c in columns).rstrip())
    for r in rows:
        print("   ".join(r.get(c, "").ljust(width[c]) for c in columns).rstrip())


def controls_table(results, runtime):
    for r in results:
        if r["runtime"] in (runtime, "host") and r["config"] != "default":
            verdict = "works" if not r["blocked"] else f"{r['errno'] or 'refused'}"
            print(f"  {r['attempt']:<15}{r['config']:<36}{verdict:<8}{r['layer']}")


def escapes_edu():
    from edu_runtime import escapes

    for name in escapes.container_names("l10-esc"):
        if "-edu-" in name:
            lesson.made(container=name)
    results = escapes.run("python", controls=True, prefix="l10-esc")
    rows = escapes.table(results)
    escape_table(rows, ["attempt", "layer tested", "edu"])
    print("\nthe same attempts with the defence removed (the control):")
    controls_table([r.to_dict() for r in results], "edu")
    return {"rows": rows, "results": [r.to_dict() for r in results]}


edu_escapes = lesson.live("escapes", escapes_edu)

# %%
mount_row = next(r for r in edu_escapes["rows"] if r["attempt"] == "mount")
q_mount.check("seccomp, before the kernel looks" if "seccomp" in mount_row["edu"] else
              "the capability CAP_SYS_ADMIN" if "CAP_SYS_ADMIN" in mount_row["edu"] else
              "the mount namespace", why=(
    "mount is not on Docker's seccomp allowlist for a container without CAP_SYS_ADMIN, so "
    "the filter answers EPERM and the kernel never sees the call. Remove the filter "
    "(seccomp=unconfined) and the next guard is the missing capability; add CAP_SYS_ADMIN "
    "and the kernel gets as far as the filesystem type, which does not exist (ENODEV): two "
    "layers stood in the way, and either alone would have held."))

# %% [markdown]
# Read the table by layer:
#
# - **pid namespace**: the host's processes have no number inside (ESRCH), and `/proc/1` is
#   the container's own PID 1, so `/proc/1/root` leads back to the container's `/`. With
#   `--pid host` the host's processes are visible, and the next guard is the missing
#   CAP_SYS_PTRACE (EACCES, EPERM).
# - **seccomp**: `open_by_handle_at` (the 2014 "Shocker" escape, which opened host files by
#   their inode), `mount`, `init_module`, `settimeofday`, `unshare`, `keyctl`: EPERM; `clone3`:
#   ENOSYS.
# - **masked path** and **read-only mounts**: `/proc/timer_list` reads 0 bytes, `/proc/sys`
#   and `/sys` answer EROFS to an open for writing. On the host (the control) all three work.
# - **devices**: root keeps CAP_MKNOD, so `mknod` of a node for the host's disk *works*. What
#   stops the open differs: edu mounts the container's `/` and `/dev` **nodev** (EACCES), and
#   Docker refuses it in its **devices cgroup** (EPERM). This suite found that edu had
#   neither, and could open the disk; `nodev` is the fix it got.

# %% [markdown]
# ### The same attempts in Docker
#
# Docker gets the same `python` image (`edu save python | docker load`, as lesson 03 does),
# and runs the same program.

# %%
def escapes_docker():
    from edu_runtime import escapes
    from edu_runtime.notebook.docker import borrowed

    for name in escapes.container_names("l10-esc"):
        if "-docker-" in name:
            lesson.made(container=name)
    with borrowed("python", "l10-python:edu") as tag:
        results = escapes.run("python", docker_tag=tag, controls=True, prefix="l10-esc",
                              edu=False)
    rows = escapes.table(results)
    escape_table(rows, ["attempt", "docker"])
    print("\nthe controls in Docker:")
    controls_table([r.to_dict() for r in results], "docker")
    return {"rows": rows, "results": [r.to_dict() for r in results]}


docker_escapes = lesson.live("escapes-docker", escapes_docker)

# %%
same = [r["attempt"] for r, d in zip(edu_escapes["rows"], docker_escapes["rows"], strict=True)
        if r["edu"] == d["docker"]]
print(f"the same verdict and layer in edu and Docker: {len(same)} of {len(edu_escapes['rows'])}")
print("different:", ", ".join(f"{r['attempt']} (edu {r['edu']}; Docker {d['docker']})"
                              for r, d in zip(edu_escapes["rows"], docker_escapes["rows"],
                                              strict=True) if r["edu"] != d["docker"]))

# %% [markdown]
# ## 6. Rootless: root inside, you outside
#
# Every attempt above was made by uid 0, the kernel's root, held in by the layers. A
# **rootless** container adds one more: it is made by an ordinary user, in a *user namespace*
# where uid 0 inside is that user's own uid outside (lesson 03). A file that belongs to the
# host's real root has no number in that namespace, and shows up as `nobody` (65534).
# As root, the part makes a throwaway user for this; its reset removes the user.

# %%
q_nobody = predict("In a rootless container, `ls -ln /proc/sys/kernel/ostype` (a file of the "
                   "host's root) shows its owner as:",
                   ["0 (root)", "65534 (nobody)", "the user's own uid"])
q_nobody

# %%
ROOTLESS = "id; cat /proc/self/uid_map; ls -ln /proc/sys/kernel/ostype; grep CapEff /proc/self/status"


def rootless():
    from edu_runtime.notebook import accounts

    student = accounts.throwaway(note=lesson.made) if os.geteuid() == 0 else accounts.me()

    def edu(*args):
        done = student.edu(*args)
        if done.returncode != 0:
            raise RuntimeError(f"edu {' '.join(args)} as {student.name} failed: "
                               f"{done.stderr.strip()}")
        return done.stdout

    edu("bootstrap", "busybox")  # the user's own store: root's images are not theirs
    print(f"as {student.name} (uid {student.uid}):")
    show("run", "--rm", "--network", "none", "busybox", "sh", "-c", ROOTLESS)
    inside = edu("run", "--rm", "--network", "none", "busybox", "sh", "-c", ROOTLESS)
    print(inside.rstrip())
    lines = inside.splitlines()
    owner = lines[2].split()[2]
    return {"user": student.name, "uid": student.uid, "id": lines[0],
            "uid_map": " ".join(lines[1].split()), "owner": owner}


rl = lesson.live("rootless", rootless)

# %%
q_nobody.check("65534 (nobody)" if rl["owner"] == "65534" else
               "0 (root)" if rl["owner"] == "0" else "the user's own uid", why=(
    f"uid_map `{rl['uid_map']}` maps one uid: 0 inside is {rl['uid_map'].split()[1]} "
    "outside. The host's root (uid 0 outside) has no number inside, and the kernel shows an "
    "unmapped owner as the overflow uid, 65534. A rootless container's root can do only "
    "what its user could: an escape from it lands as that user, not as root."))

# %% [markdown]
# ## Exercise
#
# Find a memory limit at which Python gets 50 MiB but not 100 MiB: run
# `python3 -c "b = b'x' * (N * 2**20)"` with N = 50 and N = 100 in containers with the same
# `-m`, and store the `-m` you chose in `ex_memory` (a string such as `"80m"`) and the two exit
# codes in `ex_codes` (a dict `{50: ..., 100: ...}`). Hint: Python itself needs about 10 MiB.

# %%
ex = exercise(
    "Choose -m so that 50 MiB fits and 100 MiB does not; store it in ex_memory and the exit "
    "codes in ex_codes = {50: ..., 100: ...}.",
    solution='''
ex_memory = "80m"  # 50 MiB + Python's ~10 MiB fit; 100 MiB does not
ex_codes = {}
for n in (50, 100):
    code, said = run_in("python", ["python3", "-c", f"b = b'x' * ({n} * 2**20)"],
                        memory=ex_memory)
    ex_codes[n] = code
print(ex_memory, ex_codes)
''')
ex

# %% [markdown]
# ## Checks
#
# Plain functions: each prints a pass, or "not yet" with a hint.

# %%
def files_say(files, *pairs):
    """Whether any of the cgroup files says key value (e.g. oom_kill 1)."""
    text = "\n".join(files.values())
    return any(f"{k} {v}" in text for k, v in pairs)


results = [
    check("the 200 MiB container was OOM-killed: exit 137, OOMKilled true, oom_kill counted",
          mem["code"] == 137 and mem["oom"] and files_say(mem["files"], ("oom_kill", 1)),
          hint="run section 1 again: -m 64m, and a program that writes 200 MiB"),
    check("the fork bomb was held at the pids limit, and the host could still start processes",
          28 <= bomb["pids"] <= 32 and bomb["refused"] > 0 and bomb["host_ok"],
          hint="pids.max is 32; pids.events counts the refused forks"),
    check("--cpus 0.25 gave about a quarter of a core; cpu.stat counted throttled periods",
          15 <= got(cpu_runs["l10-quarter"]) <= 35
          and cpu_runs["l10-quarter"][-1]["throttled_periods"] > 0,
          hint="see the figure: CPU % and the throttled time"),
    check("a container had 14 capabilities and seccomp mode 2; without CHOWN, chown failed",
          len(seen["caps"]) == 14 and seen["seccomp"] == "2" and seen["code"] != 0
          and "chown worked" in seen["kept"],
          hint="section 4: CapEff decoded, and --cap-drop CHOWN"),
    check("every escape attempt was blocked in edu (and in Docker), each by a named layer",
          all(r["edu"].startswith("blocked") for r in edu_escapes["rows"])
          and all(r["docker"].startswith("blocked") for r in docker_escapes["rows"]),
          hint="section 5: the table says which layer stopped each one"),
    check("in the rootless container, a host root's file belonged to nobody (65534)",
          rl["owner"] == "65534", hint="section 6: ls -ln /proc/sys/kernel/ostype"),
    check("your -m lets 50 MiB through and stops 100 MiB (exit 0, then 137)",
          lambda: ex_codes == {50: 0, 100: 137},
          hint="between 64m and about 100m: Python needs ~10 MiB besides the 50"),
]
summary(results)

# %% [markdown]
# ## Reset
#
# Remove every container (and the throwaway user) this lesson made, and say which.

# %%
lesson.reset()

# %% [markdown]
# That is the course's map walked end to end: from lesson 00's doctor to a container's limits
# and walls. Back to **[00 start here](00-start-here.ipynb)** for what your machine runs live.
