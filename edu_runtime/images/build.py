"""``edu build`` and ``edu commit``: an image is a stack of frozen container changes.

A Dockerfile is a recipe that a builder follows one instruction at a time, as Docker 20.10's
classic builder does (the reference for every behaviour here; BuildKit differs in places,
see the README):

- ``FROM`` starts from an image's config and layers (or ``scratch``: nothing at all);
- ``RUN`` starts a real edu container over the image so far, waits for it, and turns its
  overlay *upper dir* (every file it wrote, every whiteout of a file it deleted) into a new
  layer. A command that changed nothing adds no layer, as with Docker;
- ``COPY`` and ``ADD`` mount the image so far as an overlay (detached: attached to no
  directory, so nothing can leak) with an empty upper dir, copy the files in, and the upper
  dir is the layer, exactly as RUN's would be;
- ``WORKDIR`` creates its directory the same way (a layer only if it did not exist);
- rootless, that mount (and the packing of every layer) happens as root of a user namespace
  of the user's own (``kernel.in_user_namespace``), as a rootless RUN's container does: the
  user is root there and their files are root's in the layer, as Docker's rootless builds
  make them. One uid is mapped, so a ``--chown`` to another user stays root's (said);
- everything else (ENV, CMD, LABEL, ...) changes only the image config.

Each step's result is kept in a cache, keyed as Docker keys it: the image so far, the
instruction (after variable substitution, with the build args a RUN sees), and for COPY and
ADD a checksum of the files' contents. The next build with the same key prints
``---> Using cache`` and skips the work. ``edu commit`` is the same layer-making applied to
a container a student made by hand: an image is a frozen container.

The cache is bounded, as BuildKit's garbage collection bounds Docker's: after a build that
wrote entries (at most every ten minutes), the least recently used entries go until the
layers that only the cache holds take at most ``EDU_BUILD_CACHE_MAX`` (default: a tenth of the
disk that holds the store, BuildKit's default), and the store collects what they held. A
class day of edits to one app otherwise grows the store without end (``trim_cache``).

Nothing half-built is tagged: the tag moves only after the last step succeeded, and a failed
build leaves only its cached steps (and no container, mount or temporary directory).

A build runs beside other ``edu`` commands, ``rmi`` and ``image prune`` among them. What it
uses (its base images, its cache hits, the layers it has made so far) belongs to no image
until it ends, so the build holds all of it in a store *lease* (see store.py), which garbage
collection respects for as long as the building process lives.

Introduced in notebooks/05-dockerfile.
"""

from __future__ import annotations

import contextlib
import copy as _copy
import errno
import hashlib
import io
import json
import os
import stat
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from . import dockerfile as df
from . import warm
from .store import Image, Store, StoreError, canonical_json, no_space_is, write_atomic

LAYER_MEDIA = "application/vnd.oci.image.layer.v1.tar+gzip"
DEFAULT_SHELL = ["/bin/sh", "-c"]
#: Part of every cache key: raise it when a step would now make something different.
CACHE_VERSION = 2
#: Keys of the config that a Dockerfile writes (``docker inspect .Config``).
CONFIG_KEYS = ("Env", "Cmd", "Entrypoint", "WorkingDir", "ExposedPorts", "User", "Labels",
               "Volumes", "StopSignal", "Shell", "Healthcheck", "OnBuild")


class BuildError(Exception):
    """A build that cannot go on; the message says what failed and how to fix it."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code


@dataclass
class State:
    """The image so far: its config (with history and rootfs) and its layers."""

    config: dict[str, Any]
    layers: list[tuple[str, str, str]] = field(default_factory=list)  # blob, media, diff_id

    @property
    def id(self) -> str:
        """The image ID this state would have: the digest of its config."""
        return "sha256:" + hashlib.sha256(canonical_json(self.config)).hexdigest()

    @property
    def run(self) -> dict[str, Any]:
        """The container config (``.Config`` in docker inspect)."""
        return self.config.setdefault("config", {})

    def image(self) -> Image:
        """An in-memory Image of this state, for a container or a mount."""
        manifest = {"layers": [{"digest": b, "mediaType": m} for b, m, _ in self.layers]}
        return Image("", manifest, self.id, self.config)


def empty_state() -> State:
    """``FROM scratch``."""
    return State({"architecture": "amd64", "os": "linux", "config": {},
                  "rootfs": {"type": "layers", "diff_ids": []}, "history": []})


def state_of(image: Image) -> State:
    """The state an image starts a stage with."""
    cfg = _copy.deepcopy(image.config)
    blobs = [(d["digest"], d["mediaType"]) for d in image.manifest.get("layers", [])]
    return State(cfg, [(b, m, d) for (b, m), d in zip(blobs, image.diff_ids, strict=True)])


# ---- the build ------------------------------------------------------------------------------

@dataclass
class Options:
    """What ``edu build`` was asked for."""

    context: Path
    dockerfile: Path | None = None
    tags: list[str] = field(default_factory=list)
    build_args: dict[str, str] = field(default_factory=dict)
    target: str | None = None
    no_cache: bool = False
    network: str | None = None  # None: the default bridge (rootless: the user's own)
    quiet: bool = False


class Builder:
    """Runs one build: the stages of a Dockerfile, step by step, into the store."""

    def __init__(self, store: Store, options: Options, out: TextIO | None = None):
        self.store = store
        self.opts = options
        self.out = out or sys.stdout
        self.stages: dict[str, State] = {}  # by name, and by index as a string
        self.used_args: set[str] = set()
        self.step = 0
        self.total = 0
        #: One entry per instruction built, in order (see ``_note``): what a lesson shows.
        self.log: list[dict[str, Any]] = []
        #: The cache keys this build wrote (not those it found): ``forget`` takes them back.
        self.remembered: list[str] = []
        self._hit = False
        #: What the next build with the same inputs would find and print (see warm.py).
        self.record = warm.Record()
        self._making = False  # (a step being made: its lines are not a warm build's)

    def say(self, text: str) -> None:
        """One line of the build's output (Docker's wording)."""
        if not self._making:
            self.record.lines.append(text)
        if not self.opts.quiet:
            self.out.write(text + "\n")
            self.out.flush()

    # ---- the whole Dockerfile ------------------------------------------------------------

    def build(self) -> Image:
        """Build every stage up to the target; tag and return the last one."""
        keep = cache_limit(self.store)  # (a bad setting is refused before any work)
        with self.store.lease(), no_space_is("the build", self.store.root):
            image = self._build()
        self._save_record(image)
        if self.remembered and _trim_due(self.store):
            # (the image is built and tagged: a trim that fails is tried again next time)
            with contextlib.suppress(StoreError, OSError, ValueError, KeyError, TypeError):
                trim_cache(self.store, keep)
        return image

    def _save_record(self, image: Image) -> None:
        """Write down what a warm rebuild with the same inputs would do (warm.py)."""
        from .reference import parse

        path = warm.where(str(self.store.root), str(self.opts.context),
                          str(self.opts.dockerfile or self.opts.context / "Dockerfile"))
        given = warm.inputs(self.dockerfile_bytes, self.opts.tags, self.opts.build_args,
                            self.opts.target)
        with contextlib.suppress(OSError):  # (a build that cannot note this is still built)
            self.record.save(path, given, image, [str(parse(t)) for t in self.opts.tags])

    def _build(self) -> Image:
        text = self._read_dockerfile()
        try:
            instructions = df.parse(text)
        except df.DockerfileError as exc:
            raise BuildError(f"{exc}") from None
        self.dockerfile_rel = "Dockerfile"
        if self.opts.dockerfile is not None:
            try:
                self.dockerfile_rel = str(Path(self.opts.dockerfile).resolve().relative_to(
                    self.opts.context.resolve()))
            except ValueError:  # a Dockerfile outside the context is sent beside it
                self.dockerfile_rel = Path(self.opts.dockerfile).name
        meta, stages = _split_stages(instructions)
        stages = self._up_to_target(stages)
        self.total = len(meta) + sum(1 + len(body) for _, body in stages)
        self.meta_args: dict[str, str | None] = {}
        for inst in meta:
            self._print_step(inst)
            for key, default in df.expand_instruction(inst, self._meta_env()).pairs:
                self.meta_args[key] = self.opts.build_args.get(key, default)
                if key in self.opts.build_args:
                    self.used_args.add(key)
        state = None
        for index, (frm, body) in enumerate(stages):
            state = self._stage(index, frm, body)
        assert state is not None
        unused = sorted(set(self.opts.build_args) - self.used_args - set(self.meta_args))
        if unused:
            self.say(f"[Warning] One or more build-args {unused} were not consumed")
        return self._finish(state)

    def _read_dockerfile(self) -> str:
        path = self.opts.dockerfile or self.opts.context / "Dockerfile"
        if not self.opts.context.is_dir():
            raise BuildError(f"unable to prepare context: path {str(self.opts.context)!r} not "
                             "found: give the directory to build, e.g. edu build -t app .")
        try:
            self.dockerfile_bytes = path.read_bytes()
            # (decoded as read_text() decodes: the locale's encoding, universal newlines)
            return io.TextIOWrapper(io.BytesIO(self.dockerfile_bytes)).read()
        except FileNotFoundError:
            raise BuildError(f"Cannot locate specified Dockerfile: {path}: put a Dockerfile "
                             "in the context directory, or name one with -f") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise BuildError(f"Cannot read Dockerfile {path}: {exc}") from None

    def _up_to_target(self, stages):
        if self.opts.target is None:
            return stages
        for i, (frm, _) in enumerate(stages):
            if _stage_name(frm) == self.opts.target.lower():
                return stages[: i + 1]
        raise BuildError(f"failed to reach build target {self.opts.target} in Dockerfile: "
                         "name a stage with FROM IMAGE AS NAME")

    def _meta_env(self) -> dict[str, str]:
        return {k: v for k, v in getattr(self, "meta_args", {}).items() if v is not None}

    def _print_step(self, inst: df.Instruction) -> None:
        self.step += 1
        self.say(f"Step {self.step}/{self.total} : {inst.original}")

    # ---- one stage -----------------------------------------------------------------------

    def _stage(self, index: int, frm: df.Instruction, body: list[df.Instruction]) -> State:
        self._print_step(frm)
        frm = df.expand_instruction(frm, self._meta_env())
        base = frm.args[0]
        if base.lower() == "scratch":
            state = empty_state()
            self.say(" --->")
        else:
            state = self._base_state(base)
            self.say(f" ---> {_short(state.id)}")
        self._note(frm, None, state, time.monotonic())
        self.args: dict[str, str | None] = {}
        self.cmd_set = False
        triggers = list(state.run.get("OnBuild") or [])
        if triggers:
            state.run["OnBuild"] = None
            self.say(f"# Executing {len(triggers)} build trigger{'s' if len(triggers) > 1 else ''}")
            for text in triggers:
                try:
                    inst = df.parse_trigger(text)
                except df.DockerfileError as exc:
                    raise BuildError(f"the base image's ONBUILD {text!r} cannot be read: "
                                     f"{exc}") from None
                state = self._do(state, inst)
        for inst in body:
            self._print_step(inst)
            started, before, self._hit = time.monotonic(), state, False
            state = self._do(state, inst)
            self._note(inst, before, state, started)
        self.stages[str(index)] = state
        name = _stage_name(frm)
        if name:
            self.stages[name] = state
        return state

    def _note(self, inst: df.Instruction, before: State | None, after: State,
              started: float) -> None:
        """Log what one instruction made: a layer (its diff_id and size) or only a config
        change, from the cache or not, and how long it took. ``cached`` is None for FROM."""
        layer = None
        if before is not None and len(after.layers) > len(before.layers):
            diff_id = after.layers[-1][2]
            layer = {"diff_id": diff_id,
                     "size": (self.store.layer_info(diff_id) or {}).get("size", 0)}
        self.log.append({"step": self.step, "instruction": inst.original, "cmd": inst.cmd,
                         "cached": None if before is None else self._hit,
                         "seconds": time.monotonic() - started, "image": after.id,
                         "layer": layer, "config": _copy.deepcopy(after.run)})

    def _base_state(self, ref: str) -> State:
        if ref.lower() in self.stages:
            return _copy.deepcopy(self.stages[ref.lower()])
        try:
            image = self.store.use(ref)
        except StoreError:
            pass
        else:
            from .reference import ReferenceError, parse

            try:
                tag = str(parse(ref))
            except ReferenceError:
                tag = ""
            if tag in image.tags:  # a replay checks that the tag still names this image
                self.record.bases.append([tag, image.id])
            else:  # (an ID or a digest: not replayed)
                self.record.usable = False
            return state_of(image)
        from . import shared  # (a classroom's shared base images: copied in, said in a line)

        self.record.usable = False  # (what a warm build says about a base differs)

        try:
            if shared.take(self.store, ref, say=self.say) is not None:
                return state_of(self.store.use(ref))
        except StoreError as exc:
            raise BuildError(str(exc)) from None
        raise BuildError(f"pull access denied for {ref}: no such image here, and edu "
                         "pulls only with edu pull. 'edu images' lists what is here; "
                         "'edu pull' or 'edu bootstrap' adds it")

    def _env(self, state: State) -> dict[str, str]:
        """The environment for substitution: the image's Env, then the stage's build args
        (an ENV of the same name wins over an ARG)."""
        env = {k: v for k, v in self.args.items() if v is not None}
        for item in state.run.get("Env") or []:
            key, _, value = item.partition("=")
            env[key] = value
        return env

    def _do(self, state: State, inst: df.Instruction) -> State:
        if inst.cmd == "RUN" and "mount" in inst.flags:
            raise BuildError(f"Dockerfile:{inst.line}: RUN --mount needs BuildKit, which "
                             "Docker 20.10's classic builder (and edu) does not have")
        if inst.cmd in ("COPY", "ADD") and "chmod" in inst.flags:
            raise BuildError(f"Dockerfile:{inst.line}: {inst.cmd} --chmod needs BuildKit, "
                             "which Docker 20.10's classic builder (and edu) does not have")
        try:
            inst = df.expand_instruction(inst, self._env(state))
        except df.DockerfileError as exc:
            raise BuildError(str(exc)) from None
        handler = getattr(self, f"_do_{inst.cmd.lower()}")
        try:
            return handler(state, inst)
        except df.DockerfileError as exc:  # a value refused once substituted (EXPOSE abc)
            raise BuildError(str(df.DockerfileError(exc.message, exc.line or inst.line))
                             ) from None

    # ---- the cache -----------------------------------------------------------------------

    def _cached(self, key: str) -> tuple[State, str] | None:
        """The step's cached result and the sha256 of its entry's bytes, or None."""
        if self.opts.no_cache:
            return None
        path = self.store.root / "build-cache" / f"{key}.json"
        with self.store.lock():  # found and held in one go: GC cannot come in between
            try:
                data = path.read_bytes()
                entry = json.loads(data)
            except (OSError, ValueError):
                return None
            with contextlib.suppress(OSError):
                os.utime(path)  # used now: the last the trim drops (trim_cache)
            state = State(entry["config"], [tuple(x) for x in entry["layers"]])
            if not self.store.hold([b for b, _, _ in state.layers],
                                   [d for _, _, d in state.layers]):
                return None  # pruned since: build it again
        return state, hashlib.sha256(data).hexdigest()

    def _remember(self, key: str, state: State) -> str:
        """Keep a step's result in the cache, and its layers (and their blobs) through
        ``rmi`` with a pin, as a container holds its image's layers. ``edu image prune``
        drops the cache and the pin, under the same lock. The sha256 of the entry's bytes."""
        where = self.store.root / "build-cache"
        layers = {d for _, _, d in state.layers}
        self.remembered.append(key)
        data = json.dumps({"config": state.config,
                           "layers": [list(x) for x in state.layers]}).encode()
        with self.store.lock():
            where.mkdir(exist_ok=True)
            write_atomic(where / f"{key}.json", data)
            try:
                held = set(json.loads((self.store.pins / "build-cache.json").read_text()))
            except (OSError, ValueError):
                held = set()
            if not layers <= held:
                self.store.pin("build-cache", sorted(held | layers))
        return hashlib.sha256(data).hexdigest()

    def _key(self, state: State, *parts: Any) -> str:
        return hashlib.sha256(json.dumps([CACHE_VERSION, state.id, *parts], sort_keys=True)
                              .encode()).hexdigest()

    def _step(self, state: State, key_parts: list[Any], make) -> State:
        """One step through the cache: reuse a result, or ``make()`` it and remember it."""
        key = self._key(state, *key_parts)
        cached = self._cached(key)
        if cached is not None:
            hit, entry_hash = cached
            self._hit = True
            self._note_step(key, entry_hash, hit)
            self.say(" ---> Using cache")
            self.say(f" ---> {_short(hit.id)}")
            return hit
        self._making = True  # (what it prints is not what the next, warm, build prints)
        try:
            new = make()
            _docker_defaults(new.run)  # as in the image it may end: the last ---> is its ID
            entry_hash = self._remember(key, new)
            self.say(f" ---> {_short(new.id)}")
        finally:
            self._making = False
        self._note_step(key, entry_hash, new)
        self.record.lines += [" ---> Using cache", f" ---> {_short(new.id)}"]
        return new

    def _note_step(self, key: str, entry_hash: str, state: State) -> None:
        """Put a step's cache entry in the record: a replay checks it is still there."""
        self.record.steps.append([key, entry_hash, [b for b, _, _ in state.layers],
                                  [d for _, _, d in state.layers]])

    # ---- config-only instructions --------------------------------------------------------

    def _commit_config(self, state: State, inst: df.Instruction, change) -> State:
        """A step that changes only the config: an empty-layer history entry."""
        def make() -> State:
            new = _copy.deepcopy(state)
            change(new.run)
            _history(new, f"/bin/sh -c #(nop)  {_history_text(inst)}", empty=True)
            return new
        return self._step(state, [inst.cmd, inst.args, inst.pairs, inst.flags, inst.json,
                                  _args_env(self.args)], make)

    def _do_env(self, state: State, inst: df.Instruction) -> State:
        def change(run):
            run["Env"] = _set_env(run.get("Env") or [], inst.pairs)
        return self._commit_config(state, inst, change)

    def _do_label(self, state: State, inst: df.Instruction) -> State:
        def change(run):
            run["Labels"] = {**(run.get("Labels") or {}), **{k: v or "" for k, v in inst.pairs}}
        return self._commit_config(state, inst, change)

    def _do_maintainer(self, state: State, inst: df.Instruction) -> State:
        new = self._commit_config(state, inst, lambda run: None)
        new.config["author"] = " ".join(inst.args)
        return new

    def _do_arg(self, state: State, inst: df.Instruction) -> State:
        for key, default in inst.pairs:
            if key in self.opts.build_args:
                value = self.opts.build_args[key]
                self.used_args.add(key)
            elif default is None and key in self.meta_args:
                value = self.meta_args[key]  # an ARG before FROM, brought into the stage
            else:
                value = default
            self.args[key] = value
        return self._commit_config(state, inst, lambda run: None)

    def _do_cmd(self, state: State, inst: df.Instruction) -> State:
        argv = self._command(state, inst)
        self.cmd_set = True
        return self._commit_config(state, inst, lambda run: run.__setitem__("Cmd", argv))

    def _do_entrypoint(self, state: State, inst: df.Instruction) -> State:
        argv = self._command(state, inst)

        def change(run):
            run["Entrypoint"] = argv if argv else None
            if not self.cmd_set:  # a base image's CMD does not outlive a new ENTRYPOINT
                run["Cmd"] = None
        return self._commit_config(state, inst, change)

    def _command(self, state: State, inst: df.Instruction) -> list[str]:
        if inst.json:
            return list(inst.args)
        shell = state.run.get("Shell") or DEFAULT_SHELL
        return [*shell, inst.args[0]] if inst.args else []

    def _do_expose(self, state: State, inst: df.Instruction) -> State:
        ports = df.expose_ports(inst.args) if hasattr(df, "expose_ports") else \
            [p if "/" in p else f"{p}/tcp" for p in inst.args]
        return self._commit_config(state, inst, lambda run: run.__setitem__(
            "ExposedPorts", {**(run.get("ExposedPorts") or {}), **{p: {} for p in ports}}))

    def _do_user(self, state: State, inst: df.Instruction) -> State:
        return self._commit_config(state, inst, lambda run: run.__setitem__("User",
                                                                            inst.args[0]))

    def _do_volume(self, state: State, inst: df.Instruction) -> State:
        vols = [v for v in inst.args if v.strip()]
        if not vols:
            raise BuildError(f"Dockerfile:{inst.line}: VOLUME specified can not be an empty "
                             "string")
        return self._commit_config(state, inst, lambda run: run.__setitem__(
            "Volumes", {**(run.get("Volumes") or {}), **{v: {} for v in vols}}))

    def _do_stopsignal(self, state: State, inst: df.Instruction) -> State:
        return self._commit_config(state, inst, lambda run: run.__setitem__("StopSignal",
                                                                            inst.args[0]))

    def _do_shell(self, state: State, inst: df.Instruction) -> State:
        return self._commit_config(state, inst, lambda run: run.__setitem__("Shell",
                                                                            list(inst.args)))

    def _do_healthcheck(self, state: State, inst: df.Instruction) -> State:
        try:
            check = df.healthcheck(inst)
        except df.DockerfileError as exc:
            raise BuildError(str(exc)) from None
        return self._commit_config(state, inst, lambda run: run.__setitem__(
            "Healthcheck", df.merge_healthcheck(check, run.get("Healthcheck"))))

    def _do_onbuild(self, state: State, inst: df.Instruction) -> State:
        trigger = inst.original.split(None, 1)[1] if " " in inst.original.strip() else ""
        return self._commit_config(state, inst, lambda run: run.__setitem__(
            "OnBuild", [*(run.get("OnBuild") or []), trigger.strip()]))

    # ---- instructions that make layers ---------------------------------------------------

    def _do_workdir(self, state: State, inst: df.Instruction) -> State:
        path = inst.args[0]
        if not path.startswith("/"):
            path = os.path.join(state.run.get("WorkingDir") or "/", path)
        path = os.path.normpath(path)
        path = "/" + path.lstrip("/")

        def make() -> State:
            new = _copy.deepcopy(state)
            new.run["WorkingDir"] = path
            layer = self._layer_from_copy(state, lambda root: os.close(_open_dir(root, path)))
            _add_layer(new, layer, f"/bin/sh -c #(nop) WORKDIR {path}")
            return new
        return self._step(state, ["WORKDIR", path], make)

    def _do_run(self, state: State, inst: df.Instruction) -> State:
        argv = self._command(state, inst)
        args_env = _args_env(self.args)

        def make() -> State:
            new = _copy.deepcopy(state)
            layer = self._run_container(state, argv, args_env)
            prefix = f"|{len(args_env)} {' '.join(args_env)} " if args_env else ""
            _add_layer(new, layer, prefix + " ".join(argv))
            return new
        return self._step(state, ["RUN", argv, args_env], make)

    def _do_copy(self, state: State, inst: df.Instruction) -> State:
        return self._copy_step(state, inst, add=False)

    def _do_add(self, state: State, inst: df.Instruction) -> State:
        return self._copy_step(state, inst, add=True)

    def _copy_step(self, state: State, inst: df.Instruction, add: bool) -> State:
        from . import context as ctx_mod

        *srcs, dest = inst.args
        if not srcs:
            raise BuildError(f"Dockerfile:{inst.line}: {inst.cmd} requires at least two "
                             "arguments: the source(s) and the destination")
        slash = dest.endswith("/") or dest in (".", "..") or dest.endswith(("/.", "/.."))
        dest = os.path.normpath(os.path.join(state.run.get("WorkingDir") or "/", dest))
        dest = "/" + dest.lstrip("/") + ("/" if slash and dest != "/" else "")
        owner = self._owner(state, inst.flags.get("chown"), inst) if inst.flags.get("chown") \
            else None
        if owner not in (None, (0, 0)) and _rootless():
            self.say(f"[WARNING]: {inst.cmd} --chown={inst.flags['chown']}: a rootless build "
                     "maps only your own user (as root), so these files stay root's, not "
                     f"{owner[0]}:{owner[1]}'s; build as root to give them that owner")
            owner = (0, 0)
        source = inst.flags.get("from")
        if add and any("://" in s for s in srcs):
            raise BuildError(f"Dockerfile:{inst.line}: ADD from a URL is not supported here "
                             "(there is no internet): download the file into the context and "
                             "ADD or COPY it")
        if source:
            return self._copy_from(state, inst, source, srcs, dest, owner)
        try:
            entries = ctx_mod.list_context(self.opts.context, self.dockerfile_rel)
            found = ctx_mod.resolve_sources(self.opts.context, srcs, instruction=inst.cmd,
                                            entries=entries)
        except ctx_mod.ContextError as exc:
            raise BuildError(f"Dockerfile:{inst.line}: {exc}") from None
        digest = ctx_mod.sources_digest(found, entries, add)
        self.record.sources.append([srcs, inst.cmd, self.dockerfile_rel, add, digest])
        many = len(found) > 1 or any(ctx_mod.has_wildcards(s) for s in srcs)

        def make() -> State:
            new = _copy.deepcopy(state)

            def fill(root: int) -> None:
                for src in found:
                    if src.is_dir:
                        _copy_context_dir(root, self.opts.context, src.rel, entries, dest,
                                          owner)
                    elif add and _is_archive(src.path):
                        _extract_into(self.store, root, src.path, dest)
                    else:
                        fd = os.open(src.path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
                        try:
                            _copy_one(root, fd, src.name, dest, many, owner)
                        finally:
                            os.close(fd)
            layer = self._layer_from_copy(state, fill)
            kind = "dir" if len(found) == 1 and found[0].is_dir else "file"
            _add_layer(new, layer, f"/bin/sh -c #(nop) {inst.cmd} {kind}:"
                                   f"{digest.split(':')[1]} in {dest} ")
            return new
        return self._step(state, [inst.cmd, srcs, dest, digest, owner], make)

    def _copy_from(self, state, inst, source, srcs, dest, owner) -> State:
        from edu_runtime import safepath as cp

        src_state = self._base_state(source) if not source.isdigit() else \
            self.stages.get(source)
        if src_state is None:
            raise BuildError(f"Dockerfile:{inst.line}: COPY --from={source}: no stage or "
                             "image of that name")
        many = len(srcs) > 1

        def make() -> State:
            new = _copy.deepcopy(state)

            def fill(root: int) -> None:
                with _image_root(self.store, src_state) as src_root:
                    for s in srcs:
                        try:
                            fd = cp.open_in_root(src_root, s, follow=True)
                        except FileNotFoundError:
                            raise BuildError(f"Dockerfile:{inst.line}: COPY --from={source} "
                                             f"failed: {s}: no such file or directory in "
                                             f"that {'stage' if source in self.stages else 'image'}"
                                             ) from None
                        try:
                            _copy_one(root, fd, os.path.basename(s.rstrip("/")) or "/",
                                      dest, many, owner)
                        finally:
                            os.close(fd)
            layer = self._layer_from_copy(state, fill)
            _add_layer(new, layer, f"/bin/sh -c #(nop) COPY from {source} {srcs} in {dest} ")
            return new
        return self._step(state, ["COPY --from", src_state.id, srcs, dest, owner], make)

    def _owner(self, state: State, spec: str, inst: df.Instruction) -> tuple[int, int]:
        user, _, group = spec.partition(":")
        passwd = self._read_in_image(state, "/etc/passwd")
        groups = self._read_in_image(state, "/etc/group")

        def lookup(name: str, table: str, what: str) -> int:
            if name.isdigit():
                return int(name)
            for line in table.splitlines():
                fields = line.split(":")
                if fields[0] == name and len(fields) > 2:
                    return int(fields[2])
            raise BuildError(f"Dockerfile:{inst.line}: unable to convert {what} '{name}' to "
                             f"an id: no such {what} in the image's /etc/{table_name[what]}")
        table_name = {"user": "passwd", "group": "group"}
        uid = lookup(user, passwd, "user")
        if group:
            gid = lookup(group, groups, "group")
        elif user.isdigit():
            gid = uid
        else:
            gid = next((int(f[3]) for f in (ln.split(":") for ln in passwd.splitlines())
                        if f[0] == user and len(f) > 3), uid)
        return uid, gid

    def _read_in_image(self, state: State, path: str) -> str:
        from edu_runtime import safepath as cp

        if not state.layers:
            return ""

        def read() -> str:
            with _image_root(self.store, state) as root:
                try:
                    fd = cp.open_in_root(root, path, os.O_RDONLY)
                except OSError:
                    return ""
                with os.fdopen(fd) as f:
                    return f.read()
        return _as_root(read)

    # ---- layers --------------------------------------------------------------------------

    def _layer_from_copy(self, state: State, fill) -> tuple[str, str, str] | None:
        """Mount the image so far with an empty upper dir, ``fill(root_fd)``, and make the
        upper dir a layer (None if it stayed empty)."""
        from edu_runtime import safepath as cp

        with self.store.staging() as stage:
            upper, work, empty = stage / "upper", stage / "work", stage / "empty"
            for d in (upper, work, empty):
                d.mkdir()
            upper.chmod(0o755)
            lower = self.store.lowerdirs(state.image()) or [empty]

            def mount_and_fill() -> None:
                root = cp.mount_overlay(lower, upper, work, write=True)
                try:
                    fill(root)
                finally:
                    os.close(root)
            try:
                _as_root(mount_and_fill)
            except cp.CopyError as exc:
                raise BuildError(str(exc)) from None
            except OSError as exc:
                if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                    raise  # (a full disk: said by the build, as DiskFull)
                where = f" ({exc.filename})" if exc.filename else ""
                raise BuildError(f"copying into the image failed: {exc.strerror or exc}"
                                 f"{where}") from None
            return self._pack(upper, stage)

    def _run_container(self, state: State, argv: list[str], args_env: list[str]
                       ) -> tuple[str, str, str] | None:
        from edu_runtime import kernel
        from edu_runtime.container import Container
        from edu_runtime.life.control import remove_dir
        from edu_runtime.steps import StepError

        env = dict(item.partition("=")[::2] for item in args_env)
        devnull = os.open(os.devnull, os.O_RDONLY)
        sys.stdout.flush()
        # The image's VOLUMEs are mounted as anonymous volumes, as docker run does: what a
        # RUN writes there is not in the layer (the classic builder drops it too).
        # (Docker takes a relative one, such as VOLUME a ["b"]'s "[b]", from the root.)
        volumes = sorted("/" + v.lstrip("/") for v in state.run.get("Volumes") or {})
        lent = self._lend(state)
        # Made here, the container's record says remove while it runs: if this build is
        # SIGKILLed, the next edu command removes it (life.control.cleanup_stale), as a
        # killed `edu run --rm`'s. Its upper dir must outlive its exit, though (it is the
        # layer): so it is kept when it exits, and moved at once into this build's staging
        # dir, which the store deletes once this process is gone (Store.clean_staging).
        here = kernel.single_threaded()
        try:
            c = Container(lent or state.image(), argv, entrypoint=[], env=env, store=self.store,
                          network=self.opts.network, remove=here, volumes=volumes,
                          fork_here=here,
                          stdio=(devnull, self.out.fileno() if hasattr(self.out, "fileno")
                                 else 1, 2))
        except StepError as exc:
            self._unlend(lent)
            raise BuildError(str(exc)) from None
        c.tied = not here  # a helper makes it: it goes if this process dies (life/remote)
        self.say(f" ---> Running in {c.id[:12]}")
        try:
            try:
                c.start()
                c.config.remove = False  # (the record on disk keeps saying remove)
                code = c.wait()
            except StepError as exc:
                raise BuildError(f"The command '{' '.join(argv)}' could not start: "
                                 f"{exc.message}", exc.exit_code) from None
            with self.store.staging() as stage:
                try:
                    upper = c.paths.upper
                    with contextlib.suppress(OSError):  # (another file system: in place)
                        os.rename(upper, stage / "upper")
                        upper = stage / "upper"
                        remove_dir(c.paths.dir)
                    if code != 0:
                        raise BuildError(f"The command '{' '.join(argv)}' returned a non-zero "
                                         f"code: {code}", code)
                    layer = self._pack(upper, stage)
                finally:
                    remove_dir(stage / "upper")  # (its dirs may be mode 000: see remove_dir)
        finally:
            from edu_runtime import volumes as volumes_mod

            os.close(devnull)
            volumes_mod.remove_anonymous(c.config.volumes, c.id)
            remove_dir(c.paths.dir)
            self.store.unpin(c.id)
            self._unlend(lent)
            self.say(f"Removing intermediate container {c.id[:12]}")
        return layer

    def _lend(self, state: State) -> Image | None:
        """The image so far, put in the store (untagged) for a RUN whose container a helper
        makes; None when this process forks it itself, or the store has it already.

        A threaded process (a Jupyter kernel building from a notebook) never forks: the
        supervisor makes its containers, from a spec naming the image, which it looks up in
        the store. The image so far lives only in this build until then, so it is added for
        the length of the RUN (Docker's classic builder keeps such an intermediate image
        for every step) and removed after it; its layers stay held by the build's lease."""
        from edu_runtime import kernel

        if kernel.single_threaded():
            return None
        try:
            self.store.get(state.id)
            return None  # an image of its own already (tagged or not): not ours to remove
        except StoreError:
            pass
        return self.store.add_image(canonical_json(state.config),
                                    [(b, m) for b, m, _ in state.layers])

    def _unlend(self, lent: Image | None) -> None:
        """Remove the image ``_lend`` added, unless someone has tagged it since."""
        if lent is not None:
            with contextlib.suppress(StoreError):
                if not self.store.get(lent.id).tags:
                    self.store.remove(lent.id)

    def _pack(self, upper: Path, stage: Path) -> tuple[str, str, str] | None:
        from . import layers

        blob = stage / "layer.tar.gz"

        def write() -> layers.PackStats:
            with open(blob, "wb") as out:
                return layers.pack(upper, out, upper=True, compress=True, level=1)
        # Rootless, the upper dir's files are ours, which is root inside the namespace: read
        # there, they are root's in the layer (as a rootful build would have them).
        stats = _as_root(write)
        if stats.members == 0:
            return None  # nothing changed: Docker adds no layer either
        digest = self.store.put_blob_file(blob, stats.digest)
        self.store.ensure_layer(digest, stats.diff_id)
        return digest, LAYER_MEDIA, stats.diff_id

    # ---- the end -------------------------------------------------------------------------

    def _finish(self, state: State) -> Image:
        _docker_defaults(state.run)
        config = canonical_json(state.config)
        blobs = [(b, m) for b, m, _ in state.layers]
        from .reference import parse

        image = self.store.add_image(config, blobs, tags=self.opts.tags)
        self.say(f"Successfully built {image.short_id}")
        for tag in self.opts.tags:
            self.say(f"Successfully tagged {parse(tag).familiar()}")
        return image


# ---- helpers --------------------------------------------------------------------------------

def _set_env(env: list[str], pairs) -> list[str]:
    """Docker's ENV: a variable already there keeps its place, a new one goes last."""
    out = list(env)
    for key, value in pairs:
        item = f"{key}={value}"
        at = next((i for i, e in enumerate(out) if e.partition("=")[0] == key), None)
        if at is None:
            out.append(item)
        else:
            out[at] = item
    return out


def _docker_defaults(run: dict[str, Any]) -> None:
    """The container-config fields Docker always writes (Go's zero values), so that an
    image built here inspects like one docker build made."""
    for key, zero in (("Hostname", ""), ("Domainname", ""), ("User", ""),
                      ("AttachStdin", False), ("AttachStdout", False),
                      ("AttachStderr", False), ("Tty", False), ("OpenStdin", False),
                      ("StdinOnce", False), ("Env", None), ("Cmd", None), ("Image", ""),
                      ("Volumes", None), ("WorkingDir", ""), ("Entrypoint", None),
                      ("OnBuild", None), ("Labels", None)):
        run.setdefault(key, zero)


def _split_stages(instructions):
    meta, stages = [], []
    for inst in instructions:
        if inst.cmd == "FROM":
            stages.append((inst, []))
        elif not stages:
            meta.append(inst)
        else:
            stages[-1][1].append(inst)
    return meta, stages


def _stage_name(frm: df.Instruction) -> str:
    args = frm.args
    if len(args) == 3 and args[1].lower() == "as":
        return args[2].lower()
    return ""


def _short(image_id: str) -> str:
    return image_id.split(":", 1)[-1][:12]


def _args_env(args: dict[str, str | None]) -> list[str]:
    """The build args a RUN sees, as KEY=VALUE, sorted (Docker's cache key has them too)."""
    return sorted(f"{k}={v}" for k, v in args.items() if v is not None)


def _history_text(inst: df.Instruction) -> str:
    if inst.cmd in ("ENV", "LABEL"):
        return f"{inst.cmd} " + " ".join(f"{k}={v}" for k, v in inst.pairs)
    if inst.cmd == "ARG":
        return "ARG " + " ".join(k if v is None else f"{k}={v}" for k, v in inst.pairs)
    if inst.json:
        return f"{inst.cmd} {json.dumps(inst.args)}"
    return f"{inst.cmd} {' '.join(inst.args)}"


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _history(state: State, created_by: str, empty: bool) -> None:
    entry: dict[str, Any] = {"created": _now(), "created_by": created_by}
    if empty:
        entry["empty_layer"] = True
    state.config.setdefault("history", []).append(entry)
    state.config["created"] = entry["created"]


def _add_layer(state: State, layer, created_by: str) -> None:
    if layer is None:
        _history(state, created_by, empty=True)
        return
    state.layers.append(layer)
    state.config.setdefault("rootfs", {"type": "layers", "diff_ids": []})
    state.config["rootfs"]["diff_ids"] = [d for _, _, d in state.layers]
    _history(state, created_by, empty=False)


def _rootless() -> bool:
    from edu_runtime import kernel

    return kernel.rootless()


def _as_root(fn):
    """``fn()`` where the build may mount and own files: here as root, else in a user
    namespace of our own where we are root (``kernel.in_user_namespace``)."""
    from edu_runtime import kernel

    return kernel.in_user_namespace(fn) if _rootless() else fn()


@contextlib.contextmanager
def _image_root(store: Store, state: State) -> Iterator[int]:
    """An O_PATH fd of an image's merged files (a detached overlay of its layers)."""
    from edu_runtime import safepath as cp

    dirs = store.lowerdirs(state.image())
    if not dirs:
        raise BuildError("the image has no layers (FROM scratch): nothing to copy from")
    fd = cp.mount_overlay(dirs, write=False)
    try:
        yield fd
    finally:
        os.close(fd)


def _copy_one(root: int, src: int, name: str, dest: str, many: bool, owner) -> None:
    """Docker's COPY rules for one source ``src`` (an O_PATH fd) called ``name``: a
    directory's contents go into ``dest``; a file goes into ``dest`` if that ends in / (or
    is a directory, or there are several sources), else it becomes ``dest``."""
    from edu_runtime import safepath as cp

    st = os.fstat(src)
    if stat.S_ISDIR(st.st_mode):
        made = _open_dir(root, dest, owner)
        try:
            reader = cp.reopen(src, os.O_RDONLY | os.O_DIRECTORY)
            try:
                cp.copy_tree(reader, made, owners=False, owner=owner or (0, 0))
            finally:
                os.close(reader)
            cp.set_metadata(made, st, owner=owner)
        finally:
            os.close(made)
        return
    into_dir = dest.endswith("/") or many
    if not into_dir:
        try:
            fd = cp.open_in_root(root, dest)
            into_dir = stat.S_ISDIR(os.fstat(fd).st_mode)
            os.close(fd)
        except FileNotFoundError:
            pass
    if into_dir:
        parent_path = dest
    else:
        parent_path = os.path.dirname(dest.rstrip("/")) or "/"
        name = os.path.basename(dest.rstrip("/"))
    dirfd = _open_dir(root, parent_path, owner)
    try:
        cp.copy_entry(src, dirfd, name, owner=owner or (0, 0))
    finally:
        os.close(dirfd)


def _open_dir(root: int, path: str, owner=None) -> int:
    """``mkdir -p`` a directory inside the image (what it makes is owned by ``owner``, else
    root, as COPY --chown does), then a readable fd of it."""
    from edu_runtime import safepath as cp

    target = cp.ensure_in_root(root, path, owner=owner or (0, 0))
    try:
        return cp.reopen(target, os.O_RDONLY | os.O_DIRECTORY)
    finally:
        os.close(target)


def _copy_context_dir(root: int, context: Path, rel: str, entries, dest: str, owner) -> None:
    """A directory of the context: its contents (what .dockerignore left) into ``dest``."""
    from edu_runtime import safepath as cp

    prefix = f"{rel}/" if rel else ""
    top = entries.get(rel) if rel else None
    made = _open_dir(root, dest, owner)
    dirs: list[tuple[str, str]] = []  # (destination, context path) to date afterwards
    try:
        for entry_rel, entry in entries.items():
            if not entry_rel.startswith(prefix) or entry_rel == rel:
                continue
            sub = entry_rel[len(prefix):]
            parent = _open_dir(root, os.path.join(dest, os.path.dirname(sub)), owner)
            try:
                name = os.path.basename(sub)
                if entry.kind == "dir":
                    try:
                        os.mkdir(name, 0o755, dir_fd=parent)
                    except FileExistsError:
                        pass
                    fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
                                 | os.O_CLOEXEC, dir_fd=parent)
                    try:
                        os.fchown(fd, *(owner or (0, 0)))
                        os.fchmod(fd, entry.mode if not entry.implicit else 0o755)
                    finally:
                        os.close(fd)
                    if not entry.implicit:
                        dirs.append((os.path.join(dest, sub), str(context / entry_rel)))
                else:
                    src = os.open(context / entry_rel, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
                    try:
                        cp.copy_entry(src, parent, name, owner=owner or (0, 0))
                    finally:
                        os.close(src)
            finally:
                os.close(parent)
        if top is not None:
            os.fchmod(made, top.mode)
        os.fchown(made, *(owner or (0, 0)))
        # Directories keep their context times (written into, they changed): deepest first.
        for where, source in sorted(dirs, key=lambda d: -d[0].count("/")):
            fd = _open_dir(root, where)
            try:
                st = os.stat(source, follow_symlinks=False)
                os.utime(fd, ns=(st.st_atime_ns, st.st_mtime_ns))
            finally:
                os.close(fd)
        if top is not None:
            st = os.stat(context / rel, follow_symlinks=False)
            os.utime(made, ns=(st.st_atime_ns, st.st_mtime_ns))
    finally:
        os.close(made)


def _is_archive(path: str) -> bool:
    import tarfile

    return os.path.isfile(path) and tarfile.is_tarfile(path)


def _extract_into(store: Store, root: int, path: Path, dest: str) -> None:
    """ADD of a local tar (plain, gzip, bzip2 or xz): its contents, owners kept, unpacked
    into the directory ``dest``. Unpacked first into a private directory by the layer
    extractor (which refuses .. and absolute names), then copied in."""
    import tarfile

    from edu_runtime import safepath as cp

    rootless = _rootless()
    # Python 3.12+ (and 3.11.4+) filter members; the classic builder keeps everything (our
    # checks below refuse what escapes). Older 3.11s, such as Debian 12's, have no filters.
    trusted = {"filter": "fully_trusted"} if hasattr(tarfile, "fully_trusted_filter") else {}
    with store.staging() as stage, tarfile.open(path) as tar:
        unpacked = stage / "add"
        unpacked.mkdir()
        for member in tar:
            _check_member(member.name, path)
            if member.islnk():  # a hard link names a member, which must be inside too
                _check_member(member.linkname, path)
            if rootless:  # only root exists; tarfile would skip mode and times with the owner
                member = _copy.copy(member)
                member.uid = member.gid = 0
                member.uname = member.gname = ""
            tar.extract(member, unpacked, set_attrs=True, numeric_owner=True, **trusted)
        made = _open_dir(root, dest)
        reader = os.open(unpacked, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            cp.copy_tree(reader, made, owners=True)
        finally:
            os.close(reader)
            os.close(made)


def _check_member(name: str, archive: Path) -> None:
    parts = name.split("/")
    if name.startswith("/") or ".." in parts:
        raise BuildError(f"ADD {archive.name}: the archive holds {name!r}, a path outside the "
                         "directory it unpacks into; refusing to unpack it")


# ---- edu commit ----------------------------------------------------------------------------

#: What ``edu commit --change`` may set, as ``docker commit --change`` allows.
COMMIT_CHANGES = ("CMD", "ENTRYPOINT", "ENV", "EXPOSE", "LABEL", "ONBUILD", "USER", "VOLUME",
                  "WORKDIR", "STOPSIGNAL")


def commit(record: dict[str, Any], repository: str | None = None, *, message: str = "",
           author: str = "", changes: list[str] = (), pause: bool = True,
           store: Store | None = None) -> Image:
    """``docker commit``: a container's upper dir (its changes) as a new layer on its image,
    with the container's command and environment in the config. A running container is
    frozen while its files are read (``pause``), so the layer is one moment's state."""
    store = store or Store()
    name = record.get("name") or record["id"][:12]
    with store.lease(), no_space_is(f"committing container {name}", store.root):
        return _commit(store, record, repository, message, author, changes, pause)


def _commit(store: Store, record: dict[str, Any], repository: str | None, message: str,
            author: str, changes: list[str], pause: bool) -> Image:
    from edu_runtime import cgroups, paths
    from edu_runtime.life import states

    name = record.get("name") or record["id"][:12]
    try:
        base = store.use(record["image_id"])
    except StoreError:
        raise BuildError(f"the image of container {name} is no longer in the store, so there "
                         "is nothing to put its changes on") from None
    upper = paths.state_dir() / "containers" / record["id"] / "upper"
    if not upper.is_dir():
        raise BuildError(f"container {name} has no upper directory ({upper}): its files are "
                         "gone (was it started with --rm?)")
    state = state_of(base)
    run = state.run
    process = record.get("process") or {}
    argv = list(record.get("command") or [])
    if not run.get("Entrypoint"):
        run["Cmd"] = argv
    run["Env"] = _set_env(run.get("Env") or [], (process.get("env") or {}).items())
    builder = Builder(store, Options(context=Path("/")), out=None)
    builder.opts.quiet = True
    builder.args, builder.cmd_set = {}, True
    for text in changes:
        try:
            inst = df.parse_trigger(text)
        except df.DockerfileError as exc:
            raise BuildError(f"invalid --change {text!r}: {exc}") from None
        if inst.cmd not in COMMIT_CHANGES:
            raise BuildError(f"{inst.cmd} is not a valid change command: use one of "
                             + ", ".join(COMMIT_CHANGES))
        inst = df.expand_instruction(inst, builder._env(state))
        if inst.cmd == "WORKDIR":
            state.run["WorkingDir"] = os.path.normpath(
                os.path.join(state.run.get("WorkingDir") or "/", inst.args[0]))
        else:
            state = builder._do(state, inst)
    frozen = False
    cg = None
    if pause and record.get("status") == states.RUNNING:
        try:
            cg = cgroups.driver().open(record["id"])
            cg.freeze()
            frozen = True
        except cgroups.CgroupError:
            frozen = False
    try:
        with store.staging() as stage:
            layer = builder._pack(upper, stage)
    finally:
        if frozen and cg is not None:
            cg.thaw()
    if layer is not None:
        state.layers.append(layer)
        state.config["rootfs"]["diff_ids"] = [d for _, _, d in state.layers]
    entry: dict[str, Any] = {"created": _now(), "created_by": " ".join(argv)}
    if message:
        entry["comment"] = message
    if author:
        entry["author"] = author
        state.config["author"] = author
    if layer is None:
        entry["empty_layer"] = True
    state.config.setdefault("history", []).append(entry)
    state.config["created"] = entry["created"]
    tags = [repository] if repository else []
    return store.add_image(canonical_json(state.config), [(b, m) for b, m, _ in state.layers],
                           tags=tags)


def forget(store: Store, keys: list[str]) -> int:
    """Drop these build-cache entries (a ``Builder.remembered``): builds made only to be
    measured give their cache back, as ``docker builder prune`` would, without dropping
    anyone else's. Their layers stay held only while another entry or an image uses them;
    the store's next collection (``rmi``, ``image prune``) frees the rest. The warm-build
    records (warm.py) that name a dropped entry go too. How many entries were dropped."""
    where = store.root / "build-cache"
    dropped = 0
    with store.lock():
        for key in keys:
            try:
                (where / f"{key}.json").unlink()
                dropped += 1
            except FileNotFoundError:
                pass
        for record in where.glob("warm-*.json"):
            with contextlib.suppress(OSError, ValueError, TypeError, KeyError, IndexError):
                if set(keys) & {step[0] for step in json.loads(record.read_text())["steps"]}:
                    record.unlink()
        held: set[str] = set()
        for entry in where.glob("*.json") if where.is_dir() else []:
            try:
                held |= {layer[2] for layer in json.loads(entry.read_text())["layers"]}
            except (OSError, ValueError, KeyError, IndexError):
                continue
        held = {d for d in held if store.layer_info(d) is not None}
        if held:
            store.pin("build-cache", sorted(held))
        else:
            store.unpin("build-cache")
    return dropped


#: The setting that bounds the build cache, and how often a build checks it.
CACHE_MAX_ENV = "EDU_BUILD_CACHE_MAX"
TRIM_EVERY = 600.0  # seconds


def cache_limit(store: Store) -> int:
    """The most bytes of layers only the build cache may hold: ``$EDU_BUILD_CACHE_MAX``, else
    a tenth of the filesystem that holds the store (BuildKit's default keep-storage)."""
    from .layers import LayerError, env_size

    disk = os.statvfs(store.root)
    try:
        return env_size(CACHE_MAX_ENV, disk.f_blocks * disk.f_frsize // 10)
    except LayerError as exc:
        raise BuildError(str(exc)) from None


def _trim_due(store: Store) -> bool:
    """True at most once per TRIM_EVERY seconds per store (a stamp in the cache's dir)."""
    stamp = store.root / "build-cache" / ".trimmed"
    try:
        if time.time() - stamp.stat().st_mtime < TRIM_EVERY:
            return False
    except FileNotFoundError:
        pass
    with contextlib.suppress(OSError):
        stamp.touch()
    return True


def trim_cache(store: Store, keep: int) -> dict[str, int]:
    """Drop the least recently used build-cache entries (a hit uses one) until the entries
    and the layers that only the cache holds, no image, take at most ``keep`` bytes; the
    store then collects those layers. ``{"entries": dropped, "bytes": freed, "kept": left}``
    (a layer a container or a running build also holds stays until it lets go)."""
    where = store.root / "build-cache"
    with store.lock():
        in_images = {d for image in store.images() for d in image.diff_ids}
        entries, users, size = [], {}, {}
        for path in where.glob("*.json") if where.is_dir() else []:
            if path.name.startswith("warm-"):
                continue
            try:
                layers = {x[2] for x in json.loads(path.read_bytes())["layers"]}
                info = path.stat()
            except (OSError, ValueError, KeyError, IndexError, TypeError):
                continue
            layers -= in_images
            entries.append((info.st_mtime, path.stem, layers, info.st_size))
            for d in layers:
                users[d] = users.get(d, 0) + 1
                if d not in size:
                    size[d] = (store.layer_info(d) or {}).get("size", 0)
        held = sum(size.values()) + sum(e[3] for e in entries)
        before, drop = held, []
        for _, key, layers, own in sorted(entries):
            if held <= keep:
                break
            drop.append(key)
            held -= own
            for d in layers:
                users[d] -= 1
                if not users[d]:
                    held -= size[d]
        if drop:
            forget(store, drop)
            store.collect()
    return {"entries": len(drop), "bytes": before - held, "kept": held}


def build(store: Store, options: Options, out: TextIO | None = None) -> Image:
    """Build a Dockerfile (see Options); the tagged image."""
    return Builder(store, options, out).build()
