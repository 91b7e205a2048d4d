"""The build context: the files ``docker build`` sends, and how COPY and ADD find theirs.

``docker build DIR`` does not let the builder read DIR. The client packs DIR into a tar, the
*context*, and sends it; the builder unpacks it and reads nothing else. Three consequences
are worth seeing, and this module does each the way Docker 20.10 (with a current client) does:

* **.dockerignore** decides what is packed. Its lines are patterns in Go's filepath.Match
  syntax plus ``**`` (any number of directories); a pattern also matches everything under a
  directory it matches; ``!`` re-includes; the last matching line wins. Leading ``/`` and
  ``./`` are cleaned away. An ignored directory is not even walked, unless a ``!`` line
  names a path inside it literally: then the directory's entry is left out but the files it
  re-includes are sent, and the builder makes the directory itself (mode 0755) to hold them.
  The Dockerfile and .dockerignore are always sent (the builder must read them), but when
  .dockerignore ignores them the builder deletes them before any COPY can see them.
* **Sources cannot leave the context.** ``COPY ../secret /`` is refused by name. A symlink
  is followed *inside* the context, as if the context were ``/``: a link to ``/etc/passwd``
  means ``<context>/etc/passwd``, so it cannot reach the host's (and is refused, naming the
  link, when that is not there). Wildcards are Go's filepath.Match, and a directory source
  copies its contents, not itself.
* **The build cache keys on content.** Docker's key for a COPY is a hash of each file's name,
  mode, size, type and bytes: not its modification time (touching a file keeps the cache, a
  chmod does not) and not its owner (the context is sent as root). :func:`checksum` is that.

Introduced in notebooks/05-dockerfile.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import re
import stat
from collections import namedtuple

TYPE_CHECKING = False  # (typing's own costs an import: the names below are for annotations)
if TYPE_CHECKING:
    from collections.abc import Iterable
    from pathlib import Path

DOCKERIGNORE = ".dockerignore"
#: Symlinks followed while resolving one path, as Docker's FollowSymlinkInScope allows.
MAX_LINKS = 255


class ContextError(Exception):
    """A build context or a COPY source is not usable; the message says why and the fix.

    Introduced in notebooks/05-dockerfile.
    """


# ---- .dockerignore -------------------------------------------------------------------------

def read_dockerignore(context_dir: Path) -> list[str]:
    """The patterns of ``context_dir/.dockerignore`` as Docker reads them ([] without one).

    Introduced in notebooks/05-dockerfile.
    """
    try:
        with open(os.path.join(context_dir, DOCKERIGNORE), "rb") as f:
            text = f.read().decode("utf-8", errors="surrogateescape")
    except FileNotFoundError:
        return []
    return parse_dockerignore(text)


def parse_dockerignore(text: str) -> list[str]:
    """Docker's ignorefile.ReadAll: comments (# in column 0) and blanks dropped, paths cleaned.

    Introduced in notebooks/05-dockerfile.
    """
    patterns = []
    for number, line in enumerate(text.split("\n")):
        line = line.removesuffix("\r")
        if number == 0:
            line = line.removeprefix("\ufeff")
        if line.startswith("#"):
            continue
        line = line.strip()
        if not line:
            continue
        invert = line.startswith("!")
        if invert:
            line = line[1:].strip()
        if line:
            line = go_clean(line)
            if len(line) > 1 and line.startswith("/"):
                line = line[1:]
        patterns.append("!" + line if invert else line)
    return patterns


def go_clean(path: str) -> str:
    """Go's filepath.Clean: "." for empty, no ./ or //, .. resolved lexically.

    Introduced in notebooks/05-dockerfile.
    """
    if path == "":
        return "."
    rooted = path.startswith("/")
    parts: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if parts and parts[-1] != "..":
                parts.pop()
            elif not rooted:
                parts.append("..")
            continue
        parts.append(part)
    cleaned = "/".join(parts)
    if rooted:
        return "/" + cleaned
    return cleaned or "."


class _Pattern:
    """One .dockerignore line, compiled as moby/patternmatcher compiles it."""

    _ESCAPE = set(".+()|{}$")

    def __init__(self, text: str):
        self.exclusion = text.startswith("!")
        if self.exclusion:
            text = text[1:]
        self.text = text
        self.kind, self.regex = self._compile(text)

    @classmethod
    def _compile(cls, pattern: str) -> tuple[str, re.Pattern | None]:
        regex = "^"
        kind = "exact"
        i, n, step = 0, len(pattern), 0
        while i < n:
            ch = pattern[i]
            i += 1
            if ch == "*":
                if i < n and pattern[i] == "*":
                    i += 1
                    if i < n and pattern[i] == "/":
                        i += 1
                    if i == n:  # "**" at the end: everything below
                        if kind == "exact":
                            kind = "prefix"
                        else:
                            regex += ".*"
                            kind = "regexp"
                    else:
                        regex += "(.*/)?"
                        kind = "regexp"
                    if step == 0:
                        kind = "suffix"
                else:
                    regex += "[^/]*"
                    kind = "regexp"
            elif ch == "?":
                regex += "[^/]"
                kind = "regexp"
            elif ch in cls._ESCAPE:
                regex += "\\" + ch
            elif ch == "\\":
                if i < n:
                    regex += "\\" + pattern[i]
                    i += 1
                    kind = "regexp"
                else:
                    regex += "\\\\"
            elif ch in "[]":
                regex += ch
                kind = "regexp"
            else:
                regex += ch
            step += 1
        if kind != "regexp":
            return kind, None
        try:
            return kind, re.compile(regex + r"\Z")
        except re.error:
            raise ContextError(f".dockerignore: syntax error in pattern {pattern!r}") from None

    def match(self, path: str) -> bool:
        if self.kind == "exact":
            return path == self.text
        if self.kind == "prefix":
            return path.startswith(self.text[:-2])
        if self.kind == "suffix":
            suffix = self.text[2:]
            if path.endswith(suffix):
                return True
            return suffix.startswith("/") and path == suffix[1:]
        return bool(self.regex.match(path))


class IgnoreMatcher:
    """The .dockerignore patterns: does a path (slash-separated, relative) stay out?

    Introduced in notebooks/05-dockerfile.
    """

    def __init__(self, patterns: Iterable[str]):
        self.patterns: list[_Pattern] = []
        for text in patterns:
            text = text.strip()
            if not text:
                continue
            text = go_clean(text)
            if text == "!":
                raise ContextError('.dockerignore: illegal exclusion pattern: "!": write the '
                                   "path to re-include after the !")
            pattern = _Pattern(text)
            _check_go_pattern(pattern.text)
            self.patterns.append(pattern)
        self.exclusions = any(p.exclusion for p in self.patterns)

    def matches(self, path: str, parent: list[bool] | None = None) -> tuple[bool, list[bool]]:
        """Whether ``path`` is ignored, and the per-pattern results its children build on.

        ``parent`` is what this returned for the parent directory (None at the top): a
        pattern that matched a directory matches everything under it.
        """
        matched = False
        results = []
        for i, pattern in enumerate(self.patterns):
            match = bool(parent) and parent[i]
            if not match:
                if pattern.exclusion != matched:
                    results.append(False)
                    continue
                match = pattern.match(path)
                if not match and parent is None:
                    dirs = posixpath.dirname(path).split("/") if "/" in path else []
                    match = any(pattern.match("/".join(dirs[:k + 1])) for k in range(len(dirs)))
            results.append(match)
            if match:
                matched = not pattern.exclusion
        return matched, results

    def ignores(self, path: str) -> bool:
        """Whether ``path`` (or a directory above it) is ignored."""
        if go_clean(path) == ".":
            return False
        return self.matches(go_clean(path))[0]

    def keeps_inside(self, directory: str) -> bool:
        """Whether a ``!`` line names a path inside an ignored ``directory`` (walk into it)."""
        prefix = directory + "/"
        return any(p.exclusion and (p.text + "/").startswith(prefix) for p in self.patterns)


def _check_go_pattern(pattern: str) -> None:
    try:
        go_match(pattern, ".")
    except ValueError:
        raise ContextError(f".dockerignore: syntax error in pattern {pattern!r}: check its "
                           "[ ] brackets and backslashes") from None


# ---- what is sent ------------------------------------------------------------------------

# (Named tuples, not dataclasses: a warm rebuild imports this module, and dataclasses'
# import alone costs more than its cache look-ups; see warm.py.)
class Entry(namedtuple("Entry", "rel kind mode size target implicit",
                       defaults=(0, None, False))):
    """One path of the context as the builder unpacks it: ``rel``, ``kind`` ("file", "dir"
    or "symlink"), ``mode`` (the permission bits, setuid/setgid/sticky included), ``size``,
    a symlink's ``target``.

    ``implicit`` marks a directory that was not sent itself (it is ignored) but holds a sent
    file: the builder makes it, root-owned with mode 0755.

    Introduced in notebooks/05-dockerfile.
    """

    __slots__ = ()


def list_context(context_dir: Path, dockerfile: str = "Dockerfile") -> dict[str, Entry]:
    """The context as COPY sees it, after .dockerignore: relative path -> Entry, sorted.

    Introduced in notebooks/05-dockerfile.
    """
    root = os.fspath(context_dir)
    if not os.path.isdir(root):
        raise ContextError(f"the build context {root} is not a directory: give the directory "
                           "that holds the files to COPY")
    patterns = read_dockerignore(root)
    dockerfile = go_clean(dockerfile.replace(os.sep, "/"))
    # The client re-includes the Dockerfile and .dockerignore so that the builder can read them.
    sent = IgnoreMatcher(patterns)
    keep_too = []
    if sent.ignores(DOCKERIGNORE):
        keep_too.append("!" + DOCKERIGNORE)
    if sent.ignores(dockerfile):
        keep_too.append("!" + dockerfile)
    entries = _walk(root, IgnoreMatcher(patterns + keep_too))
    # ... then the builder deletes them if the user's own patterns ignore them.
    user = IgnoreMatcher(patterns)
    for name in (DOCKERIGNORE, dockerfile):
        if user.ignores(name) and name in entries and entries[name].kind != "dir":
            del entries[name]
    return dict(sorted(entries.items()))


def _walk(root: str, matcher: IgnoreMatcher) -> dict[str, Entry]:
    """Docker's TarWithOptions walk: what the client packs, with implicit parent dirs."""
    entries: dict[str, Entry] = {}

    def visit(directory: str, rel_dir: str, parent: list[bool] | None) -> None:
        try:
            names = sorted(os.listdir(directory))
        except OSError as exc:
            raise ContextError(f"cannot read {directory} in the build context: "
                               f"{exc.strerror}; fix its permissions or .dockerignore it"
                               ) from None
        for name in names:
            path = os.path.join(directory, name)
            rel = f"{rel_dir}/{name}" if rel_dir else name
            st = os.lstat(path)
            ignored, results = matcher.matches(rel, parent)
            is_dir = stat.S_ISDIR(st.st_mode)
            if ignored:
                if is_dir and matcher.exclusions and matcher.keeps_inside(rel):
                    visit(path, rel, results)
                continue
            entry = _entry(path, rel, st)
            if entry is None:
                continue  # sockets, devices and fifos are not sent
            _add_parents(entries, rel)
            entries[rel] = entry
            if is_dir:
                visit(path, rel, results)

    visit(root, "", None)
    return entries


def _entry(path: str, rel: str, st: os.stat_result) -> Entry | None:
    mode = stat.S_IMODE(st.st_mode)
    if stat.S_ISDIR(st.st_mode):
        return Entry(rel, "dir", mode)
    if stat.S_ISREG(st.st_mode):
        return Entry(rel, "file", mode, st.st_size)
    if stat.S_ISLNK(st.st_mode):
        return Entry(rel, "symlink", 0o777, target=os.readlink(path))
    return None


def _add_parents(entries: dict[str, Entry], rel: str) -> None:
    parent = posixpath.dirname(rel)
    while parent and parent not in entries:
        entries[parent] = Entry(parent, "dir", 0o755, implicit=True)
        parent = posixpath.dirname(parent)


# ---- COPY and ADD sources ------------------------------------------------------------------

class Source(namedtuple("Source", "rel where is_dir name")):
    """One resolved COPY/ADD source: ``rel`` in the context ("" for all of it), ``where`` on
    disk (symlinks followed inside the context; ``path`` as a Path), and whether it is a
    directory (its contents are copied). ``name`` is the last component of the source as
    written, which Docker uses when the destination is a directory.

    Introduced in notebooks/05-dockerfile.
    """

    __slots__ = ()

    @property
    def path(self) -> Path:
        """``where``, as a Path."""
        from pathlib import Path

        return Path(self.where)


def has_wildcards(source: str) -> bool:
    """Whether a COPY source is a pattern (``*``, ``?`` or ``[``, not escaped with a backslash).

    Introduced in notebooks/05-dockerfile.
    """
    i = 0
    while i < len(source):
        if source[i] == "\\":
            i += 2
            continue
        if source[i] in "*?[":
            return True
        i += 1
    return False


def resolve_sources(context_dir: Path, srcs: Iterable[str], *, instruction: str = "COPY",
                    entries: dict[str, Entry] | None = None) -> list[Source]:
    """COPY's (substituted) sources as files and directories of the context, in order.

    Wildcards match what the context holds after .dockerignore; a path outside the context
    (``..``) is refused, and so is one that is not there, with the path named.

    Introduced in notebooks/05-dockerfile.
    """
    root = os.fspath(context_dir)
    if entries is None:
        entries = list_context(root)
    out: list[Source] = []
    for src in srcs:
        path = _clean_source(src)
        if has_wildcards(path):
            for rel in sorted(entries, key=lambda r: r.split("/")):  # Go's Walk order
                try:
                    if go_match(path, rel):
                        out.append(_resolve(root, entries, rel, rel, instruction))
                except ValueError:
                    break  # a malformed pattern matches nothing (Docker ignores the error)
            continue
        out.append(_resolve(root, entries, path, src, instruction))
    if not out:
        raise ContextError(f"{instruction} failed: no source files were specified: no file of "
                           "the context matches " + ", ".join(repr(s) for s in srcs)
                           + " (check .dockerignore)")
    return out


def _clean_source(src: str) -> str:
    """Docker's trimming of a source: a leading / (the context's root) and ./ go."""
    if src.startswith("/") and len(src) > 1:
        src = src[1:]
    return src.removeprefix("./")


def _resolve(root: str, entries: dict[str, Entry], path: str, written: str,
             instruction: str) -> Source:
    """Follow ``path`` inside the context, symlinks too, as Docker's FollowSymlinkInScope."""
    cleaned = go_clean(path)
    if cleaned == ".." or cleaned.startswith("../"):
        raise ContextError(f"{instruction} failed: forbidden path outside the build context: "
                           f"{written}: a build can only read its context; move the file "
                           "into the context directory")
    parts = [] if cleaned in (".", "/") else cleaned.lstrip("/").split("/")
    resolved: list[str] = []
    links = 0
    escaped: str | None = None
    while parts:
        part = parts.pop(0)
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        rel = "/".join(resolved + [part])
        entry = entries.get(rel)
        if entry is None:
            raise ContextError(_not_found(instruction, written, escaped))
        if entry.kind != "symlink":
            resolved.append(part)
            continue
        links += 1
        if links > MAX_LINKS:
            raise ContextError(f"{instruction} failed: {written}: too many levels of symbolic "
                               "links")
        target = entry.target or ""
        if target.startswith("/"):
            escaped = escaped or f"{rel} -> {target}"
            resolved = []
        elif _leaves(resolved, target):
            escaped = escaped or f"{rel} -> {target}"
        parts = [p for p in target.split("/") if p not in ("", ".")] + parts
    rel = "/".join(resolved)
    entry = entries.get(rel)
    is_dir = rel == "" or (entry is not None and entry.kind == "dir")
    name = posixpath.basename(go_clean(written).rstrip("/")) or posixpath.basename(rel)
    return Source(rel=rel, where=os.path.join(root, rel) if rel else root, is_dir=is_dir,
                  name=name)


def _leaves(resolved: list[str], target: str) -> bool:
    """Whether a relative link target climbs above the context's root from ``resolved``."""
    depth = len(resolved)
    for part in target.split("/"):
        if part == "..":
            depth -= 1
            if depth < 0:
                return True
        elif part not in ("", "."):
            depth += 1
    return False


def _not_found(instruction: str, written: str, escaped: str | None) -> str:
    message = (f"{instruction} failed: file not found in build context or excluded by "
               f".dockerignore: stat {written}: file does not exist")
    if escaped:
        message += (f" (the symlink {escaped} points outside the build context; a build "
                    "reads links as if the context were /, so it cannot reach that file: "
                    "copy the file itself into the context)")
    return message


def go_match(pattern: str, name: str) -> bool:
    """Go's filepath.Match: ``*`` and ``?`` stop at /, ``[a-z]`` and ``[^a]`` classes,
    ``\\`` escapes. A malformed pattern raises ValueError.

    Introduced in notebooks/05-dockerfile.
    """
    return bool(_go_pattern_regex(pattern).fullmatch(name))


def _go_pattern_regex(pattern: str) -> re.Pattern:
    out = []
    i, n = 0, len(pattern)
    while i < n:
        ch = pattern[i]
        i += 1
        if ch == "*":
            out.append("[^/]*")
        elif ch == "?":
            out.append("[^/]")
        elif ch == "\\":
            if i == n:
                raise ValueError("syntax error in pattern")
            out.append(re.escape(pattern[i]))
            i += 1
        elif ch == "[":
            negated = i < n and pattern[i] == "^"
            if negated:
                i += 1
            ranges: list[str] = []
            count = 0
            while True:
                if i >= n:
                    raise ValueError("syntax error in pattern")
                if pattern[i] == "]" and count:
                    i += 1
                    break
                lo, i = _class_char(pattern, i)
                hi = lo
                if i < n and pattern[i] == "-":
                    hi, i = _class_char(pattern, i + 1)
                if lo <= hi:  # Go accepts z-a; it just never matches
                    ranges.append(re.escape(lo) + "-" + re.escape(hi))
                count += 1
            if ranges:
                out.append("[" + ("^" if negated else "") + "".join(ranges) + "]")
            else:
                out.append("." if negated else "(?!)")
        else:
            out.append(re.escape(ch))
    return re.compile("".join(out), re.DOTALL)


def _class_char(pattern: str, i: int) -> tuple[str, int]:
    if i >= len(pattern) or pattern[i] in "-]":
        raise ValueError("syntax error in pattern")
    if pattern[i] == "\\":
        i += 1
        if i >= len(pattern):
            raise ValueError("syntax error in pattern")
    return pattern[i], i + 1


# ---- the cache key -------------------------------------------------------------------------

def checksum(*items: Source | str | os.PathLike) -> str:
    """``sha256:<hex>`` of sources' names, types, modes, sizes, link targets and bytes.

    Stable across runs and machines: modification times and owners are left out, as Docker's
    classic builder leaves them out of its cache key. A directory counts as its sorted tree.

    Introduced in notebooks/05-dockerfile.
    """
    from pathlib import Path

    h = hashlib.sha256()
    for item in items:
        if isinstance(item, Source):
            name, path = item.rel or ".", item.path
        else:
            path = Path(item)
            name = path.name
        h.update(f"source {name}\0".encode())
        st = os.lstat(path)
        if stat.S_ISDIR(st.st_mode):
            _hash_entry(h, ".", path, st)
            for dirpath, dirnames, filenames in os.walk(path):
                dirnames.sort()
                for child in sorted(dirnames + filenames):
                    child_path = Path(dirpath) / child
                    rel = os.path.relpath(child_path, path).replace(os.sep, "/")
                    _hash_entry(h, rel, child_path, os.lstat(child_path))
        else:
            _hash_entry(h, ".", path, st)
    return "sha256:" + h.hexdigest()


def _hash_entry(h, rel: str, path: Path, st: os.stat_result) -> None:
    mode = stat.S_IMODE(st.st_mode)
    if stat.S_ISLNK(st.st_mode):
        h.update(f"link {rel} {os.readlink(path)}\0".encode("utf-8", "surrogateescape"))
    elif stat.S_ISDIR(st.st_mode):
        h.update(f"dir {rel} {mode:o}\0".encode("utf-8", "surrogateescape"))
    elif stat.S_ISREG(st.st_mode):
        h.update(f"file {rel} {mode:o} {st.st_size}\0".encode("utf-8", "surrogateescape"))
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
    else:
        h.update(f"other {rel} {stat.S_IFMT(st.st_mode):o} {mode:o}\0".encode())


def sources_digest(found: list[Source], entries: dict[str, Entry], add: bool) -> str:
    """The build cache key's part for COPY/ADD sources: names, kinds, modes and contents of
    what would be copied (after .dockerignore), never modification times.

    Introduced in notebooks/05-dockerfile.
    """
    h = hashlib.sha256(b"add" if add else b"copy")
    for src in found:
        h.update(f"\0source {src.rel}\0{src.is_dir}\0".encode())
        if not src.is_dir:
            _hash_file(h, src.where)
            continue
        prefix = f"{src.rel}/" if src.rel else ""
        for rel, entry in entries.items():
            if rel.startswith(prefix):
                h.update(f"{rel}\0{entry.kind}\0{entry.mode:o}\0{entry.target}\0".encode())
                if entry.kind == "file":
                    _hash_file(h, os.path.join(src.where, rel[len(prefix):]))
    return "sha256:" + h.hexdigest()


def _hash_file(h, path: str) -> None:
    st = os.lstat(path)
    h.update(f"{stat.S_IMODE(st.st_mode):o}\0{st.st_size}\0".encode())
    if stat.S_ISLNK(st.st_mode):
        h.update(os.readlink(path).encode())
        return
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
