"""Timing and memory helpers shared by the benchmark scripts (CPU, Linux).

* :func:`interleaved_medians` runs several cases round-robin and reports each case's median, so that a drift in
  machine speed (CPU times here are noisy) hits every case alike and the ratios stay fair.
* :func:`added_peak_mib` measures the peak resident memory one run adds over what was held before it (Linux
  VmHWM, reset first). Run it in a fresh process started with :data:`MMAP_ENV`: glibc then unmaps every large
  block on free, so resident memory follows live memory instead of glibc's cached heap.
* :func:`run_worker` starts such a process (a benchmark script re-invoked with ``--worker ...``) and parses the
  JSON it prints last.
"""

from __future__ import annotations

import gc
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

MMAP_ENV = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(64 * 1024)}


def interleaved_medians(runs: dict[str, Callable[[], None]], repeats: int) -> dict[str, float]:
    """Median seconds of each run over ``repeats`` round-robin rounds, after one warm-up round."""
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    for round_index in range(repeats + 1):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            if round_index:
                seconds[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in seconds.items()}


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def added_peak_mib(run: Callable[[], None]) -> float:
    """Peak resident memory (MiB) that one call of ``run`` adds, after a warm-up call."""
    run()
    gc.collect()
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")  # reset VmHWM, the peak-RSS counter
    before = _status_kib("VmRSS")
    run()
    return (_status_kib("VmHWM") - before) / 1024


def run_worker(script: str, args: list[str], env: dict | None = None):
    """Run ``script --worker *args`` in a fresh interpreter and return the JSON value it printed last."""
    result = subprocess.run([sys.executable, script, "--worker", *args], capture_output=True, text=True, env=env)
    if result.returncode:
        raise RuntimeError(f"worker {args} failed:\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])
