# ---
# jupyter:
#   edu:
#     parts:
#       doctor:
#         needs:
#         - linux
#         what: edu doctor's report on this machine
#       kernel:
#         needs:
#         - containers
#         what: the host's kernel, seen from inside a container
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
# # 00 Start here: what is a container, really?
#
# This course follows a Docker primer, topic by topic, with one difference: nothing is
# hand-waved. Every container here is built by `edu_runtime`, a small container runtime
# written in Python, **one kernel step at a time**: namespaces, a cgroup, overlay layers,
# `pivot_root`, capabilities, seccomp, and a veth pair on a bridge. You can stop between
# steps and look at the kernel from the outside. `vm_compare` boots the *same* image as a
# virtual machine, so you can measure what a guest OS costs, on your own machine.
#
# | # | lesson | what you will see for real |
# |---|---|---|
# | 00 | start here (this page) | what your machine can do; how the lessons work |
# | 01 | containers vs virtual machines | one shared kernel against a guest kernel: size, start-up, memory |
# | 02 | why containers | an app and its database apart; scaling out |
# | 03 | installing | what an engine is made of |
# | 04 | images | layers, digests, overlay; two versions side by side |
# | 05 | the Dockerfile | FROM, COPY, RUN and CMD, each a layer or a setting |
# | 06 | a container, step by step | namespaces, cgroup, overlay, pivot_root, caps, seccomp, network |
# | 07 | `run -it`, detach and `exit` | PID 1, a pty, Ctrl-P Ctrl-Q |
# | 08 | a web app on `-p 8080:80 -d` | WordPress and MariaDB; the NAT rule behind `-p` |
# | 09 | a Node.js app | build, run, change the code, rebuild with the cache |
# | 10 | limits and security | limits biting, and the defences of each layer |
#
# **After this lesson you can:**
# - read `edu doctor`'s verdict for your machine, and say which lessons run live here;
# - show, with two values, that a container runs on your machine's own kernel;
# - use the course's tools: predictions, the stepper, exercises, checks and reset.
#
# Run each cell with **Shift-Enter**.

# %%
from edu_runtime.notebook import Lesson

lesson = Lesson("00-start-here")
lesson.image("busybox")  # in the store, or built from Debian's packages once

# %% [markdown]
# The line above is the first cell of every lesson. Each lesson has **live parts**: things it
# does for real on your machine (start containers, boot a virtual machine, talk to Docker).
# Where your machine cannot do a part, it **replays** a recording of a real run instead, and
# every replayed output says so: *replay of a real run on MACHINE, DATE*. Nothing is faked.

# %% [markdown]
# ## Your machine
#
# Containers need features of the Linux kernel; virtual machines need a hypervisor.
# `edu doctor` finds out what your machine has by *trying* each one: it creates every kind of
# namespace, mounts an overlay, and boots a tiny virtual machine to see whether KVM works.
# The first run takes a little while (the boot); later runs reuse its verdict.

# %%
from edu_runtime.notebook import doctor_report, doctor_table

report = lesson.live("doctor", doctor_report)
doctor_table(report)

# %% [markdown]
# **PASS** means the lessons that need it run for real; **WARN** means they run degraded
# (for example TCG, QEMU's software emulation, when KVM is missing: guests boot, slowly);
# **FAIL** on a line the course needs stops it, and the *fix* says what to do. The same
# report is one command away in a terminal: `edu doctor`.

# %% [markdown]
# ## What each lesson will do here
#
# Every lesson declares what its live parts need (root or user namespaces, a bridge, qemu,
# dockerd). Read against this machine's verdicts, that gives the whole course's plan:

# %%
from edu_runtime.notebook import course_plan, plan_table

plan_table(course_plan())

# %% [markdown]
# ## Predict, then run
#
# Before a cell shows something surprising, a lesson asks you to predict it. Pick an answer
# (the buttons), *then* run the next cell. A wrong prediction teaches the most, so the answer
# always says why.

# %%
from edu_runtime.notebook import predict

q = predict("A container started on this machine reports its kernel release "
            "(`uname -r`). Compared with this notebook's, it is:",
            ["the same", "different", "it has no kernel"])
q

# %% [markdown]
# ## A first look at the shared kernel
#
# Here is the kernel this notebook runs on, and the same two values read from **inside** a
# container of the `busybox` image: the kernel release and the boot id, a random number the
# kernel picks at every boot.

# %%
from pathlib import Path


def kernels():
    from edu_runtime import Container

    host = {"release": Path("/proc/sys/kernel/osrelease").read_text().strip(),
            "boot_id": Path("/proc/sys/kernel/random/boot_id").read_text().strip()}
    c = Container("busybox", ["sh", "-c", "uname -r; cat /proc/sys/kernel/random/boot_id"],
                  network="none")
    lesson.made(container=c.id)
    c.run()
    lines = [line.strip() for _, line in c.logs()]
    c.remove()
    inside = {"release": lines[0], "boot_id": lines[1]}
    for key in ("release", "boot_id"):
        print(f"{key:<8} host       {host[key]}\n{'':<8} container  {inside[key]}")
    return {"host": host, "container": inside}


seen = lesson.live("kernel", kernels)

# %%
same = seen["host"] == seen["container"]
q.check("the same" if same else "different",
        why="a container is a group of ordinary processes with a restricted view of one "
            "kernel: the host's. Lesson 01 boots a virtual machine, which brings a kernel "
            "of its own, and reports different values.")

# %% [markdown]
# ## The stepper
#
# `edu_runtime` makes a container in steps, and lesson 06 lets you apply them one at a time
# with buttons: **Next step**, **Run to end**, **Reset**. After each step it shows what the
# step did (its system calls), what changed in the kernel's state (namespace inodes, mounts,
# cgroup files, capabilities, seccomp), how long it took, and the container's PID 1 as the
# host sees it. Reset undoes every step, so the host is as it was.
#
# Where widgets cannot draw (a terminal, an exported page), every widget of the course
# prints the same content as text.

# %% [markdown]
# ## An exercise
#
# Each lesson ends with an exercise that applies its idea to a new case. The solution is
# hidden until you click *Show the solution*.

# %%
from edu_runtime.notebook import exercise

exercise("Find the host's kernel *version* string (`/proc/version`, which names the "
         "compiler that built the kernel) from inside a busybox container, and store it in "
         "a variable named `inside_version`.",
         solution='''
from edu_runtime import Container

c = Container("busybox", ["cat", "/proc/version"], network="none")
lesson.made(container=c.id)
c.run()
inside_version = "".join(line for _, line in c.logs()).strip()
c.remove()
print(inside_version)
''')

# %% [markdown]
# ## Checks
#
# Each lesson ends with checks: plain functions that look at the real state, print what
# passed, and give a hint for what did not. Run them as often as you like.

# %%
from edu_runtime.notebook import check, summary

summary([
    check("doctor says the course can run here", report["can_run"],
          hint="read the FAIL lines of the table above: each has its fix"),
    check("the container reported the host's kernel release and boot id", same,
          hint="run the shared-kernel cell again; both values must match the host's"),
    check("inside_version is the host's /proc/version",
          lambda: inside_version.strip() == Path("/proc/version").read_text().strip(),
          hint="run the exercise; the solution is under 'Show the solution'"),
])

# %% [markdown]
# ## Reset
#
# Every lesson ends with a reset: it removes what the lesson made (containers, networks,
# volumes, images, virtual machines) and says what it removed, so a lesson can be run again
# from the top, and the next one starts from a clean machine.

# %%
lesson.reset()

# %% [markdown]
# Next: **[01 containers vs virtual machines](01-containers-vs-vms.ipynb)**: the same image as
# a container and as a virtual machine, measured side by side.
