"""``docker compose`` verbs over a loaded project: up, down, ps, logs, build, pull, stop,
start, restart.

Nothing here makes a container, a network or a volume by itself: it calls what ``edu run``,
``edu network create`` and ``edu volume create`` call (``Container``, ``networks``,
``volumes``, ``life.control``), with Compose's names and labels. The labels are the whole
memory of a project: ``ps`` and ``down`` find its containers, networks and volumes by
``com.docker.compose.project``, so no state is kept beside them.

``up`` does it in Compose's order: every image first (built or pulled; nothing is made if
one is missing), then the networks and volumes, then each service after the services it
depends on, waiting for ``condition: service_healthy`` to see the dependency healthy. Each
container is *created* first (listed by ``ps`` from then on), then started. A second ``up``
compares each container's ``config-hash`` label and image with the file's: an unchanged
running container is left alone, a changed one is recreated. If a service fails, the error
names it, and what was made so far stays, labelled, for ``ps`` to show and ``down`` to
remove: from the user's view ``up`` is all or nothing.

Introduced in notebooks/08-web-app.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TextIO

from ..life import control, states
from .project import (
    NETWORK_LABEL,
    PROJECT,
    SERVICE,
    VOLUME_LABEL,
    Project,
)
from .schema import ComposeError

Say = Callable[[str], None] | None
_LIVE = (states.RUNNING, states.PAUSED)


def _tell(say: Say, kind: str, name: str, what: str) -> None:
    if say:
        say(f" {kind} {name}  {what}")


def containers(project: Project | str, service: str | None = None) -> list[dict[str, Any]]:
    """The records of a project's containers (of one service), running or not, in service
    order then by name."""
    name = project if isinstance(project, str) else project.name
    want = {PROJECT: name, **({SERVICE: service} if service else {})}
    recs = control.ls(all=True, labels=want)
    order = list(project.services) if isinstance(project, Project) else []

    def key(r):
        svc = control.labels_of(r).get(SERVICE, "")
        return (order.index(svc) if svc in order else len(order), r.get("name", ""))

    return sorted(recs, key=key)


# ---- images ----------------------------------------------------------------------------------

def _have(store, ref: str) -> bool:
    from ..images.store import StoreError

    try:
        store.get(ref)
        return True
    except StoreError:
        return False


def build(project: Project, services: list[str] | None = None, *, out: TextIO | None = None,
          say: Say = None, no_cache: bool = False) -> list[str]:
    """``docker compose build``: build each service that has a build section; the images."""
    from ..images.store import Store

    store, built = Store(), []
    for name in project.order(services):
        if project.services[name].build is not None:
            built.append(_build(project, name, store, out, say, no_cache))
    return built


def _build(project: Project, name: str, store, out, say: Say, no_cache: bool = False) -> str:
    from ..images import build as builder
    from ..images.store import StoreError

    svc = project.services[name]
    b = svc.build or {}
    _tell(say, "Service", name, f"Building {svc.image}")
    options = builder.Options(context=Path(b["context"]),
                              dockerfile=Path(b["dockerfile"]) if b.get("dockerfile") else None,
                              tags=[svc.image], build_args=dict(b.get("args") or {}),
                              target=b.get("target"), no_cache=no_cache)
    try:
        builder.build(store, options, out)
    except (builder.BuildError, StoreError) as exc:
        raise ComposeError(f"service {name!r} failed to build: {exc}") from None
    return svc.image


def pull(project: Project, services: list[str] | None = None, *, out: TextIO | None = None,
         say: Say = None) -> list[str]:
    """``docker compose pull``: pull the image of each service that is not built here."""
    from ..images.store import Store

    store, pulled = Store(), []
    for name in project.order(services):
        if project.services[name].build is None:
            pulled.append(_pull(project, name, store, out, say))
        else:
            _tell(say, "Service", name, "Skipped: it is built here (edu compose build)")
    return pulled


def _pull(project: Project, name: str, store, out, say: Say) -> str:
    from ..images import registry

    image = project.services[name].image
    _tell(say, "Service", name, f"Pulling {image}")
    try:
        registry.pull(store, image, progress=registry.Progress(out))
    except (registry.StoreError, ValueError, OSError) as exc:
        raise ComposeError(f"service {name!r}: cannot pull {image}: {exc}") from None
    return image


def ensure_images(project: Project, services: list[str] | None = None, *,
                  build: bool = False, out: TextIO | None = None, say: Say = None) -> None:
    """Every image ``up`` needs, in the store: built (always with ``build``), else pulled
    when missing. Nothing else is made before all of them are there."""
    from ..images.store import Store

    store = Store()
    for name in project.order(services):
        svc = project.services[name]
        if svc.build is not None and (build or not _have(store, svc.image)):
            _build(project, name, store, out, say)
        elif not _have(store, svc.image):
            _pull(project, name, store, out, say)


# ---- networks and volumes --------------------------------------------------------------------

def _networks(project: Project, say: Say) -> None:
    from .. import networks

    used = {s.network for s in project.services.values()}
    for key, res in project.networks.items():
        if key not in used:
            continue
        try:
            networks.get(res.name)
            continue
        except networks.NetworkError:
            if res.external:
                raise ComposeError(f"network {res.name} declared as external, but could not "
                                   f"be found: create it first (edu network create "
                                   f"{res.name})") from None
        try:
            networks.create(res.name, labels={PROJECT: project.name, NETWORK_LABEL: key})
        except networks.NetworkError as exc:
            raise ComposeError(f"network {res.name}: {exc}") from None
        _tell(say, "Network", res.name, "Created")


def _volumes(project: Project, say: Say) -> None:
    from .. import volumes

    for key, res in project.volumes.items():
        try:
            volumes.inspect(res.name)
            continue
        except volumes.VolumeError:
            if res.external:
                raise ComposeError(f"external volume {res.name!r} not found: create it first "
                                   f"(edu volume create {res.name})") from None
        volumes.create(res.name, labels={PROJECT: project.name, VOLUME_LABEL: key})
        _tell(say, "Volume", res.name, "Created")


# ---- containers ------------------------------------------------------------------------------

def container_spec(project: Project, name: str) -> dict[str, Any]:
    """The ``Container`` keyword arguments of a service's container."""
    from ..networks import registry

    svc = project.services[name]
    net = project.networks[svc.network].name
    user_defined = net not in registry.PREDEFINED and net not in (registry.DEFAULT, "default")
    return dict(image=svc.image, command=svc.command, entrypoint=svc.entrypoint,
                name=project.container_name(name), hostname=svc.hostname,
                env=dict(svc.environment), workdir=svc.working_dir, user=svc.user,
                network=net, publish=list(svc.ports),
                aliases=[name, *svc.aliases] if user_defined else None,
                volumes=list(svc.volumes), healthcheck=svc.healthcheck,
                labels=project.labels(name), init=svc.init, read_only=svc.read_only,
                cap_add=list(svc.cap_add), cap_drop=list(svc.cap_drop),
                memory=svc.mem_limit, pids_limit=svc.pids_limit, cpus=svc.cpus,
                log_driver=(svc.logging or {}).get("driver"),
                log_opts=(svc.logging or {}).get("options"))


def _create(project: Project, name: str, say: Say) -> dict[str, Any]:
    from ..container import Container

    c = Container(**container_spec(project, name))
    c.create(restart=project.services[name].restart)
    _tell(say, "Container", c.config.name, "Created")
    return control.find(c.id)


def _start(rec: dict[str, Any], say: Say) -> None:
    control.start(rec["id"])
    _tell(say, "Container", rec["name"], "Started")


def _converge(project: Project, name: str, say: Say, timeout: float) -> None:
    """The service's container made to match the file: left alone, started, or recreated."""
    from ..images.store import Store

    want = project.labels(name)
    image_id = Store().get(project.services[name].image).id
    recs = containers(project, name)
    rec = recs[0] if recs else None
    if rec and control.labels_of(rec).get("com.docker.compose.config-hash") == \
            want["com.docker.compose.config-hash"] and rec.get("image_id") == image_id:
        for extra in recs[1:]:
            _remove(extra, say, timeout)
        if rec.get("status") in _LIVE:
            _tell(say, "Container", rec["name"], "Running")
        else:
            _start(rec, say)
        return
    for old in recs:
        _tell(say, "Container", old["name"], "Recreate")
        _remove(old, None, timeout)
    _start(_create(project, name, say), say)


def _remove(rec: dict[str, Any], say: Say, timeout: float) -> None:
    if rec.get("status") in _LIVE:
        try:
            control.stop(rec["id"], timeout)
        except (states.InvalidTransition, control.ControlError):
            pass  # it exited meanwhile: removed below all the same
    # Its anonymous volumes go with it (docker rm -v); named volumes are down -v's.
    control.remove(rec["id"], force=True, volumes=True)
    _tell(say, "Container", rec["name"], "Removed")


def _wait_for(project: Project, dep: str, condition: str, say: Say) -> None:
    """Wait until ``dep`` meets ``condition`` (depends_on); ComposeError when it cannot."""
    recs = containers(project, dep)
    if not recs:
        raise ComposeError(f"dependency {dep!r} has no container: start it first")
    rec = recs[0]
    cname = rec["name"]
    if condition == "service_started":
        return
    if condition == "service_healthy" and \
            (rec.get("healthcheck") or {}).get("Test", ["NONE"])[:1] in (["NONE"], []):
        raise ComposeError(f"dependency {dep!r} has no healthcheck, so it can never be "
                           f"healthy: add a healthcheck to service {dep}, or use condition "
                           "service_started")
    _tell(say, "Container", cname, "Waiting")
    while True:
        rec = control.find(rec["id"])
        status = rec.get("status")
        if condition == "service_healthy":
            health = _health(rec)
            if health == "healthy":
                _tell(say, "Container", cname, "Healthy")
                return
            if health == "unhealthy":
                raise ComposeError(f"dependency failed to start: container {cname} is "
                                   "unhealthy")
            if status not in _LIVE and status != states.CREATED:
                raise ComposeError(f"dependency failed to start: container {cname} exited "
                                   f"({rec.get('exit_code')})")
        elif status not in _LIVE and status != states.CREATED:
            code = rec.get("exit_code")
            if code != 0:
                raise ComposeError(f"service {dep!r} didn't complete successfully: exit "
                                   f"{code}")
            _tell(say, "Container", cname, "Exited")
            return
        time.sleep(0.1)


def _health(rec: dict[str, Any]) -> str:
    """The health of the container's current run: a verdict left from before it was
    started again (``stop`` marks it unhealthy) counts only once a check of this run has
    been logged; until then it is starting."""
    from datetime import datetime

    h = rec.get("health") or {}
    log = h.get("log") or []
    try:
        last = datetime.fromisoformat(log[-1]["start"]).timestamp() if log else 0.0
    except (KeyError, TypeError, ValueError):
        last = 0.0
    return h.get("status", "starting") if last >= (rec.get("started") or 0) else "starting"


def _failed(name: str, exc: Exception) -> ComposeError:
    text = getattr(exc, "message", None) or str(exc)
    return ComposeError(f"service {name!r} failed to start: {text}. What was made is listed "
                        "by 'edu compose ps' and removed by 'edu compose down'")


def up(project: Project, services: list[str] | None = None, *, build: bool = False,
       out: TextIO | None = None, say: Say = None, timeout: float = 10) -> list[dict[str, Any]]:
    """``docker compose up -d``: images, networks, volumes, then each service in dependency
    order; the records of the project's containers."""
    from ..steps import StepError

    control.cleanup_stale()
    ensure_images(project, services, build=build, out=out, say=say)
    _networks(project, say)
    _volumes(project, say)
    for name in project.order(services):
        try:
            for dep, condition in project.services[name].depends_on.items():
                _wait_for(project, dep, condition, say)
            _converge(project, name, say, timeout)
        except (ComposeError, StepError, states.InvalidTransition, control.ControlError,
                LookupError, ValueError, OSError) as exc:
            raise _failed(name, exc) from None
    return containers(project)


def _levels(project: Project, recs: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Containers grouped for stopping: dependents before what they depend on, each group
    at once (containers of services no longer in the file first)."""
    depth: dict[str, int] = {}

    def d(name: str) -> int:
        if name not in depth:
            deps = project.services[name].depends_on
            depth[name] = 1 + max((d(x) for x in deps), default=-1)
        return depth[name]

    groups: dict[int, list[dict[str, Any]]] = {}
    for rec in recs:
        svc = control.labels_of(rec).get(SERVICE, "")
        groups.setdefault(d(svc) if svc in project.services else 1 << 30, []).append(rec)
    return [groups[k] for k in sorted(groups, reverse=True)]


def _each_level(project: Project, recs, fn) -> None:
    for group in _levels(project, recs):
        if len(group) == 1:
            fn(group[0])
            continue
        with ThreadPoolExecutor(max_workers=len(group)) as pool:
            for future in [pool.submit(fn, r) for r in group]:
                future.result()


def down(project: Project, *, volumes: bool = False, timeout: float = 10,
         say: Say = None) -> None:
    """``docker compose down [-v]``: the project's containers and networks (and with
    ``volumes`` its named volumes), found by their project label."""
    from .. import networks
    from .. import volumes as vols

    recs = containers(project)
    _each_level(project, recs, lambda r: _remove(r, say, timeout))
    for net in networks.ls():
        if (net.get("labels") or {}).get(PROJECT) == project.name:
            try:
                networks.rm(net["name"])
            except networks.NetworkError as exc:
                raise ComposeError(f"network {net['name']}: {exc}") from None
            _tell(say, "Network", net["name"], "Removed")
    if volumes:
        for vol in vols.ls():
            if (vol.get("Labels") or {}).get(PROJECT) == project.name:
                try:
                    vols.rm(vol["Name"])
                except vols.VolumeError as exc:
                    raise ComposeError(f"volume {vol['Name']}: {exc}") from None
                _tell(say, "Volume", vol["Name"], "Removed")


def _service_recs(project: Project, services: list[str] | None) -> list[dict[str, Any]]:
    project.order(services)  # an unknown service is an error
    wanted = set(services) if services else None
    return [r for r in containers(project)
            if wanted is None or control.labels_of(r).get(SERVICE) in wanted]


def stop(project: Project, services: list[str] | None = None, *, timeout: float = 10,
         say: Say = None) -> None:
    """``docker compose stop``: dependents first, each level at once."""
    def one(rec):
        if rec.get("status") in _LIVE:
            _tell(say, "Container", rec["name"], "Stopping")
            control.stop(rec["id"], timeout)
            _tell(say, "Container", rec["name"], "Stopped")

    _each_level(project, _service_recs(project, services), one)


def start(project: Project, services: list[str] | None = None, *, say: Say = None) -> None:
    """``docker compose start``: the stopped containers (of ``services``) again, in
    dependency order, each after its dependencies meet their conditions."""
    from ..steps import StepError

    recs = _service_recs(project, services)
    if not recs:
        raise ComposeError("no containers to start: run edu compose up first")
    for name in [n for n in project.order(services) if not services or n in services]:
        for rec in [r for r in recs if control.labels_of(r).get(SERVICE) == name]:
            try:
                for dep, condition in project.services[name].depends_on.items():
                    _wait_for(project, dep, condition, say)
                if control.find(rec["id"]).get("status") not in _LIVE:
                    _start(rec, say)
            except (ComposeError, StepError, states.InvalidTransition,
                    control.ControlError) as exc:
                raise _failed(name, exc) from None


def restart(project: Project, services: list[str] | None = None, *, timeout: float = 10,
            say: Say = None) -> None:
    """``docker compose restart``: stop, then start, keeping the containers."""
    stop(project, services, timeout=timeout)
    start(project, services, say=None)
    for rec in _service_recs(project, services):
        _tell(say, "Container", rec["name"], "Restarted")


def ps(project: Project) -> list[dict[str, Any]]:
    """``docker compose ps``: a row per container of the project, running or not."""
    now = time.time()
    return [{"name": r["name"], "image": r.get("image", ""),
             "command": " ".join(r.get("command") or []),
             "service": control.labels_of(r).get(SERVICE, ""),
             "status": states.human_status(r, now), "state": r.get("status"),
             "ports": ", ".join(r.get("ports") or []), "id": r["id"]}
            for r in containers(project)]


def logs(project: Project, services: list[str] | None = None, *, follow: bool = False,
         poll: float = 0.1) -> Iterator[tuple[str, str, str]]:
    """(container name, stream, text) for each line the project's containers printed; with
    ``follow``, until every one has exited, with ("name", "exit", "CODE") after the last
    line of each one once it has exited."""
    recs = _service_recs(project, services)
    offsets = {r["id"]: 0 for r in recs}
    running = {r["id"] for r in recs}  # until seen exited (then its "exit" comes)
    while True:
        news = False
        for r in recs:
            chunk, offsets[r["id"]] = control.read_lines(control.log_path(r), offsets[r["id"]])
            for stream, text in control.entries(chunk.splitlines()):
                news = True
                yield r["name"], stream, text
        if not follow or news:
            if not follow:
                return
            continue
        for r in recs:
            if r["id"] in running:
                try:
                    rec = control.find(r["id"])
                except LookupError:
                    rec = {"status": states.EXITED}
                if rec.get("status") not in _LIVE:
                    running.discard(r["id"])
                    chunk, offsets[r["id"]] = control.read_lines(control.log_path(r),
                                                                 offsets[r["id"]])
                    for stream, text in control.entries(chunk.splitlines()):
                        yield r["name"], stream, text
                    yield r["name"], "exit", str(rec.get("exit_code"))
        if not running:
            return
        time.sleep(poll)
