# ---
# jupyter:
#   jupytext:
#     cell_metadata_filter: -all
#     notebook_metadata_filter: kernelspec,jupytext
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Start here: what is a container, really?
#
# This course follows a Docker primer, topic by topic, but with one difference: nothing is
# hand-waved. Every container you start here is built by `edu_runtime`, a small container
# runtime written in Python, **one kernel step at a time**: namespaces, cgroups, overlay
# layers, `pivot_root`, capabilities, seccomp and a veth pair on a bridge. You can stop
# between steps and look at the kernel's state from the outside. And `vm_compare` boots the
# *same* image as a virtual machine, so you can measure what a guest OS costs on your machine.
#
# The lessons:
#
# | # | lesson | what you will see for real |
# |---|---|---|
# | 00 | start here (this page) | what your machine can do |
# | 01 | containers vs virtual machines | one shared kernel against a guest kernel: size, start-up, memory |
# | 02 | why containers | an app and its database apart; scaling out |
# | 03 | images | layers, digests, versions: an image is an environment |
# | 04 | the Dockerfile | FROM, COPY, RUN and CMD, each becoming a layer |
# | 05 | `run -it`, detach and `exit` | a pty, Ctrl-P Ctrl-Q, and what `exit` stops |
# | 06 | a web app with `-p 8080:80 -d` | a veth, a bridge, and the NAT rule behind `-p` |
# | 07 | a Node.js app | building and running it |
#
# Run each cell with **Shift-Enter**.

# %% [markdown]
# ## Your machine
#
# Containers need features of the Linux kernel; virtual machines need a hypervisor.
# `edu doctor` finds out what your machine has by *trying* each thing: it creates every kind
# of namespace, mounts an overlay, and boots a tiny virtual machine to see whether KVM
# works. The first run takes a little while (the VM boot); later runs reuse its verdict.

# %%
from edu_cli.doctor import run_doctor

report = run_doctor(progress=print)
print(report.to_text())

# %% [markdown]
# Each line is a check: **PASS** means the lesson that needs it runs for real; **WARN** means
# it runs in a degraded way (the lesson will tell you how); **FAIL** on a critical line means
# the course cannot run here, and the `fix:` line says what to do.

# %% [markdown]
# ## A first look at the shared kernel
#
# Here is the kernel this notebook runs on. Keep these two values in mind: every container
# you start in this course will report **the same** kernel release and boot id, because a
# container is only a group of ordinary processes with a restricted view of one kernel. A
# virtual machine boots a kernel of its own, so it will report different ones.

# %%
from edu_runtime import kernel

print("kernel release:", kernel.read("/proc/sys/kernel/osrelease"))
print("boot id:       ", kernel.boot_id())

# %% [markdown]
# Next: **01, containers vs virtual machines**.
