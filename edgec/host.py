"""Facts about the machine edgec runs on."""

from __future__ import annotations

import os


def physical_cores() -> int:
    """Physical cores available to this process (hyperthreads counted once)."""
    cores = set()
    for cpu in sorted(os.sched_getaffinity(0)):
        topology = f"/sys/devices/system/cpu/cpu{cpu}/topology"
        try:
            with open(f"{topology}/physical_package_id") as pkg, open(f"{topology}/core_id") as core:
                cores.add((pkg.read().strip(), core.read().strip()))
        except OSError:
            cores.add(("?", str(cpu)))
    return max(1, len(cores))
