"""The build context: .dockerignore, COPY's sources, and the cache key, checked against Docker.

The pattern and path rules are pure functions and are unit-tested. What Docker really sends
and copies is then checked by difference: a context with awkward .dockerignore lines is built
with ``DOCKER_BUILDKIT=0 docker build`` (``COPY . /ctx/``), and what lands in the image must
be what ``list_context`` says. Docker is required with ``need``: a skip here, a failure in CI.
"""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path

import docker_reference as ref
import pytest
from conftest import need

from edu_runtime.images import context as ctx
from edu_runtime.images.context import ContextError, IgnoreMatcher


def write(root: Path, files: dict[str, str | None], modes: dict[str, int] | None = None) -> Path:
    """Make files (text) and directories (None) under root."""
    for rel, text in files.items():
        path = root / rel
        if text is None:
            path.mkdir(parents=True, exist_ok=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    for rel, mode in (modes or {}).items():
        os.chmod(root / rel, mode)
    return root


# ---- .dockerignore lines -------------------------------------------------------------------

def test_parse_dockerignore_cleans_lines():
    text = ("\ufeff# comment\n\n  *.log  \r\n /build/\n./tmp\n!  keep.log \n #not-a-comment\n"
            "a/../b\n!/abs\n/\n")
    assert ctx.parse_dockerignore(text) == ["*.log", "build", "tmp", "!keep.log",
                                            "#not-a-comment", "b", "!abs", "/"]


def test_go_clean():
    assert [ctx.go_clean(p) for p in ("", "./a/", "a//b/./c/..", "/../x", "../x", "/")] == [
        ".", "a", "a/b", "/x", "../x", "/"]


@pytest.mark.parametrize("patterns,path,ignored", [
    (["*.log"], "a.log", True),
    (["*.log"], "dir/a.log", False),          # * stops at /
    (["*/*.log"], "dir/a.log", True),
    (["**/*.log"], "a.log", True),            # ** is any number of directories, even none
    (["**/*.log"], "x/y/a.log", True),
    (["dir/**"], "dir/x/y", True),
    (["dir"], "dir/x/y", True),               # a directory's pattern covers what is inside
    (["d?r"], "dir/f", True),
    (["[a-c]*"], "b", True),
    (["[^a]*"], "a", False),
    (["\\#x"], "#x", True),
    (["*", "!keep"], "keep", False),
    (["*", "!keep", "keep"], "keep", True),   # the last matching line wins
    (["dir", "!dir/keep"], "dir/keep", False),
    (["dir", "!dir/keep"], "dir/other", True),
    (["a.b"], "axb", False),                  # . is literal
    (["a+(b)"], "a+(b)", True),
])
def test_ignore_matcher(patterns, path, ignored):
    assert IgnoreMatcher(patterns).ignores(path) is ignored


def test_bad_ignore_patterns():
    with pytest.raises(ContextError, match="illegal exclusion"):
        IgnoreMatcher(["!"])
    with pytest.raises(ContextError, match="syntax error"):
        IgnoreMatcher(["a["])


# ---- what is sent --------------------------------------------------------------------------

IGNORE_CASE = {
    "Dockerfile": "FROM x\n",
    "keep.txt": "k", "app.log": "l", "logs/keep/important.log": "i", "logs/other.log": "o",
    "build/keep.txt": "k", "build/drop.txt": "d", "build/sub/deep.txt": "d",
    "cache/x": "x", "nested/cache/n": "n", "src/a/main.c": "c", "src/a/main.o": "o",
    "docs/readme.md": "r", "docs/notes.txt": "n", "#notacomment": "#", "empty": None,
    "wild/keep.txt": "w",
}
IGNORE_LINES = ("# comment\n\n*.log\n!logs/keep/*.log\n/build\n!build/keep.txt\n./cache\n"
                "**/*.o\nnested/**\ndocs/*.md\n\\#notacomment\nwild\n!*/keep.txt\n")


def make_ignore_context(root: Path, extra_lines: str = "") -> Path:
    write(root, IGNORE_CASE, {"build": 0o700, "keep.txt": 0o600, "src": 0o750})
    (root / "link").symlink_to("keep.txt")
    (root / ".dockerignore").write_text(IGNORE_LINES + extra_lines)
    return root


def test_list_context_applies_dockerignore(tmp_path):
    entries = ctx.list_context(make_ignore_context(tmp_path))
    assert list(entries) == [
        ".dockerignore", "Dockerfile", "build", "build/keep.txt", "docs", "docs/notes.txt",
        "empty", "keep.txt", "link", "logs", "logs/keep", "logs/keep/important.log",
        "logs/other.log", "nested",
        "src", "src/a", "src/a/main.c"]
    # build is ignored, but holds a re-included file: made by the builder, 0755.
    assert entries["build"].implicit and entries["build"].mode == 0o755
    assert entries["keep.txt"].mode == 0o600 and entries["src"].mode == 0o750
    assert entries["link"].kind == "symlink" and entries["link"].target == "keep.txt"
    # "!*/keep.txt" names no path inside wild literally, so wild is not walked at all.
    assert "wild/keep.txt" not in entries


def test_ignored_dockerfile_and_dockerignore_are_not_copied(tmp_path):
    entries = ctx.list_context(make_ignore_context(tmp_path, "Dockerfile\n.dockerignore\n"))
    assert "Dockerfile" not in entries and ".dockerignore" not in entries


def test_list_context_without_dockerignore(tmp_path):
    write(tmp_path, {"a": "1", "d/b": "2"})
    assert list(ctx.list_context(tmp_path)) == ["a", "d", "d/b"]
    with pytest.raises(ContextError, match="not a directory"):
        ctx.list_context(tmp_path / "a")


# ---- COPY sources --------------------------------------------------------------------------

@pytest.fixture
def sources(tmp_path):
    root = write(tmp_path / "ctx", {"a.txt": "a", "b.txt": "b", "c.conf": "c", "dir/x": "x",
                                    "dir/sub/y": "y", "ignored.txt": "i", "[x].txt": "br"})
    (tmp_path / "outside").write_text("secret")
    (root / ".dockerignore").write_text("ignored.txt\n")
    (root / "abs-link").symlink_to("/etc/passwd")
    (root / "up-link").symlink_to("../outside")
    (root / "good-link").symlink_to("a.txt")
    (root / "dir-link").symlink_to("dir")
    (root / "dir/in-scope").symlink_to("/a.txt")  # absolute: the context's /a.txt
    (root / "loop").symlink_to("loop")
    return root


def names(found):
    return [(s.rel, s.is_dir, s.name) for s in found]


def test_resolve_plain_sources(sources):
    assert names(ctx.resolve_sources(sources, ["a.txt", "/b.txt", "./dir", "dir/../c.conf"])) == [
        ("a.txt", False, "a.txt"), ("b.txt", False, "b.txt"), ("dir", True, "dir"),
        ("c.conf", False, "c.conf")]
    assert names(ctx.resolve_sources(sources, ["."])) == [("", True, ".")]
    found = ctx.resolve_sources(sources, ["a.txt"])[0]
    assert found.path == sources / "a.txt"


def test_resolve_wildcards(sources):
    assert names(ctx.resolve_sources(sources, ["*.txt"])) == [
        ("[x].txt", False, "[x].txt"), ("a.txt", False, "a.txt"), ("b.txt", False, "b.txt")]
    assert [s.rel for s in ctx.resolve_sources(sources, ["dir/*"])] == [
        "a.txt", "dir/sub", "dir/x"]  # dir/in-scope is a link to the context's /a.txt
    assert [s.rel for s in ctx.resolve_sources(sources, ["[[]x?.txt"])] == ["[x].txt"]
    # Sources come here substituted: a backslash left is a literal one (written \\[ in a
    # Dockerfile). Escaped, nothing is a wildcard, and no file has that name.
    with pytest.raises(ContextError, match="not found"):
        ctx.resolve_sources(sources, ["\\[x\\].txt"])
    assert [s.rel for s in ctx.resolve_sources(sources, ["[ab].txt", "nomatch*"])] == [
        "a.txt", "b.txt"]
    with pytest.raises(ContextError, match="no source files were specified"):
        ctx.resolve_sources(sources, ["nomatch*"])


def test_symlinks_are_followed_inside_the_context(sources):
    assert names(ctx.resolve_sources(sources, ["good-link", "dir-link", "dir/in-scope"])) == [
        ("a.txt", False, "good-link"), ("dir", True, "dir-link"), ("a.txt", False, "in-scope")]


def test_sources_outside_the_context_are_refused(sources):
    # docker: COPY failed: forbidden path outside the build context: ../outside ()
    with pytest.raises(ContextError, match="forbidden path outside the build context: "
                                           r"\.\./outside"):
        ctx.resolve_sources(sources, ["../outside"])
    with pytest.raises(ContextError, match="outside the build context: dir/../../outside"):
        ctx.resolve_sources(sources, ["dir/../../outside"])
    # docker: file not found in build context ...: stat abs-link: file does not exist
    for link, target in (("abs-link", "/etc/passwd"), ("up-link", "../outside")):
        with pytest.raises(ContextError, match=f"stat {link}: .*{link} -> {target}"):
            ctx.resolve_sources(sources, [link])
    with pytest.raises(ContextError, match="too many levels of symbolic links"):
        ctx.resolve_sources(sources, ["loop"])


def test_ignored_and_missing_sources(sources):
    with pytest.raises(ContextError, match="excluded by .dockerignore: stat ignored.txt"):
        ctx.resolve_sources(sources, ["ignored.txt"])
    with pytest.raises(ContextError, match="stat a.txt/x"):
        ctx.resolve_sources(sources, ["a.txt/x"])


def test_has_wildcards():
    assert ctx.has_wildcards("*.txt") and ctx.has_wildcards("a?") and ctx.has_wildcards("[a]")
    assert not ctx.has_wildcards("a\\*") and not ctx.has_wildcards("plain")


def test_go_match():
    assert ctx.go_match("*.txt", "a.txt") and not ctx.go_match("*.txt", "d/a.txt")
    assert ctx.go_match("[^a]x", "bx") and not ctx.go_match("[^a]x", "ax")
    assert not ctx.go_match("[z-a]", "q")
    with pytest.raises(ValueError):
        ctx.go_match("a[", "a")


# ---- the cache key -------------------------------------------------------------------------

def test_checksum_ignores_times_and_owners_not_content_or_mode(tmp_path):
    root = write(tmp_path, {"f": "one", "d/a": "a", "d/b/c": "c"})
    first = ctx.checksum(root / "f", root / "d")
    assert first == ctx.checksum(root / "f", root / "d")
    os.utime(root / "f", (1, 1))
    os.utime(root / "d/b/c", (1, 1))
    os.chown(root / "f", 1234, 1234) if os.geteuid() == 0 else None
    assert ctx.checksum(root / "f", root / "d") == first
    os.chmod(root / "f", 0o600)
    assert ctx.checksum(root / "f", root / "d") != first
    os.chmod(root / "f", 0o644)
    (root / "d/b/c").write_text("C")
    changed = ctx.checksum(root / "f", root / "d")
    assert changed != first
    (root / "d/b/c").rename(root / "d/b/renamed")
    assert ctx.checksum(root / "f", root / "d") != changed
    assert ctx.checksum(root / "d") != ctx.checksum(root / "f")


def test_checksum_of_sources(sources):
    found = ctx.resolve_sources(sources, ["a.txt", "dir"])
    assert ctx.checksum(*found) == ctx.checksum(*ctx.resolve_sources(sources, ["a.txt", "dir"]))
    assert ctx.checksum(*found).startswith("sha256:")


# ---- against docker build ------------------------------------------------------------------

@pytest.fixture
def docker(root):
    """dockerd answers and our busybox is in it; images made by the test are removed."""
    need(shutil.which("docker") is not None, "the docker CLI is not installed")
    need(ref.docker_up(), "dockerd is not running: scripts/services.sh start docker")
    ref.load_base()
    made: list[str] = []
    yield made
    for image in reversed(made):
        ref.run("docker", "rmi", "-f", image, check=False)


def build(context: Path, made: list[str]) -> str:
    tag = f"edu-ctx-test:{secrets.token_hex(4)}"
    made.append(tag)
    ref.run("docker", "build", "--network", "none", "--force-rm", "-t", tag, str(context),
            timeout=300)
    return tag


def copied(tag: str) -> dict[str, tuple]:
    """What COPY . /ctx/ put in the image: path -> (type, mode, link target)."""
    files = ref._files(tag)
    return {rel.removeprefix("ctx/"): (f["type"], f["mode"] if f["type"] != "symlink" else 0,
                                       f["link"] if f["type"] == "symlink" else None)
            for rel, f in files.items() if rel.startswith("ctx/")}


def expected(entries: dict[str, ctx.Entry]) -> dict[str, tuple]:
    return {rel: (e.kind, e.mode if e.kind != "symlink" else 0, e.target)
            for rel, e in entries.items()}


@pytest.mark.parametrize("extra", ["", "Dockerfile\n.dockerignore\n"],
                         ids=["files-kept", "dockerfile-ignored"])
def test_dockerignore_matches_docker_build(docker, tmp_path, extra):
    context = make_ignore_context(tmp_path / "ctx", extra)
    (context / "Dockerfile").write_text(f"FROM {ref.BASE_TAG}\nCOPY . /ctx/\n")
    tag = build(context, docker)
    assert copied(tag) == expected(ctx.list_context(context))


def test_copy_sources_match_docker_build(docker, sources):
    """Wildcards, a followed symlink, a directory's contents: the names docker gives them."""
    (sources / "Dockerfile").write_text(
        f"FROM {ref.BASE_TAG}\nCOPY *.txt good-link dir-link /ctx/\n")
    tag = build(sources, docker)
    found = ctx.resolve_sources(sources, ["*.txt", "good-link", "dir-link"])
    want: set[str] = set()
    for source in found:
        if source.is_dir:
            want |= {rel.removeprefix(source.rel + "/")
                     for rel in ctx.list_context(sources) if rel.startswith(source.rel + "/")}
        else:
            want.add(source.name)
    assert set(copied(tag)) == want


def test_docker_cache_ignores_mtime_but_not_mode(docker, tmp_path):
    """What checksum leaves out, Docker's classic cache leaves out too."""
    context = write(tmp_path / "ctx", {"f.txt": "cached?"})
    (context / "Dockerfile").write_text(f"FROM {ref.BASE_TAG}\nCOPY f.txt /f.txt\n")

    def uses_cache() -> bool:
        tag = f"edu-ctx-cache:{secrets.token_hex(4)}"
        docker.append(tag)
        r = ref.run("docker", "build", "--network", "none", "-t", tag, str(context))
        return "Using cache" in r.stdout.decode()

    uses_cache()
    before = ctx.checksum(context / "f.txt")
    os.utime(context / "f.txt", (1_000_000, 1_000_000))
    assert uses_cache() and ctx.checksum(context / "f.txt") == before
    os.chmod(context / "f.txt", 0o600)
    assert not uses_cache() and ctx.checksum(context / "f.txt") != before
