"""The demonstrations of ``edu demo``: one small function per lesson, in the course's order.

Each is the lesson's key demonstration (its instructor notes' demo script, cut to what a
projector shows in a few minutes), made with the same engine calls and ``edu`` commands as
the lesson's live parts. A function gets a ``Demo`` (edu_cli/demo.py) and calls:

- ``d.edu(ARGS, explain=...)``: a page with ``$ edu ARGS``, its real output and one line;
- ``d.sh(COMMAND, explain)``: the same for a host command (``ps``, ``nft``, ``ip``);
- ``d.page(COMMANDS, OUTPUT, explain)``: a page for an engine call made here (``>>>``);
- ``d.name(WHAT)``: a name ``demo-NN-XXXX-WHAT`` for a container (or a network, volume,
  image tag) the demo will make, noted before it exists, so the clean-up removes it.

A function's first docstring line is what ``edu demo`` lists. The ports lessons 02, 08 and 09
publish are the course's (``course.port``: ``EDU_PORTS`` gives each student a range).
"""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request

from .demo import Demo, DemoError


def notebook(number: str) -> str:
    """``06`` -> ``06-step-by-step``: the lesson's name on the course map (its notebook)."""
    from edu_runtime.notebook import course

    return next(n for n in course.lesson_names() if n.startswith(f"{number}-"))


def summary(fn) -> str:
    return fn.__doc__.strip().splitlines()[0]


PORTS = ("CONTAINER ID", "STATUS", "PORTS", "NAMES")


def _only(*names: str, columns=("CONTAINER ID", "IMAGE", "STATUS", "NAMES")):
    """A table's header and the lines naming one of ``names`` (as ``| grep`` would), in the
    columns that matter here (said on the page: a full ``edu ps`` is wider than 80)."""
    def pick(out: str) -> list[str]:
        lines = out.splitlines()
        rows = lines[:1] + [line for line in lines[1:] if any(n in line for n in names)]
        return _columns(rows, columns)
    pick.shown = " | grep -E '" + "|".join(["CONTAINER", *names]) + "'  # some columns"
    return pick


def _columns(rows: list[str], wanted) -> list[str]:
    """The ``wanted`` columns of a Docker-style table (columns start where its header's
    names start), padded again to the widest cell."""
    if not rows:
        return rows
    header = rows[0]
    starts = [m.start() for m in re.finditer(r"(?<!\S)\S+(?: \S+)*", header)]
    names = [header[a:b].strip() for a, b in zip(starts, [*starts[1:], None], strict=True)]
    keep = [i for i, n in enumerate(names) if n in wanted]
    cells = [[row[starts[i]:(starts[i + 1] if i + 1 < len(starts) else None)].strip()
              for i in keep] for row in rows]
    width = [max(len(r[j]) for r in cells) for j in range(len(keep))]
    gap = "  " if sum(width) + 2 * len(width) <= 80 else " "
    return [gap.join(c.ljust(w) for c, w in zip(r, width, strict=True)).rstrip() for r in cells]


def _fetch(url: str, timeout: float = 60) -> tuple[int, dict, str, float]:
    """GET ``url`` without following redirects, once it answers: status, headers, body,
    seconds waited for the server to answer (it was just started)."""
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *a, **k):
            return None

    opener = urllib.request.build_opener(NoRedirect)
    t0 = time.monotonic()
    while True:
        try:
            with opener.open(url, timeout=10) as r:
                return r.status, dict(r.headers), r.read().decode(errors="replace"), \
                    time.monotonic() - t0
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read().decode(errors="replace"), \
                time.monotonic() - t0
        except (urllib.error.URLError, ConnectionError, TimeoutError) as e:
            if time.monotonic() - t0 > timeout:
                raise DemoError(f"{url} did not answer in {timeout:g} s ({e})") from None
            time.sleep(0.2)


def _curl(d: Demo, url: str, explain: str, head: bool = False) -> tuple[int, str]:
    status, headers, body, waited = _fetch(url)
    lines = [f"HTTP/1.1 {status}"] + [f"{k}: {v}" for k, v in headers.items()
                                      if head and k.lower() in ("location", "server",
                                                                "x-powered-by")]
    out = "\n".join(lines) if head else body
    if waited > 1:
        explain = f"(it answered after {waited:.0f} s: the server was starting) " + explain
    d.page(f"$ curl -s{'I' if head else ''} {url}", out, explain)
    return status, body


def _wait(what: str, pred, timeout: float = 120) -> float:
    """Wait until ``pred()`` (a real condition, polled), or fail with a sentence."""
    t0 = time.monotonic()
    while not pred():
        if time.monotonic() - t0 > timeout:
            raise DemoError(f"{what} did not happen within {timeout:g} s")
        time.sleep(0.2)
    return time.monotonic() - t0


def _inspect(d: Demo, name: str) -> dict:
    _, out = d.quiet("inspect", "--type", "container", name)
    data = json.loads(out)
    return data[0] if isinstance(data, list) else data


def _app(name: str) -> str:
    """``lessons/apps/NAME`` of the course, wherever edu demo is run from."""
    from edu_runtime.notebook import apps

    return str(apps.app_dir(name))


def _port(name: str) -> int:
    from edu_runtime.notebook import course

    try:
        return course.port(name)
    except course.CourseError as exc:
        raise DemoError(str(exc)) from None


# ---- 00 ---------------------------------------------------------------------------------------

def demo_00(d: Demo) -> None:
    """What this machine can do (doctor), and whose kernel a container runs on.

    Introduced in notebooks/00-start-here."""
    d.prepare("bootstrap", "busybox")
    d.edu("doctor", explain="Every line was found by trying (a namespace of each kind made, "
                            "a guest booted), not by looking for files.")
    host = d.sh("uname -r; cat /proc/sys/kernel/random/boot_id",
                "The host's kernel: its release, and the random id it drew when it booted.")
    box = d.name("kernel")
    d.edu("run", "--rm", "--name", box, "busybox", "sh", "-c",
          "hostname; uname -r; cat /proc/sys/kernel/random/boot_id",
          explain=lambda out: f"The same boot id as the host's: "
                              f"{'yes' if out.split()[-1:] == host.split()[-1:] else 'NO'}. "
                              "A container runs on the host's own kernel (its hostname is "
                              "its short id).")


# ---- 01 ---------------------------------------------------------------------------------------

def demo_01(d: Demo) -> None:
    """One image as a container and as a libvirt VM: start-up, memory, kernels, host's ps.

    Introduced in notebooks/01-containers-vs-vms."""
    from edu_runtime.images.store import Store
    from vm_compare import compare, guest_image, libvirt_guest, processes

    d.prepare("bootstrap", "busybox")
    store = Store()
    d.pager.ticker("building the busybox guest (kernel + initramfs), once")
    guest = guest_image.minimal("busybox", ["sleep", "3600"], store=store,
                                progress=d.pager.ticker)
    accel = libvirt_guest.choose_accel()
    libvirt_guest.cleanup_stale()
    d.pager.ticker("starting one container")
    seconds_c, c = compare.container_boot("busybox", keep=True, store=store)
    try:
        pss_c = compare.container_pss(c)
        boot_c = open(f"/proc/{c.pid}/root/proc/sys/kernel/random/boot_id").read().strip()
    finally:
        compare.stop_container(c)
    d.pager.ticker(f"booting one guest under {accel.upper()} (seconds)")
    seen: dict = {}
    seconds_v = compare.vm_boot_seconds_once(libvirt_guest, guest, accel, seen)
    host = compare.host_facts()
    out = [f"{'':22}{'ready after':>14}{'memory (PSS)':>16}",
           f"{'container (busybox)':22}{seconds_c * 1e3:>11.0f} ms{pss_c / 1024:>12.1f} MiB",
           f"{'VM (busybox, ' + accel.upper() + ')':22}{seconds_v * 1e3:>11.0f} ms"
           f"{seen['pss_kib'] / 1024:>12.1f} MiB",
           f"ratio: the VM took x{seconds_v / seconds_c:.0f} as long and x"
           f"{seen['pss_kib'] / max(pss_c, 1):.0f} the memory", "",
           f"{'boot_id':10} {'':4}kernel",
           f"{'host':10} {host['boot_id']}  {host['uname']}",
           f"{'container':10} {boot_c}  (the host's)" if boot_c == host['boot_id'] else
           f"{'container':10} {boot_c}",
           f"{'VM':10} {seen['kernel']['boot_id']}  {seen['kernel']['uname']} (its own)"]
    d.page([">>> compare.container_boot('busybox')  # to its 'ready' line",
            f">>> compare.vm_boot_seconds_once(libvirt_guest, guest, '{accel}', seen)"],
           out, "One run each, measured just now: not a median. `edu compare --quick` "
                "takes 3 runs each, with figures (about 2 min).")
    d.pager.ticker("the same command in a container and a guest, at once (a boot)")
    ps = processes.both_running("busybox", accel=accel, store=store)
    out = ["inside the container, its own ps:"]
    out += ["  " + line for line in _cut(ps["container"]["ps"], 3)]
    out += [f"inside the VM ({accel.upper()}), its own ps:"]
    out += ["  " + line for line in _cut(ps["guest"]["ps"], 4)]
    d.page(">>> processes.both_running('busybox')  # each runs: ps; exec sleep 3600", out,
           "The guest's ps shows a whole system of its own: its PID 1, its kernel threads.")
    out = [f"{'PID':>7} {'PPID':>7} {'USER':<14}{'THREADS':>7}  COMMAND"]
    for row in ps["rows"]:
        out += [f"{row['pid']:>7} {row['ppid']:>7} {row['user'][:13]:<14}"
                f"{row['threads']:>7}  {' '.join(row['argv'])[:40]}",
                f"{'':16}^ {row['who']}; parent: {row['parent'][:40]}"]
    ours = [p for p in ps["running_command"] if p["whose"] == "the container"]
    out += ["", f"host processes running `sleep 3600`: {len(ours)} of the container's, "
                "none of the guest's",
            f"child processes of the guest's qemu: {len(ps['qemu_children']) or 'none'}"]
    d.page(">>> processes.classify(processes.host_table(), ...)  # the host's /proc, as "
           "ps reads it, while both slept", out,
           "The container's sleep is a host process; the guest's is inside qemu's memory.")


def _cut(listing: str, shown: int) -> list[str]:
    """The first lines of a ps listing, then its lines with ``sleep``, then "... N more"."""
    lines = listing.rstrip("\n").splitlines()
    kept = [line for line in lines[shown:] if "sleep" in line]
    more = len(lines) - shown - len(kept)
    return lines[:shown] + (["  ..."] if kept and more else []) + kept + \
        ([f"  ... {more} more"] if more > 0 else [])


# ---- 02 ---------------------------------------------------------------------------------------

def demo_02(d: Demo) -> None:
    """App and database apart: kill the app, replace it, the count goes on.

    Introduced in notebooks/02-why-containers."""
    d.prepare("bootstrap", "debian", "python")
    app1, app2, db_image = (d.name("counter:1", "image"), d.name("counter:2", "image"),
                            d.name("mariadb", "image"))
    d.prepare("build", "-t", db_image, _app("mariadb"))
    d.prepare("build", "-t", app1, _app("counter"))
    d.prepare("build", "-t", app2, "--build-arg", "VERSION=2", _app("counter"))
    port = _port("scale")
    net, db, app = d.name("net", "network"), d.name("db"), d.name("app")
    d.quiet("network", "create", net)
    env = ["-e", "MARIADB_ROOT_PASSWORD=demo-root-pw", "-e", "MARIADB_DATABASE=counter",
           "-e", "MARIADB_USER=counter", "-e", "MARIADB_PASSWORD=demo-pw"]
    app_env = ["-e", "DB_HOST=db", "-e", "DB_NAME=counter", "-e", "DB_USER=counter",
               "-e", "DB_PASSWORD=demo-pw"]
    d.quiet("run", "-d", "--name", db, "--network", net, "--network-alias", "db", *env,
            db_image)
    _wait(f"{db} healthy", lambda: _inspect(d, db)["State"].get("Health", {}).get(
        "Status") == "healthy")
    d.quiet("run", "-d", "--name", app, "--network", net, *app_env, "-p",
            f"127.0.0.1:{port}:8000", app1)
    d.edu("ps", show=_only(d.tag + "-"),
          explain=f"Two containers on network {net}: the database (known there as `db`) "
                  f"and the app, published on 127.0.0.1:{port}.")
    _curl(d, f"http://127.0.0.1:{port}/", "The app counts each visit in the database, which "
                                          "it reaches by the name `db`.")
    _curl(d, f"http://127.0.0.1:{port}/", "The count is in the database, not in the app.")
    d.quiet("rm", "-f", app)
    d.quiet("run", "-d", "--name", app, "--network", net, *app_env, "-p",
            f"127.0.0.1:{port}:8000", app2)
    d.edu("ps", show=_only(d.tag + "-"), explain="The app was removed (edu rm -f) and version "
                                             "2 started; the database never stopped.")
    _curl(d, f"http://127.0.0.1:{port}/", "Version 2, and the count goes on: a container is "
                                          "disposable when what matters is outside it.")


# ---- 03 ---------------------------------------------------------------------------------------

def demo_03(d: Demo) -> None:
    """An engine's anatomy: who is the parent of a container's process.

    Introduced in notebooks/03-installing."""
    d.prepare("bootstrap", "busybox")
    box = d.name("sleep")
    d.edu("run", "-d", "--name", box, "busybox", "sleep", "120",
          explain="`edu run -d` printed the id and returned: who runs the container now?")
    pid = _inspect(d, box)["State"]["Pid"]
    chain, p = [], pid
    while p > 1:
        chain.append(p)
        p = int(re.search(r"PPid:\s+(\d+)", open(f"/proc/{p}/status").read()).group(1))
    d.sh(f"ps -o pid,ppid,user,args -p {','.join(map(str, chain + [1]))}",
         "From the bottom: sleep, its parent edu's supervisor (Docker: containerd-shim), "
         "then PID 1. The `edu` command is gone.")
    d.sh(f"grep -E '^(NSpid|PPid)' /proc/{pid}/status",
         "One process, two pids: the host's, and 1 inside its own pid namespace.")
    d.edu("ps", show=_only(box), explain="The supervisor keeps it, its logs and its pty; "
                                          "any edu command asks the supervisor.")


# ---- 04 ---------------------------------------------------------------------------------------

def demo_04(d: Demo) -> None:
    """Layers and overlay: an image never changes, a container writes its own layer.

    Introduced in notebooks/04-images."""
    d.prepare("bootstrap", "busybox")
    d.edu("history", "busybox", explain="The image's layers, each named by the sha256 of "
                                        "its bytes: what a pull checks.")
    box = d.name("box")
    d.quiet("run", "-d", "--name", box, "busybox", "sleep", "300")
    d.edu("exec", box, "sh", "-c",
          "echo changed > /etc/motd.new; rm /bin/vi; ls /etc/motd.new /bin/vi",
          check=False, explain="Inside the container: a new file, and a file of the image "
                               "deleted.")
    pid = _inspect(d, box)["State"]["Pid"]
    line = next(ln for ln in open(f"/proc/{pid}/mountinfo") if ln.split()[4] == "/")
    opts = line.split(" - ", 1)[1].split()[2].split(",")
    upper = next(o.split("=", 1)[1] for o in opts if o.startswith("upperdir="))
    d.page(f"$ grep ' / / ' /proc/{pid}/mountinfo | tr , '\\n'",
           [line.split(" - ")[0][:78]] + [o for o in line.split(" - ")[1].split(",")],
           "The container's / is an overlay: the image's layers below (read-only), one "
           "upper dir of its own on top.")
    d.sh(f"cd {upper} && ls -l etc bin",
         "Its upper dir: the new file, and `vi` as a character device 0, 0: a whiteout. The "
         "image's layer still has vi.")


# ---- 05 ---------------------------------------------------------------------------------------

def demo_05(d: Demo) -> None:
    """A Dockerfile built: each instruction a layer or config; change app.py, the cache.

    Introduced in notebooks/05-dockerfile."""
    from edu_runtime.notebook import apps

    d.prepare("bootstrap", "python")
    context = apps.copy("greeter", d.workdir("greeter") / "greeter")
    v1, v2 = d.name("greeter:1", "image"), d.name("greeter:2", "image")
    d.edu("build", "--network", "none", "-t", v1, str(context), show=_steps,
          explain="Each step: RUN ran in a real container; `Using cache` when nothing "
                  "it depends on changed.")
    d.edu("history", v1, show=lambda out: out.splitlines()[:9],
          explain="Newest first: COPY and RUN made layers; ENV and CMD only config "
                  "(0B).")
    d.edu("run", "--rm", v1, explain="The CMD ran: python3 app.py.")
    app = context / "app.py"
    app.write_text(app.read_text().replace("VERSION = 1", "VERSION = 2"))
    d.edu("build", "--network", "none", "-t", v2, str(context), show=_steps,
          explain="app.py changed: the cache holds down to the install, which came "
                  "first; from COPY app.py on, built again.")


def _steps(out: str) -> list[str]:
    """``edu build``'s output, one line per step: the instruction and whether it came from
    the cache or was built (ran in a container, for RUN)."""
    rows: list[list[str]] = []
    for line in out.splitlines():
        if line.startswith("Step "):
            rows.append([line, "the base image" if " : FROM " in line else "built"])
        elif rows and "Using cache" in line:
            rows[-1][1] = "Using cache"
        elif rows and "Running in" in line:
            rows[-1][1] = "ran in a container: built"
        elif line.startswith("Successfully"):
            rows.append([line, ""])
    return [f"{text[:50]:50}  {said}".rstrip() if said else text for text, said in rows]


_steps.shown = "  # one line per step"


# ---- 06 ---------------------------------------------------------------------------------------

def demo_06(d: Demo) -> None:
    """The stepper over one container: each kernel step and what it changed, one Enter each.

    Introduced in notebooks/06-step-by-step."""
    import textwrap

    from edu_runtime import Container
    from edu_runtime.notebook import stepper as view

    d.prepare("bootstrap", "busybox")
    name = d.name("box")
    command = ["sh", "-c", "sleep 3600 & wait"]
    shown = f"$ edu step --name {name} busybox sh -c 'sleep 3600 & wait'"
    c = Container("busybox", command, name=name, remove=True)
    s = c.steps()
    done = False
    try:
        n = len(s.ctx.steps)
        while (step := s.upcoming) is not None:
            number = s.index + 1
            rec = s.advance()
            head = f"[{number}/{n}] {step.name} ({step.side})" + (
                f", the container's pid on the host: {c.pid}" if c.pid else "")
            calls = rec.lines()
            out = [head] + textwrap.wrap(view.PlanStep(step.name, step.side, step.explain,
                                                       "").does.split(". ")[0] + ".",
                                         78, initial_indent="  ", subsequent_indent="  ")[:3]
            out.append(f"  {len(calls)} call{'s' * (len(calls) != 1)}, {rec.ms:.2f} ms"
                       + (": " + "; ".join(calls[:2]) if calls else "")
                       + (f" (+{len(calls) - 2})" if len(calls) > 2 else ""))
            out += _changes(view.rows(rec))
            d.page(shown, out, "What this step changed, as the host read it before and "
                               "after the step.")
        d.edu("ps", show=_only(name), explain="All steps applied: the command runs, and "
                                              "edu ps lists the container.")
        done = True
    finally:
        if s.upcoming is not None:
            s.abort()
        elif c.pid:
            import signal

            c.kill(signal.SIGKILL)
            c.wait()
    assert done


def _changes(rows) -> list[str]:
    """A step's changed keys as lines; a namespace's three keys (its inode in the container,
    the host's, whether it is new) as one line."""
    values = {row.key: " ".join(row.after) for row in rows}
    out, done = [], set()
    for row in rows:
        kind, _, part = row.key.rpartition(".")
        if part in ("container", "host", "new") and all(
                f"{kind}.{k}" in values for k in ("container", "host", "new")):
            if kind not in done:
                done.add(kind)
                inside, host = values[f"{kind}.container"], values[f"{kind}.host"]
                out.append(f"  {kind}: new {inside} (the host's: {host})"
                           if values[f"{kind}.new"] == "true" else
                           f"  {kind}: the host's own {inside}, shared")
            continue
        out.append(f"  {row.key}: {' '.join(row.before)} -> {' '.join(row.after)}")
    return out


# ---- 07 ---------------------------------------------------------------------------------------

def demo_07(d: Demo) -> None:
    """PID 1 and a terminal: run -dit, exec beside it, the host's view, stop's 10 s.

    Introduced in notebooks/07-run-it."""
    d.prepare("bootstrap", "debian")
    box = d.name("box")
    d.edu("run", "-dit", "--name", box, "debian", "bash",
          explain="bash with a terminal, in the background: what Ctrl-P Ctrl-Q leaves "
                  "after `edu run -it`.")
    d.edu("exec", box, "sh", "-c", "echo my pid: $$; ls -d /proc/[0-9]*; "
                                   "tr '\\0' ' ' < /proc/1/cmdline; echo; ls /dev/pts",
          explain="exec joins the container: bash is PID 1, the exec'd shell a new pid; "
                  "the container has its own /dev/pts.")
    pid = _inspect(d, box)["State"]["Pid"]
    d.sh(f"grep -E '^(Name|NSpid)' /proc/{pid}/status",
         "From the host: the same bash, one process with two pids.")
    t0 = time.monotonic()
    d.quiet("stop", "-t", "2", box)
    took = time.monotonic() - t0
    d.edu("ps", "-a", show=_only(box),
          explain=f"`edu stop -t 2` took {took:.1f} s: bash as PID 1 ignores SIGTERM, so "
                  "stop waited, then SIGKILL: 137 (default wait: 10 s).")


# ---- 08 ---------------------------------------------------------------------------------------

def demo_08(d: Demo) -> None:
    """WordPress and MariaDB, -p PORT:80 -d, the page fetched; the DNAT rule behind -p.

    Introduced in notebooks/08-web-app."""
    d.prepare("bootstrap", "debian")
    wp_image, db_image = d.name("wordpress", "image"), d.name("mariadb", "image")
    d.prepare("build", "-t", db_image, _app("mariadb"))
    d.prepare("build", "-t", wp_image, _app("wordpress"))
    port = _port("web")
    net, db, web = d.name("net", "network"), d.name("db"), d.name("web")
    d.quiet("network", "create", net)
    d.quiet("run", "-d", "--name", db, "--network", net, "--network-alias", "db",
            "-e", "MARIADB_ROOT_PASSWORD=demo-root-pw", "-e", "MARIADB_DATABASE=wordpress",
            "-e", "MARIADB_USER=wordpress", "-e", "MARIADB_PASSWORD=demo-wp-pw", db_image)
    d.pager.ticker(f"waiting for {db} to be healthy")
    _wait(f"{db} healthy", lambda: _inspect(d, db)["State"].get("Health", {}).get(
        "Status") == "healthy")
    d.edu("run", "--name", web, "--network", net, "-p", f"127.0.0.1:{port}:80",
          "-e", "WORDPRESS_DB_HOST=db", "-e", "WORDPRESS_DB_USER=wordpress",
          "-e", "WORDPRESS_DB_PASSWORD=demo-wp-pw", "-e", "WORDPRESS_DB_NAME=wordpress",
          "-d", wp_image,
          explain=f"The primer's -p 8080:80 -d, on the course's port {port} and on "
                  f"127.0.0.1 only (an uninstalled WordPress is anyone's).")
    d.edu("ps", show=_only(d.tag + "-", columns=PORTS),
          explain="WordPress, and MariaDB beside it on the same network (known there as "
                  "`db`).")
    _curl(d, f"http://127.0.0.1:{port}/", "A WordPress never installed sends you to its "
                                           "installer: it asked the database.", head=True)
    status, _, body, _ = _fetch(f"http://127.0.0.1:{port}/wp-admin/install.php")
    title = re.findall(r"<title>[^<]*", body)
    d.page(f"$ curl -s http://127.0.0.1:{port}/wp-admin/install.php | grep -o '<title>[^<]*'",
           title or [f"(no title: HTTP {status})"],
           "The page a browser would show: WordPress's installer, served by the container.")
    wid = _inspect(d, web)["Id"]
    d.sh(f"nft list table ip edu | grep {wid[:12]} | sed 's/^[[:space:]]*//'",
         f"Behind -p: a DNAT rule sends 127.0.0.1:{port} to the container's address, "
         "port 80.", check=False)
    d.sh(f"ip -br link show veth{wid[:8]}; ip -o link show veth{wid[:8]} | grep -o "
         "'master [^ ]*'",
         "The host's end of the container's veth pair (its other end is eth0 inside); "
         "it is a port of the network's bridge.", check=False)


# ---- 09 ---------------------------------------------------------------------------------------

def demo_09(d: Demo) -> None:
    """The Node.js app: build -t, run -p PORT:8080 -d, fetch; change code, rebuild (cache).

    Introduced in notebooks/09-node-app."""
    import shutil

    from edu_runtime.notebook import apps

    d.prepare("bootstrap", "node")
    context = d.workdir("node-app") / "node-app"
    shutil.copytree(apps.app_dir("node-app"), context)
    v1, v2 = d.name("node-app:1", "image"), d.name("node-app:2", "image")
    port = _port("node")
    d.edu("build", "-t", v1, str(context), show=_steps,
          explain="What changes rarely first: package.json, then npm install, then the "
                  "code.")
    app = d.name("app")
    d.edu("run", "--name", app, "-p", f"127.0.0.1:{port}:8080", "-d", v1,
          explain=f"The primer's -p 47561:8080 -d, on the course's port {port}.")
    d.edu("ps", show=_only(d.tag + "-", columns=PORTS),
          explain="Running, published on 127.0.0.1 only.")
    _curl(d, f"http://127.0.0.1:{port}/", "The container's hostname is its short id: the "
                                           "one edu ps showed.")
    server = context / "server.js"
    server.write_text(server.read_text().replace("VERSION = '1'", "VERSION = '2'"))
    d.edu("build", "-t", v2, str(context), show=_steps,
          explain="server.js changed: npm install came from the cache; only COPY . . on "
                  "was built again.")
    d.quiet("rm", "-f", app)
    d.quiet("run", "--name", app, "-p", f"127.0.0.1:{port}:8080", "-d", v2)
    d.edu("ps", show=_only(d.tag + "-", columns=PORTS),
          explain="The old container removed (edu rm -f), the new one run: a new id.")
    _curl(d, f"http://127.0.0.1:{port}/", "Version 2, from a new container.")


# ---- 10 ---------------------------------------------------------------------------------------

def demo_10(d: Demo) -> None:
    """Limits biting (memory, a fork bomb) and the defences (caps, seccomp, masked paths).

    Introduced in notebooks/10-limits-and-security."""
    d.prepare("bootstrap", "busybox", "python")
    d.edu("run", "--rm", "--name", d.name("oom"), "-m", "64m", "python", "python3", "-c",
          "b = b'x' * (200 * 2**20)", check=False,
          explain="200 MB asked under a 64 MB limit: the kernel's OOM killer ended it "
                  "(137 = 128 + SIGKILL), not a MemoryError.")
    bomb = d.name("bomb")
    d.quiet("run", "-d", "--name", bomb, "--pids-limit", "32", "--cpus", "0.5", "busybox",
            "sh", "-c", "exec 2>/dev/null; bomb() { while :; do bomb & done; }; bomb & "
                        "exec sleep 60")
    from edu_runtime import cgroups

    dirs = cgroups.driver().open(_inspect(d, bomb)["Id"]).paths()
    where = dirs.get("pids") or dirs["unified"]  # cgroup v1's pids tree, or v2's one tree
    _wait("the fork bomb reaching 32 processes",
          lambda: (where / "pids.current").read_text().strip() == "32", timeout=30)
    d.edu("stats", "--no-stream", bomb, show=_only(bomb, columns=("NAME", "CPU %", "PIDS",
                                                                  "MEM USAGE / LIMIT")),
          explain="A fork bomb under --pids-limit 32: PIDS 32 and no more; the host still "
                  "starts processes.")
    d.sh(f"cd {where} && cat pids.max pids.events",
         "The cgroup's files: the limit, and how many forks it refused.")
    d.quiet("rm", "-f", bomb)
    d.edu("run", "--rm", "busybox", "sh", "-c",
          "grep -E '^(CapEff|Seccomp):' /proc/self/status; grep -E "
          "'/proc/(keys|timer_list)|/proc/sys ' /proc/self/mountinfo | cut -d' ' -f4-6",
          explain="14 capabilities of root's 41, a seccomp filter (mode 2), /proc files "
                  "hidden behind /dev/null, /proc/sys read-only.")
    d.edu("run", "--rm", "--cap-drop", "CHOWN", "busybox", "chown", "1", "/tmp",
          check=False, explain="Without CAP_CHOWN even root in the container cannot chown.")


#: The demos, by lesson number (the course map's order).
DEMOS = {"00": demo_00, "01": demo_01, "02": demo_02, "03": demo_03, "04": demo_04,
         "05": demo_05, "06": demo_06, "07": demo_07, "08": demo_08, "09": demo_09,
         "10": demo_10}
