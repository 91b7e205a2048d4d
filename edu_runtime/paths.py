"""Where edu keeps its files, per user.

Root uses the system paths (``/var/lib/edu``, ``/run/edu``, ``/var/cache/edu``); anyone else
uses the XDG paths under their home, so rootless students sharing one machine never see each
other's images or containers. Introduced in notebooks/00-start-here.
"""

from __future__ import annotations

import os
from pathlib import Path


def _xdg(var: str, default: str) -> Path:
    value = os.environ.get(var)
    return Path(value) if value else Path.home() / default


def is_root() -> bool:
    """True when running with euid 0 (system paths and full privileges)."""
    return os.geteuid() == 0


def state_dir() -> Path:
    """Persistent state: the image store, volumes, leases."""
    if "EDU_STATE_DIR" in os.environ:
        return Path(os.environ["EDU_STATE_DIR"])
    return Path("/var/lib/edu") if is_root() else _private(_xdg("XDG_DATA_HOME", ".local/share")
                                                          / "edu")


def run_dir() -> Path:
    """Runtime state that dies with the boot: container records, sockets, locks."""
    if "EDU_RUN_DIR" in os.environ:
        return Path(os.environ["EDU_RUN_DIR"])
    if is_root():
        return Path("/run/edu")
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    return _private(Path(runtime) / "edu" if runtime else Path(f"/tmp/edu-{os.getuid()}"))


class NotYours(PermissionError):
    """A user's edu directory belongs to someone else; the message says which and what to do."""


def _private(path: Path) -> Path:
    """A user's own edu directory, mode 0700: made so if missing, and closed if it was left
    open (a home made with umask 022 is 0755). On a machine shared by a class, no one else
    may read a user's containers, logs or images, nor put anything there (``/tmp/edu-UID``
    made first by someone else is refused)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        st = os.lstat(path)
    if st.st_uid != os.geteuid():
        raise NotYours(f"{path} belongs to uid {st.st_uid}, not to you (uid "
                              f"{os.geteuid()}): edu keeps your containers there, so it must "
                              "be your own. Remove it, or set XDG_RUNTIME_DIR to a directory "
                              "of yours.")
    if st.st_mode & 0o077:
        os.chmod(path, 0o700)
    return path


def cache_dir() -> Path:
    """Re-creatable downloads and builds: the guest kernel, probe guests, doctor verdicts.

    For root this is ``/var/cache/edu``, which libvirt's qemu user can read (``/root`` is
    mode 700, so a guest kernel kept there could not be opened by ``qemu:///system``).
    """
    if "EDU_CACHE_DIR" in os.environ:
        return Path(os.environ["EDU_CACHE_DIR"])
    return Path("/var/cache/edu") if is_root() else _xdg("XDG_CACHE_HOME", ".cache") / "edu"


def config_dir() -> Path:
    """Registry logins and settings: ``$EDU_CONFIG``, else ``~/.edu`` (Docker's ``~/.docker``).

    Per user even for root, as Docker's is: a login belongs to a person, not to the machine.
    """
    if os.environ.get("EDU_CONFIG"):
        return Path(os.environ["EDU_CONFIG"])
    return Path.home() / ".edu"


def ensure(path: Path, mode: int = 0o755) -> Path:
    """Create ``path`` (and parents) if missing and return it."""
    path.mkdir(parents=True, exist_ok=True, mode=mode)
    return path
