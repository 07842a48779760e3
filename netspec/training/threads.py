"""How many CPU threads a run computes with (`--threads N`), and the default when none is given.

Threads are how, not what, a run computes: never part of a run id, recorded in env.json. The default
matters on a shared CPU: torch starts one spinning OpenMP thread per core, and when other work already
keeps those cores busy its threads wait on each other (the report's MLP on a 2-core machine with a
load of about 3: 1.6 s per epoch with one thread, 3-7 s with two). So the default is the physical
cores this process may use, less the load already on the machine, and at least 1; an explicit
OMP_NUM_THREADS in the environment is the user's choice and is kept.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Optional

from netspec.errors import SpecError

MAX_THREADS = 1024


def usable_cores() -> int:
    """Physical cores this process may run on: its CPU affinity, one per core (hyper-threads share a
    core's arithmetic units), and no more than a container's CPU quota (cgroup v2 cpu.max)."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1
    cores = {_core_of(cpu) for cpu in cpus}
    return max(1, min(len(cores), _cgroup_quota() or len(cores)))


def _core_of(cpu: int) -> tuple[str, str] | int:
    topology = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
    try:
        return (topology / "physical_package_id").read_text().strip(), (topology / "core_id").read_text().strip()
    except OSError:
        return cpu


def _cgroup_quota() -> Optional[int]:
    """CPUs a container may use ('200000 100000' in cpu.max: 2), or None when unlimited or unknown."""
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        return max(1, math.ceil(int(quota) / int(period)))
    except (OSError, ValueError):  # no cgroup v2, or 'max' (no quota)
        return None


def default_threads() -> int:
    """OMP_NUM_THREADS when the environment sets it, else the usable cores less the machine's load
    (the 1-minute load average, rounded), at least 1."""
    given = os.environ.get("OMP_NUM_THREADS", "")
    if given.isdigit() and int(given) > 0:
        return int(given)
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = 0.0
    return max(1, usable_cores() - round(load))


def check_threads(requested: Optional[int]) -> Optional[int]:
    """`--threads N` checked (1 .. MAX_THREADS); None stays None (each backend's default)."""
    if requested is not None and not 1 <= requested <= MAX_THREADS:
        raise SpecError(f"--threads {requested}: must be between 1 and {MAX_THREADS} (the CPU threads a run computes with)")
    return requested
