"""Base images made on this machine from Debian packages: busybox, debian, python and node.

Why build them instead of pulling them: the course must work where the only thing reachable is
a Debian mirror (a classroom, this VM), and making a base image is itself a lesson. Each recipe
is what the official Docker images do, done in the open:

* ``busybox``: one static binary and a link for each of its applets, plus ``/etc/passwd``.
  The binary is Debian's busybox-static, which setup installs. The layer tar is written entry
  by entry, owned by root, with fixed times, so two builds give the same image ID.
* ``debian``: ``debootstrap --variant=minbase``, then the clean-up that debuerreotype (the
  tool behind Docker's debian images) does: no apt lists, caches or logs, no device nodes,
  and none of the host's files that debootstrap copies in. ``debian:11`` (or
  ``debian:bullseye``) is the same recipe for Debian 11, the release before: one base in two
  versions, as Docker Hub keeps them.
* ``python`` and ``node``: a second layer, made the way ``docker build`` makes a ``RUN``
  layer. Mount an overlay of the debian image with an empty upper dir, run apt-get in it,
  and pack what the upper dir caught. ``node`` is Debian's nodejs and npm, so the primer's
  ``RUN npm install`` works on ``FROM node``, and it trusts the CAs the host's admin added
  (``host_cas``), so that npm reaches its registry where the network re-signs TLS.

Every image says where it came from in ``io.edu.provenance.*`` labels. ``bootstrap`` does no
work when the image is already there with the same provenance.

Introduced in notebooks/04-images.
"""

from __future__ import annotations

import email.utils
import gzip
import hashlib
import io
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import tarfile
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from .. import kernel, overlay, paths
from . import layers
from .store import OCI_LAYER_GZIP, Image, Store, StoreError, canonical_json, sha256_file

NAMES = ("busybox", "debian", "python", "node")
SUITE = "bookworm"
#: The Debian releases ``debian`` can be made of, by tag: Debian 12 (the default) and 11.
SUITES = {"12": "bookworm", "bookworm": "bookworm", "11": "bullseye", "bullseye": "bullseye"}
DEFAULT_MIRROR = "http://deb.debian.org/debian"
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#: Bump when a recipe changes, so images made by the old recipe are rebuilt.
RECIPE = "1"

SOURCE = "org.opencontainers.image.source"
VERSION = "org.opencontainers.image.version"
PACKAGES = "io.edu.provenance.packages"
BUILT_BY = "io.edu.provenance.built-by"
RECIPE_LABEL = "io.edu.provenance.recipe"
SUITE_LABEL = "io.edu.provenance.suite"
MIRROR_LABEL = "io.edu.provenance.mirror"
BASE_LABEL = "io.edu.provenance.base"

# The minimal /dev apt needs inside the build root. Host nodes are bind-mounted onto empty
# files in a tmpfs, so nothing device-like ever reaches the layer.
_DEV_NODES = ("null", "zero", "full", "random", "urandom", "tty")
# Host files the build needs to reach the mirror: DNS servers, and /etc/hosts because a host
# may pin the mirror's name there (this course's VM does).
_HOST_FILES = ("etc/resolv.conf", "etc/hosts")
_PR_SET_PDEATHSIG = 1
_START_FAILED = "edu bootstrap: could not start: "


class BootstrapError(Exception):
    """A base image could not be built; the message says what failed and how to fix it."""


# ---- the entry point ----------------------------------------------------------------------

def bootstrap(store: Store, name: str, *, progress: bool = True, refresh: bool = False
              ) -> Image:
    """Build the base image ``name`` (busybox, debian, python, node), or return the one we have.

    ``refresh=True`` rebuilds ``name`` even if an image with the same provenance exists (for
    python and node, the debian base is reused if it is current).
    """
    base, _, version = name.partition(":")
    if not refresh and os.geteuid() != 0:  # a student: this machine's shared copy, if any
        from . import shared

        taken = shared.take(store, name)
        if taken is not None:
            return taken
    with store.lease():  # the base of python and node stays while apt-get runs over it
        if name == "busybox":
            return _busybox(store, progress, refresh)
        if base == "debian" and (not version or version in ("latest", *SUITES)):
            return _debian(store, progress, refresh, SUITES.get(version, SUITE))
        if name in _APT_IMAGES:
            return _apt_image(store, name, progress, refresh)
    raise BootstrapError(f"cannot bootstrap {name!r}: edu builds only its own base images "
                         f"(known: {', '.join(NAMES)}, and debian:11 beside debian:12)")


def _existing(store: Store, tag: str, want: dict[str, str]) -> Image | None:
    """The image tagged ``tag`` if its labels include ``want`` and its layers are unpacked."""
    try:
        image = store.use(tag)
    except StoreError:
        return None
    labels = image.config.get("config", {}).get("Labels") or {}
    if any(labels.get(key) != value for key, value in want.items()):
        return None
    if not all(store.layer_dir(d).is_dir() for d in image.diff_ids):
        return None
    return image


# ---- busybox ------------------------------------------------------------------------------

def _busybox(store: Store, progress: bool, refresh: bool) -> Image:
    version = _host_package_version("busybox-static")
    want = {PACKAGES: f"busybox-static={version}", BUILT_BY: "edu bootstrap",
            RECIPE_LABEL: RECIPE}
    found = _existing(store, "busybox:latest", want)
    if found and not refresh:
        return found
    binary = Path("/bin/busybox")
    bar = _Progress("busybox", ["applets", "layer", "store"], progress)
    try:
        applets = _busybox_applets(binary)
        epoch = _package_epoch("busybox-static", binary)
        created = _rfc3339(epoch)
        bar.phase("layer")
        with store.staging() as stage:
            blob, diff_id = _write_tar_layer(stage, _busybox_entries(binary, applets, epoch))
            labels = {**want, SOURCE: "debian:busybox-static", VERSION: version}
            history = [
                {"created": created, "created_by":
                 f"edu bootstrap busybox: /bin/busybox from Debian's busybox-static {version}, "
                 f"{len(applets)} applet symlinks, /etc/passwd, /etc/group"},
                _cmd_history(created, ["sh"]),
            ]
            config = _config([diff_id], ["sh"], labels, created, history)
            bar.phase("store")
            tags = ["busybox:latest"] + [f"busybox:{t}" for t in _version_tags(version, 3)]
            return _add(store, config, [], blob, tags)
    finally:
        bar.close()


def _busybox_applets(binary: Path) -> list[str]:
    """``busybox --list-full``: applet paths such as ``bin/sh`` and ``usr/bin/awk``."""
    try:
        out = subprocess.run([str(binary), "--list-full"], capture_output=True, text=True,
                             check=True).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        raise BootstrapError(f"could not list the applets of {binary} ({exc}); reinstall it "
                             "with 'apt-get install --reinstall busybox-static'") from None
    return sorted({p.strip("/") for p in out.split() if p.strip("/") != "bin/busybox"})


def _busybox_entries(binary: Path, applets: list[str], mtime: int
                     ) -> list[tuple[tarfile.TarInfo, bytes | None]]:
    """Every member of the busybox layer, as (header, content) pairs, owned by root."""
    # Symlinks rather than Docker's hardlinks: `ls -l /bin` then shows a student that every
    # command is busybox; the layer's size counts the binary once (tools that add up file
    # sizes count each hardlink again); and a relative target (../../bin/busybox) resolves
    # the same inside the container and when the layer dir is browsed from the host.
    dirs = {"bin": 0o755, "dev": 0o755, "etc": 0o755, "home": 0o755, "proc": 0o755,
            "root": 0o700, "sys": 0o755, "tmp": 0o1777, "usr": 0o755, "var": 0o755}
    entries: list[tuple[tarfile.TarInfo, bytes | None]] = []
    for applet in applets:
        parent = os.path.dirname(applet)
        while parent and parent not in dirs:
            dirs[parent] = 0o755
            parent = os.path.dirname(parent)
        target = os.path.relpath("bin/busybox", os.path.dirname(applet) or ".")
        entries.append((_member(applet, tarfile.SYMTYPE, 0o777, mtime, link=target), None))
    entries += [(_member(d, tarfile.DIRTYPE, mode, mtime), None) for d, mode in dirs.items()]
    files = {
        "bin/busybox": (binary.read_bytes(), 0o755),
        "etc/passwd": (b"root:x:0:0:root:/root:/bin/sh\n"
                       b"nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n", 0o644),
        "etc/group": (b"root:x:0:\nnobody:x:65534:\n", 0o644),
    }
    for name, (data, mode) in files.items():
        entries.append((_member(name, tarfile.REGTYPE, mode, mtime, size=len(data)), data))
    return sorted(entries, key=lambda e: e[0].name.split("/"))


def _member(name: str, kind: bytes, mode: int, mtime: int, *, size: int = 0,
            link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)  # uid, gid 0 and no user or group names: root's
    info.type, info.mode, info.mtime, info.size, info.linkname = kind, mode, mtime, size, link
    return info


def _write_tar_layer(stage: Path, entries: list[tuple[tarfile.TarInfo, bytes | None]]
                     ) -> tuple[Path, str]:
    """Write ``entries`` as a gzipped layer in ``stage``: (blob path, diff_id)."""
    tar_path, blob = stage / "layer.tar", stage / "layer.tar.gz"
    with tarfile.open(tar_path, "w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    # gzip's header holds a time and a file name; mtime=0 and no name keep the blob stable.
    # Level 1, as edu build's layers: the store can then keep it as its unpacked layer alone
    # (tarsplit), and it compresses three times faster.
    with open(tar_path, "rb") as src, open(blob, "wb") as raw, \
            gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=1) as gz:
        shutil.copyfileobj(src, gz, 1 << 20)
    return blob, sha256_file(tar_path)


def _package_epoch(package: str, fallback: Path) -> int:
    """When the installed package was built: its newest changelog entry (SOURCE_DATE_EPOCH)."""
    newest = 0
    for changelog in Path(f"/usr/share/doc/{package}").glob("changelog.Debian*.gz"):
        try:
            text = gzip.decompress(changelog.read_bytes()).decode(errors="replace")
        except (OSError, EOFError):
            continue
        for line in text.splitlines():
            if line.startswith(" -- ") and "  " in line[4:]:
                try:
                    when = email.utils.parsedate_to_datetime(line.rsplit("  ", 1)[1])
                except (TypeError, ValueError):
                    continue
                newest = max(newest, int(when.timestamp()))
                break  # the first trailer is the newest entry
    return newest or int(fallback.stat().st_mtime)


# ---- debian -------------------------------------------------------------------------------

def _debian(store: Store, progress: bool, refresh: bool, suite: str = SUITE) -> Image:
    mirror = host_mirror(SUITE)  # the host's Debian mirror, which keeps older releases too
    want = {SUITE_LABEL: suite, MIRROR_LABEL: mirror, BUILT_BY: "edu bootstrap",
            RECIPE_LABEL: RECIPE}
    found = _existing(store, f"debian:{suite}", want)
    if found and not refresh:
        return found
    _need_root("debian")
    debootstrap = shutil.which("debootstrap") or shutil.which("/usr/sbin/debootstrap")
    if not debootstrap:
        raise BootstrapError("debootstrap is not installed, and the debian image is made with "
                             "it: run 'apt-get install debootstrap' (scripts/setup.sh does), "
                             "then try again")
    _check_mirror(mirror, suite)
    cache = paths.ensure(paths.cache_dir() / "debootstrap")
    bar = _Progress(f"debian:{suite}", ["debootstrap", "tidy", "layer", "store"], progress)
    try:
        with store.staging() as stage:
            rootfs = stage / "rootfs"
            _seed_docker_defaults(rootfs)
            argv = [debootstrap, "--variant=minbase", f"--cache-dir={cache}", suite,
                    str(rootfs), mirror]
            code, tail, log = _run(argv, _BUILD_ENV, "debian", bar)
            if code != 0:
                raise BootstrapError(
                    f"debootstrap failed (exit {code}) while building debian:{suite} from "
                    f"{mirror}. Its last lines:\n{_tail(tail, rootfs / 'debootstrap')}\n"
                    f"Full output: {log}. If it could not download, check that the mirror is "
                    "reachable, then run 'edu bootstrap debian' again.")
            bar.phase("tidy")
            epoch = _release_epoch(rootfs) or int(time.time())
            packages = _dpkg_list(rootfs / "var/lib/dpkg")
            version = (rootfs / "etc/debian_version").read_text().strip()
            _tidy_debian(rootfs)
            bar.phase("layer")
            blob, stats = _pack(stage, rootfs, upper=False)
            created = _rfc3339(epoch)
            listing = "\n".join(packages) + "\n"
            labels = {**want, SOURCE: "debian:debootstrap", VERSION: version,
                      f"{PACKAGES}.count": str(len(packages)),
                      f"{PACKAGES}.sha256": hashlib.sha256(listing.encode()).hexdigest()}
            history = [
                {"created": created,
                 "created_by": f"debootstrap --variant=minbase {suite} / {mirror}",
                 "comment": f"edu bootstrap: {len(packages)} packages: {' '.join(packages)}"},
                _cmd_history(created, ["bash"]),
            ]
            config = _config([stats.diff_id], ["bash"], labels, created, history)
            bar.phase("store")
            major = version.split(".")[0]
            tags = [f"debian:{suite}"] + ([f"debian:{major}"] if major.isdigit() else [])
            latest = ["debian:latest"] if suite == SUITE else []
            return _add(store, config, [], blob, tags + latest, stats.digest)
    finally:
        bar.close()


def _seed_docker_defaults(rootfs: Path) -> None:
    """Two settings Docker's debian image has, written before debootstrap runs so that its
    own dpkg calls use them too.

    ``force-unsafe-io``: dpkg does not fsync every file it unpacks, which takes debootstrap
    from about 46 s to 33 s here. Safe, because a build that crashes is thrown away whole.
    ``Acquire::Languages "none"``: apt-get update skips translations (6 MB every time).
    Both stay in the image and speed up every later apt-get the same way.
    """
    files = {"etc/dpkg/dpkg.cfg.d/docker-apt-speedup": "force-unsafe-io\n",
             "etc/apt/apt.conf.d/docker-no-languages": 'Acquire::Languages "none";\n'}
    for rel, text in files.items():
        path = rootfs / rel
        for parent in reversed(Path(rel).parents):  # ".", "etc", "etc/dpkg", ...
            (rootfs / parent).mkdir(exist_ok=True)
            (rootfs / parent).chmod(0o755)  # not the umask's: these become the image's dirs
        path.write_text(text)
        path.chmod(0o644)


def host_mirror(suite: str = SUITE, apt_dir: Path = Path("/etc/apt")) -> str:
    """The Debian mirror this host's apt uses for ``suite``; deb.debian.org if it has none."""
    files = [apt_dir / "sources.list"] + sorted((apt_dir / "sources.list.d").glob("*"))
    for path in files:
        try:
            text = path.read_text()
        except OSError:
            continue
        if path.suffix == ".sources":
            entries = _deb822_sources(text)
        elif path.suffix == ".list":
            entries = _one_line_sources(text)
        else:
            continue
        for uri, suites in entries:
            if suite in suites and uri.startswith(("http://", "https://", "file:/")):
                return uri.rstrip("/")
    return DEFAULT_MIRROR


def _deb822_sources(text: str) -> list[tuple[str, list[str]]]:
    """(URI, suites) of each enabled ``Types: deb`` stanza of a ``.sources`` file."""
    found = []
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if line.startswith("#") or ":" not in line or line[:1].isspace():
                continue
            key, _, value = line.partition(":")
            fields[key.strip().lower()] = value.strip()
        if "deb" in fields.get("types", "").split() and fields.get("enabled", "yes") != "no":
            suites = fields.get("suites", "").split()
            found += [(uri, suites) for uri in fields.get("uris", "").split()]
    return found


def _one_line_sources(text: str) -> list[tuple[str, list[str]]]:
    """(URI, [suite]) of each ``deb`` line of a ``sources.list`` file."""
    found = []
    for line in text.splitlines():
        line = re.sub(r"\[[^\]]*\]", " ", line.split("#", 1)[0])  # drop [arch=... signed-by=]
        words = line.split()
        if len(words) >= 3 and words[0] == "deb":
            found.append((words[1], [words[2]]))
    return found


def _check_mirror(mirror: str, suite: str = SUITE) -> None:
    """Fail early, in one sentence, if the mirror does not answer for ``suite``."""
    url = f"{mirror}/dists/{suite}/Release"
    try:
        urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=20).close()
    except urllib.error.HTTPError as exc:
        raise BootstrapError(f"the Debian mirror {mirror} answered {exc.code} for {url}: it "
                             f"does not carry {suite}. Fix the mirror in /etc/apt/sources.list"
                             ".d/debian.sources (or /etc/apt/sources.list).") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise BootstrapError(f"cannot reach the Debian mirror {mirror} ({reason}). Building "
                             "the debian, python and node images downloads packages from it: "
                             "check the network (apt-get update should work), then try "
                             "again.") from None


def _release_epoch(rootfs: Path) -> int | None:
    """The ``Date:`` of the suite's Release file debootstrap used: when the mirror was cut."""
    for release in sorted((rootfs / "var/lib/apt/lists").glob("*Release")):
        for line in release.read_text(errors="replace").splitlines():
            if line.startswith("Date:"):
                try:
                    return int(email.utils.parsedate_to_datetime(line[5:].strip()).timestamp())
                except (TypeError, ValueError):
                    break
    return None


def _tidy_debian(rootfs: Path) -> None:
    """What debuerreotype removes, and Docker-like defaults for the host files debootstrap
    copied in."""
    junk = ["var/cache/apt/*.bin", "var/cache/apt/archives/*.deb",
            "var/cache/apt/archives/partial/*", "var/lib/apt/lists/*", "var/log/apt/*",
            "var/log/dpkg.log", "var/log/bootstrap.log", "var/log/alternatives.log",
            "var/cache/ldconfig/aux-cache", "dev/*", "proc/*", "sys/*"]
    for pattern in junk:
        for path in rootfs.glob(pattern):
            # Never through a symlink: a rootfs can point anywhere on the host.
            if not os.path.realpath(path.parent).startswith(str(rootfs.resolve()) + "/"):
                continue
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
    # debootstrap copies the host's resolv.conf and hostname. Docker's debian has its own
    # (debuerreotype writes them); a runtime mounts the real ones over these at run time,
    # which is also how the python and node builds below reach the mirror.
    defaults = {
        "etc/resolv.conf": "# https://1.1.1.1 (privacy-focused, highly-available DNS service)\n"
                           "nameserver 1.1.1.1\nnameserver 1.0.0.1\n",
        "etc/hostname": "localhost\n",
        "etc/hosts": "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n",
    }
    for name, text in defaults.items():
        target = rootfs / name
        if target.is_symlink():
            target.unlink()
        target.write_text(text)
        target.chmod(0o644)


def _pack(stage: Path, src: Path, *, upper: bool) -> tuple[Path, layers.PackStats]:
    """Pack ``src`` as a gzipped layer blob in ``stage`` (level 1: see _write_tar_layer)."""
    blob = stage / "layer.tar.gz"
    with open(blob, "wb") as out:
        stats = layers.pack(src, out, upper=upper, compress=True, level=1)
    return blob, stats


# ---- python and node: a RUN layer on top of debian ----------------------------------------

# name -> (Debian packages, the first naming the image's version; Cmd; how many version
# parts the tags keep: python:3.11, node:18). node has npm, as every node image on Docker Hub
# has, so the primer's `RUN npm install` works on `FROM node` (lesson 09). Debian 12's npm is
# its own 9.2 with its dependencies as about 250 node-* packages: 157 MB and about 25 s more
# to build, once, where the npm bundled in Docker Hub's images is about 10 MB.
_APT_IMAGES: dict[str, tuple[str, list[str], int]] = {
    "python": ("python3", ["python3"], 2),
    "node": ("nodejs npm", ["node"], 1),
}

#: The certificate authorities this host's admin added (update-ca-certificates reads them
#: from here; Debian leaves it empty). Where a network re-signs TLS on its way out (a proxy
#: that inspects it, as many schools and companies run), a build's `npm install` trusts the
#: registry only with that CA, so the images that fetch over TLS get them, as a company's own
#: base images do. Named, with their digests, in a label; none added where there are none.
HOST_CA_DIR = Path("/usr/local/share/ca-certificates")
HOST_CA_LABEL = "io.edu.provenance.host-ca"
_TRUSTS_HOST_CAS = ("node",)
_HOST_CA_MOUNT = "/tmp/host-ca"  # on the build root's tmpfs: never in the layer

_BUILD_ENV = {"PATH": PATH_ENV.partition("=")[2], "HOME": "/root", "LC_ALL": "C",
              "DEBIAN_FRONTEND": "noninteractive"}


def _apt_script(package: str, host_cas: bool = False) -> str:
    """The shell line the build runs in the chroot; it is also the layer's history entry."""
    # Everything deleted here was created in the upper dir by this very script (the debian
    # image has no lists, caches or logs), so deleting it leaves no whiteout in the layer.
    script = (f"apt-get -q update && apt-get -q install -y --no-install-recommends {package} "
              "&& rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin "
              "/var/cache/apt/archives/*.deb /var/log/apt/* /var/log/dpkg.log "
              "/var/log/alternatives.log /var/cache/ldconfig/aux-cache")
    if host_cas:
        script += (f" && cp {_HOST_CA_MOUNT}/*.crt /usr/local/share/ca-certificates/ "
                   "&& update-ca-certificates")
    return script


def host_cas(where: Path = HOST_CA_DIR) -> dict[str, str]:
    """The host's added CA certificates (``*.crt``, as update-ca-certificates takes them):
    name -> sha256."""
    try:
        names = sorted(p.name for p in where.glob("*.crt") if p.is_file())
    except OSError:
        return {}
    return {n: hashlib.sha256((where / n).read_bytes()).hexdigest() for n in names}


def _apt_image(store: Store, name: str, progress: bool, refresh: bool) -> Image:
    package, cmd, tag_depth = _APT_IMAGES[name]
    main = package.split()[0]
    base = bootstrap(store, "debian", progress=progress)
    base_labels = base.config.get("config", {}).get("Labels") or {}
    want = {BASE_LABEL: base.id, SOURCE: "debian:" + ",".join(package.split()),
            BUILT_BY: "edu bootstrap", RECIPE_LABEL: RECIPE}
    cas = host_cas() if name in _TRUSTS_HOST_CAS else {}
    if name in _TRUSTS_HOST_CAS:  # a CA added on the host later rebuilds the image
        want[HOST_CA_LABEL] = " ".join(f"{n}={d}" for n, d in cas.items())
    found = _existing(store, f"{name}:latest", want)
    if found and not refresh:
        return found
    _need_root(name)
    mirror = base_labels.get(MIRROR_LABEL, DEFAULT_MIRROR)
    _check_mirror(mirror)
    lower = store.lowerdirs(base)
    _check_build_targets(lower)
    script = _apt_script(package, bool(cas))
    bar = _Progress(name, ["apt-get", "layer", "store"], progress)
    try:
        with store.staging() as stage:
            upper, work, merged = stage / "upper", stage / "work", stage / "merged"
            for d in (upper, work, merged):
                d.mkdir()
            upper.chmod(0o755)  # the upper dir's mode is the merged root's mode
            opts = overlay.mount_options(lower, upper, work, rootless=False)
            code, tail, log = _run(["/bin/sh", "-c", script], _BUILD_ENV, name, bar,
                                   prepare=lambda: _enter_build_root(merged, opts,
                                                                     host_cas=bool(cas)))
            if code != 0:
                raise BootstrapError(
                    f"apt-get failed (exit {code}) installing {package} into the {name} image, "
                    f"inside a chroot of debian:{SUITE}. Its last lines:\n{_tail(tail)}\n"
                    f"Full output: {log}. If apt could not download from {mirror}, check the "
                    f"network, then run 'edu bootstrap {name}' again.")
            bar.phase("layer")
            before = set(_dpkg_list(_admindir(lower)))
            added = [p for p in _dpkg_list(upper / "var/lib/dpkg") if p not in before]
            version = _version_of(main, added)
            blob, stats = _pack(stage, upper, upper=True)
            created = _rfc3339(int(time.time()))
            labels = {**want, VERSION: version, PACKAGES: " ".join(added),
                      SUITE_LABEL: base_labels.get(SUITE_LABEL, SUITE), MIRROR_LABEL: mirror,
                      "org.opencontainers.image.base.name": f"docker.io/library/debian:{SUITE}",
                      "org.opencontainers.image.base.digest": base.manifest_digest}
            history = base.config.get("history", []) + [
                {"created": created, "created_by": f"/bin/sh -c {script}",
                 "comment": f"edu bootstrap: {len(added)} packages: {' '.join(added)}"},
                _cmd_history(created, cmd),
            ]
            config = _config(base.diff_ids + [stats.diff_id], cmd, labels, created, history,
                             env=base.config.get("config", {}).get("Env"))
            bar.phase("store")
            base_blobs = [(d["digest"], d["mediaType"]) for d in base.manifest["layers"]]
            tags = [f"{name}:{t}" for t in _version_tags(version, tag_depth)]
            return _add(store, config, base_blobs, blob, tags + [f"{name}:latest"],
                        stats.digest)
    finally:
        bar.close()


def _check_build_targets(lower: list[Path]) -> None:
    """Refuse a base whose mount targets are symlinks or missing: see _enter_build_root."""
    for rel in ("proc", "sys", "dev", "tmp", "etc") + _HOST_FILES:
        for layer in lower:
            if (layer / rel).is_symlink():
                raise BootstrapError(f"the base image's /{rel} is a symlink, so the build "
                                     "cannot mount over it safely: run 'edu bootstrap debian "
                                     "--refresh'")
        if not any((layer / rel).exists() for layer in lower):
            raise BootstrapError(f"the base image has no /{rel}, which the build mounts over: "
                                 "run 'edu bootstrap debian --refresh'")


def _enter_build_root(merged: Path, opts: str, *, host_cas: bool = False) -> None:
    """In the build child, in its own mount namespace: assemble the root and chroot into it.

    Nothing here is ever unmounted by hand. Every mount lives in the child's private mount
    namespace, and a namespace is destroyed, with all its mounts, when its last process
    exits. That happens after success, after an error, and after Ctrl-C or SIGKILL. So the
    host never sees these mounts, and deleting the staging dir afterwards can never reach
    through one of them into the host's /proc, /sys or /dev.
    """
    m = str(merged)
    kernel.mount("overlay", m, "overlay", 0, opts)
    kernel.mount("proc", f"{m}/proc", "proc", kernel.MS_NOSUID | kernel.MS_NODEV
                 | kernel.MS_NOEXEC)
    _bind("/sys", f"{m}/sys", readonly=True)
    kernel.mount("tmpfs", f"{m}/dev", "tmpfs", kernel.MS_NOSUID | kernel.MS_NOEXEC,
                 "mode=755,size=64k")
    for node in _DEV_NODES:
        open(f"{m}/dev/{node}", "w").close()  # on the tmpfs, not in the layer
        _bind(f"/dev/{node}", f"{m}/dev/{node}", readonly=False)
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                         ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):
        os.symlink(target, f"{m}/dev/{name}")
    kernel.mount("tmpfs", f"{m}/tmp", "tmpfs", kernel.MS_NOSUID | kernel.MS_NODEV, "mode=1777")
    if host_cas:  # read by the script's cp, from the tmpfs: the layer never sees the mount
        os.mkdir(f"{m}{_HOST_CA_MOUNT}")
        _bind(str(HOST_CA_DIR), f"{m}{_HOST_CA_MOUNT}", readonly=True)
    # resolv.conf and hosts: the host's, bind-mounted read-only over the image's own files.
    # A mount is not a write, so overlay copies nothing up: the upper dir, and so the layer,
    # never holds the host's files, nor a whiteout for deleting them afterwards. (Copying the
    # host's file in and deleting it later would leave a whiteout hiding the image's
    # resolv.conf.) The targets exist in the base and are not symlinks: _check_build_targets.
    for rel in _HOST_FILES:
        if os.path.exists(f"/{rel}"):
            _bind(f"/{rel}", f"{m}/{rel}", readonly=True)
    os.chroot(m)
    os.chdir("/")


def _bind(source: str, target: str, *, readonly: bool) -> None:
    kernel.mount(source, target, None, kernel.MS_BIND)
    if readonly:  # a bind mount takes MS_RDONLY only on a remount
        kernel.mount("none", target, None, kernel.MS_BIND | kernel.MS_REMOUNT | kernel.MS_RDONLY)


def _admindir(lower: list[Path]) -> Path:
    """The dpkg database of the topmost layer that has one."""
    for layer in lower:
        if (layer / "var/lib/dpkg/status").exists():
            return layer / "var/lib/dpkg"
    raise BootstrapError("the base image has no dpkg database: run 'edu bootstrap debian "
                         "--refresh'")


def _version_of(package: str, listing: list[str]) -> str:
    for entry in listing:
        name, _, version = entry.partition("=")
        if name == package:
            return version
    raise BootstrapError(f"apt-get finished but {package} is not installed in the new layer; "
                         "see the log above and run the bootstrap again")


# ---- running a command in a private mount namespace ---------------------------------------

def _run(argv: list[str], env: dict[str, str], name: str, bar: _Progress,
         prepare: Callable[[], None] | None = None) -> tuple[int, deque[str], Path]:
    """Run ``argv`` in a forked child, in its own mount namespace; stream its output.

    Returns (exit code or -signal, the last output lines, the log file). Not
    ``kernel.in_child``: that blocks until the child exits, so it could neither show the
    output as it comes nor stop the child on Ctrl-C. On any exception here, Ctrl-C included,
    the child's whole process group is killed and the child reaped before re-raising.
    """
    log = paths.ensure(paths.cache_dir() / "bootstrap") / f"{name}.log"
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        _child(read_end, write_end, argv, env, prepare)  # never returns
    os.close(write_end)
    try:
        os.setpgid(pid, pid)  # the child does this too; whoever is first wins the race
    except OSError:
        pass
    tail: deque[str] = deque(maxlen=25)
    try:
        with open(read_end, "rb") as out, open(log, "wb") as keep:
            for raw in out:
                keep.write(raw)
                line = raw.decode(errors="replace").rstrip()
                if line:
                    tail.append(line)
                    bar.line(line)
        code = kernel.wait_status(pid)
    except BaseException:
        _stop(pid)
        raise
    if code == 127 and tail and tail[-1].startswith(_START_FAILED):
        raise BootstrapError(f"could not start the {name} build: {tail[-1][len(_START_FAILED):]}"
                             ". It needs root, mount namespaces and overlayfs; 'edu doctor' "
                             "checks them.")
    return code, tail, log


def _child(read_end: int, write_end: int, argv: list[str], env: dict[str, str],
           prepare: Callable[[], None] | None) -> None:
    # Only syscalls, then exec: safe after fork even in a threaded Jupyter kernel.
    try:
        os.close(read_end)
        os.setpgid(0, 0)  # its own process group, so the parent can stop all of it
        kernel.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)  # and it dies if the parent does
        for sig in (signal.SIGPIPE, signal.SIGXFSZ):  # Python ignores these; exec keeps that
            signal.signal(sig, signal.SIG_DFL)
        null = os.open("/dev/null", os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(write_end, 1)
        os.dup2(write_end, 2)
        kernel.unshare(kernel.CLONE_NEWNS)
        # Private, recursively: our mounts must not propagate to the host, nor its to us.
        kernel.mount("none", "/", None, kernel.MS_REC | kernel.MS_PRIVATE)
        if prepare:
            prepare()
        os.execve(argv[0], argv, env)
    except BaseException as exc:  # noqa: B036 - a forked child must never return
        try:
            os.write(2, f"{_START_FAILED}{exc}\n".encode())
        except OSError:
            pass
    finally:
        os._exit(127)


def _stop(pid: int) -> None:
    """SIGTERM the child's process group, SIGKILL whatever is left, and reap the child."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        kernel.wait_status(pid, timeout=10)  # SIGKILLs the child itself after 10 s
    except ChildProcessError:
        pass  # already reaped
    try:
        os.killpg(pid, signal.SIGKILL)  # grandchildren (dpkg, a maintainer script) too
    except ProcessLookupError:
        pass


def _tail(lines: deque[str], debootstrap_dir: Path | None = None) -> str:
    """The last output lines, and the tail of debootstrap's own log if it left one."""
    text = list(lines)
    extra = debootstrap_dir / "debootstrap.log" if debootstrap_dir else None
    if extra and extra.exists():
        text += ["--- debootstrap.log:"] + extra.read_text(errors="replace").splitlines()[-15:]
    return "\n".join("    " + line for line in text)


class _NoBar:
    """What _Progress talks to when no bar is wanted."""

    def update(self, n: int = 1) -> None:
        """Nothing to draw."""

    def set_postfix_str(self, text: str) -> None:
        """Nothing to draw."""

    def close(self) -> None:
        """Nothing to close."""


class _Progress:
    """One tqdm bar per image: a tick per phase, and a long command's latest line."""

    def __init__(self, image: str, phases: list[str], enabled: bool) -> None:
        if enabled:
            from ..progress import bar

            self._bar = bar(total=len(phases), desc=f"bootstrap {image}", unit="step",
                             leave=False)
        else:
            self._bar = _NoBar()
        self._bar.set_postfix_str(phases[0])
        self._last = 0.0

    def phase(self, name: str) -> None:
        """The previous phase is done; ``name`` begins."""
        self._bar.update(1)
        self._bar.set_postfix_str(name)

    def line(self, text: str) -> None:
        """Show a command's output line (at most five times a second)."""
        now = time.monotonic()
        if now - self._last > 0.2:
            self._last = now
            self._bar.set_postfix_str(text[:70])

    def close(self) -> None:
        """Remove the bar."""
        self._bar.close()


# ---- small shared pieces ------------------------------------------------------------------

def _need_root(name: str) -> None:
    if os.geteuid() != 0:
        raise BootstrapError(f"building the {name} image needs root: debootstrap and apt-get "
                             "install packages as root, in a chroot. Run 'sudo .venv/bin/edu "
                             f"bootstrap {name}' (root's images are in /var/lib/edu).")


def _host_package_version(package: str) -> str:
    """The installed version of a host package, or an error saying how to install it."""
    try:
        out = subprocess.run(["dpkg-query", "-W", "-f=${Status}\t${Version}", package],
                             capture_output=True, text=True).stdout
    except FileNotFoundError:
        raise BootstrapError("dpkg-query is missing: edu builds its base images from Debian "
                             "packages, so it needs a Debian or Ubuntu host") from None
    status, _, version = out.partition("\t")
    if status != "install ok installed" or not version:
        raise BootstrapError(f"{package} is not installed, and the image is built from it: "
                             f"run 'apt-get install {package}' (scripts/setup.sh does)")
    return version


def _dpkg_list(admindir: Path) -> list[str]:
    """``name=version`` of every installed package in a dpkg database, sorted by name."""
    out = subprocess.run(["dpkg-query", f"--admindir={admindir}", "-W",
                          "-f=${db:Status-Abbrev}\t${Package}=${Version}\n"],
                         capture_output=True, text=True, check=True).stdout
    return sorted(line.split("\t", 1)[1] for line in out.splitlines()
                  if line.startswith("ii"))


def _version_tags(debian_version: str, depth: int) -> list[str]:
    """Tags from a package version: ``1:1.35.0-4+b1`` at depth 3 gives 1.35.0, 1.35 and 1."""
    match = re.match(r"(?:\d+:)?(\d+(?:\.\d+)*)", debian_version)
    if not match:
        return []
    parts = match.group(1).split(".")
    return [".".join(parts[:n]) for n in range(min(depth, len(parts)), 0, -1)]


def _rfc3339(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _arch() -> str:
    """This machine's architecture, as OCI (Go's GOARCH) names it."""
    machine = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386",
            "ppc64le": "ppc64le", "s390x": "s390x", "riscv64": "riscv64"}.get(machine, machine)


def _cmd_history(created: str, cmd: list[str]) -> dict:
    """The history entry ``docker build`` writes for a CMD line."""
    return {"created": created, "created_by": f"/bin/sh -c #(nop)  CMD {json.dumps(cmd)}",
            "empty_layer": True}


def _config(diff_ids: list[str], cmd: list[str], labels: dict[str, str], created: str,
            history: list[dict], env: list[str] | None = None) -> bytes:
    """An OCI image config, as canonical JSON bytes (equal content, equal image ID)."""
    return canonical_json({
        "architecture": _arch(),
        "os": "linux",
        "created": created,
        "config": {"Env": env or [PATH_ENV], "Cmd": cmd, "Labels": labels},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": history,
    })


def _add(store: Store, config: bytes, base_blobs: list[tuple[str, str]], blob: Path,
         tags: list[str], expected: str | None = None) -> Image:
    """Store the new layer blob and the image, all or nothing."""
    with store.transaction():
        digest = store.put_blob_file(blob, expected)
        return store.add_image(config, base_blobs + [(digest, OCI_LAYER_GZIP)], tags)
