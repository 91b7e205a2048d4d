"""A lesson in the notebook: its live parts (or their replay), what it made, and its reset.

Every lesson starts with one line::

    lesson = Lesson("06-step-by-step")

which says, for this host, which of the lesson's parts run live and which replay, and why.
Then:

- ``lesson.live("compare", measure)`` runs ``measure()`` for real where the host can do the
  part's declared needs (``course``), and returns its value; elsewhere (or with
  ``EDU_REPLAY=1``) it shows the recording's outputs under a "replay of a real run on
  MACHINE, DATE" banner and returns the recorded value. Values are JSON data (a dict, a
  list, text, a number): a Trace goes in as ``trace.to_dict()``.
- ``lesson.stepper("stepper", "busybox", ["sh"], network="bridge")`` is the stepper widget
  over a new container, live, or over the recorded one.
- ``lesson.made(container=..., network=..., volume=..., image=..., guest=...,
  registry=...)`` tells the lesson what to remove on reset (a registry is one started with
  ``images.local_registry.start(NAME)``). It is written down *before* the thing is made (a
  ledger under the state directory), so a reset after a Ctrl-C or a kernel restart still
  finds it.
- ``lesson.reset()`` removes what the lesson made, newest first, and says what it removed.

Introduced in notebooks/00-start-here.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Any

from . import course, replay
from .checks import Said

KINDS = ("container", "network", "volume", "image", "registry", "user")


class Lesson:
    """One lesson's live parts, replays and ledger."""

    def __init__(self, name: str, quiet: bool = False, fresh: bool = True):
        """``fresh``: first remove what an earlier run of the lesson left behind (a run
        interrupted before its reset cell), and say so."""
        self.name = name
        self.info = course.declaration(name)
        self.recording = replay.Recording(name)
        self._modes: dict[str, tuple[str, str]] = {}
        if replay.recording():
            self.recording.begin()
        if not quiet:
            print(self.summary())
        if fresh and not all(self.replaying(p.name) for p in self.info.parts):
            self._clear_leftovers()

    def _clear_leftovers(self) -> None:
        """What an earlier run left (it was interrupted, or its kernel restarted before the
        reset cell) is removed first, and said, so Run All works again from the top."""
        try:
            if not self.ledger():
                return
        except ImportError:  # no engine here: nothing of it can exist here
            return
        said = self.reset()
        if said.removed:  # a ledger whose things had all gone already (a restarted kernel's
            # stepper is undone by the supervisor that held it) left nothing to say
            print("An earlier run of this lesson left things behind, removed first: "
                  + said.split(": ", 1)[1])

    # ---- live or replay ----------------------------------------------------------------

    def mode(self, part: str) -> tuple[str, str]:
        """``("live" | "replay", why)`` for one declared part, on this host."""
        if part not in self._modes:
            needs = self.info.part(part).needs
            if replay.recording():
                self._modes[part] = ("live", "recording")
            elif replay.forced():
                self._modes[part] = ("replay", "EDU_REPLAY=1")
            else:
                verdict = course.can(needs)
                self._modes[part] = ("live", "") if verdict.ok else \
                    ("replay", f"this host cannot: {verdict.why}")
        return self._modes[part]

    def summary(self) -> str:
        """One line per part: live here, or replayed (and why)."""
        lines = [f"Lesson {self.name}: {self.info.title}"]
        for p in self.info.parts:
            how, why = self.mode(p.name)
            lines.append(f"  {how:<6} {p.name:<12} {p.what}" + (f"  ({why})" if why else ""))
        return "\n".join(lines)

    def replaying(self, part: str) -> bool:
        return self.mode(part)[0] == "replay"

    def live(self, part: str, fn, *args, **kwargs) -> Any:
        """Run ``fn(*args, **kwargs)`` for real, or replay what it returned and showed."""
        how, why = self.mode(part)
        if how == "replay":
            return self._replay(part, why)
        if not replay.recording():
            return fn(*args, **kwargs)
        verdict = course.can(self.info.part(part).needs)
        if not verdict.ok:
            raise replay.RecordingError(f"cannot record part {part!r} of {self.name} here: "
                                        f"{verdict.why}")
        with replay.Capture() as cap:
            value = fn(*args, **kwargs)
        self.recording.save(part, value, cap.outputs)
        return value

    def _replay(self, part: str, why: str) -> Any:
        rec = self.recording
        rec.check(check_cells=False)
        print(f"[{rec.banner()}; {why}]")
        replay.show(rec.part(part)["outputs"])
        value = rec.value(part)
        if isinstance(value, dict):
            value = {**value, "replay": rec.banner()}
        return value

    def banner(self, part: str) -> str:
        """The replay banner of a part, or "" when it runs live (for figures' subtitles)."""
        return self.recording.banner() if self.replaying(part) else ""

    # ---- images ------------------------------------------------------------------------

    def image(self, name: str) -> None:
        """Make sure a course base image is in the store (as ``docker run`` pulls a missing
        image, edu builds its own from Debian's packages, with progress, once); a lesson
        that replays every part needs none."""
        if all(self.replaying(p.name) for p in self.info.parts):
            return
        from ..images import shared
        from ..images.bootstrap import bootstrap
        from ..images.store import Store

        store = Store()
        try:
            store.get(name)
        except Exception:  # noqa: BLE001 - not here yet: build it, as docker would pull it
            if shared.take(store, name, say=print) is not None:  # a classroom's shared copy
                return
            print(f"Unable to find image '{name}' locally: building it from Debian's "
                  "packages (once; the store keeps it)")
            bootstrap(store, name, progress=True)

    # ---- the stepper -------------------------------------------------------------------

    def stepper(self, part: str, image: str, command: list[str] | None = None, **options):
        """The stepper widget over a new container of this spec, or over its recording."""
        how, why = self.mode(part)
        if how == "replay":
            self.recording.check(check_cells=False, step_names=self._step_names(part),
                                 exact=False)
            from .stepper import ReplayedStepperView

            return ReplayedStepperView(self.recording.value(part),
                                       f"{self.recording.banner()}; {why}")
        if replay.recording() and part not in self.recording.index.get("parts", {}):
            from .stepper import record_steps  # once per part: a second view is the same

            data = record_steps(image, command, **options)
            self.recording.save(part, data, [], steps=[s["name"] for s in data["plan"]])
        from .stepper import step_through

        view = step_through(image, command, **options)
        self.made(container=view.container.id)
        view.on_open = lambda c: self.made(container=c.id)
        return view

    def _step_names(self, part: str) -> dict[str, list[str]] | None:
        """Every step this engine has, where it imports (a Mac's replay cannot check)."""
        try:
            from ..container import plan
        except ImportError:
            return None
        return {part: [s.name for s in plan()]}

    # ---- what the lesson made, and reset ---------------------------------------------------

    @property
    def ledger_path(self) -> Path:
        from .. import paths

        return paths.state_dir() / "lessons" / f"{self.name}.json"

    def ledger(self) -> list[dict[str, str]]:
        try:
            return json.loads(self.ledger_path.read_text())
        except (FileNotFoundError, ValueError):
            return []

    def made(self, undo: str | None = None, **things: str) -> None:
        """Note what the lesson makes (before making it): ``container=``, ``network=``,
        ``volume=``, ``image=``, ``registry=``, ``user=`` (a throwaway account a rootless
        part made as root: see ``accounts``), or anything else a face makes with the
        ``undo`` that removes it, as ``"module:function"`` (called with the name; true if
        it removed something): vm_compare's guests. The engine never imports its faces, so
        the face names its own undo, and a reset in a new kernel finds it in the ledger."""
        for kind in things:
            if kind not in KINDS and undo is None:
                raise ValueError(f"made(): unknown kind {kind!r}; the kinds are "
                                 f"{', '.join(KINDS)}, or any other with undo=")
        with self._locked():  # two kernels of one lesson must not lose each other's notes
            entries = self.ledger()
            for kind, ref in things.items():
                entry = {"kind": kind, "ref": str(ref), **({"undo": undo} if undo else {})}
                if entry not in entries:
                    entries.append(entry)
            self._write_ledger(entries)

    @contextlib.contextmanager
    def _locked(self):
        import fcntl  # here: a replay on a host without it never needs the ledger

        lock = self.ledger_path.with_suffix(".lock")
        lock.parent.mkdir(parents=True, exist_ok=True)
        with open(lock, "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            yield

    def _write_ledger(self, entries: list[dict[str, str]]) -> None:
        path = self.ledger_path
        if not entries:
            path.unlink(missing_ok=True)
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(entries, indent=1))
        tmp.replace(path)

    def reset(self) -> Said:
        """Remove what this lesson made, newest first; the sentence saying what was removed
        (``.removed`` lists each thing)."""
        try:
            with self._locked():
                return self._reset()
        except ImportError:  # no engine here (not even its paths): a replay made nothing
            return Said(f"Reset {self.name}: nothing to remove, the host is as it was.")

    def _reset(self) -> Said:
        said, kept = [], []
        entries = self.ledger()
        # Containers first (what they use cannot go while they are there), then a face's
        # own things, networks and volumes, images, registries, accounts; newest first
        # within each kind (a compose project notes its containers before its network).
        for entry in sorted(reversed(entries), key=lambda e: _ORDER.get(e["kind"], 1)):
            try:
                what = _remove(entry["kind"], entry["ref"], entry.get("undo"))
            except ImportError:  # no engine here, so nothing of it can exist here
                what = ""
            except Exception as exc:  # noqa: BLE001 - say it, and keep removing the rest
                what = f"could not remove {entry['kind']} {entry['ref'][:12]}: {exc}"
                kept.insert(0, entry)  # the next reset tries again
            if what:
                said.append(what)
        if entries:
            self._write_ledger(kept)
        text = Said(f"Reset {self.name}: " + ("; ".join(said) if said else
                                              "nothing to remove, the host is as it was") + ".",
                    all(not s.startswith("could not") for s in said))
        text.removed = said
        return text


def wait_until(what: str, test, timeout: float = 60) -> float:
    """Poll ``test()`` until it is true (a database healthy, a page answering); the seconds
    it took. After ``timeout`` seconds, an error that says what was awaited."""
    import time

    start = time.monotonic()
    while not test():
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"{what}: still not so after {timeout} s")
        time.sleep(0.05)
    return time.monotonic() - start


def course_plan() -> list[dict[str, str]]:
    """Every lesson's parts, read from the lessons' own declarations, and what each will do
    on this host: ``{"lesson", "part", "what", "how": "live" | "replay", "why"}``."""
    out = []
    for info in course.declarations():
        lesson = Lesson.__new__(Lesson)
        lesson.name, lesson.info, lesson._modes = info.name, info, {}
        for p in info.parts:
            how, why = lesson.mode(p.name)
            out.append({"lesson": info.name, "part": p.name, "what": p.what, "how": how,
                        "why": "" if why == "recording" else why})
    return out


def doctor_report() -> dict[str, Any]:
    """``edu doctor --json`` of this host, as data (a lesson's live part)."""
    report = course._doctor_json()
    if report is None:
        raise RuntimeError("edu doctor could not run here: run `edu doctor` in a terminal "
                           "to see why")
    return report


#: The order reset removes things in, by kind (a face's own kinds: 1).
_ORDER = {"container": 0, "network": 2, "volume": 2, "image": 3, "registry": 4, "user": 5}


def _remove(kind: str, ref: str, undo: str | None = None) -> str:
    """Remove one thing a lesson made; what was removed, or "" when it was already gone."""
    if undo is not None:  # a face's own thing, removed by the face's own function
        import importlib

        module, _, function = undo.partition(":")
        gone = getattr(importlib.import_module(module), function)(ref)
        return f"removed {kind} {ref}" if gone else ""
    if kind == "container":
        from .. import Container

        try:
            c = Container.get(ref)
        except Exception:  # noqa: BLE001 - gone already (removed by --rm, or by hand)
            return ""
        c.remove(force=True, volumes=True)  # docker rm -fv: its anonymous volumes too
        return f"removed container {c.spec.get('name') or ref[:12]}"
    if kind == "network":
        from .. import networks

        try:
            networks.get(ref)
        except Exception:  # noqa: BLE001
            return ""
        networks.rm(ref)
        return f"removed network {ref}"
    if kind == "volume":
        from .. import volumes

        if ref not in {v["Name"] for v in volumes.ls()}:
            return ""
        volumes.rm(ref)
        return f"removed volume {ref}"
    if kind == "image":
        from ..images.store import Store

        store = Store()
        try:
            store.remove(ref)
        except Exception:  # noqa: BLE001 - not there (any more)
            return ""
        return f"untagged image {ref}"
    if kind == "user":
        from . import accounts

        return f"deleted user {ref}" if accounts.remove(ref) else ""
    if kind == "registry":
        from ..images import local_registry

        stopped = local_registry.stop(ref)  # its storage goes too, even if it had died
        return f"stopped registry {ref} on {stopped.address}" if stopped else ""
    raise ValueError(kind)


def running_in_notebook() -> bool:
    return "ipykernel" in sys.modules
