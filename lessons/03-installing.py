# ---
# jupyter:
#   edu:
#     parts:
#       desktop:
#         needs:
#         - qemu
#         what: 'a container inside a VM, as Docker Desktop runs them: whose kernel
#           it reports'
#       docker:
#         needs:
#         - dockerd
#         what: 'Docker''s parts around a running docker container: the host''s process
#           tree'
#       doctor:
#         needs:
#         - linux
#         what: 'edu doctor: what this machine gives the course'
#       edu:
#         needs:
#         - containers
#         what: 'edu''s parts around a running edu container: the host''s process tree'
#       rootless:
#         needs:
#         - containers
#         what: 'a rootless container of a non-root user: its uid_map, uid 0 inside'
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
# # 03 Installing: what an engine is made of
#
# *The primer's topic: installing Docker.* `apt install docker.io`, or Docker Desktop's
# installer, does not install "a Docker". It installs several programs that hand a request
# down to the kernel, one to the next. Here you find each of them in the host's process
# table, around a container that is really running, for Docker and for edu side by side.
# Then you see why Docker Desktop brings a whole Linux VM along on macOS and Windows, what
# this course installed on your machine, and what "rootless" means.
#
# **Learning goals.** After this lesson you can:
#
# 1. name Docker's parts (`docker`, `dockerd`, `containerd`, `containerd-shim-runc-v2`,
#    `runc`) and edu's (`edu`, the supervisor, `edu_runtime`), and point at each in the
#    host's process table around a running container;
# 2. say which process is the parent of a container's PID 1, for Docker and for edu, and
#    why it is not the command you typed;
# 3. show that a container inside a VM reports the VM's kernel, and so explain why Docker
#    Desktop on macOS or Windows needs one;
# 4. read `edu doctor`'s lines on what your machine gives the course;
# 5. start a rootless container and show, with its `uid_map`, that uid 0 inside is an
#    ordinary user's uid outside.
#
# The first cell says which parts run live here and which replay a recording of a real run.
# Run each cell with **Shift-Enter**.

# %%
from edu_runtime.notebook import Lesson, check, exercise, predict, summary

lesson = Lesson("03-installing")
lesson.image("busybox")  # in the store, or built from Debian's packages once

# %% [markdown]
# ## What `apt install docker.io` installs
#
# | program | Debian package | what it does | when it runs |
# |---|---|---|---|
# | `docker` | docker.io (the CLI) | sends dockerd one HTTP request per command, prints the answer | while you type |
# | `dockerd` | docker.io | the daemon: the API on `/var/run/docker.sock`, images, networks, volumes | always |
# | `containerd` | containerd | keeps containers' lifecycle (create, start, kill, delete) | always |
# | `containerd-shim-runc-v2` | containerd | one per container: its parent, holds its output, reports its exit | as long as its container |
# | `runc` | runc | makes the container: namespaces, cgroup, mounts, then the command | a moment, at the start |
# | the kernel | (the host's) | namespaces, cgroups, overlayfs: what a container *is* | always |
#
# So `docker run -d busybox sleep 120` is a chain: docker asks dockerd, dockerd asks
# containerd, containerd starts a shim, the shim runs runc, runc asks the kernel.

# %% [markdown]
# ## Predict, then look
#
# The `docker run -d` command prints an id and exits, and the container goes on. Some
# process on the host must be its parent.

# %%
q_parent = predict("A container started with `docker run -d busybox sleep 120` is running. "
                   "In the host's process table, which process is the parent of its "
                   "`sleep`?", ["docker, the command you typed", "dockerd", "containerd",
                                "containerd-shim-runc-v2", "runc"])
q_parent

# %% [markdown]
# ## 1. Docker's parts, around a running container
#
# The next part lends Docker our busybox image (`edu save busybox | docker load`, under the
# name `l03-busybox:edu`), starts a container with `docker run -d --rm --name l03-docker
# --network none l03-busybox:edu sleep 120`, and reads the host's `/proc`, as `ps` does: the
# container's `sleep`, its parent, their parents up to PID 1, dockerd and containerd, which
# socket each listens on, and what runc left behind. Then it removes the container
# (`docker rm -f`). Where Docker is not running, this replays a run that had it.

# %%
import json
import os
import subprocess

from edu_runtime.notebook.docker import docker as docker_cmd


def version(argv):
    """A program's version line, or "" when it is not installed."""
    try:
        return subprocess.run(argv, capture_output=True, text=True).stdout.strip()
    except OSError:
        return ""


def docker_parts():
    from edu_runtime import proctree
    from edu_runtime.notebook import docker

    with docker.borrowed("busybox", "l03-busybox:edu") as image:
        # --rm as well: a container this kernel cannot remove (it died) goes after 120 s
        cid = docker_cmd("run", "-d", "--rm", "--name", "l03-docker", "--network", "none",
                         image, "sleep", "120").stdout.strip()
        try:
            pid = int(docker_cmd("inspect", "-f", "{{.State.Pid}}", cid).stdout)
            chain = proctree.ancestry(pid)
            shim = chain[1]
            address = shim["args"][shim["args"].index("-address") + 1] \
                if "-address" in shim["args"] else ""
            dockerd = next((p for p in proctree.named("dockerd")
                            if "/var/run/docker.sock" in proctree.listening(p)),
                           (proctree.named("dockerd") or [0])[0])
            containerd = next((p for p in proctree.named("containerd")
                               if address in proctree.listening(p)),
                              (proctree.named("containerd") or [0])[0])
            state = subprocess.run(["runc", "--root", "/run/docker/runtime-runc/moby",
                                    "state", cid], capture_output=True, text=True)
            runc = json.loads(state.stdout) if state.returncode == 0 else {}
            spec = {}
            if runc.get("bundle"):
                with open(f"{runc['bundle']}/config.json") as f:
                    spec = json.load(f)
            host_ns = proctree.namespaces(os.getpid())  # this notebook's: the host's
            rows = {r["pid"]: r for r in chain + proctree.ancestry(dockerd)
                    + proctree.ancestry(containerd)}
        finally:
            docker_cmd("rm", "-f", cid, check=False)
    notes = {dockerd: "the daemon", containerd: "keeps the containers",
             shim["pid"]: "one per container", pid: "PID 1 of the container"}
    tree = proctree.tree(list(rows.values()), notes)
    new_ns = sorted(k for k, v in chain[0]["ns"].items() if v != host_ns.get(k))
    seen = {
        "tree": tree, "parent": shim["args"][0].rsplit("/", 1)[-1], "container": cid,
        "nspid": chain[0]["nspid"], "new_ns": new_ns,
        "sockets": {"dockerd": proctree.listening(dockerd) if dockerd else [],
                    "containerd": [address]},
        "runc": {k: runc.get(k) for k in ("status", "pid", "bundle")},
        "spec_namespaces": [n["type"] for n in spec.get("linux", {}).get("namespaces", [])],
        "pss": {"dockerd": rows.get(dockerd, {}).get("pss_kib"),
                "containerd": rows.get(containerd, {}).get("pss_kib"),
                "shim": shim["pss_kib"]},
        "versions": {"docker": version(["docker", "version", "--format",
                                        "CLI {{.Client.Version}}, dockerd {{.Server.Version}}"]),
                     "containerd": version(["containerd", "--version"]).split()[-1:],
                     "runc": version(["runc", "--version"]).split("\n")[0]},
    }
    print(f"installed: {seen['versions']['docker']}, containerd "
          f"{' '.join(seen['versions']['containerd'])}, {seen['versions']['runc']}\n")
    print(tree)
    print(f"\nthe docker command: gone; it sent dockerd one request and printed {cid[:12]}")
    api = [s for s in seen["sockets"]["dockerd"] if s.endswith("docker.sock")]
    print(f"dockerd listens on {', '.join(api)}: the docker API")
    print(f"containerd listens on {address}: dockerd's requests, and the shim's")
    print(f"runc: gone too; runc state {cid[:12]} still says {runc.get('status')}, pid "
          f"{runc.get('pid')}")
    print(f"the OCI spec runc read asks for namespaces: {', '.join(seen['spec_namespaces'])}")
    print(f"the kernel: NSpid {' '.join(map(str, seen['nspid']))}; its own namespaces: "
          f"{' '.join(new_ns)}")
    return seen


docker_seen = lesson.live("docker", docker_parts)

# %%
q_parent.check("containerd-shim-runc-v2" if docker_seen["parent"].startswith("containerd-shim")
               else docker_seen["parent"],
               why="neither docker nor runc is there any more: the docker command exits once "
                   "dockerd has answered, and runc exits once the container runs. Nor is "
                   "it dockerd or containerd: containerd starts one small shim per "
                   "container, which double-forks away from it and stays the container's "
                   "parent. It holds the container's output and collects its exit code, so "
                   "dockerd and containerd can be restarted, or upgraded, while containers "
                   "run.")

# %% [markdown]
# Read the tree from the bottom. `sleep` has a host pid and, in `NSpid`, pid 1 inside: one
# process, two numbers, as in lesson 06. Its parent is the shim, whose own parent is not
# containerd: the shim left it, and was adopted by the nearest *subreaper* above it (here
# `tini`, which runs dockerd; on a machine with systemd, PID 1). dockerd and containerd are
# a separate branch: they reach the container only through sockets.

# %% [markdown]
# ## 2. edu's parts, around a running container
#
# Now the same look at an edu container: `edu run -d --name l03-edu --network none busybox
# sleep 120`, started here through the runtime's Python face (`Container(...).start()`),
# which asks the supervisor, as `edu run` does.
#
# | Docker | edu |
# |---|---|
# | `docker`, the CLI | `edu`, the CLI (`edu_cli/`): a thin client of the supervisor's socket |
# | `dockerd` + `containerd`, always running | no daemon running all the time: the supervisor starts with the first container and leaves 30 s after the last |
# | one `containerd-shim-runc-v2` per container | one supervisor (`edu_runtime/life/supervisor.py`) for all containers: their parent, their logs, their restarts |
# | `runc`, a separate program | `edu_runtime`'s steps, run inside the supervisor: a library, not a process |
# | the kernel | the same kernel, the same system calls |

# %%
def edu_parts():
    from edu_runtime import Container, proctree

    c = Container("busybox", ["sleep", "120"], name="l03-edu", network="none")
    lesson.made(container=c.id)  # noted first: reset finds it, even after a Ctrl-C
    c.start()  # edu run -d
    try:
        chain = proctree.ancestry(c.pid)
        supervisor = chain[1]
        sockets = proctree.listening(supervisor["pid"])
        host_ns = proctree.namespaces(os.getpid())  # this notebook's: the host's
    finally:
        c.remove(force=True)  # edu rm -f
    tree = proctree.tree(chain, {supervisor["pid"]: "the supervisor",
                                 c.pid: "PID 1 of the container"})
    new_ns = sorted(k for k, v in chain[0]["ns"].items() if v != host_ns.get(k))
    print(tree)
    print(f"\nthe supervisor listens on {', '.join(sockets)}: edu's API, a JSON line per "
          "request")
    print(f"the kernel: NSpid {' '.join(map(str, chain[0]['nspid']))}; its own namespaces: "
          f"{' '.join(new_ns)}")
    return {"tree": tree, "parent": " ".join(supervisor["args"][:3]), "sockets": sockets,
            "nspid": chain[0]["nspid"], "new_ns": new_ns,
            "pss": {"supervisor": supervisor["pss_kib"]}}


edu_seen = lesson.live("edu", edu_parts)

# %% [markdown]
# The same kernel evidence as Docker's container (`NSpid` ending in 1, the same new
# namespaces), one process fewer between it and PID 1, and no daemon branch at all. The
# runtime's work (lesson 06's seventeen steps) happened inside the supervisor, which forked
# the container and is now its parent and its log keeper.
#
# What each engine's own processes cost while one container runs, measured on both (PSS:
# shared memory split fairly between the processes that share it):

# %%
from edu_runtime.notebook.bars import engine_memory

engine_memory({"parts": docker_seen["pss"], "replay": docker_seen.get("replay")},
              {"parts": edu_seen["pss"], "replay": edu_seen.get("replay")})

# %% [markdown]
# Docker's daemons run whether or not a container does, and each container adds a shim of
# its own (REFERENCES.md: about 13 MiB RSS each). edu's supervisor is one Python process for
# all containers, and is gone when none runs. The price: edu has no API over the network,
# no swarm, no plugins; and a supervisor crash takes its containers with it (they ask the
# kernel to kill them), where Docker's shims keep containers running through a dockerd
# restart.

# %% [markdown]
# ## 3. Docker Desktop: a Linux VM, hidden
#
# A container is a group of processes on a **Linux** kernel: namespaces, cgroups and
# overlayfs are Linux features. macOS and Windows do not have them. So Docker Desktop
# installs a small Linux virtual machine (with Apple's Virtualization framework on a Mac,
# WSL 2's Hyper-V VM on Windows), runs dockerd, containerd and runc inside it, and leaves
# only the `docker` CLI on your desktop, talking to the VM's dockerd through a socket.
# Every container then shares the kernel of *that VM*, not your Mac's.
#
# Lesson 01 booted a VM with a kernel of its own: the guest kernel of this course. Let us
# make it play Docker Desktop.

# %%
q_desktop = predict("On a Mac, `docker run --rm busybox uname -r` prints a kernel release. "
                    "Whose kernel is it?", ["macOS's own kernel", "the Linux kernel of "
                                            "Docker Desktop's VM", "a kernel inside the "
                                            "busybox image"])
q_desktop

# %% [markdown]
# The next part boots lesson 01's busybox guest (the course's guest kernel and an initramfs
# of the busybox image) under plain QEMU, and inside the VM starts a container the simplest
# way there is: busybox's `unshare`, with its own pid, mount and hostname namespaces, which
# prints its kernel release and boot id. Under TCG (no KVM) the boot takes about 10 s.

# %%
from pathlib import Path

IN_THE_VM = ("unshare -m -u -p -f --mount-proc sh -c 'hostname box; echo CONTAINER "
             "pid=$$ uname=$(uname -r) boot_id=$(cat /proc/sys/kernel/random/boot_id)'")


def host_kernel():
    return {"uname": Path("/proc/sys/kernel/osrelease").read_text().strip(),
            "boot_id": Path("/proc/sys/kernel/random/boot_id").read_text().strip()}


def container_in_a_vm():
    from vm_compare import guest_image, probes

    accel = probes.probe_kvm(progress=lambda _text: None).get("data", {}).get("accel")
    guest = guest_image.minimal("busybox", ["sh", "-c", IN_THE_VM], progress=lambda _t: None)
    boot = guest_image.boot_raw(guest, accel=accel or "tcg", timeout=180)
    if not boot.ready or boot.exit_code != 0:
        raise RuntimeError(f"the guest did not run its container (ready: {boot.ready}, exit: "
                           f"{boot.exit_code}); its console ended with: "
                           f"{boot.console[-400:]}")
    line = next(x for x in boot.output().splitlines() if x.startswith("CONTAINER"))
    inside = dict(w.split("=", 1) for w in line.split()[1:])
    seen = {"host": host_kernel(), "vm": {"uname": boot.fields["uname"],
                                          "boot_id": boot.fields["boot_id"]},
            "container": {"uname": inside["uname"], "boot_id": inside["boot_id"],
                          "pid": inside["pid"]}, "accel": accel, "seconds": boot.wall}
    print(f"booted under {accel.upper() if accel else 'TCG'} in {boot.wall:.1f} s; inside "
          f"the VM, the container's shell is pid {inside['pid']}")
    return seen


vm = lesson.live("desktop", container_in_a_vm)

# %%
print(f"{'':<22}{'uname -r':<22}boot_id")
for who, key in (("this machine", "host"), ("the VM", "vm"), ("a container in the VM",
                                                                "container")):
    print(f"{who:<22}{vm[key]['uname']:<22}{vm[key]['boot_id']}")
in_vm = vm["container"]["boot_id"] == vm["vm"]["boot_id"] != vm["host"]["boot_id"]
q_desktop.check("the Linux kernel of Docker Desktop's VM" if in_vm else "macOS's own kernel",
                why="a container has no kernel of its own: its processes run on the kernel "
                    "of the machine the engine runs on. With Docker Desktop that machine is "
                    "the hidden Linux VM, so the container reports the VM's kernel (here the "
                    "course's guest kernel, the one lesson 01 booted), never the host's.")

# %% [markdown]
# The container in the VM has the VM's boot id; the VM has a boot id of its own. On a
# Mac the top line would say Darwin, and no container could run on it at all. That is the
# whole reason for Docker Desktop's VM: it costs memory and a boot, and it is why file
# sharing between macOS and a container (`-v ~/src:/src`) is slower than on Linux: the
# files cross from the Mac into the VM first. Docker Desktop *on Linux* runs a VM too, for
# the same experience everywhere; Docker Engine on Linux (what this machine has) runs none.

# %% [markdown]
# ## 4. This course's own setup
#
# `make lab` installed the course's parts: the `edu` command (a link to the course's
# `.venv/bin/edu`), the runtime (`edu_runtime`, a Python package), and the system packages
# they use (runc, qemu, libvirt, docker.io, uidmap, passt, ...). There is no daemon to
# start: the supervisor starts with the first container. What the course needs from the
# kernel, `edu doctor` finds out by trying. Its lines about the engine:

# %%
from edu_runtime.notebook import doctor_report, doctor_table

ENGINE = ("kernel", "namespaces", "cgroups", "overlayfs", "userns", "capabilities", "peers")
report = lesson.live("doctor", doctor_report)
doctor_table({**report, "results": [r for r in report["results"] if r["name"] in ENGINE]})

# %% [markdown]
# `userns` is the line for the next part: unprivileged user namespaces, which rootless
# containers are made of. `peers` says which of Docker's parts are here. The whole report
# is `edu doctor` in a terminal (lesson 00 shows it all).

# %% [markdown]
# ## 5. Rootless: uid 0 inside, you outside
#
# So far every container was started by root. A student on a laptop is not root, and
# should not need to be: a **rootless** container is made by an ordinary user, in a *user
# namespace* of their own, where their uid is mapped to uid 0. Inside, the shell is root:
# it owns the image's files and may install packages. Outside, the kernel sees the user's
# own uid, with none of root's powers. Docker has the same mode
# (`dockerd-rootless-setuptool.sh install` runs dockerd as you, in such a namespace made by
# RootlessKit); for edu it is simply what happens when you are not root.
#
# As root, the next part makes a throwaway user for this (`useradd -m edu-st-PID-lesson`, noted
# in the lesson's ledger first, so the reset deletes it with everything of theirs). As a
# student, it is you. The user runs, with their own store and their own supervisor:
#
#     edu bootstrap busybox
#     edu run -d --name l03-rootless --network none busybox sleep 120
#     edu exec l03-rootless sh -c 'id; cat /proc/self/uid_map'

# %%
q_uid = predict("The rootless container's shell says `uid=0(root)`. Which uid does the "
                "host's kernel see for that process?", ["0: it is root",
                                                        "the user's own uid",
                                                        "65534, nobody",
                                                        "a uid from /etc/subuid"])
q_uid

# %%
def rootless():
    from edu_runtime import proctree
    from edu_runtime.notebook import accounts

    student = accounts.throwaway(note=lesson.made) if os.geteuid() == 0 else accounts.me()
    if not student.throwaway:
        lesson.made(container="l03-rootless")

    def edu(*args):
        done = student.edu(*args)
        if done.returncode != 0:
            raise RuntimeError(f"edu {' '.join(args)} as {student.name} failed: "
                               f"{done.stderr.strip()}")
        return done.stdout

    edu("bootstrap", "busybox")  # the user's own store: root's images are not theirs
    student.edu("rm", "-f", "l03-rootless")  # left by an interrupted run, if any
    edu("run", "-d", "--name", "l03-rootless", "--network", "none", "busybox", "sleep", "120")
    try:
        pid = json.loads(edu("inspect", "l03-rootless"))[0]["State"]["Pid"]
        inside = edu("exec", "l03-rootless", "sh", "-c",
                     "id; cat /proc/self/uid_map").splitlines()
        status = Path(f"/proc/{pid}/status").read_text().splitlines()
        uid_line = " ".join(next(x for x in status if x.startswith("Uid:")).split())
        uid_map = " ".join(Path(f"/proc/{pid}/uid_map").read_text().split())
        tree = proctree.tree(proctree.ancestry(pid)[:2], {pid: "PID 1 of the container"})
    finally:
        student.edu("rm", "-f", "l03-rootless")
    print(f"as {student.name} (uid {student.uid}):")
    print(f"  inside:  {inside[0]}")
    print(f"           uid_map {' '.join(inside[1].split())}")
    print(f"  outside: /proc/{pid}/status {uid_line}")
    print(f"           /proc/{pid}/uid_map {uid_map}")
    print(tree)
    return {"user": student.name, "uid": student.uid, "throwaway": student.throwaway,
            "inside_id": inside[0], "uid_map": uid_map, "uid_line": uid_line,
            "host_uid": int(uid_line.split()[1]), "tree": tree}


seen = lesson.live("rootless", rootless)

# %%
host_uid = seen["host_uid"]
q_uid.check("the user's own uid" if host_uid == seen["uid"] else
            "0: it is root" if host_uid == 0 else "a uid from /etc/subuid",
            why=f"the uid_map line `{seen['uid_map']}` reads: uid 0 inside (first number) "
                f"is uid {seen['uid_map'].split()[1]} outside (second), for 1 uid (third). "
                "The kernel checks every permission against the outside uid, so this root "
                "can do nothing the user could not. /etc/subuid gives a user more uids to "
                "map (for images with several users); this container needed only one.")

# %% [markdown]
# Docker's rootless mode maps the same way, and so does Podman's: `uid_map` is the kernel's
# own answer to "who is root in here?". The container's parent is the user's own
# supervisor, running as the user too: nothing in this container ran as root, even for a
# moment.

# %% [markdown]
# ## Exercise
#
# A rootless container writes a file into a directory of the user's, bind-mounted at
# `/shared` (`-v DIR:/shared`). Inside, it is written by uid 0. Whose is it on the host?

# %%
ex = exercise(
    "As the rootless user of part 5 (their name is seen['user']; accounts.named(...) gives "
    "you a handle that runs edu as them), run a busybox container with a temporary "
    "directory of theirs mounted at /shared, that creates /shared/made-inside and prints "
    "`id -u`. Put the uid it printed in `inside_uid`, and the file's owner on the host "
    "in `owner_uid`.",
    solution='''
from edu_runtime.notebook import accounts

student = accounts.named(seen["user"])
shared = student.run(["mktemp", "-d"]).stdout.strip()  # theirs, in /tmp
done = student.edu("run", "--rm", "--network", "none", "-v", f"{shared}:/shared",
                   "busybox", "sh", "-c", "touch /shared/made-inside && id -u")
inside_uid = int(done.stdout.split()[-1])
owner_uid = Path(shared, "made-inside").stat().st_uid
student.run(["rm", "-rf", shared])
print(f"inside: uid {inside_uid}; on the host the file is uid {owner_uid}'s "
      f"({student.name} is uid {student.uid})")
''')
ex

# %% [markdown]
# ## Checks

# %%
results = [
    check("Docker: the container's parent is its containerd-shim, not docker or dockerd",
          docker_seen["parent"].startswith("containerd-shim"), hint="run part 1"),
    check("edu: the container's parent is edu's supervisor",
          "supervis" in edu_seen["parent"], hint="run part 2"),
    check("both containers run on this kernel, with pid 1 of a namespace of their own",
          docker_seen["nspid"][-1] == 1 and edu_seen["nspid"][-1] == 1
          and "pid" in docker_seen["new_ns"] and "pid" in edu_seen["new_ns"],
          hint="NSpid's last number is the pid inside"),
    check("a container in a VM reports the VM's kernel, not this machine's", in_vm,
          hint="compare the boot ids in part 3"),
    check("doctor says the course can run here", report["can_run"],
          hint="read the FAIL lines: each has its fix"),
    check("rootless: uid 0 inside is the user's own uid outside",
          seen["inside_id"].startswith("uid=0(") and seen["host_uid"] == seen["uid"],
          hint="run part 5; the uid_map's first line is `0 UID 1`"),
    check("exercise: the file root made inside belongs to the user on the host",
          lambda: inside_uid == 0 and owner_uid == seen["uid"],
          hint="run the exercise: inside_uid = what id -u printed, owner_uid = "
               "Path(...).stat().st_uid"),
]
summary(results)

# %% [markdown]
# ## Reset
#
# Remove the containers this lesson made (parts 1 and 5 removed theirs already) and, as
# root, the throwaway user with their home, their store, their supervisor and their
# `/etc/subuid` lines.

# %%
lesson.reset()

# %% [markdown]
# Next: **04 images** (notebooks/04-images.ipynb): what `docker pull` brings, layer by
# layer, digest by digest.
