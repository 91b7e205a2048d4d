# ---
# jupyter:
#   edu:
#     parts:
#       compare:
#         needs:
#         - containers
#         - qemu
#         what: 'busybox as a container and as a guest: start-up, size, memory, kernels;
#           1, 10, 50 containers against 1, 2, 4 guests'
#       guest-xml:
#         needs:
#         - qemu
#         what: the libvirt domain XML of the busybox guest
#       processes:
#         needs:
#         - containers
#         - qemu
#         what: who appears in the host's ps
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
# # 01 Containers vs virtual machines: one kernel, or two
#
# *The primer's topic: VM vs container.* "A VM carries a whole guest OS and its kernel, so
# its images are big, it starts slowly and it costs more; a container shares the host's
# kernel." Here you check each word of that sentence on your own machine, with **the same
# busybox image** run both ways: as an edu container, and as a real virtual machine under
# libvirt.
#
# **Learning goals.** After this lesson you can:
#
# 1. point, in a real libvirt domain XML, at the hypervisor, the guest's own kernel and the
#    program that *is* the VM on the host;
# 2. say how many times longer a VM of an image takes to be ready than a container of it,
#    and how much more disk and memory it needs, measured here;
# 3. show with two numbers (`uname -r` and the boot id) that a container runs on the host's
#    kernel and a VM on a kernel of its own;
# 4. find a container's process in the host's `ps`, and say why a VM's processes are not
#    there;
# 5. read a scale-out figure: 50 containers against 4 VMs.
#
# The first cell says which parts run live on this machine, and which replay a recording of
# a real run (and why). Run each cell with **Shift-Enter**.

# %%
import platform
from pathlib import Path

from IPython.display import Image, display

from edu_runtime.notebook import Lesson, check, exercise, predict, summary
from vm_compare import compare, domain, plots, processes

lesson = Lesson("01-containers-vs-vms")


def say_replay(value):
    """Say so when a value was replayed, not measured here."""
    if isinstance(value, dict) and value.get("replay"):
        print(f"[{value['replay']}]")


def host_kernel():
    """This machine's kernel release and boot id, read now."""
    return {"uname": platform.release(),
            "boot_id": Path("/proc/sys/kernel/random/boot_id").read_text().strip()}


# %% [markdown]
# ## The picture, in one table
#
# | | container | virtual machine |
# |---|---|---|
# | the app and its files | the image | the same image |
# | an operating system kernel | **the host's**, shared | **its own**: the guest OS |
# | between it and the hardware | nothing: its system calls go to the host's kernel | a **hypervisor** that makes a whole PC for the guest |
#
# The hypervisor here is QEMU, driven by **libvirt**, the way servers and desktops really run
# VMs. Where the CPU's virtualisation works, the Linux kernel's **KVM** runs the guest's
# instructions on the real CPU and QEMU supplies the devices. Where it does not (often in a
# cloud VM, like many classroom machines), QEMU's **TCG** emulates every instruction in
# software, 10 to 50 times slower. Each figure says which one ran.

# %% [markdown]
# ## 1. A virtual machine, on paper: its domain XML
#
# libvirt describes a VM in a *domain XML*. Below is the real one for our busybox guest, as
# libvirt completed it (we wrote most of it; libvirt filled in the emulator, the machine
# type and the CPU model). Each line that matters, raw, then what it means:

# %%
def guest_xml():
    """Our busybox guest's domain XML, and libvirt's completed copy (nothing boots)."""
    from vm_compare import guest_image, libvirt_guest

    guest = guest_image.minimal("busybox", ["sleep", "3600"], progress=lambda _text: None)
    accel = libvirt_guest.choose_accel()
    return {"accel": accel,
            "ours": libvirt_guest.domain_xml(guest, name="edu-guest-busybox", accel=accel),
            "completed": libvirt_guest.completed_xml(guest, accel=accel)}


xml = lesson.live("guest-xml", guest_xml)
print(domain.explain(xml["completed"]))

# %% [markdown]
# Two of those lines are the whole difference with a container:
#
# - `<kernel>`: the VM boots **a kernel of its own**, the guest OS. A container has no
#   `<kernel>` line anywhere: it has no kernel of its own.
# - `<emulator>`: on the host, the VM is **one process**, `qemu-system-x86_64`. Keep it in
#   mind for part 3.
#
# Docker beside us: Docker has no VM to describe. The nearest thing to this file is a
# container's config, `docker inspect NAME`: a command, an environment, a root filesystem,
# and at most limits on the host's own memory and CPUs. No kernel, and no machine: nothing is
# emulated.

# %% [markdown]
# ### Extra details: what libvirt added to our XML
#
# We asked for a kernel, an initramfs, 256 MiB, one CPU and a serial port. To make a
# computer of it, libvirt chose the rest:

# %%
say_replay(xml)
for line in domain.added_by_libvirt(xml["ours"], xml["completed"]):
    print(" ", domain.cut(line))

# %% [markdown]
# ## 2. The same image, both ways, measured
#
# Next, one measurement feeds every figure in this part. It runs the busybox image's
# `sh -c "echo ready; exec sleep 3600"`:
#
# - **as a container** (`edu run --rm --network none busybox sh -c '...'`; with Docker:
#   `docker run --rm --network none busybox sh -c '...'`, measured beside ours when a Docker
#   daemon answers, and runc's `runc run` too). The clock runs from the start call to the
#   "ready" line;
# - **as a VM**: the guest kernel plus an initramfs of *the image's own files*, booted by
#   libvirt (`virsh create`). The clock runs from the create call to the guest's "ready"
#   line on its serial console. Beside it, the same guest under raw QEMU, without libvirt.
#
# Each one runs 3 times, after a warm-up. Then the memory of one idle container and one
# idle VM, their kernels, and the scale run (1, 10 and 50 containers; 1, 2 and 4 VMs).
#
# **Predict first.** Then run the measurement: about 2 minutes under TCG, well under one
# with KVM. Watch the bar.

# %%
q_startup = predict("How many times longer than the container will the VM take to be "
                    "ready?", number=True)
q_startup

# %%
q_kernel = predict("Which kernel will `uname -r` report inside the container?",
                   ["the host's kernel", "a kernel of its own", "none: a container has no "
                    "kernel to ask"])
q_kernel


# %%
def measure():
    """The comparison, once: start-up, size, memory, kernels and the scale run."""
    from edu_runtime import progress

    bar = progress.bar(desc="measuring", unit="step", total=None)

    def say(text):
        bar.set_postfix_str(text[:60])
        bar.update(1)

    try:
        return compare.run(runs=3, debian_sizes=True, progress=say, note=lesson.made)
    finally:
        bar.close()


result = lesson.live("compare", measure)
figures = plots.figures(result)
for name, row in sorted(result["startup"].items(), key=lambda item: item[1]["median_s"]):
    print(f"{name:22} ready in {row['median_s'] * 1e3:8.1f} ms (median of "
          f"{len(row['runs_s'])})")
for name, why in result.get("skipped", {}).items():
    print(f"{name:22} left out: {why}")

# %% [markdown]
# ### Start-up

# %%
display(Image(plots.png(figures["startup.png"])))
q_startup.check(compare.startup_ratio(result),
                why="the container is a handful of kernel calls (namespaces, a cgroup, "
                    "mounts) and an exec: nothing boots. The VM starts QEMU, which emulates "
                    "a PC; its firmware runs, then a whole kernel boots and probes its "
                    "devices before it runs init. Under TCG, every guest instruction is "
                    "emulated too.")

# %% [markdown]
# The x axis is a log scale: each step is ×10. runc and `docker run` (grey, where installed)
# start the same image as containers too. Docker takes longer than runc or edu because its
# request goes through two daemons (dockerd, then containerd) before runc starts it. The
# published figures put a Docker start at 150 to 200 ms, and a Debian VM at 0.5 s to create
# plus 1.5 s to boot, *with* hardware virtualisation (Manco et al., "My VM is Lighter (and
# Safer) than your Container", SOSP 2017).

# %% [markdown]
# ### Extra details: where the time goes
#
# The container's start-up split into its kernel steps (from its trace), beside the VM's
# boot phases: QEMU up to the guest's first console byte, the guest kernel up to init
# (by the guest's own clock), and init up to "ready".

# %%
display(Image(plots.png(figures["waterfall.png"])))
print(f"libvirt's own part of the VM's start-up: {result['libvirt_overhead_ms']:.0f} ms "
      f"(libvirt guest minus raw QEMU, medians)")

# %% [markdown]
# ### Size on disk
#
# The container needs the image's layers and nothing more. The VM needs the same files, plus
# a kernel, plus (for the minimal busybox guest) a tiny init. Below it, debian: its layers
# against a full-disk guest with systemd and the kernel's modules, the primer's "MB against
# GB".

# %%
display(Image(plots.png(figures["sizes.png"])))

# %% [markdown]
# The hatched part of each VM bar is the same files the container has: the rest is what a
# guest OS costs. In the debian panel, most of the VM's bytes are the kernel's modules (for
# hardware a VM mostly does not have) and systemd's guest OS, and its disk file is bigger
# still; the container needs the layers alone, and every debian container shares them.

# %% [markdown]
# ### Memory
#
# One idle container and one idle VM, both running `sleep`, measured the same way: the
# memory of every host process that belongs to each (PSS, which splits shared pages fairly).

# %%
display(Image(plots.png(figures["memory.png"])))

# %% [markdown]
# The container's memory is that of `sleep` itself. The VM's is QEMU's: the guest's RAM, its
# kernel, its page cache, and the emulator. Docker adds about 13 MiB per container for its
# `containerd-shim` (the grey bar); edu's supervisor is one process for all containers.

# %% [markdown]
# ### Kernels: `uname -r` and the boot id
#
# Each one read `/proc/sys/kernel/osrelease` (what `uname -r` prints) and
# `/proc/sys/kernel/random/boot_id`, a random id that a kernel draws once, when it boots.
# The same boot id means the same running kernel.

# %%
say_replay(result)
k = result["kernel"]
print(f"{'':10} {'uname -r':24} boot_id")
for who in ("host", "container", "guest"):
    note = "" if who == "host" else ("  <- the host's" if k[who]["boot_id"] ==
                                     k["host"]["boot_id"] else "  <- a kernel of its own")
    print(f"{who:10} {k[who]['uname']:24} {k[who]['boot_id']}{note}")
same = k["container"]["boot_id"] == k["host"]["boot_id"]
q_kernel.check("the host's kernel" if same else "a kernel of its own",
               why="a container is a group of host processes with a restricted view; "
                   "there is one kernel, the host's. The VM booted its own, so its boot "
                   "id differs (its release could even be the same string: that is why "
                   "the boot id is the real evidence).")

# %% [markdown]
# ## 3. Who is in the host's `ps`?
#
# Now both run at once, each the same command: `ps` (what each sees from the inside), then
# `sleep 3600`. While both sleep, we read the host's own process table.

# %%
q_ps = predict("Both run `sleep 3600`. In the host's ps, whose `sleep 3600` will you find?",
               ["both", "only the container's", "only the guest's", "neither"])
q_ps

# %%
ps = lesson.live("processes", processes.both_running, note=lesson.made)
print(processes.report(ps))

# %% [markdown]
# The container's `ps` sees only its own processes (a PID namespace), but each of them is an
# ordinary host process with a host PID: the host's `ps` lists its `sleep`. The guest's
# `ps` shows a whole system: its own PID 1, and the kernel threads (`[kthreadd]`, ...) of
# its own kernel. None of it is in the host's table; only `qemu-system-x86_64` is, running
# as libvirt's user, with no child processes. Docker beside us: `docker top NAME` and the
# host's `ps` show the same container process; for a VM, `virsh list` shows a domain and
# `ps` one qemu.

# %%
ours = [p for p in ps["running_command"] if p["whose"] == "the container"]
q_ps.check("only the container's" if ours else "neither",
           why="a container's processes are host processes, in namespaces and a cgroup; a "
               "guest's processes belong to the guest's kernel and live in qemu's memory.")

# %% [markdown]
# ## 4. Scaling out
#
# The same measurement started containers one after another, keeping them all running, up
# to 10 and then 50; then VMs, up to 2 and then 4. It stops early, and says why, when free
# memory falls below 20% or when one VM takes over 60 s to boot.

# %%
display(Image(plots.png(figures["scale.png"])))
for key, why in result["scale"]["stopped"].items():
    reached = [p["count"] for p in result["scale"][key]]
    print(f"{key}: {', '.join(map(str, reached))}"
          + (f"; stopped: {why}" if why else "; the whole plan ran"))

# %% [markdown]
# Both axes are log scales. The ratios on top compare what one instance of each cost, on
# average, at the largest count each reached. Here is the primer's "scale-out" argument in
# one picture: each VM costs a boot and its own RAM; each container costs a few kernel calls
# and the memory of its own processes, with the image's pages shared between all of them.

# %% [markdown]
# ## Exercise
#
# The container above was busybox. Does a container of another distribution bring that
# distribution's kernel? Debian 12 ships Linux 6.1.

# %%
ex = exercise(
    "Run a container of the debian image (edu bootstrap debian made it, for the sizes "
    "above) that prints `uname -r` and /proc/sys/kernel/random/boot_id, and put what it "
    "printed in mine = {'uname': ..., 'boot_id': ...}. Which kernel is it?",
    solution='''
import contextlib
import io

from edu_runtime import Container

said = io.StringIO()
with contextlib.redirect_stdout(said):
    Container("debian", ["sh", "-c", "uname -r; cat /proc/sys/kernel/random/boot_id"],
              network="none", remove=True).run()
mine = dict(zip(["uname", "boot_id"], said.getvalue().split()))
print("inside debian:", mine)
print("the host:     ", host_kernel())
''')
ex

# %% [markdown]
# ## Checks

# %%
k = result["kernel"]
results = [
    check("the container read the host's boot id: one kernel for both",
          k["container"]["boot_id"] == k["host"]["boot_id"],
          hint="look at the kernel table in part 2"),
    check("the guest read a boot id of its own: a second kernel",
          bool(k["guest"]["boot_id"]) and k["guest"]["boot_id"] != k["host"]["boot_id"],
          hint="the guest's boot id comes from its ready line"),
    check("the VM took longer to be ready than the container",
          compare.startup_ratio(result) > 1, hint="see the start-up figure"),
    check("the host's ps shows the container's sleep, and qemu has no child process",
          bool(ours) and not ps["qemu_children"], hint="run part 3 again"),
    check("exercise: your debian container reports the host's kernel, not Debian's",
          lambda: mine == host_kernel(),
          hint="run the exercise: mine = {'uname': ..., 'boot_id': ...} from inside a "
               "debian container"),
]
summary(results)

# %% [markdown]
# ## Reset
#
# The measurements stop everything they start. This cell removes anything left over (after
# an interrupted cell or a restarted kernel), and says what it removed.

# %%
lesson.reset()

# %% [markdown]
# Next: **02, why containers** (notebooks/02-why-containers.ipynb): an app and its database
# apart, and N replicas behind a front, plotted.
