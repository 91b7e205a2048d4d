"""Shared benchmark helpers: alternate the contenders, repeat, report medians and ratios.

Absolute times on a shared 2-core VM are noise; ratios between contenders run side by side,
alternating within the same loop, are what the benchmarks report.
"""

from __future__ import annotations

import json
import platform
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from tqdm.auto import tqdm

RESULTS = Path(__file__).resolve().parent / "results"


def timed(cmd: list[str]) -> Callable[[], float]:
    """A contender that runs ``cmd`` once and returns its wall time in seconds."""
    def run() -> float:
        t = time.perf_counter()
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        return time.perf_counter() - t
    return run


def alternate(contenders: dict[str, Callable[[], float]], runs: int, warmup: int = 2,
              desc: str = "bench") -> dict[str, list[float]]:
    """Run every contender ``runs`` times, round-robin, after ``warmup`` discarded rounds."""
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for i in tqdm(range(warmup + runs), desc=desc, unit="round"):
        for name, run in contenders.items():
            t = run()
            if i >= warmup:
                times[name].append(t)
    return times


def report(title: str, times: dict[str, list[float]], baseline: str) -> dict:
    """Print a table of medians (ms) and ratios to ``baseline``; return it as a dict."""
    base = statistics.median(times[baseline])
    rows = {name: {"median_ms": statistics.median(ts) * 1e3, "min_ms": min(ts) * 1e3,
                   "max_ms": max(ts) * 1e3, "ratio": statistics.median(ts) / base,
                   "runs": len(ts)} for name, ts in times.items()}
    print(f"\n{title} (medians of {len(times[baseline])} alternating runs; "
          f"ratio to {baseline})")
    width = max(map(len, rows))
    for name, r in rows.items():
        print(f"  {name:<{width}}  {r['median_ms']:8.1f} ms   x{r['ratio']:.2f}   "
              f"[{r['min_ms']:.1f} .. {r['max_ms']:.1f}]")
    return {"title": title, "baseline": baseline, "machine": machine(), "rows": rows}


def machine() -> dict:
    """What the numbers were measured on."""
    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")),
               platform.processor())
    return {"cpu": cpu, "kernel": platform.release(), "python": platform.python_version()}


def save(name: str, result: dict) -> Path:
    """Write a result as JSON under bench/results/."""
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"{name}.json"
    out.write_text(json.dumps(result, indent=2))
    return out
