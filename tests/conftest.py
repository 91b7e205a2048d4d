"""Shared test helpers.

``need(condition, reason)`` skips a test on a host that cannot run it, but under CI (CI=true,
as .ci/run runs) a missing capability is a failure: CI's machine is set up to run everything,
so a skip there would hide a broken install step.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def need(condition: bool, reason: str) -> None:
    """Skip (locally) or fail (in CI) unless ``condition`` holds."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"CI must be able to run this, but: {reason}")
    pytest.skip(reason)


@pytest.fixture
def root():
    """The test needs root (CI runs as root)."""
    need(os.geteuid() == 0, "needs root")


@pytest.fixture(scope="session")
def python() -> str:
    """The interpreter running the tests (the project's .venv under make test)."""
    return sys.executable


HOST_PATHS = ["/", "/bin", "/etc", "/etc/passwd", "/home", "/root", "/run", "/tmp", "/usr",
              "/usr/bin", "/var", "/var/lib"]


def _host_fingerprint() -> dict[str, tuple[int, int, int]]:
    out = {}
    for p in HOST_PATHS:
        try:
            st = os.lstat(p)
            out[p] = (st.st_mode, st.st_uid, st.st_gid)
        except OSError:
            pass
    return out


@pytest.fixture(scope="session", autouse=True)
def host_is_untouched():
    """Tests unpack hostile layers and follow containers' symlinks: whatever they do, the
    host's own directories must keep their modes and owners (a bug here once chmodded /)."""
    before = _host_fingerprint()
    passwd = Path("/etc/passwd").read_bytes()
    yield
    assert _host_fingerprint() == before, "a test changed the host's directories"
    assert Path("/etc/passwd").read_bytes() == passwd, "a test changed /etc/passwd"
