# ---
# jupyter:
#   edu:
#     parts:
#       back-in:
#         needs:
#         - containers
#         what: edu exec -it and edu attach into the detached container, then exit
#       detach:
#         needs:
#         - containers
#         what: edu run -it, then Ctrl-P Ctrl-Q, with edu ps before and after
#       docker:
#         needs:
#         - containers
#         - dockerd
#         what: Docker's terminal and docker stop, with and without --init
#       first:
#         needs:
#         - containers
#         what: edu run -it debian bash in a real terminal, a look inside, then exit
#       signals:
#         needs:
#         - containers
#         what: edu stop on four PID 1s, with and without --init, timed
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
# # 07 `run -it`, Ctrl-P Ctrl-Q, and `exit`
#
# *The primer's `docker run -it ubuntu`: a shell in a container, a terminal for it, and the
# two ways out.*
#
# In lesson 06 a container's first process was `sh -c 'sleep 3600 & wait'`, because a plain
# `sh` with nothing to read exits at once. `-it` gives the shell a keyboard and a screen: a
# **terminal**. Here you type into one, leave it in two different ways, come back, and find
# out why `docker stop` so often takes exactly ten seconds.

# %% [markdown]
# ## What you will be able to do
#
# - **show**, from inside a `run -it` container, that your shell is PID 1, that the hostname
#   is the container's id, and which terminal the container got;
# - **say**, with `edu ps` before and after, which of Ctrl-P Ctrl-Q and `exit` leaves the
#   container running, and why;
# - **get back in** with `edu attach` and with `edu exec -it`, and tell the two apart;
# - **explain** with a measurement why `stop` waits 10 s for a shell as PID 1, and make it
#   instant with `--init`;
# - **do all of it by hand** in a JupyterLab terminal.

# %% [markdown]
# Run each cell with **Shift-Enter**. The first one says, for this machine, which parts of
# the lesson run live and which replay a recording of a real run.

# %%
from edu_runtime.notebook import Lesson, check, exercise, predict, summary

lesson = Lesson("07-run-it")
lesson.image("debian")  # in the store, or built from Debian's packages once

# %% [markdown]
# ## No `ubuntu` here: `debian` instead
#
# The primer types `docker run -it ubuntu`. Docker would pull `ubuntu` from Docker Hub. This
# course builds its base images itself, from a distribution's packages, with `debootstrap`
# (lesson 04 shows how), and this machine reaches one package archive: Debian's mirror. There
# is no Ubuntu archive here, so there is no `ubuntu` image, and we use **`debian`**. Ubuntu
# is built from Debian: the same `bash`, the same `apt`, the same layout. Everything in this
# lesson goes the same with `ubuntu` where you have it.
#
# `-it` is two flags:
#
# - `-i`, *interactive*: keep the container's standard input open, so what you type reaches
#   it;
# - `-t`, *tty*: give the container a **terminal** (a pty, a pseudo-terminal). A program
#   checks for one: `bash` shows a prompt and line editing only when its input is a terminal.
#
# We also add `--network none`: this lesson needs no network (lesson 08 is about networks),
# and so it runs live on more machines.

# %% [markdown]
# ## A terminal the notebook can type into
#
# A notebook cell has no keyboard for `edu run -it` to read. So the lesson makes a real
# terminal, as a terminal window does, and types into it: `Terminal(...)` starts a command
# with a new pty as its keyboard and screen. `t.run("echo hi")` types a line and Enter and
# returns what it printed before the next prompt; `t.send(...)` types any keys.
#
# Keys are bytes. A Ctrl key sends its letter's code with the top bits cleared: Ctrl-P is
# byte 16 (`\x10`), Ctrl-Q byte 17 (`\x11`), Ctrl-C byte 3.

# %%
import re
import subprocess


def edu_cmd(*args):
    """The `edu` command, as a student types it (the course's own, from this kernel)."""
    from edu_runtime.notebook.terminal import edu

    return edu(*args)


def show_command(*args):
    print("$ edu " + " ".join(a if " " not in a else f"'{a}'" for a in args))


def ps(*flags):
    """`edu ps` as typed in a terminal, cut to this lesson's containers (named l07-...);
    the STATUS of each, by name."""
    show_command("ps", *flags)
    lines = subprocess.run(edu_cmd("ps", *flags), capture_output=True, text=True,
                           check=True).stdout.splitlines()
    starts = [m.start() for m in re.finditer(r"(?:^|(?<=  ))\S", lines[0])]  # columns
    ends = [*starts[1:], None]
    table = [[line[a:b].strip() for a, b in zip(starts, ends, strict=True)] for line in lines]
    mine = [row for row in table[1:] if row[-1].startswith("l07-")]
    widths = [max(len(row[i]) for row in [table[0], *mine]) for i in range(len(starts))]
    for row in [table[0], *mine]:  # Docker's layout, as wide as this lesson's rows need
        print("   ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    if len(table) - 1 > len(mine):
        print(f"(and {len(table) - 1 - len(mine)} other containers, not this lesson's)")
    return {row[-1]: row[table[0].index("STATUS")] for row in mine}


def fresh(name):
    """Remove a container of this lesson that an earlier, interrupted run left (edu rm -f)."""
    from edu_runtime import Container

    try:
        Container.get(name).remove(force=True)
    except Exception:  # noqa: BLE001 - none of that name: nothing to remove
        pass


# %% [markdown]
# ## Predict, then run
#
# The cell after these starts `edu run -it --network none --name l07-first debian bash` in a
# terminal, types a few commands into the container's shell, and ends with `exit`.

# %%
q_pid = predict("Inside the container, `echo $$` prints the shell's own process id. It is:",
                ["1", "a number in the thousands, as on the host", "0"])
q_pid

# %%
q_exit = predict("After `exit` in the container's shell, `edu ps -a` shows l07-first as:",
                 ["Up (still running)", "Exited (0)", "not listed any more"])
q_exit

# %% [markdown]
# ## 1. Inside: PID 1, the hostname, and the terminal

# %%
def first_look():
    from edu_runtime import Container
    from edu_runtime.notebook.terminal import PROMPT, Terminal

    fresh("l07-first")
    before = ps("-a")
    args = ["run", "-it", "--network", "none", "--name", "l07-first", "debian", "bash"]
    lesson.made(container="l07-first")  # noted first: reset finds it, even after a Ctrl-C
    show_command(*args)
    seen = {}
    with Terminal(edu_cmd(*args), rows=24, cols=90) as t:
        t.expect(PROMPT, 60)
        seen["os"] = t.run("grep PRETTY /etc/os-release")
        seen["pid"] = t.run("echo $$")
        seen["procs"] = t.run("ls -d /proc/[0-9]*").split()
        seen["hostname"] = t.run("hostname")
        seen["tty"] = t.run("tty")
        seen["fd0"] = t.run("ls -l /proc/self/fd/0").split(" -> ")[-1]
        seen["pts"] = t.run("ls /dev/pts").split()
        c = Container.get("l07-first")  # from the host, while it runs
        seen["id"], host_pid = c.id, c.pid
        with open(f"/proc/{host_pid}/status") as f:
            seen["nspid"] = next(line.split()[1:] for line in f if line.startswith("NSpid"))
        t.run("ls -l /dev/pts")
        t.send("exit\r")
        seen["code"] = t.wait()
        print(t.text.strip())
    print(f"\n[from the host, before exit: bash was pid {host_pid}; "
          f"NSpid: {' '.join(seen['nspid'])}]\n")
    after = ps("-a")
    return {**seen, "before": before, "after": after}


first = lesson.live("first", first_look)

# %% [markdown]
# Read the screen from the top:
#
# - `echo $$`: the shell is **PID 1**, the first process of the container's own pid
#   namespace. From the host the same process has an ordinary pid: `NSpid` lists both.
# - `ls -d /proc/[0-9]*`: one process in the whole container, bash. (bash expands the `*`
#   before it starts `ls`, so `ls` is not there yet.)
# - `hostname`: the first 12 digits of the container's id, as Docker names it.
# - `tty`: the shell's terminal is **`/dev/pts/0`**, and `ls /dev/pts` shows only `0` and
#   `ptmx`. The container has a *devpts* of its own (a new instance of the filesystem that
#   holds ptys, mounted by lesson 06's `special mounts` step), and its terminal was made in
#   it, so it is number 0 whatever the host has open. Docker's `run -t` does the same.

# %%
q_pid.check(first["pid"], why=(
    f"a container's first process is PID 1 of a new pid namespace. The host sees the same "
    f"bash as pid {first['nspid'][0]}: NSpid {' '.join(first['nspid'])} is one process "
    f"with a pid in each namespace it is in."))

# %%
q_exit.check("Exited (0)" if first["after"].get("l07-first", "").startswith("Exited (0)")
             else first["after"].get("l07-first", "not listed any more"), why=(
    "`exit` ends bash, and bash is PID 1: when a pid namespace's first process exits, the "
    "kernel kills everything else in it, and the container has stopped. Its record stays "
    "(edu ps -a, Exited, with bash's exit code) until `edu rm`, or `--rm` at the start."))

# %% [markdown]
# ## 2. Ctrl-P Ctrl-Q: leave it running
#
# Docker's **detach keys**: hold Ctrl, press P, then Q. `edu` reads every key you type on its
# way to the container (its terminal is in *raw* mode, so even Ctrl-C goes to the
# container), and when it sees these two in a row it stops relaying and exits. It sends the
# container nothing.

# %%
q_detach = predict("After Ctrl-P Ctrl-Q, `edu ps` (running containers only) shows l07-box as:",
                   ["Up (still running)", "Exited (0)", "not listed"])
q_detach

# %%
def detach():
    from edu_runtime.notebook.terminal import DETACH, PROMPT, Terminal

    fresh("l07-box")
    before = ps()
    args = ["run", "-it", "--network", "none", "--name", "l07-box", "debian", "bash"]
    lesson.made(container="l07-box")
    show_command(*args)
    with Terminal(edu_cmd(*args), rows=24, cols=90) as t:
        t.expect(PROMPT, 60)
        t.run("echo 'I was here' > /note")  # to find again when we come back
        t.send(DETACH)  # Ctrl-P Ctrl-Q
        code = t.wait()
        print(t.text.strip())
    print(f"[edu exited with {code}]\n")
    after = ps()
    return {"code": code, "before": before, "after": after}


detached = lesson.live("detach", detach)

# %%
q_detach.check("Up (still running)" if detached["after"].get("l07-box", "").startswith("Up")
               else detached["after"].get("l07-box", "not listed"), why=(
    "Ctrl-P Ctrl-Q ends only `edu run`, the client that relayed your keys. The shell is "
    "still PID 1, waiting at its prompt; the supervisor (edu's dockerd) still holds the "
    "other end of its terminal, and keeps what it prints for the next `edu attach`."))

# %% [markdown]
# Two ways out, then:
#
# | you type | what ends | the container |
# |---|---|---|
# | `exit` (or Ctrl-D) | the shell, which is PID 1 | stops: `Exited (0)` |
# | Ctrl-P Ctrl-Q | only the `edu run -it` (or `attach`) client | keeps running: `Up` |
#
# Ctrl-C is neither: it goes to the container, and interrupts what the shell runs.

# %% [markdown]
# ## 3. Back in: `edu exec -it` and `edu attach`
#
# Two commands get you back into a running container, and they are not the same:
#
# - `edu exec -it l07-box bash` starts a **new** process in the container's namespaces (with
#   its cgroup, capabilities and seccomp filter), with a new terminal of its own;
# - `edu attach l07-box` connects your terminal to the terminal of **PID 1**, the shell you
#   left. It prints nothing until the shell does: press Enter to see its prompt again.

# %%
q_exec = predict("In `edu exec -it l07-box bash` you type `exit`. Then l07-box is:",
                 ["still running", "exited"])
q_exec

# %%
def back_in():
    from edu_runtime.notebook.terminal import PROMPT, Terminal

    seen = {}
    show_command("exec", "-it", "l07-box", "bash")
    with Terminal(edu_cmd("exec", "-it", "l07-box", "bash"), rows=24, cols=90) as t:
        t.expect(PROMPT, 30)
        seen["exec_pid"] = t.run("echo $$")
        seen["exec_procs"] = t.run("ls -d /proc/[0-9]*").split()
        seen["note"] = t.run("cat /note")
        seen["exec_tty"] = t.run("tty")
        t.send("exit\r")
        t.wait()
        print(t.text.strip())
    seen["after_exec"] = ps()
    print()
    show_command("attach", "l07-box")
    with Terminal(edu_cmd("attach", "l07-box"), rows=24, cols=90) as t:
        t.wait_raw(30)  # keys typed before attach relays them are lost, as in Docker
        t.send("\r")  # Enter: the shell prints its prompt again
        t.expect(PROMPT, 30)
        seen["attach_pid"] = t.run("echo $$")
        t.send("exit\r")
        seen["attach_code"] = t.wait()
        print(t.text.strip())
    seen["after_attach"] = ps("-a")
    return seen


back = lesson.live("back-in", back_in)

# %%
q_exec.check("still running" if back["after_exec"].get("l07-box", "").startswith("Up")
             else "exited", why=(
    f"exec made a second process (pid {back['exec_pid']} in the container), and `exit` "
    f"ended that one. The container lives as long as PID 1 does: the shell you typed "
    f"`echo 'I was here'` into, which `attach` found again (pid {back['attach_pid']}). "
    f"Its `exit` stopped the container."))

# %% [markdown]
# | | `edu exec -it NAME bash` | `edu attach NAME` |
# |---|---|---|
# | which process | a new one (pid 2 here: not 1) | PID 1 itself |
# | which terminal | a new one (`/dev/pts/1`) | PID 1's (`/dev/pts/0`) |
# | `exit` there | ends that process; the container runs on | stops the container |
# | Ctrl-P Ctrl-Q | (in Docker: detaches; edu's exec has no detach keys) | detaches |
# | needs | any running container | one started with `-it` (or `-d`) |

# %% [markdown]
# ## 4. PID 1 and signals: why `stop` waits ten seconds
#
# `edu stop NAME` (like `docker stop`) asks politely first: it sends **SIGTERM** to the
# container's PID 1, waits up to **10 seconds** (`-t N` changes that), and then sends
# **SIGKILL**, which cannot be refused. Four detached containers, stopped at once:
#
# | name | command | PID 1 |
# |---|---|---|
# | l07-sh | `sh -c 'sleep 600 & wait'` | a shell running a script |
# | l07-sh-init | the same, with `--init` | tini, and the shell as its child |
# | l07-bash | `-it ... bash` (what `run -it` gives you) | an interactive shell |
# | l07-bash-init | the same, with `--init` | tini, and the interactive shell |

# %%
q_stop = predict("How long will `edu stop l07-sh` take (the shell running a script, as PID 1)?",
                 ["under a second", "about 10 seconds", "it never stops"])
q_stop

# %%
q_bash = predict("And `edu stop l07-bash-init`: an interactive bash, with --init?",
                 ["under a second", "about 10 seconds"])
q_bash

# %% [markdown]
# We keep Docker's real default, 10 s: the four stops run at the same time, so the whole
# measurement takes those 10 s once. Before stopping anything, the cell reads from the host
# how each PID 1 (and, with `--init`, its child) treats SIGTERM: the kernel's bits in
# `/proc/PID/status` (`SigCgt`: caught by a handler; `SigIgn`: ignored; `SigBlk`: blocked,
# queued until the process takes it; none of these: the default action), and whether it is
# asleep in `sigtimedwait` (`/proc/PID/wchan`): *awaited*, taken from the queue by itself.

# %%
SCRIPT = ["sh", "-c", "sleep 600 & wait"]
CONTAINERS = {  # name: (flags, command)
    "l07-sh": (["-d"], SCRIPT),
    "l07-sh-init": (["-d", "--init"], SCRIPT),
    "l07-bash": (["-dit"], ["bash"]),
    "l07-bash-init": (["-dit", "--init"], ["bash"]),
}


def stop_them():
    from edu_runtime.notebook.signals import stop_all, wait_ready

    for name, (flags, command) in CONTAINERS.items():
        fresh(name)
        lesson.made(container=name)
        cmd = ["run", *flags, "--network", "none", "--name", name, "debian", *command]
        show_command(*cmd)
        subprocess.run(edu_cmd(*cmd), check=True, capture_output=True)
    print(f"\n{'container':<15}{'PID 1':<13}{'its SIGTERM':<13}{'its child':<16}", end="")
    print(f"{'stop took':>10}{'exit':>6}")
    looked = {name: wait_ready(name) for name in CONTAINERS}  # each PID 1, from the host
    timed = stop_all(list(CONTAINERS), timeout=10)  # edu stop, all four at once
    rows = []
    for name, p in looked.items():
        kids = [k for k in p["children"] if k["comm"] != "sleep"] or p["children"]
        child = f"{kids[0]['comm']}: {kids[0]['sigterm']}" if "init" in name else ""
        t = timed[name]
        print(f"{name:<15}{p['comm']:<13}{p['sigterm']:<13}{child:<16}"
              f"{t['seconds']:>8.1f} s{t['exit_code']:>6}")
        rows.append({"name": name, "pid1": p["comm"], "sigterm": p["sigterm"],
                     "child": child, **t})
    for name in CONTAINERS:
        fresh(name)  # edu rm: they are done
    return rows


stopped = lesson.live("signals", stop_them)

# %%
from edu_runtime.notebook.signals import stop_figure

LABELS = {"l07-sh": "sh as PID 1", "l07-sh-init": "sh, --init",
          "l07-bash": "bash -it as PID 1", "l07-bash-init": "bash -it, --init"}
stop_figure([{**r, "label": LABELS[r["name"]], "init": r["name"].endswith("-init")}
             for r in stopped], faster=("sh as PID 1", "sh, --init"),
            replay=lesson.banner("signals"), title="How long `edu stop` takes")

# %% [markdown]
# What the kernel's bits say, row by row:
#
# - **`sh` as PID 1**, SIGTERM *default*: for an ordinary process the default action is to
#   die. But the kernel never applies a default action to the first process of a pid
#   namespace (it is that namespace's `init`, and an init that died by accident would take
#   the whole namespace with it). A signal PID 1 has no handler for is dropped; from the
#   host, only SIGKILL is forced on it. So `stop` waits its 10 s, then SIGKILL: exit code
#   **137** = 128 + 9.
# - **`--init`**: PID 1 is now **tini** (`/sbin/docker-init`), a tiny init. It sleeps in
#   `sigtimedwait`, *awaiting* signals: an awaited signal is queued, even for PID 1, and tini
#   takes it and sends it on to its child. The shell is an ordinary process now, the
#   default action applies, it dies at once, and tini exits with it: **143** = 128 + 15.
#   tini also reaps orphaned processes, which a shell as PID 1 may leave as zombies.
# - **interactive `bash`**: it *ignores* SIGTERM itself (bash does so in every interactive
#   shell, so that a stray `kill` does not close your terminal). That holds whatever its
#   pid, so `--init` cannot help: tini passes SIGTERM on, and bash ignores it. For a shell
#   you typed into, `exit` is the clean way out; `stop` will take its 10 s.

# %%
took = {r["name"]: r["seconds"] for r in stopped}
q_stop.check("about 10 seconds" if took["l07-sh"] >= 9 else "under a second", why=(
    f"it took {took['l07-sh']:.1f} s: PID 1 of a pid namespace gets no default action, so "
    f"the shell, which has no SIGTERM handler, ignored it until SIGKILL came. With --init "
    f"it took {took['l07-sh-init']:.2f} s."))

# %%
q_bash.check("about 10 seconds" if took["l07-bash-init"] >= 9 else "under a second", why=(
    "tini forwarded SIGTERM, but an interactive bash ignores SIGTERM by itself (SigIgn), "
    "whatever its pid. --init fixes the kernel's rule for PID 1, not a program's own "
    "choice."))

# %% [markdown]
# `-t N` shortens the wait (`edu stop -t 1 l07-bash` takes a second), and `docker stop` has
# the same flag. A program made to run as PID 1 catches SIGTERM itself: nginx, postgres and
# most servers do, so they stop at once without `--init`.

# %% [markdown]
# ### Docker beside us (extra details)
#
# The same two checks with Docker: which terminal `docker run -t` gives a container, and how
# long `docker stop` takes with and without `--init`. Docker runs images from its own store;
# where it has no `debian`, we hand it ours (`edu save debian | docker load`) and take it
# back afterwards. Where Docker is not running, this replays a run that had it.

# %%
import tempfile
from pathlib import Path


def docker_image():
    """debian in Docker: its own, or ours loaded into it; (name, whether we loaded it)."""
    if subprocess.run(["docker", "image", "inspect", "debian"],
                      capture_output=True).returncode == 0:
        return "debian", False
    from edu_runtime.images import archive, store

    with tempfile.TemporaryDirectory() as tmp:
        tar = archive.save(store.Store(), ["debian"], Path(tmp) / "debian.tar")
        out = subprocess.run(["docker", "load", "-i", str(tar)], capture_output=True,
                             text=True, check=True).stdout
    return out.split("Loaded image: ")[-1].split()[0], True


def docker(*args, check=True):
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check)


# %%
import time

DOCKER = {"l07-docker-sh": [], "l07-docker-sh-init": ["--init"]}


def docker_side():
    image, loaded = docker_image()
    try:
        print("$ docker run --rm -t --network none debian sh -c 'tty; ls /dev/pts; echo $$'")
        tty = docker("run", "--rm", "-t", "--network", "none", image, "sh", "-c",
                     "tty; ls /dev/pts; echo $$").stdout.replace("\r", "")
        print(tty)
        for name, flags in DOCKER.items():
            docker("rm", "-f", name, check=False)
            docker("run", "-d", "--network", "none", "--name", name, *flags, image,
                   "sh", "-c", "sleep 600 & wait")
            print(f"$ docker run -d --network none --name {name} {' '.join(flags)} debian "
                  "sh -c 'sleep 600 & wait'".replace("  ", " "))
        started, stops = {}, {}
        for name in DOCKER:  # both at once, with Docker's default 10 s
            started[name] = time.monotonic()
            stops[name] = subprocess.Popen(["docker", "stop", name], stdout=subprocess.DEVNULL)
        took = {}
        while len(took) < len(stops):  # each one's time, as it ends
            for name, proc in stops.items():
                if name not in took and proc.poll() is not None:
                    took[name] = round(time.monotonic() - started[name], 3)
            time.sleep(0.01)
        rows = []
        for name in DOCKER:
            code = int(docker("inspect", "-f", "{{.State.ExitCode}}", name).stdout)
            print(f"$ docker stop {name:<20} took {took[name]:5.1f} s, exit code {code}")
            rows.append({"name": name, "seconds": took[name], "exit_code": code,
                         "timeout": 10})
        return {"tty": tty.split(), "rows": rows}
    finally:
        docker("rm", "-f", *DOCKER, check=False)
        if loaded:  # leave Docker's images as they were
            docker("rmi", image, check=False)


in_docker = lesson.live("docker", docker_side)

# %% [markdown]
# The same answers: Docker's container has its own `/dev/pts/0`, the shell is PID 1, and
# `docker stop` waits its 10 s for a shell as PID 1 unless `--init` puts tini there. Where
# edu and Docker differ: Docker's `exec -it` has detach keys too, and `docker attach` and
# `docker run` take `--detach-keys` to choose others; edu has only Ctrl-P Ctrl-Q.

# %% [markdown]
# ## By hand: the same in a JupyterLab terminal
#
# Everything above is what you would type. In JupyterLab: **File > New > Terminal**. The
# terminal has the course's environment (`(.venv)` in its prompt), so `edu` is there.
#
# 1. `edu ps -a`: what there is before.
# 2. `edu run -it --name box debian bash`: you get `root@<id>:/#`, the container's shell.
# 3. Inside: `echo $$` (1), `hostname` (the id), `tty` (`/dev/pts/0`), `ls -l /dev/pts`.
# 4. Hold **Ctrl**, press **P**, then **Q**: you are back at the lab's prompt, and edu says
#    `detached from box`. `edu ps`: box is `Up`.
# 5. `edu exec -it box bash`: a second shell. `echo $$` is not 1. Type `exit`; `edu ps`: box
#    is still `Up`.
# 6. `edu attach box`, then press **Enter** to see the prompt again. `echo $$` is 1. Type
#    `exit`. `edu ps -a`: box is `Exited (0)`.
# 7. `edu run -d --name s debian sh -c 'sleep 600 & wait'`, then `time edu stop s` (10 s).
#    Again with `--init` and another name: `time edu stop s2` (well under a second).
# 8. Clean up: `edu rm box s s2`.
#
# Where a key does not get through: some browsers keep Ctrl-Q for themselves (Firefox on
# Linux quits). Use Chromium or Chrome for the lab, or detach another way: close the
# terminal's tab, which ends only the `edu` client.

# %% [markdown]
# ## Exercise
#
# Make a detached container `l07-trap` that runs `sh -c 'sleep 600 & wait'` as PID 1,
# **without** `--init`, and yet stops in under 2 seconds with exit code 0 when `stop` sends
# SIGTERM. Store how long its stop took, in seconds, in `ex_seconds`. Hint: the kernel
# delivers to PID 1 the signals it has a *handler* for. The shell's `trap` command installs
# one.

# %%
ex = exercise(
    "Make a detached container l07-trap running sh -c 'sleep 600 & wait' as PID 1, without "
    "--init, that stops in under 2 s with exit code 0; store the stop's seconds in ex_seconds.",
    solution='''
import time
from edu_runtime import Container

fresh("l07-trap")
# trap gives the shell a SIGTERM handler: the kernel delivers SIGTERM to a PID 1 that
# has one, `wait` returns, and the handler exits with 0.
trap = Container("debian", ["sh", "-c", "trap 'exit 0' TERM; sleep 600 & wait"],
                 name="l07-trap", network="none")
lesson.made(container=trap.id)
trap.start()  # edu run -d
started = time.monotonic()
trap.stop()  # edu stop: SIGTERM, and SIGKILL only after 10 s
ex_seconds = time.monotonic() - started
print(f"stopped in {ex_seconds:.2f} s, exit code {trap.inspect()['State']['ExitCode']}")
''')
ex

# %% [markdown]
# ## Checks
#
# Plain functions: each prints a pass, or "not yet" with a hint.

# %%
def stopped_row(name):
    return next(r for r in stopped if r["name"] == name)


def trap_state():
    from edu_runtime import Container

    c = Container.get("l07-trap")
    return c.inspect()["State"], c.spec


results = [
    check("in `run -it`, the shell was PID 1 and its hostname the container's id",
          first["pid"] == "1" and first["hostname"] == first["id"][:12],
          hint="run the cell of section 1 again; `echo $$` and `hostname` are typed there"),
    check("its terminal was /dev/pts/0 of the container's own devpts",
          first["tty"] == "/dev/pts/0" and first["pts"] == ["0", "ptmx"],
          hint="`tty` names the terminal; `ls /dev/pts` lists the container's devpts"),
    check("`exit` stopped l07-first; Ctrl-P Ctrl-Q left l07-box running",
          first["after"].get("l07-first", "").startswith("Exited (0)")
          and detached["after"].get("l07-box", "").startswith("Up"),
          hint="see the edu ps lines after each: Exited (0), then Up"),
    check("`exit` in exec left l07-box running; `exit` after attach stopped it",
          back["after_exec"].get("l07-box", "").startswith("Up")
          and back["after_attach"].get("l07-box", "").startswith("Exited")
          and back["attach_pid"] == "1" and back["exec_pid"] != "1",
          hint="exec is a new process; attach is PID 1's terminal"),
    check("stop waited 10 s for sh as PID 1, and --init made it quick",
          stopped_row("l07-sh")["seconds"] >= 9 and stopped_row("l07-sh")["exit_code"] == 137
          and stopped_row("l07-sh-init")["seconds"] < 2
          and stopped_row("l07-sh-init")["exit_code"] == 143,
          hint="run the cell of section 4 again"),
    check("l07-trap stopped in under 2 s, with exit code 0, without --init",
          lambda: ex_seconds < 2 and trap_state()[0]["ExitCode"] == 0
          and not trap_state()[1].get("init"),
          hint="sh -c \"trap 'exit 0' TERM; sleep 600 & wait\": a handler, so the kernel "
               "delivers SIGTERM to PID 1"),
]
summary(results)

# %% [markdown]
# ## Reset
#
# Remove every container this lesson made (`edu rm -f`), and say which.

# %%
lesson.reset()

# %% [markdown]
# Next: **[08 a web app](08-web-app.ipynb)**: `docker run --name -p 8080:80 -d wordpress`, a
# detached container you reach from outside, and the veth, bridge and NAT rule behind `-p`.
