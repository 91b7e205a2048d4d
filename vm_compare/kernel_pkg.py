"""Fetch one pinned Debian guest kernel into the cache.

Why not boot the host's own ``/boot/vmlinuz``? Because the host kernel is whatever the machine
happens to run: a cloud kernel without virtio modules, a file only root may read (``/boot`` is
often mode 600), or no file at all inside a container. The comparison in the lessons is only
fair if every student's VM boots the *same* kernel, so we take Debian's ``linux-image-amd64``,
resolve it to the one versioned package it points at (``linux-image-6.1.0-NN-amd64``), and pin
that exact version in a manifest. ``apt-get download`` needs no root, and ``dpkg-deb -x``
unpacks without installing anything, so the host's package database is never touched.

What we keep: ``boot/vmlinuz-*`` (what QEMU's ``-kernel`` loads) and ``lib/modules/*`` (later
lessons load ``virtio_blk`` and ``ext4`` from it). Everything is made world-readable, because
``qemu:///system`` runs QEMU as the ``libvirt-qemu`` user, which must open these files.

Introduced in notebooks/01-containers-vs-vms.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from edu_runtime import paths

METAPACKAGE = "linux-image-amd64"
MANIFEST = "kernel.json"


class KernelFetchError(RuntimeError):
    """A guest-kernel step failed; the message says what, why, and the fix."""


@dataclass(frozen=True)
class KernelInfo:
    """One unpacked guest kernel, as recorded in its ``kernel.json`` manifest."""

    package: str  # e.g. linux-image-6.1.0-56-amd64
    version: str  # the Debian package version, e.g. 6.1.192-2
    deb_sha256: str  # sha256 of the .deb we unpacked (the .deb itself is deleted)
    release: str  # what `uname -r` prints inside the guest, e.g. 6.1.0-56-amd64
    root: Path  # cache_dir()/guest/kernel/<version>
    vmlinuz: Path  # root/boot/vmlinuz-<release>
    modules_dir: Path  # root/lib/modules/<release>

    def to_json(self) -> dict:
        """The manifest as JSON: paths are relative to ``root``, so the cache can move."""
        data = asdict(self)
        del data["root"]
        data["vmlinuz"] = str(self.vmlinuz.relative_to(self.root))
        data["modules_dir"] = str(self.modules_dir.relative_to(self.root))
        return data


def kernel_root() -> Path:
    """Directory that holds one sub-directory per fetched kernel version."""
    return paths.cache_dir() / "guest" / "kernel"


#: Root's cache (``make lab`` fills it), readable by everyone: a user boots its kernel too.
SYSTEM_KERNEL_ROOT = Path("/var/cache/edu/guest/kernel")


def installed_kernel() -> KernelInfo | None:
    """The most recently fetched guest kernel whose files are all present, or None.

    A plain user also looks in the system's cache: a classroom's students share the kernel
    the set-up fetched as root (it is world-readable, as qemu:///session needs), instead of
    each downloading 70 MB into their own cache.
    """
    roots = [kernel_root()]
    if os.geteuid() != 0 and SYSTEM_KERNEL_ROOT not in roots:
        roots.append(SYSTEM_KERNEL_ROOT)
    found = [m for root in roots for m in root.glob(f"*/{MANIFEST}")]
    manifests = sorted(found, key=lambda p: p.stat().st_mtime)
    for manifest in reversed(manifests):
        info = _read_manifest(manifest)
        if info is not None:
            return info
    return None


def ensure_kernel(progress: Callable[[str], object] = print) -> KernelInfo:
    """Return the cached guest kernel, fetching the pinned Debian package first if needed."""
    info = installed_kernel()
    if info is not None:
        return info
    _require_tools()
    root = paths.ensure(kernel_root())
    _make_readable_path(root)
    # One fetch at a time: two `edu doctor --fetch` runs would otherwise download 70 MB twice.
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        info = installed_kernel()  # somebody else may have finished while we waited
        if info is not None:
            return info
        package = resolve_package()
        version = package_version(package)
        progress(f"guest kernel: {METAPACKAGE} -> {package} {version}")
        return _fetch(package, version, root, progress)


def resolve_package(metapackage: str = METAPACKAGE) -> str:
    """Resolve the metapackage to the single versioned kernel package it depends on."""
    out = _run(["apt-cache", "depends", metapackage], f"apt-cache depends {metapackage}")
    deps = [
        line.split(":", 1)[1].strip()
        for line in out.splitlines()
        if line.strip().startswith("Depends:")
    ]
    images = [d for d in deps if d.startswith("linux-image-") and not d.startswith("<")]
    if len(images) != 1:
        raise KernelFetchError(
            f"'{metapackage}' should depend on exactly one linux-image package, found {images}. "
            "Fix: run 'apt-get update' so apt knows Debian's current kernel."
        )
    return images[0]


def package_version(package: str) -> str:
    """The candidate version apt would download for ``package``."""
    out = _run(["apt-cache", "policy", package], f"apt-cache policy {package}")
    for line in out.splitlines():
        key, _, value = line.strip().partition(":")
        if key == "Candidate":
            value = value.strip()
            if value and value != "(none)":
                return value
    raise KernelFetchError(
        f"apt has no downloadable version of {package}. "
        "Fix: run 'apt-get update' (and check that the Debian mirror is in sources.list)."
    )


def _fetch(package: str, version: str, root: Path, progress) -> KernelInfo:
    """Download, unpack, prune and record one kernel; a final rename makes it appear at once."""
    work = Path(tempfile.mkdtemp(prefix=".fetch-", dir=root))
    try:
        progress(f"guest kernel: downloading {package}={version} (about 70 MB)")
        deb = _download(package, version, work)
        sha = _sha256(deb)
        progress(f"guest kernel: unpacking {deb.name}")
        tree = work / "tree"
        _run(["dpkg-deb", "-x", str(deb), str(tree)], f"dpkg-deb -x {deb.name}")
        deb.unlink()
        vmlinuz, modules = _prune(tree)
        final = root / version
        release = modules.name
        info = KernelInfo(
            package=package,
            version=version,
            deb_sha256=sha,
            release=release,
            root=final,
            vmlinuz=final / vmlinuz.relative_to(tree),
            modules_dir=final / modules.relative_to(tree),
        )
        (tree / MANIFEST).write_text(json.dumps(info.to_json(), indent=2, sort_keys=True) + "\n")
        _make_readable_tree(tree)
        if final.exists():  # a half-finished earlier attempt without a valid manifest
            shutil.rmtree(final)
        tree.rename(final)
        progress(f"guest kernel: ready in {final}")
        return info
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _download(package: str, version: str, work: Path) -> Path:
    """``apt-get download PKG=VERSION`` into ``work`` and return the .deb path."""
    cmd = ["apt-get", "download", "-q", f"{package}={version}"]
    if os.geteuid() == 0:
        # Root's apt drops to the _apt user, who cannot write our private temp dir; it would
        # fall back anyway, with a scary warning. Saying so up front keeps the output clean.
        cmd[2:2] = ["-o", "APT::Sandbox::User=root"]
    proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True)
    debs = sorted(work.glob("*.deb"))
    if proc.returncode != 0 or len(debs) != 1:
        detail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no .deb appeared"]
        raise KernelFetchError(
            f"apt-get download {package}={version} failed ({detail[0]}). "
            "Fix: run 'apt-get update' first, then check network access to the Debian mirror."
        )
    return debs[0]


def _prune(tree: Path) -> tuple[Path, Path]:
    """Keep only boot/vmlinuz-* and lib/modules/*; return (vmlinuz, modules dir)."""
    vmlinuz = sorted((tree / "boot").glob("vmlinuz-*"))
    modules = sorted((tree / "lib" / "modules").glob("*"))
    if len(vmlinuz) != 1 or len(modules) != 1:
        raise KernelFetchError(
            f"the kernel package has {len(vmlinuz)} vmlinuz files and {len(modules)} module "
            "trees, expected one of each. Fix: report this; Debian changed its package layout."
        )
    for child in tree.iterdir():
        if child.name not in ("boot", "lib"):
            shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
    for child in (tree / "boot").iterdir():
        if child != vmlinuz[0]:
            child.unlink()  # System.map and config are not needed to boot
    for child in (tree / "lib").iterdir():
        if child.name != "modules":
            shutil.rmtree(child)  # e.g. lib/firmware stubs
    return vmlinuz[0], modules[0]


def _read_manifest(manifest: Path) -> KernelInfo | None:
    """Load a manifest, or None when it is unreadable or its files have gone."""
    try:
        data = json.loads(manifest.read_text())
        root = manifest.parent
        info = KernelInfo(
            package=data["package"],
            version=data["version"],
            deb_sha256=data["deb_sha256"],
            release=data["release"],
            root=root,
            vmlinuz=root / data["vmlinuz"],
            modules_dir=root / data["modules_dir"],
        )
    except (OSError, ValueError, KeyError):
        return None
    if info.vmlinuz.is_file() and info.modules_dir.is_dir():
        return info
    return None


def _make_readable_tree(tree: Path) -> None:
    """Directories 0755, files 0644 (0755 if executable): libvirt's qemu user must read them."""
    for dirpath, _dirnames, filenames in os.walk(tree):
        os.chmod(dirpath, 0o755)
        for name in filenames:
            path = os.path.join(dirpath, name)
            if not os.path.islink(path):
                executable = os.stat(path).st_mode & 0o111
                os.chmod(path, 0o755 if executable else 0o644)


def _make_readable_path(path: Path) -> None:
    """Open up the cache directories we created on the way down to ``path``."""
    stop = paths.cache_dir().parent
    while path != stop and path != path.parent:
        if path.stat().st_uid == os.geteuid():
            os.chmod(path, 0o755)
        path = path.parent


def _require_tools() -> None:
    """Fail early, in a sentence, when this is not a Debian-like host."""
    missing = [tool for tool in ("apt-cache", "apt-get", "dpkg-deb") if not shutil.which(tool)]
    if missing:
        raise KernelFetchError(
            f"cannot fetch the guest kernel: {', '.join(missing)} not found. "
            "Fix: run this on the course's Debian machine (make lab sets it up)."
        )


def _run(cmd: list[str], what: str) -> str:
    """Run a command and return its stdout, or raise a KernelFetchError that names it."""
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        detail = proc.stderr.strip().splitlines()[-1:] or [f"exit code {proc.returncode}"]
        raise KernelFetchError(
            f"{what} failed ({detail[0]}). Fix: run 'apt-get update' and try again."
        )
    return proc.stdout


def _sha256(path: Path) -> str:
    """Hex sha256 of a file, read in chunks (the .deb is about 70 MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
