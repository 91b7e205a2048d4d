"""Healthchecks: whether a running container is doing its job, not only running.

A process can be up and useless: a web server stuck on a lock, a database still replaying
its log. ``docker ps`` cannot see that from outside, so Docker asks the container itself: an
image's ``HEALTHCHECK`` (or ``docker run --health-cmd``) names a command that runs *inside*
the container every ``Interval``, the way ``docker exec`` runs one, and its exit code is the
verdict: 0 healthy, anything else a failure. A check that runs longer than ``Timeout`` is
killed and counts as a failure too.

The verdicts make a small state machine, Docker's own (moby's daemon/health.go):

- ``starting`` when the container starts (or restarts);
- ``healthy`` after any check that passes (the failing streak goes back to 0);
- ``unhealthy`` once ``Retries`` checks in a row have failed. While the container is still
  ``starting`` and within its ``StartPeriod``, failures are logged but not counted: a slow
  program gets time to come up.

The state is kept in the container's record as ``health: {status, failing_streak, log}``,
the log holding the last 5 results (``start``, ``end``, ``exit_code``, ``output``, at most
4096 bytes of it). ``edu ps`` shows it as Docker does (``Up 5 seconds (healthy)``), and
``health_of`` gives it in the shape of ``docker inspect``'s ``State.Health``.

This module is the state machine and its words, and needs no process of its own: the checks
are run by the supervisor (``checker``), which owns every detached container.

Introduced in notebooks/08-web-app.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

SECOND = 1_000_000_000  # Docker keeps every duration in nanoseconds
#: Docker's defaults (moby daemon/health.go), used where a field is 0 or left out.
DEFAULT_INTERVAL = 30 * SECOND
DEFAULT_TIMEOUT = 30 * SECOND
DEFAULT_START_PERIOD = 0
DEFAULT_RETRIES = 3
MINIMUM_DURATION = 1_000_000  # 1 ms: Docker refuses anything shorter (but 0, the default)
MAX_LOG = 5  # results kept
MAX_OUTPUT = 4096  # bytes of a check's output kept; "..." says more was cut

STARTING, HEALTHY, UNHEALTHY = "starting", "healthy", "unhealthy"

#: The fields of Docker's HealthConfig, as the image config and the API write them.
FIELDS = ("Test", "Interval", "Timeout", "StartPeriod", "Retries")
_DURATIONS = {"Interval": "--health-interval", "Timeout": "--health-timeout",
              "StartPeriod": "--health-start-period"}


class HealthcheckError(ValueError):
    """A healthcheck Docker would refuse too; the message says why and what to give."""


# ---- the configuration: flags, API and image, merged as Docker merges them ------------------

def from_flags(cmd: str | None = None, interval: str | None = None,
               timeout: str | None = None, retries: int | None = None,
               start_period: str | None = None, disabled: bool = False) -> dict | None:
    """The HealthConfig ``docker run --health-*`` and ``--no-healthcheck`` make (durations
    as Go writes them, ``30s`` or ``1m30s``), or None when no flag was given."""
    durations = {"Interval": interval, "Timeout": timeout, "StartPeriod": start_period}
    given = bool(cmd) or bool(retries) or any(v not in (None, "") for v in durations.values())
    if disabled:
        if given:
            raise HealthcheckError("--no-healthcheck conflicts with --health-* options: give "
                                   "either, not both")
        return {"Test": ["NONE"]}
    if not given:
        return None
    config: dict[str, Any] = {"Test": ["CMD-SHELL", cmd] if cmd else []}
    for key, text in durations.items():
        config[key] = _duration(_DURATIONS[key], text) if text not in (None, "") else 0
    if retries is not None and retries < 0:
        raise HealthcheckError("--health-retries cannot be negative: give a count of failures, "
                               "such as 3")
    config["Retries"] = retries or 0
    return check(config)


def _duration(flag: str, text: str) -> int:
    from ..images.dockerfile import DockerfileError, duration_ns

    try:
        ns = duration_ns(text)
    except DockerfileError as exc:
        raise HealthcheckError(f'invalid argument "{text}" for "{flag}" flag: {exc.message} '
                               "(write it as Go does: 500ms, 30s, 1m30s)") from None
    if ns < 0:
        raise HealthcheckError(f"{flag} cannot be negative: give a duration such as 30s")
    return ns


def check(config: dict | None) -> dict | None:
    """A HealthConfig in Docker's shape (``{"Test": [...], "Interval": ns, ...}``), checked
    and copied; a ``Test`` given as a string is ``CMD-SHELL`` (as docker-py takes it)."""
    if config is None:
        return None
    if not isinstance(config, dict):
        raise HealthcheckError(f"healthcheck must be a dict in Docker's shape ({', '.join(FIELDS)}"
                               f"), not {type(config).__name__}")
    unknown = sorted(set(config) - set(FIELDS))
    if unknown:
        raise HealthcheckError(f"unknown healthcheck field {unknown[0]!r}: use "
                               f"{', '.join(FIELDS)} (durations in nanoseconds)")
    out = dict(config)
    test = out.get("Test") or []
    if isinstance(test, str):
        test = ["CMD-SHELL", test]
    if not (isinstance(test, list) and all(isinstance(t, str) for t in test)):
        raise HealthcheckError("healthcheck Test must be a list of strings, such as "
                               '["CMD", "true"] or ["CMD-SHELL", "wget -q localhost || exit 1"]')
    if test and test[0] not in ("NONE", "CMD", "CMD-SHELL"):
        raise HealthcheckError(f"unknown healthcheck type {test[0]!r}: use CMD, CMD-SHELL or "
                               "NONE")
    if test[:1] in (["CMD"], ["CMD-SHELL"]) and not any(test[1:]):
        raise HealthcheckError(f"healthcheck {test[0]} needs a command after it")
    out["Test"] = test
    for key in ("Interval", "Timeout", "StartPeriod", "Retries"):
        value = out.get(key) or 0
        if not isinstance(value, int) or isinstance(value, bool):
            raise HealthcheckError(f"healthcheck {key} must be a whole number"
                                   + (" of nanoseconds" if key != "Retries" else ""))
        if key == "Retries" and value < 0:
            raise HealthcheckError("Retries in Healthcheck cannot be negative")
        if key != "Retries" and value != 0 and value < MINIMUM_DURATION:
            raise HealthcheckError(f"{key} in Healthcheck cannot be less than 1ms (give 0 for "
                                   "Docker's default)")
        out[key] = value
    return out


def merge(user: dict | None, image: dict | None) -> dict | None:
    """What a container runs: the run's HealthConfig with each field it leaves empty taken
    from the image's (Docker's rule, daemon/commit.go), or the image's alone."""
    if not user:
        return dict(image) if image else None
    merged = dict(user)
    for key in FIELDS:
        if not merged.get(key) and (image or {}).get(key):
            merged[key] = image[key]
    return merged


def command(config: dict | None, shell: list[str] | None = None) -> list[str] | None:
    """The argv a check runs in the container, or None when there is no check (none given,
    ``NONE``, or an empty Test): CMD-SHELL goes through the image's SHELL, else /bin/sh -c."""
    test = list((config or {}).get("Test") or [])
    if test[:1] == ["CMD"] and test[1:]:
        return test[1:]
    if test[:1] == ["CMD-SHELL"] and test[1:]:
        return list(shell or ["/bin/sh", "-c"]) + [" ".join(test[1:])]
    return None


def settings(config: dict) -> tuple[float, float, float, int]:
    """(interval, timeout, start period) in seconds and retries, Docker's defaults filled in."""
    return ((config.get("Interval") or DEFAULT_INTERVAL) / SECOND,
            (config.get("Timeout") or DEFAULT_TIMEOUT) / SECOND,
            (config.get("StartPeriod") or DEFAULT_START_PERIOD) / SECOND,
            config.get("Retries") or DEFAULT_RETRIES)


def go_duration(seconds: float) -> str:
    """A duration as Go prints one (``500ms``, ``2s``, ``1m30s``), as Docker's messages do."""
    ns = round(seconds * SECOND)
    if ns == 0:
        return "0s"
    if ns < SECOND:
        for unit, size in (("ms", 1_000_000), ("µs", 1_000), ("ns", 1)):
            if ns >= size or unit == "ns":
                return _trim(ns / size) + unit
    hours, ns = divmod(ns, 3600 * SECOND)
    minutes, ns = divmod(ns, 60 * SECOND)
    text = _trim(ns / SECOND) + "s"
    if hours or minutes:
        text = f"{minutes}m" + text
    if hours:
        text = f"{hours}h" + text
    return text


def _trim(value: float) -> str:
    return f"{value:.9f}".rstrip("0").rstrip(".")


# ---- the state machine -----------------------------------------------------------------------

def started(previous: dict | None = None) -> dict[str, Any]:
    """The health of a container that has just started (or restarted): starting, no failing
    streak; the log of earlier runs is kept, as Docker keeps it."""
    return {"status": STARTING, "failing_streak": 0,
            "log": list((previous or {}).get("log") or [])}


def result(start: float, end: float, exit_code: int, output: str) -> dict[str, Any]:
    """One check's entry in the log (times as ISO 8601 in UTC)."""
    return {"start": _iso(start), "end": _iso(end), "exit_code": exit_code, "output": output}


def _iso(when: float) -> str:
    return datetime.fromtimestamp(when, UTC).isoformat()


def record(health: dict, config: dict, entry: dict, container_started: float,
           check_started: float) -> dict[str, Any]:
    """The health after one more check (Docker's handleProbeResult): a pass makes it
    healthy; a failure adds to the streak, unless the container is still starting within
    its start period, and the streak reaching Retries makes it unhealthy."""
    _, _, start_period, retries = settings(config)
    health = {**health, "log": (list(health.get("log") or []) + [entry])[-MAX_LOG:]}
    if entry["exit_code"] == 0:
        health.update(status=HEALTHY, failing_streak=0)
    elif not (health["status"] == STARTING
              and check_started - container_started < start_period):
        health["failing_streak"] = health.get("failing_streak", 0) + 1
        if health["failing_streak"] >= retries:
            health["status"] = UNHEALTHY
    return health


def stopped(health: dict) -> dict[str, Any]:
    """The health once checks stop (the container exited or was paused): unhealthy, as
    Docker marks it "for compatibility" when its monitor closes."""
    return {**health, "status": UNHEALTHY}


# ---- what ps and inspect show ----------------------------------------------------------------

def health_of(record: dict[str, Any]) -> dict[str, Any] | None:
    """``docker inspect``'s ``State.Health`` for a container record (``Status``,
    ``FailingStreak``, ``Log`` of ``Start``, ``End``, ``ExitCode``, ``Output``), or None
    when it has no healthcheck."""
    health = record.get("health")
    if not health:
        return None
    return {"Status": health.get("status", UNHEALTHY),
            "FailingStreak": health.get("failing_streak", 0),
            "Log": [{"Start": e.get("start"), "End": e.get("end"),
                     "ExitCode": e.get("exit_code"), "Output": e.get("output", "")}
                    for e in health.get("log") or []]}


def status_note(record: dict[str, Any]) -> str:
    """What ``docker ps`` adds after ``Up 5 seconds``: `` (healthy)``, `` (unhealthy)``,
    `` (health: starting)``, or nothing for a container without a healthcheck."""
    status = (record.get("health") or {}).get("status")
    if not status:
        return ""
    return f" ({'health: starting' if status == STARTING else status})"
