"""A client that connects just as the supervisor idles out.

The supervisor unlinks its socket and closes its listener when it has been idle for
``EDU_SUPERVISOR_IDLE`` seconds. A client that connected a moment before is still in the
listener's queue: its request is never read, and the kernel answers it ECONNRESET. It must
ask again (a new supervisor starts), not tell the student "the supervisor closed the
connection". Deterministic: the test plays the exiting supervisor's part with a real
listening socket that never accepts, and closes it once the client is queued and waiting.

Introduced in notebooks/07-run-it (the supervisor behind ``edu run``).
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

from conftest import need


def test_a_client_queued_on_an_exiting_supervisor_asks_the_next_one(tmp_path, python):
    need(os.geteuid() == 0, "root (the supervisor runs as root here)")
    env = {**os.environ, "EDU_STATE_DIR": str(tmp_path / "state"),
           "EDU_RUN_DIR": str(tmp_path / "run"), "EDU_SUPERVISOR_IDLE": "1"}
    code = ("from edu_runtime.life import client\n"
            "print(client.ask({'op': 'ping'}).get('pid', 0), flush=True)\n")
    (tmp_path / "run").mkdir(mode=0o700)
    where = subprocess.run([python, "-c", "from edu_runtime.life import client; "
                            "print(client.socket_path())"], env=env, capture_output=True,
                           text=True, check=True).stdout.strip()
    exiting = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    exiting.bind(where)
    exiting.listen(4)
    asker = subprocess.Popen([python, "-c", code], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        # Queued: whether its request is sent yet (then ECONNRESET on its read) or not (then
        # EPIPE on its send), it was never read.
        deadline = time.monotonic() + 30
        while _queued(where) == 0:
            assert asker.poll() is None, asker.stderr.read()
            assert time.monotonic() < deadline, "the client never queued its request"
            time.sleep(0.01)
        Path(where).unlink()  # as the supervisor's exit does: no new requests
        exiting.close()
        out, err = asker.communicate(timeout=60)
        assert asker.returncode == 0, err
        pid = int(out)
        assert pid > 0 and pid != os.getpid()  # a new supervisor answered
    finally:
        exiting.close()
        Path(where).unlink(missing_ok=True)
        if asker.poll() is None:
            asker.kill()
        subprocess.run([python, "-c", "from edu_runtime.life import client; client.shutdown()"],
                       env=env, timeout=60)


def _queued(path: str) -> int:
    """Connections waiting in the listener's queue (``ss``: a listener's Recv-Q)."""
    out = subprocess.run(["ss", "-xln"], capture_output=True, text=True).stdout
    for line in out.splitlines():
        fields = line.split()
        if len(fields) >= 5 and fields[4] == path:
            return int(fields[2])
    return 0
