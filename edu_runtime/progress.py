"""Progress bars for long work (pulls, unpacking, bootstraps), with no thread behind them.

tqdm starts a monitor thread with its first bar, and that thread lives as long as the
process. A process with a second thread never forks a container itself (life/remote.py),
so an ``edu`` command that showed a bar would hand its next container to the supervisor.
The monitor only nudges bars that stall; nothing here needs it.

Introduced in notebooks/04-images.
"""

from __future__ import annotations

from typing import Any


def bar(**kwargs: Any):
    """A ``tqdm.auto`` bar (a widget in a notebook, text in a terminal), no monitor thread."""
    from tqdm.auto import tqdm  # imported only when a bar is wanted: it costs start-up time

    tqdm.monitor_interval = 0
    return tqdm(**kwargs)
