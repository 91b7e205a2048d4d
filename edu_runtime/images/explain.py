"""What each instruction of a Dockerfile made: a layer, or only a change to the image's config.

``docker history`` lists an image's instructions, newest first, with a size for each: the
ones that changed files (``RUN``, ``COPY``, ``ADD``, and ``WORKDIR`` when it creates its
directory) have a layer; the others (``ENV``, ``CMD``, ``EXPOSE``, ``LABEL``, ...) show
``0B`` and only changed the config, ``docker inspect``'s ``.Config``. These functions read
both from the image itself, as plain data a lesson can print, record and replay:

- ``history(image)``: the history entries, oldest first, each with its layer and size;
- ``config_changes(before, after)``: what one instruction changed in ``.Config``, as
  sentences (``Env + PIP_NO_INDEX=1``, ``Cmd = ["python3", "app.py"]``);
- ``layer_files(store, diff_id)``: the files a layer holds (whiteouts shown as deletions),
  and ``where(files)``: the directories most of them are in, for a one-line summary;
- ``steps(builder)``: a finished build's instructions (``Builder.log``), one row each: the
  layer or the config change it made, whether the cache had it, and its time.

Introduced in notebooks/05-dockerfile.
"""

from __future__ import annotations

import json
import os
import stat
from typing import Any

from .build import CONFIG_KEYS


def history(image) -> list[dict[str, Any]]:
    """An image's history, oldest first: ``created_by``, ``layer`` (a diff_id, or None for
    a config-only entry), ``size`` (bytes), ``comment``."""
    layers = iter(zip(image.diff_ids, image.layer_sizes, strict=True))
    rows = []
    for h in image.config.get("history", []):
        diff_id, size = (None, 0) if h.get("empty_layer") else next(layers, (None, 0))
        rows.append({"created_by": h.get("created_by", ""), "layer": diff_id, "size": size,
                     "comment": h.get("comment", "")})
    return rows


def _shown(value: Any) -> str:
    return json.dumps(value) if not isinstance(value, str) else value


def config_changes(before: dict[str, Any] | None, after: dict[str, Any]) -> list[str]:
    """What changed from ``before`` to ``after`` (two ``.Config`` dicts), one sentence per
    change: ``Env + K=V`` for a variable added, ``Env K=old -> K=new`` for one changed,
    ``KEY = value`` for the rest; [] when nothing did."""
    before = before or {}
    out = []
    for key in CONFIG_KEYS:
        old, new = before.get(key), after.get(key)
        if old == new:
            continue
        if key == "Env":
            olds = dict(e.partition("=")[::2] for e in old or [])
            for item in new or []:
                name, _, value = item.partition("=")
                if name not in olds:
                    out.append(f"Env + {item}")
                elif olds[name] != value:
                    out.append(f"Env {name}={olds[name]} -> {item}")
        elif new in (None, {}, []):
            out.append(f"{key} removed")
        else:
            out.append(f"{key} = {_shown(new)}")
    return out


def layer_files(store, diff_id: str, limit: int | None = None) -> list[str]:
    """The paths a layer holds (files and links, not the directories above them), sorted;
    a whiteout ``.wh.NAME`` (overlay's: a character device 0/0) as ``NAME (deleted)``."""
    top = store.layer_dir(diff_id)
    found = []
    for root, dirs, files in os.walk(top):
        dirs.sort()
        rel = os.path.relpath(root, top)
        base = "/" if rel == "." else "/" + rel + "/"
        if not files and not dirs and base != "/":
            found.append(base)  # an empty directory (WORKDIR's) is all there is
        for name in sorted(files):
            st = os.lstat(os.path.join(root, name))
            if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                found.append(f"{base}{name} (deleted)")
            else:
                found.append(base + name)
    found.sort()
    return found[:limit] if limit is not None else found


def where(files: list[str], depth: int = 5, top: int = 2) -> list[tuple[str, int]]:
    """The ``top`` directories (cut to ``depth`` levels) holding most of ``files``, with how
    many each holds, most first: ``[("/usr/local/lib/python3.11/dist-packages", 1051)]``."""
    counts: dict[str, int] = {}
    for f in files:
        d = f.rstrip("/") if f.endswith("/") else os.path.dirname(f.removesuffix(" (deleted)"))
        d = "/" + "/".join(d.split("/")[1:depth + 1])
        counts[d] = counts.get(d, 0) + 1
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:top]


def steps(log: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A build's ``Builder.log`` as one row per instruction: ``instruction``, ``made``
    ("layer", "config" or "base"), ``size`` (bytes, for a layer), ``changes`` (config
    sentences), ``cached`` and ``seconds``."""
    rows, before = [], None
    for entry in log:
        if entry["cmd"] == "FROM":
            made, changes = "base", []
        elif entry["layer"]:
            made, changes = "layer", config_changes(before, entry["config"])
        else:
            made, changes = "config", config_changes(before, entry["config"])
        rows.append({"step": entry["step"], "instruction": entry["instruction"], "made": made,
                     "size": (entry["layer"] or {}).get("size", 0), "changes": changes,
                     "cached": entry["cached"], "seconds": entry["seconds"],
                     "image": entry["image"],
                     "diff_id": (entry["layer"] or {}).get("diff_id")})
        before = entry["config"]
    return rows
