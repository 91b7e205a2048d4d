"""The soak: randomized operations a class does all day, with every invariant checked after
each one.

Operations go through the real ``edu`` command, as a student types them: ``run --rm``,
``run -d`` (some with ``-p`` on a free port), ``exec``, ``stop``, ``kill``, ``start``,
``pause``, ``unpause``, ``rm``; ``build`` (three one-line Dockerfiles, cached after their
first build) and ``rmi``; ``network create`` and ``rm``, ``volume create`` and ``rm``;
``compose up -d`` and ``down`` (two busybox services); and mistakes edu must refuse, changing
nothing (a name in use, ``exec`` into an exited or paused container, ``rm`` of a running one,
``network rm`` and ``volume rm`` of one in use). A seeded random choice (the seed is printed;
``--seed`` replays it) picks each operation among those that make sense now (each kind once
early on, in ``WEIGHTS``' order, then by weight), and a model says what should exist
afterwards: containers and their states, images, networks, volumes, compose projects. After
each operation:

- ``edu ps -a`` shows the model's containers, each once, in the model's state, and the
  records agree (no container lost or doubled);
- IPAM leases (networks/registry.py) are exactly those of the running (or paused) containers
  on a bridge;
- the host holds nothing of a container the model says is gone, and of an exited one only its
  directory: no cgroup, mount, veth, nft or iptables rule, lease or process
  (tests/hoststate.py); nothing of a network that is gone (its bridge and rules);
- ``edu network ls``'s and ``edu volume ls``'s names are the model's; the store's tags are
  the model's, and it verifies (``Store.verify``: every image's blobs and layers are there;
  after a build or rmi, the soak's images' blobs, busybox's among them, hash to their names).

At the end everything is removed as a student would: ``hoststate.wait_clean`` must find
nothing new on the host, no file of the state directory may name what the soak made (a
record, a pin, a volume, a network), and no more supervisor locks in ``/run/edu`` may be
left without their supervisor than at the start. Leftovers (bench/leftovers.py's counts, plus
``/run/edu``'s supervisor locks and how many of them no live supervisor holds) are counted at
the start, every ``--every`` operations and after the final clean-up; the growth per 100
operations is the clean-up's count less the start's. Everything it makes is named ``sk-...``.

    .venv/bin/python bench/soak.py [--ops 500] [--seed N] [--every 50]

tests/test_soak.py is the short form (100 operations).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE))

import hoststate  # noqa: E402

#: A detached container that ends at once on SIGTERM (``edu stop`` need not wait 10 s).
BUSY = ["sh", "-c", "trap 'exit 0' TERM; sleep 600 & wait"]
#: At most this many running containers of the soak at once (a 2-core VM shared with others).
MAX_RUNNING = 6
COMPOSE = """services:
  a:
    image: busybox
    command: ["sh", "-c", "trap 'exit 0' TERM; sleep 600 & wait"]
  b:
    image: busybox
    command: ["sh", "-c", "trap 'exit 0' TERM; sleep 600 & wait"]
"""
#: Operations and their weights: how often a class does each, roughly.
WEIGHTS = {"run --rm": 10, "run -d": 14, "exec": 10, "stop": 6, "kill": 5, "start": 4,
           "pause": 2, "unpause": 2,
           "rm": 10, "build": 5, "rmi": 4, "network create": 3, "network rm": 3,
           "volume create": 3, "volume rm": 3, "compose up": 2, "compose down": 2,
           "mistake": 4}
_HEX = re.compile(r"[0-9a-f]{8,64}")


class Finding(Exception):
    """An invariant that did not hold: what was expected, and what was there."""


def edu_command() -> list[str]:
    """``edu`` next to this interpreter (the project's .venv), else ``python -m``."""
    script = Path(sys.executable).with_name("edu")
    return [str(script)] if script.exists() else [sys.executable, "-m", "edu_cli.main"]


def free_port() -> int:
    """A host port nothing listens on now (the kernel's pick for port 0)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def supervisor_locks() -> dict[str, int]:
    """``/run/edu``'s supervisor locks, and how many of them no live process holds (a lock
    nobody holds is a supervisor that is gone: /proc/locks lists the held ones)."""
    from edu_runtime import paths

    held = {m[1] for line in Path("/proc/locks").read_text().splitlines()
            if "->" not in line and (m := re.search(r" [0-9a-f]+:[0-9a-f]+:(\d+) ", line))}
    locks = list(paths.run_dir().glob("supervisor-*.lock"))
    stale = 0
    for p in locks:
        try:
            stale += str(p.stat().st_ino) not in held
        except FileNotFoundError:
            pass
    return {"supervisor locks": len(locks), "stale supervisor locks": stale}


def leftovers() -> dict[str, int]:
    from leftovers import counts

    return {**counts(), **supervisor_locks()}


class Soak:
    """The model, the operations that change it, and the checks that compare it with edu."""

    def __init__(self, seed: int, workdir: Path):
        self.rng = random.Random(seed)
        self.tag = f"sk-{uuid.uuid4().hex[:6]}"
        self.edu = edu_command()
        self.workdir = workdir
        self.containers: dict[str, dict] = {}  # name -> id, state, network, project
        self.images: set[str] = set()
        self.networks: dict[str, str] = {}  # name -> bridge device
        self.volumes: set[str] = set()
        self.projects: set[str] = set()
        self.made: set[str] = set()  # every container id the soak made
        self.gone_bridges: set[str] = set()
        self.n = 0
        self.stats: dict[str, list[float]] = {}
        for k in range(3):
            d = workdir / f"ctx{k}"
            d.mkdir()
            (d / "Dockerfile").write_text(f"FROM busybox\nRUN echo {k} > /made\n")
        (workdir / "compose.yaml").write_text(COMPOSE)

    # ---- the edu command -----------------------------------------------------------------

    def run(self, *argv: str, ok: bool = True) -> subprocess.CompletedProcess:
        out = subprocess.run([*self.edu, *argv], capture_output=True, text=True, timeout=120,
                             cwd=self.workdir)
        if ok and out.returncode != 0:
            raise Finding(f"`edu {' '.join(argv)}` failed ({out.returncode}): "
                          f"{(out.stderr or out.stdout).strip()[-500:]}")
        return out

    def ps(self) -> str:
        """``edu ps -a``'s output: the CLI's own code, in this process (a check after every
        operation would otherwise pay the interpreter's start each time)."""
        import contextlib
        import io

        from edu_cli.main import main

        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = main(["ps", "-a"])
        if code:
            raise Finding(f"`edu ps -a` failed ({code})")
        return out.getvalue()

    def name(self, what: str) -> str:
        self.n += 1
        return f"{self.tag}-{what}{self.n}"

    # ---- operations ------------------------------------------------------------------------

    def running(self, plain: bool = False, paused: bool = False) -> list[str]:
        """Containers running (and paused ones too if ``paused``); not compose's if
        ``plain``."""
        states = ("running", "paused") if paused else ("running",)
        return sorted(n for n, c in self.containers.items() if c["state"] in states
                      and not (plain and c["project"]))

    def paused(self) -> list[str]:
        return sorted(n for n, c in self.containers.items() if c["state"] == "paused")

    def exited(self) -> list[str]:
        return sorted(n for n, c in self.containers.items() if c["state"] == "exited")

    def _used(self) -> tuple[set[str], set[str]]:
        nets = {c["network"] for c in self.containers.values()}
        vols = {c["volume"] for c in self.containers.values() if c.get("volume")}
        return nets, vols

    def possible(self) -> list[str]:
        nets, vols = self._used()
        up = len(self.running(paused=True))
        can = {"run --rm": True, "run -d": up < MAX_RUNNING,
               "exec": bool(self.running()),
               "stop": bool(self.running(plain=True, paused=True)),
               "kill": bool(self.running(plain=True, paused=True)),
               "pause": bool(self.running(plain=True)), "unpause": bool(self.paused()),
               "start": bool([n for n in self.exited() if not self.containers[n]["project"]])
               and up < MAX_RUNNING,
               "rm": any(not c["project"] for c in self.containers.values()),
               "build": len(self.images) < 6, "rmi": bool(self.images),
               "network create": len(self.networks) < 3,
               "network rm": bool(set(self.networks) - nets),
               "volume create": len(self.volumes) < 3, "volume rm": bool(self.volumes - vols),
               "compose up": not self.projects and up <= MAX_RUNNING - 2,
               "compose down": bool(self.projects), "mistake": bool(self.mistakes())}
        return [op for op, yes in can.items() if yes]

    def step(self) -> str:
        ops = self.possible()
        new = [o for o in ops if o not in self.stats]  # every kind early, then by weight
        op = new[0] if new else self.rng.choices(ops, weights=[WEIGHTS[o] for o in ops])[0]
        self.current = op  # named in a finding, if it fails
        t = time.perf_counter()
        getattr(self, "op_" + op.replace(" --", "_").replace(" -", "_").replace(" ", "_"))()
        took = time.perf_counter() - t
        self.stats.setdefault(op, []).append(took)
        return op

    def _network(self) -> str:
        return self.rng.choice(["bridge", "bridge", "none", *sorted(self.networks)])

    def mistakes(self) -> list[tuple[list[str], int, str]]:
        """What a student gets wrong that edu must refuse, changing nothing: ``(argv, exit
        code, words of the refusal)``."""
        nets, vols = self._used()
        running = {c["network"] for c in self.containers.values()
                   if c["state"] in ("running", "paused")}
        out = []
        if self.containers:
            name = self.rng.choice(sorted(self.containers))
            out.append((["run", "-d", "--name", name, "busybox", "true"], 125,
                        "already in use"))
        if self.exited():
            out.append((["exec", self.rng.choice(self.exited()), "true"], 1,
                        "is not running"))
        if self.paused():
            out.append((["exec", self.rng.choice(self.paused()), "true"], 1, "is paused"))
        if set(self.networks) & running:
            out.append((["network", "rm", self.rng.choice(sorted(set(self.networks) & running))],
                        1, "active endpoints"))
        if self.volumes & vols:
            out.append((["volume", "rm", self.rng.choice(sorted(self.volumes & vols))], 1,
                        "in use"))
        return out

    def op_mistake(self) -> None:
        argv, code, words = self.rng.choice(self.mistakes())
        out = self.run(*argv, ok=False)
        if out.returncode != code or words not in out.stderr:
            raise Finding(f"`edu {' '.join(argv)}` should be refused ({code}, {words!r}): "
                          f"{out.returncode} {out.stderr.strip()!r}")

    def op_run_rm(self) -> None:
        net = self._network()
        self.run("run", "--rm", "--name", self.name("rm"), "--network", net, "busybox",
                 "sh", "-c", "echo hello > /tmp/x && cat /tmp/x")

    def op_run_d(self) -> None:
        name, net = self.name("d"), self._network()
        vol = self.rng.choice([None, *sorted(self.volumes)])
        extra = ["-v", f"{vol}:/data"] if vol else []
        port = None
        if net != "none" and self.rng.random() < 0.3:  # published: its nft rules come and go
            taken = {c.get("port") for c in self.containers.values()}
            port = next(p for p in iter(free_port, None) if p not in taken)
            extra += ["-p", f"127.0.0.1:{port}:80"]
        cid = self.run("run", "-d", "--name", name, "--network", net, *extra, "busybox",
                       *BUSY).stdout.strip()
        self.made.add(cid)
        self.containers[name] = {"id": cid, "state": "running", "network": net,
                                 "project": None, "volume": vol, "port": port}

    def op_exec(self) -> None:
        name = self.rng.choice(self.running())
        out = self.run("exec", name, "sh", "-c", "echo $((6 * 7)) >> /tmp/log; tail -n1 /tmp/log")
        if out.stdout.strip() != "42":
            raise Finding(f"`edu exec {name}` printed {out.stdout!r}, not 42")

    def op_stop(self) -> None:
        name = self.rng.choice(self.running(plain=True, paused=True))
        self.run("stop", name)
        self.containers[name]["state"] = "exited"

    def op_kill(self) -> None:
        name = self.rng.choice(self.running(plain=True, paused=True))
        self.run("kill", name)
        self.containers[name]["state"] = "exited"
        self._wait_exited(name)  # docker kill returns once the signal is sent, as edu's does

    def _wait_exited(self, name: str) -> None:
        from edu_runtime.life import states

        cid = self.containers[name]["id"]
        deadline = time.monotonic() + 10
        while states.find(cid).get("status") != "exited" and time.monotonic() < deadline:
            time.sleep(0.01)

    def op_pause(self) -> None:
        name = self.rng.choice(self.running(plain=True))
        self.run("pause", name)
        self.containers[name]["state"] = "paused"

    def op_unpause(self) -> None:
        name = self.rng.choice(self.paused())
        self.run("unpause", name)
        self.containers[name]["state"] = "running"

    def op_start(self) -> None:
        name = self.rng.choice([n for n in self.exited() if not self.containers[n]["project"]])
        self.run("start", name)
        self.containers[name]["state"] = "running"

    def op_rm(self) -> None:
        name = self.rng.choice(sorted(n for n, c in self.containers.items()
                                      if not c["project"]))
        running = self.containers[name]["state"] in ("running", "paused")
        if running and self.rng.random() < 0.5:  # the mistake: Docker refuses, nothing changes
            out = self.run("rm", name, ok=False)
            if out.returncode == 0 or "-f" not in out.stderr:
                raise Finding(f"`edu rm` of running {name}: {out.returncode} {out.stderr!r}")
            return
        self.run("rm", *(["-f"] if running else []), name)
        del self.containers[name]

    def op_build(self) -> None:
        k = self.rng.randrange(3)
        tag = f"{self.name('img')}:{k}"
        self.run("build", "-q", "-t", tag, f"ctx{k}")
        self.images.add(tag)

    def op_rmi(self) -> None:
        tag = self.rng.choice(sorted(self.images))
        self.run("rmi", tag)
        self.images.discard(tag)

    def op_network_create(self) -> None:
        from edu_runtime.networks import registry

        name = self.name("net")
        self.run("network", "create", name)
        self.networks[name] = registry.get(name)["bridge"]

    def op_network_rm(self) -> None:
        nets, _ = self._used()
        name = self.rng.choice(sorted(set(self.networks) - nets))
        self.run("network", "rm", name)
        self.gone_bridges.add(self.networks.pop(name))

    def op_volume_create(self) -> None:
        name = self.name("vol")
        self.run("volume", "create", name)
        self.volumes.add(name)

    def op_volume_rm(self) -> None:
        _, vols = self._used()
        name = self.rng.choice(sorted(self.volumes - vols))
        self.run("volume", "rm", name)
        self.volumes.discard(name)

    def op_compose_up(self) -> None:
        from edu_runtime.life import states

        project = self.name("app")
        self.run("compose", "-p", project, "up", "-d")
        self.projects.add(project)
        for svc in ("a", "b"):
            name = f"{project}-{svc}-1"
            cid = states.find(name)["id"]
            self.made.add(cid)
            self.containers[name] = {"id": cid, "state": "running",
                                     "network": f"{project}_default", "project": project}

    def op_compose_down(self, project: str | None = None) -> None:
        from edu_runtime.networks import registry

        project = project or self.rng.choice(sorted(self.projects))
        bridge = registry.get(f"{project}_default")["bridge"]
        self.run("compose", "-p", project, "down")
        self.projects.discard(project)
        self.gone_bridges.add(bridge)
        for name in [n for n, c in self.containers.items() if c["project"] == project]:
            del self.containers[name]

    def clean(self) -> None:
        """Remove everything the soak made, as a student would at the end of the day: what
        the model holds, and whatever else edu lists under the soak's prefix (after a finding
        the model may be wrong). Each removal is tried even if one before failed; Finding
        then names what failed."""
        from edu_runtime import volumes
        from edu_runtime.images.store import Store
        from edu_runtime.life import states
        from edu_runtime.networks import registry

        failed = []

        def attempt(*argv: str) -> None:
            try:
                self.run(*argv)
            except Finding as f:
                failed.append(str(f))
        for project in sorted(self.projects):
            attempt("compose", "-p", project, "down")
        ours = self.tag + "-"
        names = sorted(r["name"] for r in states.records()  # what there is, not the model
                       if (r.get("name") or "").startswith(ours))
        if names:
            attempt("rm", "-f", *names)
        tags = sorted(self.images | {t for i in Store().images() for t in i.familiar_tags()
                                     if t.startswith(ours)})
        if tags:
            attempt("rmi", *tags)
        for net in registry.records():
            if net["name"].startswith(ours):
                attempt("network", "rm", net["name"])
                self.gone_bridges.add(net["bridge"])
        vols = sorted(v["Name"] for v in volumes.ls() if v["Name"].startswith(ours))
        if vols:
            attempt("volume", "rm", *vols)
        self.containers.clear()
        self.images.clear()
        self.networks.clear()
        self.volumes.clear()
        self.projects.clear()
        if failed:
            raise Finding("the clean-up: " + "; ".join(failed))

    # ---- invariants ------------------------------------------------------------------------

    def check(self) -> None:
        """Every invariant, against the model; Finding on the first that does not hold."""
        from edu_runtime.life import states

        ours = lambda name: name.startswith(self.tag + "-")  # noqa: E731
        # edu ps -a: each of the model's containers once, in its state; nothing else of ours.
        rows = [r for r in self.ps().splitlines()[1:] if r.strip()]
        shown: dict[str, list[str]] = {}
        for row in rows:
            fields = re.split(r"\s{2,}", row.strip())
            if ours(fields[-1]):
                status = next((f for f in fields if f.startswith(("Up", "Exited", "Created"))),
                              "?")
                shown.setdefault(fields[-1], []).append(
                    "paused" if status.endswith("(Paused)") else
                    "running" if status.startswith("Up") else
                    "exited" if status.startswith("Exited") else status)
        want = {n: [c["state"]] for n, c in self.containers.items()}
        if shown != want:
            raise Finding(f"edu ps -a shows {shown}, the model has {want}")
        recs = [r for r in states.records() if ours(r.get("name") or "")]
        ids = {r["name"]: r["id"] for r in recs}
        if len(recs) != len(ids) or ids != {n: c["id"] for n, c in self.containers.items()}:
            raise Finding(f"records {[(r['name'], r['id'][:12]) for r in recs]} do not match "
                          f"the model's containers {sorted(self.containers)}")
        self._check_leases()
        self._check_host()
        self._check_names()
        self._check_store()

    def _check_leases(self) -> None:
        from edu_runtime.networks import registry

        by_id = {c["id"]: (n, c) for n, c in self.containers.items()}
        leased = {}
        for net in registry.records():
            for cid in net.get("containers") or {}:
                if cid in self.made:
                    leased[cid] = net["name"]
        want = {c["id"]: c["network"] for c in self.containers.values()
                if c["state"] in ("running", "paused") and c["network"] != "none"}
        if leased != want:
            show = lambda d: {by_id.get(k, (k[:12],))[0]: v for k, v in d.items()}  # noqa: E731
            raise Finding(f"IPAM leases {show(leased)}, but the running containers on a "
                          f"bridge are {show(want)}")

    def _check_host(self) -> None:
        # hoststate's kinds that containers and networks make (not libvirt's, the guests'
        # or the store's temp files: no operation here makes those; the end checks them).
        snap = {kind: getattr(hoststate, "_" + kind.replace(" ", "_"))() for kind in (
            "mounts", "cgroups", "netns", "links", "nft", "iptables", "leases", "containers",
            "processes", "run dir")}
        by_short = {cid[:8]: cid for cid in self.made}
        state = {c["id"]: c["state"] for c in self.containers.values()}
        wrong = []
        for kind, items in snap.items():
            for item in items:
                for cid in {by_short.get(h[:8]) for h in _HEX.findall(item)} - {None}:
                    if cid not in state:
                        wrong.append(f"{kind}: {item} (its container is gone)")
                    elif state[cid] == "exited" and kind != "containers":
                        wrong.append(f"{kind}: {item} (its container has exited)")
                if kind in ("links", "nft", "iptables") and any(
                        b in item for b in self.gone_bridges):
                    wrong.append(f"{kind}: {item} (its network is gone)")
        if wrong:
            raise Finding("left on the host: " + "; ".join(sorted(set(wrong))[:8]))

    def _check_names(self) -> None:
        from edu_runtime import volumes
        from edu_runtime.networks import registry

        nets = {n["name"] for n in registry.records() if n["name"].startswith(self.tag)}
        want = set(self.networks) | {f"{p}_default" for p in self.projects}
        if nets != want:
            raise Finding(f"networks {sorted(nets)}, the model has {sorted(want)}")
        vols = {v["Name"] for v in volumes.ls() if v["Name"].startswith(self.tag)}
        if vols != self.volumes:
            raise Finding(f"volumes {sorted(vols)}, the model has {sorted(self.volumes)}")

    def _check_store(self) -> None:
        from edu_runtime.images.store import Store

        store = Store()
        images = store.images()
        tags = {t for i in images for t in i.familiar_tags() if t.startswith(self.tag)}
        if tags != self.images:
            raise Finding(f"the store's tags {sorted(tags)}, the model has "
                          f"{sorted(self.images)}")
        # Every tag names an image, every image's blobs are here and its layers unpacked;
        # and after a build or rmi (what changes the store), the bytes of our images' blobs
        # (busybox's among them) hash to their names.
        if getattr(self, "current", "") not in ("build", "rmi", "?"):
            problems = store.verify(blobs=False)
            if problems:
                raise Finding("the store does not verify: " + "; ".join(problems[:5]))
            return
        mine = {d for i in images if any(t.startswith(self.tag) or t == "busybox:latest"
                                         for t in i.familiar_tags())
                for d in (i.manifest_digest, i.config_digest,
                          *(layer["digest"] for layer in i.manifest.get("layers", [])))}
        problems = store.verify(blobs=mine)
        if problems:
            raise Finding("the store does not verify: " + "; ".join(problems[:5]))

    # ---- the end ---------------------------------------------------------------------------

    def traces(self) -> list[str]:
        """Files and directories of the state directory that name something the soak made
        (a container's id, or the soak's name prefix): none may be left once it is removed."""
        from edu_runtime import paths

        root = paths.state_dir()
        marks = [cid[:12] for cid in self.made] + [self.tag]
        out = []
        for top, dirs, names in os.walk(root):
            rel = os.path.relpath(top, root)
            if rel.startswith(("store/blobs", "store/layers", "store/build-cache")):
                dirs[:] = []
                continue
            out += [os.path.join(rel, n) for n in dirs + names if any(m in n for m in marks)]
        return sorted(out)

    def foreign(self, found: dict[str, list[str]]) -> dict[str, list[str]]:
        """``found`` less what names a container id the soak did not make (another
        engineer's, or a teacher's, container going or coming while we looked), and less
        the kinds no operation here makes (libvirt's domains and a guest's boot files: a VM
        booting beside us)."""
        shorts = {cid[:8] for cid in self.made}
        out = {}
        for kind, items in found.items():
            if kind in ("libvirt", "guest tmp"):
                continue
            keep = [i for i in items if not (_HEX.search(i) and kind in (
                "cgroups", "containers", "processes", "leases", "mounts", "links", "nft")
                and not any(h[:8] in shorts for h in _HEX.findall(i)))]
            if keep:
                out[kind] = keep
        return out


def _progress(it):
    from tqdm.auto import tqdm  # a monitor thread: not in a test's process

    return tqdm(it, desc="soak", unit="op")


def soak(ops: int, seed: int, every: int = 50, progress: bool = True) -> dict:
    """Run ``ops`` operations with this seed; the figures, findings and leftovers."""
    from edu_runtime.images import bootstrap
    from edu_runtime.images.store import Store

    bootstrap.bootstrap(Store(), "busybox", progress=False)
    print(f"soak: {ops} operations, seed {seed}", flush=True)
    before = hoststate.snapshot()
    rows = [{"operations": 0, **leftovers()}]
    workdir = Path(tempfile.mkdtemp(prefix="sk-soak-"))
    s = Soak(seed, workdir)
    findings: list[str] = []
    checking = 0.0
    start = time.perf_counter()
    done = 0
    try:
        for i in _progress(range(ops)) if progress else range(ops):
            s.current = "?"
            try:
                s.step()
                t = time.perf_counter()
                s.check()
                checking += time.perf_counter() - t
            except Finding as f:
                findings.append(f"op {i + 1} ({s.current}): {f}")
                break
            except Exception as exc:  # noqa: BLE001 - an edu module raising in this process
                findings.append(f"op {i + 1} ({s.current}): {type(exc).__name__}: {exc}")
                break
            done = i + 1
            if done % every == 0:
                rows.append({"operations": done, "containers": len(s.containers),
                             **leftovers()})
    finally:
        took = time.perf_counter() - start
        try:
            s.clean()
            s.current = "?"  # the end's check hashes our images' blobs too
            s.check()
        except Finding as f:
            findings.append(f"clean-up: {f}")
        except Exception as exc:  # noqa: BLE001 - as above
            findings.append(f"clean-up: {type(exc).__name__}: {exc}")
        finally:
            shutil.rmtree(workdir)
    leaks = s.foreign(hoststate.wait_clean(before, mine=s.made))
    traces = s.traces()
    end = {"operations": done, "containers": 0, **leftovers()}
    rows.append(end)
    if end["stale supervisor locks"] > rows[0]["stale supervisor locks"]:
        findings.append(f"supervisor locks left by supervisors that are gone: "
                        f"{rows[0]['stale supervisor locks']} -> {end['stale supervisor locks']}")
    growth = {k: (end[k] - rows[0][k]) * 100 / max(done, 1) for k in rows[0]
              if k != "operations"}
    per_kind = {op: {"count": len(ts), "seconds": sum(ts), "ops_per_s": len(ts) / sum(ts)}
                for op, ts in sorted(s.stats.items())}
    return {"seed": seed, "operations": done, "asked": ops, "seconds": took,
            "checking_seconds": checking, "ops_per_s": done / took if took else 0.0,
            "per_kind": per_kind, "findings": findings, "leaks": leaks, "traces": traces,
            "rows": rows,
            "growth_per_100": growth, "containers_made": len(s.made)}


def show(result: dict) -> None:
    r = result
    print(f"\n{r['operations']} of {r['asked']} operations (seed {r['seed']}) in "
          f"{r['seconds']:.1f} s: {r['ops_per_s']:.1f} ops/s, checks included "
          f"({r['checking_seconds']:.1f} s of checks); {r['containers_made']} containers made")
    for op, k in r["per_kind"].items():
        print(f"  {op:<15} {k['count']:>4}   {k['seconds'] / k['count'] * 1e3:7.0f} ms each"
              f"   {k['ops_per_s']:5.1f} ops/s")
    print(f"findings: {len(r['findings'])}" + "".join(f"\n  {f}" for f in r["findings"]))
    print(f"leaks after the clean-up: {r['leaks'] or 'none'}")
    print(f"state files naming what the soak made, after the clean-up: "
          f"{r['traces'] or 'none'}")
    first, last = r["rows"][0], r["rows"][-1]
    day = r["ops_per_s"] * 8 * 3600  # a class day of operations back to back, checks included
    print("leftovers, start -> after the clean-up, growth per 100 operations, and over an "
          f"8-hour day at this pace ({day:,.0f} operations):")
    for k, v in r["growth_per_100"].items():
        if k != "containers":
            print(f"  {k:<22} {first[k]:>6} -> {last[k]:>6}   {v:+.1f}   {v * day / 100:+,.0f}")


def main() -> None:
    from common import machine, save

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ops", type=int, default=500)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--every", type=int, default=50, help="count leftovers every N operations")
    a = p.parse_args()
    seed = a.seed if a.seed is not None else random.SystemRandom().randrange(2**32)
    result = soak(a.ops, seed, a.every)
    show(result)
    out = save("soak", {"machine": machine(), **result})
    print(f"saved {out}")
    print(json.dumps({k: result[k] for k in ("seed", "operations", "seconds", "ops_per_s")}))
    sys.exit(1 if result["findings"] or result["leaks"] or result["traces"] else 0)


if __name__ == "__main__":
    main()
