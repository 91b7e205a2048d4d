"""Recordings: a lesson's live parts as they really ran, replayed where a host cannot run them.

``make record LESSON=NAME`` runs a lesson top to bottom for real with ``EDU_RECORD=1``; each
live part (``Lesson.live``, ``Lesson.stepper``) then saves what it returned and what it showed
under ``lessons/recordings/NAME/``, with the machine and the date. Where ``edu doctor`` says a
host cannot do a part (no root and no user namespaces, no qemu, no dockerd, macOS, Binder), or
where ``EDU_REPLAY=1`` forces it, the part replays that recording instead, and every replayed
output says so: "replay of a real run on MACHINE, DATE".

A recording knows what it was made from: the trace schema, the stepper's step names and a
hash of the lesson's code cells. One that no longer matches fails with the command that
refreshes it (``stale``); a replay checks what this host can check (a Mac cannot import the
engine to compare step names), and the tests check all of it.

This module imports nothing Linux-only: replay must work where the engine cannot.

Introduced in notebooks/00-start-here.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

from . import course

SCHEMA = "edu.recording/1"
#: Outputs a replay can show again; a widget's model (its kernel is gone) is not one of them.
KEPT_MIME = ("text/plain", "text/html", "text/markdown", "image/png", "image/svg+xml")
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"


class RecordingError(RuntimeError):
    """A recording is missing or stale; the message ends with the command that refreshes it."""


def refresh_command(lesson: str) -> str:
    return f"make record LESSON={lesson}"


def forced() -> bool:
    """``EDU_REPLAY=1``: replay every part, whatever this host can do."""
    return os.environ.get("EDU_REPLAY", "") not in ("", "0")


def recording() -> bool:
    """``EDU_RECORD=1`` (``make record``): run every part live and save it."""
    return os.environ.get("EDU_RECORD", "") not in ("", "0")


def machine() -> str:
    """This machine, as a replay names it: OS, cores, kernel."""
    name = platform.system()
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                name = line.partition("=")[2].strip('"')
    except OSError:
        pass
    return f"{name}, {os.cpu_count()} cores, {platform.system()} {platform.release()}"


def code_cells(lesson: str) -> list[str]:
    """The lesson's code cells, as the notebook has them."""
    nb = course.read_notebook(lesson)
    return ["".join(c.get("source", "")).strip() for c in nb.get("cells", [])
            if c.get("cell_type") == "code"]


def cells_hash(lesson: str) -> str:
    return hashlib.sha256("\n\x00\n".join(code_cells(lesson)).encode()).hexdigest()[:16]


def trace_schema() -> str | None:
    """The engine's trace schema, where the engine imports (None elsewhere)."""
    try:
        from ..steps import TRACE_SCHEMA
    except ImportError:
        return None
    return TRACE_SCHEMA


class Recording:
    """``lessons/recordings/LESSON/``: ``recording.json`` (what, where, when, each part's
    outputs) and one ``PART.json`` per part with its value."""

    def __init__(self, lesson: str, root: Path | None = None):
        self.lesson = lesson
        self.dir = (root or course.recordings_dir()) / lesson
        self.index_path = self.dir / "recording.json"
        self._index: dict[str, Any] | None = None

    # ---- reading -----------------------------------------------------------------------

    @property
    def index(self) -> dict[str, Any]:
        if self._index is None:
            try:
                self._index = json.loads(self.index_path.read_text())
            except FileNotFoundError:
                raise RecordingError(
                    f"lesson {self.lesson} has no recording to replay ({self.index_path} "
                    f"is missing). Record it on a host that runs it live: "
                    f"{refresh_command(self.lesson)}") from None
            if self._index.get("schema") != SCHEMA:
                raise RecordingError(
                    f"the recording of lesson {self.lesson} has schema "
                    f"{self._index.get('schema')!r}, not {SCHEMA}: refresh it with "
                    f"{refresh_command(self.lesson)}")
        return self._index

    def banner(self) -> str:
        i = self.index
        return f"replay of a real run on {i['machine']}, {i['date']}"

    def part(self, name: str) -> dict[str, Any]:
        parts = self.index.get("parts") or {}
        if name not in parts:
            raise RecordingError(
                f"the recording of lesson {self.lesson} has no part {name!r} (it has "
                f"{', '.join(parts) or 'none'}): refresh it with "
                f"{refresh_command(self.lesson)}")
        return parts[name]

    def value(self, name: str) -> Any:
        meta = self.part(name)
        path = self.dir / meta["file"]
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            raise RecordingError(f"the recording of lesson {self.lesson} lacks {path.name}: "
                                 f"refresh it with {refresh_command(self.lesson)}") from None

    def stale(self, check_cells: bool = True, step_names: dict[str, list[str]] | None = None,
              exact: bool = True) -> list[str]:
        """What no longer matches (empty when the recording is current): the trace schema,
        each recorded stepper's step names against ``step_names`` (part -> the steps this
        code makes for that spec; not ``exact``: every step the engine has, and the
        recorded ones must be among them in order), and, with ``check_cells``, the lesson's
        code cells."""
        i, out = self.index, []
        schema = trace_schema()
        if schema and i.get("trace_schema") != schema:
            out.append(f"it was made with trace schema {i.get('trace_schema')}, the engine "
                       f"now writes {schema}")
        for part, names in (step_names or {}).items():
            recorded = (i.get("parts", {}).get(part) or {}).get("steps")
            if recorded is not None and (recorded != names if exact
                                         else not _in_order(recorded, names)):
                out.append(f"part {part!r} recorded the steps {', '.join(recorded)}; the "
                           f"engine now makes {', '.join(names)}")
        if check_cells and i.get("cells") != cells_hash(self.lesson):
            out.append("the lesson's code cells changed since it was recorded")
        return out

    def check(self, **kwargs) -> None:
        """Raise ``RecordingError`` naming what is stale and the command that refreshes it."""
        problems = self.stale(**kwargs)
        if problems:
            raise RecordingError(
                f"the recording of lesson {self.lesson} ({self.index.get('date')}) no longer "
                f"matches it: {'; '.join(problems)}. Refresh it on a host that runs the "
                f"lesson live: {refresh_command(self.lesson)}")

    # ---- writing -----------------------------------------------------------------------

    def begin(self) -> None:
        """Start a fresh recording of this lesson (``make record``): the old one goes."""
        self.dir.mkdir(parents=True, exist_ok=True)
        for old in self.dir.glob("*.json"):
            old.unlink()
        self._index = {"schema": SCHEMA, "lesson": self.lesson, "machine": machine(),
                       "date": datetime.date.today().isoformat(),
                       "cells": cells_hash(self.lesson), "trace_schema": trace_schema(),
                       "parts": {}}
        self._write_index()

    def save(self, name: str, value: Any, outputs: list[dict[str, Any]],
             steps: list[str] | None = None) -> None:
        if self._index is None and self.index_path.exists():
            self._index = json.loads(self.index_path.read_text())
        if self._index is None or self._index.get("schema") != SCHEMA:
            self.begin()
        file = f"{name}.json"
        (self.dir / file).write_text(json.dumps(value, indent=1, sort_keys=True, default=str)
                                     + "\n")
        meta: dict[str, Any] = {"file": file, "outputs": outputs}
        if steps is not None:
            meta["steps"] = steps
        self._index["parts"][name] = meta
        self._write_index()

    def _write_index(self) -> None:
        tmp = self.index_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self._index, indent=1) + "\n")
        tmp.replace(self.index_path)


def _in_order(some: list[str], every: list[str]) -> bool:
    it = iter(every)
    return all(name in it for name in some)


# ---- what a part showed ------------------------------------------------------------------

class Capture:
    """What a part prints and displays while it runs, kept in order and still shown live
    (a tee): stdout as text, rich displays as their kept MIME types."""

    def __init__(self):
        self.outputs: list[dict[str, Any]] = []

    def __enter__(self) -> Capture:
        self._stdout = sys.stdout
        sys.stdout = _Tee(self)
        self._pub = None
        ip = _ipython()
        if ip is not None:
            pub = ip.display_pub
            self._pub, original = pub, pub.publish

            def publish(data, metadata=None, *args, **kwargs):
                kept = {k: v for k, v in (data or {}).items() if k in KEPT_MIME}
                # A widget's text/plain is only its model's repr ("HBox(children=...)", a
                # progress bar's): nothing to show again once its kernel is gone.
                if kept and WIDGET_MIME not in (data or {}):
                    self.outputs.append({"data": kept})
                return original(data, metadata, *args, **kwargs)

            self._original = original
            pub.publish = publish
        return self

    def __exit__(self, *exc) -> None:
        sys.stdout = self._stdout
        if self._pub is not None:
            self._pub.publish = self._original

    def stream(self, text: str) -> None:
        if self.outputs and "text" in self.outputs[-1]:
            self.outputs[-1]["text"] += text
        else:
            self.outputs.append({"text": text})


class _Tee:
    def __init__(self, cap: Capture):
        self.cap, self.out = cap, cap._stdout

    def write(self, text: str) -> int:
        self.cap.stream(text)
        return self.out.write(text)

    def flush(self) -> None:
        self.out.flush()

    def __getattr__(self, name: str):
        return getattr(self.out, name)


def _ipython():
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    return get_ipython()


def show(outputs: list[dict[str, Any]]) -> None:
    """Show recorded outputs again, in order."""
    ip = _ipython()
    for out in outputs:
        if "text" in out:
            sys.stdout.write(out["text"])
        elif ip is not None:
            from IPython.display import publish_display_data

            sys.stdout.flush()
            publish_display_data(out["data"])
        else:
            sys.stdout.write(out["data"].get("text/plain", "") + "\n")
    sys.stdout.flush()


def png_output(png: bytes) -> dict[str, Any]:
    """A recorded display of a PNG image (a figure saved with the recording)."""
    return {"data": {"image/png": base64.b64encode(png).decode(), "text/plain": "<figure>"}}
