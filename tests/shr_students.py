"""Students for the classroom tests (issue 17): real Unix users named ``shr-...``.

tests/accounts.py makes the account (``useradd -m``, /etc/subuid, /run/user/UID, their own
copy of the course); here each test gets its own, named ``shr-<letter>-<pid>``, removed at
the end of the test (``userdel -r``) even when it fails. A shared image store for the test
is a root-owned directory under /tmp, removed afterwards too.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import accounts


@contextlib.contextmanager
def students(*letters: str) -> Iterator[list[accounts.Student]]:
    """One account per letter, made before and removed after the block, whatever happens."""
    made: list[accounts.Student] = []
    try:
        for letter in letters:
            old = accounts.PREFIX
            accounts.PREFIX = f"shr-{letter}-"
            try:
                made.append(accounts.create())
            finally:
                accounts.PREFIX = old
        yield made
    finally:
        for s in made:
            accounts.remove(s)


@contextlib.contextmanager
def shared_dir() -> Iterator[Path]:
    """An empty directory for shared images: root's, 0755, under /tmp (every user can reach
    it; pytest's own tmp_path is root's 0700)."""
    where = Path(f"/tmp/shr-shared-{uuid.uuid4().hex[:8]}")
    where.mkdir(mode=0o755)
    os.chmod(where, 0o755)
    try:
        yield where
    finally:
        shutil.rmtree(where, ignore_errors=True)
